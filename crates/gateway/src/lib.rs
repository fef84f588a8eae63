//! Roost's HTTP gateway (`roost serve`).
//!
//! Routes:
//! - `GET /health`: instance id, name, version, uptime, the lease as this
//!   machine sees it (503 when its loop stalls), and whether the
//!   database answers (503 when it does not);
//! - `/mcp`: the MCP tools over Streamable HTTP (the other machines call
//!   them over QUIC instead: [`mcp_quic`]);
//! - `/api/v1/...`: a small JSON API (instance info, certificate, memory
//!   search and get, the instances with their cached summaries, sync status
//!   and conflicts) and the pairing endpoints a joining machine talks to;
//! - `/api/v1/lease`: the awake role as this machine sees it, and the
//!   wakeup and leave commands (from this machine only);
//! - `/metrics`: Prometheus metrics ([`metrics_api`]);
//! - `/nest/...`: the Nest, a dashboard for a browser, behind its own
//!   password login ([`nest`]).
//!
//! `/mcp` and the store-reading API admit loopback callers that name a
//! loopback host without a token (configurable), and anyone else only with a
//! valid machine-to-machine token ([`auth`]). The same routes are served on
//! a Unix socket in the instance home (`roost.sock`, mode 0600), where the
//! CLI reaches its own gateway whatever the bind address; the commands that
//! change this machine (moving the awake role, reloading its identity) are
//! accepted only there.
//!
//! The gateway holds no logic of its own: requests go to `roost-mcp` and
//! `roost-store`, and every wait it makes on the database is bounded.

pub mod agent_api;
mod api;
mod auth;
pub mod conn;
mod federation_api;
mod guard;
mod handed_over;
mod lease_api;
mod machines_api;
mod mcp_http;
mod mcp_quic;
mod metrics_api;
pub mod nest;
pub mod openapi;
mod pair;
mod pair_quic;
mod pool_api;
pub mod sessions;
mod sync_api;

pub use machines_api::{MachinePart, MachineRow};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use roost_machine::Machine;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use roost_federation::Federation;
use roost_identity::TokenVerifier;
use roost_instance::Instance;
use roost_mcp::RoostTools;
use roost_store::Store;
use roost_sync::SyncService;

/// How long a request may wait on the database before it is answered 503.
pub const DB_WAIT: Duration = Duration::from_secs(5);
/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the gateway serves.
pub struct Gateway {
    pub instance: Arc<Instance>,
    pub store: Arc<Store>,
    /// `Host` header values `/mcp` accepts; empty accepts any.
    pub allowed_hosts: Vec<String>,
    /// Host names the Nest answers to, besides any IP address: loopback
    /// names and the names this machine advertises.
    pub nest_hosts: Vec<String>,
    /// Whether callers on a loopback address may use `/mcp` without a token.
    pub loopback_without_token: bool,
    /// Whether the Nest answers other machines over plain HTTP
    /// (`roost serve --insecure-http`); otherwise only this one.
    pub nest_insecure_http: bool,
    /// Replication and the awake role, when they run in this process.
    pub machine: Option<Arc<Machine>>,
    /// Calls to the other instances, when this gateway makes them.
    pub federation: Option<Federation>,
}

/// Shared by every request handler.
pub(crate) struct AppState {
    pub instance: Arc<Instance>,
    pub store: Arc<Store>,
    pub started: Instant,
    pub loopback_without_token: bool,
    pub tokens: Mutex<TokenVerifier>,
    pub pairing: pair::Sessions,
    pub machine: Option<Arc<Machine>>,
    pub federation: Federation,
    pub nest: nest::NestState,
    pub nest_hosts: Vec<String>,
    pub nest_insecure_http: bool,
}

/// The MCP sessions of `/mcp`: rmcp's, held to the caps.
pub(crate) type Sessions = sessions::CappedSessions<LocalSessionManager>;

impl AppState {
    /// Replication as it runs now, if it runs in this process.
    pub(crate) fn sync(&self) -> Option<Arc<SyncService>> {
        self.machine.as_ref().map(|m| m.sync())
    }

    /// The awake role's lease, if it runs in this process.
    pub(crate) fn awake(&self) -> Option<Arc<roost_awake::AwakeService>> {
        self.machine.as_ref().map(|m| m.awake())
    }

    /// The instance as it is on disk now: `roost join` or `roost identity
    /// import` may have changed its identity since the gateway started.
    pub(crate) fn current_instance(&self) -> Result<Instance, api::ApiError> {
        Instance::open(&self.instance.home)
            .map_err(|e| api::ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}

impl Gateway {
    /// The gateway of `instance`, to be served on `addr`.
    pub fn new(instance: Arc<Instance>, store: Arc<Store>, addr: SocketAddr) -> Gateway {
        let loopback_without_token = instance.config.gateway.loopback_without_token;
        // Whatever names it advertises to the other machines, too.
        let advertised: Vec<String> = roost_instance::addresses::advertised(&instance.config.gateway.advertise, addr)
            .iter()
            .filter_map(|u| roost_instance::addresses::host_and_port(u))
            .map(|(host, _)| host)
            .collect();
        let mut allowed_hosts = allowed_hosts_for(addr);
        if !allowed_hosts.is_empty() {
            allowed_hosts.extend(advertised.iter().cloned());
        }
        let mut nest_hosts: Vec<String> = LOOPBACK_NAMES.map(String::from).to_vec();
        nest_hosts.extend(advertised);
        Gateway {
            instance,
            store,
            allowed_hosts,
            nest_hosts,
            loopback_without_token,
            nest_insecure_http: false,
            machine: None,
            federation: None,
        }
    }

    /// The axum router, with `cancel` ending the MCP sessions; starts
    /// answering the other machines' federation connections, when this
    /// process runs replication.
    pub fn router(self, cancel: CancellationToken) -> Router {
        // Without a refreshing federation from `roost serve`, one that
        // answers calls but keeps no summaries.
        let federation = self.federation.unwrap_or_else(|| {
            let sync: roost_federation::SyncSource = match &self.machine {
                Some(machine) => machine.sync_source(),
                None => Arc::new(|| None),
            };
            Federation::new(&self.instance, self.store.clone(), sync)
        });
        let config = &self.instance.config;
        let mut tools = RoostTools::new(self.store.clone(), &config.name, &config.federation.peer_tools)
            .with_remote(Arc::new(federation.clone()));
        if let Some(machine) = &self.machine {
            tools = tools
                .with_agent(Arc::new(agent_api::MachineAgent(Arc::downgrade(machine))))
                .with_pool(Arc::new(pool_api::MachinePool(Arc::downgrade(machine))));
        }
        if let Some(incoming) = self.machine.as_ref().and_then(|m| m.take_connections(roost_federation::ALPN)) {
            tokio::spawn(mcp_quic::serve(incoming, tools.clone(), self.store.clone(), cancel.clone()));
        }
        let pairing = self.machine.as_ref().and_then(|m| m.take_connections(roost_identity::pairing::ALPN));
        let pairing_cancel = cancel.clone();
        let mut config = StreamableHttpServerConfig::default().with_cancellation_token(cancel);
        config = if self.allowed_hosts.is_empty() {
            config.disable_allowed_hosts()
        } else {
            config.with_allowed_hosts(self.allowed_hosts)
        };
        let sessions = Arc::new(Sessions::new(
            LocalSessionManager::default(),
            sessions::MAX_SESSIONS,
            sessions::MAX_SESSIONS_PER_CALLER,
        ));
        config = config.with_max_request_body_bytes(mcp_http::MAX_BODY);
        let mcp: StreamableHttpService<RoostTools, Sessions> =
            StreamableHttpService::new(move || Ok(tools.clone()), sessions.clone(), config);
        let mcp = Router::new()
            .nest_service("/mcp", mcp)
            .layer(axum::middleware::from_fn_with_state(sessions, mcp_http::edges));
        let state = Arc::new(AppState {
            tokens: Mutex::new(token_verifier(&self.instance.id, &self.store)),
            instance: self.instance,
            store: self.store,
            started: Instant::now(),
            loopback_without_token: self.loopback_without_token,
            pairing: pair::Sessions::default(),
            machine: self.machine,
            federation,
            nest: nest::NestState::default(),
            nest_hosts: self.nest_hosts,
            nest_insecure_http: self.nest_insecure_http,
        });
        if let Some(incoming) = pairing {
            tokio::spawn(pair_quic::serve(incoming, state.clone(), pairing_cancel));
        }
        let protected = api::protected_routes(state.clone())
            .merge(sync_api::routes(state.clone()))
            .merge(lease_api::routes(state.clone()))
            .merge(agent_api::routes(state.clone()))
            .merge(pool_api::routes(state.clone()))
            .merge(machines_api::routes(state.clone()))
            .merge(federation_api::routes(state.clone()))
            .merge(metrics_api::routes(state.clone()))
            .merge(mcp)
            .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
        // One span per request, named by its method and path (never the
        // query, which may carry what was searched for).
        let traced = TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<axum::body::Body>| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        });
        api::public_routes(state.clone())
            .merge(pair::routes(state.clone()))
            .merge(openapi::routes(state.clone()))
            .merge(protected)
            .layer(axum::middleware::from_fn(guard::api))
            .merge(nest::routes(state))
            .layer(traced)
    }

    /// Serves on `listener` (and on the Unix `socket`, when given) until
    /// `shutdown` resolves, then drains for at most [`SHUTDOWN_GRACE`]. Every
    /// connection is held to [`conn::Limits`].
    pub async fn serve(
        self,
        listener: TcpListener,
        socket: Option<UnixListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let cancel = CancellationToken::new();
        let router = self.router(cancel.clone());
        let limits = conn::Limits::for_tcp();
        tracing::info!(connections = limits.connections, "connection limit");
        let local = socket.map(|socket| {
            let router = router.clone().layer(axum::Extension(auth::OverSocket));
            let limits = conn::Limits::with_connections(conn::MAX_SOCKET_CONNECTIONS);
            tokio::spawn(conn::serve(socket, router, limits, cancel.clone()))
        });
        // Responses go out in several small writes (an SSE event per
        // message); without TCP_NODELAY each later write waits for the
        // client's delayed ACK, about 40 ms on Linux.
        let listener = listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        });
        let server = tokio::spawn(conn::serve(listener, router, limits, cancel.clone()));
        shutdown.await;
        tracing::info!("shutting down");
        cancel.cancel();
        let drained = async {
            if let Some(local) = local {
                local.await.map_err(std::io::Error::other)?;
            }
            server.await.map_err(std::io::Error::other)
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, drained).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                Ok(())
            }
        }
    }
}

/// The token verifier of instance `id`, holding the nonces an earlier run
/// accepted whose tokens are still live.
fn token_verifier(id: &str, store: &Store) -> TokenVerifier {
    let mut verifier = TokenVerifier::new(id);
    match store.live_token_nonces(roost_instance::unix_now()) {
        Ok(live) => live.into_iter().for_each(|(nonce, expires_at)| verifier.remember(nonce, expires_at)),
        Err(e) => tracing::warn!(error = %e, "cannot read the nonces of earlier tokens; each is refused when recorded"),
    }
    verifier
}

/// The names of this machine's loopback interface, as a `Host` gives them.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The `Host` values to accept for a gateway bound to `addr`: loopback names,
/// plus the bound address itself; none (accept any) for a wildcard bind.
pub fn allowed_hosts_for(addr: SocketAddr) -> Vec<String> {
    if addr.ip().is_unspecified() {
        return Vec::new();
    }
    let mut hosts: Vec<String> = LOOPBACK_NAMES.map(String::from).to_vec();
    let ip = addr.ip().to_string();
    if !hosts.contains(&ip) {
        hosts.push(ip);
    }
    hosts
}
