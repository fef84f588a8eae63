//! The voters of a chain, agreed through the lease itself.
//!
//! A lease is safe only if any two majorities that can grant it overlap. With
//! one fixed set of voters they do; when machines join and leave they need
//! not, so the voter set is a **view** that changes by rules borrowed from
//! Raft's single-server membership changes:
//!
//! * only the holder makes a new view, and only one voter added or removed
//!   from the view it holds, so a majority of the old view and a majority of
//!   the new one always share a voter;
//! * it makes a change only once its current view is **committed** at its own
//!   epoch: held (persisted) by a majority of that view. A new holder first
//!   re-issues the view it found under its epoch and waits for that, which
//!   retires any change a crashed predecessor left half-made (the fix Raft
//!   needed for the same rule);
//! * views are ordered by [`ViewId`] (the epoch of the holder that made it,
//!   then a sequence number); a machine adopts any higher view it hears of,
//!   stores it before answering anything, and never goes back;
//! * a voter answers a lease request only from a proposer holding exactly
//!   its own view, so a grant is always counted by a majority of one view.
//!
//! A machine that joined a chain holds no view until the chain's holder
//! admits it, so it is never awake as a chain of one. The founder of a chain
//! starts from the genesis view (itself alone).

use std::fmt;

use crate::ballot::NodeId;

/// Orders views: by the epoch of the holder that made it, then by its
/// sequence number, then by the digest of its voters (equal only for equal
/// voter lists; two views share an epoch and sequence only after a forced
/// wakeup, and then every machine picks the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewId {
    pub epoch: u64,
    pub seq: u64,
    pub digest: u64,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

/// One set of voters and its place in the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub id: ViewId,
    /// Sorted, without duplicates.
    pub voters: Vec<NodeId>,
}

/// FNV-1a over the sorted voter ids: equal voter lists, equal digests.
fn digest(voters: &[NodeId]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in voters.iter().flat_map(|v| v.bytes().chain([0])) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl View {
    /// A view of `voters` at `epoch` and `seq`.
    pub fn new(epoch: u64, seq: u64, mut voters: Vec<NodeId>) -> View {
        voters.sort();
        voters.dedup();
        View { id: ViewId { epoch, seq, digest: digest(&voters) }, voters }
    }

    /// The first view of a chain: its founder alone.
    pub fn genesis(founder: &str) -> View {
        View::new(0, 1, vec![founder.to_string()])
    }

    pub fn contains(&self, node: &str) -> bool {
        self.voters.iter().any(|v| v == node)
    }

    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The next view made by the holder of `epoch`, with `voters`.
    pub fn next(&self, epoch: u64, voters: Vec<NodeId>) -> View {
        debug_assert!(epoch >= self.id.epoch, "a view is never followed by one from an older epoch");
        let view = View::new(epoch, self.id.seq + 1, voters);
        assert!(
            self.voters.iter().filter(|v| !view.contains(v)).count()
                + view.voters.iter().filter(|v| !self.contains(v)).count()
                <= 1,
            "a view changes by one voter at a time"
        );
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn views_are_ordered_by_epoch_before_sequence() {
        let a = View::new(1, 9, ids(&["a", "b"]));
        let b = View::new(2, 1, ids(&["a"]));
        assert!(a.id < b.id);
        assert_eq!(View::new(3, 1, ids(&["b", "a", "a"])).voters, ids(&["a", "b"]));
    }

    #[test]
    fn equal_voter_lists_have_equal_digests() {
        assert_eq!(View::new(1, 1, ids(&["b", "a"])).id.digest, View::new(1, 1, ids(&["a", "b"])).id.digest);
        assert_ne!(View::new(1, 1, ids(&["a", "b"])).id, View::new(1, 1, ids(&["a", "c"])).id);
    }

    #[test]
    fn majorities_of_views_one_change_apart_overlap() {
        for n in 1..8usize {
            let names: Vec<NodeId> = (0..=n).map(|i| format!("m{i}")).collect();
            let old = View::new(1, 1, names[..n].to_vec());
            let grown = old.next(1, names.clone());
            let shrunk = old.next(1, names[1..n].to_vec());
            for new in [grown, shrunk] {
                // Two majorities can be disjoint only if together they fit
                // into the union of the two views.
                let union = old.voters.iter().chain(&new.voters).collect::<std::collections::BTreeSet<_>>().len();
                assert!(old.majority() + new.majority() > union, "n = {n}: {:?} -> {:?}", old.voters, new.voters);
            }
        }
    }

    #[test]
    #[should_panic(expected = "one voter at a time")]
    fn a_view_never_changes_by_two() {
        View::new(1, 1, ids(&["a"])).next(1, ids(&["a", "b", "c"]));
    }
}
