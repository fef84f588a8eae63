//! Cached summaries of the other instances, so the agent and the Nest can
//! choose where to look without asking every machine: each one's projects
//! and memory counts (refreshed hourly by default) and health (every five
//! minutes). A cache whose last refresh failed, or that is older than its
//! interval allows, is marked stale, never shown as current.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

/// How soon a failed refresh is tried again (unless the interval is shorter).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// One cached value and how fresh it is.
#[derive(Debug, Clone)]
pub struct Cached<T> {
    value: Option<T>,
    /// When the value was fetched, on this process's monotonic clock and as
    /// wall-clock text for people.
    fetched: Option<(Instant, String)>,
    last_error: Option<String>,
    last_attempt: Option<Instant>,
    in_flight: bool,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached { value: None, fetched: None, last_error: None, last_attempt: None, in_flight: false }
    }
}

/// A cached value as shown.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness<T> {
    pub value: Option<T>,
    pub fetched_at: Option<String>,
    pub age_secs: Option<u64>,
    /// True unless the value is present, its last refresh succeeded and it is
    /// within its interval (plus slack for the refresh itself).
    pub stale: bool,
    pub last_error: Option<String>,
}

impl<T> Freshness<T> {
    /// A value read just now (this instance's own facts).
    pub fn current(value: T) -> Freshness<T> {
        Freshness {
            value: Some(value),
            fetched_at: Some(roost_store::now_text()),
            age_secs: Some(0),
            stale: false,
            last_error: None,
        }
    }
}

impl<T: Clone> Cached<T> {
    /// Whether a refresh should start now: once per interval, or sooner
    /// (after [`RETRY_AFTER_FAILURE`]) while the last one failed.
    pub fn due(&self, now: Instant, interval: Duration) -> bool {
        let wait = if self.last_error.is_some() { interval.min(RETRY_AFTER_FAILURE) } else { interval };
        !self.in_flight && self.last_attempt.is_none_or(|at| now.duration_since(at) >= wait)
    }

    pub fn begin(&mut self, now: Instant) {
        self.in_flight = true;
        self.last_attempt = Some(now);
    }

    pub fn finish<E: std::fmt::Display>(&mut self, now: Instant, wall: String, outcome: Result<T, E>) {
        self.in_flight = false;
        match outcome {
            Ok(value) => {
                self.value = Some(value);
                self.fetched = Some((now, wall));
                self.last_error = None;
            }
            Err(e) => self.last_error = Some(e.to_string()),
        }
    }

    pub fn show(&self, now: Instant, interval: Duration) -> Freshness<T> {
        let age = self.fetched.as_ref().map(|(at, _)| now.duration_since(*at));
        let slack = (interval / 10).max(Duration::from_secs(5));
        Freshness {
            value: self.value.clone(),
            fetched_at: self.fetched.as_ref().map(|(_, wall)| wall.clone()),
            age_secs: age.map(|a| a.as_secs()),
            stale: self.last_error.is_some() || age.is_none_or(|a| a > interval + slack),
            last_error: self.last_error.clone(),
        }
    }
}

/// What the agent needs to choose an instance: its projects and how many
/// memories it holds, by category.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub memories: u64,
    pub by_category: Map<String, Value>,
    pub projects: Vec<ProjectRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectRef {
    pub id: String,
    pub name: String,
}

impl Summary {
    /// Builds a summary from the answers of `roost_memory_stats` and
    /// `roost_list_projects`.
    pub fn from_answers(stats: &Value, projects: &Value) -> Summary {
        Summary {
            memories: stats["total"].as_u64().unwrap_or(0),
            by_category: stats["by_category"].as_object().cloned().unwrap_or_default(),
            projects: projects["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| ProjectRef {
                    id: p["id"].as_str().unwrap_or_default().to_string(),
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                })
                .collect(),
        }
    }
}

/// The cached facts of one instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceCache {
    pub summary: Cached<Summary>,
    pub health: Cached<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn fresh_then_stale_by_age_and_by_failure() {
        let start = Instant::now();
        let mut cache: Cached<u32> = Cached::default();
        assert!(cache.show(start, HOUR).stale, "never fetched");
        assert!(cache.due(start, HOUR));
        cache.begin(start);
        assert!(!cache.due(start, HOUR), "one refresh at a time");
        cache.finish(start, "t0".into(), Ok::<_, &str>(7));
        let shown = cache.show(start + Duration::from_secs(60), HOUR);
        assert_eq!((shown.value, shown.stale, shown.age_secs), (Some(7), false, Some(60)));
        assert!(cache.show(start + HOUR * 2, HOUR).stale, "too old");
        assert!(cache.due(start + HOUR, HOUR));
        cache.begin(start + HOUR);
        cache.finish(start + HOUR, "t1".into(), Err("unreachable"));
        let shown = cache.show(start + HOUR, HOUR);
        assert_eq!((shown.value, shown.stale), (Some(7), true), "the old value stays, marked stale");
        assert_eq!(shown.fetched_at.as_deref(), Some("t0"));
        assert!(!cache.due(start + HOUR + Duration::from_secs(29), HOUR));
        assert!(cache.due(start + HOUR + RETRY_AFTER_FAILURE, HOUR), "a failure is retried sooner");
    }
}
