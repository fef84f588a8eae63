//! Who runs a topic: exactly one machine at a time, its owner, under a
//! per-topic epoch that the outbox and the ledger fence replies with.
//!
//! The coordinator (the awake machine) grants ownership for `lease_ms` of
//! its clock, renews it on request, and takes it back only once the grant
//! has lapsed there by a further `margin_ms`. The owner counts its tenure
//! from the moment it *asked*, on its own clock, and stops acting after a
//! budget shrunk by the clocks' worst drift: so whatever the messages'
//! delays and however the two clocks drift within the bound, the owner has
//! stopped before the coordinator can hand the topic to another machine.
//!
//! A topic's epochs are *topic stamps* (`crate::stamp`): the coordinator's
//! own lease epoch, then a sequence. A coordinator that takes the role
//! after another grants nothing new until every grant the one before could
//! have made has lapsed, and its stamps outrank all of that one's, so a
//! grant it never heard of can neither overlap nor outrank its own.
//!
//! An owner told to drop a topic (it was moved) starts no new work on it,
//! lets the work in flight finish under its epoch while the grant lasts,
//! and releases it once nothing of it is in flight: the coordinator may
//! then grant it at once, without waiting for the grant to lapse. Starting
//! work and releasing go through the same `Member`, so no work can start
//! after the release was decided.
//!
//! Times are milliseconds of each side's own monotonic clock; nothing here
//! reads a clock.

use std::collections::BTreeMap;

use crate::stamp::topic_stamp;

/// How a grant is timed, the same on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a grant lasts on the coordinator's clock.
    pub lease_ms: u64,
    /// How much longer the coordinator waits before re-placing.
    pub margin_ms: u64,
    /// The most two clocks' rates may differ from real time, in parts per
    /// million.
    pub drift_ppm: u64,
}

impl Timing {
    /// How long an owner may act after asking, on its own clock: the lease
    /// shrunk by the worst drift of both clocks, so it ends before the
    /// coordinator's lease plus margin does in real time.
    pub fn owner_budget_ms(&self) -> u64 {
        let (slow, fast) = (1_000_000 - self.drift_ppm, 1_000_000 + self.drift_ppm);
        self.lease_ms * slow / fast
    }

    /// How long, on a new coordinator's clock, a grant the coordinator
    /// before it made may still run: the lease stretched by the worst drift,
    /// and the margin.
    pub fn inherited_ms(&self) -> u64 {
        let (slow, fast) = (1_000_000 - self.drift_ppm, 1_000_000 + self.drift_ppm);
        (self.lease_ms * fast).div_ceil(slow) + self.margin_ms
    }
}

/// A grant of one topic to one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub topic: String,
    pub owner: String,
    pub epoch: u64,
    /// When the owner asked, on its own clock, as its request said: the
    /// tenure runs from there.
    pub asked_at_ms: u64,
}

/// Why the coordinator did not grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Another machine's grant has not lapsed yet.
    Held { by: String },
    /// This coordinator took the role too recently: a grant the one before
    /// made may still run until `until_ms`.
    Settling { until_ms: u64 },
}

#[derive(Debug, Clone)]
struct Placement {
    owner: String,
    epoch: u64,
    /// The coordinator's time the grant lapses at.
    until_ms: u64,
    /// The owner said it stopped acting under this epoch.
    released: bool,
}

impl Placement {
    /// Whether its owner may still act at `now_ms` (give or take the margin).
    fn running(&self, now_ms: u64, margin_ms: u64) -> bool {
        !self.released && now_ms < self.until_ms + margin_ms
    }
}

/// The coordinator's side: every topic's owner, epoch and grant.
#[derive(Debug, Clone)]
pub struct Coordinator {
    timing: Timing,
    /// The lease epoch this coordinator holds the role under.
    lease_epoch: u64,
    /// The sequence of the last topic stamp granted.
    seq: u64,
    /// Until when it grants no new epoch ([`Refused::Settling`]).
    settling_until_ms: u64,
    topics: BTreeMap<String, Placement>,
}

impl Coordinator {
    /// The coordinator of the machine that took the role under lease
    /// `lease_epoch`, at `now_ms`.
    pub fn new(timing: Timing, lease_epoch: u64, now_ms: u64) -> Coordinator {
        Coordinator {
            timing,
            lease_epoch,
            seq: 0,
            settling_until_ms: now_ms + timing.inherited_ms(),
            topics: BTreeMap::new(),
        }
    }

    /// Grants `topic` to `to` at `now_ms`: a renewal when `to` holds it,
    /// otherwise a new epoch, once any other owner released it or its grant
    /// lapsed by the margin, and never while settling.
    /// `asked_at_ms` is the asker's own time, carried back in the grant.
    pub fn grant(&mut self, topic: &str, to: &str, asked_at_ms: u64, now_ms: u64) -> Result<Grant, Refused> {
        let until_ms = now_ms + self.timing.lease_ms;
        let epoch = match self.topics.get(topic) {
            Some(p) if p.owner == to && !p.released && now_ms < p.until_ms => p.epoch,
            Some(p) if p.owner != to && p.running(now_ms, self.timing.margin_ms) => {
                return Err(Refused::Held { by: p.owner.clone() });
            }
            _ if now_ms < self.settling_until_ms => {
                return Err(Refused::Settling { until_ms: self.settling_until_ms });
            }
            _ => {
                self.seq += 1;
                topic_stamp(self.lease_epoch, self.seq)
            }
        };
        let placement = Placement { owner: to.to_string(), epoch, until_ms, released: false };
        let previous = self.topics.insert(topic.to_string(), placement);
        assert!(previous.is_none_or(|p| p.epoch <= epoch), "a topic's epoch never goes back");
        Ok(Grant { topic: topic.to_string(), owner: to.to_string(), epoch, asked_at_ms })
    }

    /// `owner` stopped acting on `topic` under `epoch`: another machine may
    /// be granted it at once.
    pub fn release(&mut self, topic: &str, owner: &str, epoch: u64) {
        if let Some(p) = self.topics.get_mut(topic)
            && p.owner == owner
            && p.epoch == epoch
        {
            p.released = true;
        }
    }

    /// The topics `owner` may still be acting on at `now_ms`, with their
    /// epochs.
    pub fn held_by(&self, owner: &str, now_ms: u64) -> Vec<(&str, u64)> {
        self.topics
            .iter()
            .filter(|(_, p)| p.owner == owner && p.running(now_ms, self.timing.margin_ms))
            .map(|(t, p)| (t.as_str(), p.epoch))
            .collect()
    }

    /// The owner and epoch of `topic`, while its owner may be acting on it.
    pub fn owner(&self, topic: &str, now_ms: u64) -> Option<(&str, u64)> {
        self.topics.get(topic).filter(|p| p.running(now_ms, self.timing.margin_ms)).map(|p| (p.owner.as_str(), p.epoch))
    }
}

/// An owner's side of one topic: the epoch it holds and until when, on
/// its own clock.
#[derive(Debug, Clone, Default)]
pub struct Tenure {
    held: Option<(u64, u64)>,
}

impl Tenure {
    /// Takes a grant: the tenure runs from when its request left
    /// (`grant.asked_at_ms`), never from when the answer came, however late
    /// or out of order answers arrive. An older epoch never replaces a newer.
    pub fn granted(&mut self, grant: &Grant, timing: &Timing) {
        let until = grant.asked_at_ms + timing.owner_budget_ms();
        let takes = match self.held {
            None => true,
            Some((epoch, held_until)) => grant.epoch > epoch || (grant.epoch == epoch && until > held_until),
        };
        if takes {
            self.held = Some((grant.epoch, until));
        }
    }

    /// The epoch this machine may act under at `now_ms`, if any.
    pub fn acting(&self, now_ms: u64) -> Option<u64> {
        self.held.filter(|&(_, until)| now_ms < until).map(|(epoch, _)| epoch)
    }

    /// The epoch held and until when (its own clock), lapsed or not.
    pub fn held(&self) -> Option<(u64, u64)> {
        self.held
    }
}

/// One machine's side of every topic granted to it.
#[derive(Debug, Clone, Default)]
pub struct Member {
    tenures: BTreeMap<String, Tenure>,
    /// Topics it was told to drop, with the epoch dropped: it starts no
    /// new work on them and releases them once nothing of them is in flight.
    dropped: BTreeMap<String, u64>,
    /// How many pieces of work are in flight on each topic.
    in_flight: BTreeMap<String, usize>,
    /// The last epoch released of each topic: an answer arriving late or
    /// twice never brings back a tenure given up, which the coordinator
    /// may have granted to another machine since.
    released: BTreeMap<String, u64>,
    /// Counts the new epochs taken: each one is a topic whose earlier
    /// owner's work this machine must take in before acting.
    generation: u64,
}

impl Member {
    /// Takes a grant (see [`Tenure::granted`]), unless its epoch was
    /// released here.
    pub fn granted(&mut self, grant: &Grant, timing: &Timing) {
        if self.released.get(&grant.topic).is_some_and(|released| grant.epoch <= *released) {
            return;
        }
        let tenure = self.tenures.entry(grant.topic.clone()).or_default();
        let before = tenure.held().map(|(epoch, _)| epoch);
        tenure.granted(grant, timing);
        let after = tenure.held().map(|(epoch, _)| epoch);
        if after != before {
            self.generation += 1;
        }
    }

    /// The coordinator moved `topic` away from `epoch`.
    pub fn drop_topic(&mut self, topic: &str, epoch: u64) {
        if self.tenures.get(topic).and_then(Tenure::held).is_some_and(|(held, _)| held == epoch) {
            self.dropped.insert(topic.to_string(), epoch);
        }
    }

    /// The epoch this machine acts on `topic` under at `now_ms`, and until
    /// when on its clock: while its tenure lasts, and once dropped only for
    /// the work still in flight.
    pub fn acting(&self, topic: &str, now_ms: u64) -> Option<(u64, u64)> {
        let (epoch, until) = self.tenures.get(topic)?.held()?;
        let dropped = self.dropped.get(topic) == Some(&epoch);
        (now_ms < until && (!dropped || self.busy(topic))).then_some((epoch, until))
    }

    /// Every topic it may start work on at `now_ms`, with its epoch.
    pub fn owned(&self, now_ms: u64) -> Vec<(&str, u64)> {
        self.tenures
            .keys()
            .filter(|topic| !self.dropped.contains_key(*topic))
            .filter_map(|topic| self.acting(topic, now_ms).map(|(epoch, _)| (topic.as_str(), epoch)))
            .collect()
    }

    /// Starts a piece of work on `topic` under `epoch`, if the topic is
    /// still owned under it; [`Member::finish`] ends it.
    pub fn start(&mut self, topic: &str, epoch: u64, now_ms: u64) -> bool {
        let owned = !self.dropped.contains_key(topic) && self.acting(topic, now_ms).is_some_and(|(e, _)| e == epoch);
        if owned {
            *self.in_flight.entry(topic.to_string()).or_default() += 1;
        }
        owned
    }

    /// A piece of work [`Member::start`] began on `topic` is over.
    pub fn finish(&mut self, topic: &str) {
        if let Some(count) = self.in_flight.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(topic);
            }
        }
    }

    fn busy(&self, topic: &str) -> bool {
        self.in_flight.contains_key(topic)
    }

    /// Whether a dropped topic has nothing in flight, so it may be released
    /// now.
    pub fn has_releasable(&self) -> bool {
        self.dropped.keys().any(|topic| !self.busy(topic))
    }

    /// The dropped topics none of whose work is in flight, to release;
    /// forgotten here once returned.
    pub fn releasable(&mut self) -> Vec<(String, u64)> {
        let done: Vec<(String, u64)> =
            self.dropped.iter().filter(|(topic, _)| !self.busy(topic)).map(|(t, e)| (t.clone(), *e)).collect();
        for (topic, epoch) in &done {
            self.dropped.remove(topic);
            self.tenures.remove(topic);
            self.released.insert(topic.clone(), *epoch);
        }
        done
    }

    /// Forgets every tenure lapsed by `now_ms` (none of them acts).
    pub fn forget_lapsed(&mut self, now_ms: u64) {
        self.tenures.retain(|topic, t| t.acting(now_ms).is_some() || self.dropped.contains_key(topic));
    }

    /// How many new epochs it has taken: a change means a round must first
    /// take in what the others hold.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIMING: Timing = Timing { lease_ms: 3000, margin_ms: 500, drift_ppm: 1000 };

    /// A coordinator under lease epoch 4 that has settled by time 0.
    fn settled() -> Coordinator {
        let inherited = TIMING.inherited_ms();
        let mut c = Coordinator::new(TIMING, 4, 0);
        c.settling_until_ms = 0;
        assert!(inherited > TIMING.lease_ms + TIMING.margin_ms);
        c
    }

    #[test]
    fn a_topic_moves_only_after_its_owners_grant_lapsed() {
        let mut c = settled();
        assert_eq!(c.grant("t", "a", 7, 0).unwrap().epoch, topic_stamp(4, 1));
        assert_eq!(c.grant("t", "b", 7, 3000), Err(Refused::Held { by: "a".into() }));
        assert_eq!(c.grant("t", "a", 7, 2000).unwrap().epoch, topic_stamp(4, 1), "a renewal keeps the epoch");
        assert_eq!(c.owner("t", 5499), Some(("a", topic_stamp(4, 1))));
        assert_eq!(c.owner("t", 5500), None);
        assert_eq!(c.grant("t", "b", 7, 5500).unwrap().epoch, topic_stamp(4, 2));
        assert_eq!(c.owner("t", 5500), Some(("b", topic_stamp(4, 2))));
    }

    #[test]
    fn a_released_topic_moves_at_once() {
        let mut c = settled();
        let epoch = c.grant("t", "a", 0, 0).unwrap().epoch;
        c.release("t", "b", epoch);
        assert!(c.grant("t", "b", 0, 10).is_err(), "only the owner releases");
        c.release("t", "a", epoch);
        assert!(c.held_by("a", 10).is_empty());
        assert_eq!(c.grant("t", "b", 0, 10).unwrap().epoch, topic_stamp(4, 2));
    }

    #[test]
    fn a_new_coordinator_grants_nothing_new_until_earlier_grants_lapsed_and_outranks_them() {
        let mut earlier = settled();
        let old = earlier.grant("t", "a", 0, 0).unwrap().epoch;
        let mut c = Coordinator::new(TIMING, 5, 100);
        let until_ms = 100 + TIMING.inherited_ms();
        assert_eq!(c.grant("t", "b", 0, 200), Err(Refused::Settling { until_ms }));
        let new = c.grant("t", "b", 0, until_ms).unwrap().epoch;
        assert!(new > old, "stamps of a later lease epoch outrank every earlier one");
    }

    #[test]
    fn a_dropped_topic_starts_nothing_new_finishes_its_work_and_is_released_once_idle() {
        let mut m = Member::default();
        let grant = Grant { topic: "t".into(), owner: "a".into(), epoch: 9, asked_at_ms: 0 };
        m.granted(&grant, &TIMING);
        assert_eq!(m.generation(), 1);
        m.granted(&grant, &TIMING);
        assert_eq!(m.generation(), 1, "a renewal is no new epoch");
        assert_eq!(m.owned(10), [("t", 9)]);
        assert!(!m.start("t", 8, 10), "no work starts under another epoch");
        assert!(m.start("t", 9, 10));
        m.drop_topic("t", 9);
        assert!(m.owned(10).is_empty());
        assert!(!m.start("t", 9, 10), "no new work on a dropped topic");
        assert_eq!(m.acting("t", 10).map(|(e, _)| e), Some(9), "the work in flight finishes under its epoch");
        assert!(m.releasable().is_empty(), "its work is still in flight");
        assert!(!m.has_releasable());
        m.finish("t");
        assert!(m.has_releasable());
        assert_eq!(m.acting("t", 10), None);
        assert_eq!(m.releasable(), [("t".to_string(), 9)]);
        assert!(m.owned(10).is_empty());
        m.granted(&grant, &TIMING);
        assert!(m.owned(10).is_empty(), "an answer arriving late brings back no released tenure");
        m.granted(&Grant { epoch: 10, ..grant }, &TIMING);
        assert_eq!(m.owned(10), [("t", 10)], "a later epoch is a new grant");
    }

    #[test]
    fn an_owner_counts_from_when_it_asked() {
        let mut tenure = Tenure::default();
        tenure.granted(&Grant { topic: "t".into(), owner: "a".into(), epoch: 1, asked_at_ms: 100 }, &TIMING);
        let budget = TIMING.owner_budget_ms();
        assert!(budget < TIMING.lease_ms);
        assert_eq!(tenure.acting(100 + budget - 1), Some(1));
        assert_eq!(tenure.acting(100 + budget), None);
    }

    /// A clock running `rate_ppm` fast (or slow) from `offset_ms`.
    #[derive(Clone, Copy)]
    struct Clock {
        rate_ppm: i64,
        offset_ms: u64,
    }

    impl Clock {
        fn at(self, real_ms: u64) -> u64 {
            self.offset_ms + (i128::from(real_ms) * i128::from(1_000_000 + self.rate_ppm) / 1_000_000) as u64
        }
    }

    /// A request on its way: who asked, at its own time, when it reaches
    /// the coordinator and how long the answer takes back.
    struct Asking {
        who: usize,
        asked_at_ms: u64,
        arrives: u64,
        back: u64,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Three machines ask for one topic again and again; requests and
        /// answers take random delays, clocks drift within the bound, and
        /// the coordinator grants whoever it can. At no millisecond do two
        /// machines act on the topic.
        #[test]
        fn no_topic_ever_has_two_machines_acting(
            rates in prop::collection::vec(-1000i64..=1000, 4),
            offsets in prop::collection::vec(0u64..10_000, 4),
            asks in prop::collection::vec((0usize..3, 0u64..150, 0u64..2000, 0u64..2000), 1..30),
        ) {
            let clocks: Vec<Clock> = (0..4).map(|i| Clock { rate_ppm: rates[i], offset_ms: offsets[i] }).collect();
            let coordinator_clock = clocks[3];
            let mut coordinator = Coordinator::new(TIMING, 1, coordinator_clock.at(0));
            let mut tenures = vec![Tenure::default(); 3];
            // Each ask: who, how long after the one before, how long the
            // request travels, how long the answer travels.
            let mut at = 0;
            let mut asks: Vec<(u64, usize, u64, u64)> = asks
                .into_iter()
                .map(|(who, gap, there, back)| {
                    at += gap * 20;
                    (at, who, there, back)
                })
                .rev()
                .collect();
            let mut requests: Vec<Asking> = Vec::new();
            let mut answers: Vec<(u64, usize, Grant)> = Vec::new();
            for real in 0..at + 8000 {
                while asks.last().is_some_and(|a| a.0 == real) {
                    let (_, who, there, back) = asks.pop().unwrap();
                    requests.push(Asking { who, asked_at_ms: clocks[who].at(real), arrives: real + there, back });
                }
                for request in requests.iter().filter(|r| r.arrives == real) {
                    let now = coordinator_clock.at(real);
                    if let Ok(grant) = coordinator.grant("t", &request.who.to_string(), request.asked_at_ms, now) {
                        answers.push((real + request.back, request.who, grant));
                    }
                }
                requests.retain(|r| r.arrives > real);
                for (_, who, grant) in answers.iter().filter(|a| a.0 == real) {
                    tenures[*who].granted(grant, &TIMING);
                }
                answers.retain(|a| a.0 > real);
                let acting: Vec<usize> = (0..3).filter(|&i| tenures[i].acting(clocks[i].at(real)).is_some()).collect();
                prop_assert!(acting.len() <= 1, "at {real} ms, {acting:?} act on the topic");
            }
        }
    }
}
