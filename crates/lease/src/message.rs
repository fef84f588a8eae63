//! What lease nodes say to each other, and its binary encoding.
//!
//! Every message travels in an [`Envelope`] naming the sender's protocol
//! version and the view of voters it holds: a voter grants nothing to a
//! proposer holding another view, and whichever of the two is behind is sent
//! the newer one ([`Message::View`]).

use std::time::Duration;

use roost_core::protocol::Heads;
use roost_core::wire::{Reader, WireError, Writer};

use crate::ballot::{Ballot, NodeId};
use crate::view::{View, ViewId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Phase 1: promise to accept nothing below `ballot`. `force` asks a voter
    /// to promise even over an open lease (`roost wakeup --force`).
    Prepare {
        req: u64,
        ballot: Ballot,
        force: bool,
    },
    Promise {
        req: u64,
        ballot: Ballot,
    },
    /// Phase 2, and every renewal: hold `ballot`'s lease for `ttl`.
    Propose {
        req: u64,
        ballot: Ballot,
        ttl: Duration,
    },
    Accepted {
        req: u64,
        ballot: Ballot,
    },
    Reject {
        req: u64,
        why: Refusal,
    },
    /// The holder lets go; `successor` (a handoff's target) alone may prepare
    /// for one TTL.
    Release {
        req: u64,
        ballot: Ballot,
        successor: Option<NodeId>,
    },
    Released {
        req: u64,
        ballot: Ballot,
    },
    /// Sent to every peer each renewal period: the round this node claims to
    /// hold (if awake), whether it could take the role, whether it is a
    /// witness, whether it is leaving the chain (the holder then removes it
    /// from the voters), and whether it could do the role's work now (reach
    /// the agent's channels): a holder that cannot hands the role to one that
    /// can.
    Heartbeat {
        claim: Option<u64>,
        eligible: bool,
        witness: bool,
        leaving: bool,
        able: bool,
    },
    /// The receiver speaks another protocol version.
    Incompatible {
        version: u16,
    },
    /// A standby asks the holder of `epoch` to hand the role over.
    HandoffAsk {
        epoch: u64,
    },
    /// The holder has stopped taking new work; its log head is `head`.
    HandoffBegin {
        epoch: u64,
        head: Heads,
    },
    /// The target holds `head`, checked against its own log.
    HandoffAck {
        epoch: u64,
        head: Heads,
    },
    /// The holder has released `epoch`: the target may take the next.
    HandoffYield {
        epoch: u64,
    },
    HandoffAbort {
        epoch: u64,
        reason: String,
    },
    /// The sender's view of the voters, sent to a machine holding an older one.
    View(View),
}

impl Message {
    /// Whether this is part of granting, renewing or releasing a lease: such
    /// messages count only between machines holding the same view.
    pub fn is_vote(&self) -> bool {
        matches!(
            self,
            Message::Prepare { .. }
                | Message::Promise { .. }
                | Message::Propose { .. }
                | Message::Accepted { .. }
                | Message::Reject { .. }
                | Message::Release { .. }
                | Message::Released { .. }
        )
    }
}

/// Why a voter said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It has promised this ballot, whose round is at least the one asked for.
    Promised(Ballot),
    /// Someone else holds an open lease there for `remaining`.
    Open { holder: Ballot, remaining: Duration },
    /// The lease was handed to `successor`, who alone may take it for now.
    Reserved { successor: NodeId },
}

/// A message with the sender's protocol version and view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: u16,
    /// The view the sender holds; `None` before it was admitted as a voter.
    pub view: Option<ViewId>,
    /// `None` when the version is not this one: the rest is not understood.
    pub message: Option<Message>,
}

const MAGIC: &[u8] = b"RLS";
/// The longest reason a handoff refusal carries, in characters.
const MAX_REASON: usize = 200;
/// The most voters a view may name (a datagram must hold it).
pub const MAX_VOTERS: usize = 16;

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(MAGIC).bytes(&self.version.to_be_bytes());
        if let Some(message) = &self.message {
            w.bool(self.view.is_some());
            if let Some(view) = &self.view {
                write_view_id(&mut w, view);
            }
            message.write(&mut w);
        }
        w.0
    }

    /// Strict: one encoding per envelope, no trailing bytes. An envelope of
    /// another protocol version decodes to its version alone.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        let mut r = Reader::new(bytes, "lease message");
        if r.take(MAGIC.len())? != MAGIC {
            return Err(WireError("lease message: unknown format".into()));
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != crate::PROTOCOL_VERSION {
            return Ok(Envelope { version, view: None, message: None });
        }
        let view = if r.bool()? { Some(read_view_id(&mut r)?) } else { None };
        let message = Message::read(&mut r)?;
        r.finish()?;
        Ok(Envelope { version, view, message: Some(message) })
    }
}

fn write_view_id(w: &mut Writer, id: &ViewId) {
    w.i64(id.epoch as i64).i64(id.seq as i64).i64(id.digest as i64);
}

fn read_view_id(r: &mut Reader) -> Result<ViewId, WireError> {
    Ok(ViewId { epoch: r.i64()? as u64, seq: r.i64()? as u64, digest: r.i64()? as u64 })
}

fn read_view(r: &mut Reader) -> Result<View, WireError> {
    let id = read_view_id(r)?;
    let count = r.u8()? as usize;
    if count == 0 || count > MAX_VOTERS {
        return Err(WireError(format!("lease message: a view names 1 to {MAX_VOTERS} voters")));
    }
    let voters: Vec<NodeId> = (0..count).map(|_| r.str()).collect::<Result<_, _>>()?;
    let view = View::new(id.epoch, id.seq, voters.clone());
    if view.voters != voters || view.id != id {
        return Err(WireError("lease message: a view's voters are not sorted, unique and its own".into()));
    }
    Ok(view)
}

fn write_ballot(w: &mut Writer, b: &Ballot) {
    w.i64(b.round as i64).str(&b.node);
}

fn read_ballot(r: &mut Reader) -> Result<Ballot, WireError> {
    Ok(Ballot { round: r.i64()? as u64, node: r.str()? })
}

fn write_heads(w: &mut Writer, heads: &Heads) {
    w.i64(heads.len() as i64);
    for (origin, seq) in heads {
        w.str(origin).i64(*seq as i64);
    }
}

fn read_heads(r: &mut Reader) -> Result<Heads, WireError> {
    let count = r.i64()?;
    if !(0..=1024).contains(&count) {
        return Err(WireError("lease message: too many heads".into()));
    }
    let mut heads = Heads::new();
    for _ in 0..count {
        let (origin, seq) = (r.str()?, r.i64()? as u64);
        if heads.last_key_value().is_some_and(|(last, _)| *last >= origin) {
            return Err(WireError("lease message: heads out of order".into()));
        }
        heads.insert(origin, seq);
    }
    Ok(heads)
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn from_millis(n: i64) -> Result<Duration, WireError> {
    u64::try_from(n).map(Duration::from_millis).map_err(|_| WireError("lease message: a negative duration".into()))
}

impl Message {
    fn write(&self, w: &mut Writer) {
        match self {
            Message::Prepare { req, ballot, force } => {
                w.u8(1).i64(*req as i64);
                write_ballot(w, ballot);
                w.bool(*force);
            }
            Message::Promise { req, ballot } => {
                w.u8(2).i64(*req as i64);
                write_ballot(w, ballot);
            }
            Message::Propose { req, ballot, ttl } => {
                w.u8(3).i64(*req as i64);
                write_ballot(w, ballot);
                w.i64(millis(*ttl));
            }
            Message::Accepted { req, ballot } => {
                w.u8(4).i64(*req as i64);
                write_ballot(w, ballot);
            }
            Message::Reject { req, why } => {
                w.u8(5).i64(*req as i64);
                match why {
                    Refusal::Promised(b) => {
                        w.u8(1);
                        write_ballot(w, b);
                    }
                    Refusal::Open { holder, remaining } => {
                        w.u8(2);
                        write_ballot(w, holder);
                        w.i64(millis(*remaining));
                    }
                    Refusal::Reserved { successor } => {
                        w.u8(3).str(successor);
                    }
                }
            }
            Message::Release { req, ballot, successor } => {
                w.u8(6).i64(*req as i64);
                write_ballot(w, ballot);
                w.str(successor.as_deref().unwrap_or(""));
            }
            Message::Released { req, ballot } => {
                w.u8(7).i64(*req as i64);
                write_ballot(w, ballot);
            }
            Message::Heartbeat { claim, eligible, witness, leaving, able } => {
                w.u8(8).i64(claim.map_or(-1, |c| c as i64)).bool(*eligible).bool(*witness).bool(*leaving).bool(*able);
            }
            Message::Incompatible { version } => {
                w.u8(9).i64(i64::from(*version));
            }
            Message::HandoffAsk { epoch } => {
                w.u8(10).i64(*epoch as i64);
            }
            Message::HandoffBegin { epoch, head } => {
                w.u8(11).i64(*epoch as i64);
                write_heads(w, head);
            }
            Message::HandoffAck { epoch, head } => {
                w.u8(12).i64(*epoch as i64);
                write_heads(w, head);
            }
            Message::HandoffYield { epoch } => {
                w.u8(13).i64(*epoch as i64);
            }
            Message::HandoffAbort { epoch, reason } => {
                w.u8(14).i64(*epoch as i64).str(&reason.chars().take(MAX_REASON).collect::<String>());
            }
            Message::View(view) => {
                w.u8(15).i64(0);
                write_view_id(w, &view.id);
                w.u8(view.voters.len() as u8);
                for voter in &view.voters {
                    w.str(voter);
                }
            }
        }
    }

    fn read(r: &mut Reader) -> Result<Message, WireError> {
        let tag = r.u8()?;
        let req_or_epoch = r.i64()?;
        let n = req_or_epoch as u64;
        Ok(match tag {
            1 => Message::Prepare { req: n, ballot: read_ballot(r)?, force: r.bool()? },
            2 => Message::Promise { req: n, ballot: read_ballot(r)? },
            3 => Message::Propose { req: n, ballot: read_ballot(r)?, ttl: from_millis(r.i64()?)? },
            4 => Message::Accepted { req: n, ballot: read_ballot(r)? },
            5 => {
                let why = match r.u8()? {
                    1 => Refusal::Promised(read_ballot(r)?),
                    2 => Refusal::Open { holder: read_ballot(r)?, remaining: from_millis(r.i64()?)? },
                    3 => Refusal::Reserved { successor: r.str()? },
                    _ => return Err(WireError("lease message: unknown refusal".into())),
                };
                Message::Reject { req: n, why }
            }
            6 => {
                let ballot = read_ballot(r)?;
                let successor = Some(r.str()?).filter(|s| !s.is_empty());
                Message::Release { req: n, ballot, successor }
            }
            7 => Message::Released { req: n, ballot: read_ballot(r)? },
            8 if req_or_epoch >= -1 => Message::Heartbeat {
                claim: u64::try_from(req_or_epoch).ok(),
                eligible: r.bool()?,
                witness: r.bool()?,
                leaving: r.bool()?,
                able: r.bool()?,
            },
            9 => Message::Incompatible {
                version: u16::try_from(n).map_err(|_| WireError("lease message: bad version".into()))?,
            },
            10 => Message::HandoffAsk { epoch: n },
            11 => Message::HandoffBegin { epoch: n, head: read_heads(r)? },
            12 => Message::HandoffAck { epoch: n, head: read_heads(r)? },
            13 => Message::HandoffYield { epoch: n },
            14 => {
                let reason = r.str()?;
                if reason.chars().count() > MAX_REASON {
                    return Err(WireError("lease message: reason too long".into()));
                }
                Message::HandoffAbort { epoch: n, reason }
            }
            15 if n == 0 => Message::View(read_view(r)?),
            _ => return Err(WireError("lease message: unknown kind".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(message: Message) -> Envelope {
        let view = Some(View::new(3, 2, vec!["a".into(), "b".into()]).id);
        Envelope { version: crate::PROTOCOL_VERSION, view, message: Some(message) }
    }

    #[test]
    fn every_message_round_trips() {
        let ballot = Ballot::new(7, "a");
        let heads: Heads = [("a".to_string(), 4), ("b".to_string(), 9)].into();
        let messages = [
            Message::Prepare { req: 1, ballot: ballot.clone(), force: true },
            Message::Promise { req: 1, ballot: ballot.clone() },
            Message::Propose { req: 2, ballot: ballot.clone(), ttl: Duration::from_secs(3) },
            Message::Accepted { req: 2, ballot: ballot.clone() },
            Message::Reject {
                req: 3,
                why: Refusal::Open { holder: ballot.clone(), remaining: Duration::from_millis(9) },
            },
            Message::Reject { req: 3, why: Refusal::Reserved { successor: "c".into() } },
            Message::Release { req: 4, ballot: ballot.clone(), successor: None },
            Message::Released { req: 4, ballot },
            Message::Heartbeat { claim: Some(7), eligible: true, witness: false, leaving: true, able: false },
            Message::Heartbeat { claim: None, eligible: false, witness: true, leaving: false, able: true },
            Message::Incompatible { version: 9 },
            Message::HandoffBegin { epoch: 7, head: heads.clone() },
            Message::HandoffAck { epoch: 7, head: heads },
            Message::HandoffAbort { epoch: 7, reason: "no".into() },
            Message::View(View::new(3, 2, vec!["b".into(), "a".into()])),
        ];
        for message in messages {
            let sent = envelope(message);
            let bytes = sent.encode();
            assert_eq!(Envelope::decode(&bytes).unwrap(), sent);
        }
        let learner = Envelope { view: None, ..envelope(Message::HandoffYield { epoch: 1 }) };
        assert_eq!(Envelope::decode(&learner.encode()).unwrap(), learner);
    }

    #[test]
    fn flags_and_views_have_one_encoding_only() {
        let prepare = envelope(Message::Prepare { req: 1, ballot: Ballot::new(1, "a"), force: true });
        let mut bytes = prepare.encode();
        *bytes.last_mut().unwrap() = 2;
        assert!(Envelope::decode(&bytes).is_err(), "a flag of 2 is refused, not read as true");
        let view = envelope(Message::View(View::new(1, 1, vec!["a".into(), "b".into()])));
        let bytes = view.encode();
        let swapped = [&bytes[..bytes.len() - 6], b"\0\x01b\0\x01a"].concat();
        assert!(Envelope::decode(&swapped).is_err(), "voters out of order are refused");
        assert!(Envelope::decode(&[bytes.as_slice(), &[0]].concat()).is_err(), "trailing bytes are refused");
    }
}
