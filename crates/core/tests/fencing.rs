//! Epoch fencing of agent-owned rows, as `roost_core::sync` decides it: a set
//! of versions of one row — from several writers, at mixed epochs, some
//! concurrent and some causal — ends in the same row and the same open
//! conflicts whatever order a replica receives them in, and the row is always
//! a version of the highest epoch written.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use roost_core::Lamport;
use roost_core::sync::{Outcome, RowState, Version, covers, next_vector, ready, resolve, supersedes};

type EntryId = (String, u64);

fn id(v: &Version) -> EntryId {
    (v.origin.clone(), v.seq)
}

/// One replica of one row: what a writer holds, or what a receiver ends in.
#[derive(Default, Clone)]
struct Replica {
    id: String,
    lamport: Lamport,
    heads: BTreeMap<String, u64>,
    applied: Vec<Version>,
    pending: Vec<Version>,
    row: Option<RowState>,
    open: BTreeMap<EntryId, Version>,
}

impl Replica {
    fn new(id: String) -> Replica {
        Replica { id, ..Default::default() }
    }

    /// A write at `epoch`, whatever this writer has seen: the store's door
    /// refuses a stale epoch, but a replica must converge on anything a
    /// peer sends.
    fn write(&mut self, epoch: u64) {
        let seq = self.heads.get(&self.id).copied().unwrap_or(0) + 1;
        self.lamport = self.lamport.tick();
        let vector = next_vector(self.row.as_ref().map(|r| &r.vector), &self.id, seq);
        let row = format!("{}#{seq}@{epoch}", self.id);
        self.apply(Version { origin: self.id.clone(), seq, lamport: self.lamport, vector, epoch: Some(epoch), row });
    }

    /// Receives `version`, holding it until what it depends on is here.
    fn receive(&mut self, version: Version) {
        self.pending.push(version);
        while let Some(i) = self.pending.iter().position(|v| ready(&v.origin, v.seq, &v.vector, &self.heads)) {
            let version = self.pending.swap_remove(i);
            self.apply(version);
        }
    }

    fn apply(&mut self, v: Version) {
        assert!(ready(&v.origin, v.seq, &v.vector, &self.heads), "applied out of causal order");
        self.lamport = self.lamport.max(v.lamport);
        self.heads.insert(v.origin.clone(), v.seq);
        self.applied.push(v.clone());
        match resolve(self.row.as_ref(), &v) {
            Outcome::Known => panic!("a new entry cannot already be known"),
            Outcome::Fenced => return,
            Outcome::Replace(state) => self.row = Some(state),
            Outcome::Conflict { state, loser } => {
                self.open.insert(id(&loser), loser);
                self.row = Some(state);
            }
        }
        self.open.retain(|_, loser| !supersedes(&v, loser));
    }

    /// Everything `from` has applied that this replica lacks, in `from`'s
    /// (causal) order.
    fn learn(&mut self, from: &Replica) {
        for v in &from.applied {
            if self.heads.get(&v.origin).copied().unwrap_or(0) < v.seq {
                self.receive(v.clone());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Write { writer: usize, epoch: u64 },
    Learn { to: usize, from: usize },
}

const WRITERS: usize = 3;
const MAX_WRITES: usize = 10;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..WRITERS, 1u64..=4).prop_map(|(writer, epoch)| Step::Write { writer, epoch }),
        (0..WRITERS, 0..WRITERS).prop_map(|(to, from)| Step::Learn { to, from }),
    ]
}

/// Every version the steps write, each writer seeing only what it learned.
fn history(steps: &[Step]) -> Vec<Version> {
    let mut writers: Vec<Replica> = (0..WRITERS).map(|i| Replica::new(format!("origin-{i}"))).collect();
    let mut writes = 0;
    for s in steps {
        match *s {
            Step::Write { writer, epoch } if writes < MAX_WRITES => {
                writers[writer].write(epoch);
                writes += 1;
            }
            Step::Write { .. } => {}
            Step::Learn { to, from } if to != from => {
                let source = writers[from].clone();
                writers[to].learn(&source);
            }
            Step::Learn { .. } => {}
        }
    }
    let mut all: BTreeMap<EntryId, Version> = BTreeMap::new();
    for w in writers {
        all.extend(w.applied.into_iter().map(|v| (id(&v), v)));
    }
    all.into_values().collect()
}

/// A fresh replica that receives `versions` in the given order.
fn receive_all(versions: impl IntoIterator<Item = Version>) -> Replica {
    let mut replica = Replica::new("receiver".into());
    for v in versions {
        replica.receive(v);
    }
    assert!(replica.pending.is_empty(), "everything became ready");
    replica
}

/// What any order must end in: the row shows the highest-ranked version of
/// the highest epoch, and the open conflicts are exactly the other versions
/// of that epoch that no version of it has seen.
fn check_ground_truth(versions: &[Version], replica: &Replica) -> Result<(), TestCaseError> {
    let Some(top) = versions.iter().filter_map(|v| v.epoch).max() else { return Ok(()) };
    let of_top: Vec<&Version> = versions.iter().filter(|v| v.epoch == Some(top)).collect();
    let winner = of_top.iter().copied().reduce(|a, b| if b.outranks(a) { b } else { a }).expect("non-empty");
    let row = &replica.row.as_ref().expect("the row exists").version;
    prop_assert_eq!(row.epoch, Some(top), "the row is from the highest epoch");
    prop_assert_eq!(&row.row, &winner.row);
    let expected_open: BTreeSet<EntryId> = of_top
        .iter()
        .filter(|v| id(v) != id(winner))
        .filter(|v| !of_top.iter().any(|w| id(w) != id(v) && covers(&w.vector, &v.vector)))
        .map(|v| id(v))
        .collect();
    prop_assert_eq!(replica.open.keys().cloned().collect::<BTreeSet<_>>(), expected_open);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_order_ends_in_the_same_row_from_the_highest_epoch(
        steps in prop::collection::vec(step(), 1..40),
        orders in prop::collection::vec(prop::collection::vec(any::<u64>(), MAX_WRITES), 1..6),
    ) {
        let versions = history(&steps);
        let first = receive_all(versions.clone());
        check_ground_truth(&versions, &first)?;
        for keys in orders {
            let mut shuffled: Vec<(u64, Version)> = keys.into_iter().zip(versions.iter().cloned()).collect();
            shuffled.sort_by_key(|(key, _)| *key);
            let replica = receive_all(shuffled.into_iter().map(|(_, v)| v));
            prop_assert_eq!(&replica.row, &first.row, "same row, same vector");
            prop_assert_eq!(
                replica.open.keys().collect::<Vec<_>>(),
                first.open.keys().collect::<Vec<_>>(),
                "same open conflicts"
            );
        }
    }
}

fn permutations(items: &[Version]) -> Vec<Vec<Version>> {
    if items.is_empty() {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let head = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, head.clone());
            out.push(tail);
        }
    }
    out
}

/// The case fencing exists for, over every arrival order: A writes at epoch
/// 1 and is paused; B is granted epoch 2, writes twice, never hearing of A's
/// late write; A, waking up unaware, writes again at epoch 1. C, meanwhile,
/// wrote at epoch 1 having seen A's first write only. Every order ends on
/// B's second write, with no conflict: B's own two writes are a causal chain
/// whichever stale versions arrived between them.
#[test]
fn a_paused_holder_never_overwrites_the_new_one_in_any_order() {
    let mut a = Replica::new("a".into());
    let mut b = Replica::new("b".into());
    let mut c = Replica::new("c".into());
    a.write(1);
    b.learn(&a);
    c.learn(&a);
    c.write(1);
    b.write(2);
    a.write(1);
    b.write(2);
    a.write(1);
    let versions = [a.applied.clone(), b.applied[1..].to_vec(), c.applied[1..].to_vec()].concat();
    assert_eq!(versions.len(), 6);
    for order in permutations(&versions) {
        let replica = receive_all(order);
        let row = &replica.row.as_ref().unwrap().version;
        assert_eq!(row.row, "b#2@2");
        assert!(replica.open.is_empty(), "{:?}", replica.open.keys());
    }
}
