//! Federation for this machine's own clients that do not run replication
//! (`roost mcp`, `roost search --all`): their calls leave from the gateway's
//! endpoint, which holds this machine's connection to its relay, rather
//! than from one of their own that would take that connection over.
//! Only this machine's callers may use these routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use roost_federation::FederationError;
use roost_mcp::Caller;

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody};

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/federation/forward", post(forward))
        .route("/api/v1/federation/search", post(search))
        .with_state(state)
}

/// A tool call for another machine.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forward {
    /// The machine: its name or id.
    instance: String,
    /// An MCP tool it offers.
    tool: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: Map<String, Value>,
}

#[utoipa::path(post, path = "/api/v1/federation/forward", tag = "federation", request_body = Forward,
    security(("token" = []), ()),
    responses(
        (status = 200, description = "The tool's answer from that machine", body = Object),
        (status = 400, description = "No such machine or tool, or bad arguments", body = ErrorBody),
        (status = 403, description = "Not this machine's own client, or cross-site", body = ErrorBody),
        (status = 422, description = "The body lacks a field or has an unknown one", body = ErrorBody),
        (status = 502, description = "The machine did not answer", body = ErrorBody),
    ))]
pub(crate) async fn forward(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(call): Body<Forward>,
) -> Result<Json<Value>, ApiError> {
    local_only(&caller)?;
    let answer = state.federation.forward(&call.instance, &call.tool, call.arguments).await.map_err(refused)?;
    Ok(Json(answer))
}

#[utoipa::path(post, path = "/api/v1/federation/search", tag = "federation",
    request_body(content = Object, description = "`roost_search_memories`'s arguments"),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "Each machine's answer, merged", body = Object),
        (status = 400, description = "Bad arguments", body = ErrorBody),
        (status = 403, description = "Not this machine's own client, or cross-site", body = ErrorBody),
        (status = 422, description = "The body is not a JSON object", body = ErrorBody),
        (status = 502, description = "No machine answered", body = ErrorBody),
    ))]
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(arguments): Body<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    local_only(&caller)?;
    let merged = state.federation.search_all(arguments).await.map_err(refused)?;
    Ok(Json(json!(merged)))
}

fn local_only(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Local => Ok(()),
        Caller::Machine { .. } => {
            Err(ApiError(StatusCode::FORBIDDEN, "only this machine's own clients may federate through it".into()))
        }
    }
}

/// The caller's mistake is 400; no answer from the machines, 502.
fn refused(e: FederationError) -> ApiError {
    let status = if e.is_callers_mistake() { StatusCode::BAD_REQUEST } else { StatusCode::BAD_GATEWAY };
    ApiError(status, e.to_string())
}
