//! `/health` and the JSON API under `/api/v1`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use roost_core::Table;
use roost_store::{SearchQuery, Store, StoreError};
use roost_tasks::Blocked;

use crate::{AppState, DB_WAIT};

/// Routes anyone may call: liveness and this machine's (public) certificate.
pub(crate) fn public_routes(state: Arc<AppState>) -> Router {
    Router::new().route("/health", get(health)).route("/api/v1/certificate", get(certificate)).with_state(state)
}

/// Routes that read the store: behind [`crate::auth::require_token`].
pub(crate) fn protected_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/instance", get(instance))
        .route("/api/v1/memories/search", get(search))
        .route("/api/v1/memories/{id}", get(memory))
        .route("/api/v1/instances", get(instances))
        .with_state(state)
}

/// The body of a command that takes no arguments: `{}`. Requiring it makes
/// the command a JSON request, which no web page can send cross-site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArguments {}

/// An error answer: a status and a one-line reason as `{"error": ...}`.
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Invalid(_)
            | StoreError::BadQuery(_)
            | StoreError::Duplicate(_)
            | StoreError::AlreadyResolved { .. }
            | StoreError::Ambiguous(_)
            | StoreError::Revoked { .. }
            | StoreError::AgentOwned(_) => StatusCode::BAD_REQUEST,
            StoreError::Busy | StoreError::Indexing { .. } | StoreError::Restoring => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Runs a blocking store call off the async threads, bounded by [`DB_WAIT`].
pub(crate) async fn with_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    Ok(roost_tasks::blocking("the database", DB_WAIT, move || f(&store)).await??)
}

impl From<Blocked> for ApiError {
    fn from(e: Blocked) -> Self {
        let status = match e {
            Blocked::TimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Blocked::Panicked { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let database = with_store(&state, |s| s.ping()).await;
    let (mut status, database) = match database {
        Ok(()) => (StatusCode::OK, json!({"ok": true})),
        Err(ApiError(_, error)) => (StatusCode::SERVICE_UNAVAILABLE, json!({"ok": false, "error": error})),
    };
    let lease = crate::lease_api::health(&state);
    if lease.as_ref().is_some_and(|l| !l.ok) {
        // The lease loop has stopped turning: not healthy, whatever else answers.
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let body = json!({
        "status": if status == StatusCode::OK { "ok" } else { "degraded" },
        "instance_id": state.instance.id,
        "name": state.instance.config.name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "database": database,
        "sync": {"peers": crate::sync_api::peers(&state).await},
        "lease": lease,
        "agent": crate::agent_api::health(&state),
    });
    (status, Json(body)).into_response()
}

async fn instance(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let (counts, (lamport, changes)) = with_store(&state, |s| Ok((s.counts()?, s.clock()?))).await?;
    Ok(Json(json!({
        "id": state.instance.id,
        "name": state.instance.config.name,
        "version": env!("CARGO_PKG_VERSION"),
        "counts": counts,
        "lamport": lamport.0,
        "change_records": changes,
    })))
}

/// This machine's certificate, for `roost instance register` and joiners.
async fn certificate(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let instance = state.current_instance()?;
    Ok(Json(json!({
        "certificate": instance.certificate.to_text(),
        "roost_id": instance.roost_id().to_string(),
        "instance_id": instance.id,
        "name": instance.config.name,
    })))
}

#[derive(Deserialize)]
struct SearchParams {
    q: String,
    category: Option<String>,
    min_importance: Option<i64>,
    project: Option<String>,
    tag: Option<String>,
    limit: Option<u32>,
}

async fn search(State(state): State<Arc<AppState>>, Query(p): Query<SearchParams>) -> Result<Json<Value>, ApiError> {
    let query = SearchQuery {
        query: p.q,
        category: p.category,
        min_importance: p.min_importance,
        project: p.project,
        tag: p.tag,
        limit: p.limit.unwrap_or(0),
    };
    let hits = with_store(&state, move |s| s.search_memories(&query)).await?;
    Ok(Json(json!({"count": hits.len(), "results": hits})))
}

async fn memory(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = with_store(&state, move |s| s.get(Table::Memories, &id)).await?;
    Ok(Json(Value::Object(row)))
}

/// Every registered instance with its sync state and cached summaries, as
/// `roost_list_instances` shows them.
async fn instances(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let instances =
        state.federation.overview().await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({"count": instances.len(), "instances": instances})))
}
