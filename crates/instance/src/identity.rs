//! This machine's share of the chain's identity: the sealed master seed and
//! the machine certificate, and the operations that change them.

use std::path::Path;

use roost_identity::cert::MachineClaims;
use roost_identity::seal::{
    KdfParams, needs_passphrase, open_seed_at_rest, open_seed_with_passphrase, seal_seed_at_rest,
    seal_seed_with_passphrase,
};
use roost_identity::{Certificate, MasterSeed, Role, RoostId, hex};

use crate::{Config, Instance, InstanceError, Result, files, keyring, unhex};

const KEK: &str = "keys/seed.kek";
const SEALED_SEED: &str = "keys/seed.sealed";
const CERTIFICATE: &str = "certificate";
/// Holds the Roost ID of the chain this machine created, if it created one.
const FOUNDER: &str = "founder";
/// Locked exclusively while the seed and the certificate change together,
/// and shared while a process reads them (with the lineage), so that a
/// command run during a rotation never sees the new seed beside the old
/// certificate. The lineage is written outside it: a reader takes only the
/// rotations that lead to the certificate it read.
const IDENTITY_LOCK: &str = "identity.lock";
/// How long either side waits for the other: a change takes milliseconds.
const IDENTITY_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds the identity files still for a reader (`exclusive` false) or a
/// writer, until dropped.
pub(crate) fn lock_identity(home: &Path, exclusive: bool) -> Result<std::fs::File> {
    files::lock_within(&home.join(IDENTITY_LOCK), exclusive, IDENTITY_LOCK_WAIT)
}

/// On first creation: a new chain whose only machine is this one, a home.
/// Keeps whatever an interrupted earlier creation already wrote.
pub(crate) fn create_identity(home: &Path, config: &Config) -> Result<()> {
    let kek = local_kek(home)?;
    let seed = MasterSeed(rand::random());
    files::write_new_or_keep(&home.join(SEALED_SEED), &seal_seed_at_rest(&seed, &kek, &rand::random()))?;
    if !home.join(CERTIFICATE).exists() {
        let seed = read_seed(home)?.ok_or(InstanceError::NoSeed)?;
        let id = crate::read_id(home)?;
        let (signing, x25519) = crate::keys::read(home)?;
        let machine = roost_identity::cert::MachineClaims {
            instance_id: id,
            name: config.name.clone(),
            role: Role::Home,
            signing_key: signing.verifying_key().to_bytes(),
            x25519_key: x25519_dalek::PublicKey::from(&x25519).to_bytes(),
            gateway_urls: vec![format!("http://{}", config.gateway.bind)],
            issued_at: unix_now(),
        };
        let cert = Certificate::issue(machine, &seed.identity_key())?;
        let chain = RoostId::of(&seed.identity_key().verifying_key()).to_string();
        files::write_new_or_keep(&home.join(FOUNDER), chain.as_bytes())?;
        files::write_new_or_keep(&home.join(CERTIFICATE), cert.to_text().as_bytes())?;
    }
    Ok(())
}

/// The key that seals this machine's secrets at rest (the seed, unless a
/// passphrase protects it, and the machine keys), created on first use.
pub(crate) fn local_kek(home: &Path) -> Result<[u8; 32]> {
    if !keyring::holds_key(home) {
        files::write_new_or_keep(&home.join(KEK), hex(&rand::random::<[u8; 32]>()).as_bytes())?;
    }
    read_kek(home)
}

/// The local key, from `keys/seed.kek` or from the OS keyring.
fn read_kek(home: &Path) -> Result<[u8; 32]> {
    if keyring::holds_key(home) {
        return keyring::read(&crate::read_id(home)?);
    }
    crate::read_secret(&home.join(KEK))
}

/// The environment variable that unlocks a passphrase-protected seed.
pub const SEED_PASSPHRASE_VAR: &str = "ROOST_SEED_PASSPHRASE";

/// Reads the seed. A passphrase-protected seed opens only when
/// `ROOST_SEED_PASSPHRASE` is set; without it the machine runs without the
/// seed (it can serve and sync, but not certify machines or export).
pub(crate) fn read_seed(home: &Path) -> Result<Option<MasterSeed>> {
    let path = home.join(SEALED_SEED);
    match std::fs::read(&path) {
        Ok(bytes) if needs_passphrase(&bytes) => match std::env::var(SEED_PASSPHRASE_VAR) {
            Ok(passphrase) => Ok(Some(open_seed_with_passphrase(&bytes, &passphrase).map_err(|_| {
                InstanceError::Corrupt { path, reason: format!("{SEED_PASSPHRASE_VAR} does not open the seed") }
            })?)),
            Err(_) => Ok(None),
        },
        Ok(bytes) => Ok(Some(open_seed_at_rest(&bytes, &read_kek(home)?)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstanceError::Io { path, source }),
    }
}

/// Reads this machine's certificate and checks that its own identity key
/// signed it, so later code may rely on that key being valid.
pub(crate) fn read_certificate(home: &Path) -> Result<Certificate> {
    let path = home.join(CERTIFICATE);
    let corrupt = |reason: String| InstanceError::Corrupt { path: path.clone(), reason };
    let cert = Certificate::from_text(&files::read(&path)?).map_err(|e| corrupt(e.to_string()))?;
    let identity = ed25519_dalek::VerifyingKey::from_bytes(&cert.identity_key).map_err(|e| corrupt(e.to_string()))?;
    cert.verify(&identity).map_err(|e| corrupt(e.to_string()))?;
    Ok(cert)
}

/// Wall-clock unix seconds (certificates and tokens carry wall time).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Instance {
    /// The chain this machine belongs to (or belonged to, after leaving).
    pub fn roost_id(&self) -> RoostId {
        ed25519_dalek::VerifyingKey::from_bytes(&self.certificate.identity_key)
            .map(|k| RoostId::of(&k))
            .expect("read_certificate checked the identity key")
    }

    /// Whether this machine created the chain it belongs to: its founder is
    /// the chain's first voter; every other machine is admitted by the holder.
    pub fn founded_chain(&self) -> bool {
        std::fs::read_to_string(self.home.join(FOUNDER)).is_ok_and(|id| id.trim() == self.chain_key().to_string())
    }

    /// The chain's identity public key.
    pub fn identity_key(&self) -> ed25519_dalek::VerifyingKey {
        ed25519_dalek::VerifyingKey::from_bytes(&self.certificate.identity_key)
            .expect("read_certificate checked the identity key")
    }

    /// Whether `certificate` (text form) is one this chain's current
    /// identity issued.
    pub fn issued(&self, certificate: &str) -> bool {
        Certificate::from_text(certificate).is_ok_and(|c| c.verify(&self.identity_key()).is_ok())
    }

    /// Whether this machine's own certificate verifies against its identity.
    pub fn certificate_valid(&self) -> bool {
        self.certificate.verify(&self.identity_key()).is_ok()
            && self.certificate.claims.signing_key == self.machine_key.verifying_key().to_bytes()
            && self.certificate.claims.instance_id == self.id
    }

    /// Issues a certificate for another machine; needs the seed.
    pub fn certify(&self, claims: MachineClaims) -> Result<Certificate> {
        let seed = self.seed.as_ref().ok_or(InstanceError::NoSeed)?;
        Ok(Certificate::issue(claims, &seed.identity_key())?)
    }

    /// The claims for this machine's own certificate, in `role`.
    pub fn own_claims(&self, role: Role) -> MachineClaims {
        MachineClaims {
            instance_id: self.id.clone(),
            name: self.config.name.clone(),
            role,
            signing_key: self.machine_key.verifying_key().to_bytes(),
            x25519_key: x25519_dalek::PublicKey::from(&self.x25519_key).to_bytes(),
            gateway_urls: vec![format!("http://{}", self.config.gateway.bind)],
            issued_at: unix_now(),
        }
    }

    /// Makes `seed` this machine's identity, with `certificate` (issued by
    /// that identity) or a fresh self-issued one in `role`. Both files are
    /// replaced atomically.
    pub fn adopt_identity(&mut self, seed: MasterSeed, certificate: Option<Certificate>, role: Role) -> Result<()> {
        let certificate = match certificate {
            Some(cert) => cert,
            None => Certificate::issue(self.own_claims(role), &seed.identity_key())?,
        };
        certificate.verify(&seed.identity_key().verifying_key())?;
        // Seed first, then certificate: a crash between the two leaves them
        // disagreeing, which `Instance::open` detects and reports; a reader
        // meanwhile waits on the lock.
        let kek = read_kek(&self.home)?;
        let _writing = lock_identity(&self.home, true)?;
        files::replace(&self.home.join(SEALED_SEED), &seal_seed_at_rest(&seed, &kek, &rand::random()))?;
        files::replace(&self.home.join(CERTIFICATE), certificate.to_text().as_bytes())?;
        self.seed = Some(seed);
        self.certificate = certificate;
        Ok(())
    }

    /// Joins the chain of `seed` (pairing or import): takes its identity and
    /// `certificate` (or a fresh self-issued one in `role`), forgets the
    /// machines of any other chain and the old chain's lease epochs, and
    /// registers itself and the `known` machines of the new chain with
    /// where they can be reached. `rotations` are those that led to the
    /// chain's identity (text form, oldest first).
    pub fn adopt_chain(
        &mut self,
        store: &roost_store::Store,
        seed: MasterSeed,
        certificate: Option<Certificate>,
        role: Role,
        known: &[(Certificate, Vec<String>)],
        rotations: &[String],
    ) -> Result<()> {
        // Checked before anything changes: a bad grant leaves this machine as it was.
        let lineage = crate::rotation::Lineage::leading_to(rotations, &seed.identity_key().verifying_key().to_bytes())?;
        self.adopt_identity(seed, certificate, role)?;
        self.take_lineage(lineage)?;
        store.forget_instances(|e| self.issued(&e.certificate))?;
        store.reset_epoch_fence_for_new_chain()?;
        self.register_self(store)?;
        for (cert, addresses) in known {
            if cert.claims.instance_id != self.id {
                self.register(store, cert, addresses)?;
            }
        }
        Ok(())
    }

    /// Renames this machine: the config and a new certificate with the new
    /// name (the others take it, newer than the one they hold, the next time
    /// they hear from this machine). Needs the seed.
    pub fn rename(&mut self, store: &roost_store::Store, name: &str) -> Result<()> {
        let name = name.trim();
        if !roost_identity::cert::valid_name(name) {
            return Err(InstanceError::BadName);
        }
        let old = std::mem::replace(&mut self.config.name, name.to_string());
        let certificate = match self.certify(self.own_claims(self.certificate.claims.role)) {
            Ok(certificate) => certificate,
            Err(e) => {
                self.config.name = old;
                return Err(e);
            }
        };
        let text = toml::to_string(&self.config).expect("config serialises");
        files::replace(&self.home.join("config.toml"), text.as_bytes())?;
        files::replace(&self.home.join(CERTIFICATE), certificate.to_text().as_bytes())?;
        self.certificate = certificate;
        self.register_self(store)
    }

    /// Adds `relays` (learned when joining) to `[sync] relays`, keeping
    /// those there; refuses any that is not a relay URL. True if any was new.
    pub fn add_relays(&mut self, relays: &[String]) -> Result<bool> {
        let mut sync = self.config.sync.clone();
        for relay in relays {
            if !sync.relays.contains(relay) {
                sync.relays.push(relay.clone());
            }
        }
        if sync == self.config.sync {
            return Ok(false);
        }
        if let Some(reason) = sync.invalid_relay() {
            return Err(
                roost_identity::IdentityError::Invalid(format!("refusing a relay the chain named: {reason}")).into()
            );
        }
        self.config.sync = sync;
        let text = toml::to_string(&self.config).expect("config serialises");
        files::replace(&self.home.join("config.toml"), text.as_bytes())?;
        Ok(true)
    }

    /// Moves the local key into the OS keyring (`true`: the key file is
    /// removed once the keyring gives the key back) or back into
    /// `keys/seed.kek` (`false`: the keyring entry is removed once the file
    /// is written). True if anything moved.
    pub fn keep_key_in_keyring(&self, on: bool) -> Result<bool> {
        if keyring::holds_key(&self.home) == on {
            return Ok(false);
        }
        let key = read_kek(&self.home)?;
        let file = self.home.join(KEK);
        if on {
            keyring::store(&self.id, &key)?;
            keyring::mark(&self.home, true)?;
            std::fs::remove_file(&file).map_err(|source| InstanceError::Io { path: file, source })?;
        } else {
            files::write_new_or_keep(&file, hex(&key).as_bytes())?;
            keyring::mark(&self.home, false)?;
            keyring::clear(&self.id)?;
        }
        Ok(true)
    }

    /// Re-seals the seed at rest: with a passphrase (Argon2id), or with the
    /// local key file when `passphrase` is `None`.
    pub fn protect_seed(&self, passphrase: Option<&str>) -> Result<()> {
        let seed = self.seed.as_ref().ok_or(InstanceError::NoSeed)?;
        let sealed = match passphrase {
            Some(p) => {
                if p.chars().count() < roost_identity::export::MIN_PASSPHRASE {
                    return Err(
                        roost_identity::IdentityError::WeakPassphrase(roost_identity::export::MIN_PASSPHRASE).into()
                    );
                }
                seal_seed_with_passphrase(seed, p, KdfParams::DEFAULT, rand::random(), rand::random())?
            }
            None => seal_seed_at_rest(seed, &read_kek(&self.home)?, &rand::random()),
        };
        files::replace(&self.home.join(SEALED_SEED), &sealed)
    }

    /// Forgets the seed (after leaving the chain). The certificate stays, so
    /// the machine can still say which chain it was part of.
    pub fn forget_seed(&mut self) -> Result<()> {
        files::remove_if_present(&self.home.join(SEALED_SEED))?;
        self.seed = None;
        Ok(())
    }
}

/// Parses a hex public key.
pub fn parse_key_hex(text: &str) -> Option<[u8; 32]> {
    unhex(text).and_then(|b| b.try_into().ok())
}

const PAIRING: &str = "pairing.json";

impl Instance {
    /// The pairing code on offer, if any.
    pub fn load_offer(&self) -> Result<Option<roost_identity::pairing::Offer>> {
        let path = self.home.join(PAIRING);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| InstanceError::Corrupt { path, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(InstanceError::Io { path, source }),
        }
    }

    /// Holds the offer file for one read-modify-write across processes (the
    /// gateway counting an attempt, `roost pair` placing a new code); released
    /// when the returned file is dropped.
    pub fn lock_offer(&self) -> Result<std::fs::File> {
        let path = self.home.join("pairing.lock");
        let file = files::open_lock(&path)?;
        file.lock().map_err(|source| InstanceError::Io { path, source })?;
        Ok(file)
    }

    /// Persists the offer (mode 0600, atomically), replacing any earlier one.
    pub fn save_offer(&self, offer: &roost_identity::pairing::Offer) -> Result<()> {
        files::replace(&self.home.join(PAIRING), &serde_json::to_vec(offer).expect("offers serialise"))
    }

    /// Puts a fresh pairing code on offer, replacing any earlier one
    /// (`roost pair`, and the Nest's Machines page). Needs the seed: only a
    /// machine holding it can certify a joiner.
    pub fn offer_pairing_code(&self) -> Result<roost_identity::pairing::PairingCode> {
        if self.seed.is_none() {
            return Err(InstanceError::NoSeed);
        }
        let code = roost_identity::pairing::PairingCode::generate(rand::random());
        let _offer_lock = self.lock_offer()?;
        self.save_offer(&roost_identity::pairing::Offer::new(&code, unix_now()))?;
        Ok(code)
    }
}

const GATEWAY_ADDR: &str = "gateway.addr";
const SERVING: &str = "serve.lock";

/// The gateway's Unix socket in the home, where the CLI reaches its own
/// gateway whatever address it listens on.
pub const SOCKET: &str = "roost.sock";

/// Held by a running `roost serve` or `roost witness` for its whole life,
/// so two never share a home; released when dropped (or the process ends).
pub struct ServingLock {
    _file: std::fs::File,
}

impl Instance {
    /// Takes the home for a long-running process, or says which process
    /// holds it.
    pub fn lock_serving(&self) -> Result<ServingLock> {
        use std::io::Write;
        let path = self.home.join(SERVING);
        let io = |source| InstanceError::Io { path: path.clone(), source };
        let mut file = files::open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                return Err(InstanceError::AlreadyServing { pid, address: self.gateway_addr() });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(ServingLock { _file: file })
    }
}

impl Instance {
    /// Records where the running gateway listens, for `pair` and `status`.
    pub fn record_gateway_addr(&self, addr: &str) -> Result<()> {
        files::replace(&self.home.join(GATEWAY_ADDR), addr.as_bytes())
    }

    /// Forgets the running gateway's address (on shutdown).
    pub fn clear_gateway_addr(&self) {
        let _ = std::fs::remove_file(self.home.join(GATEWAY_ADDR));
    }

    /// The URLs other machines reach this one at: those configured, else
    /// those of the running gateway's address (or the configured bind).
    pub fn advertised_urls(&self) -> Vec<String> {
        let gateway = &self.config.gateway;
        match self.gateway_addr().parse::<std::net::SocketAddr>() {
            Ok(bound) => crate::addresses::advertised(&gateway.advertise, bound),
            Err(_) if !gateway.advertise.is_empty() => {
                gateway.advertise.iter().map(|u| crate::addresses::normalise(u)).collect()
            }
            Err(_) => vec![crate::addresses::normalise(&self.gateway_addr())],
        }
    }

    /// Where this instance's gateway is: the running one's address if one
    /// recorded it, else the configured bind address.
    pub fn gateway_addr(&self) -> String {
        std::fs::read_to_string(self.home.join(GATEWAY_ADDR))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.config.gateway.bind.clone())
    }
}
