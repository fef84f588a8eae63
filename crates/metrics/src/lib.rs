//! The process's metrics, in Prometheus text format.
//!
//! Events are counted where they happen: the shells (replication, the lease
//! driver, federation, the MCP server, the write door, the token check, the
//! agent) bump the counters and histograms of [`metrics()`], one set per
//! process, since one `roost serve` is one machine. What is a state rather
//! than an event (replication lag, the lease's role and epoch, open
//! conflicts, the agent's queue) is read fresh at each scrape and handed to
//! [`Metrics::encode`] as [`Gauges`], so it is never stale.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Unit;
use prometheus_client::registry::{Metric, Registry};

/// A metric's labels, in order.
pub type Labels = Vec<(&'static str, String)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets from 0.5 ms to about 16 s: a write, a call across machines, a
/// failover all fall inside.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every counter and histogram Roost keeps.
pub struct Metrics {
    /// Replicated entries received, by peer and what became of them
    /// (`applied`, `duplicate`, `held`, `refused`).
    pub entries: Family<Labels, Counter>,
    /// Times this machine took the awake role, by how (`failover`,
    /// `handoff`, `first`), and how long each took.
    pub takeovers: Family<Labels, Counter>,
    pub takeover_seconds: Histograms,
    /// Federated calls to other machines, by peer and outcome.
    pub federation_seconds: Histograms,
    /// MCP tool calls, by tool and outcome (`ok`, `error`).
    pub tool_calls: Family<Labels, Counter>,
    /// Time inside the write door, from taking the lock to the commit.
    pub write_door_seconds: Histogram,
    /// Requests refused for their token, by reason.
    pub token_refusals: Family<Labels, Counter>,
    /// From a message's arrival to its reply being sent.
    pub agent_reply_seconds: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    entries: Family::default(),
    takeovers: Family::default(),
    takeover_seconds: Family::new_with_constructor(latency),
    federation_seconds: Family::new_with_constructor(latency),
    tool_calls: Family::default(),
    write_door_seconds: latency(),
    token_refusals: Family::default(),
    agent_reply_seconds: latency(),
});

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Counts one event under `labels` of a counter family.
pub fn count(family: &Family<Labels, Counter>, labels: &[(&'static str, &str)]) {
    family.get_or_create(&owned(labels)).inc();
}

/// Records a duration under `labels` of a histogram family.
pub fn time(family: &Histograms, labels: &[(&'static str, &str)], took: Duration) {
    family.get_or_create(&owned(labels)).observe(took.as_secs_f64());
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

type Reading = Gauge<f64, AtomicU64>;

/// One gauge of a scrape: plain, or a family by labels.
enum Live {
    One(Reading),
    ByLabels(Family<Labels, Reading>),
}

/// The states read at a scrape, each a gauge with its labels.
#[derive(Default)]
pub struct Gauges {
    gauges: Vec<(&'static str, &'static str, Option<Unit>, Live)>,
}

impl Gauges {
    /// Sets gauge `name` (described by `help`) under `labels` to `value`.
    pub fn set(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.set_in(name, help, None, labels, value);
    }

    /// [`Gauges::set`] for a gauge in `unit` (named with the unit's suffix).
    pub fn set_in(
        &mut self,
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let at = match self.gauges.iter().position(|(n, ..)| *n == name) {
            Some(at) => at,
            None => {
                let live =
                    if labels.is_empty() { Live::One(Reading::default()) } else { Live::ByLabels(Family::default()) };
                self.gauges.push((name, help, unit, live));
                self.gauges.len() - 1
            }
        };
        match &self.gauges[at].3 {
            Live::One(gauge) => gauge.set(value),
            Live::ByLabels(family) => family.get_or_create(&owned(labels)).set(value),
        };
    }
}

impl Metrics {
    /// Every metric, the `live` gauges among them, as Prometheus text.
    pub fn encode(&self, live: Gauges) -> String {
        let mut registry = Registry::with_prefix("roost");
        registry.register("sync_entries", "Replicated entries received, by peer and verdict", self.entries.clone());
        registry.register("lease_takeovers", "Times this machine took the awake role, by how", self.takeovers.clone());
        registry.register_with_unit(
            "lease_takeover",
            "How long taking the role took: a failover from the last claim heard, a handoff from its start",
            Unit::Seconds,
            self.takeover_seconds.clone(),
        );
        registry.register_with_unit(
            "federation_call",
            "Calls to other machines, by peer and outcome",
            Unit::Seconds,
            self.federation_seconds.clone(),
        );
        registry.register("mcp_tool_calls", "MCP tool calls, by tool and outcome", self.tool_calls.clone());
        registry.register_with_unit(
            "write_door",
            "Time in the write door, from the lock to the commit",
            Unit::Seconds,
            self.write_door_seconds.clone(),
        );
        registry.register("token_refusals", "Requests refused for their token, by reason", self.token_refusals.clone());
        registry.register_with_unit(
            "agent_reply",
            "From a message's arrival to its reply being sent",
            Unit::Seconds,
            self.agent_reply_seconds.clone(),
        );
        for (name, help, unit, live) in live.gauges {
            match live {
                Live::One(gauge) => register(&mut registry, name, help, unit, gauge),
                Live::ByLabels(family) => register(&mut registry, name, help, unit, family),
            }
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

fn register(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_live_gauges_are_encoded_together() {
        let metrics = metrics();
        count(&metrics.tool_calls, &[("tool", "roost_store_memory"), ("outcome", "ok")]);
        time(&metrics.federation_seconds, &[("peer", "laptop"), ("outcome", "answered")], Duration::from_millis(3));
        let mut live = Gauges::default();
        live.set("lease_epoch", "The epoch", &[], 3.0);
        live.set("sync_lag_entries", "Entries a peer lacks", &[("peer", "laptop"), ("direction", "ahead")], 7.0);
        live.set("sync_lag_entries", "Entries a peer lacks", &[("peer", "vps"), ("direction", "ahead")], 0.0);
        let text = metrics.encode(live);
        assert!(text.contains("roost_mcp_tool_calls_total{tool=\"roost_store_memory\",outcome=\"ok\"}"), "{text}");
        assert!(text.contains("roost_federation_call_seconds_count{peer=\"laptop\",outcome=\"answered\"} 1"), "{text}");
        assert!(text.contains("roost_sync_lag_entries{peer=\"laptop\",direction=\"ahead\"} 7.0"), "{text}");
        assert!(text.contains("roost_sync_lag_entries{peer=\"vps\",direction=\"ahead\"} 0.0"), "{text}");
        assert!(text.contains("\nroost_lease_epoch 3.0\n"), "a gauge without labels has no braces: {text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
