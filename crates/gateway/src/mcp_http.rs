//! The edges of MCP's HTTP transport that rmcp answers otherwise than the
//! specifications do:
//! - a POST body that is not JSON gets JSON-RPC's parse error (-32700), and
//!   JSON that is not a JSON-RPC message gets invalid request (-32600),
//!   each with 400 (rmcp answers both with 415 and plain text);
//! - `DELETE /mcp` ends a session with 200, and names an unknown session
//!   with 404 (rmcp answers 202 either way, which clients report as a failed
//!   termination).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rmcp::model::{ClientJsonRpcMessage, ErrorData, JsonRpcError, RequestId};
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::{Value, json};

use crate::Sessions;

/// The header naming a request's MCP session.
const SESSION_HEADER: &str = "mcp-session-id";

/// What `/mcp` accepts as one request body, as rmcp does.
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

pub(crate) async fn edges(State(sessions): State<Arc<Sessions>>, request: Request, next: Next) -> Response {
    match *request.method() {
        Method::POST if posts_json(&request) => read_message(request, next).await,
        Method::DELETE => end_session(&sessions, request, next).await,
        _ => next.run(request).await,
    }
}

/// Whether the request says its body is JSON (rmcp refuses any other with
/// 415, as it should).
fn posts_json(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|value| value.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
}

/// Reads the body and hands it on if it is a JSON-RPC message; answers the
/// JSON-RPC error if it is not.
async fn read_message(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let reason = format!("the request body is larger than {MAX_BODY} bytes; send smaller messages");
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"error": reason}))).into_response();
        }
        Err(e) => {
            let reason = format!("cannot read the request body: {e}");
            return (StatusCode::BAD_REQUEST, Json(json!({"error": reason}))).into_response();
        }
    };
    if let Err(e) = serde_json::from_slice::<ClientJsonRpcMessage>(&bytes) {
        let (error, id) = match serde_json::from_slice::<Value>(&bytes) {
            Err(_) => (ErrorData::parse_error(format!("the body is not JSON: {e}"), None), None),
            Ok(value) => misread(value, &e),
        };
        return (StatusCode::BAD_REQUEST, Json(JsonRpcError::new(id, error))).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Why JSON that rmcp could not read as a message was refused, and the id to
/// answer: invalid params (-32602) when the message reads once its `params`
/// are left out (params that are not an object), else invalid request
/// (-32600).
fn misread(value: Value, e: &serde_json::Error) -> (ErrorData, Option<RequestId>) {
    let id = value.get("id").cloned().and_then(|id| serde_json::from_value::<RequestId>(id).ok());
    if let Value::Object(mut message) = value
        && message.remove("params").is_some()
        && let Some(method) = message.get("method").and_then(Value::as_str).map(String::from)
        && serde_json::from_value::<ClientJsonRpcMessage>(Value::Object(message)).is_ok()
    {
        let reason = format!("invalid params for {method}: params must be an object");
        return (ErrorData::invalid_params(reason, None), id);
    }
    (ErrorData::invalid_request(format!("the body is not a JSON-RPC message: {e}"), None), id)
}

/// Ends the session the request names: 200, or 404 when there is none.
async fn end_session(sessions: &Sessions, request: Request, next: Next) -> Response {
    let named = request.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(Arc::<str>::from);
    if let Some(id) = &named
        && !sessions.has_session(id).await.unwrap_or(false)
    {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such MCP session; initialise a new one"})))
            .into_response();
    }
    let mut response = next.run(request).await;
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::OK;
    }
    response
}
