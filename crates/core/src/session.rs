//! One replication session's control logic, without I/O: what the hello
//! must say, which of two sessions with the same peer stays, what to send
//! next within the window, when heads are due, what to do with the store's
//! verdicts on a received batch, and when the session is dead.
//!
//! The shell reads the log and applies entries; this state machine decides.
//! The real session (`roost-sync`) drives it over a QUIC stream and the
//! simulator over its lossy network, each with its own [`Timing`]; both
//! call the same methods in the same order: [`Session::next_read`] then
//! [`Session::pick`] to send, [`Session::heads_due`] to acknowledge and keep
//! alive, [`Session::receive`] and [`Session::applied`] for what arrives,
//! [`Session::retry`] when the log grew another way, [`Session::ended`] to
//! give up.

use std::time::Duration;

use crate::protocol::{
    Heads, INBOX_CAPACITY, Inbox, MAX_BATCH, Machine, Message, PROTOCOL_VERSION, PeerView, SignedEntry,
};

/// Most entries sent and not yet acknowledged.
pub const WINDOW: u64 = 16 * MAX_BATCH as u64;
/// Bytes of rows per batch, so batches of large rows stay small.
pub const BATCH_BYTES: usize = 4 << 20;

/// The session's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Heads are sent at least this often, so a live peer is never idle.
    pub keepalive: Duration,
    /// A peer heard nothing from for this long is gone.
    pub idle: Duration,
    /// Entries in flight and no acknowledgement progress for this long: the
    /// peer is stuck, and a new session starts over from its heads.
    pub stall: Duration,
}

impl Timing {
    /// Over a real network, where one apply of a large batch may take a
    /// database call's whole bound (30 s).
    pub const NETWORK: Timing =
        Timing { keepalive: Duration::from_secs(3), idle: Duration::from_secs(20), stall: Duration::from_secs(90) };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("expected a hello")]
    NoHello,
    #[error("hello without a certificate")]
    NoCertificate,
    #[error("peer speaks sync protocol {theirs}, this instance {PROTOCOL_VERSION}; upgrade the older one")]
    Version { theirs: u16 },
    #[error("a second hello")]
    SecondHello,
    #[error("entries sent to a machine that keeps no log")]
    EntriesToWitness,
    #[error("too many entries waiting for their dependencies")]
    InboxFull,
    #[error("the peer said nothing for too long")]
    Silent,
    #[error("the peer acknowledged nothing for too long")]
    Stalled,
}

impl SessionError {
    /// Whether the peer is refused (it cannot take part as it is), rather
    /// than having broken the protocol.
    pub fn is_refusal(&self) -> bool {
        matches!(self, SessionError::Version { .. })
    }
}

/// What a peer's hello says, once it checks out against this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The peer's Roost version, for people to read.
    pub software: String,
    /// The peer itself first, then the machines it knows.
    pub machines: Vec<Machine>,
    pub heads: Heads,
    /// The relays the peer uses.
    pub relays: Vec<String>,
    /// Both sides keep the log, so entries flow; with a witness only the
    /// machines of the chain and heads do.
    pub entries: bool,
}

/// Checks the first message of a session: a hello, in this protocol
/// version, naming the peer. Its certificate is the shell's to verify.
pub fn greet(hello: Message, keeps_data: bool) -> Result<Greeting, SessionError> {
    let Message::Hello { version, software, keeps_data: theirs, machines, heads, relays } = hello else {
        return Err(SessionError::NoHello);
    };
    if version != PROTOCOL_VERSION {
        return Err(SessionError::Version { theirs: version });
    }
    if machines.is_empty() {
        return Err(SessionError::NoCertificate);
    }
    Ok(Greeting { software, machines, heads, relays, entries: keeps_data && theirs })
}

/// Two sessions with one peer (both dialed at once): whether the new one,
/// opened by `new_dialer`, replaces the one `existing_dialer` opened. Both
/// sides decide alike, so exactly one session survives; the same dialer
/// dialing again replaces its own (the old one is dying).
pub fn replaces(existing_dialer: &str, new_dialer: &str) -> bool {
    new_dialer <= existing_dialer
}

/// What a received message asks of the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Apply these through the store, then report with [`Session::applied`].
    Entries(Vec<SignedEntry>),
    /// The peer's heads: taken in as its acknowledgement.
    Heads,
    /// Register these machines (joins and moves spread this way).
    Machines(Vec<Machine>),
    /// Revocations (text form) to check and take.
    Revocations(Vec<String>),
    /// Rotations of the identity (text form) to check and take.
    Rotations(Vec<String>),
}

/// What the store made of one received entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    /// Already in the log.
    Duplicate,
    /// Depends on an entry not here yet; hold it and try again later.
    NotReady,
    /// Invalid: never applied, never relayed. The text says why.
    Refused(String),
}

/// One session with one peer, from after the hello.
#[derive(Debug)]
pub struct Session {
    timing: Timing,
    entries: bool,
    view: PeerView,
    /// The local log position the sender has read up to.
    cursor: i64,
    inbox: Inbox,
    /// The heads last sent, and when.
    heads_sent: Option<(Heads, Duration)>,
    heard: Duration,
    /// When the acknowledged part last grew (or nothing was in flight).
    progress: Duration,
}

impl Session {
    /// A session that starts sending after local log position `cursor`
    /// (from the peer's heads in `greeting`).
    pub fn new(timing: Timing, greeting: &Greeting, cursor: i64, now: Duration) -> Session {
        Session {
            timing,
            entries: greeting.entries,
            view: PeerView::new(greeting.heads.clone()),
            cursor,
            inbox: Inbox::default(),
            heads_sent: None,
            heard: now,
            progress: now,
        }
    }

    /// Whether entries flow in this session (both sides keep the log).
    pub fn entries(&self) -> bool {
        self.entries
    }

    /// The heads the peer reported: everything it is known to hold.
    pub fn peer_heads(&self) -> &Heads {
        self.view.heads()
    }

    /// When the peer was last heard from.
    pub fn heard(&self) -> Duration {
        self.heard
    }

    /// Entries received and held until what they depend on arrives.
    pub fn pending(&self) -> usize {
        self.inbox.len()
    }

    /// The log position to read entries after, when the peer may be sent
    /// more: entries flow and the window has room.
    pub fn next_read(&self) -> Option<i64> {
        (self.entries && self.view.in_flight() < WINDOW).then_some(self.cursor)
    }

    /// Takes from `batch` (log positions and entries read after
    /// [`Session::next_read`], in log order) what the peer lacks, up to
    /// [`BATCH_BYTES`] of rows; the stall clock starts when nothing was in
    /// flight. None when the batch was empty: the peer has
    /// been offered the whole log. An empty list means read on.
    pub fn pick(&mut self, batch: Vec<(i64, SignedEntry)>, now: Duration) -> Option<Vec<SignedEntry>> {
        if batch.is_empty() {
            return None;
        }
        if self.view.in_flight() == 0 {
            self.progress = now;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (position, signed) in batch {
            assert!(position > self.cursor, "the log is read forward");
            if self.view.lacks(&signed.entry.origin, signed.entry.seq) {
                if bytes > BATCH_BYTES {
                    break;
                }
                bytes += signed.entry.row.len();
                self.view.sent(&signed.entry.origin, signed.entry.seq);
                out.push(signed);
            }
            self.cursor = position;
        }
        assert!(self.view.in_flight() <= WINDOW + MAX_BATCH as u64, "the window bounds what is in flight");
        Some(out)
    }

    /// Whether to send `heads` now: they moved since last sent, or the
    /// keepalive is due. Counts them sent when so.
    pub fn heads_due(&mut self, heads: &Heads, now: Duration) -> bool {
        let due = match &self.heads_sent {
            Some((sent, at)) => sent != heads || now >= *at + self.timing.keepalive,
            None => true,
        };
        if due {
            self.heads_sent = Some((heads.clone(), now));
        }
        due
    }

    /// Takes in one message from the peer.
    pub fn receive(&mut self, message: Message, now: Duration) -> Result<Received, SessionError> {
        self.heard = now;
        match message {
            Message::Entries(_) if !self.entries => Err(SessionError::EntriesToWitness),
            Message::Entries(batch) => Ok(Received::Entries(batch)),
            Message::Heads(heads) => {
                let before = self.view.in_flight();
                self.view.reported(&heads);
                if self.view.in_flight() < before {
                    self.progress = now;
                }
                Ok(Received::Heads)
            }
            Message::Machines(machines) => Ok(Received::Machines(machines)),
            Message::Revocations(revocations) => Ok(Received::Revocations(revocations)),
            Message::Rotations(rotations) => Ok(Received::Rotations(rotations)),
            Message::Hello { .. } => Err(SessionError::SecondHello),
        }
    }

    /// Takes the store's verdicts on `batch`: holds what was not ready.
    /// Returns the held entries to apply again when something applied (they
    /// may be ready now), None when there is nothing more to try.
    pub fn applied(
        &mut self,
        batch: Vec<SignedEntry>,
        verdicts: &[Verdict],
    ) -> Result<Option<Vec<SignedEntry>>, SessionError> {
        assert_eq!(batch.len(), verdicts.len(), "one verdict per entry");
        let mut applied = false;
        for (entry, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Applied => applied = true,
                Verdict::NotReady => {
                    if !self.inbox.hold(entry) {
                        return Err(SessionError::InboxFull);
                    }
                }
                Verdict::Duplicate | Verdict::Refused(_) => {}
            }
        }
        assert!(self.inbox.len() <= INBOX_CAPACITY, "the inbox bound holds");
        Ok((applied && !self.inbox.is_empty()).then(|| self.inbox.drain()))
    }

    /// The held entries, to apply again because the log grew another way
    /// (another session applied what they wait for); None when none are
    /// held. The shell calls this whenever its log grows.
    pub fn retry(&mut self) -> Option<Vec<SignedEntry>> {
        (!self.inbox.is_empty()).then(|| self.inbox.drain())
    }

    /// Why the session is over, if it is: the peer has been silent for the
    /// idle time, or entries are in flight and none was acknowledged for the
    /// stall time. A new session starts over from the peer's heads.
    pub fn ended(&self, now: Duration) -> Option<SessionError> {
        if now >= self.heard + self.timing.idle {
            Some(SessionError::Silent)
        } else if self.view.in_flight() > 0 && now >= self.progress + self.timing.stall {
            Some(SessionError::Stalled)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_entry as signed;

    const TIMING: Timing =
        Timing { keepalive: Duration::from_secs(1), idle: Duration::from_secs(5), stall: Duration::from_secs(2) };

    fn hello(version: u16, keeps_data: bool, heads: Heads) -> Message {
        let machines = vec![Machine { certificate: "cert".into(), addresses: vec![] }];
        Message::Hello { version, software: "1".into(), keeps_data, machines, heads, relays: vec![] }
    }

    fn session(heads: Heads) -> Session {
        Session::new(TIMING, &greet(hello(PROTOCOL_VERSION, true, heads), true).unwrap(), 0, Duration::ZERO)
    }

    #[test]
    fn the_hello_must_speak_this_version_and_name_the_peer() {
        assert_eq!(greet(Message::Heads(Heads::new()), true), Err(SessionError::NoHello));
        let old = greet(hello(1, true, Heads::new()), true).unwrap_err();
        assert!(old.is_refusal() && old.to_string().contains("upgrade the older one"));
        let empty = Message::Hello {
            version: PROTOCOL_VERSION,
            software: "1".into(),
            keeps_data: true,
            machines: vec![],
            heads: Heads::new(),
            relays: vec![],
        };
        assert_eq!(greet(empty, true), Err(SessionError::NoCertificate));
        assert!(
            !greet(hello(PROTOCOL_VERSION, false, Heads::new()), true).unwrap().entries,
            "a witness gets no entries"
        );
        assert!(!greet(hello(PROTOCOL_VERSION, true, Heads::new()), false).unwrap().entries);
    }

    #[test]
    fn of_two_sessions_both_sides_keep_the_same_one() {
        // a and b dial each other at once: a's session registered first on
        // one side, b's on the other; both keep the one a dialed.
        assert!(!replaces("a", "b"));
        assert!(replaces("b", "a"));
        assert!(replaces("a", "a"), "a redial replaces the dying session");
    }

    #[test]
    fn sends_only_what_the_peer_lacks_within_the_window() {
        let mut s = session([("a".to_string(), 1)].into());
        assert_eq!(s.pick(vec![], Duration::ZERO), None, "the whole log was offered");
        let batch = (1..=3).map(|seq| (seq as i64, signed("a", seq, "{}"))).collect();
        let sent = s.pick(batch, Duration::ZERO).unwrap();
        assert_eq!(sent.iter().map(|e| e.entry.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s.next_read(), Some(3));
        let full: Vec<_> = (4..4 + WINDOW).map(|seq| (seq as i64, signed("a", seq, "{}"))).collect();
        s.pick(full, Duration::ZERO);
        assert_eq!(s.next_read(), None, "a full window reads nothing more");
        s.receive(Message::Heads([("a".to_string(), WINDOW)].into()), Duration::ZERO).unwrap();
        assert!(s.next_read().is_some(), "an acknowledgement opens the window");
    }

    #[test]
    fn a_batch_stops_at_its_byte_bound_and_resumes_there() {
        let mut s = session(Heads::new());
        let big = "x".repeat(BATCH_BYTES + 1);
        let batch = vec![(1, signed("a", 1, &big)), (2, signed("a", 2, "{}")), (3, signed("a", 3, "{}"))];
        let sent = s.pick(batch, Duration::ZERO).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(s.next_read(), Some(1), "the next read starts with the entry left out");
    }

    #[test]
    fn heads_go_when_they_move_and_at_the_keepalive() {
        let mut s = session(Heads::new());
        let heads: Heads = [("a".to_string(), 1)].into();
        assert!(s.heads_due(&heads, Duration::ZERO));
        assert!(!s.heads_due(&heads, Duration::from_millis(500)));
        assert!(s.heads_due(&[("a".to_string(), 2)].into(), Duration::from_millis(600)));
        assert!(s.heads_due(&[("a".to_string(), 2)].into(), Duration::from_millis(1600)));
    }

    #[test]
    fn held_entries_are_retried_once_something_applies() {
        let mut s = session(Heads::new());
        let (one, two) = (signed("a", 1, "{}"), signed("a", 2, "{}"));
        assert_eq!(s.applied(vec![two.clone()], &[Verdict::NotReady]), Ok(None));
        assert_eq!(s.pending(), 1);
        assert_eq!(s.applied(vec![one], &[Verdict::Applied]), Ok(Some(vec![two.clone()])));
        assert_eq!(s.pending(), 0);
        assert_eq!(s.retry(), None);
        assert_eq!(s.applied(vec![two.clone()], &[Verdict::NotReady]), Ok(None));
        assert_eq!(s.retry(), Some(vec![two]), "held entries are retried when the log grows another way");
    }

    #[test]
    fn a_session_ends_when_the_peer_is_silent_or_stuck() {
        let mut s = session(Heads::new());
        assert_eq!(s.ended(Duration::from_secs(4)), None);
        assert_eq!(s.ended(Duration::from_secs(5)), Some(SessionError::Silent), "silent for the idle time");
        s.receive(Message::Heads(Heads::new()), Duration::from_secs(5)).unwrap();
        s.pick(vec![(1, signed("a", 1, "{}"))], Duration::from_secs(5));
        s.receive(Message::Heads(Heads::new()), Duration::from_secs(6)).unwrap();
        assert_eq!(s.ended(Duration::from_secs(6)), None);
        assert_eq!(
            s.ended(Duration::from_secs(7)),
            Some(SessionError::Stalled),
            "nothing acknowledged for the stall time"
        );
        s.receive(Message::Heads([("a".to_string(), 1)].into()), Duration::from_secs(7)).unwrap();
        assert_eq!(s.ended(Duration::from_secs(8)), None);
    }

    #[test]
    fn a_witness_session_refuses_entries_and_a_second_hello() {
        let greeting = greet(hello(PROTOCOL_VERSION, false, Heads::new()), true).unwrap();
        let mut s = Session::new(TIMING, &greeting, 0, Duration::ZERO);
        assert_eq!(s.next_read(), None);
        assert_eq!(s.receive(Message::Entries(vec![]), Duration::ZERO), Err(SessionError::EntriesToWitness));
        assert_eq!(
            s.receive(hello(PROTOCOL_VERSION, true, Heads::new()), Duration::ZERO),
            Err(SessionError::SecondHello)
        );
    }
}
