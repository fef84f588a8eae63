//! Replication's JSON API: per-peer sync status and the conflicts, for the
//! CLI (`roost sync`, `roost conflicts`) and the dashboard.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use roost_store::{Conflict, Keep, Mutation};
use roost_sync::PeerStatus;

use crate::AppState;
use crate::api::{ApiError, with_store};

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

async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let (heads, open) = with_store(&state, |s| Ok((s.heads()?, s.open_conflicts()?))).await?;
    Ok(Json(json!({
        "instance_id": state.instance.id,
        "running": state.sync().is_some(),
        "heads": heads,
        "open_conflicts": open,
        "peers": peers(&state).await,
    })))
}

#[derive(Deserialize)]
struct ListParams {
    all: Option<bool>,
    limit: Option<u32>,
}

async fn list(State(state): State<Arc<AppState>>, Query(p): Query<ListParams>) -> Result<Json<Value>, ApiError> {
    let conflicts = with_store(&state, move |s| s.conflicts(p.all.unwrap_or(false), p.limit.unwrap_or(100))).await?;
    Ok(Json(json!({"count": conflicts.len(), "conflicts": conflicts})))
}

async fn show(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let conflict = with_store(&state, move |s| s.conflict(&id)).await?;
    Ok(Json(json!(conflict)))
}

#[derive(Deserialize)]
struct ResolveBody {
    keep: String,
    fields: Option<Map<String, Value>>,
}

async fn resolve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let keep = Keep::parse(&body.keep, body.fields).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (row, conflict) = resolve_conflict(&state, id, keep).await?;
    Ok(Json(json!({"conflict": conflict, "row": row})))
}
