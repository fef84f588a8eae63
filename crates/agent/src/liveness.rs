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
    /// Since there have been messages waiting without a break.
    pub waiting_for: Duration,
    /// How long this machine's Telegram polls have been failing, one after
    /// another (a long poll held open is not failing); `None` when they are
    /// not, or without a bot.
    pub polls_failing_for: Option<Duration>,
}

/// Why the holder should hand the role over, if it should: nothing done for
/// longer than `bound` while work waited, counted from when it took the
/// role, last got something done or work began to wait, whichever is last.
pub fn stuck(progress: &Progress, bound: Duration) -> Option<String> {
    let since = progress.held_for.min(progress.waiting_for);
    let idle = progress.since_progress.map_or(since, |s| s.min(since));
    if progress.waiting > 0 && idle > bound {
        let waiting = match progress.waiting {
            1 => "1 message waits".to_string(),
            n => format!("{n} messages wait"),
        };
        return Some(format!("no handler answer and no reply taken for {} s while {waiting}", idle.as_secs()));
    }
    let failing = progress.polls_failing_for?.min(progress.held_for);
    (failing > bound).then(|| format!("every Telegram poll has failed for {} s", failing.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn quiet() -> Progress {
        Progress {
            held_for: secs(600),
            since_progress: Some(secs(300)),
            waiting: 0,
            waiting_for: secs(0),
            polls_failing_for: None,
        }
    }

    #[test]
    fn a_holder_is_stuck_only_when_work_waits_past_the_bound_with_nothing_done() {
        assert_eq!(stuck(&quiet(), BOUND), None, "nothing waits");
        let waiting = Progress { waiting: 4, waiting_for: secs(400), ..quiet() };
        let why = stuck(&waiting, BOUND).unwrap();
        assert!(why.contains("300 s while 4 messages wait"), "{why}");
        let one = Progress { waiting: 1, ..waiting };
        assert!(stuck(&one, BOUND).unwrap().ends_with("while 1 message waits"));
        let just_came = Progress { waiting_for: secs(1), ..waiting };
        assert_eq!(stuck(&just_came, BOUND), None, "a message that came after a quiet hour");
        let fresh = Progress { held_for: secs(30), ..waiting };
        assert_eq!(stuck(&fresh, BOUND), None, "the role was taken 30 s ago");
        let never = Progress { held_for: secs(61), since_progress: None, ..waiting };
        assert!(stuck(&never, BOUND).is_some());
        let busy = Progress { since_progress: Some(secs(2)), ..waiting };
        assert_eq!(stuck(&busy, BOUND), None);
    }

    #[test]
    fn a_holder_whose_polls_all_fail_is_stuck() {
        assert_eq!(stuck(&quiet(), BOUND), None, "a long poll held open is no failure");
        let briefly = Progress { polls_failing_for: Some(secs(5)), ..quiet() };
        assert_eq!(stuck(&briefly, BOUND), None);
        let failing = Progress { polls_failing_for: Some(secs(90)), ..quiet() };
        assert!(stuck(&failing, BOUND).unwrap().contains("every Telegram poll has failed for 90 s"));
        let fresh = Progress { held_for: secs(30), ..failing };
        assert_eq!(stuck(&fresh, BOUND), None, "counted from when the role was taken");
    }
}
