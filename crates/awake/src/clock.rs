//! The lease's clock: time since boot, counting suspended time.
//!
//! `std::time::Instant` is CLOCK_MONOTONIC, which stops while a laptop
//! sleeps: a holder suspended mid-lease would wake believing its lease still
//! had time left. CLOCK_BOOTTIME keeps counting through suspend, and like
//! MONOTONIC it never jumps with wall-clock changes. It is also one clock for
//! every process on a machine, so event logs of several processes compare.
//! On macOS, CLOCK_MONOTONIC is that clock already: it counts through sleep
//! (CLOCK_UPTIME_RAW is the one that stops).

use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

#[cfg(any(target_os = "linux", target_os = "android"))]
const THROUGH_SUSPEND: ClockId = ClockId::Boottime;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const THROUGH_SUSPEND: ClockId = ClockId::Monotonic;

pub fn now() -> Duration {
    let ts = clock_gettime(THROUGH_SUSPEND);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
