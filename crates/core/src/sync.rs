//! The conflict rules of replication, as pure functions.
//!
//! Every version of a synced row carries a **version vector**: for each origin
//! that wrote the row, the log sequence number of its latest entry this
//! version includes. A write based on version V gets V's vector plus its own
//! entry. Comparing vectors tells "newer" from "concurrent" — Lamport order
//! alone cannot — so a causal chain of edits across machines never raises a
//! false conflict.
//!
//! Rules, identical on every replica:
//! - an incoming version whose vector is covered by the local one is already
//!   known and changes nothing;
//! - one whose vector covers the local one replaces it;
//! - otherwise the two are concurrent: the higher `(lamport, origin)` wins,
//!   the row takes the winner's data and the merge of both vectors, and the
//!   loser is kept as an open conflict;
//! - an open conflict is superseded once a version whose own vector covers
//!   the loser's is applied (a resolution is such a write).
//!
//! A version may carry the lease **epoch** it was written under (rows of
//! [`crate::Table::agent_owned`] tables, written only by the machine holding
//! the lease). Versions that both carry one are ranked by epoch before
//! anything else, so a machine that wrongly believes it still holds the lease
//! cannot overwrite what the real holder wrote, however its entries are
//! delayed:
//! - an incoming version from a higher epoch than the row's replaces it
//!   outright: no conflict, and every open conflict of the row is superseded
//!   (all its losers are from lower epochs);
//! - one from a lower epoch is **fenced**: it takes its place in the log like
//!   any entry, and changes nothing else — not the row, not its vector, not
//!   its conflicts;
//! - within one epoch the rules above apply unchanged.
//!
//! The row's vector restarts from the winning version's own vector when the
//! epoch rises, and never absorbs a fenced version's: within an epoch it is
//! then exactly the vector the epoch's versions alone would give, so replicas
//! holding the same versions hold the same vector, whichever lower-epoch
//! versions each received and in what order. Merging those in would leave a
//! replica that received a stale version before the epoch rose with a vector
//! others lack, and a later version of the epoch, whose writer never saw the
//! stale one, would be judged concurrent with the row there and newer
//! elsewhere.
//!
//! Entries are applied in causal order ([`ready`]): an entry waits until its
//! origin's previous entries and every version its vector names are applied.
//! With that, all replicas that applied the same entries hold the same rows
//! and the same open conflicts, whatever the delivery order.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::Lamport;

/// Origin instance id → sequence number of its latest entry included.
pub type VersionVector = BTreeMap<String, u64>;

/// How two versions relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// The first is an ancestor of the second.
    Before,
    /// The first descends from the second.
    After,
    Concurrent,
}

pub fn compare(a: &VersionVector, b: &VersionVector) -> Causality {
    let get = |v: &VersionVector, k: &str| v.get(k).copied().unwrap_or(0);
    let (mut less, mut more) = (false, false);
    for key in a.keys().chain(b.keys()) {
        let (x, y) = (get(a, key), get(b, key));
        less |= x < y;
        more |= x > y;
    }
    match (less, more) {
        (false, false) => Causality::Equal,
        (true, false) => Causality::Before,
        (false, true) => Causality::After,
        (true, true) => Causality::Concurrent,
    }
}

/// Whether `a` includes everything `b` does.
pub fn covers(a: &VersionVector, b: &VersionVector) -> bool {
    matches!(compare(a, b), Causality::Equal | Causality::After)
}

/// The component-wise maximum.
pub fn merge(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = a.clone();
    for (k, v) in b {
        let slot = out.entry(k.clone()).or_insert(0);
        *slot = (*slot).max(*v);
    }
    out
}

/// One version of a row: who wrote it, at which log position and stamp,
/// what it had seen, its lease epoch (agent-owned rows only), and the row
/// itself (opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub origin: String,
    pub seq: u64,
    pub lamport: Lamport,
    pub vector: VersionVector,
    pub epoch: Option<u64>,
    pub row: String,
}

impl Version {
    /// The total order that picks winners: higher Lamport, then origin id.
    pub fn outranks(&self, other: &Version) -> bool {
        (self.lamport, &self.origin) > (other.lamport, &other.origin)
    }

    /// How this version's epoch compares with `other`'s; `None` unless both
    /// have one, and then only the causal rules apply.
    pub fn epoch_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.epoch?.cmp(&other.epoch?))
    }
}

/// The vector of a new local write based on `current` (if the row exists).
pub fn next_vector(current: Option<&VersionVector>, origin: &str, seq: u64) -> VersionVector {
    let mut vector = current.cloned().unwrap_or_default();
    vector.insert(origin.to_string(), seq);
    vector
}

/// A row as a replica holds it: the version whose data it shows, and the
/// vector of everything it has absorbed (the version's own vector merged with
/// those of the concurrent versions it beat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowState {
    pub version: Version,
    pub vector: VersionVector,
}

impl RowState {
    pub fn new(version: Version) -> RowState {
        RowState { vector: version.vector.clone(), version }
    }
}

/// What applying an incoming version does to the local row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already included locally: nothing changes.
    Known,
    /// Causally newer (or the row is new): the row becomes the incoming version.
    Replace(RowState),
    /// Concurrent: the row becomes `state`; `loser` (with its own vector) is
    /// kept as an open conflict.
    Conflict { state: RowState, loser: Version },
    /// From a lower epoch than the row's version: recorded in the log only;
    /// the row, its vector and its conflicts stay as they are.
    Fenced,
}

/// Decides how `incoming` meets the row's current state.
pub fn resolve(local: Option<&RowState>, incoming: &Version) -> Outcome {
    let Some(local) = local else { return Outcome::Replace(RowState::new(incoming.clone())) };
    match incoming.epoch_cmp(&local.version) {
        Some(Ordering::Greater) => return Outcome::Replace(RowState::new(incoming.clone())),
        Some(Ordering::Less) => return Outcome::Fenced,
        Some(Ordering::Equal) | None => {}
    }
    match compare(&incoming.vector, &local.vector) {
        Causality::Equal | Causality::Before => Outcome::Known,
        Causality::After => Outcome::Replace(RowState::new(incoming.clone())),
        Causality::Concurrent => {
            let vector = merge(&local.vector, &incoming.vector);
            let (winner, loser) = if incoming.outranks(&local.version) {
                (incoming.clone(), local.version.clone())
            } else {
                (local.version.clone(), incoming.clone())
            };
            Outcome::Conflict { state: RowState { version: winner, vector }, loser }
        }
    }
}

/// Whether applying `version` (not fenced) closes the open conflict whose
/// losing version is `loser`: it was written having seen the loser, or it is
/// from a later epoch, which outranks the loser whatever it had seen.
pub fn supersedes(version: &Version, loser: &Version) -> bool {
    (version.origin != loser.origin || version.seq != loser.seq)
        && (covers(&version.vector, &loser.vector) || version.epoch_cmp(loser) == Some(Ordering::Greater))
}

/// Whether an entry at `seq` from `origin` whose version vector is `vector`
/// can be applied on a replica whose per-origin log heads are `heads`: its
/// origin's previous entry is applied, so is every version it names, and the
/// vector names the entry itself (a vector that claims more or less of its
/// own origin is malformed and never becomes ready).
pub fn ready(origin: &str, seq: u64, vector: &VersionVector, heads: &BTreeMap<String, u64>) -> bool {
    let head = |o: &str| heads.get(o).copied().unwrap_or(0);
    head(origin) + 1 == seq
        && vector.get(origin) == Some(&seq)
        && vector.iter().all(|(o, s)| o == origin || head(o) >= *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn version(origin: &str, seq: u64, lamport: u64, vector: VersionVector) -> Version {
        Version {
            origin: origin.into(),
            seq,
            lamport: Lamport(lamport),
            vector,
            epoch: None,
            row: format!("{origin}{seq}"),
        }
    }

    fn at_epoch(epoch: u64, version: Version) -> Version {
        Version { epoch: Some(epoch), ..version }
    }

    #[test]
    fn a_causal_chain_across_machines_is_never_a_conflict() {
        let a1 = version("a", 1, 1, vv(&[("a", 1)]));
        let b1 = version("b", 1, 2, next_vector(Some(&a1.vector), "b", 1));
        let a2 = version("a", 2, 3, next_vector(Some(&b1.vector), "a", 2));
        assert_eq!(resolve(Some(&RowState::new(a1)), &b1), Outcome::Replace(RowState::new(b1.clone())));
        assert_eq!(resolve(Some(&RowState::new(b1.clone())), &a2), Outcome::Replace(RowState::new(a2.clone())));
        assert_eq!(resolve(Some(&RowState::new(a2)), &b1), Outcome::Known);
    }

    #[test]
    fn concurrent_edits_pick_the_same_winner_from_either_side() {
        let base = vv(&[("a", 1)]);
        let x = version("a", 2, 5, next_vector(Some(&base), "a", 2));
        let y = version("b", 1, 5, next_vector(Some(&base), "b", 1));
        let from_x = resolve(Some(&RowState::new(x.clone())), &y);
        let from_y = resolve(Some(&RowState::new(y.clone())), &x);
        let (Outcome::Conflict { state: s1, loser: l1 }, Outcome::Conflict { state: s2, loser: l2 }) = (from_x, from_y)
        else {
            panic!("concurrent edits conflict")
        };
        assert_eq!(
            (s1.version.origin.as_str(), l1.origin.as_str()),
            ("b", "a"),
            "a Lamport tie goes to the higher origin"
        );
        assert_eq!(s1, s2, "both sides end in the same state");
        assert_eq!(l1, l2);
        assert_eq!(s1.vector, merge(&x.vector, &y.vector));
    }

    #[test]
    fn a_higher_epoch_replaces_a_concurrent_version_without_a_conflict() {
        let base = at_epoch(1, version("a", 1, 1, vv(&[("a", 1)])));
        let stale = at_epoch(1, version("a", 2, 9, next_vector(Some(&base.vector), "a", 2)));
        let fresh = at_epoch(2, version("b", 1, 2, next_vector(Some(&base.vector), "b", 1)));
        let after_stale = RowState::new(stale.clone());
        assert_eq!(
            resolve(Some(&after_stale), &fresh),
            Outcome::Replace(RowState::new(fresh.clone())),
            "the higher epoch wins despite the lower Lamport stamp, and the vector restarts from its own"
        );
        assert_eq!(resolve(Some(&RowState::new(fresh)), &stale), Outcome::Fenced);
    }

    #[test]
    fn a_lower_epoch_is_fenced_even_when_it_descends_from_the_row() {
        let row = at_epoch(3, version("a", 1, 1, vv(&[("a", 1)])));
        let descendant = at_epoch(2, version("b", 1, 2, next_vector(Some(&row.vector), "b", 1)));
        assert_eq!(resolve(Some(&RowState::new(row)), &descendant), Outcome::Fenced);
    }

    #[test]
    fn equal_epochs_and_rows_without_epochs_keep_the_causal_rules() {
        let base = vv(&[("a", 1)]);
        let x = at_epoch(4, version("a", 2, 5, next_vector(Some(&base), "a", 2)));
        let y = at_epoch(4, version("b", 1, 5, next_vector(Some(&base), "b", 1)));
        let plain = |v: &Version| Version { epoch: None, ..v.clone() };
        let fenced = resolve(Some(&RowState::new(x.clone())), &y);
        let unfenced = resolve(Some(&RowState::new(plain(&x))), &plain(&y));
        let (Outcome::Conflict { state: s1, loser: l1 }, Outcome::Conflict { state: s2, loser: l2 }) =
            (fenced, unfenced)
        else {
            panic!("concurrent versions of one epoch conflict")
        };
        assert_eq!((s1.version.origin, l1.origin, s1.vector), (s2.version.origin, l2.origin, s2.vector));
        let only_one = at_epoch(4, version("c", 1, 1, vv(&[("c", 1)])));
        let other = version("d", 1, 9, vv(&[("d", 1)]));
        assert!(
            matches!(resolve(Some(&RowState::new(only_one)), &other), Outcome::Conflict { .. }),
            "an epoch on one side only ranks nothing"
        );
    }

    #[test]
    fn a_later_epoch_supersedes_conflicts_it_never_saw() {
        let loser = at_epoch(1, version("a", 1, 7, vv(&[("a", 1)])));
        let same_epoch = at_epoch(1, version("b", 1, 8, vv(&[("b", 1)])));
        let later = at_epoch(2, version("c", 1, 1, vv(&[("c", 1)])));
        assert!(!supersedes(&same_epoch, &loser), "concurrent, same epoch: still open");
        assert!(supersedes(&later, &loser));
        assert!(!supersedes(&loser, &loser), "a version never supersedes itself");
        let seen = at_epoch(1, version("b", 2, 9, next_vector(Some(&loser.vector), "b", 2)));
        assert!(supersedes(&seen, &loser));
    }

    #[test]
    fn readiness_waits_for_named_versions() {
        let heads: BTreeMap<String, u64> = vv(&[("a", 2)]);
        assert!(ready("b", 1, &vv(&[("a", 2), ("b", 1)]), &heads));
        assert!(!ready("b", 1, &vv(&[("a", 3), ("b", 1)]), &heads), "a's entry 3 is not here yet");
        assert!(!ready("b", 2, &vv(&[("b", 2)]), &heads), "b's entry 1 is not here yet");
        assert!(!ready("b", 1, &vv(&[("a", 1), ("b", 5)]), &heads), "a vector must name the entry itself");
    }
}
