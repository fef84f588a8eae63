//! Replication between the machines of one identity, over iroh (QUIC, TLS 1.3).
//!
//! The endpoint id is the machine's Ed25519 key. Each machine dials the
//! others it finds in its registry at every address the registry holds for
//! them ([`address`]: host names resolved at each dial; the UDP port of the
//! sync endpoint is the TCP port of the peer's gateway) with capped backoff,
//! and accepts their dials; a session starts with a hello whose certificate
//! must verify against this identity and name the key the connection was
//! made with. Hellos and later `Machines` messages carry every machine each
//! side knows with its addresses, so a machine that joins through one becomes
//! known to all, and one that moves is found again. The protocol decisions
//! (what to send, pacing, holding entries not yet ready) are in
//! `roost_core::protocol`; verification and application are `Store::apply`.
//! Discovery is off. With `[sync] relays` configured, the endpoint keeps a
//! home relay and dials every peer through those relays as well as at its
//! addresses: iroh prefers a direct path and falls back to the relay when
//! none works (both behind NAT, UDP blocked).

pub mod address;
pub mod dial;
pub mod frame;
mod resolver;
mod session;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use iroh::endpoint::{Connection, QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, RelayMap, RelayMode, RelayUrl, SecretKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use roost_tasks::{Blocked, Tasks};

pub use roost_core::protocol::Heads;
use roost_core::session::SessionError;
use roost_instance::Instance;
use roost_store::{InstanceEntry, Store, StoreError};

/// The ALPN of this protocol; the version in it changes with the protocol's.
pub const ALPN: &[u8] = b"roost/sync/1";

/// How long a dial may take before it counts as failed.
const DIAL_WAIT: Duration = Duration::from_secs(5);
/// Longest wait to write a relay a peer named into `config.toml`.
const CONFIG_WAIT: Duration = Duration::from_secs(5);
/// A connection that heard nothing for this long is closed (milliseconds):
/// two of iroh's 5 s keep-alives, so a peer that moved or vanished is let go
/// in seconds rather than iroh's half a minute, and its sessions are made
/// again on a connection that works.
const IDLE_TIMEOUT_MS: VarInt = VarInt::from_u32(10_000);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the dialer looks for peers to connect to.
const DIAL_TICK: Duration = Duration::from_millis(200);
/// How long stopping waits for sessions to end.
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("cannot bind the QUIC endpoint on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("stream: {0}")]
    Stream(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("cannot dial: {0}")]
    NoAddress(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

impl From<SessionError> for SyncError {
    fn from(e: SessionError) -> SyncError {
        if e.is_refusal() { SyncError::Refused(e.to_string()) } else { SyncError::Protocol(e.to_string()) }
    }
}

/// What this machine knows of one peer, as shown by `roost sync status`,
/// `/health` and the registry.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub id: String,
    pub name: String,
    pub state: PeerState,
    /// Where the live session reaches it, if one is up.
    pub address: Option<String>,
    /// How the live session's packets travel: `direct` or `relayed`.
    pub path: Option<&'static str>,
    /// The live session's round-trip time, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Every address the registry holds for it, freshest first.
    pub addresses: Vec<String>,
    /// The Roost version it last said it runs.
    pub version: Option<String>,
    pub last_sync: Option<String>,
    /// Entries the peer holds that this machine lacks.
    pub behind: u64,
    /// Entries this machine holds that the peer lacks.
    pub ahead: u64,
    /// How long either side has lacked entries of the other (0 when
    /// neither does): replication lag in time.
    pub lag_seconds: f64,
    pub last_error: Option<String>,
}

/// Where replication with a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerState {
    /// Connected, and neither side lacks entries.
    Online,
    /// Connected, and one side lacks entries.
    Syncing,
    /// Tried and not reached.
    Offline,
    /// None of its addresses can be dialed.
    NoAddress,
    /// Not tried yet.
    Unknown,
    Revoked,
}

impl PeerState {
    pub fn word(self) -> &'static str {
        match self {
            PeerState::Online => "online",
            PeerState::Syncing => "syncing",
            PeerState::Offline => "offline",
            PeerState::NoAddress => "no-address",
            PeerState::Unknown => "unknown",
            PeerState::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// Live facts about a peer, kept between sessions.
#[derive(Debug, Default, Clone)]
struct PeerLive {
    connected: bool,
    attempted: bool,
    /// The last dial found no address to try.
    no_address: bool,
    /// The remote address of the live session.
    address: Option<String>,
    /// The live session's connection, for its path and round-trip time.
    connection: Option<Connection>,
    /// The peer said in its hello that it keeps the log (not a witness).
    keeps_log: bool,
    last_sync: Option<String>,
    behind: u64,
    ahead: u64,
    /// The heads the peer last reported (a peer that keeps the log only),
    /// and when.
    holds: Heads,
    reported: Option<std::time::Instant>,
    /// Since when either side has lacked entries of the other, if it does.
    out_of_step_since: Option<std::time::Instant>,
    last_error: Option<String>,
}

struct Active {
    token: u64,
    dialer: String,
    cancel: CancellationToken,
}

pub(crate) struct Shared {
    pub instance: Arc<Instance>,
    pub store: Arc<Store>,
    endpoint: Endpoint,
    /// Bumped after every commit that may have grown the log.
    pub log_grew: watch::Sender<u64>,
    /// Bumped when the registry learned a machine or an address, so every
    /// session tells its peer.
    pub registry_grew: watch::Sender<u64>,
    live: Mutex<BTreeMap<String, PeerLive>>,
    sessions: Mutex<HashMap<String, Active>>,
    next_token: AtomicU64,
    /// Every task of the service: loops, dials and sessions.
    pub tasks: Tasks,
    /// Where connections of the other protocols sharing the endpoint go,
    /// by ALPN.
    others: Vec<(&'static [u8], mpsc::Sender<Connection>)>,
    /// Whether this machine keeps the log (a witness does not).
    pub keeps_data: bool,
    pub relays: Relays,
    /// Bumped when this machine took a rotation of the chain's identity:
    /// whoever runs this service starts it again on the new identity.
    pub identity_changed: watch::Sender<u64>,
}

/// The relays this machine uses: `[sync] relays` as the instance opened,
/// and those peers named in their hellos since. Replication, the lease and
/// federation read it at each dial. Cheap to clone.
#[derive(Clone)]
pub struct Relays(Arc<Mutex<Vec<RelayUrl>>>);

impl Relays {
    pub fn of(instance: &Instance) -> Relays {
        Relays(Arc::new(Mutex::new(relays(instance))))
    }

    pub fn get(&self) -> Vec<RelayUrl> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds those of `named` not known yet, and returns them.
    fn add_new(&self, named: Vec<RelayUrl>) -> Vec<RelayUrl> {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let new: Vec<RelayUrl> = named.into_iter().filter(|r| !known.contains(r)).collect();
        known.extend(new.iter().cloned());
        new
    }
}

/// The running replication service of one instance.
pub struct SyncService {
    shared: Arc<Shared>,
}

/// Rebuilds a search index left deferred by a catch-up that a stop cut
/// short: the next catch-up defers it again if it is still far behind.
async fn finish_deferred_index(store: Arc<Store>) {
    if let Err(e) = session::blocking(&store, |s| s.pace_search_index(0)).await {
        tracing::warn!(error = %e, "the search index could not be rebuilt");
    }
}

impl SyncService {
    /// Starts on an endpoint bound already (with [`ALPN`], and the ALPNs of
    /// the protocols whose connections go to `others`), which it keeps when
    /// it stops: a machine that takes another identity restarts replication
    /// on the same key and port. Without `keeps_data` (a witness) it
    /// exchanges only the machines of the chain, never entries. It bumps
    /// `identity_changed` when this machine takes a rotation of the chain's
    /// identity.
    pub fn start_on(
        instance: Arc<Instance>,
        store: Arc<Store>,
        endpoint: Endpoint,
        others: Vec<(&'static [u8], mpsc::Sender<Connection>)>,
        keeps_data: bool,
        identity_changed: watch::Sender<u64>,
    ) -> SyncService {
        let relays = Relays::of(&instance);
        let (log_grew, _) = watch::channel(0u64);
        let (registry_grew, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            instance,
            store: store.clone(),
            endpoint,
            log_grew,
            registry_grew,
            live: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            tasks: Tasks::new(),
            others,
            keeps_data,
            relays,
            identity_changed,
        });
        let hook = shared.log_grew.clone();
        store.set_commit_hook(Box::new(move || {
            hook.send_modify(|n| *n = n.wrapping_add(1));
        }));
        shared.tasks.spawn(accept_loop(shared.clone()));
        shared.tasks.spawn(dial_loop(shared.clone()));
        shared.tasks.spawn(finish_deferred_index(store));
        SyncService { shared }
    }

    /// The endpoint, for a protocol sharing it to dial with.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// The relays this machine uses now: `[sync] relays`, and those peers
    /// named since.
    pub fn relays(&self) -> Vec<RelayUrl> {
        self.shared.relays.get()
    }

    /// The same relays, as a handle that follows what peers name later.
    pub fn relay_set(&self) -> Relays {
        self.shared.relays.clone()
    }

    /// The UDP addresses the endpoint is bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.endpoint.bound_sockets()
    }

    /// Tells every session the registry changed (a machine joined here), so
    /// each tells its peer at once.
    pub fn registry_changed(&self) {
        self.shared.registry_changed();
    }

    /// Every registered peer and what is known of it now.
    pub fn status(&self) -> Result<Vec<PeerStatus>, SyncError> {
        let me = &self.shared.instance.id;
        let live = self.shared.live.lock().expect("peer status poisoned").clone();
        let entries = self.shared.store.instances()?;
        let names = roost_store::registry::display_names(&entries);
        Ok(entries
            .into_iter()
            .filter(|e| &e.id != me)
            .map(|e| {
                let l = live.get(&e.id).cloned().unwrap_or_default();
                let (path, rtt_ms) = l.connection.as_ref().filter(|_| l.connected).and_then(path_of).unzip();
                let state = match (e.is_revoked(), l.connected) {
                    (true, _) => PeerState::Revoked,
                    (_, true) if l.behind > 0 || l.ahead > 0 => PeerState::Syncing,
                    (_, true) => PeerState::Online,
                    _ if l.no_address => PeerState::NoAddress,
                    _ if l.attempted || l.last_sync.is_some() => PeerState::Offline,
                    _ => PeerState::Unknown,
                };
                PeerStatus {
                    name: names[&e.id].clone(),
                    id: e.id,
                    state,
                    address: l.address.filter(|_| l.connected),
                    path,
                    rtt_ms,
                    addresses: e.addresses,
                    version: e.version,
                    last_sync: l.last_sync.or(e.last_seen),
                    behind: l.behind,
                    ahead: l.ahead,
                    lag_seconds: l.out_of_step_since.map_or(0.0, |since| since.elapsed().as_secs_f64()),
                    last_error: l.last_error,
                }
            })
            .collect())
    }

    /// Changes after every commit that may have grown the log, written here
    /// or applied from a peer.
    pub fn log_grew(&self) -> watch::Receiver<u64> {
        self.shared.log_grew.subscribe()
    }

    /// Every peer with a live session that keeps the log, with the heads it
    /// last reported (what it is known to hold) and how long ago it did:
    /// what the agent's outbox decides by (`roost_agent::outbox`).
    pub fn connected_holdings(&self) -> Vec<(String, Heads, std::time::Duration)> {
        let live = self.shared.live.lock().expect("peer status poisoned");
        live.iter()
            .filter(|(_, l)| l.connected && l.keeps_log)
            .filter_map(|(id, l)| Some((id.clone(), l.holds.clone(), l.reported?.elapsed())))
            .collect()
    }

    /// Ends every session and stops accepting and dialing, waiting a bounded
    /// time for all of it to end; the endpoint stays open for whatever runs
    /// on it next.
    pub async fn stop(&self) {
        if !self.shared.tasks.stop(STOP_GRACE).await {
            tracing::warn!("replication tasks still running {STOP_GRACE:?} after the stop");
        }
    }

    /// Closes every session and the endpoint, waiting a bounded time.
    pub async fn shutdown(&self) {
        self.stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.shared.endpoint.close()).await;
    }
}

impl Shared {
    /// Takes up the relays a peer uses that this machine did not know: into
    /// `config.toml`, so a restart keeps them, and into the running endpoint.
    async fn learn_relays(&self, named: &[String]) {
        let known = self.relays.get();
        let new: Vec<RelayUrl> =
            named.iter().filter_map(|r| r.parse::<RelayUrl>().ok()).filter(|r| !known.contains(r)).collect();
        if new.is_empty() {
            return;
        }
        let home = self.instance.home.clone();
        let texts: Vec<String> = new.iter().map(ToString::to_string).collect();
        let save = move || Instance::open(&home).and_then(|mut on_disk| on_disk.add_relays(&texts));
        let saved = roost_tasks::blocking("the config", CONFIG_WAIT, save).await.map_err(|e| e.to_string());
        if let Err(e) = saved.and_then(|written| written.map_err(|e| e.to_string())) {
            return tracing::warn!(error = %e, "a relay a peer named is not taken up");
        }
        for relay in self.relays.add_new(new) {
            tracing::info!(%relay, "using a relay a peer named");
            self.endpoint.insert_relay(relay.clone(), Arc::new(iroh::RelayConfig::from(relay))).await;
        }
    }

    fn registry_changed(&self) {
        self.registry_grew.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn update(&self, peer: &str, f: impl FnOnce(&mut PeerLive)) {
        let mut live = self.live.lock().expect("peer status poisoned");
        let l = live.entry(peer.to_string()).or_default();
        f(l);
        if l.behind == 0 && l.ahead == 0 {
            l.out_of_step_since = None;
        } else {
            l.out_of_step_since.get_or_insert_with(std::time::Instant::now);
        }
    }

    /// Registers an established session; false if a better one exists (the
    /// one dialed by the smaller instance id survives, on both sides).
    fn admit(&self, peer: &str, dialer: &str, cancel: CancellationToken) -> Option<u64> {
        let mut sessions = self.sessions.lock().expect("sessions poisoned");
        if let Some(existing) = sessions.get(peer) {
            if !roost_core::session::replaces(&existing.dialer, dialer) {
                return None;
            }
            existing.cancel.cancel();
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        sessions.insert(peer.to_string(), Active { token, dialer: dialer.to_string(), cancel });
        Some(token)
    }

    fn release(&self, peer: &str, token: u64) {
        let mut sessions = self.sessions.lock().expect("sessions poisoned");
        if sessions.get(peer).is_some_and(|a| a.token == token) {
            sessions.remove(peer);
            drop(sessions);
            self.update(peer, |l| {
                l.connected = false;
                l.connection = None;
            });
        }
    }

    /// Ends the session with `peer`, if one is open (it was revoked).
    fn end_session(&self, peer: &str) {
        if let Some(active) = self.sessions.lock().expect("sessions poisoned").get(peer) {
            active.cancel.cancel();
        }
    }

    fn has_session(&self, peer: &str) -> bool {
        self.sessions.lock().expect("sessions poisoned").contains_key(peer)
    }
}

/// Whether `conn`'s packets go direct or through a relay now, and its
/// round-trip time in milliseconds.
fn path_of(conn: &Connection) -> Option<(&'static str, f64)> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected())?;
    let kind = if path.is_relay() { "relayed" } else { "direct" };
    Some((kind, path.rtt().as_secs_f64() * 1000.0))
}

/// The remote IP of the connection's path in use; `None` through a relay.
pub fn remote_ip(conn: &Connection) -> Option<IpAddr> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected()).or_else(|| paths.iter().next())?;
    match path.remote_addr() {
        iroh::TransportAddr::Ip(socket) => Some(socket.ip()),
        _ => None,
    }
}

/// The relays of `[sync] relays` (checked when the instance was opened).
pub fn relays(instance: &Instance) -> Vec<RelayUrl> {
    instance.config.sync.relays.iter().filter_map(|r| r.parse().ok()).collect()
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        shared.tasks.clone().spawn(async move {
            let connection = match incoming.accept() {
                Ok(accepting) => tokio::time::timeout(DIAL_WAIT, accepting).await,
                Err(e) => return tracing::debug!(error = %e, "sync connection not accepted"),
            };
            if let Ok(Ok(conn)) = &connection {
                dial::note(&shared.endpoint, conn);
            }
            match connection {
                Ok(Ok(conn)) if conn.alpn() != ALPN => {
                    match shared.others.iter().find(|(alpn, _)| conn.alpn() == *alpn) {
                        Some((_, other)) => {
                            let _ = other.send(conn).await;
                        }
                        None => conn.close(VarInt::from_u32(0), b"unknown protocol"),
                    }
                }
                Ok(Ok(conn)) => {
                    let accepted = tokio::time::timeout(session::HELLO_WAIT, conn.accept_bi()).await;
                    match accepted {
                        Ok(Ok((send, recv))) => {
                            let _ = session::run(shared, conn, send, recv, None).await;
                        }
                        _ => conn.close(VarInt::from_u32(0), b"no stream"),
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "sync handshake failed"),
                Err(_) => tracing::debug!("sync handshake timed out"),
            }
        });
    }
}

/// Keeps a session open with every reachable peer.
async fn dial_loop(shared: Arc<Shared>) {
    let mut next_try: HashMap<String, (Instant, Duration)> = HashMap::new();
    let dialing: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut revoked: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(DIAL_TICK).await;
        let Ok(peers) = session::blocking(&shared.store, |s| s.instances()).await else { continue };
        // A machine revoked here (by `roost instance revoke` or a peer's
        // word): its session ends, and every peer is told.
        let newly_revoked: Vec<&InstanceEntry> =
            peers.iter().filter(|p| p.is_revoked() && !revoked.contains(&p.id)).collect();
        for peer in &newly_revoked {
            shared.end_session(&peer.id);
            revoked.insert(peer.id.clone());
        }
        if !newly_revoked.is_empty() {
            shared.registry_changed();
        }
        for peer in peers {
            if peer.id == shared.instance.id || peer.is_revoked() || shared.has_session(&peer.id) {
                continue;
            }
            let now = Instant::now();
            let (when, backoff) = next_try.get(&peer.id).copied().unwrap_or((now, BACKOFF_MIN));
            if now < when || !dialing.lock().expect("dialing poisoned").insert(peer.id.clone()) {
                continue;
            }
            next_try.insert(peer.id.clone(), (now + backoff, (backoff * 2).min(BACKOFF_MAX)));
            let (shared, dialing) = (shared.clone(), dialing.clone());
            shared.tasks.clone().spawn(async move {
                let outcome = dial(&shared, &peer).await;
                if let Err(e) = &outcome {
                    tracing::debug!(peer = %peer.name, error = %e, "sync dial failed");
                    let no_address = matches!(e, SyncError::NoAddress(_));
                    shared.update(&peer.id, |l| {
                        l.attempted = true;
                        l.no_address = no_address;
                        l.last_error = Some(e.to_string());
                    });
                }
                dialing.lock().expect("dialing poisoned").remove(&peer.id);
            });
        }
        // A peer we are connected to starts from the shortest backoff next time.
        next_try.retain(|id, _| !shared.has_session(id));
    }
}

/// Binds an iroh endpoint with the machine key `key` on `bind` (UDP; `None`:
/// any port on every interface, for an endpoint that only dials), with a
/// home relay among `relays` if any, accepting `alpns`.
pub async fn bind_endpoint(
    key: &SigningKey,
    bind: Option<SocketAddr>,
    relays: &[RelayUrl],
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, SyncError> {
    let secret = SecretKey::from_bytes(&key.to_bytes());
    let shown = bind.map_or_else(|| "any address".to_string(), |a| a.to_string());
    let bind_error = |reason: String| SyncError::Bind { addr: shown.clone(), reason };
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        // A custom map even when empty: relays a machine learns when it joins
        // are added to the running endpoint (`Endpoint::insert_relay`).
        .relay_mode(RelayMode::Custom(relays.iter().cloned().collect::<RelayMap>()))
        .clear_address_lookup()
        .dns_resolver(iroh::dns::DnsResolver::custom(resolver::SystemResolver))
        .transport_config(QuicTransportConfig::builder().max_idle_timeout(Some(IDLE_TIMEOUT_MS.into())).build())
        .alpns(alpns);
    if let Some(bind) = bind {
        builder = builder.clear_ip_transports().bind_addr(bind).map_err(|e| bind_error(e.to_string()))?;
    }
    tokio::time::timeout(DIAL_WAIT, builder.bind())
        .await
        .map_err(|_| bind_error("timed out".into()))?
        .map_err(|e| bind_error(e.to_string()))
}

async fn dial(shared: &Arc<Shared>, peer: &InstanceEntry) -> Result<(), SyncError> {
    let relays = shared.relays.get();
    let addr = address::endpoint_addr(peer, &relays, &shared.endpoint.bound_sockets())
        .await
        .map_err(|e| SyncError::NoAddress(e.to_string()))?;
    let conn = dial::connect(&shared.endpoint, addr, ALPN, DIAL_WAIT)
        .await
        .map_err(|e| SyncError::Stream(format!("{}: {e}", peer.name)))?;
    let (send, recv) = conn.open_bi().await.map_err(|e| SyncError::Stream(e.to_string()))?;
    session::run(shared.clone(), conn, send, recv, Some(&peer.id)).await
}

pub(crate) use roost_store::now_text;
