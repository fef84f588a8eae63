//! Calls to other instances' `/mcp`: one rmcp Streamable HTTP client per
//! instance, opened on first use and kept for the next call. Tokens are
//! single-use, so the HTTP client under rmcp mints a fresh one for every
//! request it sends instead of repeating a static header.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
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
use roost_mcp::Action;

/// How long a minted token lives: one request needs seconds at most.
const TOKEN_LIFETIME: i64 = 60;
/// Longest wait for a TCP connection to another instance.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

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
#[error("cannot open an MCP session at {endpoint}: {source}")]
pub struct OpenError {
    endpoint: String,
    source: rmcp::service::ClientInitializeError,
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

/// Open MCP sessions to other instances, by instance id.
pub struct Connections {
    issuer: String,
    key: Arc<SigningKey>,
    http: reqwest::Client,
    open: Mutex<HashMap<String, (String, Session)>>,
}

impl Connections {
    /// Connections made as instance `issuer`, signing with its machine key.
    pub fn new(issuer: &str, key: SigningKey) -> Connections {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_WAIT)
            .no_proxy()
            .build()
            .expect("building an HTTP client without TLS settings cannot fail");
        Connections { issuer: issuer.to_string(), key: Arc::new(key), http, open: Mutex::new(HashMap::new()) }
    }

    /// The plain HTTP client, for endpoints outside MCP (`/health`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Calls `tool` on the instance `id` served at one of `gateway_urls`
    /// (tried in order), within `limit` in all (connecting included). A kept session that fails is
    /// dropped; a read-only tool is then tried once more on a new session. A
    /// write is not: the failed attempt may have run before its answer was
    /// lost, and running it twice would write twice.
    pub async fn call(
        &self,
        id: &str,
        gateway_urls: &[String],
        tool: &str,
        args: Map<String, Value>,
        limit: Duration,
    ) -> Result<Value, CallError> {
        let attempt = async {
            let (session, reused) = self.session(id, gateway_urls).await?;
            match call_once(&session, tool, args.clone()).await {
                Err(CallError::Unreachable(why)) if reused && Action::parse(tool).is_some_and(Action::read_only) => {
                    tracing::debug!(instance = %id, %why, "kept session failed; opening a new one");
                    self.forget(id, &session).await;
                    let (session, _) = self.session(id, gateway_urls).await?;
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
        tokio::time::timeout(limit, attempt).await.unwrap_or(Err(CallError::TimedOut))
    }

    /// The kept session to `id`, or a new one at the first of `gateway_urls`
    /// that answers (`true` when kept).
    async fn session(&self, id: &str, gateway_urls: &[String]) -> Result<(Session, bool), CallError> {
        let endpoints: Vec<String> =
            gateway_urls.iter().map(|url| format!("{}/mcp", url.trim_end_matches('/'))).collect();
        if let Some((url, session)) = self.open.lock().await.get(id)
            && endpoints.contains(url)
            && !session.is_closed()
        {
            return Ok((session.clone(), true));
        }
        let mut failures = Vec::new();
        for endpoint in endpoints {
            match self.open_session(id, &endpoint).await {
                Ok(session) => {
                    let kept = self.open.lock().await.insert(id.to_string(), (endpoint, session.clone()));
                    drop(kept);
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

    async fn open_session(&self, id: &str, endpoint: &str) -> Result<Session, OpenError> {
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
            .map_err(|source| OpenError { endpoint: endpoint.to_string(), source })?;
        Ok(Arc::new(session))
    }

    async fn forget(&self, id: &str, failed: &Session) {
        let mut open = self.open.lock().await;
        if open.get(id).is_some_and(|(_, s)| Arc::ptr_eq(s, failed)) {
            open.remove(id);
        }
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
