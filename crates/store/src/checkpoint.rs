//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that pushes the WAL
//! past its threshold: that commit copies the WAL into the database and
//! waits for two `fsync`s, 5–20 ms on an ordinary disk, and whatever write
//! comes next waits behind it. So the door's connection does not checkpoint:
//! its WAL hook only wakes a thread of the store's own, which runs passive
//! checkpoints (they never block a writer or a reader) on a connection of
//! its own. A write's latency no longer includes the disk's flush of earlier
//! writes, and during a catch-up the copying runs beside the apply.
//!
//! The WAL starts over from its beginning only when a write transaction
//! begins with every frame copied. Under a steady stream of writes a
//! checkpoint running beside them always ends a few commits behind, so the
//! checkpointer then copies those few while holding the door: writers that
//! never pause wait for that short copy once per round, writers that do
//! pause find nothing left to copy. Without it the WAL would grow for as
//! long as the writes go on.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use crate::Result;
use crate::connection::DoorConnection;

/// WAL pages after which a commit wakes the checkpointer: SQLite's own
/// automatic threshold.
const WAKE_AT_PAGES: i32 = 1000;

#[derive(Default)]
struct Signal {
    wanted: bool,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    signal: Mutex<Signal>,
    changed: Condvar,
}

impl Shared {
    fn set(&self, f: impl FnOnce(&mut Signal)) {
        f(&mut self.signal.lock().expect("checkpoint signal poisoned"));
        self.changed.notify_one();
    }
}

/// The store's checkpointing thread; stops (after any checkpoint under way)
/// when dropped.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` whenever `writer`'s
    /// commits leave its WAL past [`WAKE_AT_PAGES`]; `writer` no longer
    /// checkpoints by itself.
    pub(crate) fn start(path: &Path, writer: &Arc<Mutex<DoorConnection>>) -> Result<Checkpointer> {
        let conn = crate::connection::open_reader(path)?;
        let shared = Arc::new(Shared::default());
        let waker = shared.clone();
        let mut door = writer.lock().unwrap_or_else(PoisonError::into_inner);
        door.raw_mut().wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            if pages >= WAKE_AT_PAGES {
                waker.set(|s| s.wanted = true);
            }
            Ok(())
        }))?;
        drop(door);
        let (worker, writer) = (shared.clone(), writer.clone());
        let thread = std::thread::Builder::new()
            .name("roost-checkpoint".into())
            .spawn(move || run(&conn, &writer, &worker))
            .map_err(crate::StoreError::Checkpointer)?;
        Ok(Checkpointer { shared, thread: Some(thread) })
    }
}

fn run(conn: &Connection, writer: &Mutex<DoorConnection>, shared: &Shared) {
    loop {
        {
            let mut signal = shared.signal.lock().expect("checkpoint signal poisoned");
            while !signal.wanted && !signal.stopping {
                signal = shared.changed.wait(signal).expect("checkpoint signal poisoned");
            }
            if signal.stopping {
                return;
            }
            signal.wanted = false;
        }
        // Copies the bulk beside the writers, then what they added meanwhile
        // (nothing, unless they never paused) with the door held.
        let outcome = passive_checkpoint(conn).and_then(|_| {
            let mut door = writer.lock().unwrap_or_else(PoisonError::into_inner);
            passive_checkpoint(door.raw_mut())
        });
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "WAL checkpoint failed; trying again after the next commit");
        }
    }
}

/// Copies what it can of the WAL into the database without waiting for
/// anyone.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE).map(drop)
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.set(|s| s.stopping = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
