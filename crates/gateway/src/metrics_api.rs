//! `GET /metrics`: the process's counters and histograms ([`roost_metrics`]),
//! with the states read fresh for the scrape: replication lag per peer,
//! open conflicts and fenced entries, the lease's role, epoch and loop lag,
//! the agent's queue. Behind the same token check as `/api/v1`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use roost_awake::status::Role;
use roost_metrics::{Gauges, Unit};

use crate::AppState;
use crate::api::with_store;

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(state)
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut live = Gauges::default();
    replication(&state, &mut live).await;
    lease(&state, &mut live);
    agent(&state, &mut live);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], roost_metrics::metrics().encode(live))
}

async fn replication(state: &AppState, live: &mut Gauges) {
    for peer in crate::sync_api::peer_statuses(state).await.unwrap_or_default() {
        let id = peer.id.as_str();
        let info = [("peer", id), ("name", peer.name.as_str()), ("state", peer.state.word())];
        live.set("sync_peer", "The other machines, by id, with their names and where replication stands", &info, 1.0);
        let lacks = "Entries one side lacks of the other: behind, this machine lacks them; ahead, the peer does";
        live.set("sync_lag_entries", lacks, &[("peer", id), ("direction", "behind")], peer.behind as f64);
        live.set("sync_lag_entries", lacks, &[("peer", id), ("direction", "ahead")], peer.ahead as f64);
        let how_long = "How long either side has lacked entries of the other (0 when in step)";
        live.set_in("sync_lag", how_long, Some(Unit::Seconds), &[("peer", id)], peer.lag_seconds);
    }
    if let Ok((open, fenced)) = with_store(state, |s| Ok((s.open_conflicts()?, s.fenced_entries()?))).await {
        live.set("sync_open_conflicts", "Conflicts not yet resolved", &[], open as f64);
        live.set("sync_fenced_entries", "Entries of agent state refused for a past lease epoch", &[], fenced as f64);
    }
}

fn lease(state: &AppState, live: &mut Gauges) {
    let Some(awake) = state.awake() else { return };
    let status = awake.status();
    let awake_now = matches!(status.role, Role::Awake | Role::HandingOff);
    live.set("lease_awake", "1 when this machine holds the awake role", &[], f64::from(u8::from(awake_now)));
    live.set("lease_epoch", "The lease epoch this machine holds or last saw", &[], status.epoch.unwrap_or(0) as f64);
    live.set("lease_voters_heard", "Voters, this one included, heard within a TTL", &[], status.voters_heard as f64);
    let lag = status.loop_lag_ms as f64 / 1000.0;
    live.set_in("lease_loop_lag", "How long ago the lease loop last turned", Some(Unit::Seconds), &[], lag);
}

fn agent(state: &AppState, live: &mut Gauges) {
    let Some(agent) = crate::agent_api::health(state) else { return };
    let help = "The agent's messages by where they stand";
    live.set("agent_messages", help, &[("stage", "queued")], agent.counts.queued as f64);
    live.set("agent_messages", help, &[("stage", "unsent")], agent.counts.unsent as f64);
    live.set("agent_messages", help, &[("stage", "failed")], agent.counts.failed as f64);
    live.set("agent_messages", help, &[("stage", "in_flight")], agent.in_flight as f64);
}
