//! The voter: promises ballots and times the leases it accepts.
//!
//! A voter answers each request on its own; what it must remember across a
//! restart is [`Durable`] (the shell writes it before sending the answer).
//! After a restart it treats the lease it last accepted as open for a whole
//! TTL from the restart, since it cannot know how much of it was left.

use std::time::Duration;

use crate::ballot::{Ballot, NodeId};
use crate::message::{Message, Refusal};
use crate::view::View;

/// What a voter keeps on disk: the highest ballot it promised, the lease it
/// last accepted with its TTL, and the view of voters it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    pub promised: Option<Ballot>,
    pub accepted: Option<(Ballot, Duration)>,
    pub view: Option<View>,
}

#[derive(Debug, Clone)]
pub struct Acceptor {
    durable: Durable,
    /// When the accepted lease ends on this machine's clock.
    open_until: Option<Duration>,
    /// After a handoff, only this node may prepare until the time given.
    reserved: Option<(NodeId, Duration)>,
    /// The TTL of the last lease accepted here.
    last_ttl: Duration,
}

impl Acceptor {
    /// A voter resuming from `durable` at `now`.
    pub fn restore(durable: Durable, now: Duration) -> Acceptor {
        let open_until = durable.accepted.as_ref().map(|(_, ttl)| now + *ttl);
        let last_ttl = durable.accepted.as_ref().map_or(crate::Tenure::DEFAULT_TTL, |(_, ttl)| *ttl);
        Acceptor { durable, open_until, reserved: None, last_ttl }
    }

    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// The lease open here now, and how long it has left.
    pub fn open(&self, now: Duration) -> Option<(&Ballot, Duration)> {
        let until = self.open_until?;
        let (ballot, _) = self.durable.accepted.as_ref()?;
        (now < until).then(|| (ballot, until - now))
    }

    /// Takes `view` if it is newer than the one held; true if it was taken
    /// (and must be stored before anything else is sent).
    pub fn adopt(&mut self, view: View) -> bool {
        if self.durable.view.as_ref().is_some_and(|held| held.id >= view.id) {
            return false;
        }
        assert!(!view.voters.is_empty(), "a view has voters");
        self.durable.view = Some(view);
        true
    }

    fn promised_round(&self) -> Option<u64> {
        self.durable.promised.as_ref().map(|b| b.round)
    }

    /// Answers a request from `from`; the flag says the durable state changed
    /// and must be stored before the answer is sent. Messages that are not
    /// requests to a voter, or that carry someone else's ballot, get nothing.
    pub fn handle(&mut self, from: &str, message: &Message, now: Duration) -> Option<(Message, bool)> {
        let promised = self.promised_round();
        let answer = self.answer(from, message, now);
        assert!(self.promised_round() >= promised, "a voter's promise never goes back");
        if let (Some(promised), Some((accepted, _))) = (&self.durable.promised, &self.durable.accepted) {
            assert!(accepted <= promised, "a voter accepts no ballot above the one it promised");
        }
        answer
    }

    fn answer(&mut self, from: &str, message: &Message, now: Duration) -> Option<(Message, bool)> {
        match message {
            Message::Prepare { req, ballot, force } if ballot.node == from => {
                let req = *req;
                if !force {
                    if let Some((holder, remaining)) = self.open(now).filter(|(h, _)| h.node != from) {
                        return Some((
                            Message::Reject { req, why: Refusal::Open { holder: holder.clone(), remaining } },
                            false,
                        ));
                    }
                    if let Some((successor, _)) = self.reserved.as_ref().filter(|(s, until)| now < *until && s != from)
                    {
                        let why = Refusal::Reserved { successor: successor.clone() };
                        return Some((Message::Reject { req, why }, false));
                    }
                }
                let fresh = self.promised_round().is_none_or(|round| ballot.round > round);
                if !fresh && self.durable.promised.as_ref() != Some(ballot) {
                    let why = Refusal::Promised(self.durable.promised.clone().expect("a refused round was promised"));
                    return Some((Message::Reject { req, why }, false));
                }
                self.reserved = None;
                self.durable.promised = Some(ballot.clone());
                Some((Message::Promise { req, ballot: ballot.clone() }, fresh))
            }
            Message::Propose { req, ballot, ttl } if ballot.node == from => {
                let req = *req;
                let same = self.durable.promised.as_ref() == Some(ballot);
                let higher = self.promised_round().is_none_or(|round| ballot.round > round)
                    && self.open(now).is_none_or(|(holder, _)| holder.node == from);
                if !same && !higher {
                    let why = match self.open(now).filter(|(h, _)| h.node != from) {
                        Some((holder, remaining)) => Refusal::Open { holder: holder.clone(), remaining },
                        None => Refusal::Promised(self.durable.promised.clone().expect("a refused round was promised")),
                    };
                    return Some((Message::Reject { req, why }, false));
                }
                let accepted = Some((ballot.clone(), *ttl));
                let changed = !same || self.durable.accepted != accepted;
                self.durable.promised = Some(ballot.clone());
                self.durable.accepted = accepted;
                self.open_until = Some(now + *ttl);
                self.last_ttl = *ttl;
                Some((Message::Accepted { req, ballot: ballot.clone() }, changed))
            }
            Message::Release { req, ballot, successor } if ballot.node == from => {
                let mut changed = false;
                // The successor alone may prepare for one TTL of the lease.
                let reservation = self.durable.accepted.as_ref().map_or(self.last_ttl, |(_, ttl)| *ttl);
                if self.durable.accepted.as_ref().is_some_and(|(held, _)| held == ballot) {
                    self.durable.accepted = None;
                    self.open_until = None;
                    changed = true;
                }
                // Holding the lease for the successor only refuses others,
                // which is always safe; it is honoured from the latest
                // proposer this voter knows even where its lease never
                // arrived, so no third machine slips in during a handoff.
                if self.promised_round().is_none_or(|round| round <= ballot.round) {
                    self.reserved = successor.clone().map(|s| (s, now + reservation));
                }
                Some((Message::Released { req: *req, ballot: ballot.clone() }, changed))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn prepare(a: &mut Acceptor, node: &str, round: u64, now: Duration) -> Message {
        a.handle(node, &Message::Prepare { req: 1, ballot: Ballot::new(round, node), force: false }, now).unwrap().0
    }

    fn propose(a: &mut Acceptor, node: &str, round: u64, now: Duration) -> Message {
        a.handle(node, &Message::Propose { req: 2, ballot: Ballot::new(round, node), ttl: TTL }, now).unwrap().0
    }

    #[test]
    fn a_round_is_promised_to_one_proposer_only() {
        let mut a = Acceptor::restore(Durable::default(), at(0));
        assert!(matches!(prepare(&mut a, "x", 5, at(0)), Message::Promise { .. }));
        assert!(matches!(prepare(&mut a, "y", 5, at(1)), Message::Reject { why: Refusal::Promised(_), .. }));
        assert!(matches!(prepare(&mut a, "y", 4, at(1)), Message::Reject { .. }));
        assert!(matches!(prepare(&mut a, "y", 6, at(2)), Message::Promise { .. }));
        assert!(matches!(propose(&mut a, "x", 5, at(3)), Message::Reject { .. }), "x's round was overtaken");
    }

    #[test]
    fn an_open_lease_refuses_others_until_it_ends_even_across_a_restart() {
        let mut a = Acceptor::restore(Durable::default(), at(0));
        prepare(&mut a, "x", 1, at(0));
        assert!(matches!(propose(&mut a, "x", 1, at(0)), Message::Accepted { .. }));
        assert!(matches!(prepare(&mut a, "y", 9, at(2_999)), Message::Reject { why: Refusal::Open { .. }, .. }));
        // A restart at 2 s reopens the lease for a full TTL from then.
        let mut a = Acceptor::restore(a.durable().clone(), at(2_000));
        assert!(matches!(prepare(&mut a, "y", 9, at(4_999)), Message::Reject { .. }));
        assert!(matches!(prepare(&mut a, "y", 9, at(5_000)), Message::Promise { .. }));
        assert!(matches!(prepare(&mut a, "x", 2, at(5_000)), Message::Reject { .. }), "durable promise survived");
    }

    #[test]
    fn a_release_reserves_the_lease_for_the_successor() {
        let mut a = Acceptor::restore(Durable::default(), at(0));
        prepare(&mut a, "x", 1, at(0));
        propose(&mut a, "x", 1, at(0));
        let release = Message::Release { req: 3, ballot: Ballot::new(1, "x"), successor: Some("t".into()) };
        assert!(matches!(a.handle("x", &release, at(10)), Some((Message::Released { .. }, true))));
        assert!(matches!(prepare(&mut a, "y", 2, at(20)), Message::Reject { why: Refusal::Reserved { .. }, .. }));
        assert!(matches!(prepare(&mut a, "t", 2, at(20)), Message::Promise { .. }));
    }

    #[test]
    fn ballots_are_only_taken_from_their_own_proposer() {
        let mut a = Acceptor::restore(Durable::default(), at(0));
        let forged = Message::Prepare { req: 1, ballot: Ballot::new(1, "x"), force: false };
        assert!(a.handle("y", &forged, at(0)).is_none());
    }
}
