//! `roost machines`, `roost rename` and `roost instance register|revoke`:
//! the machines of the chain.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use roost_gateway::{MachinePart, MachineRow};
use roost_instance::Instance;
use roost_store::Standing;

use crate::http;
use crate::out::{self, say};

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Add a running instance of this chain by its gateway URL (checks its certificate).
    Register { url: String },
    /// Revoke a machine (by id or name); revocation is permanent.
    Revoke { id: String },
}

/// Every machine this one knows: as the running gateway sees them now, or
/// from the registry alone when it is not running.
pub fn list(instance: &Instance, as_json: bool) -> anyhow::Result<()> {
    let machines: Vec<MachineRow> = match http::local(&instance.home, "/api/v1/machines", None, http::WAIT) {
        Ok(mut answer) => serde_json::from_value(answer["machines"].take())
            .context("the gateway's list of machines is not in the form this version reads")?,
        Err(e) if http::not_running(&e) => offline_rows(instance)?,
        Err(e) => return Err(e),
    };
    if as_json {
        out::json(&machines)?;
        return Ok(());
    }
    let text = |v: Option<&str>| out::field(v.unwrap_or("-")).into_owned();
    let rows = machines.iter().map(|m| {
        let name = if m.this { format!("{} *", text(Some(&m.name))) } else { text(Some(&m.name)) };
        let addresses: Vec<String> = m.addresses.iter().map(|a| text(Some(a))).collect();
        let addresses =
            if addresses.is_empty() { "none known: it cannot be dialed".into() } else { addresses.join(" ") };
        let sync = if m.status == Standing::Revoked { "revoked".into() } else { text(Some(&m.sync)) };
        vec![
            name,
            m.role.as_str().to_string(),
            sync,
            text(m.version.as_deref()),
            text(m.last_seen.as_deref()),
            text(Some(&m.id)),
            addresses,
        ]
    });
    out::table(&["NAME", "ROLE", "SYNC", "VERSION", "LAST SEEN", "ID", "ADDRESSES"], rows)?;
    say!("(* this machine)")?;
    Ok(())
}

/// The rows `roost machines` shows when the gateway is not running: what
/// the registry holds, and nothing live.
fn offline_rows(instance: &Instance) -> anyhow::Result<Vec<MachineRow>> {
    let entries = instance.open_store()?.instances()?;
    let names = roost_store::registry::display_names(&entries);
    Ok(entries
        .into_iter()
        .map(|e| {
            let this = e.id == instance.id;
            MachineRow {
                name: names[&e.id].clone(),
                this,
                role: MachinePart::Unknown,
                addresses: e.addresses,
                sync: if this { "this machine" } else { "not running" }.into(),
                version: e.version,
                last_seen: e.last_seen,
                status: e.status,
                id: e.id,
            }
        })
        .collect())
}

/// `roost rename NAME`: a new certificate naming this machine so, which the
/// others take the next time they hear from it.
pub fn rename(home: &Path, name: &str) -> anyhow::Result<()> {
    let mut instance = Instance::open(home)?;
    let store = instance.open_store()?;
    let old = instance.config.name.clone();
    instance.rename(&store, name)?;
    say!("renamed {} to {}", out::field(&old), out::field(&instance.config.name))?;
    crate::identity::restart_on_new_identity(&instance)
}

pub fn run(home: &Path, command: InstanceCommand) -> anyhow::Result<()> {
    let mut instance = Instance::open(home)?;
    let store = instance.open_store()?;
    match command {
        InstanceCommand::Register { url } => {
            let base = http::base(&url);
            let health = http::get(&format!("{base}/health"), http::WAIT).context("health check")?;
            let answer = http::get(&format!("{base}/api/v1/certificate"), http::WAIT)?;
            let cert = instance.register_reached(&store, answer["certificate"].as_str().unwrap_or_default(), &base)?;
            say!(
                "registered {} ({}, {}) at {}; it answers {}",
                out::field(&cert.claims.name),
                cert.claims.role.as_str(),
                cert.claims.instance_id,
                out::field(&base),
                out::field(health["status"].as_str().unwrap_or("?"))
            )?;
        }
        InstanceCommand::Revoke { id } => {
            let (revoked, old) = instance.revoke_and_rotate(&store, &id)?;
            say!(
                "revoked {} ({}); every machine of the chain refuses it once replication passes this on",
                out::field(&revoked.name),
                out::field(&revoked.id)
            )?;
            say!(
                "the chain's Roost ID is now {} (was {old}): the machines that stay take the new identity through replication, and nothing {} certifies joins",
                instance.roost_id(),
                out::field(&revoked.name)
            )?;
            crate::identity::restart_on_new_identity(&instance)?;
        }
    }
    Ok(())
}
