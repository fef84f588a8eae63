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
use serde::Deserialize;
use serde_json::{Value, json};

use roost_awake::status::{AwakeRecord, Record};
use roost_awake::{CommandError, LeaseReport, LeaseStatus, Settled};

use crate::AppState;
use crate::api::{ApiError, NoArguments, with_store};
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
async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Option<LeaseReport>>, ApiError> {
    let (record, fence) =
        with_store(&state, |s| Ok((s.agent_state(roost_awake::AWAKE_KEY)?, s.highest_epoch()?))).await?;
    let record = record.map(|r| Record { epoch: r.epoch, holder: serde_json::from_str::<AwakeRecord>(&r.value).ok() });
    Ok(Json(health(&state).map(|status| LeaseReport { status, record, fence })))
}

#[derive(Deserialize, Default)]
struct WakeupRequest {
    #[serde(default)]
    force: bool,
}

fn awake(state: &AppState) -> Result<Arc<roost_awake::AwakeService>, ApiError> {
    state
        .awake()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the lease does not run in this process".into()))
}

fn answer(result: Result<Settled, CommandError>) -> Result<Json<Value>, ApiError> {
    result
        .map(|settled| Json(json!({"ok": true, "message": settled.to_string()})))
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))
}

async fn wakeup(
    State(state): State<Arc<AppState>>,
    _: OverSocket,
    Json(body): Json<WakeupRequest>,
) -> Result<Json<Value>, ApiError> {
    answer(awake(&state)?.wakeup(body.force).await)
}

async fn leave(
    State(state): State<Arc<AppState>>,
    _: OverSocket,
    Json(NoArguments {}): Json<NoArguments>,
) -> Result<Json<Value>, ApiError> {
    answer(awake(&state)?.leave().await)
}
