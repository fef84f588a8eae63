//! The fenced outbox's rules around [`crate::ledger::plan`]: when a holder
//! may start a round of work, when a committed reply may leave, and until
//! when. The agent's shell in `roost-machine` and the simulator both follow
//! them; time is whatever clock the caller reads (CLOCK_BOOTTIME in the
//! shell), passed in.

use std::collections::BTreeMap;
use std::time::Duration;

/// A log's heads: the last entry held of each origin.
pub type Heads = BTreeMap<String, u64>;

/// What a peer said it holds, and when it said so (on the caller's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub peer: String,
    pub heads: Heads,
    pub at: Duration,
}

/// A send needs at least this much of the lease left when it starts.
pub const SEND_MARGIN: Duration = Duration::from_millis(50);

/// How long a new holder waits for sessions with the voters it has not met
/// before it goes on with those it has: one that is down never comes.
/// Longer than replication's keepalive (3 s), so a live voter reports in
/// time even when nothing moves.
pub const MEET_WAIT: Duration = Duration::from_secs(5);

/// Whether a log at `ours` holds every entry of a log at `theirs`.
pub fn holds(ours: &Heads, theirs: &Heads) -> bool {
    theirs.iter().all(|(origin, seq)| ours.get(origin).copied().unwrap_or(0) >= *seq)
}

/// Whether a majority of `keepers` ([`keepers`]: the voters that keep the
/// log, `me` among them) hold `commit`: the holder's own log up to its
/// reply's commit, as `peers` last said what they hold. Only then may the
/// reply leave. A machine granted the role later was granted it by a
/// majority of the voters, which meets these; its first round takes in what
/// the voters it meets hold ([`Settle`]), so it sees the reply and sends it
/// again as it is, never a second one. The price: with two machines that
/// keep the log (and a witness), replies wait while either is down.
pub fn held(me: &str, commit: &Heads, keepers: &[String], peers: &[Report]) -> bool {
    let others = keepers.iter().filter(|id| *id != me);
    let holding = others.clone().filter(|id| peers.iter().any(|r| r.peer == **id && holds(&r.heads, commit))).count();
    (holding + 1) * 2 > others.count() + 1
}

/// The voters that keep the log (all but those the lease knows are
/// witnesses), and `me`; only `me` when the role is held by this machine's
/// vote alone (`forced`: `wakeup --force`, the person said the others are
/// down).
pub fn keepers(me: &str, voters: &[String], seen: &[Seen], forced: bool) -> Vec<String> {
    let mut keepers: Vec<String> =
        voters.iter().filter(|id| !forced && !seen.iter().any(|p| p.id == **id && p.witness)).cloned().collect();
    if !keepers.iter().any(|id| id == me) {
        keepers.push(me.to_string());
    }
    keepers
}

/// Whether a send may start at `now`, under a lease that ends at `until`
/// (both on the holder's clock): the holder's own end of the lease, with
/// `margin` to spare.
pub fn may_send(now: Duration, until: Duration, margin: Duration) -> bool {
    now + margin < until
}

/// Whom a new holder's first round meets ([`Settle::ready`]).
#[derive(Debug, Clone, Copy)]
pub struct Meet<'a> {
    pub me: &'a str,
    pub keepers: &'a [String],
    pub required: &'a [String],
}

/// A machine as the lease last saw it, for [`voters_to_meet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    /// Heard within a TTL.
    pub live: bool,
    pub witness: bool,
}

/// The other voters a new holder's first round waits to have a session
/// with: every one but the witnesses (they keep no log) and those the lease
/// has heard from and knows are not live; one not heard from since this
/// machine started counts, for [`MEET_WAIT`] at most.
pub fn voters_to_meet(me: &str, voters: &[String], seen: &[Seen]) -> Vec<String> {
    voters
        .iter()
        .filter(|id| *id != me)
        .filter(|id| seen.iter().find(|p| p.id == **id).is_none_or(|p| p.live && !p.witness))
        .cloned()
        .collect()
}

/// Before each round of work, the holder takes in everything the machines
/// it is connected to held when the round began, so that:
///
/// - a new holder sees the last holder's commits (a reply is sent only once
///   a majority of the voters that keep the log hold its commit, [`held`]),
///   and never answers a message whose reply it has not seen;
/// - a message recorded on a standby before one recorded here is answered
///   first, as the topic's order says, once it has had time to arrive.
///
/// A new holder's first round takes in a report made after the epoch began
/// from a majority of the voters that keep the log (itself among them):
/// every reply an earlier holder sent was held by a majority of them first
/// ([`held`]), the two majorities share a machine, and that machine's report
/// holds the reply. Until it has them the holder answers nothing, however
/// long that takes. It also waits up to [`MEET_WAIT`] for the other voters
/// that may be alive, so that what was recorded on them comes in order. A
/// report counts as made after the epoch began when it arrived after the
/// first round began; one older than [`MEET_WAIT`] is from a machine that
/// has gone away, and later rounds do not wait for it.
#[derive(Debug, Default)]
pub struct Settle {
    /// What each connected machine held when this round began.
    target: Option<Vec<Report>>,
    /// The epoch whose first round has been settled.
    started: Option<u64>,
    /// When the first round of an epoch began waiting for the voters.
    meeting: Option<(u64, Duration)>,
}

impl Settle {
    /// A round is waiting for what the peers held to arrive.
    pub fn waiting(&self) -> bool {
        self.target.is_some()
    }

    /// The first round at `epoch` has been settled.
    pub fn started(&self, epoch: Option<u64>) -> bool {
        epoch.is_some() && self.started == epoch
    }

    /// Whether the holder `me` at `epoch`, whose log is at `ours`, may plan
    /// now: `reports` are what the machines it has sessions with last said
    /// they hold, `keepers` the voters that keep the log ([`keepers`]), and
    /// `required` the voters its first round at this epoch waits up to
    /// [`MEET_WAIT`] to meet ([`voters_to_meet`]).
    pub fn ready(&mut self, epoch: u64, ours: &Heads, reports: &[Report], meet: Meet, now: Duration) -> bool {
        let since = match self.meeting {
            Some((e, since)) if e == epoch => since,
            _ => self.meeting.insert((epoch, now)).1,
        };
        let first = !self.started(Some(epoch));
        let fresh = |r: &Report| if first { r.at >= since } else { r.at + MEET_WAIT >= now };
        if first {
            let met = |id: &String| reports.iter().any(|r| r.peer == *id && fresh(r));
            let others = meet.keepers.iter().filter(|id| **id != meet.me);
            let quorum = (others.clone().filter(|id| met(id)).count() + 1) * 2 > others.count() + 1;
            if !quorum || (!meet.required.iter().all(met) && now < since + MEET_WAIT) {
                self.target = None;
                return false;
            }
        }
        let target = self.target.get_or_insert_with(|| reports.iter().filter(|r| fresh(r)).cloned().collect());
        // A machine that went away since the round began: begin it again
        // (for a first round, that asks again for a majority).
        let gone = |t: &Report| !reports.iter().any(|r| r.peer == t.peer && fresh(r));
        if target.iter().any(gone) {
            self.target = None;
            return false;
        }
        let settled = target.iter().all(|r| holds(ours, &r.heads));
        if settled {
            self.target = None;
            self.started = Some(epoch);
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(pairs: &[(&str, u64)]) -> Heads {
        pairs.iter().map(|(o, s)| (o.to_string(), *s)).collect()
    }

    fn report(peer: &str, pairs: &[(&str, u64)], at: u64) -> Report {
        Report { peer: peer.into(), heads: heads(pairs), at: Duration::from_secs(at) }
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn a_round_waits_for_what_the_connected_machines_held_when_it_began() {
        let mut settle = Settle::default();
        let keepers = names(&["a", "b"]);
        let meet = Meet { me: "a", keepers: &keepers, required: &[] };
        let at = Duration::from_secs(1);
        assert!(!settle.ready(1, &heads(&[("b", 4)]), &[report("b", &[("b", 5)], 1)], meet, at));
        // The peer moved on meanwhile: the round waits only for what it held.
        assert!(settle.ready(1, &heads(&[("b", 5)]), &[report("b", &[("b", 9)], 1)], meet, at));
        assert!(settle.started(Some(1)) && !settle.waiting());
        // Later rounds leave a machine that went away out.
        assert!(settle.ready(1, &heads(&[("b", 5)]), &[report("b", &[("b", 9)], 1)], meet, at + MEET_WAIT * 2));
    }

    #[test]
    fn a_new_holder_waits_for_a_majority_of_keepers_reporting_in_its_epoch() {
        let keepers = names(&["a", "b", "c"]);
        let required = names(&["b", "c"]);
        let meet = Meet { me: "a", keepers: &keepers, required: &required };
        let start = Duration::from_secs(10);
        let mut settle = Settle::default();
        let stale = [report("b", &[], 9), report("c", &[], 9)];
        assert!(!settle.ready(2, &Heads::new(), &stale, meet, start));
        assert!(!settle.ready(2, &Heads::new(), &stale, meet, start + MEET_WAIT * 3), "never without a majority");
        // One fresh report makes a majority; it holds more than this
        // machine, which takes that in first. The other voter is waited for
        // up to MEET_WAIT.
        let fresh = [report("b", &[("x", 3)], 11), report("c", &[], 9)];
        let mut waited = Settle::default();
        assert!(!waited.ready(3, &heads(&[("x", 3)]), &fresh, meet, start));
        assert!(!waited.ready(3, &Heads::new(), &fresh, meet, start + MEET_WAIT));
        assert!(waited.ready(3, &heads(&[("x", 3)]), &fresh, meet, start + MEET_WAIT));
        // A machine of the majority that goes away starts the round again.
        let mut left = Settle::default();
        let both = [report("b", &[("x", 3)], 11), report("c", &[("x", 3)], 11)];
        assert!(!left.ready(4, &Heads::new(), &both, meet, Duration::from_secs(10)));
        assert!(!left.ready(4, &heads(&[("x", 3)]), &both[1..], meet, Duration::from_secs(11)));
        assert!(left.ready(4, &heads(&[("x", 3)]), &both[1..], meet, Duration::from_secs(10) + MEET_WAIT));
        // Two keepers and a witness: the other keeper is the majority.
        let two = names(&["a", "b"]);
        let mut pair = Settle::default();
        let meet = Meet { me: "a", keepers: &two, required: &[] };
        assert!(!pair.ready(5, &Heads::new(), &[], meet, start + MEET_WAIT * 3));
        let alone = names(&["a"]);
        let meet = Meet { me: "a", keepers: &alone, required: &[] };
        assert!(pair.ready(6, &Heads::new(), &[], meet, start), "forced: this machine alone");
    }

    #[test]
    fn a_reply_leaves_only_once_a_majority_of_keepers_hold_it_and_while_the_lease_lasts() {
        let commit = heads(&[("a", 7)]);
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!(held("a", &commit, &["a".to_string()], &[]), "a chain of one");
        assert!(!held("a", &commit, &three, &[report("b", &[("a", 6)], 0)]));
        assert!(held("a", &commit, &three, &[report("b", &[("a", 7), ("b", 1)], 0)]));
        let two = vec!["a".to_string(), "b".to_string()];
        assert!(!held("a", &commit, &two, &[]), "two keepers: both");
        let seen =
            [Seen { id: "b".into(), live: false, witness: false }, Seen { id: "w".into(), live: true, witness: true }];
        let voters = ["a", "b", "w"].map(String::from);
        assert_eq!(keepers("a", &voters, &seen, false), two, "not the witness");
        assert_eq!(keepers("a", &voters, &seen, true), ["a".to_string()], "forced: this machine alone");
        let until = Duration::from_secs(3);
        assert!(may_send(Duration::from_secs(2), until, SEND_MARGIN));
        assert!(!may_send(until - SEND_MARGIN, until, SEND_MARGIN));
    }
}
