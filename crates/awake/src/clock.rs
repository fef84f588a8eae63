//! The lease's clock: time since boot, counting suspended time.
//!
//! `std::time::Instant` is CLOCK_MONOTONIC, which stops while a laptop
//! sleeps: a holder suspended mid-lease would wake believing its lease still
//! had time left. CLOCK_BOOTTIME keeps counting through suspend, and like
//! MONOTONIC it never jumps with wall-clock changes. It is also one clock for
//! every process on a machine, so event logs of several processes compare.

use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

pub fn now() -> Duration {
    let ts = clock_gettime(ClockId::Boottime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
