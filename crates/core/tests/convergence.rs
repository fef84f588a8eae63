//! N replicas running the conflict rules of `roost_core::sync`, with random
//! writes and random delivery (reordering, duplication, loss and retry),
//! converge to identical rows and identical open conflicts, and those
//! conflicts are exactly the concurrent versions that lost.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use roost_core::Lamport;
use roost_core::sync::{Outcome, RowState, Version, covers, next_vector, ready, resolve, supersedes};

type EntryId = (String, u64);

#[derive(Debug, Clone)]
struct Shipped {
    row: u8,
    version: Version,
}

impl Shipped {
    fn id(&self) -> EntryId {
        (self.version.origin.clone(), self.version.seq)
    }
}

#[derive(Default)]
struct Replica {
    id: String,
    lamport: Lamport,
    heads: BTreeMap<String, u64>,
    known: BTreeMap<EntryId, Shipped>,
    pending: Vec<Shipped>,
    rows: BTreeMap<u8, RowState>,
    open: BTreeMap<EntryId, Version>,
    superseded: BTreeSet<EntryId>,
}

impl Replica {
    fn new(id: usize) -> Replica {
        Replica { id: format!("origin-{id}"), lamport: Lamport(0), ..Default::default() }
    }

    fn write(&mut self, row: u8, data: u32) {
        let seq = self.heads.get(&self.id).copied().unwrap_or(0) + 1;
        self.lamport = self.lamport.tick();
        let vector = next_vector(self.rows.get(&row).map(|v| &v.vector), &self.id, seq);
        let version =
            Version { origin: self.id.clone(), seq, lamport: self.lamport, vector, epoch: None, row: data.to_string() };
        self.apply(Shipped { row, version });
    }

    fn receive(&mut self, entry: Shipped) {
        if !self.known.contains_key(&entry.id()) {
            self.pending.push(entry);
        }
        while let Some(i) = self.pending.iter().position(|e| {
            !self.known.contains_key(&e.id()) && ready(&e.version.origin, e.version.seq, &e.version.vector, &self.heads)
        }) {
            let entry = self.pending.swap_remove(i);
            self.apply(entry);
        }
        self.pending.retain(|e| !self.known.contains_key(&e.id()));
    }

    fn apply(&mut self, entry: Shipped) {
        let v = &entry.version;
        assert!(ready(&v.origin, v.seq, &v.vector, &self.heads), "applied out of causal order");
        self.lamport = self.lamport.max(v.lamport);
        match resolve(self.rows.get(&entry.row), v) {
            Outcome::Known => panic!("a new entry cannot already be known"),
            Outcome::Fenced => panic!("rows without epochs are never fenced"),
            Outcome::Replace(state) => {
                self.rows.insert(entry.row, state);
            }
            Outcome::Conflict { state, loser } => {
                self.open.insert((loser.origin.clone(), loser.seq), loser);
                self.rows.insert(entry.row, state);
            }
        }
        let superseded: Vec<EntryId> = self
            .open
            .iter()
            .filter(|(id, loser)| supersedes(v, loser) && self.row_of(id) == Some(entry.row))
            .map(|(id, _)| id.clone())
            .collect();
        for id in superseded {
            self.open.remove(&id);
            self.superseded.insert(id);
        }
        self.heads.insert(v.origin.clone(), v.seq);
        self.known.insert(entry.id(), entry);
    }

    fn row_of(&self, id: &EntryId) -> Option<u8> {
        self.known.get(id).map(|e| e.row)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        replica: usize,
        row: u8,
        data: u32,
    },
    /// Send up to `count` entries `from` has and `to` lacks, starting at a
    /// random offset, plus one duplicate.
    Deliver {
        from: usize,
        to: usize,
        offset: usize,
        count: usize,
    },
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..replicas, 0u8..3, any::<u32>()).prop_map(|(replica, row, data)| Step::Write { replica, row, data }),
        (0..replicas, 0..replicas, 0usize..50, 1usize..6).prop_map(|(from, to, offset, count)| Step::Deliver {
            from,
            to,
            offset,
            count
        }),
    ]
}

/// Entries `from` has applied that `to` has not, in `from`'s order.
fn missing(from: &Replica, to: &Replica) -> Vec<Shipped> {
    from.known.values().filter(|e| !to.known.contains_key(&e.id())).cloned().collect()
}

fn run(replica_count: usize, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut replicas: Vec<Replica> = (0..replica_count).map(Replica::new).collect();
    for s in steps {
        match *s {
            Step::Write { replica, row, data } => replicas[replica].write(row, data),
            Step::Deliver { from, to, offset, count } if from != to => {
                let missing = missing(&replicas[from], &replicas[to]);
                let n = missing.len();
                let mut batch: Vec<Shipped> =
                    (0..count.min(n)).map(|i| missing[(offset + i * 7) % n.max(1)].clone()).collect();
                batch.reverse();
                if let Some(dup) = replicas[from].known.values().nth(offset % replicas[from].known.len().max(1)) {
                    batch.push(dup.clone());
                }
                for entry in batch {
                    replicas[to].receive(entry);
                }
            }
            Step::Deliver { .. } => {}
        }
    }
    // Heal: keep exchanging until nobody lacks anything.
    loop {
        let mut moved = false;
        for from in 0..replica_count {
            for to in 0..replica_count {
                let missing = missing(&replicas[from], &replicas[to]);
                moved |= !missing.is_empty();
                for entry in missing.into_iter().rev() {
                    replicas[to].receive(entry);
                }
            }
        }
        if !moved {
            break;
        }
    }

    let first = &replicas[0];
    for other in &replicas[1..] {
        prop_assert_eq!(&other.rows, &first.rows, "rows converge");
        prop_assert_eq!(
            other.open.keys().collect::<Vec<_>>(),
            first.open.keys().collect::<Vec<_>>(),
            "open conflicts converge"
        );
        prop_assert!(other.pending.is_empty());
    }
    // Ground truth from every version ever written.
    let all: Vec<&Shipped> = first.known.values().collect();
    for row in 0u8..3 {
        let versions: Vec<&Version> = all.iter().filter(|e| e.row == row).map(|e| &e.version).collect();
        let maximal: Vec<&Version> = versions
            .iter()
            .filter(|v| {
                !versions.iter().any(|w| (w.origin != v.origin || w.seq != v.seq) && covers(&w.vector, &v.vector))
            })
            .copied()
            .collect();
        let Some(winner) = versions.iter().copied().reduce(|a, b| if b.outranks(a) { b } else { a }) else { continue };
        let state = &first.rows[&row].version;
        prop_assert_eq!((&state.origin, state.seq, &state.row), (&winner.origin, winner.seq, &winner.row));
        let expected_open: BTreeSet<EntryId> = maximal
            .iter()
            .filter(|v| !(v.origin == winner.origin && v.seq == winner.seq))
            .map(|v| (v.origin.clone(), v.seq))
            .collect();
        let open: BTreeSet<EntryId> = first.open.keys().filter(|id| first.row_of(id) == Some(row)).cloned().collect();
        prop_assert_eq!(open, expected_open, "every concurrent version that lost is an open conflict");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn replicas_converge_under_any_delivery(
        replica_count in 2usize..5,
        steps in prop::collection::vec(step(4), 1..80),
    ) {
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|s| match s {
                Step::Write { replica, row, data } => Step::Write { replica: replica % replica_count, row, data },
                Step::Deliver { from, to, offset, count } => {
                    Step::Deliver { from: from % replica_count, to: to % replica_count, offset, count }
                }
            })
            .collect();
        run(replica_count, &steps)?;
    }
}
