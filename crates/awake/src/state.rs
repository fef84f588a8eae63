//! What the lease keeps on disk: the voter's promises, and a log of every
//! change of role.
//!
//! The voter state (`lease.json`) is written by one [`Persister`], in order,
//! one write at a time (a random temporary name, synced, renamed, the
//! directory synced), before any message that depends on it is sent. The
//! event log (`lease-events.jsonl`) records each acquire and release with the
//! CLOCK_BOOTTIME reading, so the logs of several processes on one machine can
//! be checked for overlap. Both are created owner-only (0600).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use roost_lease::{Ballot, Durable, View};

#[derive(Serialize, Deserialize)]
struct StoredBallot {
    round: u64,
    node: String,
}

#[derive(Serialize, Deserialize)]
struct StoredView {
    epoch: u64,
    seq: u64,
    voters: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// The Roost ID of the chain these votes belong to: a machine that joins
    /// another chain starts its votes afresh.
    #[serde(default)]
    chain: Option<String>,
    promised: Option<StoredBallot>,
    accepted: Option<(StoredBallot, u64)>,
    #[serde(default)]
    view: Option<StoredView>,
}

fn stored(b: &Ballot) -> StoredBallot {
    StoredBallot { round: b.round, node: b.node.clone() }
}

fn ballot(b: StoredBallot) -> Ballot {
    Ballot { round: b.round, node: b.node }
}

pub(crate) fn state_path(home: &Path) -> PathBuf {
    home.join("lease.json")
}

/// Why the stored voter state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error(
        "{} is damaged ({source}); it holds this machine's lease votes, so it is not reset silently: \
         stop every machine of the chain, delete it, and start them again",
        path.display()
    )]
    Damaged { path: PathBuf, source: serde_json::Error },
}

/// The voter state kept for `chain`, or the empty state when none was ever
/// written for it.
pub(crate) fn load(home: &Path, chain: &str) -> Result<Durable, StateError> {
    let path = state_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Durable::default()),
        Err(source) => return Err(StateError::Unreadable { path, source }),
    };
    let stored: Stored = match serde_json::from_str(&text) {
        Ok(stored) => stored,
        Err(source) => return Err(StateError::Damaged { path, source }),
    };
    if stored.chain.as_deref() != Some(chain) {
        return Ok(Durable::default());
    }
    Ok(Durable {
        promised: stored.promised.map(ballot),
        accepted: stored.accepted.map(|(b, ttl)| (ballot(b), Duration::from_millis(ttl))),
        view: stored.view.map(|v| View::new(v.epoch, v.seq, v.voters)),
    })
}

/// The voter state of `chain` as `lease.json` holds it.
fn encode(chain: &str, durable: &Durable) -> Vec<u8> {
    let stored = Stored {
        chain: Some(chain.to_string()),
        promised: durable.promised.as_ref().map(stored),
        accepted: durable.accepted.as_ref().map(|(b, ttl)| (stored(b), ttl.as_millis() as u64)),
        view: durable.view.as_ref().map(|v| StoredView { epoch: v.id.epoch, seq: v.id.seq, voters: v.voters.clone() }),
    };
    serde_json::to_vec(&stored).expect("voter state serialises")
}

/// How far the writes have got: the number of the last state known to be on
/// disk, and why the last write failed, if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub through: u64,
    pub failed: Option<String>,
}

/// The one writer of `lease.json`: a thread that writes the states it is
/// given in order, one at a time, so a write that stalls delays the next
/// instead of racing it, and reports how far it has got.
pub(crate) struct Persister {
    queue: std::sync::mpsc::Sender<(u64, Durable)>,
    written: watch::Receiver<Written>,
}

impl Persister {
    pub fn start(home: &Path, chain: &str) -> Persister {
        let (queue, requests) = std::sync::mpsc::channel::<(u64, Durable)>();
        let (report, written) = watch::channel(Written::default());
        let (path, chain) = (state_path(home), chain.to_string());
        std::thread::spawn(move || {
            while let Ok((number, durable)) = requests.recv() {
                let outcome = roost_instance::replace(&path, &encode(&chain, &durable));
                report.send_modify(|w| match outcome {
                    Ok(()) => *w = Written { through: number, failed: None },
                    Err(e) => w.failed = Some(e.to_string()),
                });
            }
        });
        Persister { queue, written }
    }

    /// Queues `durable`, the state numbered `number`, for writing.
    pub fn write(&mut self, number: u64, durable: Durable) {
        let _ = self.queue.send((number, durable));
    }

    /// Waits at most `limit` for state `number` to be on disk; false if it
    /// is not (the write failed or is still under way).
    pub async fn wait(&mut self, number: u64, limit: Duration) -> bool {
        let done = self.written.wait_for(|w| w.through >= number || w.failed.is_some());
        match tokio::time::timeout(limit, done).await {
            Ok(Ok(written)) => written.through >= number,
            _ => false,
        }
    }

    /// The number of the last state known to be on disk.
    pub fn through(&self) -> u64 {
        self.written.borrow().through
    }

    /// Why the last write failed, if the disk is behind because of it.
    pub fn failure(&self) -> Option<String> {
        self.written.borrow().failed.clone()
    }
}

/// Appends role changes to `lease-events.jsonl`, each naming the chain it
/// belongs to (a machine that joins another chain starts anew there). A
/// thread of its own does the appending, in order, so the lease loop never
/// waits on the disk for it; it ends when the `Events` is dropped.
pub(crate) struct Events {
    lines: std::sync::mpsc::Sender<String>,
    chain: String,
}

impl Events {
    pub fn open(home: &Path, chain: &str) -> Events {
        let (lines, appending) = std::sync::mpsc::channel::<String>();
        let path = home.join("lease-events.jsonl");
        std::thread::spawn(move || {
            let mut file = match OpenOptions::new().create(true).append(true).mode(0o600).open(&path) {
                Ok(file) => file,
                Err(e) => {
                    return tracing::warn!(error = %e, "cannot open the lease event log; role changes are only traced");
                }
            };
            while let Ok(line) = appending.recv() {
                if let Err(e) = file.write_all(line.as_bytes()) {
                    tracing::warn!(error = %e, "cannot append to the lease event log");
                }
            }
        });
        Events { lines, chain: chain.to_string() }
    }

    pub fn record(&mut self, mut event: Value, at: Duration) {
        event["at_ns"] = Value::from(at.as_nanos() as u64);
        event["chain"] = Value::from(self.chain.as_str());
        tracing::info!(%event, "lease");
        let _ = self.lines.send(format!("{event}\n"));
    }
}
