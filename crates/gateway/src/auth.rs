//! Who may call `/mcp` and the store-reading API: loopback callers that also
//! name a loopback host (when configured), and machines of this chain
//! presenting a valid single-use token. The Host check keeps a web page that
//! rebinds its domain to 127.0.0.1 from riding on the loopback exemption.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use roost_identity::TokenError;
use roost_identity::token::Issuer;
use roost_mcp::Caller;

use crate::AppState;
use crate::api::with_store;

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({"error": reason}))).into_response()
}

/// Refuses a request for its token (or the lack of one), counted under
/// `kind`, a short fixed name for the reason.
fn refuse_token(status: StatusCode, kind: &'static str, reason: &str) -> Response {
    roost_metrics::count(&roost_metrics::metrics().token_refusals, &[("reason", kind)]);
    refuse(status, reason)
}

fn unauthorized(kind: &'static str, reason: &str) -> Response {
    refuse_token(StatusCode::UNAUTHORIZED, kind, reason)
}

/// A token error's short fixed name, for the refusal counter.
fn kind_of(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed(_) => "malformed",
        TokenError::UnknownIssuer(_) => "unknown_issuer",
        TokenError::RevokedIssuer(_) => "revoked",
        TokenError::WrongAudience(_) => "wrong_audience",
        TokenError::Expired => "expired",
        TokenError::FromTheFuture => "from_the_future",
        TokenError::TooLong => "too_long",
        TokenError::BadSignature => "bad_signature",
        TokenError::Replayed => "replayed",
    }
}

/// Marks a request that came over the instance's Unix socket (mode 0600 in
/// a home only its owner can enter): this machine's own user. As an
/// extractor it refuses any other request with 403.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverSocket;

impl<S: Send + Sync> FromRequestParts<S> for OverSocket {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<OverSocket>().copied().ok_or_else(|| {
            refuse(StatusCode::FORBIDDEN, "only this machine's own user may do this, through `roost` on this machine")
        })
    }
}

/// Admits the request or refuses it, and tells the handlers who called
/// ([`Caller`] in the request's extensions).
pub(crate) async fn require_token(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    if request.extensions().get::<OverSocket>().is_some() {
        request.extensions_mut().insert(Caller::Local);
        return next.run(request).await;
    }
    let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return unauthorized("no_address", "the caller's address is unknown");
    };
    let bearer = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_string());
    let Some(value) = bearer else {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if peer.ip().is_loopback() && state.loopback_without_token && names_loopback(host) {
            request.extensions_mut().insert(Caller::Local);
            return next.run(request).await;
        }
        tracing::warn!(%peer, "refused call: no token and not a loopback caller naming a loopback host");
        return unauthorized("missing", "a machine token is required (Authorization: Bearer rt1...)");
    };
    // The scheme name is case-insensitive (RFC 9110).
    let (scheme, token) = value.split_at(value.find(' ').unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case("bearer") {
        tracing::warn!(%peer, "refused call: Authorization is not a bearer token");
        return unauthorized("not_bearer", "Authorization must be a bearer token");
    }
    match verify(&state, token.trim().to_string()).await {
        Ok(issuer) => {
            tracing::debug!(%peer, %issuer, "token accepted");
            request.extensions_mut().insert(Caller::Machine { id: issuer });
            next.run(request).await
        }
        Err((status, kind, reason)) => {
            tracing::warn!(%peer, %reason, "refused call");
            refuse_token(status, kind, &reason)
        }
    }
}

/// Whether a Host header value names this machine's loopback interface.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a token against the registry and the nonces already seen; returns
/// the issuer's id, or the status and reason of the refusal: 403 for a
/// revoked machine (known, and refused), 401 for anything not authenticated.
async fn verify(state: &Arc<AppState>, token: String) -> Result<String, (StatusCode, &'static str, String)> {
    let refusal = |e: TokenError| match e {
        TokenError::RevokedIssuer(_) => (StatusCode::FORBIDDEN, kind_of(&e), e.to_string()),
        _ => (StatusCode::UNAUTHORIZED, kind_of(&e), e.to_string()),
    };
    let (claims, _) = roost_identity::Token::decode(&token).map_err(refusal)?;
    let issuer = claims.issuer.clone();
    let entry = with_store(state, move |s| match s.instance_by_id(&issuer) {
        Ok(entry) => Ok(Some(entry)),
        Err(roost_store::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| (e.0, "unchecked", format!("cannot check the registry: {}", e.1)))?;
    let lookup = |_: &str| {
        let Some(e) = &entry else { return Issuer::Unknown };
        let key = roost_instance::parse_key_hex(&e.signing_key)
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok());
        match key {
            None => Issuer::Unknown,
            Some(key) if e.is_revoked() => Issuer::Revoked(key),
            Some(key) => Issuer::Active(key),
        }
    };
    let now = roost_instance::unix_now();
    let verdict = state.tokens.lock().expect("token verifier poisoned").verify(&token, now, lookup);
    let token = verdict.map_err(refusal)?;
    // Recorded before the request runs, so a restart cannot reopen its use.
    let (nonce, expires_at) = (token.nonce, token.expires_at);
    let fresh = with_store(state, move |s| s.remember_token_nonce(&nonce, expires_at, now))
        .await
        .map_err(|e| (e.0, "unchecked", format!("cannot record the token as used: {}", e.1)))?;
    if !fresh {
        return Err(refusal(TokenError::Replayed));
    }
    Ok(token.issuer)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_host_names() {
        for host in ["127.0.0.1:7151", "localhost", "LOCALHOST:1", "[::1]:80", "127.0.0.2"] {
            assert!(super::names_loopback(host), "{host}");
        }
        for host in ["evil.example", "evil.example:7151", "", "10.0.0.1:7151", "127.0.0.1.evil.example"] {
            assert!(!super::names_loopback(host), "{host}");
        }
    }
}
