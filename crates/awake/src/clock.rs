//! The lease's clock: time since boot, counting suspended time.
//!
//! `std::time::Instant` is CLOCK_MONOTONIC, which stops while a laptop
//! sleeps: a holder suspended mid-lease would wake believing its lease still
//! had time left. CLOCK_BOOTTIME keeps counting through suspend, and like
//! MONOTONIC it never jumps with wall-clock changes. It is also one clock for
//! every process on a machine, so event logs of several processes compare.

use std::time::Duration;

pub fn now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on
    // every Linux this runs on, and the call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_BOOTTIME is readable");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
