//! The signed-in pages: instances, conflicts, memories, the agent.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use serde::Deserialize;

use roost_store::Keep;

use super::login::SignedForm;
use super::session::Visitor;
use super::templates::{
    AgentPage, AgentTopicPage, ConflictPage, ConflictsPage, EarlierId, InstancesPage, MemoriesPage, MemoryPage,
    PanelFragment, page,
};
use super::views::{self, AgentEntryView, ConflictView, RoleView};
use super::{PageError, chrome};
use crate::AppState;
use crate::agent_api;
use crate::api::{ApiError, with_store};
use crate::sync_api::resolve_conflict;

pub(crate) async fn instances(State(state): State<Arc<AppState>>, visitor: Visitor) -> Result<Response, PageError> {
    let rows = views::instance_rows(&state).await?;
    let instance = state.current_instance()?;
    let earlier = instance
        .earlier_ids()
        .into_iter()
        .rev()
        .map(|(id, until)| EarlierId { roost_id: id.to_string(), until: roost_store::unix_time_text(until) })
        .collect();
    let roost_id = instance.roost_id().to_string();
    Ok(page(StatusCode::OK, &InstancesPage { chrome: chrome(&state, &visitor, "instances"), roost_id, earlier, rows }))
}

/// The instances table alone, for the page's auto-refresh.
pub(crate) async fn panel(State(state): State<Arc<AppState>>, _visitor: Visitor) -> Result<Response, PageError> {
    let rows = views::instance_rows(&state).await?;
    Ok(page(StatusCode::OK, &PanelFragment { rows }))
}

pub(crate) async fn conflicts(State(state): State<Arc<AppState>>, visitor: Visitor) -> Result<Response, PageError> {
    let (open, names) = with_store(&state, |s| Ok((s.conflicts(false, 200)?, s.instances()?))).await?;
    let conflicts = open.iter().map(|c| ConflictView::of(c, &names)).collect();
    Ok(page(StatusCode::OK, &ConflictsPage { chrome: chrome(&state, &visitor, "conflicts"), conflicts }))
}

pub(crate) async fn conflict(
    State(state): State<Arc<AppState>>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let (conflict, names) = with_store(&state, move |s| Ok((s.conflict(&id)?, s.instances()?))).await?;
    if conflict.resolved {
        state.nest.sessions.flash(&visitor.id, format!("Conflict {} is already resolved.", conflict.id));
        return Ok(redirect_to_list());
    }
    let conflict = ConflictView::of(&conflict, &names);
    Ok(page(StatusCode::OK, &ConflictPage { chrome: chrome(&state, &visitor, "conflicts"), conflict }))
}

/// Keep local, keep remote, or merge: one write through the store's door,
/// which replicates the resolution to the other machines.
pub(crate) async fn resolve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    let keep = match form.field("keep") {
        Some("local") => Keep::Local,
        Some("remote") => Keep::Remote,
        Some("merge") => {
            let lookup = id.clone();
            let conflict = with_store(&state, move |s| s.conflict(&lookup)).await?;
            let edited = form
                .fields
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("field.").map(|name| (name.to_string(), v.clone())))
                .collect();
            Keep::Merge(views::merge_fields(&conflict, edited).map_err(|e| PageError(StatusCode::BAD_REQUEST, e))?)
        }
        other => {
            let message = format!("keep must be local, remote or merge, not {:?}", other.unwrap_or(""));
            return Err(PageError(StatusCode::BAD_REQUEST, message));
        }
    };
    let how = match &keep {
        Keep::Local => "kept the local version",
        Keep::Remote => "kept the remote version",
        Keep::Merge(_) => "saved the merged version",
    };
    let (_, conflict) = resolve_conflict(&state, id, keep).await?;
    let short: String = conflict.id.chars().take(12).collect();
    state.nest.sessions.flash(&form.visitor.id, format!("Resolved conflict {short}: {how}."));
    Ok(redirect_to_list())
}

fn redirect_to_list() -> Response {
    axum::response::IntoResponse::into_response(Redirect::to("/nest/conflicts"))
}

#[derive(Deserialize)]
pub(crate) struct SearchParams {
    #[serde(default)]
    q: String,
    all: Option<String>,
}

pub(crate) async fn memories(
    State(state): State<Arc<AppState>>,
    visitor: Visitor,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let query = params.q.trim().to_string();
    let all = params.all.is_some_and(|v| v == "1");
    // A malformed query is shown on the search page itself, with its hint,
    // so it can be corrected in place.
    let (status, search, error) = match query.is_empty() {
        true => (StatusCode::OK, None, None),
        false => match views::search_memories(&state, query.clone(), all).await {
            Ok(search) => (StatusCode::OK, Some(search), None),
            Err(ApiError(StatusCode::BAD_REQUEST, message)) => (StatusCode::BAD_REQUEST, None, Some(message)),
            Err(e) => return Err(e.into()),
        },
    };
    let chrome = chrome(&state, &visitor, "memories");
    Ok(page(status, &MemoriesPage { chrome, query, all, search, error }))
}

#[derive(Deserialize)]
pub(crate) struct MemoryParams {
    /// The instance holding it, when it is not this one.
    on: Option<String>,
}

pub(crate) async fn memory(
    State(state): State<Arc<AppState>>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(params): Query<MemoryParams>,
) -> Result<Response, PageError> {
    let fields = views::memory_fields(&state, id.clone(), params.on.clone()).await?;
    let chrome = chrome(&state, &visitor, "memories");
    Ok(page(StatusCode::OK, &MemoryPage { chrome, id, on: params.on, fields }))
}

pub(crate) async fn agent(State(state): State<Arc<AppState>>, visitor: Visitor) -> Result<Response, PageError> {
    let topics = agent_api::topic_summaries(&state).await?;
    let agent = agent_api::health(&state);
    let role = state.awake().map(|awake| RoleView::of(&awake.status()));
    Ok(page(StatusCode::OK, &AgentPage { chrome: chrome(&state, &visitor, "agent"), agent, role, topics }))
}

pub(crate) async fn agent_topic(
    State(state): State<Arc<AppState>>,
    visitor: Visitor,
    Path(topic): Path<String>,
) -> Result<Response, PageError> {
    let entries = agent_api::topic_entries(&state, topic.clone()).await?;
    let names = with_store(&state, |s| s.instances()).await?;
    let entries = entries.into_iter().map(|e| AgentEntryView::of(e, &names)).collect();
    Ok(page(StatusCode::OK, &AgentTopicPage { chrome: chrome(&state, &visitor, "agent"), topic, entries }))
}
