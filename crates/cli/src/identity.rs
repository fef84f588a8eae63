//! `roost whoami`, `roost identity export|import` and `roost leave`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;

use roost_identity::export::{self, MIN_PASSPHRASE};
use roost_identity::seal::KdfParams;
use roost_identity::{Role, hex};
use roost_instance::{Instance, InstanceError};

use crate::out::{self, note, say};
use crate::prompt;

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Write the chain's identity seed, sealed with a passphrase (Argon2id + AES-256-GCM).
    Export {
        /// Where to write it [default: standard output]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Make this machine part of the chain in an export file (creates the instance if needed).
    Import {
        file: PathBuf,
        /// Replace a different identity this instance already has.
        #[arg(long)]
        force: bool,
        /// Role of this machine in the chain: home or satellite.
        #[arg(long, default_value = "satellite")]
        role: String,
    },
    /// Seal the seed at rest with a passphrase; later runs need ROOST_SEED_PASSPHRASE to use it.
    Protect,
    /// Seal the seed at rest with the local key file again (needs ROOST_SEED_PASSPHRASE).
    Unprotect,
    /// Keep the local key (it seals the machine keys and the seed) in the OS keyring
    /// (Secret Service through secret-tool, or the macOS Keychain) instead of keys/seed.kek.
    Keyring {
        /// Move it back into keys/seed.kek.
        #[arg(long)]
        off: bool,
    },
}

/// The chain's earlier Roost IDs, oldest first, with when each was left.
pub fn earlier_ids(instance: &Instance) -> serde_json::Value {
    let ids = instance
        .earlier_ids()
        .into_iter()
        .map(|(id, until)| json!({"roost_id": id.to_string(), "until": roost_store::unix_time_text(until)}));
    serde_json::Value::Array(ids.collect())
}

/// Reads a passphrase from `ROOST_PASSPHRASE` or the person, asking twice when `confirm`.
pub fn passphrase(prompt: &str, confirm: bool) -> anyhow::Result<String> {
    prompt::secret("ROOST_PASSPHRASE", prompt, confirm.then_some("Repeat passphrase: "))
}

pub fn whoami(instance: &Instance, as_json: bool) -> anyhow::Result<()> {
    let cert = &instance.certificate;
    let x25519 = x25519_public(instance);
    let report = json!({
        "roost_id": instance.roost_id().to_string(),
        "instance_id": instance.id,
        "name": instance.config.name,
        "role": cert.claims.role.as_str(),
        "signing_key": hex(&instance.machine_key.verifying_key().to_bytes()),
        "encryption_key": hex(&x25519),
        "signing_key_fingerprint": instance.key_fingerprint(),
        "certificate_valid": instance.certificate_valid(),
        "certificate_issued_at": cert.claims.issued_at,
        "holds_seed": instance.seed.is_some(),
        "earlier_roost_ids": earlier_ids(instance),
    });
    if as_json {
        out::json(&report)?;
        return Ok(());
    }
    say!("Roost ID      {}", instance.roost_id())?;
    for (id, until) in instance.earlier_ids().iter().rev() {
        say!("  was         {id} (until {}, when a machine was revoked)", roost_store::unix_time_text(*until))?;
    }
    say!("machine       {} ({})", out::field(&instance.config.name), instance.id)?;
    say!("role          {}", cert.claims.role.as_str())?;
    say!(
        "signing key   {} (fingerprint {})",
        report["signing_key"].as_str().unwrap_or(""),
        instance.key_fingerprint()
    )?;
    say!("x25519 key    {}", report["encryption_key"].as_str().unwrap_or(""))?;
    let validity = if instance.certificate_valid() { "valid, signed by this chain's identity" } else { "INVALID" };
    say!("certificate   {validity}")?;
    if instance.seed.is_none() {
        say!("note          this machine has left its chain and holds no seed")?;
    }
    Ok(())
}

fn x25519_public(instance: &Instance) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&instance.x25519_key).to_bytes()
}

pub fn run(home: &Path, command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Export { out } => {
            let instance = Instance::open(home)?;
            let seed = instance.seed.as_ref().ok_or(InstanceError::NoSeed)?;
            let pass = passphrase(&format!("Passphrase (at least {MIN_PASSPHRASE} characters): "), true)?;
            let text = export::export(seed, &pass, KdfParams::DEFAULT, rand::random(), rand::random())?;
            match out {
                Some(path) => {
                    roost_instance::write_new(&path, text.as_bytes())
                        .with_context(|| format!("writing {} (it must not exist yet)", path.display()))?;
                    note!("wrote identity {} to {}", instance.roost_id(), path.display());
                }
                None => out::text(&text)?,
            }
            Ok(())
        }
        IdentityCommand::Protect => {
            let instance = Instance::open(home)?;
            let pass = passphrase(&format!("New seed passphrase (at least {MIN_PASSPHRASE} characters): "), true)?;
            instance.protect_seed(Some(&pass))?;
            say!("the seed is now sealed with your passphrase; set ROOST_SEED_PASSPHRASE to use it")?;
            Ok(())
        }
        IdentityCommand::Unprotect => {
            let instance = Instance::open(home)?;
            instance.protect_seed(None)?;
            say!("the seed is sealed with this machine's key file again")?;
            Ok(())
        }
        IdentityCommand::Keyring { off } => {
            let instance = Instance::open(home)?;
            let moved = instance.keep_key_in_keyring(!off)?;
            match (off, moved) {
                (false, true) => say!(
                    "the local key is in the OS keyring now and keys/seed.kek is gone; roost needs the keyring unlocked to start"
                ),
                (false, false) => say!("the local key is in the OS keyring already"),
                (true, true) => say!("the local key is in keys/seed.kek again and out of the OS keyring"),
                (true, false) => say!("the local key is in keys/seed.kek already"),
            }
        }
        IdentityCommand::Import { file, force, role } => {
            let role = Role::parse(&role).context("--role must be home or satellite")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let claimed = export::peek_roost_id(&text)?;
            let existing = Instance::open(home).ok();
            if let Some(instance) = &existing {
                if instance.roost_id() == claimed && instance.seed.is_some() {
                    say!("this instance is already part of chain {claimed}")?;
                    return Ok(());
                }
                if !force {
                    bail!(
                        "this instance belongs to chain {}; importing {claimed} would replace it (pass --force)",
                        instance.roost_id()
                    );
                }
            }
            let seed = export::import(&text, &passphrase("Passphrase: ", false)?)?;
            let mut instance = match existing {
                Some(instance) => instance,
                None => Instance::init(home, &roost_instance::default_name())?,
            };
            instance.adopt_chain(&instance.open_store()?, seed, None, role, &[], &[])?;
            say!("this machine is now {} ({}) in chain {}", instance.config.name, role.as_str(), instance.roost_id())?;
            restart_on_new_identity(&instance)
        }
    }
}

/// Tells the running gateway, if any, to take the identity now on disk:
/// replication and the lease restart on it at once.
pub fn restart_on_new_identity(instance: &Instance) -> anyhow::Result<()> {
    match crate::http::local(&instance.home, "/api/v1/local/reload", Some(&serde_json::json!({})), crate::http::WAIT) {
        Ok(answer) if answer["restarted"] == true => {
            say!("the running roost serve now replicates and votes as part of this chain")
        }
        Ok(_) => Ok(()),
        Err(e) if crate::http::not_running(&e) => say!("the next `roost serve` runs as part of this chain"),
        Err(e) => {
            note!("roost: warning: the running roost serve did not take the new identity ({e:#}); restart it");
            Ok(())
        }
    }
}

pub fn leave(home: &Path, force: bool) -> anyhow::Result<()> {
    let mut instance = Instance::open(home)?;
    let store = instance.open_store()?;
    let machines = store.instances()?;
    let other_homes =
        machines.iter().filter(|m| m.id != instance.id && m.role == Role::Home && !m.is_revoked()).count();
    if instance.certificate.claims.role == Role::Home && other_homes == 0 && !force {
        bail!("this is the chain's last home machine; leaving would leave no home (pass --force to leave anyway)");
    }
    crate::lease::leave_the_voters(&instance)?;
    // The others move to a new identity this machine never holds; the
    // rotation goes out to them before the revocation does.
    let id = instance.id.clone();
    if machines.iter().any(|m| m.id != id && !m.is_revoked()) {
        instance.rotate(&store, &id)?;
    }
    instance.revoke(&store, &id)?;
    instance.forget_seed()?;
    say!("left chain {}: this machine's certificate is revoked here and its seed is gone", instance.roost_id())?;
    Ok(())
}
