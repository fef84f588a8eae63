//! `roost status`: what this instance is and holds, and whether its gateway answers.

use std::time::Duration;

use serde_json::{Value, json};

use roost_instance::Instance;

/// The gateway probe must not hang the command.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

pub fn status(instance: &Instance, as_json: bool) -> anyhow::Result<()> {
    let store = instance.open_store()?;
    let counts = store.counts()?;
    let (lamport, changes) = store.clock()?;
    let bind = &instance.gateway_addr();
    let gateway = probe(bind);
    let report = json!({
        "id": instance.id,
        "name": instance.config.name,
        "home": instance.home,
        "version": env!("CARGO_PKG_VERSION"),
        "roost_id": instance.roost_id().to_string(),
        "machine_key_fingerprint": instance.key_fingerprint(),
        "counts": counts,
        "lamport": lamport.0,
        "change_records": changes,
        "gateway": {"bind": bind, "running": gateway.is_some(), "health": gateway},
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("instance   {} ({})", instance.config.name, instance.id);
    println!("home       {}", instance.home.display());
    println!("chain      {}", instance.roost_id());
    println!("machine    key {}", instance.key_fingerprint());
    println!("clock      lamport {}, {} change records", lamport.0, changes);
    let contents: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("contents   {}", contents.join(", "));
    match gateway {
        Some(h) => println!("gateway    running at http://{bind}, up {}s", h["uptime_seconds"]),
        None => println!("gateway    not answering at http://{bind} (start it with `roost serve`)"),
    }
    Ok(())
}

/// GET /health on the configured address, or None when nothing answers in time.
fn probe(bind: &str) -> Option<Value> {
    crate::http::get(&format!("http://{}/health", bind.replace("0.0.0.0", "127.0.0.1")), PROBE_WAIT).ok()
}
