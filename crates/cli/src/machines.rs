//! `roost machines` and `roost instance register|revoke`: the registry.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use roost_identity::Certificate;
use roost_instance::Instance;

use crate::http;

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Add a running instance of this chain by its gateway URL (checks its certificate).
    Register { url: String },
    /// Revoke a machine (by id or name); revocation is permanent.
    Revoke { id: String },
}

pub fn list(instance: &Instance, as_json: bool) -> anyhow::Result<()> {
    let store = instance.open_store()?;
    let machines = store.instances()?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&machines)?);
        return Ok(());
    }
    println!("{:<20} {:<10} {:<9} {:<36} {:<30} LAST SEEN", "NAME", "ROLE", "STATUS", "ID", "GATEWAY");
    for m in &machines {
        let me = if m.id == instance.id { " (this machine)" } else { "" };
        println!(
            "{:<20} {:<10} {:<9} {:<36} {:<30} {}{me}",
            m.name,
            m.role,
            m.status,
            m.id,
            m.gateway_url.as_deref().unwrap_or("-"),
            m.last_seen.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub fn run(home: &Path, command: InstanceCommand) -> anyhow::Result<()> {
    let instance = Instance::open(home)?;
    let store = instance.open_store()?;
    match command {
        InstanceCommand::Register { url } => {
            let base = http::base(&url);
            let health = http::get(&format!("{base}/health"), http::WAIT).context("health check")?;
            let answer = http::get(&format!("{base}/api/v1/certificate"), http::WAIT)?;
            let cert = Certificate::from_text(answer["certificate"].as_str().unwrap_or_default())
                .with_context(|| format!("{base} sent no valid certificate"))?;
            cert.verify(&instance.identity_key()).with_context(|| format!("refusing {base}"))?;
            instance.register(&store, &cert, Some(base.clone()))?;
            store.mark_seen(&cert.claims.instance_id, "online")?;
            instance.write_registry_file(&store)?;
            println!(
                "registered {} ({}, {}) at {base}; it answers {}",
                cert.claims.name,
                cert.claims.role.as_str(),
                cert.claims.instance_id,
                health["status"].as_str().unwrap_or("?")
            );
        }
        InstanceCommand::Revoke { id } => {
            let revoked = store.revoke_instance(&id)?;
            instance.write_registry_file(&store)?;
            println!("revoked {} ({}); it can no longer call this instance", revoked.name, revoked.id);
        }
    }
    Ok(())
}
