//! The Nest's pages as askama templates (HTML auto-escaped). Every page
//! extends `nest/base.html`, which takes its header from [`Chrome`].

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::views::{AgentEntryView, ConflictView, InstanceRow, MemorySearch, RoleView};
use crate::agent_api::TopicSummary;
use roost_machine::agent::AgentStatus;

/// What the page frame shows: the instance, the signed-in nav, a flash.
pub(crate) struct Chrome {
    pub instance_name: String,
    /// The session's CSRF token, for the logout form; none before login.
    pub csrf: Option<String>,
    pub active: &'static str,
    pub flash: Option<String>,
}

#[derive(Template)]
#[template(path = "nest/login.html")]
pub(crate) struct LoginPage {
    pub chrome: Chrome,
    pub csrf: String,
    pub password_set: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "nest/instances.html")]
pub(crate) struct InstancesPage {
    pub chrome: Chrome,
    pub roost_id: String,
    /// The chain's earlier Roost IDs, newest first: a revocation rotates it.
    pub earlier: Vec<EarlierId>,
    pub rows: Vec<InstanceRow>,
}

pub(crate) struct EarlierId {
    pub roost_id: String,
    pub until: String,
}

/// The instances table alone, swapped in by the refresh script.
#[derive(Template)]
#[template(path = "nest/panel.html")]
pub(crate) struct PanelFragment {
    pub rows: Vec<InstanceRow>,
}

#[derive(Template)]
#[template(path = "nest/machines.html")]
pub(crate) struct MachinesPage {
    pub chrome: Chrome,
    pub rows: Vec<crate::MachineRow>,
    /// The pairing code on offer here, if one was ever minted.
    pub offer: Option<OfferView>,
    /// This machine holds the seed, so it can certify a new machine.
    pub can_certify: bool,
}

/// A pairing code on offer and where it stands.
pub(crate) struct OfferView {
    pub code: String,
    /// The command to run on the new machine.
    pub join: String,
    pub open: bool,
    /// `open`, `used: NAME joined`, or why it can no longer be used.
    pub state: String,
    pub minutes_left: i64,
    pub attempts_left: u32,
    /// The words both machines show during the exchange.
    pub sas: Option<String>,
}

#[derive(Template)]
#[template(path = "nest/conflicts.html")]
pub(crate) struct ConflictsPage {
    pub chrome: Chrome,
    pub conflicts: Vec<ConflictView>,
}

#[derive(Template)]
#[template(path = "nest/conflict.html")]
pub(crate) struct ConflictPage {
    pub chrome: Chrome,
    pub conflict: ConflictView,
}

#[derive(Template)]
#[template(path = "nest/memories.html")]
pub(crate) struct MemoriesPage {
    pub chrome: Chrome,
    pub query: String,
    pub all: bool,
    pub search: Option<MemorySearch>,
    /// Why the query could not be run, with a hint.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "nest/memory.html")]
pub(crate) struct MemoryPage {
    pub chrome: Chrome,
    pub id: String,
    /// The instance it was read from, when not this one.
    pub on: Option<String>,
    pub fields: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "nest/error.html")]
pub(crate) struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub message: String,
}

/// Renders a page with `status`; a template that fails to render is a 500
/// with the reason.
pub(crate) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render the page: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "nest/agent.html")]
pub(crate) struct AgentPage {
    pub chrome: Chrome,
    /// None where no agent runs (a witness).
    pub agent: Option<AgentStatus>,
    /// The awake role as this machine sees it; none where no lease runs.
    pub role: Option<RoleView>,
    pub topics: Vec<TopicSummary>,
}

#[derive(Template)]
#[template(path = "nest/pool.html")]
pub(crate) struct PoolPage {
    pub chrome: Chrome,
    /// Why the pool answers nothing here (off, or no coordinator now).
    pub off: Option<String>,
    pub machines: Vec<PoolMachineView>,
    pub topics: Vec<PoolTopicView>,
}

/// A machine as the Pool page shows it.
pub(crate) struct PoolMachineView {
    pub id: String,
    pub name: String,
    pub nickname: String,
    pub role: String,
    pub capacity: String,
    pub load: u64,
    pub health: String,
}

/// A conversation as the Pool page shows it: the nickname of the machine
/// it is placed on, and of the one running it now, if any.
pub(crate) struct PoolTopicView {
    pub topic: String,
    pub placed: String,
    pub pinned: bool,
    pub running: Option<String>,
}

#[derive(Template)]
#[template(path = "nest/agent_topic.html")]
pub(crate) struct AgentTopicPage {
    pub chrome: Chrome,
    pub topic: String,
    pub entries: Vec<AgentEntryView>,
}
