//! `roost status`: what this instance is and holds, and whether its gateway answers.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use roost_awake::LeaseStatus;
use roost_instance::Instance;

use crate::out::{self, say};

/// The gateway probe must not hang the command.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

pub fn status(instance: &Instance, as_json: bool) -> anyhow::Result<()> {
    let store = instance.open_store()?;
    let counts = store.counts()?;
    let (lamport, changes) = store.clock()?;
    let bind = &instance.gateway_addr();
    let gateway = crate::http::local(&instance.home, "/health", None, PROBE_WAIT).ok();
    let report = json!({
        "id": instance.id,
        "name": instance.config.name,
        "home": instance.home,
        "version": env!("CARGO_PKG_VERSION"),
        "roost_id": instance.roost_id().to_string(),
        "earlier_roost_ids": crate::identity::earlier_ids(instance),
        "machine_key_fingerprint": instance.key_fingerprint(),
        "counts": counts,
        "lamport": lamport.0,
        "change_records": changes,
        "gateway": {"bind": bind, "running": gateway.is_some(), "health": gateway},
        "addresses": instance.advertised_urls(),
    });
    if as_json {
        out::json(&report)?;
        return Ok(());
    }
    say!("instance   {} ({})", out::field(&instance.config.name), instance.id)?;
    say!("home       {}", instance.home.display())?;
    say!("chain      {}", instance.roost_id())?;
    if let Some((id, _)) = instance.earlier_ids().last() {
        say!("           was {id} before a machine was revoked (roost whoami lists every earlier ID)")?;
    }
    say!("machine    key {}", instance.key_fingerprint())?;
    say!("clock      lamport {}, {} change records", lamport.0, changes)?;
    let contents: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    say!("contents   {}", contents.join(", "))?;
    match &gateway {
        Some(h) => {
            say!("gateway    running at http://{bind}, up {}s", h["uptime_seconds"])?;
            say!("reached at {}", instance.advertised_urls().join(" "))?;
        }
        None => say!("gateway    not answering at http://{bind} (start it with `roost serve`)")?,
    }
    if let Some(lease) = gateway.as_ref().map(|h| &h["lease"]).filter(|l| l.is_object()) {
        match LeaseStatus::deserialize(lease) {
            Ok(lease) => print_lease(&lease)?,
            Err(e) => say!("awake      the gateway's lease status is not understood here ({e})")?,
        }
    }
    if let Some(agent) = gateway.as_ref().and_then(crate::agent::describe) {
        say!("agent      {agent}")?;
    }
    Ok(())
}

/// The lease as this machine sees it: role, holder, epoch, claims, failover.
fn print_lease(lease: &LeaseStatus) -> anyhow::Result<()> {
    let holder = out::field(lease.holder.as_ref().map_or("nobody", |h| h.name.as_str()));
    let epoch = lease.epoch.map_or("-".to_string(), |e| e.to_string());
    say!("awake      {} here; holder {holder} at epoch {epoch}", lease.role)?;
    say!(
        "           {} machine(s) claim the role; {} of {} voters heard",
        lease.claims_seen,
        lease.voters_heard,
        lease.voters
    )?;
    say!("failover   {}", lease.failover)?;
    if let Some(why) = &lease.not_eligible {
        say!("eligible   no: {why}")?;
    }
    if !lease.ok {
        say!("lease loop stalled for {} ms", lease.loop_lag_ms)?;
    }
    Ok(())
}
