//! Calls to other instances' MCP tools: one MCP session per instance,
//! opened on first use and kept for the next call, over one of two
//! transports (`[federation] transport`):
//! - **QUIC** (the default): a bidirectional stream, ALPN [`ALPN`], on an
//!   iroh connection made with this machine's key to the peer's key, so the
//!   call is encrypted and each end knows the other; the callee takes the
//!   caller's identity from the connection, and no token is needed. The
//!   endpoint is replication's when it runs in this process, else one bound
//!   here for dialing only (a `roost mcp` process).
//! - **HTTP**: the peer gateway's `/mcp` with rmcp's Streamable HTTP client.
//!   Tokens are single-use, so the HTTP client under rmcp mints a fresh one
//!   for every request it sends instead of repeating a static header. Only
//!   `https://` addresses and loopback are called this way: memory contents
//!   never cross a network in clear.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use iroh::{Endpoint, RelayUrl};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, ClientJsonRpcMessage};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use serde_json::{Map, Value};
use sse_stream::Sse;
use tokio::sync::Mutex;

use roost_identity::Token;
use roost_instance::{FederationTransport, Instance};
use roost_mcp::Action;
use roost_store::InstanceEntry;

use roost_sync::PeerState;

use crate::SyncSource;

/// The ALPN of MCP sessions between machines; the version changes with the
/// framing (newline-delimited JSON-RPC, one session per stream).
pub const ALPN: &[u8] = b"roost/mcp/1";

/// How long a minted token lives: one request needs seconds at most.
const TOKEN_LIFETIME: i64 = 60;
/// Longest wait for a connection to another instance.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for replication's view of a peer that did not answer.
const OFFLINE_CHECK_WAIT: Duration = Duration::from_secs(1);

/// Why a remote call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer within the call's time limit.
    #[error("timed out")]
    TimedOut,
    /// The instance could not be reached, or its session broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The instance answered with a tool error (including refusals).
    #[error("{0}")]
    Refused(String),
}

/// Why no MCP session could be opened at an address.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open an MCP session at {endpoint}: {source}")]
    Initialize { endpoint: String, source: Box<rmcp::service::ClientInitializeError> },
    #[error("cannot connect to {endpoint}: {why}")]
    Connect { endpoint: String, why: String },
    #[error("{0} is plain HTTP off this machine; federation over HTTP needs https:// (or use transport = \"quic\")")]
    PlainText(String),
}

/// The HTTP client rmcp drives, signing a new token for every request.
#[derive(Clone)]
struct TokenClient {
    http: reqwest::Client,
    issuer: String,
    audience: String,
    key: Arc<SigningKey>,
}

impl TokenClient {
    fn token(&self) -> Option<String> {
        let now = roost_instance::unix_now();
        let token = Token {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            issued_at: now,
            expires_at: now + TOKEN_LIFETIME,
            nonce: rand::random(),
        };
        token.sign(&self.key).inspect_err(|e| tracing::warn!(error = %e, "cannot sign a machine token")).ok()
    }
}

type Headers = HashMap<HeaderName, HeaderValue>;
type Failure = StreamableHttpError<reqwest::Error>;

impl StreamableHttpClient for TokenClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth: Option<String>,
        headers: Headers,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        self.http.post_message(uri, message, session_id, self.token(), headers).await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth: Option<String>,
        headers: Headers,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        self.http
            .post_message_with_max_sse_event_size(uri, message, session_id, self.token(), headers, max_sse_event_size)
            .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth: Option<String>,
        headers: Headers,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        self.http.post_message_with_response_limits(uri, message, session_id, self.token(), headers, limits).await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth: Option<String>,
        headers: Headers,
    ) -> Result<(), Failure> {
        self.http.delete_session(uri, session_id, self.token(), headers).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth: Option<String>,
        headers: Headers,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failure> {
        self.http.get_stream(uri, session_id, last_event_id, self.token(), headers).await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth: Option<String>,
        headers: Headers,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failure> {
        self.http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                self.token(),
                headers,
                max_sse_event_size,
            )
            .await
    }
}

type Session = Arc<RunningService<RoleClient, ClientConfig>>;

/// A kept session, with where it leads (a gateway URL, or a machine key for
/// QUIC): a session is reused only while the peer is still found there.
struct Kept {
    via: String,
    session: Session,
}

/// Open MCP sessions to other instances, by instance id.
pub struct Connections {
    transport: FederationTransport,
    issuer: String,
    key: Arc<SigningKey>,
    /// Relays peers may be reached through (`[sync] relays`).
    relays: Vec<RelayUrl>,
    sync: SyncSource,
    /// The endpoint this process dials from when no replication runs in it.
    own_endpoint: tokio::sync::OnceCell<Endpoint>,
    http: reqwest::Client,
    open: Mutex<HashMap<String, Kept>>,
}

impl Connections {
    /// Connections made as `instance`, with its machine key, over the
    /// transport its config names; QUIC dials from the endpoint of the
    /// replication `sync` finds, if any.
    pub fn new(instance: &Instance, sync: SyncSource) -> Connections {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_WAIT)
            .no_proxy()
            .build()
            .expect("building an HTTP client without TLS settings cannot fail");
        Connections {
            transport: instance.config.federation.transport,
            issuer: instance.id.clone(),
            key: Arc::new(instance.machine_key.clone()),
            relays: roost_sync::relays(instance),
            sync,
            own_endpoint: tokio::sync::OnceCell::new(),
            http,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The plain HTTP client, for endpoints outside MCP (`/health`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Calls `tool` on the instance `peer`, within `limit` in all
    /// (connecting included). A kept session that fails is dropped; a
    /// read-only tool is then tried once more on a new session. A write is
    /// not: the failed attempt may have run before its answer was lost, and
    /// running it twice would write twice.
    pub async fn call(
        &self,
        peer: &InstanceEntry,
        tool: &str,
        args: Map<String, Value>,
        limit: Duration,
    ) -> Result<Value, CallError> {
        let started = std::time::Instant::now();
        let outcome = self.call_within(peer, tool, args, limit).await;
        let word = match &outcome {
            Ok(_) => "answered",
            Err(CallError::TimedOut) => "timed_out",
            Err(CallError::Unreachable(_)) => "unreachable",
            Err(CallError::Refused(_)) => "refused",
        };
        let labels = [("peer", peer.id.as_str()), ("outcome", word)];
        roost_metrics::time(&roost_metrics::metrics().federation_seconds, &labels, started.elapsed());
        outcome
    }

    async fn call_within(
        &self,
        peer: &InstanceEntry,
        tool: &str,
        args: Map<String, Value>,
        limit: Duration,
    ) -> Result<Value, CallError> {
        let id = &peer.id;
        // The session a call timed out on is dropped: a peer that moved
        // or stalled leaves a connection that looks open and answers nothing.
        let used: std::sync::Mutex<Option<Session>> = std::sync::Mutex::new(None);
        let keep =
            |session: &Session| *used.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(session.clone());
        let attempt = async {
            let (session, reused) = self.session(peer).await?;
            keep(&session);
            match call_once(&session, tool, args.clone()).await {
                Err(CallError::Unreachable(why)) if reused && Action::parse(tool).is_some_and(Action::read_only) => {
                    tracing::debug!(instance = %id, %why, "kept session failed; opening a new one");
                    self.forget(id, &session).await;
                    let (session, _) = self.session(peer).await?;
                    keep(&session);
                    let outcome = call_once(&session, tool, args).await;
                    if matches!(outcome, Err(CallError::Unreachable(_))) {
                        self.forget(id, &session).await;
                    }
                    outcome
                }
                Err(CallError::Unreachable(why)) => {
                    self.forget(id, &session).await;
                    Err(CallError::Unreachable(why))
                }
                outcome => outcome,
            }
        };
        if let Ok(outcome) = tokio::time::timeout(limit, attempt).await {
            return outcome;
        }
        let stalled = used.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(session) = stalled {
            self.forget(id, &session).await;
        }
        match self.offline(id).await {
            Some(why) => Err(CallError::Unreachable(why)),
            None => Err(CallError::TimedOut),
        }
    }

    /// Why replication has lost `id` too, if it has: a peer that does not
    /// answer and that replication cannot reach either is unreachable (it
    /// stopped, or its network is gone), not merely slow.
    async fn offline(&self, id: &str) -> Option<String> {
        let sync = (self.sync)()?;
        let peers =
            roost_tasks::blocking("the sync status", OFFLINE_CHECK_WAIT, move || sync.status()).await.ok()?.ok()?;
        let peer = peers.into_iter().find(|p| p.id == id).filter(|p| p.state == PeerState::Offline)?;
        let why = peer.last_error.unwrap_or_else(|| "its session ended".into());
        Some(format!("no answer, and replication cannot reach it either ({why})"))
    }

    /// The kept session to `peer`, or a new one (`true` when kept).
    async fn session(&self, peer: &InstanceEntry) -> Result<(Session, bool), CallError> {
        let routes: Vec<String> = match self.transport {
            FederationTransport::Quic => vec![format!("quic:{}", peer.signing_key)],
            FederationTransport::Http => {
                peer.addresses.iter().map(|url| format!("{}/mcp", url.trim_end_matches('/'))).collect()
            }
        };
        let kept = self.open.lock().await.get(&peer.id).map(|k| (k.session.clone(), routes.contains(&k.via)));
        match kept {
            Some((session, true)) if !session.is_closed() => return Ok((session, true)),
            Some((session, _)) => self.forget(&peer.id, &session).await,
            None => {}
        }
        let mut failures = Vec::new();
        for via in routes {
            let opened = match self.transport {
                FederationTransport::Quic => self.open_quic(peer).await,
                FederationTransport::Http => self.open_http(&peer.id, &via).await,
            };
            match opened {
                Ok(session) => {
                    let kept = Kept { via, session: session.clone() };
                    drop(self.open.lock().await.insert(peer.id.clone(), kept));
                    return Ok((session, false));
                }
                Err(why) => failures.push(why.to_string()),
            }
        }
        Err(CallError::Unreachable(if failures.is_empty() {
            "no gateway address known for it".into()
        } else {
            failures.join("; ")
        }))
    }

    /// A session on a new stream of a new QUIC connection to `peer`, dialed
    /// at every address it is known at.
    async fn open_quic(&self, peer: &InstanceEntry) -> Result<Session, OpenError> {
        let endpoint = format!("{} over QUIC", peer.name);
        let failed = |why: String| OpenError::Connect { endpoint: endpoint.clone(), why };
        let from = self.endpoint().await.map_err(|e| failed(e.to_string()))?;
        // Replication's relays: with those learned at join or named by a
        // peer since this started.
        let relays = (self.sync)().map_or_else(|| self.relays.clone(), |sync| sync.relays());
        let to = roost_sync::address::endpoint_addr(peer, &relays, &from.bound_sockets())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let connection =
            roost_sync::dial::connect(&from, to, ALPN, CONNECT_WAIT).await.map_err(|e| failed(e.to_string()))?;
        let (send, recv) = connection.open_bi().await.map_err(|e| failed(e.to_string()))?;
        let session = ClientConfig::default()
            .serve((recv, send))
            .await
            .map_err(|source| OpenError::Initialize { endpoint: endpoint.clone(), source: Box::new(source) })?;
        Ok(Arc::new(session))
    }

    /// Replication's endpoint, or this process's own dial-only one.
    async fn endpoint(&self) -> Result<Endpoint, roost_sync::SyncError> {
        if let Some(sync) = (self.sync)() {
            return Ok(sync.endpoint().clone());
        }
        // No relay: a relay keeps one connection per key, and this one would
        // take the gateway's over; through relays, calls go via the gateway.
        let bind = || roost_sync::bind_endpoint(&self.key, None, &[], Vec::new());
        self.own_endpoint.get_or_try_init(bind).await.cloned()
    }

    async fn open_http(&self, id: &str, endpoint: &str) -> Result<Session, OpenError> {
        if !encrypted_or_local(endpoint) {
            return Err(OpenError::PlainText(endpoint.to_string()));
        }
        let client = TokenClient {
            http: self.http.clone(),
            issuer: self.issuer.clone(),
            audience: id.to_string(),
            key: self.key.clone(),
        };
        let transport =
            StreamableHttpClientTransport::with_client(client, StreamableHttpClientTransportConfig::with_uri(endpoint));
        let session = ClientConfig::default()
            .serve(transport)
            .await
            .map_err(|source| OpenError::Initialize { endpoint: endpoint.to_string(), source: Box::new(source) })?;
        Ok(Arc::new(session))
    }

    async fn forget(&self, id: &str, failed: &Session) {
        let mut open = self.open.lock().await;
        if open.get(id).is_some_and(|kept| Arc::ptr_eq(&kept.session, failed)) {
            open.remove(id);
        }
    }

    /// Closes the endpoint bound for dialing, if one was.
    pub async fn close(&self) {
        if let Some(endpoint) = self.own_endpoint.get() {
            let _ = tokio::time::timeout(CONNECT_WAIT, endpoint.close()).await;
        }
    }
}

/// Whether a call to `url` is encrypted (`https://`) or stays on this
/// machine (a loopback address or `localhost`).
fn encrypted_or_local(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    match (url.scheme(), url.host()) {
        ("https", _) => true,
        (_, Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        (_, Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        (_, Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

async fn call_once(session: &Session, tool: &str, args: Map<String, Value>) -> Result<Value, CallError> {
    let result = session
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n");
    if result.is_error == Some(true) {
        return Err(CallError::Refused(text));
    }
    Ok(result.structured_content.unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

#[cfg(test)]
mod tests {
    use super::encrypted_or_local;

    #[test]
    fn plain_http_is_called_only_on_this_machine() {
        for url in
            ["https://vps.example:7151/mcp", "http://127.0.0.1:7151/mcp", "http://[::1]:1/mcp", "http://LocalHost/mcp"]
        {
            assert!(encrypted_or_local(url), "{url}");
        }
        for url in ["http://10.0.0.2:7151/mcp", "http://home.lan:7151/mcp", "http://[fe80::1]/mcp", "not a url"] {
            assert!(!encrypted_or_local(url), "{url}");
        }
    }
}
