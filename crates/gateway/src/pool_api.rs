//! The pool's API: where topics run, moving one, naming machines. Any
//! machine answers; one that does not coordinate asks the coordinator
//! (`roost_machine::pool`). With `[pool] enabled = false` every operation
//! answers 503 with the reason.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use roost_machine::pool::{DISABLED, PoolError};

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody, Params};

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/pool", get(status))
        .route("/api/v1/pool/machines/{machine}", get(machine).patch(nickname))
        .route("/api/v1/pool/placement", get(placement))
        .route("/api/v1/pool/transfer", post(transfer))
        .with_state(state)
}

/// `roost_pool` in `roost serve`: the running machine's pool.
pub(crate) struct MachinePool(pub std::sync::Weak<roost_machine::Machine>);

impl roost_mcp::PoolSource for MachinePool {
    fn call(&self, machine: Option<String>, args: Map<String, Value>) -> roost_mcp::Pending<Value> {
        let pool = self.0.upgrade().and_then(|m| m.pool());
        Box::pin(async move {
            match pool {
                Some(pool) => pool.call(machine.as_deref(), args).await,
                None => PoolError { status: 503, message: DISABLED.into() }.to_value(),
            }
        })
    }
}

/// Runs `op` with `args` on the pool, an error answer as its status.
pub(crate) async fn run(state: &AppState, op: &str, mut args: Map<String, Value>) -> Result<Value, ApiError> {
    let pool = state
        .machine
        .as_ref()
        .and_then(|m| m.pool())
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, DISABLED.into()))?;
    args.insert("op".into(), op.into());
    let answer = pool.call(None, args).await;
    match PoolError::from_value(&answer) {
        Some(refused) => {
            Err(ApiError(StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_GATEWAY), refused.message))
        }
        None => Ok(answer),
    }
}

fn args(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

#[utoipa::path(get, path = "/api/v1/pool", tag = "pool",
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The coordinator, every machine (nickname, role, capacity, load, health) and \
            every topic's machine", body = Object),
        (status = 502, description = "The coordinator did not answer", body = ErrorBody),
        (status = 503, description = "The pool is off here, or no machine coordinates it now", body = ErrorBody),
    ))]
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    run(&state, "status", Map::new()).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/pool/machines/{machine}", tag = "pool",
    params(("machine" = String, Path, description = "Its id, name or nickname")),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The machine as the pool sees it", body = Object),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 502, description = "The coordinator did not answer", body = ErrorBody),
        (status = 503, description = "The pool is off here, or no machine coordinates it now", body = ErrorBody),
    ))]
pub(crate) async fn machine(
    State(state): State<Arc<AppState>>,
    Path(wanted): Path<String>,
) -> Result<Json<Value>, ApiError> {
    run(&state, "machine", args(json!({"machine": wanted}))).await.map(Json)
}

/// A new nickname.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NicknameBody {
    /// 1 to 32 letters, digits or '-'.
    nickname: String,
}

#[utoipa::path(patch, path = "/api/v1/pool/machines/{machine}", tag = "pool", request_body = NicknameBody,
    params(("machine" = String, Path, description = "Its id, name or nickname")),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "Named", body = Object),
        (status = 400, description = "Not a nickname", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "Another machine has that nickname", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The body lacks `nickname` or has other fields", body = ErrorBody),
        (status = 502, description = "The coordinator did not answer", body = ErrorBody),
        (status = 503, description = "The pool is off here, or no machine coordinates it now", body = ErrorBody),
    ))]
pub(crate) async fn nickname(
    State(state): State<Arc<AppState>>,
    Path(machine): Path<String>,
    Body(body): Body<NicknameBody>,
) -> Result<Json<Value>, ApiError> {
    run(&state, "nickname", args(json!({"machine": machine, "nickname": body.nickname}))).await.map(Json)
}

/// Which topic.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TopicQuery {
    /// The conversation.
    topic: String,
}

#[utoipa::path(get, path = "/api/v1/pool/placement", tag = "pool", params(TopicQuery),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "Its machine, nickname, the coordinator, and why: pinned, placed or unowned",
            body = Object),
        (status = 400, description = "No topic given", body = ErrorBody),
        (status = 502, description = "The coordinator did not answer", body = ErrorBody),
        (status = 503, description = "The pool is off here, or no machine coordinates it now", body = ErrorBody),
    ))]
pub(crate) async fn placement(
    State(state): State<Arc<AppState>>,
    Params(query): Params<TopicQuery>,
) -> Result<Json<Value>, ApiError> {
    run(&state, "placement", args(json!({"topic": query.topic}))).await.map(Json)
}

/// A move.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferBody {
    topic: String,
    /// A nickname, name or machine id.
    to: String,
    /// Move it even though the machine is offline.
    #[serde(default)]
    confirm: bool,
}

#[utoipa::path(post, path = "/api/v1/pool/transfer", tag = "pool", request_body = TransferBody,
    security(("token" = []), ()),
    responses(
        (status = 200, description = "Moved and pinned there, or already there (`moved` false)", body = Object),
        (status = 400, description = "The body is malformed", body = ErrorBody),
        (status = 404, description = "No such topic or machine", body = ErrorBody),
        (status = 409, description = "The machine is offline: confirm to move it anyway", body = ErrorBody),
        (status = 422, description = "The body lacks `topic` or `to`, or has other fields", body = ErrorBody),
        (status = 429, description = "The topic moved too recently", body = ErrorBody),
        (status = 502, description = "The coordinator did not answer", body = ErrorBody),
        (status = 503, description = "The pool is off here, or no machine coordinates it now", body = ErrorBody),
    ))]
pub(crate) async fn transfer(
    State(state): State<Arc<AppState>>,
    Body(body): Body<TransferBody>,
) -> Result<Json<Value>, ApiError> {
    let asked = json!({"topic": body.topic, "to": body.to, "confirm": body.confirm});
    run(&state, "transfer", args(asked)).await.map(Json)
}
