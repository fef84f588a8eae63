//! One machine's replicated data, kept by the real `roost_store::Store`: a
//! SQLite database in a temporary directory, stamped by the simulated clock.
//! Client writes go through the write door (shared settings, so machines
//! write the same rows concurrently); the holder's effects are agent state
//! written under its lease epoch, which the store's fence refuses when the
//! store has seen a later epoch. Received entries go through `Store::apply`,
//! which verifies signatures and hash chains, runs the conflict rules and
//! keeps the conflict records.
//!
//! Exchange with each peer is a `roost_core::session::Session`, the state
//! machine the real session drives: it picks from the log what the peer
//! lacks within the window, says when heads are due, holds entries that are
//! not ready, and ends when the peer is silent or acknowledges nothing, after
//! which a new session starts from the peer's heads, as a reconnect would.
//! The simulated network loses messages, which a QUIC stream never does;
//! the stall rule, on a short clock here, recovers from that. Messages
//! travel in the real wire encoding. What the real session does around the
//! state machine (the hello's certificates, learning machines, the
//! duplicate-session rule) is not simulated.
//!
//! What the store committed survives a crash (it is closed and opened
//! again); the sessions do not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use roost_agent::outbox::Report;
use roost_agent::{Entry, Reply};
use roost_core::Table;
use roost_core::protocol::{Heads, Message, SignedEntry, behind};
use roost_core::session::{Greeting, Received, Session, Timing};
use roost_store::agent::Inbound;
use roost_store::{InstanceEntry, ListQuery, Mutation, Standing, Store, StoreError, Verdict};
use serde_json::{Map, Value};

/// Most entries one message carries.
const BATCH: u32 = 256;
/// The session's clocks, scaled to the simulated network's delays.
const TIMING: Timing =
    Timing { keepalive: Duration::from_millis(300), idle: Duration::from_secs(2), stall: Duration::from_secs(1) };
/// Peers heard within this long count when deciding whether the log is caught up.
const HEARD: Duration = Duration::from_secs(1);
/// The wall time a machine's clock reads zero at: 2026-01-01T00:00:00Z.
const WALL_START_SECS: i64 = 1_767_225_600;

pub struct Replica {
    me: String,
    /// The store's heads, read again after every change to it.
    heads: Heads,
    /// The highest epoch handed to the store's fence.
    fenced_to: u64,
    /// Keeps the database's directory for the replica's life.
    dir: tempfile::TempDir,
    /// The simulated time, in nanoseconds, the store reads.
    clock: Arc<AtomicU64>,
    store: Store,
    sessions: BTreeMap<String, Session>,
    /// When each peer last reported its heads (local time).
    reported: BTreeMap<String, Duration>,
}

/// The part of a replica that must be identical everywhere once it has
/// converged: the heads, every shared row, and the open conflicts with
/// their winners and losers.
#[derive(Debug, PartialEq, Eq)]
pub struct Converged {
    pub heads: Heads,
    pub rows: BTreeMap<String, String>,
    pub open: BTreeSet<String>,
}

/// A machine's signing key, derived from its name.
fn key_of(name: &str) -> SigningKey {
    let mut seed = [0x5au8; 32];
    for (i, b) in name.bytes().enumerate() {
        seed[i % 32] = seed[i % 32].rotate_left(3) ^ b;
    }
    SigningKey::from_bytes(&seed)
}

fn entry_of(name: &str) -> InstanceEntry {
    InstanceEntry {
        id: name.to_string(),
        name: name.to_string(),
        role: roost_core::Role::Home,
        addresses: Vec::new(),
        certificate: "simulated".into(),
        signing_key: roost_core::hex::encode(key_of(name).verifying_key().as_bytes()),
        encryption_key: "00".repeat(32),
        version: None,
        last_seen: None,
        status: Standing::Active,
        created_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

impl Replica {
    /// A fresh store for `me` that knows the keys of every machine in
    /// `machines` (the certificates' part of the registry).
    pub fn new(me: &str, machines: &[String]) -> Replica {
        let dir = std::path::Path::new("/dev/shm")
            .is_dir()
            .then(|| tempfile::Builder::new().prefix("roost-sim").tempdir_in("/dev/shm").ok())
            .flatten()
            .unwrap_or_else(|| tempfile::Builder::new().prefix("roost-sim").tempdir().expect("a temporary directory"));
        let clock = Arc::new(AtomicU64::new(0));
        let store = open(&dir, me, &clock);
        for name in machines.iter().filter(|n| *n != me) {
            store.register_instance(&entry_of(name)).expect("registering a simulated machine");
        }
        let heads = store.heads().expect("the simulated disk reads");
        Replica {
            me: me.to_string(),
            heads,
            fenced_to: 0,
            dir,
            clock,
            store,
            sessions: BTreeMap::new(),
            reported: BTreeMap::new(),
        }
    }

    /// A crash: the store is closed and opened again on what it committed.
    pub fn crash(&mut self) {
        self.sessions.clear();
        self.reported.clear();
        self.store = open(&self.dir, &self.me, &self.clock);
        self.heads = self.store.heads().expect("the simulated disk reads");
        self.fenced_to = 0;
    }

    /// Sets the time the store stamps what it writes next.
    fn at(&self, now: Duration) {
        self.clock.store(now.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn heads(&self) -> &Heads {
        &self.heads
    }

    /// Writes `value` to the shared setting `key`; returns the entry's log
    /// position and hash once it is committed (acknowledged), or None when
    /// the setting had that value already (nothing is written).
    pub fn write(&mut self, key: &str, value: &str, now: Duration) -> Option<(String, u64, [u8; 32])> {
        self.at(now);
        let patch = Map::from_iter([("value".to_string(), Value::from(value))]);
        let update = Mutation::Update { table: Table::Settings, key: key.to_string(), patch: patch.clone() };
        match self.store.write(update) {
            Err(StoreError::NotFound { .. }) => {
                let mut fields = patch;
                fields.insert("key".into(), Value::from(key));
                self.store.write(Mutation::Create { table: Table::Settings, fields }).expect("a client write");
            }
            written => {
                written.expect("a client write");
            }
        }
        self.written()
    }

    /// The holder's effect: agent state `key` written under `epoch`. None
    /// when the store's fence refuses the epoch (it has seen a later one).
    pub fn write_agent(
        &mut self,
        key: &str,
        value: &str,
        epoch: u64,
        now: Duration,
    ) -> Option<(String, u64, [u8; 32])> {
        self.at(now);
        match self.store.write_agent_state(key, value, epoch) {
            Ok(_) => self.written(),
            Err(StoreError::StaleEpoch { .. }) => None,
            Err(e) => panic!("the agent's write failed: {e}"),
        }
    }

    /// The entry a local write just logged, if it logged one.
    fn written(&mut self) -> Option<(String, u64, [u8; 32])> {
        let before = self.heads.get(&self.me).copied();
        self.heads = self.store.heads().expect("the simulated disk reads");
        let seq = self.heads.get(&self.me).copied().filter(|seq| Some(*seq) != before)?;
        let hash = self.store.entry_hash(&self.me, seq).expect("the simulated disk reads").expect("just written");
        Some((self.me.clone(), seq, hash))
    }

    /// Records an inbound message of `topic` with the channel's id `id`, as
    /// any machine does; its log position once committed (acknowledged to
    /// the channel), or None when the message was recorded before.
    pub fn record_message(&mut self, topic: &str, id: &str, now: Duration) -> Option<(String, u64, [u8; 32])> {
        self.at(now);
        let inbound = Inbound { channel: "sim", topic, message_id: id, sender: None, text: id };
        let (_, recorded) = self.store.record_message(&inbound).expect("the simulated disk writes");
        if recorded { self.written() } else { None }
    }

    /// The messages not answered yet, as the holder plans from them.
    pub fn open_ledger(&self) -> Vec<Entry> {
        self.store.open_ledger().expect("the simulated disk reads")
    }

    /// Every message with its reply record.
    pub fn ledger(&self) -> Vec<Entry> {
        self.store.ledger(None).expect("the simulated disk reads")
    }

    /// A reply record written under `epoch`; its log position, or None when
    /// the store's fence refuses the epoch.
    pub fn write_reply(&mut self, reply: &Reply, epoch: u64, now: Duration) -> Option<(String, u64, [u8; 32])> {
        self.at(now);
        match self.store.write_reply(reply, epoch) {
            Ok(()) => self.written(),
            Err(StoreError::StaleEpoch { .. } | StoreError::StaleTopicEpoch { .. }) => None,
            Err(e) => panic!("the reply record's write failed: {e}"),
        }
    }

    /// The peers heard from lately and the heads each last reported, and
    /// when: the machines the holder is connected to, and what each holds.
    pub fn peer_holdings(&self, now: Duration) -> Vec<Report> {
        self.sessions
            .iter()
            .filter(|(_, s)| now < s.heard() + HEARD)
            .filter_map(|(peer, s)| {
                let at = *self.reported.get(peer)?;
                Some(Report { peer: peer.clone(), heads: s.peer_heads().clone(), at })
            })
            .collect()
    }

    /// The highest epoch the store has seen.
    pub fn highest_epoch(&self) -> u64 {
        self.store.highest_epoch().expect("the simulated disk reads")
    }

    /// Raises the store's epoch fence to `epoch` (the highest the lease knows
    /// was granted), as the real driver does.
    pub fn fence(&mut self, epoch: u64) {
        if epoch > self.fenced_to {
            self.fenced_to = epoch;
            self.store.observe_epoch(epoch).expect("the simulated disk writes");
        }
    }

    /// Raises `topic`'s fence to the topic stamp it was just granted under,
    /// as the pool's shell does before acting on a grant.
    pub fn observe_topic_epoch(&mut self, topic: &str, epoch: u64) {
        self.store.observe_topic_epoch(topic, epoch).expect("the simulated disk writes");
    }

    /// Every topic of the ledger.
    pub fn topics(&self) -> Vec<String> {
        self.store.topics().expect("the simulated disk reads").into_iter().map(|(topic, _, _)| topic).collect()
    }

    /// The agent's replicated state under `prefix`: (key, value).
    pub fn agent_states(&self, prefix: &str) -> Vec<(String, String)> {
        let states = self.store.agent_states(prefix).expect("the simulated disk reads");
        states.into_iter().map(|s| (s.key, s.value)).collect()
    }

    /// Whether this replica holds the entry at `origin`/`seq` with that hash.
    pub fn holds(&self, origin: &str, seq: u64, hash: &[u8; 32]) -> bool {
        self.store.entry_hash(origin, seq).expect("the simulated disk reads").as_ref() == Some(hash)
    }

    /// Whether the log holds everything the peers heard from lately hold.
    pub fn caught_up(&self, now: Duration) -> bool {
        let heads = &self.heads;
        let mut recent = self.sessions.values().filter(|s| now < s.heard() + HEARD).peekable();
        recent.peek().is_some() && recent.all(|s| behind(heads, s.peer_heads()) == 0)
    }

    pub fn converged(&self) -> Converged {
        let query = ListQuery { limit: 100_000, ..ListQuery::default() };
        let mut rows = BTreeMap::new();
        for table in [Table::Settings, Table::AgentState, Table::AgentMessages] {
            for row in self.store.list(table, &query).expect("the simulated disk reads") {
                let id = row["id"].as_str().unwrap_or_default().to_string();
                rows.insert(id, Value::Object(row).to_string());
            }
        }
        let open = self
            .store
            .conflicts(false, 100_000)
            .expect("the simulated disk reads")
            .into_iter()
            .map(|c| {
                let (w, l) = (&c.winner, &c.loser);
                format!("{} {}:{} over {}:{}", c.id, w.origin, w.seq, l.origin, l.seq)
            })
            .collect();
        Converged { heads: self.heads.clone(), rows, open }
    }

    pub fn pending(&self) -> usize {
        self.sessions.values().map(Session::pending).sum()
    }

    /// The session with `peer`: a new one, from the heads it last reported,
    /// when there is none or the last one ended.
    fn session(&mut self, peer: &str, now: Duration) -> &mut Session {
        if self.sessions.get(peer).is_none_or(|s| s.ended(now).is_some()) {
            let heads = self.sessions.get(peer).map(|s| s.peer_heads().clone()).unwrap_or_default();
            let cursor = self.store.scan_start(&heads).expect("the simulated disk reads");
            let greeting =
                Greeting { software: String::new(), machines: Vec::new(), heads, relays: Vec::new(), entries: true };
            self.sessions.insert(peer.to_string(), Session::new(TIMING, &greeting, cursor, now));
        }
        self.sessions.get_mut(peer).expect("just made")
    }

    /// What to send `peer` now: heads when due and, if the window allows,
    /// entries the peer lacks, in local (causal) order.
    pub fn outgoing(&mut self, peer: &str, now: Duration) -> Vec<Message> {
        // What this session held may be ready since another one applied.
        if let Some(held) = self.session(peer, now).retry() {
            self.at(now);
            self.apply_through(peer, held, now);
        }
        let (store, heads) = (&self.store, &self.heads);
        let session = self.sessions.get_mut(peer).expect("just made");
        let mut out = Vec::new();
        if session.heads_due(heads, now) {
            out.push(Message::Heads(heads.clone()));
        }
        if let Some(after) = session.next_read() {
            let batch = store.entries_after(after, BATCH).expect("the simulated disk reads");
            if let Some(entries) = session.pick(batch, now).filter(|e| !e.is_empty()) {
                out.push(Message::Entries(entries));
            }
        }
        out
    }

    /// Takes in one message from `peer`.
    pub fn receive(&mut self, peer: &str, message: Message, now: Duration) {
        self.at(now);
        let received = self.session(peer, now).receive(message, now).expect("honest machines keep the protocol");
        match received {
            Received::Heads => {
                self.reported.insert(peer.to_string(), now);
            }
            Received::Entries(batch) => self.apply_through(peer, batch, now),
            Received::Machines(_) | Received::Revocations(_) | Received::Rotations(_) => {
                unreachable!("the simulator sends heads and entries only")
            }
        }
    }

    /// Applies `batch` through the store, and what the session with `peer`
    /// holds back whenever something applied.
    fn apply_through(&mut self, peer: &str, batch: Vec<SignedEntry>, now: Duration) {
        let mut attempt = Some(batch);
        while let Some(batch) = attempt {
            let verdicts = self.store.apply(&batch).expect("the simulated disk writes");
            if let Some(Verdict::Refused(why)) = verdicts.iter().find(|v| matches!(v, Verdict::Refused(_))) {
                panic!("{} refused an entry of an honest machine: {why}", self.me);
            }
            attempt = self.session(peer, now).applied(batch, &verdicts).expect("the inbox never fills here");
        }
        self.heads = self.store.heads().expect("the simulated disk reads");
    }
}

/// Opens the store in `dir`, its clock reading `clock` nanoseconds after
/// [`WALL_START_SECS`].
fn open(dir: &tempfile::TempDir, me: &str, clock: &Arc<AtomicU64>) -> Store {
    let reading = clock.clone();
    let wall = Arc::new(move || {
        let nanos = reading.load(Ordering::Relaxed) as i128 + i128::from(WALL_START_SECS) * 1_000_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("the simulated time is a valid date")
    });
    Store::open_with_clock(&dir.path().join("roost.db"), me, key_of(me), wall).expect("opening the simulated store")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(from: &mut Replica, to: &mut Replica, now: Duration) {
        for m in from.outgoing(&to.me.clone(), now) {
            let m = Message::decode(&m.encode()).unwrap();
            to.receive(&from.me.clone(), m, now);
        }
    }

    #[test]
    fn concurrent_writes_converge_with_the_loser_kept_open() {
        let names = vec!["a".to_string(), "b".to_string()];
        let (mut a, mut b) = (Replica::new("a", &names), Replica::new("b", &names));
        let now = Duration::from_secs(1);
        a.write("k", "1", now);
        b.write("k", "2", now);
        for _ in 0..2 {
            exchange(&mut a, &mut b, now);
            exchange(&mut b, &mut a, now);
        }
        assert_eq!(a.converged(), b.converged());
        assert_eq!(a.converged().open.len(), 1);
        b.write("k", "3", now);
        exchange(&mut b, &mut a, now);
        assert!(a.converged().open.is_empty(), "a write covering the loser supersedes it");
        assert!(a.caught_up(now) && !a.caught_up(now + HEARD));
    }

    #[test]
    fn a_crash_keeps_what_the_store_committed() {
        let names = vec!["a".to_string()];
        let mut a = Replica::new("a", &names);
        let (origin, seq, hash) = a.write("k", "1", Duration::from_secs(1)).unwrap();
        assert_eq!(a.write("k", "1", Duration::from_secs(1)), None, "an unchanged value writes nothing");
        a.crash();
        assert!(a.holds(&origin, seq, &hash));
        assert_eq!(a.write_agent("agent", "x", 3, Duration::from_secs(2)).map(|w| w.1), Some(2));
        assert_eq!(a.write_agent("agent", "y", 2, Duration::from_secs(3)), None, "the fence refuses an older epoch");
    }
}
