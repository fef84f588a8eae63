//! What the Nest's pages show, gathered from the store and the replication
//! service. Each view is built in one function, so that other sources (the
//! per-instance summaries, federated search) are wired in one place.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use roost_core::Table;
use roost_federation::search::Status;
use roost_store::{Conflict, ConflictVersion, InstanceEntry, SearchQuery};
use roost_sync::PeerState;

use roost_agent::Stage;

use crate::AppState;
use crate::agent_api::TopicEntry;
use crate::api::{ApiError, with_store};

/// How an instance looks from here, as a status dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// This machine itself, or a peer connected and caught up.
    Connected,
    Syncing,
    Unreachable,
    Unknown,
    Revoked,
}

impl Reachability {
    fn of_peer_state(state: PeerState) -> Reachability {
        match state {
            PeerState::Online => Reachability::Connected,
            PeerState::Syncing => Reachability::Syncing,
            PeerState::Offline | PeerState::NoAddress => Reachability::Unreachable,
            PeerState::Revoked => Reachability::Revoked,
            PeerState::Unknown => Reachability::Unknown,
        }
    }

    /// The word used in `data-status` and CSS classes.
    pub fn key(self) -> &'static str {
        match self {
            Reachability::Connected => "connected",
            Reachability::Syncing => "syncing",
            Reachability::Unreachable => "unreachable",
            Reachability::Unknown => "unknown",
            Reachability::Revoked => "revoked",
        }
    }
}

/// One row of the instances panel.
pub struct InstanceRow {
    pub name: String,
    pub short_id: String,
    pub this_machine: bool,
    pub status: Reachability,
    pub last_sync: Option<String>,
    pub behind: u64,
    pub conflicts: u64,
    pub role: roost_core::Role,
    /// The first 16 hex digits of SHA-256 over the machine's signing key, as `roost whoami` shows it.
    pub fingerprint: String,
    pub last_error: Option<String>,
    /// From the instance's cached summary, when one is known.
    pub memories: Option<u64>,
    pub projects: Option<u64>,
    pub summary_age: Option<String>,
    pub summary_stale: bool,
}

/// This machine and every registered instance, with what sync knows of each
/// and its cached summary (see `roost_federation::Federation::overview`).
pub(crate) async fn instance_rows(state: &AppState) -> Result<Vec<InstanceRow>, ApiError> {
    let overview =
        state.federation.overview().await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(overview
        .into_iter()
        .map(|o| {
            let status = match (o.this, &o.sync) {
                (true, _) => Reachability::Connected,
                (false, Some(peer)) => Reachability::of_peer_state(peer.state),
                (false, None) if o.status == roost_store::Standing::Revoked => Reachability::Revoked,
                (false, None) => Reachability::Unknown,
            };
            let summary = o.summary.value.as_ref();
            InstanceRow {
                short_id: short_id(&o.id),
                this_machine: o.this,
                status,
                last_sync: o.sync.as_ref().and_then(|p| p.last_sync.as_deref()).or(o.last_seen.as_deref()).map(ago),
                behind: o.sync.as_ref().map_or(0, |p| p.behind),
                conflicts: o.open_conflicts as u64,
                fingerprint: o.fingerprint,
                last_error: o.sync.and_then(|p| p.last_error),
                memories: summary.map(|s| s.memories),
                projects: summary.map(|s| s.projects.len() as u64),
                summary_age: if o.this { None } else { o.summary.fetched_at.as_deref().map(ago) },
                summary_stale: !o.this && o.summary.stale,
                name: o.name,
                role: o.role,
            }
        })
        .collect())
}

/// The last 8 characters of an id: ids are UUIDv7, whose first digits are a
/// timestamp shared by ids made around the same time.
pub(crate) fn short_id(id: &str) -> String {
    let tail: String = id.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

/// A stored timestamp as "N s/min/h/d ago"; the text itself if it does not parse.
pub(crate) fn ago(stamp: &str) -> String {
    let Some(age) = roost_store::age_of(stamp) else { return stamp.to_string() };
    let seconds = age.as_secs();
    match seconds {
        0..5 => "just now".into(),
        5..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86400 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86400),
    }
}

/// One field of a conflict, as both versions have it.
pub struct FieldPair {
    pub name: String,
    pub local: String,
    pub remote: String,
    pub differs: bool,
    /// What the merge form starts from: the shown version's value.
    pub shown: String,
}

/// One version's header: which machine wrote it and whether it is the one shown.
pub struct VersionLabel {
    pub origin: String,
    pub shown: bool,
    pub op: String,
}

/// A conflict laid out side by side: this machine's version and the other.
pub struct ConflictView {
    pub id: String,
    pub short_id: String,
    pub table: String,
    pub row_id: String,
    pub short_row_id: String,
    pub created: String,
    pub local: VersionLabel,
    pub remote: VersionLabel,
    pub fields: Vec<FieldPair>,
    pub differing: Vec<String>,
}

/// Fields every version carries that say nothing about the content.
const STAMPS: [&str; 5] = ["id", "origin", "lamport", "updated_at", "created_at"];

impl ConflictView {
    pub(crate) fn of(conflict: &Conflict, names: &[InstanceEntry]) -> ConflictView {
        let name_of =
            |origin: &str| names.iter().find(|e| e.id == origin).map_or(origin.to_string(), |e| e.name.clone());
        let label = |v: &ConflictVersion| VersionLabel {
            origin: name_of(&v.origin),
            shown: std::ptr::eq(v, &conflict.winner),
            op: v.op.clone(),
        };
        let (local, remote) = (conflict.local_version(), conflict.remote_version());
        let empty = Map::new();
        let fields_of = |v: &ConflictVersion| v.row.as_object().unwrap_or(&empty).clone();
        let (l, r, shown) = (fields_of(local), fields_of(remote), fields_of(&conflict.winner));
        let names: BTreeSet<&String> = l.keys().chain(r.keys()).filter(|k| !STAMPS.contains(&k.as_str())).collect();
        let fields = names
            .into_iter()
            .filter(|name| !(display(l.get(*name)).is_empty() && display(r.get(*name)).is_empty()))
            .map(|name| FieldPair {
                name: name.clone(),
                local: display(l.get(name)),
                remote: display(r.get(name)),
                differs: conflict.differing.contains(name),
                shown: display(shown.get(name)),
            })
            .collect();
        ConflictView {
            id: conflict.id.clone(),
            short_id: conflict.id.chars().take(8).collect(),
            table: conflict.table.clone(),
            row_id: conflict.row_id.clone(),
            short_row_id: short_id(&conflict.row_id),
            created: ago(&conflict.created_at),
            local: label(local),
            remote: label(remote),
            fields,
            differing: conflict.differing.clone(),
        }
    }
}

/// A field value as text: strings as they are, nothing as empty, the rest as JSON.
pub(crate) fn display(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Turns the merge form's text back into field values, typed like the shown
/// version's: text stays text, empty clears, anything else is read as JSON.
pub(crate) fn merge_fields(conflict: &Conflict, edited: Vec<(String, String)>) -> Result<Map<String, Value>, String> {
    let shown = conflict.winner.row.as_object();
    let mut fields = Map::new();
    for (name, text) in edited {
        if !conflict.differing.contains(&name) {
            return Err(format!("{name} is not one of the fields in conflict"));
        }
        let value = match shown.and_then(|row| row.get(&name)) {
            _ if text.is_empty() => Value::Null,
            Some(Value::String(_)) | Some(Value::Null) | None => Value::String(text),
            Some(_) => serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?,
        };
        fields.insert(name, value);
    }
    Ok(fields)
}

/// A search hit, with the instances known to hold it.
pub struct MemoryResult {
    pub id: String,
    /// The snippet in pieces, each marked whether it matched the query.
    pub snippet: Vec<(String, bool)>,
    pub category: String,
    pub importance: String,
    pub score: String,
    pub holders: Vec<String>,
    /// An instance to read it from when this one does not hold it.
    pub elsewhere: Option<String>,
}

pub struct InstanceReport {
    pub name: String,
    pub outcome: Status,
}

pub struct MemorySearch {
    pub results: Vec<MemoryResult>,
    pub reports: Vec<InstanceReport>,
    /// Which instances the search covered, in words.
    pub searched: String,
}

/// Searches memories on this instance or, with `all`, on every instance
/// through the federation's search of all instances.
pub(crate) async fn search_memories(state: &AppState, query: String, all: bool) -> Result<MemorySearch, ApiError> {
    let me = state.instance.config.name.clone();
    if !all {
        let search = SearchQuery { query, category: None, min_importance: None, project: None, tag: None, limit: 50 };
        let hits = with_store(state, move |s| s.search_memories(&search)).await?;
        let results = hits
            .into_iter()
            .map(|hit| MemoryResult::of(&Value::Object(hit.memory), &hit.snippet, hit.score, vec![me.clone()], None))
            .collect();
        let reports = vec![InstanceReport { name: me, outcome: Status::Answered }];
        return Ok(MemorySearch { results, reports, searched: "this instance".into() });
    }
    let mut args = Map::new();
    args.insert("query".into(), Value::String(query));
    args.insert("limit".into(), Value::from(50));
    let merged = state.federation.search_all(args).await.map_err(|e| {
        let status = if e.is_callers_mistake() { StatusCode::BAD_REQUEST } else { StatusCode::SERVICE_UNAVAILABLE };
        ApiError(status, e.to_string())
    })?;
    let results = merged
        .results
        .into_iter()
        .map(|hit| {
            let held_here = hit.holders.iter().any(|h| h.id == state.instance.id);
            let elsewhere = if held_here { None } else { hit.holders.first().map(|h| h.name.clone()) };
            let holders = hit.holders.into_iter().map(|h| h.name).collect();
            MemoryResult::of(&hit.memory, hit.snippet.as_str().unwrap_or_default(), hit.score, holders, elsewhere)
        })
        .collect();
    let reports: Vec<InstanceReport> =
        merged.instances.into_iter().map(|r| InstanceReport { name: r.instance.name, outcome: r.outcome }).collect();
    let searched = format!("{} instances", reports.len());
    Ok(MemorySearch { results, reports, searched })
}

impl MemoryResult {
    fn of(memory: &Value, snippet: &str, score: f64, holders: Vec<String>, elsewhere: Option<String>) -> MemoryResult {
        MemoryResult {
            id: display(memory.get("id")),
            snippet: marked_pieces(snippet),
            category: display(memory.get("category")),
            importance: display(memory.get("importance")),
            score: score_text(score),
            holders,
            elsewhere,
        }
    }
}

/// A relevance score in three significant digits: bm25 gives tiny numbers on small stores.
fn score_text(score: f64) -> String {
    if score.abs() >= 0.01 || score == 0.0 { format!("{score:.2}") } else { format!("{score:.2e}") }
}

/// Splits a search snippet, whose matches are in [brackets], into pieces.
fn marked_pieces(snippet: &str) -> Vec<(String, bool)> {
    let mut pieces = Vec::new();
    let mut rest = snippet;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|i| open + i) else { break };
        if open > 0 {
            pieces.push((rest[..open].to_string(), false));
        }
        pieces.push((rest[open + 1..close].to_string(), true));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push((rest.to_string(), false));
    }
    pieces
}

/// One memory's fields, in a stable order with the content first; read from
/// instance `on` (through the federation) when given.
pub(crate) async fn memory_fields(
    state: &AppState,
    id: String,
    on: Option<String>,
) -> Result<Vec<(String, String)>, ApiError> {
    let row = match on {
        Some(instance) => {
            let mut args = Map::new();
            args.insert("id".into(), Value::String(id));
            let answer = state.federation.forward(&instance, "roost_get_memory", args).await.map_err(|e| {
                let status = if e.is_callers_mistake() { StatusCode::BAD_REQUEST } else { StatusCode::BAD_GATEWAY };
                ApiError(status, e.to_string())
            })?;
            match answer.get("result") {
                Some(Value::Object(row)) => row.clone(),
                _ => return Err(ApiError(StatusCode::BAD_GATEWAY, format!("{instance} answered without a memory"))),
            }
        }
        None => with_store(state, move |s| s.get(Table::Memories, &id)).await?,
    };
    let mut fields: Vec<(String, String)> = row.iter().map(|(k, v)| (k.clone(), display(Some(v)))).collect();
    fields.sort_by_key(|(name, _)| (name != "content", name.clone()));
    Ok(fields)
}

/// One message of a topic as the Agent page shows it: machines by name, a
/// message not yet claimed as `received`.
pub struct AgentEntryView {
    pub id: String,
    pub channel: String,
    pub sender: Option<String>,
    pub text: String,
    pub received_at: String,
    pub received_by: String,
    pub stage: &'static str,
    pub reply: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
    pub epoch: Option<u64>,
    pub replied_by: Option<String>,
}

impl AgentEntryView {
    pub(crate) fn of(entry: TopicEntry, names: &[InstanceEntry]) -> AgentEntryView {
        let name_of = |id: &str| names.iter().find(|e| e.id == id).map_or(id.to_string(), |e| e.name.clone());
        AgentEntryView {
            received_by: name_of(&entry.received_by),
            replied_by: entry.replied_by.as_deref().map(name_of),
            stage: entry.stage.map_or("received", Stage::label),
            id: entry.id,
            channel: entry.channel,
            sender: entry.sender,
            text: entry.text,
            received_at: entry.received_at,
            reply: entry.reply,
            attempts: entry.attempts,
            error: entry.error,
            epoch: entry.epoch,
        }
    }
}

/// The awake role as the Agent page shows it: this machine's part, the
/// holder, whether a failover could happen now, and the last times this
/// machine took the role.
pub(crate) struct RoleView {
    pub role: String,
    pub epoch: Option<u64>,
    pub holder: Option<String>,
    pub voters: usize,
    pub voters_heard: usize,
    /// Whether the others could take over if the holder died, in words.
    pub failover: String,
    pub takeovers: Vec<TakeoverRow>,
}

/// One time this machine took the role.
pub(crate) struct TakeoverRow {
    pub epoch: u64,
    pub how: String,
    /// How long it took, or a dash for the first.
    pub took: String,
    pub when: String,
}

impl RoleView {
    pub(crate) fn of(status: &roost_awake::LeaseStatus) -> RoleView {
        let takeovers = status
            .takeovers
            .iter()
            .rev()
            .map(|t| TakeoverRow {
                epoch: t.epoch,
                how: t.how.clone(),
                took: t.took_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
                when: ago(&roost_store::unix_time_text(t.at_unix as i64)),
            })
            .collect();
        RoleView {
            role: status.role.to_string(),
            epoch: status.epoch,
            holder: status.holder.as_ref().map(|h| h.name.clone()),
            voters: status.voters,
            voters_heard: status.voters_heard,
            failover: status.failover.clone(),
            takeovers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_split_on_brackets() {
        let pieces = marked_pieces("a [walrus] and [two]");
        let want = [("a ", false), ("walrus", true), (" and ", false), ("two", true)];
        assert_eq!(pieces, want.map(|(t, m)| (t.to_string(), m)));
        assert_eq!(marked_pieces("no [close"), vec![("no [close".to_string(), false)]);
    }

    #[test]
    fn short_ids_keep_the_random_end() {
        assert_eq!(short_id("01a208e2-efa6-7214-8bd5-453da16fb005"), "…a16fb005");
        assert_eq!(short_id("abc"), "…abc");
    }

    fn version(origin: &str, row: Value) -> ConflictVersion {
        ConflictVersion { origin: origin.into(), seq: 1, lamport: 1, op: "update".into(), row, local: false }
    }

    #[test]
    fn merged_fields_keep_the_shown_types() {
        let conflict = Conflict {
            id: "c1".into(),
            table: "memories".into(),
            row_id: "r1".into(),
            winner: version("a", serde_json::json!({"content": "x", "importance": 5, "tags": ["t"]})),
            loser: version("b", serde_json::json!({"content": "y", "importance": 7, "tags": []})),
            resolved: false,
            resolution: None,
            resolved_at: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            differing: vec!["content".into(), "importance".into(), "tags".into()],
        };
        let edited = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let fields = merge_fields(&conflict, edited(&[("content", "both"), ("importance", "6"), ("tags", "[]")]));
        assert_eq!(Value::Object(fields.unwrap()), serde_json::json!({"content": "both", "importance": 6, "tags": []}));
        assert!(merge_fields(&conflict, edited(&[("importance", "six")])).unwrap_err().starts_with("importance"));
        assert!(merge_fields(&conflict, edited(&[("category", "x")])).is_err(), "only fields in conflict");
    }

    #[test]
    fn timestamps_read_as_ages() {
        assert_eq!(ago("not a time"), "not a time");
        assert!(ago("2020-01-01T00:00:00.000Z").ends_with("d ago"));
    }
}
