//! The agent's API: inbound messages (the webhook channel, and `roost agent
//! say` through the socket), the topics and their history, and what the
//! agent is doing here.
//!
//! Any machine records an inbound message, awake or not: it answers 202 once
//! the row is durable in its store, and replication carries it to the holder.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use roost_agent::ledger::{self, Stage};
use roost_agent::redact;
use roost_machine::agent::AgentStatus;
use roost_store::agent::Inbound;

use crate::AppState;
use crate::api::{ApiError, Body, ErrorBody, with_store};

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/agent", get(status))
        .route("/api/v1/agent/messages", post(receive))
        .route("/api/v1/agent/topics", get(topics))
        .route("/api/v1/agent/topics/{topic}", get(topic))
        .with_state(state)
}

/// `roost_agent_status` in `roost serve`: the running machine's lease and
/// agent.
pub(crate) struct MachineAgent(pub std::sync::Weak<roost_machine::Machine>);

impl roost_mcp::AgentSource for MachineAgent {
    fn status(&self) -> roost_mcp::Pending<Result<Value, String>> {
        let machine = self.0.upgrade();
        Box::pin(async move {
            let machine = machine.ok_or("this machine is shutting down")?;
            let lease = serde_json::to_value(machine.awake().status()).map_err(|e| e.to_string())?;
            let agent = serde_json::to_value(machine.agent().map(|a| a.status())).map_err(|e| e.to_string())?;
            Ok(roost_mcp::agent_status(&lease, &agent))
        })
    }
}

/// The agent part of `/health`: none where no agent runs (a witness, or a
/// process without the lease).
pub(crate) fn health(state: &AppState) -> Option<AgentStatus> {
    state.machine.as_ref().and_then(|m| m.agent()).map(|agent| agent.status())
}

/// An inbound message.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboundBody {
    /// 1 to 32 lowercase letters, digits, - or _; not `telegram`.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    channel: String,
    topic: String,
    message_id: String,
    #[serde(default)]
    sender: Option<String>,
    text: String,
}

const EXPECTED: &str = "expected JSON {\"channel\", \"topic\", \"message_id\", \"text\"} and optionally \"sender\"";

/// A message recorded: its id, and whether it had come before.
#[derive(Serialize, ToSchema)]
pub(crate) struct Recorded {
    id: String,
    duplicate: bool,
}

#[utoipa::path(post, path = "/api/v1/agent/messages", tag = "agent", request_body = InboundBody,
    security(("token" = []), ()),
    responses(
        (status = 202, description = "Durable here; replication carries it to the awake machine", body = Recorded),
        (status = 400, description = "The body is malformed or names a bad channel", body = ErrorBody),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn receive(
    State(state): State<Arc<AppState>>,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, why);
    let body: InboundBody = serde_json::from_value(body).map_err(|e| bad(format!("{e}; {EXPECTED}")))?;
    if !ledger::valid_channel(&body.channel) {
        return Err(bad(format!(
            "channel {:?} is not a channel name: use 1 to 32 lowercase letters, digits, - or _",
            body.channel
        )));
    }
    if body.channel == roost_agent::telegram::CHANNEL {
        return Err(bad(
            "channel \"telegram\" is the Telegram bot's: set [agent.telegram] token and the awake machine polls it; post other messages under another channel name".into(),
        ));
    }
    // What enters the replicated log never holds a secret.
    let text = redact(&body.text);
    let (message, recorded) = with_store(&state, move |store| {
        store.record_message(&Inbound {
            channel: &body.channel,
            topic: &body.topic,
            message_id: &body.message_id,
            sender: body.sender.as_deref(),
            text: &text,
        })
    })
    .await?;
    if let Some(agent) = state.machine.as_ref().and_then(|m| m.agent()) {
        agent.wake();
    }
    Ok((StatusCode::ACCEPTED, Json(Recorded { id: message.id, duplicate: !recorded })))
}

#[utoipa::path(get, path = "/api/v1/agent", tag = "agent", security(("token" = []), ()),
    responses(
        (status = 200, description = "The agent here; null where none runs", body = Option<Object>),
    ))]
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Json<Option<AgentStatus>> {
    Json(health(&state))
}

/// One conversation: its messages and when the last came.
#[derive(Serialize, ToSchema)]
pub(crate) struct TopicSummary {
    pub topic: String,
    pub messages: u64,
    pub last_at: String,
}

/// Every topic this machine's ledger holds, for the API and the Nest.
pub(crate) async fn topic_summaries(state: &AppState) -> Result<Vec<TopicSummary>, ApiError> {
    let topics = with_store(state, |store| store.topics()).await?;
    Ok(topics.into_iter().map(|(topic, messages, last_at)| TopicSummary { topic, messages, last_at }).collect())
}

/// Every topic this machine's ledger holds.
#[derive(Serialize, ToSchema)]
pub(crate) struct TopicList {
    topics: Vec<TopicSummary>,
}

#[utoipa::path(get, path = "/api/v1/agent/topics", tag = "agent", security(("token" = []), ()),
    responses(
        (status = 200, description = "The conversations", body = TopicList),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn topics(State(state): State<Arc<AppState>>) -> Result<Json<TopicList>, ApiError> {
    Ok(Json(TopicList { topics: topic_summaries(&state).await? }))
}

/// One message of a topic with where its reply stands.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct TopicEntry {
    pub id: String,
    pub channel: String,
    pub message_id: String,
    pub sender: Option<String>,
    pub text: String,
    pub received_at: String,
    pub received_by: String,
    /// None until the holder claims it.
    #[schema(value_type = Option<String>)]
    pub stage: Option<Stage>,
    pub reply: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
    /// The epoch and machine of the reply record's last write.
    pub epoch: Option<u64>,
    pub replied_by: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A topic's messages in order, each with where its reply stands, for the
/// API and the Nest.
pub(crate) async fn topic_entries(state: &AppState, topic: String) -> Result<Vec<TopicEntry>, ApiError> {
    let entries = with_store(state, move |store| store.ledger(Some(&topic))).await?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let reply = e.reply.as_ref();
            TopicEntry {
                id: e.message.id,
                channel: e.message.channel,
                message_id: e.message.message_id,
                sender: e.message.sender,
                text: e.message.text,
                received_at: e.message.received_at,
                received_by: e.message.received_by,
                stage: reply.map(|(r, _)| r.stage),
                reply: reply.and_then(|(r, _)| r.text.clone()),
                attempts: reply.map_or(0, |(r, _)| r.attempts),
                error: reply.and_then(|(r, _)| r.error.clone()),
                epoch: reply.map(|(_, epoch)| *epoch),
                replied_by: reply.map(|(r, _)| r.machine.clone()),
                idempotency_key: reply.map(|(r, _)| r.key.clone()),
            }
        })
        .collect())
}

/// A topic's messages in order.
#[derive(Serialize, ToSchema)]
pub(crate) struct TopicHistory {
    topic: String,
    messages: Vec<TopicEntry>,
}

#[utoipa::path(get, path = "/api/v1/agent/topics/{topic}", tag = "agent",
    params(("topic" = String, Path, description = "The topic")),
    security(("token" = []), ()),
    responses(
        (status = 200, description = "Its messages, each with where its reply stands", body = TopicHistory),
        (status = 503, description = "The database is busy", body = ErrorBody),
    ))]
pub(crate) async fn topic(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Result<Json<TopicHistory>, ApiError> {
    let messages = topic_entries(&state, topic.clone()).await?;
    Ok(Json(TopicHistory { topic, messages }))
}
