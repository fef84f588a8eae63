//! Topic stamps: the epochs a topic's reply records are written under.
//!
//! A stamp is the lease epoch of the coordinator that granted the topic,
//! then that coordinator's sequence, above a flag bit: so stamps of a later
//! coordinator outrank all of an earlier one's, and every topic stamp
//! outranks a plain lease epoch (what a reply record carries while the pool
//! is off), in the one integer the store ranks versions by.

/// Set in every topic stamp and in no lease epoch.
pub const TOPIC_FLAG: u64 = 1 << 62;
const SEQ_BITS: u32 = 24;
const EPOCH_BITS: u32 = 62 - SEQ_BITS;

/// The stamp of the `seq`th grant by the coordinator of lease epoch
/// `lease_epoch`.
pub fn topic_stamp(lease_epoch: u64, seq: u64) -> u64 {
    assert!(lease_epoch < 1 << EPOCH_BITS, "lease epoch {lease_epoch} is beyond what a topic stamp holds");
    assert!(seq < 1 << SEQ_BITS, "a coordinator granted more than 2^24 topic epochs");
    TOPIC_FLAG | lease_epoch << SEQ_BITS | seq
}

/// Whether `epoch` is a topic stamp rather than a lease epoch.
pub fn is_topic_stamp(epoch: u64) -> bool {
    epoch & TOPIC_FLAG != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stamps_rank_by_coordinator_then_sequence_and_above_every_lease_epoch(
            a in (0u64..1 << 38, 0u64..1 << 24),
            b in (0u64..1 << 38, 0u64..1 << 24),
            plain in 0u64..i64::MAX as u64 >> 1,
        ) {
            prop_assert_eq!(topic_stamp(a.0, a.1).cmp(&topic_stamp(b.0, b.1)), a.cmp(&b));
            prop_assert!(topic_stamp(a.0, a.1) > plain && !is_topic_stamp(plain));
            prop_assert!(is_topic_stamp(topic_stamp(a.0, a.1)));
            prop_assert!(topic_stamp(a.0, a.1) <= i64::MAX as u64, "SQLite keeps it");
        }
    }
}
