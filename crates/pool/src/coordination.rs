//! The coordinator's whole state while its machine is awake: the grants
//! (`ownership::Coordinator`), the machines it has heard ask, where each
//! topic is placed and whether a transfer pinned it, and when each topic
//! last moved. The shell feeds it the asks, the ledger's topics and the
//! transfers, with the time; it answers what to grant, what to drop, and
//! which placements to record as replicated state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ownership::{Coordinator, Grant, Timing};
use crate::placement::{Candidate, place};

/// What the agent-state key of every placement starts with.
pub const PLACEMENT_PREFIX: &str = "pool/placement/";

/// Where a topic runs and whether a transfer pinned it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub machine: String,
    pub pinned: bool,
}

impl Placed {
    /// The replicated agent state that records `topic`'s placement: its key
    /// and value.
    pub fn record(&self, topic: &str) -> (String, String) {
        (format!("{PLACEMENT_PREFIX}{topic}"), serde_json::to_string(self).expect("a placement serializes"))
    }

    /// The topic and placement an agent state under [`PLACEMENT_PREFIX`]
    /// records; None for anything else.
    pub fn recorded(key: &str, value: &str) -> Option<(String, Placed)> {
        Some((key.strip_prefix(PLACEMENT_PREFIX)?.to_string(), serde_json::from_str(value).ok()?))
    }
}

/// The pool's settings, the same on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub timing: Timing,
    /// A machine whose clock is further than this from the coordinator's
    /// takes no new topic.
    pub clock_bound_ms: i64,
    /// A topic moves at most once in this long.
    pub transfer_interval_ms: u64,
}

/// A machine as the coordinator last heard it ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub capacity: u32,
    pub at_ms: u64,
    pub clock_offset_ms: i64,
}

/// A member's request: its capacity, when it asked on its own clock, and
/// the topics it stopped acting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub capacity: u32,
    pub asked_at_ms: u64,
    /// Its clock minus the coordinator's, as the shell measured.
    pub clock_offset_ms: i64,
    pub releases: Vec<(String, u64)>,
}

/// What a member is told: the topics granted (or renewed) and those it
/// must drop, with the epoch dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub grants: Vec<Grant>,
    pub drop: Vec<(String, u64)>,
}

/// The outcome of a transfer the coordinator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// The topic runs there already; nothing changed.
    Already { pinned: bool },
    /// Pinned to the new machine, from where it was placed before.
    Moved { from: Option<String> },
}

/// Why the coordinator refused a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferRefused {
    /// The topic moved `ago_ms` ago, sooner than the interval allows.
    TooSoon { ago_ms: u64 },
    /// The target has not asked within a grant's length; a confirmed
    /// transfer goes through anyway.
    Offline,
}

/// The coordinator of the machine awake under `lease_epoch`.
#[derive(Debug, Clone)]
pub struct Coordination {
    pub lease_epoch: u64,
    settings: Settings,
    /// Until then it places nothing: the machines have not all asked yet,
    /// and a grant from the coordinator before may still run.
    settled_at_ms: u64,
    grants: Coordinator,
    machines: BTreeMap<String, Seen>,
    placements: BTreeMap<String, Placed>,
    moved_at_ms: BTreeMap<String, u64>,
}

impl Coordination {
    /// Takes the role at `now_ms`, from the replicated `placements` the
    /// coordinators before it recorded.
    pub fn new(
        settings: Settings,
        lease_epoch: u64,
        now_ms: u64,
        placements: BTreeMap<String, Placed>,
    ) -> Coordination {
        Coordination {
            lease_epoch,
            settings,
            settled_at_ms: now_ms + settings.timing.inherited_ms(),
            grants: Coordinator::new(settings.timing, lease_epoch, now_ms),
            machines: BTreeMap::new(),
            placements,
            moved_at_ms: BTreeMap::new(),
        }
    }

    /// Answers `from`'s ask at `now_ms`: takes its releases, grants or
    /// renews every topic placed on it that it may have, and tells it to
    /// drop what it holds that is placed elsewhere now.
    pub fn ask(&mut self, from: &str, ask: &Ask, now_ms: u64) -> Answer {
        self.machines.insert(
            from.to_string(),
            Seen { capacity: ask.capacity, at_ms: now_ms, clock_offset_ms: ask.clock_offset_ms },
        );
        for (topic, epoch) in &ask.releases {
            self.grants.release(topic, from, *epoch);
        }
        let mine: Vec<String> =
            self.placements.iter().filter(|(_, p)| p.machine == from).map(|(t, _)| t.clone()).collect();
        let grants =
            mine.iter().filter_map(|topic| self.grants.grant(topic, from, ask.asked_at_ms, now_ms).ok()).collect();
        let drop = self
            .grants
            .held_by(from, now_ms)
            .into_iter()
            .filter(|(topic, _)| self.placements.get(*topic).is_none_or(|p| p.machine != from))
            .map(|(t, e)| (t.to_string(), e))
            .collect();
        Answer { grants, drop }
    }

    /// Places every topic of `topics` that has no machine, or whose machine
    /// is offline and no longer owns it (its grant lapsed), on the machine
    /// with the most room; nothing while it settles, when the machines it
    /// has not heard yet would look gone. Returns the placements to record.
    pub fn place_topics<'a>(
        &mut self,
        topics: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
    ) -> Vec<(String, Placed)> {
        let mut placed = Vec::new();
        if now_ms < self.settled_at_ms {
            return placed;
        }
        for topic in topics {
            let gone = self
                .placements
                .get(topic)
                .is_some_and(|p| !self.online(&p.machine, now_ms) && self.grants.owner(topic, now_ms).is_none());
            if self.placements.contains_key(topic) && !gone {
                continue;
            }
            let candidates = self.candidates(now_ms);
            let Some(machine) = place(&candidates, self.settings.clock_bound_ms) else { continue };
            let new = Placed { machine: machine.to_string(), pinned: false };
            self.placements.insert(topic.to_string(), new.clone());
            placed.push((topic.to_string(), new));
        }
        placed
    }

    /// Moves `topic` to `machine` and pins it there: refused sooner than
    /// the interval after its last move, and to an offline machine unless
    /// `confirm`. The old owner is told to drop it at its next ask and
    /// releases it once its in-flight work is done; the new one is granted
    /// it then (or once the old grant lapsed).
    pub fn transfer(
        &mut self,
        topic: &str,
        machine: &str,
        confirm: bool,
        now_ms: u64,
    ) -> Result<Transfer, TransferRefused> {
        let from = self.placements.get(topic).cloned();
        if let Some(placed) = &from
            && placed.machine == machine
        {
            return Ok(Transfer::Already { pinned: placed.pinned });
        }
        if let Some(at) = self.moved_at_ms.get(topic)
            && now_ms < at + self.settings.transfer_interval_ms
        {
            return Err(TransferRefused::TooSoon { ago_ms: now_ms - at });
        }
        if !self.online(machine, now_ms) && !confirm {
            return Err(TransferRefused::Offline);
        }
        self.moved_at_ms.insert(topic.to_string(), now_ms);
        self.placements.insert(topic.to_string(), Placed { machine: machine.to_string(), pinned: true });
        Ok(Transfer::Moved { from: from.map(|p| p.machine) })
    }

    /// Where `topic` is placed.
    pub fn placement(&self, topic: &str) -> Option<&Placed> {
        self.placements.get(topic)
    }

    pub fn placements(&self) -> &BTreeMap<String, Placed> {
        &self.placements
    }

    /// The owner and epoch of `topic` while its owner may be acting on it.
    pub fn owner(&self, topic: &str, now_ms: u64) -> Option<(&str, u64)> {
        self.grants.owner(topic, now_ms)
    }

    /// Whether `machine` asked within a grant's length.
    pub fn online(&self, machine: &str, now_ms: u64) -> bool {
        self.machines.get(machine).is_some_and(|seen| now_ms < seen.at_ms + self.settings.timing.lease_ms)
    }

    /// Every machine that has asked, as placement weighs it.
    pub fn candidates(&self, now_ms: u64) -> Vec<Candidate> {
        self.machines
            .iter()
            .map(|(id, seen)| Candidate {
                id: id.clone(),
                capacity: seen.capacity,
                active_topics: self.load(id) as u32,
                online: self.online(id, now_ms),
                clock_offset_ms: seen.clock_offset_ms,
            })
            .collect()
    }

    /// How many topics are placed on `machine`.
    pub fn load(&self, machine: &str) -> usize {
        self.placements.values().filter(|p| p.machine == machine).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        timing: Timing { lease_ms: 2000, margin_ms: 500, drift_ppm: 1000 },
        clock_bound_ms: 1000,
        transfer_interval_ms: 1000,
    };

    fn ask(asked_at_ms: u64, releases: Vec<(String, u64)>) -> Ask {
        Ask { capacity: 1, asked_at_ms, clock_offset_ms: 0, releases }
    }

    /// A coordinator settled by `t0`, with machines a and b asking at `t0`.
    fn coordination(t0: u64) -> Coordination {
        let mut c = Coordination::new(SETTINGS, 3, 0, BTreeMap::new());
        c.ask("a", &ask(t0, vec![]), t0);
        c.ask("b", &ask(t0, vec![]), t0);
        c
    }

    #[test]
    fn a_moved_topic_goes_to_its_new_machine_once_the_old_owner_releases_it() {
        let t0 = SETTINGS.timing.inherited_ms();
        let mut c = coordination(t0);
        let placed = c.place_topics(["t"], t0);
        assert_eq!(placed, [("t".to_string(), Placed { machine: "a".into(), pinned: false })]);
        let epoch = c.ask("a", &ask(t0, vec![]), t0).grants[0].epoch;
        assert_eq!(c.transfer("t", "b", false, t0 + 10), Ok(Transfer::Moved { from: Some("a".into()) }));
        assert_eq!(c.transfer("t", "a", false, t0 + 20), Err(TransferRefused::TooSoon { ago_ms: 10 }));
        assert_eq!(c.transfer("t", "b", false, t0 + 20), Ok(Transfer::Already { pinned: true }));
        assert!(c.ask("b", &ask(t0 + 30, vec![]), t0 + 30).grants.is_empty(), "a still owns it");
        assert_eq!(c.ask("a", &ask(t0 + 40, vec![]), t0 + 40).drop, [("t".to_string(), epoch)]);
        c.ask("a", &ask(t0 + 50, vec![("t".into(), epoch)]), t0 + 50);
        let granted = c.ask("b", &ask(t0 + 60, vec![]), t0 + 60).grants;
        assert!(granted[0].epoch > epoch, "the new owner's epoch outranks the old");
        assert_eq!(c.owner("t", t0 + 60), Some(("b", granted[0].epoch)));
    }

    #[test]
    fn a_gone_machines_topics_are_placed_again_once_its_grants_lapsed() {
        let t0 = SETTINGS.timing.inherited_ms();
        let mut c = coordination(t0);
        c.place_topics(["t"], t0);
        c.ask("a", &ask(t0, vec![]), t0);
        let later = t0 + SETTINGS.timing.lease_ms + 100;
        c.ask("b", &ask(later, vec![]), later);
        assert!(c.place_topics(["t"], later).is_empty(), "a's grant has not lapsed by the margin yet");
        let lapsed = t0 + SETTINGS.timing.lease_ms + SETTINGS.timing.margin_ms;
        c.ask("b", &ask(lapsed, vec![]), lapsed);
        assert_eq!(c.place_topics(["t"], lapsed), [("t".to_string(), Placed { machine: "b".into(), pinned: false })]);
    }

    #[test]
    fn a_placement_reads_back_as_recorded() {
        let placed = Placed { machine: "a".into(), pinned: true };
        let (key, value) = placed.record("t");
        assert_eq!(Placed::recorded(&key, &value), Some(("t".to_string(), placed)));
        assert_eq!(Placed::recorded("pool/nickname/a", &value), None);
    }

    #[test]
    fn an_offline_target_needs_confirmation() {
        let t0 = SETTINGS.timing.inherited_ms();
        let mut c = coordination(t0);
        c.place_topics(["t"], t0);
        let later = t0 + SETTINGS.timing.lease_ms;
        c.ask("a", &ask(later, vec![]), later);
        assert_eq!(c.transfer("t", "b", false, later), Err(TransferRefused::Offline));
        assert_eq!(c.transfer("t", "b", true, later), Ok(Transfer::Moved { from: Some("a".into()) }));
    }
}
