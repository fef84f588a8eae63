//! One machine's replicated rows, run by the rules of `roost_core`: local
//! writes take the next log position, a Lamport tick and `next_vector`;
//! received entries wait in an [`Inbox`] until [`ready`], then go through
//! [`resolve`], which keeps losing concurrent versions as open conflicts
//! until a covering version supersedes them.
//!
//! Exchange is anti-entropy over the simulated network: every few hundred
//! milliseconds a machine sends each peer its heads and the entries the peer
//! lacks according to the heads it reported ([`PeerView`]), a window at a
//! time; a peer that acknowledges nothing for a second gets everything
//! unacknowledged again, as a new session would. Messages travel in the real
//! wire encoding.
//!
//! What the store commits (log, rows, conflicts, clock) survives a crash;
//! the inbox and the peer views do not.

use std::collections::BTreeMap;
use std::time::Duration;

use roost_core::protocol::{Heads, Inbox, Message, PeerView, SignedEntry, behind};
use roost_core::sync::{Outcome, RowState, Version, covers, next_vector, ready, resolve};
use roost_core::{Entry, GENESIS, Lamport, Op, RowId, Table};

/// Most entries one message carries.
const BATCH: usize = 256;
/// Most entries sent to one peer and not yet acknowledged.
const WINDOW: u64 = 1024;
/// A peer that acknowledges nothing for this long is sent everything again.
const RESEND: Duration = Duration::from_secs(1);
/// Peers heard within this long count when deciding whether the log is caught up.
const HEARD: Duration = Duration::from_secs(1);

/// What the store keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    me: String,
    lamport: Lamport,
    heads: Heads,
    /// Every entry held, by origin and sequence, with its hash.
    log: BTreeMap<(String, u64), (SignedEntry, [u8; 32])>,
    rows: BTreeMap<RowId, RowState>,
    /// Losing concurrent versions, by their log position.
    open: BTreeMap<(String, u64), (RowId, Version)>,
}

#[derive(Debug)]
struct Session {
    view: PeerView,
    heard: Option<Duration>,
    progress: Duration,
}

#[derive(Debug)]
pub struct Replica {
    store: Store,
    inbox: Inbox,
    sessions: BTreeMap<String, Session>,
}

/// The part of a replica that must be identical everywhere once it has converged.
pub type Converged<'a> = (&'a Heads, &'a BTreeMap<RowId, RowState>, &'a BTreeMap<(String, u64), (RowId, Version)>);

impl Replica {
    pub fn new(me: &str) -> Replica {
        let store = Store {
            me: me.to_string(),
            lamport: Lamport(0),
            heads: Heads::new(),
            log: BTreeMap::new(),
            rows: BTreeMap::new(),
            open: BTreeMap::new(),
        };
        Replica { store, inbox: Inbox::default(), sessions: BTreeMap::new() }
    }

    /// A crash: only what the store committed is left.
    pub fn crash(&mut self) {
        self.inbox = Inbox::default();
        self.sessions.clear();
    }

    pub fn heads(&self) -> &Heads {
        &self.store.heads
    }

    /// Writes `value` to the shared row `key`; returns the entry's log
    /// position and hash once it is committed (acknowledged).
    pub fn write(&mut self, key: &str, value: &str) -> (String, u64, [u8; 32]) {
        let store = &mut self.store;
        let me = store.me.clone();
        let seq = store.heads.get(&me).copied().unwrap_or(0) + 1;
        store.lamport = store.lamport.tick();
        let row_id = RowId::named("roost-sim", key);
        let current = store.rows.get(&row_id);
        let entry = Entry {
            origin: me.clone(),
            seq,
            lamport: store.lamport,
            prev_hash: store.log.get(&(me.clone(), seq - 1)).map_or(GENESIS, |(_, hash)| *hash),
            table: Table::Memories,
            op: if current.is_some() { Op::Update } else { Op::Insert },
            row_id: row_id.clone(),
            vector: next_vector(current.map(|r| &r.vector), &me, seq),
            row: format!(r#"{{"key":"{key}","value":"{value}"}}"#),
        };
        let hash = store.insert(SignedEntry { entry, signature: [0; 64] });
        (me, seq, hash)
    }

    /// Whether this replica holds the entry at `origin`/`seq` with that hash.
    pub fn holds(&self, origin: &str, seq: u64, hash: &[u8; 32]) -> bool {
        self.store.log.get(&(origin.to_string(), seq)).is_some_and(|(_, h)| h == hash)
    }

    /// Whether the log covers `head` (a handoff's catch-up target).
    pub fn covers(&self, head: &Heads) -> bool {
        behind(&self.store.heads, head) == 0
    }

    /// Whether the log holds everything the peers heard from lately hold.
    pub fn caught_up(&self, now: Duration) -> bool {
        let mut recent = self.sessions.values().filter(|s| s.heard.is_some_and(|at| now < at + HEARD)).peekable();
        recent.peek().is_some() && recent.all(|s| behind(&self.store.heads, s.view.heads()) == 0)
    }

    pub fn converged(&self) -> Converged<'_> {
        (&self.store.heads, &self.store.rows, &self.store.open)
    }

    pub fn pending(&self) -> usize {
        self.inbox.len()
    }

    /// What to send `peer` now: this replica's heads and, if the window
    /// allows, entries the peer lacks, in causal (Lamport) order.
    pub fn outgoing(&mut self, peer: &str, now: Duration) -> Vec<Message> {
        let session = self.sessions.entry(peer.to_string()).or_insert_with(|| Session {
            view: PeerView::new(Heads::new()),
            heard: None,
            progress: now,
        });
        if session.view.in_flight() > 0 && now >= session.progress + RESEND {
            session.view = PeerView::new(session.view.heads().clone());
            session.progress = now;
        }
        let mut batch: Vec<SignedEntry> = Vec::new();
        if session.view.in_flight() < WINDOW {
            for (origin, head) in &self.store.heads {
                let view = &session.view;
                let reported = view.heads().get(origin).copied().unwrap_or(0);
                // `lacks` is false up to what was reported or sent, true after.
                let (mut lo, mut hi) = (reported + 1, head + 1);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if view.lacks(origin, mid) { hi = mid } else { lo = mid + 1 }
                }
                for seq in lo..=*head {
                    if batch.len() == BATCH {
                        break;
                    }
                    batch.push(self.store.log[&(origin.clone(), seq)].0.clone());
                }
            }
        }
        batch.sort_by_key(|e| e.entry.lamport);
        for e in &batch {
            session.view.sent(&e.entry.origin, e.entry.seq);
        }
        let mut out = vec![Message::Heads(self.store.heads.clone())];
        if !batch.is_empty() {
            out.push(Message::Entries(batch));
        }
        out
    }

    /// Takes in one message from `peer`.
    pub fn receive(&mut self, peer: &str, message: Message, now: Duration) {
        match message {
            Message::Heads(heads) => {
                let session = self.sessions.entry(peer.to_string()).or_insert_with(|| Session {
                    view: PeerView::new(Heads::new()),
                    heard: None,
                    progress: now,
                });
                let before = session.view.in_flight();
                session.view.reported(&heads);
                if session.view.in_flight() < before {
                    session.progress = now;
                }
                session.heard = Some(now);
            }
            Message::Entries(batch) => {
                for signed in batch {
                    if signed.entry.seq > self.store.head(&signed.entry.origin) {
                        assert!(self.inbox.hold(signed), "the inbox never fills in a simulation this small");
                    }
                }
                self.apply_ready();
            }
            Message::Hello { .. } | Message::Machines(_) => {
                unreachable!("the simulator sends heads and entries only")
            }
        }
    }

    /// Applies held entries as they become ready, until none is.
    fn apply_ready(&mut self) {
        loop {
            let mut progressed = false;
            for signed in self.inbox.drain() {
                let e = &signed.entry;
                if e.seq <= self.store.head(&e.origin) {
                    continue;
                }
                if ready(&e.origin, e.seq, &e.vector, &self.store.heads) {
                    self.store.lamport = self.store.lamport.observe(e.lamport);
                    self.store.insert(signed);
                    progressed = true;
                } else {
                    self.inbox.hold(signed);
                }
            }
            if !progressed {
                return;
            }
        }
    }
}

impl Store {
    fn head(&self, origin: &str) -> u64 {
        self.heads.get(origin).copied().unwrap_or(0)
    }

    /// Applies one ready entry (a local write or a received one) and logs it.
    fn insert(&mut self, signed: SignedEntry) -> [u8; 32] {
        let e = &signed.entry;
        assert!(ready(&e.origin, e.seq, &e.vector, &self.heads), "applied out of causal order: {e:?}");
        let prev = self.log.get(&(e.origin.clone(), e.seq - 1)).map_or(GENESIS, |(_, hash)| *hash);
        assert_eq!(e.prev_hash, prev, "{}'s chain is broken at {}", e.origin, e.seq);
        let version = Version {
            origin: e.origin.clone(),
            seq: e.seq,
            lamport: e.lamport,
            vector: e.vector.clone(),
            row: e.row.clone(),
            // Client writes carry no lease epoch; agent effects go to the sink.
            epoch: None,
        };
        match resolve(self.rows.get(&e.row_id), &version) {
            Outcome::Known | Outcome::Fenced => {}
            Outcome::Replace(state) => {
                self.rows.insert(e.row_id.clone(), state);
            }
            Outcome::Conflict { state, loser } => {
                self.open.insert((loser.origin.clone(), loser.seq), (e.row_id.clone(), loser));
                self.rows.insert(e.row_id.clone(), state);
            }
        }
        let position = (e.origin.clone(), e.seq);
        self.open.retain(|id, (row, loser)| !(*row == e.row_id && *id != position && covers(&e.vector, &loser.vector)));
        self.heads.insert(e.origin.clone(), e.seq);
        let hash = e.hash();
        self.log.insert(position, (signed, hash));
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(from: &mut Replica, to: &mut Replica, now: Duration) {
        for m in from.outgoing(&to.store.me.clone(), now) {
            let m = Message::decode(&m.encode()).unwrap();
            to.receive(&from.store.me.clone(), m, now);
        }
    }

    #[test]
    fn concurrent_writes_converge_with_the_loser_kept_open() {
        let (mut a, mut b) = (Replica::new("a"), Replica::new("b"));
        a.write("k", "1");
        b.write("k", "2");
        let now = Duration::from_secs(1);
        for _ in 0..2 {
            exchange(&mut a, &mut b, now);
            exchange(&mut b, &mut a, now);
        }
        assert_eq!(a.converged(), b.converged());
        assert_eq!(a.store.open.len(), 1);
        b.write("k", "3");
        exchange(&mut b, &mut a, now);
        assert!(a.store.open.is_empty(), "a write covering the loser supersedes it");
        assert!(a.caught_up(now) && !a.caught_up(now + HEARD));
    }
}
