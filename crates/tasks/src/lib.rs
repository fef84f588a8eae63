//! How the async shell runs work, in two rules.
//!
//! - Every background task belongs to a [`Tasks`] group. Stopping the group
//!   cancels every task at its next await point and waits, a bounded time,
//!   until each has ended: nothing of a stopped service keeps running.
//! - Every blocking call (SQLite, files, system calls that may wait) runs off
//!   the async threads through [`blocking`], and nobody waits for it longer
//!   than its bound. A call that overruns keeps its blocking thread until it
//!   returns; the caller has moved on with [`Blocked::TimedOut`].

use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a blocking call gave no result.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Blocked {
    #[error("{what} did not finish within {limit:?}")]
    TimedOut { what: &'static str, limit: Duration },
    #[error("{what} failed: {reason}")]
    Panicked { what: &'static str, reason: String },
}

/// Runs `work` on the blocking pool and waits for it at most `limit`.
/// `what` names the work in the error ("the registry read").
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Blocked> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(Blocked::Panicked { what, reason: join.to_string() }),
        Err(_) => Err(Blocked::TimedOut { what, limit }),
    }
}

/// A group of background tasks that stop together.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// A group of its own, for tasks waited for separately, that stops when
    /// this one stops.
    pub fn child(&self) -> Tasks {
        Tasks { tracker: TaskTracker::new(), cancel: self.cancel.child_token() }
    }

    /// Runs `task` until it ends or the group stops, whichever comes first.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Cancelled when the group stops; for work that must wind down itself.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Cancels every task without waiting (for `Drop`).
    pub fn cancel(&self) {
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Waits at most `grace` for every task to end by itself, cancelling
    /// none; false if some were still running then.
    pub async fn finish(&self, grace: Duration) -> bool {
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        self.tracker.reopen();
        finished
    }

    /// Cancels every task and waits at most `grace` for all to end; false
    /// if some were still running then.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.cancel();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stop_ends_every_task_and_runs_their_drops() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let tasks = Tasks::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        tasks.spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert!(dropped.load(Ordering::SeqCst));
        assert!(tasks.token().is_cancelled());
    }

    #[tokio::test]
    async fn a_task_spawned_after_stop_does_not_run() {
        let tasks = Tasks::new();
        assert!(tasks.stop(Duration::from_secs(1)).await);
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        tasks.spawn(async move { seen.store(true, Ordering::SeqCst) });
        assert!(tasks.stop(Duration::from_secs(1)).await);
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn finish_waits_for_tasks_without_cancelling_them() {
        let tasks = Tasks::new();
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen.store(true, Ordering::SeqCst);
        });
        assert!(tasks.finish(Duration::from_secs(5)).await);
        assert!(ran.load(Ordering::SeqCst));
        assert!(!tasks.token().is_cancelled());
        tasks.spawn(std::future::pending());
        assert!(!tasks.finish(Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn blocking_work_is_bounded_and_panics_are_errors() {
        assert_eq!(blocking("sum", Duration::from_secs(5), || 2 + 2).await, Ok(4));
        let slow =
            blocking("a slow read", Duration::from_millis(20), || std::thread::sleep(Duration::from_millis(500)));
        assert!(matches!(slow.await, Err(Blocked::TimedOut { what: "a slow read", .. })));
        let broken = blocking("a broken read", Duration::from_secs(5), || panic!("torn"));
        assert!(matches!(broken.await, Err(Blocked::Panicked { what: "a broken read", .. })));
    }
}
