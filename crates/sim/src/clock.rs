//! A machine's clock: its own origin and its own rate. Nodes only ever read
//! their local clock; true time belongs to the simulator and the checker.

use std::time::Duration;

/// `local = origin + true_time × (1 + skew_ppm / 10⁶)`. The lease core
/// promises safety for rates within `Tenure::drift_ppm` of true time, so the
/// simulator draws `skew_ppm` within that bound (often at its very edges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub origin: u64,
    pub skew_ppm: i64,
}

impl Clock {
    /// The local reading at true time `now` (nanoseconds).
    pub fn read(&self, now: u64) -> Duration {
        let t = i128::from(now);
        let local = i128::from(self.origin) + t + t * i128::from(self.skew_ppm) / 1_000_000;
        Duration::from_nanos(local as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_gains_and_a_slow_one_loses() {
        let fast = Clock { origin: 5, skew_ppm: 10_000 };
        let slow = Clock { origin: 0, skew_ppm: -10_000 };
        assert_eq!(fast.read(1_000_000_000), Duration::from_nanos(1_010_000_005));
        assert_eq!(slow.read(1_000_000_000), Duration::from_millis(990));
    }
}
