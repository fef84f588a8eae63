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

    /// How long `ip` must wait before trying again, if it is blocked now.
    pub(crate) fn wait(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures();
        let recent = failures.get_mut(&ip)?;
        while recent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            recent.pop_front();
        }
        if recent.len() < MAX_FAILURES {
            return None;
        }
        recent.front().map(|oldest| WINDOW.saturating_sub(now.duration_since(*oldest)).max(Duration::from_secs(1)))
    }

    pub(crate) fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures();
        failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        failures.entry(ip).or_default().push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_allowed_failures() {
        let throttle = Throttle::default();
        let (ip, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert_eq!(throttle.wait(ip), None);
            throttle.failed(ip);
        }
        let wait = throttle.wait(ip).expect("blocked");
        assert!(wait <= WINDOW && wait >= Duration::from_secs(1), "{wait:?}");
        assert_eq!(throttle.wait(other), None, "other addresses are not affected");
    }
}
