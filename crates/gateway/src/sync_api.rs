//! Replication's JSON API: per-peer sync status and the conflicts, for the
//! CLI (`roost sync`, `roost conflicts`) and the dashboard.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use roost_store::{Conflict, Keep, Mutation};
use roost_sync::PeerStatus;

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody, Params, with_store};

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/sync/status", get(status))
        .route("/api/v1/conflicts", get(list))
        .route("/api/v1/conflicts/{id}", get(show))
        .route("/api/v1/conflicts/{id}/resolve", post(resolve))
        .with_state(state)
}

/// Per-peer state and lag, as `/health` and `roost sync status` show it.
pub(crate) async fn peers(state: &AppState) -> Value {
    match peer_statuses(state).await {
        Ok(peers) => json!(peers),
        Err(ApiError(_, e)) => json!({"error": e}),
    }
}

/// What the replication service knows of each peer (it reads the registry,
/// so the wait is bounded like any store call); none when it is not running.
pub(crate) async fn peer_statuses(state: &AppState) -> Result<Vec<PeerStatus>, ApiError> {
    let Some(sync) = state.sync() else { return Ok(Vec::new()) };
    with_store(state, move |_| Ok(sync.status()))
        .await?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// Resolves a conflict through the store's write door (so it replicates);
/// returns the row written and the conflict as it is now.
pub(crate) async fn resolve_conflict(
    state: &AppState,
    id: String,
    keep: Keep,
) -> Result<(Map<String, Value>, Conflict), ApiError> {
    with_store(state, move |s| {
        let row = s.write(Mutation::Resolve { conflict: id.clone(), keep })?;
        Ok((row, s.conflict(&id)?))
    })
    .await
}

/// Replication here: the log heads held, open conflicts, each peer.
#[derive(Serialize, ToSchema)]
pub(crate) struct SyncStatus {
    instance_id: String,
    running: bool,
    /// The highest sequence held of each machine's log, by machine id.
    heads: std::collections::BTreeMap<String, u64>,
    open_conflicts: u64,
    /// Each peer's state and lag, or `{"error": ...}` when it cannot be read.
    peers: Value,
}

#[utoipa::path(get, path = "/api/v1/sync/status", tag = "replication", security(("token" = []), ()),
    responses(
        (status = 200, description = "Replication here", body = SyncStatus),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Result<Json<SyncStatus>, ApiError> {
    let (heads, open) = with_store(&state, |s| Ok((s.heads()?, s.open_conflicts()?))).await?;
    Ok(Json(SyncStatus {
        instance_id: state.instance.id.clone(),
        running: state.sync().is_some(),
        heads,
        open_conflicts: open,
        peers: peers(&state).await,
    }))
}

/// Which conflicts to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Resolved ones too.
    all: Option<bool>,
    /// The most to list (100 when absent).
    limit: Option<u32>,
}

/// Conflicts, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConflictList {
    count: usize,
    #[schema(value_type = Vec<Object>)]
    conflicts: Vec<Conflict>,
}

#[utoipa::path(get, path = "/api/v1/conflicts", tag = "replication", params(ListParams),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The conflicts", body = ConflictList),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Params(p): Params<ListParams>,
) -> Result<Json<ConflictList>, ApiError> {
    let conflicts = with_store(&state, move |s| s.conflicts(p.all.unwrap_or(false), p.limit.unwrap_or(100))).await?;
    Ok(Json(ConflictList { count: conflicts.len(), conflicts }))
}

#[utoipa::path(get, path = "/api/v1/conflicts/{id}", tag = "replication",
    params(("id" = String, Path, description = "The conflict's id")),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The conflict: both sides and its state", body = Object),
        (status = 404, description = "No such conflict", body = ErrorBody),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Conflict>, ApiError> {
    Ok(Json(with_store(&state, move |s| s.conflict(&id)).await?))
}

/// How to resolve a conflict.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ResolveBody {
    /// `local`, `remote`, or `merge` (with `fields`).
    #[schema(pattern = "^(local|remote|merge)$")]
    keep: String,
    /// The merged row's fields, for `merge`.
    #[schema(value_type = Option<Object>)]
    fields: Option<Map<String, Value>>,
}

/// A resolved conflict and the row written.
#[derive(Serialize, ToSchema)]
pub(crate) struct Resolved {
    #[schema(value_type = Object)]
    conflict: Conflict,
    #[schema(value_type = Object)]
    row: Map<String, Value>,
}

#[utoipa::path(post, path = "/api/v1/conflicts/{id}/resolve", tag = "replication",
    params(("id" = String, Path, description = "The conflict's id")),
    request_body = ResolveBody,
    security(("token" = []), ()),
    responses(
        (status = 200, description = "Resolved, through the write door", body = Resolved),
        (status = 400, description = "The body is malformed, or the conflict is already resolved", body = ErrorBody),
        (status = 404, description = "No such conflict", body = ErrorBody),
        (status = 422, description = "The body lacks a field or has one of the wrong type", body = ErrorBody),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn resolve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Body(body): Body<ResolveBody>,
) -> Result<Json<Resolved>, ApiError> {
    let keep = Keep::parse(&body.keep, body.fields).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (row, conflict) = resolve_conflict(&state, id, keep).await?;
    Ok(Json(Resolved { conflict, row }))
}
