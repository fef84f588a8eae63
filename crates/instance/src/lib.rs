//! A Roost instance: one directory that holds everything of one installation.
//!
//! ```text
//! <home>/config.toml     name and gateway settings (written last: its presence means "initialised")
//! <home>/instance-id     globally unique id, generated once
//! <home>/keys/machine.sealed  this machine's Ed25519 and X25519 secret keys, AES-256-GCM sealed
//! <home>/keys/seed.kek        key that seals the machine keys and the master seed at rest (mode 0600),
//!                             or `keys/seed.kek.keyring` when that key is in the OS keyring
//! <home>/keys/seed.sealed     the chain's master seed, AES-256-GCM sealed (or with a passphrase)
//! <home>/certificate     this machine's certificate, signed by the identity
//! <home>/rotations       the identities the chain had before this one (see `rotation`)
//! <home>/instances.json  the registry, for tools that read it before the database
//! <home>/roost.db        the SQLite store (WAL)
//! ```
//!
//! Every file is created crash-safely (written to a temporary file, synced,
//! then linked into place only if absent), so an interrupted `init`, or two
//! processes starting on one fresh home at once, end with one consistent
//! instance. Nothing here reaches outside `<home>`, so two instances in two
//! directories never touch each other's files.

pub mod addresses;
pub mod backup;
mod files;
mod identity;
mod keyring;
mod keys;
mod registry;
mod rotation;

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use roost_identity::{Certificate, MasterSeed, hex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use roost_store::Store;

pub use files::{make_private, private_by_default, replace, write_new};
pub use identity::{SEED_PASSPHRASE_VAR, SOCKET, ServingLock, parse_key_hex, unix_now};
pub use rotation::{Adopted, recorded_rotations};

/// The gateway address used when neither config nor flag names one.
pub const DEFAULT_BIND: &str = "127.0.0.1:7151";
/// The gateway's port when nothing else says.
pub const DEFAULT_PORT: u16 = 7151;

#[derive(Debug, Error)]
pub enum InstanceError {
    #[error("no Roost instance at {0}; run `roost init --name NAME` or `roost serve` to create one")]
    Missing(PathBuf),
    #[error("a Roost instance already exists at {home} (named {name:?}); use it, or choose another --home")]
    Exists { home: PathBuf, name: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot make {path} owner-only ({source}); remove group and other access yourself (chmod go-rwx) or use another --home"
    )]
    NotPrivate { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("instance name must be 1 to 64 bytes (UTF-8) without control characters")]
    BadName,
    #[error(
        "another roost process (pid {pid}) already serves this home at {address}; stop it first, or use another --home"
    )]
    AlreadyServing { pid: String, address: String },
    #[error(transparent)]
    Store(#[from] roost_store::StoreError),
    #[error(transparent)]
    Identity(#[from] roost_identity::IdentityError),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error(
        "this machine holds no usable seed: it left its chain, or the seed is passphrase-protected and ROOST_SEED_PASSPHRASE is not set"
    )]
    NoSeed,
    /// A machine offered for registration is not of this chain.
    #[error("{0}")]
    Refused(String),
}

pub type Result<T, E = InstanceError> = std::result::Result<T, E>;

/// `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub federation: FederationConfig,
    #[serde(default)]
    pub lease: LeaseConfig,
    #[serde(default, skip_serializing_if = "SyncConfig::is_unset")]
    pub sync: SyncConfig,
    #[serde(default, skip_serializing_if = "AgentConfig::is_unset")]
    pub agent: AgentConfig,
    #[serde(default, skip_serializing_if = "PoolConfig::is_unset")]
    pub pool: PoolConfig,
}

/// `[pool]`: whether conversations may run on machines other than the
/// awake one, and how many this machine takes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Off, every topic runs on the awake machine.
    #[serde(default)]
    pub enabled: bool,
    /// How many topics this machine carries relative to the others (0
    /// takes none).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// How long a grant of a topic lasts on the coordinator's clock.
    #[serde(default = "default_topic_lease")]
    pub lease_ms: u64,
    /// How far a machine's clock may be from the coordinator's before it
    /// takes no new topic.
    #[serde(default = "default_clock_bound")]
    pub clock_bound_ms: u64,
    /// The fewest milliseconds between two transfers of one topic.
    #[serde(default = "default_transfer_interval")]
    pub transfer_interval_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            enabled: false,
            capacity: default_capacity(),
            lease_ms: default_topic_lease(),
            clock_bound_ms: default_clock_bound(),
            transfer_interval_ms: default_transfer_interval(),
        }
    }
}

impl PoolConfig {
    fn is_unset(&self) -> bool {
        self == &PoolConfig::default()
    }
}

fn default_capacity() -> u32 {
    1
}

fn default_topic_lease() -> u64 {
    2_000
}

fn default_clock_bound() -> u64 {
    2_000
}

fn default_transfer_interval() -> u64 {
    1_000
}

/// `[agent]`: what answers the messages the channels bring, on whichever
/// machine is awake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `"echo"` (built in), or a program and its arguments, which reads the
    /// message as JSON on stdin and writes the reply on stdout.
    #[serde(default)]
    pub handler: Handler,
    /// How long one run of the handler may take.
    #[serde(default = "default_handler_timeout")]
    pub handler_timeout_ms: u64,
    /// Runs of the handler before a message is marked failed.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// How long the awake machine may hold the role without getting work
    /// done (no reply sent or handler answer while messages wait, or no
    /// Telegram poll answered) before it hands the role to a standby.
    #[serde(default = "default_stuck_after")]
    pub stuck_after_ms: u64,
    #[serde(default, skip_serializing_if = "WebhookConfig::is_unset")]
    pub webhook: WebhookConfig,
    #[serde(default, skip_serializing_if = "TelegramConfig::is_unset")]
    pub telegram: TelegramConfig,
}

/// The agent's handler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Handler {
    /// A built-in handler by name: `echo`.
    Builtin(String),
    /// A program and its arguments.
    Program(Vec<String>),
}

impl Default for Handler {
    fn default() -> Handler {
        Handler::Builtin("echo".into())
    }
}

impl std::fmt::Display for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handler::Builtin(name) => write!(f, "{name} (built in)"),
            Handler::Program(argv) => write!(f, "{}", argv.join(" ")),
        }
    }
}

/// `[agent.webhook]`: where replies to webhook messages go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Replies are POSTed here as JSON, with an `Idempotency-Key` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl WebhookConfig {
    fn is_unset(&self) -> bool {
        self.url.is_none()
    }
}

/// `[agent.telegram]`: a Telegram bot the awake machine answers as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather; none: no Telegram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where the Bot API answers.
    #[serde(default = "default_telegram_api", skip_serializing_if = "is_default_telegram_api")]
    pub api_url: String,
}

impl Default for TelegramConfig {
    fn default() -> TelegramConfig {
        TelegramConfig { token: None, api_url: default_telegram_api() }
    }
}

impl TelegramConfig {
    fn is_unset(&self) -> bool {
        self == &TelegramConfig::default()
    }

    /// What is wrong with the settings, in one line, if anything.
    fn invalid(&self) -> Option<String> {
        if let Some(token) = &self.token {
            let well_formed = token.split_once(':').is_some_and(|(bot, secret)| {
                !bot.is_empty()
                    && bot.bytes().all(|b| b.is_ascii_digit())
                    && !secret.is_empty()
                    && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !well_formed {
                return Some("[agent.telegram] token: not a bot token (digits, a colon, then letters, digits, _ or -); copy it from @BotFather".into());
            }
        }
        match url::Url::parse(&self.api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => None,
            Ok(url) => Some(format!("[agent.telegram] api_url: {url} is not an http:// or https:// URL")),
            Err(e) => Some(format!("[agent.telegram] api_url: not a URL ({e})")),
        }
    }
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}

fn is_default_telegram_api(url: &str) -> bool {
    url == default_telegram_api()
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            handler: Handler::default(),
            handler_timeout_ms: default_handler_timeout(),
            attempts: default_attempts(),
            stuck_after_ms: default_stuck_after(),
            webhook: WebhookConfig::default(),
            telegram: TelegramConfig::default(),
        }
    }
}

impl AgentConfig {
    fn is_unset(&self) -> bool {
        self == &AgentConfig::default()
    }

    /// What is wrong with the settings, in one line, if anything.
    pub(crate) fn invalid(&self) -> Option<String> {
        match &self.handler {
            Handler::Builtin(name) if name != "echo" => {
                return Some(format!(
                    "[agent] handler: {name:?} is not a built-in handler; use \"echo\" or a list: [\"program\", \"arg\"]"
                ));
            }
            Handler::Program(argv) if argv.first().is_none_or(|p| p.is_empty()) => {
                return Some("[agent] handler: the list needs a program first, e.g. [\"cat\"]".into());
            }
            _ => {}
        }
        if self.handler_timeout_ms == 0 || self.attempts == 0 {
            return Some("[agent] handler_timeout_ms and attempts must be at least 1".into());
        }
        if self.stuck_after_ms <= self.handler_timeout_ms {
            return Some(format!(
                "[agent] stuck_after_ms ({}) must be longer than handler_timeout_ms ({}): a handler still within its time is not stuck",
                self.stuck_after_ms, self.handler_timeout_ms
            ));
        }
        match self.webhook.url.as_deref().map(url::Url::parse) {
            Some(Ok(url)) if !matches!(url.scheme(), "http" | "https") => {
                Some(format!("[agent.webhook] url: {url} is not an http:// or https:// URL"))
            }
            Some(Err(e)) => Some(format!("[agent.webhook] url: not a URL ({e})")),
            _ => self.telegram.invalid(),
        }
    }
}

fn default_handler_timeout() -> u64 {
    60_000
}

fn default_stuck_after() -> u64 {
    120_000
}

fn default_attempts() -> u32 {
    3
}

/// `[sync]`: how this machine reaches the others.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Relays (`roost relay`) through which machines that cannot reach each
    /// other directly (both behind NAT, UDP blocked) still connect; direct
    /// paths are preferred whenever they work. Empty: direct addresses only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
}

impl SyncConfig {
    fn is_unset(&self) -> bool {
        self == &SyncConfig::default()
    }

    /// The first relay that is not an `http://` or `https://` URL with a
    /// host, and why.
    pub(crate) fn invalid_relay(&self) -> Option<String> {
        self.relays.iter().find_map(|relay| match url::Url::parse(relay) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => None,
            Ok(_) => Some(format!("[sync] relays: {relay:?} is not an http:// or https:// URL of a relay")),
            Err(e) => Some(format!("[sync] relays: {relay:?} is not a URL ({e})")),
        })
    }
}

/// `[lease]`: the awake role, held by one machine at a time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// The lease's time-to-live, in milliseconds. A dead holder is replaced
    /// within about this long plus a second.
    #[serde(default = "default_lease_ttl")]
    pub ttl_ms: u64,
    /// Who grants the lease: `quorum` (a majority of the chain's machines and
    /// witnesses) or `etcd`.
    #[serde(default = "default_lease_backend")]
    pub backend: String,
    /// etcd client URLs, tried in order, for `backend = "etcd"`.
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { ttl_ms: default_lease_ttl(), backend: default_lease_backend(), etcd_endpoints: Vec::new() }
    }
}

fn default_lease_ttl() -> u64 {
    3000
}

fn default_lease_backend() -> String {
    "quorum".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address `roost serve` listens on.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Whether MCP clients on this machine's loopback may call `/mcp`
    /// without a machine token. Remote callers always need one.
    #[serde(default = "yes")]
    pub loopback_without_token: bool,
    /// URLs the other machines reach this one at. Empty: worked out from the
    /// bind address (see `addresses`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertise: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig { bind: default_bind(), loopback_without_token: true, advertise: Vec::new() }
    }
}

/// `[federation]`: MCP tool calls this machine makes to, and accepts from,
/// the other machines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Tools other machines may call here. Read-only tools by default;
    /// add a write tool's name to let peers write through this machine.
    #[serde(default = "default_peer_tools")]
    pub peer_tools: Vec<String>,
    /// Longest wait for one forwarded tool call, in milliseconds.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_ms: u64,
    /// Longest wait for one instance's part of a search of all instances.
    #[serde(default = "default_search_timeout")]
    pub search_timeout_ms: u64,
    /// How often each machine's summary (projects, memory counts) is fetched.
    #[serde(default = "default_summary_interval")]
    pub summary_interval_secs: u64,
    /// How often each machine's health is fetched.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
    /// How calls reach the other machines.
    #[serde(default)]
    pub transport: FederationTransport,
}

/// How federated calls travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FederationTransport {
    /// Over the QUIC connection replication uses: encrypted and mutually
    /// authenticated by machine keys.
    #[default]
    Quic,
    /// Over the other machine's `/mcp` with a machine token per request:
    /// only to `https://` gateway addresses or to loopback, never plain
    /// text across a network.
    Http,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            peer_tools: default_peer_tools(),
            call_timeout_ms: default_call_timeout(),
            search_timeout_ms: default_search_timeout(),
            summary_interval_secs: default_summary_interval(),
            health_interval_secs: default_health_interval(),
            transport: FederationTransport::default(),
        }
    }
}

/// The read-only memory, project and search tools.
pub const DEFAULT_PEER_TOOLS: [&str; 6] = [
    "roost_search_memories",
    "roost_get_memory",
    "roost_list_memories",
    "roost_memory_stats",
    "roost_get_project",
    "roost_list_projects",
];

fn default_peer_tools() -> Vec<String> {
    DEFAULT_PEER_TOOLS.map(String::from).to_vec()
}

fn default_call_timeout() -> u64 {
    10_000
}

fn default_search_timeout() -> u64 {
    2_000
}

fn default_summary_interval() -> u64 {
    3_600
}

fn default_health_interval() -> u64 {
    300
}

fn yes() -> bool {
    true
}

fn default_bind() -> String {
    DEFAULT_BIND.to_string()
}

/// An initialised instance directory.
pub struct Instance {
    pub home: PathBuf,
    pub id: String,
    pub config: Config,
    pub machine_key: SigningKey,
    pub x25519_key: x25519_dalek::StaticSecret,
    /// The chain's master seed; `None` once this machine has left.
    pub seed: Option<MasterSeed>,
    /// This machine's certificate.
    pub certificate: Certificate,
    /// The rotations the chain went through, oldest first.
    lineage: Vec<roost_identity::Rotation>,
}

impl Instance {
    /// Opens an existing instance.
    pub fn open(home: &Path) -> Result<Instance> {
        let config_path = home.join("config.toml");
        if !config_path.exists() {
            return Err(InstanceError::Missing(home.to_path_buf()));
        }
        let text = files::read(&config_path)?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
            let at = line.map(|n| format!(" (line {n})")).unwrap_or_default();
            InstanceError::Corrupt { path: config_path.clone(), reason: format!("{}{at}", e.message()) }
        })?;
        if let Some(reason) = config.sync.invalid_relay().or_else(|| config.agent.invalid()) {
            return Err(InstanceError::Corrupt { path: config_path, reason });
        }
        let id = read_id(home)?;
        let (machine_key, x25519_key) = keys::read(home)?;
        let reading = identity::lock_identity(home, false)?;
        let seed = identity::read_seed(home)?;
        let certificate = identity::read_certificate(home)?;
        if let Some(seed) = &seed
            && seed.identity_key().verifying_key().to_bytes() != certificate.identity_key
        {
            return Err(InstanceError::Corrupt {
                path: home.join("certificate"),
                reason: "it belongs to another identity than the seed (interrupted import or join?); run it again"
                    .into(),
            });
        }
        let lineage = rotation::read_lineage(home, &certificate.identity_key)?;
        drop(reading);
        Ok(Instance { home: home.to_path_buf(), id, config, machine_key, x25519_key, seed, certificate, lineage })
    }

    /// Creates a new instance named `name`; refuses if one exists. Resumes a
    /// creation that was interrupted (keeping the id and key already written).
    pub fn init(home: &Path, name: &str) -> Result<Instance> {
        let name = name.trim();
        // Bytes, not characters: the certificate stores at most 64 bytes.
        if !roost_identity::cert::valid_name(name) {
            return Err(InstanceError::BadName);
        }
        if let Ok(existing) = Instance::open(home) {
            return Err(InstanceError::Exists { home: home.to_path_buf(), name: existing.config.name });
        }
        files::create_private_dir(home)?;
        files::create_private_dir(&home.join("keys"))?;
        keys::create(home)?;
        files::write_new_or_keep(&home.join("instance-id"), new_instance_id().as_bytes())?;
        let config = Config {
            name: name.to_string(),
            gateway: GatewayConfig::default(),
            federation: Default::default(),
            lease: Default::default(),
            sync: Default::default(),
            agent: Default::default(),
            pool: Default::default(),
        };
        identity::create_identity(home, &config)?;
        let text = toml::to_string(&config).expect("config serialises");
        match files::write_new(&home.join("config.toml"), text.as_bytes()) {
            Ok(()) => {}
            Err(InstanceError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                let existing = Instance::open(home)?;
                return Err(InstanceError::Exists { home: home.to_path_buf(), name: existing.config.name });
            }
            Err(e) => return Err(e),
        }
        let instance = Instance::open(home)?;
        let store = instance.open_store()?;
        instance.register_self(&store)?;
        Ok(instance)
    }

    /// Opens the instance, creating it with `name` on first use. Safe when
    /// several processes do this at once on one fresh directory.
    pub fn open_or_init(home: &Path, name: &str) -> Result<Instance> {
        match Instance::open(home) {
            Err(InstanceError::Missing(_)) => match Instance::init(home, name) {
                Err(InstanceError::Exists { .. }) => Instance::open(home),
                other => other,
            },
            other => other,
        }
    }

    /// The instance's database.
    pub fn open_store(&self) -> Result<Store> {
        Ok(Store::open(&self.home.join("roost.db"), &self.id, self.machine_key.clone())?)
    }

    /// First 16 hex digits of SHA-256 over the machine's public key.
    pub fn key_fingerprint(&self) -> String {
        key_fingerprint(self.machine_key.verifying_key().as_bytes())
    }
}

/// A machine key's fingerprint, as `roost whoami` and the registry show it:
/// the first 16 hex digits of SHA-256 over the public key.
pub fn key_fingerprint(public_key: &[u8]) -> String {
    hex(&Sha256::digest(public_key)[..8])
}

/// The instance directory when neither the flag nor `ROOST_HOME` gives one
/// (the caller resolves those): `~/.roost` where it exists
/// (homes made by earlier versions, or by choice), else where the platform
/// keeps an application's data: `$XDG_DATA_HOME/roost` (by default
/// `~/.local/share/roost`) on Linux, `~/Library/Application Support/roost`
/// on macOS.
pub fn default_home() -> PathBuf {
    let user = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).unwrap_or_else(|| ".".into());
    let data = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    home_under(&user, data, cfg!(target_os = "macos"))
}

/// [`default_home`] for the user directory `user`, `$XDG_DATA_HOME` as
/// `data`, on macOS or not.
fn home_under(user: &Path, data: Option<PathBuf>, macos: bool) -> PathBuf {
    let earlier = user.join(".roost");
    if earlier.exists() {
        return earlier;
    }
    if macos {
        return user.join("Library/Application Support/roost");
    }
    // The XDG specification ignores a relative path.
    match data.filter(|d| d.is_absolute()) {
        Some(data) => data.join("roost"),
        None => user.join(".local/share/roost"),
    }
}

/// A name for a new instance when none is given: the host's name.
pub fn default_name() -> String {
    addresses::host_name().filter(|n| n.len() <= 64).unwrap_or_else(|| "roost".to_string())
}

/// The Roost version this binary is, as machines tell each other.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn new_instance_id() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    roost_core::RowId::v7(ms, rand::random()).to_string()
}

pub(crate) fn read_id(home: &Path) -> Result<String> {
    let path = home.join("instance-id");
    let text = files::read(&path)?;
    roost_core::RowId::parse(&text)
        .map(|id| id.to_string())
        .ok_or_else(|| InstanceError::Corrupt { path, reason: "not an instance id".into() })
}

pub(crate) fn read_secret(path: &Path) -> Result<[u8; 32]> {
    let text = files::read(path)?;
    unhex(text.trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| InstanceError::Corrupt { path: path.to_path_buf(), reason: "expected 64 hex digits".into() })
}

pub(crate) use roost_core::hex::decode as unhex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_home_is_an_earlier_roost_else_the_platforms_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path();
        assert_eq!(home_under(user, None, false), user.join(".local/share/roost"));
        assert_eq!(home_under(user, Some("/data".into()), false), Path::new("/data/roost"));
        assert_eq!(home_under(user, Some("relative".into()), false), user.join(".local/share/roost"));
        assert_eq!(home_under(user, None, true), user.join("Library/Application Support/roost"));
        std::fs::create_dir(user.join(".roost")).unwrap();
        assert_eq!(home_under(user, Some("/data".into()), false), user.join(".roost"));
        assert_eq!(home_under(user, None, true), user.join(".roost"));
    }
}
