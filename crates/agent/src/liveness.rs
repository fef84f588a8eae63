//! Whether the awake machine is doing the role's work. Holding the role
//! while messages silently stop is as bad as nobody holding it, so a holder
//! that has got nothing done for longer than a bound while work waits (or
//! whose Telegram polls all fail) hands the role to a standby, saying why.
//! Time is passed in as ages, measured by the caller.

use std::time::Duration;

/// What the holder knows about its own progress, as ages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// How long this machine has held the role at its current epoch.
    pub held_for: Duration,
    /// Since the handler last answered or a channel last took a reply.
    pub since_progress: Option<Duration>,
    /// Messages not yet answered or not yet sent.
    pub waiting: usize,
    /// Since a Telegram poll last succeeded here: `None` without a bot,
    /// `Some(None)` if none has yet.
    pub since_poll: Option<Option<Duration>>,
}

/// Why the holder should hand the role over, if it should: nothing done for
/// longer than `bound` since it took the role or last got something done.
pub fn stuck(progress: &Progress, bound: Duration) -> Option<String> {
    let quiet = |since: Option<Duration>| since.map_or(progress.held_for, |s| s.min(progress.held_for));
    let idle = quiet(progress.since_progress);
    if progress.waiting > 0 && idle > bound {
        return Some(format!(
            "no handler answer and no reply taken for {} s while {} messages wait",
            idle.as_secs(),
            progress.waiting
        ));
    }
    let unpolled = quiet(progress.since_poll?);
    (unpolled > bound).then(|| format!("no Telegram poll answered for {} s", unpolled.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_holder_is_stuck_only_when_work_waits_past_the_bound_since_it_took_the_role_or_last_progressed() {
        let idle = Progress { held_for: secs(600), since_progress: Some(secs(300)), waiting: 0, since_poll: None };
        assert_eq!(stuck(&idle, BOUND), None, "nothing waits");
        let waiting = Progress { waiting: 4, ..idle };
        let why = stuck(&waiting, BOUND).unwrap();
        assert!(why.contains("300 s while 4 messages wait"), "{why}");
        let fresh = Progress { held_for: secs(30), ..waiting };
        assert_eq!(stuck(&fresh, BOUND), None, "the role was taken 30 s ago");
        let never = Progress { held_for: secs(61), since_progress: None, ..waiting };
        assert!(stuck(&never, BOUND).is_some());
        let busy = Progress { since_progress: Some(secs(2)), ..waiting };
        assert_eq!(stuck(&busy, BOUND), None);
    }

    #[test]
    fn a_holder_whose_polls_all_fail_is_stuck() {
        let polling =
            Progress { held_for: secs(600), since_progress: None, waiting: 0, since_poll: Some(Some(secs(5))) };
        assert_eq!(stuck(&polling, BOUND), None);
        let failing = Progress { since_poll: Some(Some(secs(90))), ..polling };
        assert!(stuck(&failing, BOUND).unwrap().contains("no Telegram poll answered for 90 s"));
        let never = Progress { since_poll: Some(None), held_for: secs(61), ..polling };
        assert!(stuck(&never, BOUND).is_some());
    }
}
