//! `roost pair` (on a machine of the chain) and `roost join` (on the new one).

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::json;

use roost_identity::pairing::{
    self, JoinGrant, JoinRequest, KnownMachine, OFFER_LIFETIME, PairingCode, RelayedMachine, Side,
};
use roost_identity::{Certificate, MasterSeed, Role, hex};
use roost_instance::addresses::is_loopback_url;
use roost_instance::{Instance, unix_now};

use crate::http;
use crate::out::{self, say};
use crate::pair_relay::RelayedSponsor;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(value: &serde_json::Value, what: &str) -> anyhow::Result<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.as_str().unwrap_or_default())
        .with_context(|| format!("the gateway's {what} is not base64url"))
}

/// Puts a fresh code on offer; with `wait`, follows the pairing to its end.
pub fn pair(home: &Path, wait: bool) -> anyhow::Result<()> {
    let instance = Instance::open(home)?;
    let code = instance.offer_pairing_code()?;
    say!(
        "pairing code: {}  (valid for {} minutes, {} attempts)",
        code.display(),
        OFFER_LIFETIME / 60,
        pairing::MAX_ATTEMPTS
    )?;
    let url =
        instance.advertised_urls().into_iter().next().unwrap_or_else(|| format!("http://{}", instance.gateway_addr()));
    say!("on the new machine run: roost join {url} --code {}", code.display())?;
    if !instance.config.sync.relays.is_empty() {
        let relayed = RelayedMachine {
            machine_key: instance.machine_key.verifying_key().to_bytes(),
            relays: instance.config.sync.relays.clone(),
        };
        say!("or, from a network that cannot reach it: roost join {relayed} --code {}", code.display())?;
    }
    if !wait {
        return Ok(());
    }
    say!("waiting for a machine to join (the gateway must be running)…")?;
    let deadline = Instant::now() + Duration::from_secs(OFFER_LIFETIME as u64 + 5);
    let mut shown_sas = None;
    while Instant::now() < deadline {
        let offer = instance.load_offer()?.context("the pairing offer vanished")?;
        if offer.sas.is_some() && offer.sas != shown_sas {
            say!("sas: {}   (the new machine must show the same words)", offer.sas.as_deref().unwrap_or(""))?;
            shown_sas = offer.sas.clone();
        }
        if let Some(name) = &offer.joined {
            say!("paired with {}", out::field(name))?;
            return Ok(());
        }
        if offer.code != code_text(&code) {
            bail!("another `roost pair` replaced this code");
        }
        if let Err(refusal) = offer.check(unix_now()) {
            bail!("{refusal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the pairing code expired with nobody joined")
}

fn code_text(code: &PairingCode) -> String {
    code.display().to_ascii_lowercase()
}

pub struct JoinOptions {
    pub url: String,
    pub code: String,
    pub name: Option<String>,
    pub yes: bool,
    pub force: bool,
}

/// The chain machine a joiner pairs with: its gateway over HTTP, or its key
/// through a relay.
enum Sponsor {
    Gateway(String),
    Relayed(Box<RelayedSponsor>),
}

impl Sponsor {
    fn reach(target: &str) -> anyhow::Result<Sponsor> {
        Ok(if RelayedMachine::is_one(target) {
            Sponsor::Relayed(Box::new(RelayedSponsor::connect(&RelayedMachine::parse(target)?)?))
        } else {
            Sponsor::Gateway(http::base(target))
        })
    }

    /// One step of the exchange, `start` or `finish`.
    fn ask(&mut self, step: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        match self {
            Sponsor::Gateway(base) => http::post(&format!("{base}/api/v1/pair/{step}"), body),
            Sponsor::Relayed(relayed) => relayed.ask(step, body),
        }
    }

    /// The gateway URL it was reached at, if it was.
    fn url(&self) -> Option<&str> {
        match self {
            Sponsor::Gateway(base) => Some(base),
            Sponsor::Relayed(_) => None,
        }
    }

    fn shown(&self) -> &str {
        match self {
            Sponsor::Gateway(base) => base,
            Sponsor::Relayed(relayed) => relayed.shown(),
        }
    }

    /// The relays it was reached through.
    fn relays(&self) -> &[String] {
        match self {
            Sponsor::Gateway(_) => &[],
            Sponsor::Relayed(relayed) => relayed.relays(),
        }
    }
}

pub fn join(home: &Path, options: JoinOptions) -> anyhow::Result<()> {
    let code = PairingCode::parse(&options.code)?;
    let mut instance =
        Instance::open_or_init(home, &options.name.clone().unwrap_or_else(roost_instance::default_name))?;
    let store = instance.open_store()?;
    let others = store.instances()?.into_iter().filter(|m| m.id != instance.id).count();
    if others > 0 && !options.force {
        bail!(
            "this instance already belongs to chain {} with {others} other machine(s); pass --force to join another",
            instance.roost_id()
        );
    }
    let mut sponsor = Sponsor::reach(&options.url)?;

    let (handshake, message) = pairing::start(Side::Joiner, &code);
    let started = sponsor.ask("start", &json!({"message": b64(&message)}))?;
    let key = handshake.finish(&unb64(&started["message"], "message")?)?;
    if !key.confirms(&unb64(&started["confirmation"], "confirmation")?) {
        bail!("the pairing code is wrong (this attempt counted; a code allows {})", pairing::MAX_ATTEMPTS);
    }
    say!("sas: {}   (the other machine must show the same words)", key.sas())?;
    if !options.yes {
        out::text("Does the other machine show the same four words? [y/N] ")?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("pairing cancelled; nothing was changed");
        }
    }

    let request = JoinRequest {
        instance_id: instance.id.clone(),
        name: instance.config.name.clone(),
        signing_key: hex(&instance.machine_key.verifying_key().to_bytes()),
        x25519_key: hex(&x25519_dalek::PublicKey::from(&instance.x25519_key).to_bytes()),
        addresses: instance.advertised_urls(),
    };
    let sealed = key.seal(0, &serde_json::to_vec(&request)?);
    let finished = sponsor.ask(
        "finish",
        &json!({"session": started["session"], "confirmation": b64(&key.confirmation()), "sealed": b64(&sealed)}),
    )?;
    let grant: JoinGrant = serde_json::from_slice(&key.open(0, &unb64(&finished["sealed"], "grant")?)?)
        .context("the chain's answer is not a join grant")?;
    let seed = roost_instance::parse_key_hex(&grant.seed).map(MasterSeed).context("the grant's seed is malformed")?;
    let chain = Certificate::from_text(&grant.chain.certificate)?;
    chain.verify(&seed.identity_key().verifying_key()).context("the chain's own certificate")?;
    let certificate = Certificate::from_text(&grant.certificate)?;
    if certificate.claims.signing_key != instance.machine_key.verifying_key().to_bytes()
        || certificate.claims.instance_id != instance.id
    {
        bail!("the chain issued a certificate for another machine; refusing it");
    }
    // The address typed here reached it; loopback URLs it sent mean this
    // host only if that address was a loopback one too.
    let over_loopback = sponsor.url().is_some_and(is_loopback_url);
    let usable = |m: &KnownMachine| -> Vec<String> {
        m.addresses.iter().filter(|a| over_loopback || !is_loopback_url(a)).cloned().collect()
    };
    let reached: Vec<String> = sponsor.url().map(str::to_string).into_iter().collect();
    let mut known = vec![(chain.clone(), [reached, usable(&grant.chain)].concat())];
    for machine in &grant.machines {
        if let Ok(cert) = Certificate::from_text(&machine.certificate) {
            known.push((cert, usable(machine)));
        }
    }
    instance.adopt_chain(&store, seed, Some(certificate), Role::Satellite, &known, &grant.rotations)?;
    let shown = sponsor.shown().to_string();
    let relays = [grant.relays, sponsor.relays().to_vec()].concat();
    drop(sponsor);
    say!(
        "joined chain {} as a satellite; {} is registered, reached at {}",
        instance.roost_id(),
        out::field(&chain.claims.name),
        out::field(&shown)
    )?;
    if instance.add_relays(&relays)? {
        say!("this machine uses the chain's relays too: {}", instance.config.sync.relays.join(", "))?;
    }
    crate::identity::restart_on_new_identity(&instance)
}
