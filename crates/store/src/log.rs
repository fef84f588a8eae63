//! Reading the signed log: entries by local position and per-origin heads.
//!
//! The log (`changes`) holds this instance's own entries and every entry it
//! applied from others, each exactly as its origin signed it. Its local order
//! is causal — an entry is appended only after everything it depends on — so
//! sending entries in that order never makes a peer wait for a missing
//! dependency.

use roost_core::protocol::{Heads, SignedEntry};
use roost_core::{Entry, Lamport, Op, RowId, Table};
use serde_json::Value;

use crate::door::parse_vector;
use crate::{Result, Store, StoreError};

/// A log entry as stored: the entry, its local position, hash and signature.
#[derive(Debug, Clone)]
pub struct StoredChange {
    /// Position in this instance's change table (local only).
    pub seq: i64,
    pub entry: Entry,
    /// The row, parsed from `entry.row`.
    pub row: Value,
    pub hash: [u8; 32],
    pub signature: [u8; 64],
}

const ENTRY_COLUMNS: &str =
    "seq, table_name, op, row_id, row_json, lamport, origin, origin_seq, prev_hash, hash, signature, vector";

fn read_change(r: &rusqlite::Row) -> Result<(i64, SignedEntry, [u8; 32])> {
    let seq: i64 = r.get(0)?;
    let corrupt = |what: &str| StoreError::SchemaMismatch(format!("change {seq} has a bad {what}"));
    let table: String = r.get(1)?;
    let op: String = r.get(2)?;
    let row_id: String = r.get(3)?;
    let entry = Entry {
        origin: r.get(6)?,
        seq: r.get::<_, i64>(7)? as u64,
        lamport: Lamport(r.get::<_, i64>(5)? as u64),
        prev_hash: r.get::<_, Vec<u8>>(8)?.try_into().map_err(|_| corrupt("previous hash"))?,
        table: Table::parse(&table).ok_or_else(|| corrupt("table"))?,
        op: Op::parse(&op).ok_or_else(|| corrupt("op"))?,
        row_id: RowId::parse(&row_id).ok_or_else(|| corrupt("row id"))?,
        vector: parse_vector(&r.get::<_, String>(11)?)?,
        row: r.get(4)?,
    };
    let hash = r.get::<_, Vec<u8>>(9)?.try_into().map_err(|_| corrupt("hash"))?;
    let signature = r.get::<_, Vec<u8>>(10)?.try_into().map_err(|_| corrupt("signature"))?;
    Ok((seq, SignedEntry { entry, signature }, hash))
}

impl Store {
    /// Log entries after local position `after`, oldest first.
    pub fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<StoredChange>> {
        Ok(self
            .log_after(after, limit)?
            .into_iter()
            .map(|(seq, signed, hash)| {
                let row = serde_json::from_str(&signed.entry.row).unwrap_or(Value::Null);
                StoredChange { seq, entry: signed.entry, row, hash, signature: signed.signature }
            })
            .collect())
    }

    /// Signed entries after local position `after`, in local (causal) order,
    /// with their local positions: what a sender streams to a peer.
    pub fn entries_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, SignedEntry)>> {
        Ok(self.log_after(after, limit)?.into_iter().map(|(seq, signed, _)| (seq, signed)).collect())
    }

    fn log_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, SignedEntry, [u8; 32])>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2"))?;
            let mut rows = stmt.query(rusqlite::params![after, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(read_change(r)?);
            }
            Ok(out)
        })
    }

    /// The hash of entry `seq` of `origin`'s log, if this store holds it.
    pub fn entry_hash(&self, origin: &str, seq: u64) -> Result<Option<[u8; 32]>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM changes WHERE origin = ?1 AND origin_seq = ?2"
            ))?;
            let mut rows = stmt.query(rusqlite::params![origin, seq as i64])?;
            Ok(match rows.next()? {
                Some(r) => Some(read_change(r)?.2),
                None => None,
            })
        })
    }

    /// The latest sequence number held of every origin. Every origin is in
    /// the registry (entries of others are applied only from there), so this
    /// is one index lookup per machine, not a scan of the log.
    pub fn heads(&self) -> Result<Heads> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT i.id, (SELECT max(origin_seq) FROM changes WHERE origin = i.id)
                 FROM instances i UNION SELECT ?1, (SELECT max(origin_seq) FROM changes WHERE origin = ?1)",
            )?;
            let heads = stmt
                .query_map([self.origin()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))?
                .filter_map(|r| match r {
                    Ok((origin, Some(seq))) => Some(Ok((origin, seq as u64))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Heads, _>>()?;
            Ok(heads)
        })
    }

    /// The local position just before the first entry a peer with `heads`
    /// lacks: where a sender's scan starts, so a resumed session does not
    /// re-read what the peer already holds.
    pub fn scan_start(&self, peer: &Heads) -> Result<i64> {
        let ours = self.heads()?;
        self.read(|c| {
            let mut first = i64::MAX;
            let mut stmt = c.prepare_cached("SELECT seq FROM changes WHERE origin = ?1 AND origin_seq = ?2")?;
            for (origin, head) in &ours {
                let theirs = peer.get(origin).copied().unwrap_or(0);
                if theirs < *head {
                    let seq: i64 = stmt.query_row(rusqlite::params![origin, (theirs + 1) as i64], |r| r.get(0))?;
                    first = first.min(seq);
                }
            }
            Ok(if first == i64::MAX {
                c.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| r.get(0))?
            } else {
                first - 1
            })
        })
    }
}
