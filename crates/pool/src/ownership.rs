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
//! Times are milliseconds of each side's own monotonic clock; nothing here
//! reads a clock.

use std::collections::BTreeMap;

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
    /// The asker's epoch is not the topic's current one.
    StaleEpoch { current: u64 },
}

#[derive(Debug, Clone)]
struct Placement {
    owner: String,
    epoch: u64,
    /// The coordinator's time the grant lapses at.
    until_ms: u64,
}

/// The coordinator's side: every topic's owner, epoch and grant.
#[derive(Debug, Clone)]
pub struct Coordinator {
    timing: Timing,
    topics: BTreeMap<String, Placement>,
}

impl Coordinator {
    pub fn new(timing: Timing) -> Coordinator {
        Coordinator { timing, topics: BTreeMap::new() }
    }

    /// Grants `topic` to `to` at `now_ms`: a renewal when `to` owns it,
    /// otherwise a new epoch, once any other owner's grant lapsed by the
    /// margin.
    /// `asked_at_ms` is the asker's own time, carried back in the grant.
    pub fn grant(&mut self, topic: &str, to: &str, asked_at_ms: u64, now_ms: u64) -> Result<Grant, Refused> {
        let until_ms = now_ms + self.timing.lease_ms;
        let epoch = match self.topics.get(topic) {
            Some(p) if p.owner == to && now_ms < p.until_ms => p.epoch,
            Some(p) if p.owner != to && now_ms < p.until_ms + self.timing.margin_ms => {
                return Err(Refused::Held { by: p.owner.clone() });
            }
            Some(p) => p.epoch + 1,
            None => 1,
        };
        let previous = self.topics.insert(topic.to_string(), Placement { owner: to.to_string(), epoch, until_ms });
        debug_assert!(previous.is_none_or(|p| p.epoch <= epoch), "a topic's epoch never goes back");
        Ok(Grant { topic: topic.to_string(), owner: to.to_string(), epoch, asked_at_ms })
    }

    /// The topics whose owner's grant lapsed by the margin at `now_ms`:
    /// to be placed again.
    pub fn lapsed(&self, now_ms: u64) -> Vec<&str> {
        let margin = self.timing.margin_ms;
        self.topics.iter().filter(|(_, p)| now_ms >= p.until_ms + margin).map(|(t, _)| t.as_str()).collect()
    }

    /// The owner and epoch of `topic`, as the coordinator last granted it.
    pub fn owner(&self, topic: &str) -> Option<(&str, u64)> {
        self.topics.get(topic).map(|p| (p.owner.as_str(), p.epoch))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIMING: Timing = Timing { lease_ms: 3000, margin_ms: 500, drift_ppm: 1000 };

    #[test]
    fn a_topic_moves_only_after_its_owners_grant_lapsed() {
        let mut c = Coordinator::new(TIMING);
        assert_eq!(c.grant("t", "a", 7, 0).unwrap().epoch, 1);
        assert_eq!(c.grant("t", "b", 7, 3000), Err(Refused::Held { by: "a".into() }));
        assert_eq!(c.grant("t", "a", 7, 2000).unwrap().epoch, 1, "a renewal keeps the epoch");
        assert!(c.lapsed(5400).is_empty());
        assert_eq!(c.lapsed(5500), ["t"]);
        assert_eq!(c.grant("t", "b", 7, 5500).unwrap().epoch, 2);
        assert_eq!(c.owner("t"), Some(("b", 2)));
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
            let mut coordinator = Coordinator::new(TIMING);
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
