//! The instance registry: the machines of this chain this instance knows.
//!
//! Entries are keyed by instance id. Revocation is sticky: once an entry is
//! revoked, nothing in this module brings it back. Each entry keeps the
//! addresses the machine can be reached at, freshest first: what the machine
//! says of itself replaces the list, what others say of it is added.

use rusqlite::OptionalExtension;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use roost_core::Role;

use crate::{Result, Store, StoreError, now_text};

/// The most addresses kept per machine.
pub const MAX_ADDRESSES: usize = 8;

/// Whether a machine still belongs to the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    Active,
    /// Revoked for good: it may no longer call, vote, or send entries.
    Revoked,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Revoked => "revoked",
        }
    }
}

impl ToSql for Standing {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Standing {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "active" => Ok(Standing::Active),
            "revoked" => Ok(Standing::Revoked),
            other => Err(FromSqlError::Other(format!("unknown standing {other:?}").into())),
        }
    }
}

/// One registered machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEntry {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Gateway URLs it can be reached at, freshest first.
    pub addresses: Vec<String>,
    /// The machine certificate, in its text form.
    pub certificate: String,
    /// Hex Ed25519 public key.
    pub signing_key: String,
    /// Hex X25519 public key.
    pub encryption_key: String,
    /// The Roost version it last said it runs.
    pub version: Option<String>,
    /// When a session with it last started or ended.
    pub last_seen: Option<String>,
    pub status: Standing,
    pub created_at: String,
}

impl InstanceEntry {
    pub fn is_revoked(&self) -> bool {
        self.status == Standing::Revoked
    }
}

const COLUMNS: &str =
    "id, name, role, addresses, certificate, signing_key, encryption_key, version, last_seen, status, created_at";

fn entry(r: &rusqlite::Row) -> rusqlite::Result<InstanceEntry> {
    let addresses: String = r.get(3)?;
    Ok(InstanceEntry {
        id: r.get(0)?,
        name: r.get(1)?,
        role: {
            let text: String = r.get(2)?;
            Role::parse(&text).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    format!("unknown role {text:?}").into(),
                )
            })?
        },
        addresses: serde_json::from_str(&addresses).unwrap_or_default(),
        certificate: r.get(4)?,
        signing_key: r.get(5)?,
        encryption_key: r.get(6)?,
        version: r.get(7)?,
        last_seen: r.get(8)?,
        status: r.get(9)?,
        created_at: r.get(10)?,
    })
}

/// `first` then those of `rest` not already in it, at most [`MAX_ADDRESSES`].
pub fn merge_addresses(first: &[String], rest: &[String]) -> Vec<String> {
    let mut merged: Vec<String> = Vec::new();
    for address in first.iter().chain(rest) {
        if !merged.contains(address) && merged.len() < MAX_ADDRESSES {
            merged.push(address.clone());
        }
    }
    merged
}

/// Names made unique, by id: a name two machines share gets the end of
/// each one's id (`vm#3f9c2a`), which [`Store::instance`] accepts wherever a
/// name goes.
pub fn display_names(entries: &[InstanceEntry]) -> std::collections::HashMap<String, String> {
    let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in entries {
        *count.entry(e.name.as_str()).or_default() += 1;
    }
    entries
        .iter()
        .map(|e| {
            let shown = if count[e.name.as_str()] > 1 {
                format!("{}#{}", e.name, &e.id[e.id.len().saturating_sub(6)..])
            } else {
                e.name.clone()
            };
            (e.id.clone(), shown)
        })
        .collect()
}

/// Records a revocation and marks the machine revoked; true if it was new.
/// The first revocation of a machine stands: its `revoked_after` is the one
/// every machine that took it applies.
fn record_revocation(
    tx: &rusqlite::Transaction,
    id: &str,
    machine_key: &str,
    revocation: &str,
    revoked_after: u64,
) -> Result<bool> {
    let new = tx.execute(
        "INSERT INTO revocations (instance_id, machine_key, revocation, revoked_after, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (instance_id) DO NOTHING",
        rusqlite::params![id, machine_key, revocation, revoked_after as i64, now_text()],
    )? == 1;
    if new {
        tx.execute(
            "UPDATE instances SET status = 'revoked', revoked_after = ?2 WHERE id = ?1 AND status != 'revoked'",
            rusqlite::params![id, revoked_after as i64],
        )?;
    }
    Ok(new)
}

fn addresses_json(addresses: &[String]) -> String {
    serde_json::to_string(addresses).expect("strings serialise")
}

impl Store {
    /// Adds a machine or refreshes what is known of it (name, role,
    /// certificate, keys); `e.addresses` go before those already known.
    /// Refuses a revoked machine.
    pub fn register_instance(&self, e: &InstanceEntry) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: Option<(Standing, String)> = tx
            .query_row("SELECT status, addresses FROM instances WHERE id = ?1", [&e.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let revoked: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM revocations WHERE instance_id = ?1 OR machine_key = ?2)",
            [&e.id, &e.signing_key],
            |r| r.get(0),
        )?;
        if revoked || matches!(known, Some((Standing::Revoked, _))) {
            return Err(StoreError::Revoked { name: e.name.clone(), id: e.id.clone() });
        }
        let before: Vec<String> =
            known.and_then(|(_, addresses)| serde_json::from_str(&addresses).ok()).unwrap_or_default();
        tx.execute(
            "INSERT INTO instances (id, name, role, addresses, certificate, signing_key, encryption_key, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role,
                 addresses = excluded.addresses, certificate = excluded.certificate,
                 signing_key = excluded.signing_key, encryption_key = excluded.encryption_key",
            rusqlite::params![
                e.id,
                e.name,
                e.role.as_str(),
                addresses_json(&merge_addresses(&e.addresses, &before)),
                e.certificate,
                e.signing_key,
                e.encryption_key,
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

    /// One machine by id, by name when exactly one machine has it, or by a
    /// name with the short id suffix listings show for shared names
    /// (`vm#1a2b3c`).
    pub fn instance(&self, key: &str) -> Result<InstanceEntry> {
        let key = key.trim();
        if let Ok(found) = self.instance_by_id(key) {
            return Ok(found);
        }
        let (name, suffix) = key.rsplit_once('#').map_or((key, None), |(n, s)| (n, Some(s)));
        let named: Vec<InstanceEntry> = self
            .instances()?
            .into_iter()
            .filter(|e| e.name == name && suffix.is_none_or(|s| e.id.ends_with(s)))
            .collect();
        match named.len() {
            1 => Ok(named.into_iter().next().expect("one entry")),
            0 => Err(StoreError::NotFound { what: "instance", key: key.to_string() }),
            n => Err(StoreError::Ambiguous(format!("{n} machines are named {key:?}; use the id"))),
        }
    }

    /// Revokes a registered machine here, for good, with the signed
    /// revocation `sign` makes of it and the last of its entries this store
    /// holds (entries it wrote up to there stay acceptable, later ones never
    /// are); both in one transaction, so no entry of it lands in between.
    pub fn revoke_instance(
        &self,
        key: &str,
        sign: impl FnOnce(&InstanceEntry, u64) -> String,
    ) -> Result<InstanceEntry> {
        let target = self.instance(key)?;
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let revoked_after: i64 =
            tx.query_row("SELECT coalesce(max(origin_seq), 0) FROM changes WHERE origin = ?1", [&target.id], |r| {
                r.get(0)
            })?;
        let revocation = sign(&target, revoked_after as u64);
        record_revocation(&tx, &target.id, &target.signing_key, &revocation, revoked_after as u64)?;
        tx.commit()?;
        drop(writer);
        self.instance(&target.id)
    }

    /// Takes a revocation already verified against the identity: keeps it
    /// to pass on, and marks the machine revoked if it is registered. True
    /// if it was new here.
    pub fn take_revocation(&self, id: &str, machine_key: &str, revocation: &str, revoked_after: u64) -> Result<bool> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let new = record_revocation(&tx, id, machine_key, revocation, revoked_after)?;
        tx.commit()?;
        Ok(new)
    }

    /// Every revocation held, by instance id.
    pub fn revocations(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT instance_id, revocation FROM revocations ORDER BY instance_id")?;
            Ok(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?)
        })
    }

    /// Records that a session with a machine started or ended just now.
    pub fn mark_seen(&self, id: &str) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer
            .raw_mut()
            .execute("UPDATE instances SET last_seen = ?2 WHERE id = ?1", rusqlite::params![id, now_text()])?;
        Ok(())
    }

    /// What a machine said of itself: where it can be reached (replacing
    /// what was known) and the Roost version it runs. True if its addresses
    /// changed.
    pub fn note_self_report(&self, id: &str, addresses: &[String], version: &str) -> Result<bool> {
        let changed = self.replace_addresses(id, addresses)?;
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.raw_mut().execute("UPDATE instances SET version = ?2 WHERE id = ?1", rusqlite::params![id, version])?;
        Ok(changed)
    }

    /// Where a machine says it can be reached now, replacing what was known.
    /// True if that changed anything.
    pub fn replace_addresses(&self, id: &str, addresses: &[String]) -> Result<bool> {
        let addresses = addresses_json(&merge_addresses(addresses, &[]));
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = writer.raw_mut().execute(
            "UPDATE instances SET addresses = ?2 WHERE id = ?1 AND addresses != ?2",
            rusqlite::params![id, addresses],
        )?;
        Ok(changed > 0)
    }

    /// Addresses another machine gave for `id`, added after those known.
    /// True if any was new.
    pub fn add_addresses(&self, id: &str, addresses: &[String]) -> Result<bool> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(known) = tx
            .query_row("SELECT addresses FROM instances WHERE id = ?1", [id], |r| r.get::<_, String>(0))
            .optional()?
        else {
            return Ok(false);
        };
        let known: Vec<String> = serde_json::from_str(&known).unwrap_or_default();
        let merged = merge_addresses(&known, addresses);
        if merged == known {
            return Ok(false);
        }
        tx.execute(
            "UPDATE instances SET addresses = ?2 WHERE id = ?1",
            rusqlite::params![id, addresses_json(&merged)],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Forgets machines of another chain (after this one joined a new
    /// chain); `keep` says which entries belong to the new one.
    pub fn forget_instances(&self, mut keep: impl FnMut(&InstanceEntry) -> bool) -> Result<usize> {
        let gone: Vec<String> = self.instances()?.into_iter().filter(|e| !keep(e)).map(|e| e.id).collect();
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &gone {
            writer.raw_mut().execute("DELETE FROM instances WHERE id = ?1", [id])?;
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_shared_name_gets_the_end_of_each_id() {
        let entry = |id: &str, name: &str| InstanceEntry {
            id: id.into(),
            name: name.into(),
            role: Role::Home,
            addresses: Vec::new(),
            certificate: String::new(),
            signing_key: String::new(),
            encryption_key: String::new(),
            version: None,
            last_seen: None,
            status: Standing::Active,
            created_at: String::new(),
        };
        let names = display_names(&[entry("0001-aaaaaa", "vm"), entry("0002-bbbbbb", "vm"), entry("0003", "pi")]);
        assert_eq!(names["0001-aaaaaa"], "vm#aaaaaa");
        assert_eq!(names["0002-bbbbbb"], "vm#bbbbbb");
        assert_eq!(names["0003"], "pi");
    }

    #[test]
    fn merged_addresses_keep_order_drop_repeats_and_stop_at_the_cap() {
        assert_eq!(merge_addresses(&list(&["a", "b"]), &list(&["b", "c"])), list(&["a", "b", "c"]));
        let many: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
        assert_eq!(merge_addresses(&many, &[]).len(), MAX_ADDRESSES);
    }
}
