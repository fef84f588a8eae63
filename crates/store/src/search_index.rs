//! The full-text index during a large catch-up.
//!
//! Indexing each memory as it arrives is most of what applying an entry
//! costs. A machine far behind a peer (one joining a chain with years of
//! history) stops indexing while it catches up and rebuilds the index in one
//! pass at the end, several times faster in all. Search never answers from
//! the stale index meanwhile: it says how many memories are not indexed yet.
//!
//! The state is one `meta` row, `search_index_deferred`, whose value is the
//! log position the index was deferred at. The memories triggers that keep
//! the index read it (migration v7), so every process writing the database
//! agrees, and a crash while deferred leaves the index deferred until the
//! rebuild, never half-written.

use crate::{Result, Store, StoreError};

const DEFERRED: &str = "search_index_deferred";

/// How many entries behind a peer a machine must be for the index to be
/// deferred: below this, indexing as they arrive costs little.
pub const DEFER_FROM: u64 = 5_000;

impl Store {
    /// How many memories changed since the index was deferred; None while
    /// the index is live.
    pub fn search_index_behind(&self) -> Result<Option<u64>> {
        self.read(|c| Ok(behind(c)?))
    }

    /// Whether the index is deferred (cheap: one `meta` lookup).
    pub fn search_index_deferred(&self) -> Result<bool> {
        Ok(self.read(|c| Ok(deferred_at(c)?))?.is_some())
    }

    /// The catch-up's rule, given how many entries this machine is `behind`
    /// a peer: defer the index when that is at least [`DEFER_FROM`] and more
    /// than half the memories already held (rebuilding reindexes them all);
    /// rebuild it once nothing is behind.
    pub fn pace_search_index(&self, behind: u64) -> Result<()> {
        let deferred = self.search_index_deferred()?;
        if deferred && behind == 0 {
            return self.rebuild_search_index();
        }
        if !deferred && behind >= DEFER_FROM {
            let held: i64 = self.read(|c| Ok(c.query_row("SELECT count(*) FROM memories", [], |r| r.get(0))?))?;
            if behind >= held as u64 / 2 {
                self.defer_search_index()?;
            }
        }
        Ok(())
    }

    /// Stops indexing memories until [`Store::rebuild_search_index`].
    pub fn defer_search_index(&self) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.raw_mut().execute(
            "INSERT INTO meta (key, value) SELECT ?1, coalesce(max(seq), 0) FROM changes WHERE true
             ON CONFLICT (key) DO NOTHING",
            [DEFERRED],
        )?;
        tracing::info!("search index deferred while this machine catches up");
        Ok(())
    }

    /// Rebuilds the index from the memories table in one pass, merged into
    /// one segment, and makes it live again, in one transaction.
    pub fn rebuild_search_index(&self) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = writer.raw_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let deferred = deferred_at(&tx)?.is_some();
        if deferred {
            tx.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')", [])?;
            // A rebuild leaves many segments behind; left so, the merges of
            // the next few hundred writes reach into them, and some single
            // write takes 100-200 ms. One merge now, into one segment.
            tx.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')", [])?;
            tx.execute("DELETE FROM meta WHERE key = ?1", [DEFERRED])?;
        }
        tx.commit()?;
        if deferred {
            tracing::info!("search index rebuilt after catching up");
        }
        Ok(())
    }

    /// Refuses a search while the index is deferred.
    pub(crate) fn searchable(c: &rusqlite::Connection) -> Result<()> {
        match behind(c)? {
            Some(behind) => Err(StoreError::Indexing { behind }),
            None => Ok(()),
        }
    }
}

/// The log position the index was deferred at; None while it is live.
fn deferred_at(c: &rusqlite::Connection) -> rusqlite::Result<Option<i64>> {
    c.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1", [DEFERRED], |r| r.get(0))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
}

/// How many memories changed since the index was deferred.
fn behind(c: &rusqlite::Connection) -> rusqlite::Result<Option<u64>> {
    let Some(from) = deferred_at(c)? else { return Ok(None) };
    let n: i64 =
        c.query_row("SELECT count(*) FROM changes WHERE seq > ?1 AND table_name = 'memories'", [from], |r| r.get(0))?;
    Ok(Some(n as u64))
}
