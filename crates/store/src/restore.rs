//! Backups, and a machine restored from one.
//!
//! A restored machine's log ends where the backup was taken, but its peers
//! may hold entries it wrote after that. A write now would take a sequence
//! number one of those entries already has: its own log would fork. So a
//! restored database is marked, and the door refuses writes until a peer
//! that keeps the log has said what it holds of this machine's log and this
//! machine holds as much (replication brings the missing entries back like
//! any other: they are signed with its own key and continue its chain).

use std::path::Path;
use std::sync::atomic::Ordering;

use rusqlite::{OptionalExtension, Transaction};

use crate::{Result, Store, StoreError};

/// The `meta` key marking a database restored from a backup.
const RESTORED: &str = "restored_from_backup";

impl Store {
    /// Copies the database to a new file at `path`, consistently, while other
    /// connections go on reading and writing (`VACUUM INTO`: one read
    /// transaction, so the copy is the database as of one commit).
    pub fn back_up_to(&self, path: &Path) -> Result<()> {
        let target = path.to_str().ok_or_else(|| StoreError::Create {
            path: path.to_path_buf(),
            source: std::io::Error::other("the path is not UTF-8"),
        })?;
        self.read(|c| Ok(c.execute("VACUUM INTO ?1", [target]).map(|_| ())?))
    }

    /// Marks this database as restored from a backup: writes wait until a
    /// peer has given back what it holds of this machine's log.
    pub fn mark_restored(&self) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.with_door_open(|conn| {
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, '1')", [RESTORED])?;
            Ok::<_, StoreError>(())
        })?;
        self.restoring.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether writes still wait for a peer after a restore.
    pub fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }

    /// A peer that keeps the log holds `held` entries of this machine's log:
    /// once this machine holds as many, a restore's wait is over. Returns
    /// whether this call ended it.
    pub fn own_log_heard(&self, held: u64) -> Result<bool> {
        if !self.restoring() {
            return Ok(false);
        }
        let ours = self.heads()?.get(self.origin()).copied().unwrap_or(0);
        if ours < held {
            return Ok(false);
        }
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.with_door_open(|conn| {
            conn.execute("DELETE FROM meta WHERE key = ?1", [RESTORED])?;
            Ok::<_, StoreError>(())
        })?;
        self.restoring.store(false, Ordering::Release);
        tracing::info!(entries = ours, "this machine holds its own log as its peers do; writes resume");
        Ok(true)
    }
}

/// Whether the database at hand is marked restored (read at open).
pub(crate) fn marked(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(conn.query_row("SELECT 1 FROM meta WHERE key = ?1", [RESTORED], |_| Ok(())).optional()?.is_some())
}

/// Refuses a write while the database waits for its own log (checked in the
/// write's transaction, so every process writing the database agrees).
pub(crate) fn refuse_while_restoring(tx: &Transaction) -> Result<()> {
    if marked(tx)? { Err(StoreError::Restoring) } else { Ok(()) }
}
