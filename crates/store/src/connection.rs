//! Opening SQLite connections with Roost's settings and the write-door guard.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};

use crate::{Result, StoreError};

/// How long a writer waits for another process's write lock before giving
/// up with [`crate::StoreError::Busy`]. Bounded, as every disk wait must be.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);
/// The writer's page cache, as SQLite's negative KiB.
const WRITER_CACHE_KIB: i64 = -16 * 1024;

fn configure(conn: &Connection, door_open: Arc<AtomicBool>) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The door runs a few dozen distinct statements per write; with the
    // default 16 the cache thrashes and every write parses SQL again.
    conn.set_prepared_statement_cache_capacity(128);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.create_scalar_function("roost_write_door", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(i64::from(door_open.load(Ordering::Acquire)))
    })?;
    Ok(())
}

/// Creates an empty file at `path` with mode 0600 unless something is there
/// already; SQLite takes an empty file as a new database.
fn create_private(path: &Path) -> Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(StoreError::Create { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// A read connection: the guard function always answers "closed".
pub(crate) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    configure(&conn, Arc::new(AtomicBool::new(false)))?;
    Ok(conn)
}

/// The one connection through which the write door writes.
pub(crate) struct DoorConnection {
    conn: Connection,
    door_open: Arc<AtomicBool>,
}

impl DoorConnection {
    /// Opens the database, creating it owner-only (0600) if absent: SQLite
    /// gives its WAL and shared-memory files the database file's mode.
    pub(crate) fn open(path: &Path) -> Result<DoorConnection> {
        create_private(path)?;
        let conn = Connection::open(path)?;
        let door_open = Arc::new(AtomicBool::new(false));
        configure(&conn, door_open.clone())?;
        // A catch-up applies thousands of entries a transaction: with room
        // for their pages SQLite neither spills them to the WAL midway nor
        // reads index pages back, and statement journals (every write fires
        // triggers) stay in memory. The cache fills only as it is used.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(DoorConnection { conn, door_open })
    }

    pub(crate) fn raw_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Runs `f` with the door open, closing it again however `f` ends.
    pub(crate) fn with_door_open<T>(&mut self, f: impl FnOnce(&mut Connection) -> T) -> T {
        struct Close<'a>(&'a AtomicBool);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.door_open.store(true, Ordering::Release);
        let _close = Close(&self.door_open);
        f(&mut self.conn)
    }
}
