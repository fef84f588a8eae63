//! The log entry: what one write did, in a form another instance can verify
//! and apply.
//!
//! The write door appends exactly one entry per mutation of a synced table, in
//! the same transaction as the row write, signed by the machine's key. An entry
//! is immutable once appended: re-sending never re-stamps it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::Writer;
use crate::{Lamport, RowId, Table};

/// The kind of mutation a change records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Insert,
    Update,
    /// A tombstone: the row stays, marked deleted, so deletes take part in
    /// conflict detection like any other write.
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "insert" => Some(Op::Insert),
            "update" => Some(Op::Update),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// Hash of the entry before an origin's first one.
pub const GENESIS: [u8; 32] = [0; 32];

const DOMAIN: &[u8] = b"roost/log-entry/v1\0";

/// One entry of an origin's append-only log: one mutation of a synced row.
///
/// Entries of one origin are numbered from 1 and chained: each carries the
/// hash of the one before, so the origin's signature over an entry's hash
/// authenticates its whole history. `row` is the row's JSON exactly as the
/// write door stored it; the signature covers those bytes, never a
/// re-serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub origin: String,
    pub seq: u64,
    pub lamport: Lamport,
    pub prev_hash: [u8; 32],
    pub table: Table,
    pub op: Op,
    pub row_id: RowId,
    pub row: String,
}

impl Entry {
    /// The canonical binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"RLE1")
            .str(&self.origin)
            .i64(self.seq as i64)
            .i64(self.lamport.0 as i64)
            .bytes(&self.prev_hash)
            .str(self.table.name())
            .str(self.op.as_str())
            .str(self.row_id.as_str());
        w.bytes(&(self.row.len() as u64).to_be_bytes()).bytes(self.row.as_bytes());
        w.0
    }

    /// SHA-256 over the domain and the encoding: what the origin signs, and
    /// what the next entry names as its `prev_hash`.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::new().chain_update(DOMAIN).chain_update(self.encode()).finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            origin: "01a20806-d444-7c97-be1f-ef8bd5bf8a9d".into(),
            seq: 1,
            lamport: Lamport(1),
            prev_hash: GENESIS,
            table: Table::Memories,
            op: Op::Insert,
            row_id: RowId::v7(1, [0; 10]),
            row: r#"{"content":"x"}"#.into(),
        }
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = entry();
        let variants = [
            Entry { origin: "01a20806-d444-7c97-be1f-ef8bd5bf8a9e".into(), ..base.clone() },
            Entry { seq: 2, ..base.clone() },
            Entry { lamport: Lamport(2), ..base.clone() },
            Entry { prev_hash: [1; 32], ..base.clone() },
            Entry { table: Table::Notes, ..base.clone() },
            Entry { op: Op::Update, ..base.clone() },
            Entry { row_id: RowId::v7(2, [0; 10]), ..base.clone() },
            Entry { row: r#"{"content":"y"}"#.into(), ..base.clone() },
        ];
        for v in variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
    }
}
