//! The machines of the chain as this one sees them now (`roost machines`),
//! and the reload `roost join` and `roost identity import` ask for.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use roost_awake::Part;
use roost_machine::Reloaded;
use roost_store::Standing;
use roost_store::registry::display_names;

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody, NoArguments, with_store};
use crate::auth::OverSocket;

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new().route("/api/v1/machines", get(machines)).route("/api/v1/local/reload", post(reload)).with_state(state)
}

/// The part a machine plays in the role, as this machine sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MachinePart {
    Awake,
    Standby,
    Witness,
    /// Heard from, not a voter yet.
    Joining,
    Left,
    /// Not heard from (or the gateway is not running).
    Unknown,
}

impl MachinePart {
    pub fn as_str(self) -> &'static str {
        match self {
            MachinePart::Awake => "awake",
            MachinePart::Standby => "standby",
            MachinePart::Witness => "witness",
            MachinePart::Joining => "joining",
            MachinePart::Left => "left",
            MachinePart::Unknown => "unknown",
        }
    }
}

/// One row of `roost machines`, as `/api/v1/machines` answers it and the
/// CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MachineRow {
    pub id: String,
    /// The name, with the end of the id when another machine shares it.
    pub name: String,
    pub this: bool,
    pub role: MachinePart,
    pub addresses: Vec<String>,
    /// Replication with it now; `this machine` for this one.
    pub sync: String,
    pub version: Option<String>,
    pub last_seen: Option<String>,
    /// `active`, or `revoked` for good.
    #[schema(value_type = String, examples("active", "revoked"))]
    pub status: Standing,
}

/// The machines of the chain.
#[derive(Serialize, ToSchema)]
pub(crate) struct MachineList {
    machines: Vec<MachineRow>,
}

#[utoipa::path(get, path = "/api/v1/machines", tag = "machines", security(("token" = []), ()),
    responses(
        (status = 200, description = "Each machine, its part in the role and its replication", body = MachineList),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn machines(State(state): State<Arc<AppState>>) -> Result<Json<MachineList>, ApiError> {
    Ok(Json(MachineList { machines: machine_rows(&state).await? }))
}

/// Every machine of the chain, its part in the role and its replication,
/// for the API and the Nest's Machines page.
pub(crate) async fn machine_rows(state: &AppState) -> Result<Vec<MachineRow>, ApiError> {
    let entries = with_store(state, |s| s.instances()).await?;
    let peers = crate::sync_api::peer_statuses(state).await.unwrap_or_default();
    let lease = crate::lease_api::health(state);
    let names = display_names(&entries);
    let me = &state.instance.id;
    let holder = lease.as_ref().and_then(|l| l.holder.as_ref()).map(|h| h.id.as_str());
    let voters: &[String] = lease.as_ref().map_or(&[], |l| &l.voter_ids);
    let witness_here = lease.as_ref().is_some_and(|l| l.part == Part::Witness);
    let heard = |id: &str| lease.as_ref().and_then(|l| l.peers.iter().find(|p| p.id == id));
    let rows: Vec<MachineRow> = entries
        .into_iter()
        .map(|e| {
            let this = e.id == *me;
            let seen = heard(&e.id);
            let role = if holder == Some(e.id.as_str()) {
                MachinePart::Awake
            } else if (this && witness_here) || seen.is_some_and(|p| p.witness) {
                MachinePart::Witness
            } else if seen.is_some_and(|p| p.leaving) {
                MachinePart::Left
            } else if voters.contains(&e.id) {
                MachinePart::Standby
            } else if this || seen.is_some() {
                MachinePart::Joining
            } else {
                MachinePart::Unknown
            };
            let sync = if this {
                "this machine".to_string()
            } else {
                match peers.iter().find(|p| p.id == e.id) {
                    Some(p) => p.state.to_string(),
                    None if e.is_revoked() => "revoked".into(),
                    None => "not running".into(),
                }
            };
            MachineRow {
                name: names[&e.id].clone(),
                this,
                role,
                // This machine's own, as it advertises them now.
                addresses: if this { state.instance.advertised_urls() } else { e.addresses },
                sync,
                version: e.version,
                last_seen: e.last_seen,
                status: e.status,
                id: e.id,
            }
        })
        .collect();
    Ok(rows)
}

/// Restarts replication and the lease on the identity on disk, if it
/// changed: `roost join` and `roost identity import` call this so the
/// running gateway takes the new identity at once.
/// Whether the reload restarted replication and the lease.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReloadDone {
    restarted: bool,
    /// The identity now, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    roost_id: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/local/reload", tag = "machines", request_body = NoArguments,
    responses(
        (status = 200, description = "Reloaded, or nothing changed", body = ReloadDone),
        (status = 400, description = "The body is malformed", body = ErrorBody),
        (status = 403, description = "Not sent over the instance's Unix socket, or cross-site", body = ErrorBody),
        (status = 422, description = "The body is not `{}`", body = ErrorBody),
        (status = 500, description = "The identity on disk cannot be taken", body = ErrorBody),
        (status = 503, description = "Replication does not run in this process", body = ErrorBody),
    ))]
pub(crate) async fn reload(
    State(state): State<Arc<AppState>>,
    _: OverSocket,
    Body(NoArguments {}): Body<NoArguments>,
) -> Result<Json<ReloadDone>, ApiError> {
    Ok(Json(reload_identity(&state).await?))
}

/// Restarts replication and the lease on the identity on disk if it
/// changed (a join, an import, a rename, a revocation).
pub(crate) async fn reload_identity(state: &AppState) -> Result<ReloadDone, ApiError> {
    let machine = state
        .machine
        .as_ref()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "replication does not run in this process".into()))?;
    match machine.reload().await {
        Ok(Reloaded::Unchanged) => Ok(ReloadDone { restarted: false, roost_id: None }),
        Ok(Reloaded::Restarted { roost_id }) => Ok(ReloadDone { restarted: true, roost_id: Some(roost_id) }),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
