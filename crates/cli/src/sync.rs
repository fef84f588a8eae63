//! `roost sync status|wait`: replication as the running gateway sees it.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;

use roost_instance::Instance;

use crate::out::{self, say};

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Each peer: online, syncing, offline or unknown; last sync; entries behind and ahead.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Wait until this instance and its peers hold the same entries.
    Wait {
        /// Only this peer (name or id).
        #[arg(long)]
        peer: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

const POLL: Duration = Duration::from_millis(200);

fn fetch(instance: &Instance) -> anyhow::Result<Value> {
    crate::http::local(&instance.home, "/api/v1/sync/status", None, crate::http::WAIT)
        .map_err(|e| anyhow::anyhow!("{e:#}; replication runs inside `roost serve`"))
}

fn peers(status: &Value) -> Vec<Value> {
    status["peers"].as_array().cloned().unwrap_or_default()
}

pub fn run(instance: &Instance, command: SyncCommand) -> anyhow::Result<()> {
    match command {
        SyncCommand::Status { json } => {
            let status = fetch(instance)?;
            if json {
                out::json(&status)?;
                return Ok(());
            }
            say!("open conflicts: {}", status["open_conflicts"])?;
            for p in peers(&status) {
                let text = |v: &Value, absent| out::field(v.as_str().unwrap_or(absent)).into_owned();
                let mut at = p["address"].as_str().map(|a| format!("  at {}", out::field(a))).unwrap_or_default();
                if let (Some(path), Some(rtt)) = (p["path"].as_str(), p["rtt_ms"].as_f64()) {
                    at.push_str(&format!(" ({path}, {rtt:.1} ms)"));
                }
                say!(
                    "{:<16} {:<10} behind {:>6}  ahead {:>6}  last sync {}{at}{}",
                    text(&p["name"], ""),
                    text(&p["state"], ""),
                    p["behind"],
                    p["ahead"],
                    text(&p["last_sync"], "never"),
                    p["last_error"].as_str().map(|e| format!("  ({})", out::field(e))).unwrap_or_default()
                )?;
            }
            Ok(())
        }
        SyncCommand::Wait { peer, timeout } => wait(instance, peer.as_deref(), Duration::from_secs(timeout)),
    }
}

fn wait(instance: &Instance, peer: Option<&str>, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} entries")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let store = instance.open_store()?;
    let mut most_behind = 0u64;
    loop {
        let status = fetch(instance)?;
        let targets: Vec<Value> = peers(&status)
            .into_iter()
            .filter(|p| p["state"] != "revoked")
            .filter(|p| peer.is_none_or(|want| p["id"] == want || p["name"] == want))
            .collect();
        if let Some(want) = peer
            && targets.is_empty()
        {
            bail!("no registered peer is named or has id {want:?}; see `roost machines`");
        }
        let behind: u64 = targets.iter().map(|p| p["behind"].as_u64().unwrap_or(0)).sum();
        let settled = !targets.is_empty()
            && targets.iter().all(|p| p["state"] == "online" && p["behind"] == 0 && p["ahead"] == 0);
        most_behind = most_behind.max(behind);
        bar.set_length(most_behind);
        bar.set_position(most_behind - behind);
        bar.set_message("catching up");
        // A large catch-up rebuilds the search index at its end: in sync
        // means searchable too.
        let indexing = settled && store.search_index_deferred()?;
        if indexing {
            bar.set_message("rebuilding the search index");
        }
        if settled && !indexing {
            bar.finish_and_clear();
            say!("in sync with {} peer(s)", targets.len())?;
            return Ok(());
        }
        if started.elapsed() >= limit && indexing {
            bar.finish_and_clear();
            bail!(
                "in sync, but the search index is still being rebuilt after {}s; search answers once it is",
                limit.as_secs()
            );
        }
        if started.elapsed() >= limit {
            bar.finish_and_clear();
            let waiting: Vec<String> = targets
                .iter()
                .filter(|p| p["state"] != "online")
                .map(|p| {
                    format!("{} ({})", p["name"].as_str().unwrap_or_default(), p["state"].as_str().unwrap_or_default())
                })
                .collect();
            bail!(
                "not in sync after {}s: {}; check `roost sync status`",
                limit.as_secs(),
                if waiting.is_empty() { "no peer connected".to_string() } else { waiting.join(", ") }
            );
        }
        std::thread::sleep(POLL);
    }
}
