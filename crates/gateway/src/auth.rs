//! Who may call `/mcp`: loopback callers (when configured), and machines of
//! this chain presenting a valid single-use token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use roost_identity::TokenError;
use roost_identity::token::Issuer;

use crate::AppState;
use crate::api::with_store;

fn unauthorized(reason: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": reason}))).into_response()
}

pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let bearer = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_string());
    let Some(value) = bearer else {
        if peer.ip().is_loopback() && state.loopback_without_token {
            return next.run(request).await;
        }
        tracing::warn!(%peer, "refused /mcp call: no token");
        return unauthorized("a machine token is required (Authorization: Bearer rt1...)");
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        tracing::warn!(%peer, "refused /mcp call: Authorization is not a bearer token");
        return unauthorized("Authorization must be a bearer token");
    };
    match verify(&state, token.trim().to_string()).await {
        Ok(issuer) => {
            tracing::debug!(%peer, %issuer, "token accepted");
            next.run(request).await
        }
        Err(reason) => {
            tracing::warn!(%peer, %reason, "refused /mcp call");
            unauthorized(&reason)
        }
    }
}

/// Checks a token against the registry and the nonces already seen; returns
/// the issuer's id or the reason for refusal.
async fn verify(state: &Arc<AppState>, token: String) -> Result<String, String> {
    let (claims, _) = roost_identity::Token::decode(&token).map_err(|e| e.to_string())?;
    let issuer = claims.issuer.clone();
    let entry = with_store(state, move |s| match s.instance(&issuer) {
        Ok(entry) => Ok(Some(entry)),
        Err(roost_store::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| e.1)?;
    let lookup = |_: &str| match &entry {
        None => Issuer::Unknown,
        Some(e) if e.status == "revoked" => Issuer::Revoked,
        Some(e) => roost_instance::parse_key_hex(&e.signing_key)
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .map_or(Issuer::Unknown, Issuer::Active),
    };
    let now = roost_instance::unix_now();
    let verdict = state.tokens.lock().expect("token verifier poisoned").verify(&token, now, lookup);
    verdict.map(|t| t.issuer).map_err(|e: TokenError| e.to_string())
}
