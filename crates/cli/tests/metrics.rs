//! `GET /metrics` on a running chain: replication lag that rises while a
//! machine is stopped and falls once it runs again, entries counted where
//! they are applied, a failover counted and timed by the machine that took
//! the role, and token refusals counted by reason.

mod common;

use std::path::PathBuf;

use common::{Served, add, configure, get_text, signal, until};

/// The values of metric `name` on the lines carrying every label of `labels`.
fn samples(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all).then(|| value.parse().ok()).flatten()
        })
        .collect()
}

/// The one value of metric `name` with `labels`, none if the scrape has none.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(scrape, name, labels).first().copied()
}

fn scrape(s: &Served) -> String {
    let (status, text) = get_text(&s.addr, "/metrics", "").expect("scraping /metrics");
    assert_eq!(status, 200, "{text}");
    text
}

fn id_of(s: &Served) -> String {
    s.get("/health").unwrap()["instance_id"].as_str().unwrap().to_string()
}

#[test]
fn metrics_show_lag_rise_and_fall_and_count_the_failover() {
    let dir = tempfile::tempdir().unwrap();
    let setup = |homes: &[PathBuf]| homes.iter().for_each(|h| configure(h, "ttl_ms", "2000"));
    let (homes, mut served) = common::chain_with(dir.path(), &["a", "b", "c"], &[], setup, |_| 0);
    common::until_every_voter_heard(&served, 3);
    let holder = || {
        let mut awake = (0..served.len()).filter(|i| common::lease(&served[*i])["role"] == "awake");
        awake.next()
    };
    until("a holder", || holder().is_some());
    let writer = holder().unwrap();
    let stopped = (writer + 1) % 3;
    let stopped_id = id_of(&served[stopped]);

    // Lag rises while a machine is stopped and the others write…
    signal(&served[stopped].child, "STOP");
    for i in 0..30 {
        add(&homes[writer], &format!("written while a machine sleeps {i}"));
    }
    let ahead = [("peer", stopped_id.as_str()), ("direction", "ahead")];
    until("the writer's metrics show the stopped machine 30 entries short", || {
        sample(&scrape(&served[writer]), "roost_sync_lag_entries", &ahead).is_some_and(|n| n >= 30.0)
    });
    until("the lag in seconds grows", || {
        sample(&scrape(&served[writer]), "roost_sync_lag_seconds", &[("peer", &stopped_id)]).is_some_and(|s| s > 0.5)
    });

    // …and falls to nothing once it runs again.
    signal(&served[stopped].child, "CONT");
    until("the lag falls to zero", || {
        let text = scrape(&served[writer]);
        sample(&text, "roost_sync_lag_entries", &ahead) == Some(0.0)
            && sample(&text, "roost_sync_lag_seconds", &[("peer", &stopped_id)]) == Some(0.0)
    });
    // Each entry is applied once, from whichever peer brought it first.
    let text = scrape(&served[stopped]);
    let applied: f64 = samples(&text, "roost_sync_entries_total", &[("verdict", "applied")]).iter().sum();
    assert!(applied >= 30.0, "{text}");
    assert_eq!(sample(&text, "roost_sync_open_conflicts", &[]), Some(0.0), "{text}");

    // A failover: the machine that takes the role counts and times it.
    let failovers =
        |s: &Served| sample(&scrape(s), "roost_lease_takeovers_total", &[("how", "failover")]).unwrap_or(0.0);
    let before: Vec<f64> = served.iter().map(failovers).collect();
    let epoch = common::lease(&served[writer])["epoch"].as_u64().unwrap();
    assert_eq!(sample(&scrape(&served[writer]), "roost_lease_awake", &[]), Some(1.0));
    let _ = served[writer].child.kill();
    let _ = served[writer].child.wait();
    let rest: Vec<usize> = (0..3).filter(|i| *i != writer).collect();
    until("another machine takes the role", || rest.iter().any(|i| common::lease(&served[*i])["role"] == "awake"));
    let next = *rest.iter().find(|i| common::lease(&served[**i])["role"] == "awake").unwrap();
    let text = scrape(&served[next]);
    assert_eq!(failovers(&served[next]), before[next] + 1.0, "{text}");
    let timed = sample(&text, "roost_lease_takeover_seconds_count", &[("how", "failover")]).unwrap();
    assert!(timed >= 1.0, "{text}");
    assert!(sample(&text, "roost_lease_epoch", &[]).is_some_and(|e| e > epoch as f64), "{text}");
    let takeovers = common::lease(&served[next])["takeovers"].clone();
    let last = takeovers.as_array().and_then(|t| t.last()).cloned().unwrap_or_default();
    assert_eq!(last["how"], "failover", "{takeovers}");
    // At least the TTL passed between the last claim heard and the takeover.
    assert!(last["took_ms"].as_u64().is_some_and(|ms| ms >= 1000), "{takeovers}");

    // /metrics is behind the token check: a bad token is refused, and counted.
    let (status, _) = get_text(&served[next].addr, "/metrics", "Authorization: Bearer nonsense\r\n").unwrap();
    assert_eq!(status, 401);
    let text = scrape(&served[next]);
    assert!(
        sample(&text, "roost_token_refusals_total", &[("reason", "malformed")]).is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // The example dashboard asks only for metrics that exist.
    let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-dashboard.json")).unwrap();
    let asked = dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("roost_"));
    for name in asked {
        let family = ["_bucket", "_total"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        assert!(families.contains(&family), "the dashboard asks for {name}, which /metrics does not serve");
    }
}
