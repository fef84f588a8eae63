//! The instance registry: the machines of this chain this instance knows.
//!
//! Entries are keyed by instance id. Revocation is sticky: once an entry is
//! revoked, nothing in this module brings it back.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError, now_text};

/// One registered machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEntry {
    pub id: String,
    pub name: String,
    pub role: String,
    pub gateway_url: Option<String>,
    /// The machine certificate, in its text form.
    pub certificate: String,
    /// Hex Ed25519 public key.
    pub signing_key: String,
    /// Hex X25519 public key.
    pub encryption_key: String,
    pub last_seen: Option<String>,
    pub status: String,
    pub created_at: String,
}

const COLUMNS: &str =
    "id, name, role, gateway_url, certificate, signing_key, encryption_key, last_seen, status, created_at";

fn entry(r: &rusqlite::Row) -> rusqlite::Result<InstanceEntry> {
    Ok(InstanceEntry {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        gateway_url: r.get(3)?,
        certificate: r.get(4)?,
        signing_key: r.get(5)?,
        encryption_key: r.get(6)?,
        last_seen: r.get(7)?,
        status: r.get(8)?,
        created_at: r.get(9)?,
    })
}

impl Store {
    /// Adds a machine or refreshes what is known of it (name, role, URL,
    /// certificate, keys). Refuses a revoked machine.
    pub fn register_instance(&self, e: &InstanceEntry) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let status: Option<String> =
            tx.query_row("SELECT status FROM instances WHERE id = ?1", [&e.id], |r| r.get(0)).optional()?;
        if status.as_deref() == Some("revoked") {
            return Err(StoreError::Duplicate(format!(
                "instance {} ({}) is revoked; revocation is permanent",
                e.name, e.id
            )));
        }
        tx.execute(
            "INSERT INTO instances (id, name, role, gateway_url, certificate, signing_key, encryption_key, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role,
                 gateway_url = coalesce(excluded.gateway_url, gateway_url), certificate = excluded.certificate,
                 signing_key = excluded.signing_key, encryption_key = excluded.encryption_key",
            rusqlite::params![
                e.id,
                e.name,
                e.role,
                e.gateway_url,
                e.certificate,
                e.signing_key,
                e.encryption_key,
                e.status,
                now_text()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every registered machine, oldest first.
    pub fn instances(&self) -> Result<Vec<InstanceEntry>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM instances ORDER BY created_at, id"))?;
            Ok(stmt.query_map([], entry)?.collect::<Result<_, _>>()?)
        })
    }

    /// One machine by id only: what authentication must use, since names are
    /// chosen by the machines themselves.
    pub fn instance_by_id(&self, id: &str) -> Result<InstanceEntry> {
        self.read(|c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"), [id], entry)
                .optional()?
                .ok_or_else(|| StoreError::NotFound { what: "instance", key: id.to_string() })
        })
    }

    /// One machine by id, or by name when exactly one machine has it.
    pub fn instance(&self, key: &str) -> Result<InstanceEntry> {
        let key = key.trim();
        if let Ok(found) = self.instance_by_id(key) {
            return Ok(found);
        }
        let named: Vec<InstanceEntry> = self.instances()?.into_iter().filter(|e| e.name == key).collect();
        match named.len() {
            1 => Ok(named.into_iter().next().expect("one entry")),
            0 => Err(StoreError::NotFound { what: "instance", key: key.to_string() }),
            n => Err(StoreError::Duplicate(format!("{n} machines are named {key:?}; use the id"))),
        }
    }

    /// Marks a machine revoked, for good.
    pub fn revoke_instance(&self, key: &str) -> Result<InstanceEntry> {
        let target = self.instance(key)?;
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Entries the origin wrote before revocation stay acceptable; later ones never are.
        writer.raw_mut().execute(
            "UPDATE instances SET status = 'revoked',
                revoked_after = (SELECT coalesce(max(origin_seq), 0) FROM changes WHERE origin = ?1)
             WHERE id = ?1 AND status != 'revoked'",
            [&target.id],
        )?;
        drop(writer);
        self.instance(&target.id)
    }

    /// Records that a machine answered just now.
    pub fn mark_seen(&self, id: &str, status: &str) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.raw_mut().execute(
            "UPDATE instances SET last_seen = ?2, status = ?3 WHERE id = ?1 AND status != 'revoked'",
            rusqlite::params![id, now_text(), status],
        )?;
        Ok(())
    }
}
