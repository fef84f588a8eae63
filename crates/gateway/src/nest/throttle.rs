//! Login rate limit: after too many failed attempts from one address within
//! a window, further attempts are refused until the oldest failure ages out.
//! Counted in memory; a restart forgets, which an attacker cannot force.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per address within [`WINDOW`].
pub(crate) const MAX_FAILURES: usize = 5;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Throttle(Mutex<HashMap<IpAddr, VecDeque<Instant>>>);

impl Throttle {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts an attempt from `ip` before it is checked (so attempts made in
    /// parallel are all counted), or says how long `ip` must wait. The
    /// returned stamp lets a successful attempt be forgiven.
    pub(crate) fn attempt(&self, ip: IpAddr) -> Result<Instant, Duration> {
        let now = Instant::now();
        let mut failures = self.failures();
        failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        let recent = failures.entry(ip).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            recent.pop_front();
        }
        if let Some(oldest) = recent.front()
            && recent.len() >= MAX_FAILURES
        {
            return Err(WINDOW.saturating_sub(now.duration_since(*oldest)).max(Duration::from_secs(1)));
        }
        recent.push_back(now);
        Ok(now)
    }

    /// Takes back the attempt stamped `at`: it was the right password.
    pub(crate) fn forgive(&self, ip: IpAddr, at: Instant) {
        if let Some(recent) = self.failures().get_mut(&ip) {
            recent.retain(|t| *t != at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_allowed_failures() {
        let throttle = Throttle::default();
        let (ip, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let right = throttle.attempt(ip).expect("first attempt");
        throttle.forgive(ip, right);
        for _ in 0..MAX_FAILURES {
            throttle.attempt(ip).expect("allowed");
        }
        let wait = throttle.attempt(ip).expect_err("blocked");
        assert!(wait <= WINDOW && wait >= Duration::from_secs(1), "{wait:?}");
        assert!(throttle.attempt(other).is_ok(), "other addresses are not affected");
    }
}
