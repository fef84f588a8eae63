//! The change record: what one write did, in a form another instance can apply.
//!
//! The write door appends exactly one change per mutation of a synced table, in
//! the same transaction as the row write. Replication turns these into signed
//! log entries; a change is immutable once appended.

use serde::{Deserialize, Serialize};

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

/// One recorded mutation of a synced row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub table: Table,
    pub op: Op,
    pub row_id: RowId,
    /// The full row after the write (for a delete, the tombstone).
    pub row: serde_json::Value,
    pub lamport: Lamport,
    /// The instance whose write this was.
    pub origin: String,
}
