//! The replication protocol between two instances, without any I/O.
//!
//! A session is one stream each way. Each side first sends [`Message::Hello`]
//! (protocol version, its Roost version, the machines it knows with their
//! certificates and addresses, its per-origin log heads),
//! then [`Message::Entries`] the peer lacks, in its own log order (which is
//! causal: it applied every entry only after what the entry depends on), and
//! [`Message::Heads`] whenever its heads move, which doubles as the
//! acknowledgement that paces the sender. [`PeerView`] is the sender's
//! bookkeeping, [`Inbox`] holds received entries until they are ready.

use std::collections::BTreeMap;

use crate::Entry;
use crate::wire::{Reader, WireError, Writer};

/// Bumped on any incompatible change to these messages or to [`Entry`].
pub const PROTOCOL_VERSION: u16 = 5;

/// Origin instance id → sequence number of the latest entry held.
pub type Heads = BTreeMap<String, u64>;

/// Most entries one [`Message::Entries`] carries.
pub const MAX_BATCH: usize = 1024;
/// Most machines one [`Message::Hello`] or [`Message::Machines`] carries.
const MAX_MACHINES: usize = 1024;
/// Most addresses given for one machine, and the longest.
pub const MAX_ADDRESSES: usize = 8;
const MAX_ADDRESS_LEN: usize = 512;

/// A machine of the chain as one side tells the other: its certificate (text
/// form) and the gateway URLs it can be reached at, freshest first. The
/// addresses are hints: a dial proves the key, whatever address it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub certificate: String,
    pub addresses: Vec<String>,
}

/// An entry and its origin's Ed25519 signature over [`Entry::hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    pub entry: Entry,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello {
        version: u16,
        /// The sender's Roost version, for people to read.
        software: String,
        /// Whether the sender keeps the log: a witness does not, and is sent
        /// no entries.
        keeps_data: bool,
        /// The machines the sender knows; itself first, with the addresses
        /// it can be reached at now.
        machines: Vec<Machine>,
        heads: Heads,
        /// The relays the sender uses (`[sync] relays`, at most
        /// [`MAX_ADDRESSES`]): a machine takes up those it did not know, so a
        /// relay named on one machine reaches them all.
        relays: Vec<String>,
    },
    Entries(Vec<SignedEntry>),
    Heads(Heads),
    /// Machines the hello did not name or whose addresses changed since
    /// (joins spread this way), and origins of entries that follow: the
    /// receiver needs their certificates to verify those entries.
    Machines(Vec<Machine>),
    /// Revocations signed by the identity (text form) the peer has not been
    /// told yet: every machine refuses a revoked one once it hears of it.
    Revocations(Vec<String>),
    /// The rotations the chain's identity went through (text form), oldest
    /// first: a machine behind adopts the new identity if it is kept.
    Rotations(Vec<String>),
}

const HELLO: u8 = 1;
const ENTRIES: u8 = 2;
const HEADS: u8 = 3;
const MACHINES: u8 = 5;
const REVOCATIONS: u8 = 6;
const ROTATIONS: u8 = 7;
/// The most rotations one [`Message::Rotations`] carries, and the longest
/// (a rotation keeps at most 64 machines).
const MAX_ROTATIONS: usize = 256;
const MAX_ROTATION_LEN: usize = 12 * 1024;
/// The longest revocation one [`Message::Revocations`] carries (they are
/// a fixed 248 characters).
const MAX_REVOCATION_LEN: usize = 512;

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::Hello { version, software, keeps_data, machines, heads, relays } => {
                w.u8(HELLO).bytes(&version.to_be_bytes()).str(software).bool(*keeps_data);
                write_machines(&mut w, machines);
                write_heads(&mut w, heads);
                let relays: Vec<String> =
                    relays.iter().filter(|r| r.len() <= MAX_ADDRESS_LEN).take(MAX_ADDRESSES).cloned().collect();
                write_strings(&mut w, &relays);
            }
            Message::Machines(machines) => {
                w.u8(MACHINES);
                write_machines(&mut w, machines);
            }
            Message::Revocations(revocations) => {
                w.u8(REVOCATIONS);
                write_strings(&mut w, revocations);
            }
            Message::Rotations(rotations) => {
                w.u8(ROTATIONS);
                write_strings(&mut w, rotations);
            }
            Message::Entries(entries) => {
                w.u8(ENTRIES).bytes(&(entries.len() as u32).to_be_bytes());
                for e in entries {
                    w.blob(&e.entry.encode()).bytes(&e.signature);
                }
            }
            Message::Heads(heads) => {
                w.u8(HEADS);
                write_heads(&mut w, heads);
            }
        }
        w.0
    }

    /// Decodes one message; anything malformed is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader::new(bytes, "sync message");
        let bad = |why: &str| WireError(format!("sync message: {why}"));
        let message = match r.u8()? {
            HELLO => {
                let version = u16::from_be_bytes(r.array()?);
                let software = r.str()?;
                let keeps_data = r.bool()?;
                let machines = read_machines(&mut r)?;
                let heads = read_heads(&mut r)?;
                let relays = read_strings(&mut r, MAX_ADDRESSES, MAX_ADDRESS_LEN, "relay")?;
                Message::Hello { version, software, keeps_data, machines, heads, relays }
            }
            MACHINES => Message::Machines(read_machines(&mut r)?),
            REVOCATIONS => Message::Revocations(read_strings(&mut r, MAX_MACHINES, MAX_REVOCATION_LEN, "revocation")?),
            ROTATIONS => Message::Rotations(read_strings(&mut r, MAX_ROTATIONS, MAX_ROTATION_LEN, "rotation")?),
            ENTRIES => {
                let count = u32::from_be_bytes(r.array()?) as usize;
                if count > MAX_BATCH {
                    return Err(bad("batch too large"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let entry = Entry::decode(r.blob()?)?;
                    entries.push(SignedEntry { entry, signature: r.array()? });
                }
                Message::Entries(entries)
            }
            HEADS => Message::Heads(read_heads(&mut r)?),
            _ => return Err(bad("unknown message type")),
        };
        r.finish()?;
        Ok(message)
    }
}

fn write_strings(w: &mut Writer, strings: &[String]) {
    w.bytes(&(strings.len() as u32).to_be_bytes());
    for s in strings {
        w.str(s);
    }
}

/// Reads at most `most` strings of at most `longest` bytes each.
fn read_strings(r: &mut Reader, most: usize, longest: usize, what: &str) -> Result<Vec<String>, WireError> {
    let count = u32::from_be_bytes(r.array()?) as usize;
    if count > most {
        return Err(WireError(format!("sync message: too many {what}s")));
    }
    (0..count)
        .map(|_| {
            let s = r.str()?;
            if s.len() > longest {
                return Err(WireError(format!("sync message: {what} too long")));
            }
            Ok(s)
        })
        .collect()
}

/// Writes machines, keeping at most [`MAX_ADDRESSES`] addresses of at most
/// 512 bytes each, so what is written always decodes.
fn write_machines(w: &mut Writer, machines: &[Machine]) {
    w.bytes(&(machines.len() as u32).to_be_bytes());
    for m in machines {
        w.blob(m.certificate.as_bytes());
        let addresses: Vec<&String> =
            m.addresses.iter().filter(|a| a.len() <= MAX_ADDRESS_LEN).take(MAX_ADDRESSES).collect();
        w.u8(addresses.len() as u8);
        for a in addresses {
            w.str(a);
        }
    }
}

fn read_machines(r: &mut Reader) -> Result<Vec<Machine>, WireError> {
    let count = u32::from_be_bytes(r.array()?) as usize;
    if count > MAX_MACHINES {
        return Err(WireError("sync message: too many machines".into()));
    }
    (0..count)
        .map(|_| {
            let certificate = r.long_str()?;
            let n = r.u8()? as usize;
            if n > MAX_ADDRESSES {
                return Err(WireError("sync message: too many addresses".into()));
            }
            let addresses = (0..n)
                .map(|_| {
                    let a = r.str()?;
                    if a.len() > MAX_ADDRESS_LEN {
                        return Err(WireError("sync message: address too long".into()));
                    }
                    Ok(a)
                })
                .collect::<Result<_, _>>()?;
            Ok(Machine { certificate, addresses })
        })
        .collect()
}

fn write_heads(w: &mut Writer, heads: &Heads) {
    w.bytes(&(heads.len() as u32).to_be_bytes());
    for (origin, seq) in heads {
        w.str(origin).i64(*seq as i64);
    }
}

fn read_heads(r: &mut Reader) -> Result<Heads, WireError> {
    let count = u32::from_be_bytes(r.array()?) as usize;
    if count > MAX_MACHINES {
        return Err(WireError("sync message: too many heads".into()));
    }
    let mut heads = Heads::new();
    for _ in 0..count {
        let origin = r.str()?;
        let seq = u64::try_from(r.i64()?).map_err(|_| WireError("sync message: negative head".into()))?;
        if heads.last_key_value().is_some_and(|(last, _)| *last >= origin) {
            return Err(WireError("sync message: heads are not in canonical order".into()));
        }
        heads.insert(origin, seq);
    }
    Ok(heads)
}

/// Entries `theirs` holds that `ours` lacks.
pub fn behind(ours: &Heads, theirs: &Heads) -> u64 {
    theirs.iter().map(|(origin, seq)| seq.saturating_sub(ours.get(origin).copied().unwrap_or(0))).sum()
}

/// What a sender knows of its peer: the heads the peer reported and the
/// highest entry of each origin already sent in this session.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    reported: Heads,
    sent: Heads,
}

impl PeerView {
    pub fn new(reported: Heads) -> PeerView {
        PeerView { reported, sent: Heads::new() }
    }

    /// Whether the peer still needs entry `seq` of `origin` from us.
    pub fn lacks(&self, origin: &str, seq: u64) -> bool {
        let get = |h: &Heads| h.get(origin).copied().unwrap_or(0);
        seq > get(&self.reported).max(get(&self.sent))
    }

    pub fn sent(&mut self, origin: &str, seq: u64) {
        let slot = self.sent.entry(origin.to_string()).or_insert(0);
        *slot = (*slot).max(seq);
    }

    /// Takes in the peer's heads; they only ever grow.
    pub fn reported(&mut self, heads: &Heads) {
        for (origin, seq) in heads {
            let slot = self.reported.entry(origin.clone()).or_insert(0);
            *slot = (*slot).max(*seq);
        }
    }

    pub fn heads(&self) -> &Heads {
        &self.reported
    }

    /// Entries sent but not yet acknowledged: what the window limits.
    pub fn in_flight(&self) -> u64 {
        behind(&self.reported, &self.sent)
    }
}

/// Received entries that are not ready yet (an entry they depend on has not
/// arrived), keyed by origin and sequence so duplicates collapse. Bounded: a
/// full inbox tells the caller to drop the session and start over from heads.
#[derive(Debug, Default)]
pub struct Inbox {
    pending: BTreeMap<(String, u64), SignedEntry>,
}

/// Most entries an [`Inbox`] holds.
pub const INBOX_CAPACITY: usize = 65_536;

impl Inbox {
    /// Holds `entry`; false when the inbox is full.
    pub fn hold(&mut self, entry: SignedEntry) -> bool {
        if self.pending.len() >= INBOX_CAPACITY {
            return false;
        }
        self.pending.insert((entry.entry.origin.clone(), entry.entry.seq), entry);
        assert!(self.pending.len() <= INBOX_CAPACITY, "the inbox never holds more than its capacity");
        true
    }

    /// Takes every held entry, in origin and sequence order, to try again.
    pub fn drain(&mut self) -> Vec<SignedEntry> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// An entry of `origin` with a dummy signature, for tests of what carries
/// entries.
#[cfg(test)]
pub(crate) fn test_entry(origin: &str, seq: u64, row: &str) -> SignedEntry {
    use crate::{GENESIS, Lamport, Op, RowId, Table};
    SignedEntry {
        entry: Entry {
            origin: origin.into(),
            seq,
            lamport: Lamport(seq),
            prev_hash: GENESIS,
            table: Table::Memories,
            op: Op::Insert,
            row_id: RowId::v7(seq, [1; 10]),
            vector: [(origin.to_string(), seq)].into(),
            row: row.into(),
        },
        signature: [7; 64],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_trailing_bytes() {
        let heads: Heads = [("a".to_string(), 3), ("b".to_string(), 9)].into();
        let messages = [
            Message::Hello {
                version: PROTOCOL_VERSION,
                software: "0.1.0".into(),
                keeps_data: true,
                machines: vec![Machine { certificate: "cert".into(), addresses: vec!["http://home.lan:7151".into()] }],
                heads: heads.clone(),
                relays: vec!["http://vps.example:3340/".into()],
            },
            Message::Entries(vec![test_entry("a", 1, "{}"), test_entry("a", 2, "{}")]),
            Message::Heads(heads),
            Message::Machines(vec![
                Machine { certificate: "a".into(), addresses: vec![] },
                Machine { certificate: "b".into(), addresses: vec!["x".into(), "y".into()] },
            ]),
            Message::Revocations(vec!["r1".into(), "r2".into()]),
            Message::Revocations(vec![]),
            Message::Rotations(vec!["r1".into(), "r".repeat(9000)]),
        ];
        for m in messages {
            let mut bytes = m.encode();
            assert_eq!(Message::decode(&bytes).unwrap(), m);
            bytes.push(0);
            assert!(Message::decode(&bytes).is_err());
        }
    }

    #[test]
    fn peer_view_sends_each_entry_once_and_counts_what_is_unacknowledged() {
        let mut view = PeerView::new([("a".to_string(), 2)].into());
        assert!(!view.lacks("a", 2));
        assert!(view.lacks("a", 3));
        view.sent("a", 5);
        assert!(!view.lacks("a", 4));
        assert_eq!(view.in_flight(), 3);
        view.reported(&[("a".to_string(), 5)].into());
        assert_eq!(view.in_flight(), 0);
        view.reported(&[("a".to_string(), 1)].into());
        assert_eq!(view.heads()["a"], 5, "heads never go back");
        assert_eq!(behind(&[("a".to_string(), 1)].into(), &[("a".to_string(), 4), ("b".to_string(), 2)].into()), 5);
    }
}
