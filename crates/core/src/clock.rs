//! The Lamport clock.
//!
//! The counter itself is persisted by the store and advanced inside the write
//! transaction; this type only holds the rules, so they are the same wherever
//! the counter lives.

use serde::{Deserialize, Serialize};

/// A Lamport timestamp. Strictly increases with every local write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lamport(pub u64);

impl Lamport {
    /// The stamp for the next local event.
    #[must_use]
    pub fn tick(self) -> Lamport {
        Lamport(self.0.checked_add(1).expect("Lamport clock overflow"))
    }

    /// The clock after receiving an event stamped `remote`: max(local, remote) + 1.
    #[must_use]
    pub fn observe(self, remote: Lamport) -> Lamport {
        self.max(remote).tick()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_and_observe_never_go_backwards() {
        let local = Lamport(5);
        assert_eq!(local.tick(), Lamport(6));
        assert_eq!(local.observe(Lamport(9)), Lamport(10));
        assert_eq!(local.observe(Lamport(2)), Lamport(6));
    }
}
