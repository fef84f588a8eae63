//! The awake role's API: what this machine believes about the lease, and the
//! commands `roost wakeup` and `roost leave` send to their own machine.
//!
//! The commands move the agent between machines, so only this machine's own
//! user may send them: they are accepted only on the instance's Unix socket,
//! which a web page cannot reach.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use roost_awake::status::{AwakeRecord, Record};
use roost_awake::{CommandError, LeaseReport, LeaseStatus, Settled};

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody, NoArguments, with_store};
use crate::auth::OverSocket;

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/lease", get(status))
        .route("/api/v1/lease/wakeup", post(wakeup))
        .route("/api/v1/lease/leave", post(leave))
        .with_state(state)
}

/// The lease part of `/health`: none when the lease does not run here.
pub(crate) fn health(state: &AppState) -> Option<LeaseStatus> {
    state.awake().map(|awake| awake.status())
}

/// `/health`'s view, plus what the replicated log holds: the last holder's
/// `awake` record and this machine's epoch fence.
#[utoipa::path(get, path = "/api/v1/lease", tag = "lease", security(("token" = []), ()),
    responses(
        (status = 200, description = "The lease as this machine sees it; null where it does not run", body = Option<Object>),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Option<LeaseReport>>, ApiError> {
    let (record, fence) =
        with_store(&state, |s| Ok((s.agent_state(roost_awake::AWAKE_KEY)?, s.highest_epoch()?))).await?;
    let record = record.map(|r| Record { epoch: r.epoch, holder: serde_json::from_str::<AwakeRecord>(&r.value).ok() });
    Ok(Json(health(&state).map(|status| LeaseReport { status, record, fence })))
}

/// Take the awake role here.
#[derive(Deserialize, Default, ToSchema)]
pub(crate) struct WakeupRequest {
    /// Take it even without a quorum's votes.
    #[serde(default)]
    force: bool,
}

fn awake(state: &AppState) -> Result<Arc<roost_awake::AwakeService>, ApiError> {
    state
        .awake()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the lease does not run in this process".into()))
}

/// How a lease command settled.
#[derive(Serialize, ToSchema)]
pub(crate) struct CommandDone {
    ok: bool,
    message: String,
}

fn answer(result: Result<Settled, CommandError>) -> Result<Json<CommandDone>, ApiError> {
    result
        .map(|settled| Json(CommandDone { ok: true, message: settled.to_string() }))
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/lease/wakeup", tag = "lease", request_body = WakeupRequest,
    responses(
        (status = 200, description = "This machine holds the awake role", body = CommandDone),
        (status = 400, description = "The body is malformed", body = ErrorBody),
        (status = 403, description = "Not sent over the instance's Unix socket, or cross-site", body = ErrorBody),
        (status = 409, description = "The role could not be taken", body = ErrorBody),
        (status = 422, description = "A field has the wrong type", body = ErrorBody),
        (status = 503, description = "The lease does not run in this process", body = ErrorBody),
    ))]
pub(crate) async fn wakeup(
    State(state): State<Arc<AppState>>,
    _: OverSocket,
    Body(body): Body<WakeupRequest>,
) -> Result<Json<CommandDone>, ApiError> {
    answer(awake(&state)?.wakeup(body.force).await)
}

#[utoipa::path(post, path = "/api/v1/lease/leave", tag = "lease", request_body = NoArguments,
    responses(
        (status = 200, description = "This machine left the vote", body = CommandDone),
        (status = 400, description = "The body is malformed", body = ErrorBody),
        (status = 403, description = "Not sent over the instance's Unix socket, or cross-site", body = ErrorBody),
        (status = 409, description = "It could not leave", body = ErrorBody),
        (status = 422, description = "The body is not `{}`", body = ErrorBody),
        (status = 503, description = "The lease does not run in this process", body = ErrorBody),
    ))]
pub(crate) async fn leave(
    State(state): State<Arc<AppState>>,
    _: OverSocket,
    Body(NoArguments {}): Body<NoArguments>,
) -> Result<Json<CommandDone>, ApiError> {
    answer(awake(&state)?.leave().await)
}
