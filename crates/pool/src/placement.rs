//! Where a new topic runs: on the machine with the most room, its active
//! topics weighed against its configured capacity (`[pool] capacity`).
//! Machines that are offline, have no capacity, or whose clock disagrees
//! with the coordinator's by more than the bound are not placed on; the
//! last are quarantined, and shown so.

/// A machine the coordinator may place a topic on, as it sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// How many topics it is meant to carry, relative to the others.
    pub capacity: u32,
    /// Topics it owns now.
    pub active_topics: u32,
    pub online: bool,
    /// Its clock minus the coordinator's, as last measured.
    pub clock_offset_ms: i64,
}

/// Why a machine takes no new topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    Offline,
    NoCapacity,
    /// Its clock is further than the bound from the coordinator's.
    Quarantined,
}

impl Candidate {
    /// Why it takes no new topic, if it takes none.
    pub fn excluded(&self, clock_bound_ms: i64) -> Option<Excluded> {
        if !self.online {
            Some(Excluded::Offline)
        } else if self.capacity == 0 {
            Some(Excluded::NoCapacity)
        } else if self.clock_offset_ms.unsigned_abs() > clock_bound_ms.unsigned_abs() {
            Some(Excluded::Quarantined)
        } else {
            None
        }
    }
}

/// The machine a new topic goes to: the eligible one whose load after
/// taking it, `(active + 1) / capacity`, is least; ties go to the lowest
/// id, so every coordinator places alike. None when no machine is eligible.
pub fn place(candidates: &[Candidate], clock_bound_ms: i64) -> Option<&str> {
    candidates
        .iter()
        .filter(|c| c.excluded(clock_bound_ms).is_none())
        // a/b < c/d  ⇔  a·d < c·b, in integers.
        .min_by(|a, b| {
            let after = |c: &Candidate| u64::from(c.active_topics) + 1;
            (after(a) * u64::from(b.capacity)).cmp(&(after(b) * u64::from(a.capacity))).then_with(|| a.id.cmp(&b.id))
        })
        .map(|c| c.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn machine(id: &str, capacity: u32) -> Candidate {
        Candidate { id: id.into(), capacity, active_topics: 0, online: true, clock_offset_ms: 0 }
    }

    /// Places `topics` one after another, as the coordinator does.
    fn spread(machines: &mut [Candidate], topics: usize, bound: i64) {
        for _ in 0..topics {
            let id = place(machines, bound).expect("an eligible machine").to_string();
            machines.iter_mut().find(|m| m.id == id).unwrap().active_topics += 1;
        }
    }

    #[test]
    fn thirty_topics_spread_by_capacity() {
        let mut machines = [machine("home", 3), machine("laptop", 2), machine("pi", 1)];
        spread(&mut machines, 30, 500);
        let loads: Vec<u32> = machines.iter().map(|m| m.active_topics).collect();
        assert_eq!(loads, [15, 10, 5]);
    }

    #[test]
    fn offline_empty_and_skewed_machines_take_nothing() {
        let mut machines = [machine("a", 1), machine("b", 1), machine("c", 0), machine("d", 1)];
        machines[0].online = false;
        machines[1].clock_offset_ms = -900;
        assert_eq!(machines[1].excluded(500), Some(Excluded::Quarantined));
        assert_eq!(machines[2].excluded(500), Some(Excluded::NoCapacity));
        spread(&mut machines, 5, 500);
        assert_eq!(machines.iter().map(|m| m.active_topics).collect::<Vec<_>>(), [0, 0, 0, 5]);
        machines[3].online = false;
        assert_eq!(place(&machines, 500), None);
    }

    proptest! {
        #[test]
        fn no_machine_is_ever_loaded_past_another_by_more_than_one_topic_of_its_capacity(
            capacities in prop::collection::vec(1u32..6, 1..6),
            topics in 0usize..80,
        ) {
            let mut machines: Vec<Candidate> =
                capacities.iter().enumerate().map(|(i, &c)| machine(&format!("m{i}"), c)).collect();
            spread(&mut machines, topics, 500);
            prop_assert_eq!(machines.iter().map(|m| m.active_topics as usize).sum::<usize>(), topics);
            // Greedy fill: what any machine holds, less its last topic, is no
            // more load than any other would have with one more.
            for a in &machines {
                for b in &machines {
                    if a.active_topics > 0 {
                        let before = u64::from(a.active_topics) * u64::from(b.capacity);
                        prop_assert!(before <= (u64::from(b.active_topics) + 1) * u64::from(a.capacity));
                    }
                }
            }
        }

        #[test]
        fn an_excluded_machine_is_never_chosen(
            flags in prop::collection::vec((any::<bool>(), 0u32..3, -2000i64..2000), 1..6),
        ) {
            let machines: Vec<Candidate> = flags
                .iter()
                .enumerate()
                .map(|(i, &(online, capacity, offset))| Candidate {
                    id: format!("m{i}"),
                    capacity,
                    active_topics: 0,
                    online,
                    clock_offset_ms: offset,
                })
                .collect();
            match place(&machines, 500) {
                Some(id) => {
                    let chosen = machines.iter().find(|m| m.id == id).unwrap();
                    prop_assert_eq!(chosen.excluded(500), None);
                }
                None => prop_assert!(machines.iter().all(|m| m.excluded(500).is_some())),
            }
        }
    }
}
