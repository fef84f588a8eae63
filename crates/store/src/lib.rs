//! Roost's SQLite store.
//!
//! One database file per instance, in WAL mode so readers never block the
//! writer and several processes (the gateway, stdio MCP servers, the CLI) can
//! share it. Writes to synced tables go only through [`door`], which validates
//! with `roost-core`, writes the row, advances the persisted Lamport clock and
//! appends the change record in one transaction. SQLite triggers refuse any
//! other write to those tables, so the rule holds even for code that forgets it.

pub mod agent;
mod apply;
mod checkpoint;
pub mod conflicts;
mod connection;
pub mod door;
mod fence;
mod log;
mod migrations;
mod nonces;
pub mod query;
pub mod registry;
mod restore;
mod row;
mod search_index;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use thiserror::Error;

use roost_core::ValidationError;

pub use apply::Verdict;
pub use conflicts::{Conflict, ConflictVersion, Keep, KeepError};
pub use door::{ImportOutcome, Imported, Mutation};
pub use fence::AgentState;
pub use log::StoredChange;
pub use query::{ListQuery, SearchHit, SearchQuery, Sort};
pub use registry::{InstanceEntry, Standing};
pub use search_index::DEFER_FROM;

use connection::DoorConnection;

/// Errors from the store. Each displays as one line a person can act on.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("no {what} with id or name {key:?}")]
    NotFound { what: &'static str, key: String },
    #[error("{0}")]
    Duplicate(String),
    #[error("conflict {id} is already resolved ({resolution})")]
    AlreadyResolved { id: String, resolution: String },
    #[error("{0}")]
    Ambiguous(String),
    #[error("machine {name} ({id}) is revoked; revocation is permanent")]
    Revoked { name: String, id: String },
    #[error("invalid search query ({0}); use plain words, \"exact phrases\" in double quotes, OR, NOT, and prefix*")]
    BadQuery(String),
    #[error(
        "the search index is being rebuilt after this machine caught up ({behind} memories not indexed yet); try again shortly"
    )]
    Indexing { behind: u64 },
    #[error("database is busy: another Roost process held the write lock too long; try again")]
    Busy,
    #[error("database belongs to instance {found}, not {expected}: each instance needs its own directory")]
    WrongInstance { found: String, expected: String },
    #[error("database schema version {found} is newer than this roost understands ({known}); upgrade roost")]
    TooNew { found: usize, known: usize },
    #[error("{0} is written only by the machine holding the lease, each write under its epoch")]
    AgentOwned(&'static str),
    #[error("epoch {given} is stale: this instance has seen epoch {highest}, a later grant of the lease")]
    StaleEpoch { given: u64, highest: u64 },
    #[error("epoch {given} of topic {topic:?} is stale: this instance has seen {highest}, a later grant of the topic")]
    StaleTopicEpoch { topic: String, given: u64, highest: u64 },
    #[error("a topic epoch was given for {0}, which is no reply record of a message held here")]
    NoTopic(String),
    #[error("database schema lacks column {0}")]
    SchemaMismatch(String),
    #[error(
        "the database holds {0}, which Roost never writes; it was changed by another program: restore it from a backup or another machine"
    )]
    Damaged(String),
    #[error(
        "this machine was restored from a backup and first takes back from its peers the entries it wrote after the backup, so that its log goes on instead of forking; writes resume once `roost serve` has reached a peer (see `roost sync status`)"
    )]
    Restoring,
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("cannot create the database {path}: {source}")]
    Create { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start the thread that checkpoints the database: {0}")]
    Checkpointer(std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
            _ => StoreError::Sqlite(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open instance database.
///
/// Cheap to share behind an `Arc`; every method is blocking and meant to run
/// on a blocking thread when called from async code.
///
/// A panic inside the door rolls its transaction back (the `Transaction` is
/// dropped) and closes the door, so a poisoned writer lock is safe to reuse.
pub struct Store {
    path: PathBuf,
    author: door::Author,
    writer: Arc<Mutex<DoorConnection>>,
    readers: Mutex<Vec<Connection>>,
    on_commit: std::sync::RwLock<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Restored from a backup and still waiting for its own log ([`restore`]).
    restoring: std::sync::atomic::AtomicBool,
    _checkpointer: checkpoint::Checkpointer,
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `path` for the
    /// instance `origin`, whose log entries `key` signs. Refuses a database
    /// that another instance created.
    pub fn open(path: &Path, origin: &str, key: ed25519_dalek::SigningKey) -> Result<Store> {
        Store::open_with_clock(path, origin, key, std::sync::Arc::new(time::OffsetDateTime::now_utc))
    }

    /// [`Store::open`], with timestamps read from `clock`.
    pub fn open_with_clock(
        path: &Path,
        origin: &str,
        key: ed25519_dalek::SigningKey,
        clock: WallClock,
    ) -> Result<Store> {
        let mut writer = DoorConnection::open(path)?;
        writer.with_door_open(migrations::migrate)?;
        claim_instance(writer.raw_mut(), origin)?;
        let author = door::Author { origin: origin.to_string(), key, clock };
        door::sign_unsigned(&mut writer, &author)?;
        let restoring = restore::marked(writer.raw_mut())?;
        let writer = Arc::new(Mutex::new(writer));
        let checkpointer = checkpoint::Checkpointer::start(path, &writer)?;
        Ok(Store {
            path: path.to_path_buf(),
            author,
            writer,
            readers: Mutex::new(Vec::new()),
            on_commit: std::sync::RwLock::new(None),
            restoring: std::sync::atomic::AtomicBool::new(restoring),
            _checkpointer: checkpointer,
        })
    }

    /// Runs `f` with a read connection from the pool.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().expect("reader pool poisoned").pop();
        let conn = match conn {
            Some(conn) => conn,
            None => connection::open_reader(&self.path)?,
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().expect("reader pool poisoned");
        if pool.len() < 8 {
            pool.push(conn);
        }
        result
    }

    /// Sets what runs after every commit that may have grown the log (a
    /// write or an applied batch): replication uses it to send at once. A
    /// later hook replaces the earlier one (replication restarted).
    pub fn set_commit_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        *self.on_commit.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
    }

    pub(crate) fn committed(&self) {
        if let Some(hook) = &*self.on_commit.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            hook();
        }
    }

    /// The instance whose log this store writes.
    pub fn origin(&self) -> &str {
        &self.author.origin
    }

    /// A cheap liveness check of the database.
    pub fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM clock", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }
}

/// Records the owning instance on first open; afterwards checks it.
fn claim_instance(conn: &mut Connection, origin: &str) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'instance_id'", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    match found {
        Some(found) if found != origin => {
            return Err(StoreError::WrongInstance { found, expected: origin.to_string() });
        }
        Some(_) => {}
        None => {
            tx.execute("INSERT INTO meta (key, value) VALUES ('instance_id', ?1)", [origin])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Now as the RFC 3339 UTC text stored in every timestamp column.
pub fn now_text() -> String {
    time_text(time::OffsetDateTime::now_utc())
}

/// Unix seconds as the same RFC 3339 UTC text (the epoch if out of range).
pub fn unix_time_text(seconds: i64) -> String {
    time_text(time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
}

/// How long ago a stored timestamp was, by the system clock (zero for one
/// ahead of it); none when the text is not a timestamp.
pub fn age_of(stamp: &str) -> Option<std::time::Duration> {
    let then = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some((time::OffsetDateTime::now_utc() - then).try_into().unwrap_or_default())
}

/// `t` as the RFC 3339 UTC text stored in every timestamp column.
pub fn time_text(t: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(&format).expect("formatting a UTC timestamp cannot fail")
}

/// The time of day a store stamps its rows and log entries with: the
/// system's, or a simulated one, so a simulation of the store replays
/// byte for byte.
pub type WallClock = std::sync::Arc<dyn Fn() -> time::OffsetDateTime + Send + Sync>;
