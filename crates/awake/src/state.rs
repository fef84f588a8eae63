//! What the lease keeps on disk: the voter's promises, and a log of every
//! change of role.
//!
//! The voter state (`lease.json`) is written to a temporary file, synced and
//! renamed before any message that depends on it is sent; it changes only on
//! a new ballot, never on a renewal. The event log (`lease-events.jsonl`)
//! records each acquire and release with the CLOCK_BOOTTIME reading, so the
//! logs of several processes on one machine can be checked for overlap.
//! Both are created owner-only (0600).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The voter state kept for `chain`, or the empty state when none was ever
/// written for it.
pub(crate) fn load(home: &Path, chain: &str) -> Result<Durable, String> {
    let path = state_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Durable::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let stored: Stored = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is damaged ({e}); it holds this machine's lease votes, so it is not reset silently: \
             stop every machine of the chain, delete it, and start them again",
            path.display()
        )
    })?;
    if stored.chain.as_deref() != Some(chain) {
        return Ok(Durable::default());
    }
    Ok(Durable {
        promised: stored.promised.map(ballot),
        accepted: stored.accepted.map(|(b, ttl)| (ballot(b), Duration::from_millis(ttl))),
        view: stored.view.map(|v| View::new(v.epoch, v.seq, v.voters)),
    })
}

/// Writes the voter state of `chain` durably (temporary file, fsync, rename).
pub(crate) fn save(home: &Path, chain: &str, durable: &Durable) -> std::io::Result<()> {
    let stored = Stored {
        chain: Some(chain.to_string()),
        promised: durable.promised.as_ref().map(stored),
        accepted: durable.accepted.as_ref().map(|(b, ttl)| (stored(b), ttl.as_millis() as u64)),
        view: durable.view.as_ref().map(|v| StoredView { epoch: v.id.epoch, seq: v.id.seq, voters: v.voters.clone() }),
    };
    let path = state_path(home);
    let temporary = path.with_extension("json.tmp");
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(&serde_json::to_vec(&stored).expect("voter state serialises"))?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    File::open(home)?.sync_all()
}

/// Appends role changes to `lease-events.jsonl`, each naming the chain it
/// belongs to (a machine that joins another chain starts anew there).
pub(crate) struct Events {
    file: Option<File>,
    chain: String,
}

impl Events {
    pub fn open(home: &Path, chain: &str) -> Events {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(home.join("lease-events.jsonl"));
        if let Err(e) = &file {
            tracing::warn!(error = %e, "cannot open the lease event log; role changes are only traced");
        }
        Events { file: file.ok(), chain: chain.to_string() }
    }

    pub fn record(&mut self, mut event: Value, at: Duration) {
        event["at_ns"] = Value::from(at.as_nanos() as u64);
        event["chain"] = Value::from(self.chain.as_str());
        tracing::info!(%event, "lease");
        if let Some(file) = &mut self.file {
            let mut line = event.to_string();
            line.push('\n');
            if let Err(e) = file.write_all(line.as_bytes()) {
                tracing::warn!(error = %e, "cannot append to the lease event log");
            }
        }
    }
}
