//! `/health` and the JSON API under `/api/v1`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArguments {}

/// An error answer: a status and a one-line reason as `{"error": ...}`.
pub(crate) struct ApiError(pub StatusCode, pub String);

/// What every error answer holds.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What was wrong, in one line, and what to do.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// A JSON request body whose rejection (not JSON, the wrong fields) is
/// answered like every other error: `{"error": ...}` with axum's status.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state)
            .await
            .map_err(|rejection: JsonRejection| ApiError(rejection.status(), rejection.body_text()))?;
        Ok(Body(value))
    }
}

/// Query parameters whose rejection is answered as JSON, with 400.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection: QueryRejection| ApiError(StatusCode::BAD_REQUEST, rejection.body_text()))?;
        Ok(Params(value))
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

/// Whether this machine works: its database, replication, the lease and the
/// agent.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `degraded` (answered with 503) when the database does not
    /// answer or the lease loop has stopped.
    #[schema(examples("ok", "degraded"))]
    status: &'static str,
    instance_id: String,
    name: String,
    version: &'static str,
    uptime_seconds: u64,
    database: DatabaseHealth,
    sync: SyncHealth,
    /// The lease as this machine sees it; null where it does not run.
    #[schema(value_type = Option<Object>)]
    lease: Option<roost_awake::LeaseStatus>,
    /// The agent here; null where none runs.
    #[schema(value_type = Option<Object>)]
    agent: Option<roost_machine::agent::AgentStatus>,
}

#[derive(Serialize, ToSchema)]
struct DatabaseHealth {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SyncHealth {
    /// Each peer's state and lag, or `{"error": ...}` when it cannot be read.
    peers: Value,
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "This machine works", body = Health),
        (status = 503, description = "The database does not answer or the lease loop stopped", body = Health),
    ))]
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let database = with_store(&state, |s| s.ping()).await;
    let (mut status, database) = match database {
        Ok(()) => (StatusCode::OK, DatabaseHealth { ok: true, error: None }),
        Err(ApiError(_, error)) => (StatusCode::SERVICE_UNAVAILABLE, DatabaseHealth { ok: false, error: Some(error) }),
    };
    let lease = crate::lease_api::health(&state);
    if lease.as_ref().is_some_and(|l| !l.ok) {
        // The lease loop has stopped turning: not healthy, whatever else answers.
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let body = Health {
        status: if status == StatusCode::OK { "ok" } else { "degraded" },
        instance_id: state.instance.id.clone(),
        name: state.instance.config.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        database,
        sync: SyncHealth { peers: crate::sync_api::peers(&state).await },
        lease,
        agent: crate::agent_api::health(&state),
    };
    (status, Json(body)).into_response()
}

/// This machine and what its store holds.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstanceInfo {
    id: String,
    name: String,
    version: &'static str,
    /// Rows per table.
    #[schema(value_type = Object)]
    counts: Map<String, Value>,
    /// The Lamport clock.
    lamport: u64,
    /// Entries in the change log.
    change_records: i64,
}

#[utoipa::path(get, path = "/api/v1/instance", tag = "store", security(("token" = []), ()),
    responses(
        (status = 200, description = "This machine", body = InstanceInfo),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn instance(State(state): State<Arc<AppState>>) -> Result<Json<InstanceInfo>, ApiError> {
    let (counts, (lamport, changes)) = with_store(&state, |s| Ok((s.counts()?, s.clock()?))).await?;
    Ok(Json(InstanceInfo {
        id: state.instance.id.clone(),
        name: state.instance.config.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        counts,
        lamport: lamport.0,
        change_records: changes,
    }))
}

/// A machine's certificate, signed by the chain's identity.
#[derive(Serialize, ToSchema)]
pub(crate) struct CertificateInfo {
    certificate: String,
    roost_id: String,
    instance_id: String,
    name: String,
}

/// This machine's certificate, for `roost instance register` and joiners.
#[utoipa::path(get, path = "/api/v1/certificate", tag = "machines",
    responses(
        (status = 200, description = "This machine's certificate", body = CertificateInfo),
        (status = 500, description = "The identity on disk cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn certificate(State(state): State<Arc<AppState>>) -> Result<Json<CertificateInfo>, ApiError> {
    let instance = state.current_instance()?;
    Ok(Json(CertificateInfo {
        certificate: instance.certificate.to_text(),
        roost_id: instance.roost_id().to_string(),
        instance_id: instance.id.clone(),
        name: instance.config.name.clone(),
    }))
}

/// A full-text search of the memories, with optional filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// The words to find (FTS5 syntax).
    q: String,
    category: Option<String>,
    min_importance: Option<i64>,
    project: Option<String>,
    tag: Option<String>,
    /// The most results (a default applies when 0 or absent).
    limit: Option<u32>,
}

/// Memories matching a search.
#[derive(Serialize, ToSchema)]
pub(crate) struct SearchResults {
    count: usize,
    #[schema(value_type = Vec<Object>)]
    results: Vec<roost_store::SearchHit>,
}

#[utoipa::path(get, path = "/api/v1/memories/search", tag = "store", params(SearchParams),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The memories found", body = SearchResults),
        (status = 400, description = "A parameter or the query is malformed", body = ErrorBody),
        (status = 404, description = "No project has that id or name", body = ErrorBody),
        (status = 503, description = "The database is busy or still indexing", body = ErrorBody),
    ))]
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    Params(p): Params<SearchParams>,
) -> Result<Json<SearchResults>, ApiError> {
    let query = SearchQuery {
        query: p.q,
        category: p.category,
        min_importance: p.min_importance,
        project: p.project,
        tag: p.tag,
        limit: p.limit.unwrap_or(0),
    };
    let hits = with_store(&state, move |s| s.search_memories(&query)).await?;
    Ok(Json(SearchResults { count: hits.len(), results: hits }))
}

#[utoipa::path(get, path = "/api/v1/memories/{id}", tag = "store",
    params(("id" = String, Path, description = "The memory's id")),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The memory's row", body = Object),
        (status = 404, description = "No such memory", body = ErrorBody),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn memory(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let row = with_store(&state, move |s| s.get(Table::Memories, &id)).await?;
    Ok(Json(row))
}

/// Every registered machine with its sync state and cached summaries.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstanceList {
    count: usize,
    #[schema(value_type = Vec<Object>)]
    instances: Vec<roost_federation::InstanceOverview>,
}

/// Every registered instance with its sync state and cached summaries, as
/// `roost_list_instances` shows them.
#[utoipa::path(get, path = "/api/v1/instances", tag = "machines", security(("token" = []), ()),
    responses(
        (status = 200, description = "The machines of the chain", body = InstanceList),
        (status = 503, description = "The registry cannot be read now", body = ErrorBody),
    ))]
pub(crate) async fn instances(State(state): State<Arc<AppState>>) -> Result<Json<InstanceList>, ApiError> {
    let instances =
        state.federation.overview().await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(InstanceList { count: instances.len(), instances }))
}
