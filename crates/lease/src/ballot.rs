//! Ballots: a round (the epoch) and the proposer that chose it.

use std::fmt;

/// A machine's instance id.
pub type NodeId = String;

/// Ordered by round, then proposer id. A voter promises a new ballot only when
/// its round is strictly greater than the round it promised before (or it is
/// the very same ballot), so each round is granted to at most one proposer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

impl Ballot {
    pub fn new(round: u64, node: &str) -> Ballot {
        Ballot { round, node: node.to_string() }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {} by {}", self.round, self.node)
    }
}
