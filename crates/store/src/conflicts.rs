//! Sync conflicts: the losing versions of concurrent writes, kept until a
//! later write that has seen them resolves them.
//!
//! A conflict's id is named from its losing version, so it is the same on
//! every instance. Resolving is a write through the door
//! ([`crate::Mutation::Resolve`]): it replicates, and every instance that
//! applies it marks the conflict resolved by the same rule that applies to
//! any write made after seeing the loser.

use rusqlite::OptionalExtension;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Result, Store, StoreError};

/// One version of a conflicting pair.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictVersion {
    pub origin: String,
    pub seq: u64,
    pub lamport: u64,
    pub op: String,
    pub row: Value,
    /// Whether this instance wrote this version.
    pub local: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub id: String,
    pub table: String,
    pub row_id: String,
    /// The version every instance shows.
    pub winner: ConflictVersion,
    /// The concurrent version that lost, preserved here.
    pub loser: ConflictVersion,
    pub resolved: bool,
    pub resolution: Option<String>,
    pub resolved_at: Option<String>,
    pub created_at: String,
    /// Fields whose values differ between the two versions.
    pub differing: Vec<String>,
}

impl Conflict {
    /// The version `--keep local` keeps: the one this instance wrote, if it
    /// wrote either, else the one it shows.
    pub fn local_version(&self) -> &ConflictVersion {
        if self.loser.local && !self.winner.local { &self.loser } else { &self.winner }
    }

    /// The other one.
    pub fn remote_version(&self) -> &ConflictVersion {
        if self.loser.local && !self.winner.local { &self.winner } else { &self.loser }
    }
}

/// How a conflict is resolved.
#[derive(Debug, Clone)]
pub enum Keep {
    Local,
    Remote,
    /// The shown version with these fields changed.
    Merge(Map<String, Value>),
}

/// Why a resolution's words do not say how to resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepError {
    #[error("a merge needs the fields to write (an object of field: value)")]
    MergeWithoutFields,
    #[error("fields are given only with keep = merge")]
    FieldsWithoutMerge,
    #[error("keep must be local, remote or merge, not {0:?}")]
    Unknown(String),
}

impl Keep {
    /// From the words people and tools use: `local`, `remote`, or `merge`
    /// with the fields to change.
    pub fn parse(keep: &str, fields: Option<Map<String, Value>>) -> Result<Keep, KeepError> {
        match (keep, fields) {
            ("local", None) => Ok(Keep::Local),
            ("remote", None) => Ok(Keep::Remote),
            ("merge", Some(fields)) => Ok(Keep::Merge(fields)),
            ("merge", None) => Err(KeepError::MergeWithoutFields),
            ("local" | "remote", Some(_)) => Err(KeepError::FieldsWithoutMerge),
            (other, _) => Err(KeepError::Unknown(other.to_string())),
        }
    }
}

const COLUMNS: &str = "id, table_name, row_id, winner_origin, winner_seq, winner_lamport, winner_op, winner_row,
    loser_origin, loser_seq, loser_lamport, loser_op, loser_row, resolved, resolution, resolved_at, created_at";

pub(crate) fn read_conflict(r: &rusqlite::Row, me: &str) -> rusqlite::Result<Conflict> {
    let version = |at: usize| -> rusqlite::Result<ConflictVersion> {
        let origin: String = r.get(at)?;
        Ok(ConflictVersion {
            local: origin == me,
            origin,
            seq: r.get::<_, i64>(at + 1)? as u64,
            lamport: r.get::<_, i64>(at + 2)? as u64,
            op: r.get(at + 3)?,
            row: serde_json::from_str(&r.get::<_, String>(at + 4)?).unwrap_or(Value::Null),
        })
    };
    let (winner, loser) = (version(3)?, version(8)?);
    Ok(Conflict {
        id: r.get(0)?,
        table: r.get(1)?,
        row_id: r.get(2)?,
        differing: differing(&winner.row, &loser.row),
        winner,
        loser,
        resolved: r.get::<_, i64>(13)? != 0,
        resolution: r.get(14)?,
        resolved_at: r.get(15)?,
        created_at: r.get(16)?,
    })
}

/// Field names whose values differ, ignoring the stamps every version has.
fn differing(a: &Value, b: &Value) -> Vec<String> {
    const STAMPS: [&str; 4] = ["origin", "lamport", "updated_at", "created_at"];
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return Vec::new() };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| !STAMPS.contains(&k.as_str())).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

pub(crate) fn find_conflict(conn: &rusqlite::Connection, me: &str, key: &str) -> Result<Conflict> {
    let key = key.trim().to_ascii_lowercase();
    let not_found = || StoreError::NotFound { what: "conflict", key: key.clone() };
    if key.len() < 4 {
        return Err(not_found());
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sync_conflicts WHERE id = ?1 OR id LIKE ?1 || '%' ORDER BY id LIMIT 2"
    ))?;
    let found: Vec<Conflict> = stmt.query_map([&key], |r| read_conflict(r, me))?.collect::<Result<_, _>>()?;
    match found.len() {
        1 => Ok(found.into_iter().next().expect("one")),
        0 => Err(not_found()),
        _ => Err(StoreError::Ambiguous(format!("several conflicts start with {key:?}; give more of the id"))),
    }
}

impl Store {
    /// Conflicts, newest first: open ones only unless `include_resolved`.
    pub fn conflicts(&self, include_resolved: bool, limit: u32) -> Result<Vec<Conflict>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM sync_conflicts WHERE resolved = 0 OR ?1
                 ORDER BY created_at DESC, id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(rusqlite::params![include_resolved, limit.clamp(1, 1000)], |r| {
                read_conflict(r, self.origin())
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// One conflict, by id or a unique prefix of at least 4 characters.
    pub fn conflict(&self, key: &str) -> Result<Conflict> {
        self.read(|c| find_conflict(c, self.origin(), key))
    }

    /// How many conflicts are open.
    pub fn open_conflicts(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row("SELECT count(*) FROM sync_conflicts WHERE resolved = 0", [], |r| r.get::<_, i64>(0))?
                as u64)
        })
    }

    /// Whether a conflict exists with this id (resolved or not).
    pub fn conflict_exists(&self, id: &str) -> Result<bool> {
        self.read(|c| {
            Ok(c.query_row("SELECT 1 FROM sync_conflicts WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some())
        })
    }
}
