//! The chain side of pairing: `POST /api/v1/pair/start` and `/finish`.
//!
//! `roost pair` puts a code on offer in `pairing.json`. A joiner runs SPAKE2
//! against `start`, which counts the attempt durably before answering with its
//! own SPAKE2 message and key confirmation. If the joiner's confirmation then
//! checks out at `finish`, the code is spent, the joiner is certified as a
//! satellite and registered — at the addresses it advertises and the one its
//! request came from — and the seed goes back sealed with the session key,
//! with every machine this one knows. Replication then tells every peer of
//! the new machine at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use roost_identity::cert::MachineClaims;
use roost_identity::pairing::{self, JoinGrant, JoinRequest, KnownMachine, OFFER_LIFETIME, SessionKey, Side};
use roost_identity::{Certificate, Role};
use roost_instance::addresses::{host_and_port, is_loopback_url, url_for};
use roost_instance::{parse_key_hex, unix_now};
use roost_store::registry::merge_addresses;

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody};

/// Exchanges waiting for their `finish`, by session id. The mutex also
/// serialises reads and writes of the offer file within this process.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

/// A started exchange: its key, when it lapses, and the code it was keyed
/// with, so it can only finish against that same, still valid offer.
pub(crate) struct Session {
    key: SessionKey,
    deadline: Instant,
    code: String,
}

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new().route("/api/v1/pair/start", post(start)).route("/api/v1/pair/finish", post(finish)).with_state(state)
}

fn b64d(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{what} is not base64url")))
}

fn b64e(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How long a pairing step (disk, key agreement, certificate) may take.
const PAIRING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A joiner's first SPAKE2 message.
#[derive(Deserialize, ToSchema)]
pub(crate) struct StartRequest {
    /// base64url.
    message: String,
}

/// The chain's SPAKE2 message and key confirmation, and the exchange's key.
#[derive(Serialize, ToSchema)]
pub(crate) struct PairStarted {
    session: String,
    /// base64url.
    message: String,
    /// base64url.
    confirmation: String,
}

#[utoipa::path(post, path = "/api/v1/pair/start", tag = "pairing", request_body = StartRequest,
    responses(
        (status = 200, description = "The chain's side of the exchange", body = PairStarted),
        (status = 400, description = "The message is malformed", body = ErrorBody),
        (status = 404, description = "No pairing code is on offer here", body = ErrorBody),
        (status = 410, description = "The code is used up, expired or out of attempts", body = ErrorBody),
        (status = 422, description = "The body lacks `message`", body = ErrorBody),
        (status = 500, description = "The offer on disk cannot be read or written", body = ErrorBody),
    ))]
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    Body(req): Body<StartRequest>,
) -> Result<Json<PairStarted>, ApiError> {
    Ok(Json(started(&state, req).await?))
}

/// The chain's answer to a joiner's first message, however it came.
pub(crate) async fn started(state: &Arc<AppState>, req: StartRequest) -> Result<PairStarted, ApiError> {
    let joiner_message = b64d(&req.message, "message")?;
    let worker = state.clone();
    roost_tasks::blocking("the pairing step", PAIRING_WAIT, move || begin(&worker, &joiner_message)).await?
}

/// Counts the attempt on disk, runs the chain's side of SPAKE2 and keeps the
/// session for `finish`.
fn begin(state: &AppState, joiner_message: &[u8]) -> Result<PairStarted, ApiError> {
    let instance = &state.instance;
    let mut sessions = state.pairing.0.lock().expect("pairing sessions poisoned");
    let _offer_lock = instance.lock_offer().map_err(internal)?;
    let mut offer = instance.load_offer().map_err(internal)?.ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, "no pairing code is on offer here; run `roost pair` on this machine".into())
    })?;
    let code = offer.take_attempt(unix_now()).map_err(|refusal| {
        tracing::warn!(%refusal, "pairing attempt refused");
        ApiError(StatusCode::GONE, refusal.to_string())
    })?;
    let (handshake, chain_message) = pairing::start(Side::Chain, &code);
    let key = handshake.finish(joiner_message).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    offer.sas = Some(key.sas());
    // The attempt is on disk before anything goes back to the joiner.
    instance.save_offer(&offer).map_err(internal)?;
    tracing::info!(attempt = offer.attempts, "pairing exchange started");
    let confirmation = key.confirmation();
    let session = roost_identity::hex(&rand::random::<[u8; 16]>());
    sessions.retain(|_, s| s.deadline > Instant::now());
    let deadline = Instant::now() + Duration::from_secs(OFFER_LIFETIME as u64);
    sessions.insert(session.clone(), Session { key, deadline, code: offer.code.clone() });
    Ok(PairStarted { session, message: b64e(&chain_message), confirmation: b64e(&confirmation) })
}

/// The joiner's key confirmation and its sealed join request.
#[derive(Deserialize, ToSchema)]
pub(crate) struct FinishRequest {
    session: String,
    /// base64url.
    confirmation: String,
    /// base64url.
    sealed: String,
}

/// The grant, sealed under the exchange's key.
#[derive(Serialize, ToSchema)]
pub(crate) struct PairFinished {
    /// base64url.
    sealed: String,
}

#[utoipa::path(post, path = "/api/v1/pair/finish", tag = "pairing", request_body = FinishRequest,
    responses(
        (status = 200, description = "The joiner is certified and registered", body = PairFinished),
        (status = 400, description = "A field is malformed", body = ErrorBody),
        (status = 401, description = "The joiner used a different code", body = ErrorBody),
        (status = 404, description = "No such exchange", body = ErrorBody),
        (status = 409, description = "A machine with that id is already registered", body = ErrorBody),
        (status = 410, description = "The exchange or the code expired, or the code was used", body = ErrorBody),
        (status = 422, description = "The body lacks a field", body = ErrorBody),
        (status = 500, description = "The offer on disk cannot be read or written", body = ErrorBody),
    ))]
pub(crate) async fn finish(
    State(state): State<Arc<AppState>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Body(req): Body<FinishRequest>,
) -> Result<Json<PairFinished>, ApiError> {
    Ok(Json(finished(&state, req, Some(from.ip())).await?))
}

/// The chain's answer to a joiner's confirmed request, however it came
/// (`from`: the address it came from, when known).
pub(crate) async fn finished(
    state: &Arc<AppState>,
    req: FinishRequest,
    from: Option<IpAddr>,
) -> Result<PairFinished, ApiError> {
    let confirmation = b64d(&req.confirmation, "confirmation")?;
    let sealed = b64d(&req.sealed, "sealed")?;
    let worker = state.clone();
    let admitting = move || admit(&worker, &req.session, &confirmation, &sealed, from);
    let grant = roost_tasks::blocking("the pairing step", PAIRING_WAIT, admitting).await??;
    if let Some(sync) = state.sync() {
        sync.registry_changed();
    }
    Ok(PairFinished { sealed: b64e(&grant) })
}

/// Where a joiner can be reached: what it advertises (no loopback URL unless
/// it joined over loopback, from this very host), and the address its
/// request came from, when known, at the port it advertises.
fn joiner_addresses(advertised: &[String], from: Option<IpAddr>) -> Vec<String> {
    let over_loopback = from.is_some_and(|ip| ip.is_loopback());
    let usable: Vec<String> = advertised.iter().filter(|u| over_loopback || !is_loopback_url(u)).cloned().collect();
    let port = advertised.first().and_then(|u| host_and_port(u)).map_or(roost_instance::DEFAULT_PORT, |(_, p)| p);
    let observed: Vec<String> = from.map(|ip| url_for(ip, port)).into_iter().collect();
    merge_addresses(&usable, &observed)
}

/// Checks the joiner's confirmation, spends the code, certifies and registers
/// the joiner, and returns the sealed grant.
fn admit(
    state: &AppState,
    session: &str,
    confirmation: &[u8],
    sealed: &[u8],
    from: Option<IpAddr>,
) -> Result<Vec<u8>, ApiError> {
    let instance = &state.current_instance()?;
    let mut sessions = state.pairing.0.lock().expect("pairing sessions poisoned");
    let Session { key, deadline, code } = sessions
        .remove(session)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such pairing exchange (expired?)".into()))?;
    if Instant::now() > deadline {
        return Err(ApiError(StatusCode::GONE, "the pairing exchange expired".into()));
    }
    if !key.confirms(confirmation) {
        tracing::warn!("pairing refused: the joiner used a different code");
        return Err(ApiError(StatusCode::UNAUTHORIZED, "the pairing code did not match".into()));
    }
    let request: JoinRequest = serde_json::from_slice(&key.open(0, sealed).map_err(internal)?)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("join request: {e}")))?;
    let _offer_lock = instance.lock_offer().map_err(internal)?;
    let mut offer = instance.load_offer().map_err(internal)?.ok_or_else(|| internal("the offer vanished"))?;
    if offer.code != code {
        return Err(ApiError(StatusCode::GONE, "the pairing code was replaced by a newer one".into()));
    }
    if offer.used {
        return Err(ApiError(StatusCode::GONE, "the pairing code was already used".into()));
    }
    if unix_now() >= offer.expires_at {
        return Err(ApiError(StatusCode::GONE, "the pairing code has expired".into()));
    }
    let joiner_id = roost_core::RowId::parse(&request.instance_id)
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "join request: instance id is not a UUID".into()))?
        .to_string();
    if joiner_id == instance.id || state.store.instance_by_id(&joiner_id).is_ok() {
        return Err(ApiError(StatusCode::CONFLICT, format!("an instance with id {joiner_id} is already registered")));
    }
    let bad_key = || ApiError(StatusCode::BAD_REQUEST, "join request: keys must be 64 hex digits".into());
    let addresses = joiner_addresses(&request.addresses, from);
    let claims = MachineClaims {
        instance_id: joiner_id.clone(),
        name: request.name.clone(),
        role: Role::Satellite,
        signing_key: parse_key_hex(&request.signing_key).ok_or_else(bad_key)?,
        x25519_key: parse_key_hex(&request.x25519_key).ok_or_else(bad_key)?,
        gateway_urls: addresses.iter().take(roost_identity::cert::MAX_URLS).cloned().collect(),
        issued_at: unix_now(),
    };
    let certificate: Certificate =
        instance.certify(claims).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    instance.register(&state.store, &certificate, &addresses).map_err(internal)?;
    offer.used = true;
    offer.joined = Some(request.name.clone());
    instance.save_offer(&offer).map_err(internal)?;
    tracing::info!(name = %request.name, id = %joiner_id, "machine joined the chain");
    let seed = instance.seed.as_ref().ok_or_else(|| internal("this machine holds no seed"))?;
    let known = state.store.instances().map_err(internal)?;
    let machines = known
        .into_iter()
        .filter(|e| !e.is_revoked() && e.id != instance.id && e.id != joiner_id)
        // Those still on a certificate from before a rotation reach the
        // joiner through replication once they are certified again.
        .filter(|e| instance.issued(&e.certificate))
        .map(|e| KnownMachine { certificate: e.certificate, addresses: e.addresses })
        .collect();
    let grant = JoinGrant {
        seed: roost_identity::hex(&seed.0),
        certificate: certificate.to_text(),
        chain: KnownMachine { certificate: instance.certificate.to_text(), addresses: instance.advertised_urls() },
        machines,
        relays: instance.config.sync.relays.clone(),
        rotations: instance.lineage_texts(),
    };
    Ok(key.seal(0, &serde_json::to_vec(&grant).expect("grants serialise")))
}
