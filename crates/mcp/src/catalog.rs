//! The tool catalogue: every tool's name, description and input schema,
//! generated from the core's table descriptors.

use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

use roost_core::{Field, FieldKind, Table};

/// Most memories one `roost_store_memories` call saves.
pub const MAX_BATCH: usize = 500;

/// What a tool does, independent of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create(Table),
    /// Save many memories in one call and one transaction.
    StoreMemories,
    Get(Table),
    List(Table),
    Update(Table),
    Delete(Table),
    SearchMemories,
    MemoryStats,
    ListSyncConflicts,
    ResolveSyncConflict,
    /// Search every reachable instance at once (federation).
    SearchAll,
    /// The registered instances with status and cached summaries.
    ListInstances,
    /// Whether this machine is the awake one, at which epoch, and what its
    /// agent is doing.
    AgentStatus,
    /// One conversation of the agent: its messages and replies.
    AgentTopic,
    /// The pool: where topics run, moving one, naming machines.
    Pool,
}

impl Action {
    /// Every tool Roost serves, in listing order.
    pub fn all() -> Vec<Action> {
        let mut all = vec![
            Action::SearchMemories,
            Action::StoreMemories,
            Action::SearchAll,
            Action::MemoryStats,
            Action::ListInstances,
            Action::ListSyncConflicts,
            Action::ResolveSyncConflict,
            Action::AgentStatus,
            Action::AgentTopic,
            Action::Pool,
        ];
        // The agent's tables are written by its channels and the awake
        // machine's fenced door: no generic tool reads or writes them.
        for table in Table::ALL.into_iter().filter(|t| t.for_people()) {
            all.extend([
                Action::Create(table),
                Action::Get(table),
                Action::List(table),
                Action::Update(table),
                Action::Delete(table),
            ]);
        }
        all
    }

    pub fn tool_name(self) -> String {
        match self {
            Action::Create(Table::Memories) => "roost_store_memory".into(),
            Action::Create(t) => format!("roost_create_{}", t.singular()),
            Action::StoreMemories => "roost_store_memories".into(),
            Action::Get(t) => format!("roost_get_{}", t.singular()),
            Action::List(t) => format!("roost_list_{}", t.name()),
            Action::Update(t) => format!("roost_update_{}", t.singular()),
            Action::Delete(t) => format!("roost_delete_{}", t.singular()),
            Action::SearchMemories => "roost_search_memories".into(),
            Action::MemoryStats => "roost_memory_stats".into(),
            Action::ListSyncConflicts => "roost_list_sync_conflicts".into(),
            Action::ResolveSyncConflict => "roost_resolve_sync_conflict".into(),
            Action::SearchAll => "roost_search_all".into(),
            Action::ListInstances => "roost_list_instances".into(),
            Action::AgentStatus => "roost_agent_status".into(),
            Action::AgentTopic => "roost_agent_topic".into(),
            Action::Pool => "roost_pool".into(),
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::all().into_iter().find(|a| a.tool_name() == name)
    }

    /// Whether the tool only reads (so running it twice is harmless).
    pub fn read_only(self) -> bool {
        matches!(
            self,
            Action::Get(_)
                | Action::List(_)
                | Action::SearchMemories
                | Action::MemoryStats
                | Action::ListSyncConflicts
                | Action::SearchAll
                | Action::ListInstances
                | Action::AgentStatus
                | Action::AgentTopic
        )
    }

    /// Whether the tool runs on one instance and so takes the `instance`
    /// argument; the federated tools span all instances themselves.
    pub fn runs_on_one_instance(self) -> bool {
        !matches!(self, Action::SearchAll | Action::ListInstances | Action::Pool)
    }

    /// The argument names this tool accepts.
    pub fn arguments(self) -> Vec<String> {
        let schema = self.input_schema();
        schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn description(self) -> String {
        let key_hint = |t: Table| match t.natural_key() {
            Some(f) => format!("`id` is the row id or the {}'s {}.", t.singular().replace('_', " "), f.name),
            None => "`id` is the row id returned when it was created.".to_string(),
        };
        match self {
            Action::Create(Table::Memories) => "Save a memory: one durable fact, preference, decision or insight the user will want \
                recalled in later conversations. Keep one idea per memory and write it so it stands alone. Set importance \
                (1-10) to how much it matters; use tags and project to group. Returns the stored memory with its id."
                .into(),
            Action::StoreMemories => format!(
                "Save several memories at once (1 to {MAX_BATCH}), each as roost_store_memory takes it, in one \
                transaction: all are stored or, if one is invalid, none (the error names it). Use it when saving \
                many facts together: one call instead of one per memory. Returns the stored memories with their ids."
            ),
            Action::SearchMemories => "Search memories by full text (SQLite FTS5, ranked by bm25, best first). Query syntax: \
                plain words (all must match), \"exact phrase\", OR, NOT, prefix*. Optional filters: category, \
                min_importance, project (id or name), tag. Each result has the memory, its score (higher is more relevant) and a \
                snippet with matches in [brackets]. Use this before storing to avoid duplicates."
                .into(),
            Action::MemoryStats => "Summarise the memory store: total, counts by category, importance and project, \
                oldest and newest, plus the instance's Lamport clock and number of change records."
                .into(),
            Action::ListSyncConflicts => "List sync conflicts: rows that two instances changed without seeing each other's \
                change. Every instance already shows the same winner; the losing version is kept here. Each conflict has \
                both versions (winner and loser, with origin instance, Lamport stamp and operation) and the fields that \
                differ. Open ones only unless include_resolved is true."
                .into(),
            Action::ResolveSyncConflict => "Resolve a sync conflict by id: keep = local (the version this instance \
                wrote, else the one shown), remote (the other), or merge (the shown version with `fields` changed). The \
                resolution is a normal write: it replicates and closes the conflict on every instance."
                .into(),
            Action::SearchAll => "Search memories on this instance and every other reachable instance at once, in \
                parallel. A memory that several instances hold appears once, listing them as holders; results are ranked \
                on one scale across instances. The answer says which instances answered, timed out, were unreachable or \
                were skipped; a slow or dead instance never delays it past its timeout. Use it for memories kept on one \
                machine only (local ones never sync); replicated memories are found by roost_search_memories too."
                .into(),
            Action::ListInstances => "List the user's instances (machines): id, name, role, sync state, and a cached \
                summary of each (projects, memory counts by category, health) with its age; a stale summary is marked \
                stale. Use it to choose where to look, then pass `instance` to another tool to run it there."
                .into(),
            Action::AgentStatus => "Say whether this machine is the awake one, the one whose agent answers messages \
                now: its role, the lease epoch it holds or last saw, the holder, and its agent (handler, messages \
                queued, unsent, failed, in flight). An agent host calls it before acting as the agent."
                .into(),
            Action::AgentTopic => "Read one of the agent's conversations (a topic): its messages in order, each with its \
                sender, text (secrets redacted), where its reply stands (claimed, replied, sent, failed), the reply, and \
                the machine and lease epoch that wrote it. The last `limit` messages (default 50)."
                .into(),
            Action::Pool => "The pool, where conversations (topics) run on several machines: `op` = status (every \
                machine with its nickname, capacity, load and health, and every topic's machine), machine (one of \
                them, `machine` a nickname, name or id), placement (where \
                `topic` runs and why: pinned, placed or unowned), transfer (move `topic` to machine `to`, a nickname, \
                name or id; `confirm` to move it to a machine that is offline) or nickname (name `machine` \
                `nickname`). Any machine answers; it asks the coordinator. A refusal comes back as {error, status}."
                .into(),
            Action::Get(Table::Memories) => {
                "Fetch one memory by id, with its access count (fetching counts as an access).".into()
            }
            Action::List(Table::Memories) => "List memories without a search query. sort: recent (last updated, default), \
                oldest, importance, accessed. Filters: category, project, tag. Paginate with limit and offset."
                .into(),
            Action::Create(t) => format!("Create {}. Returns the new row with its id.", t.about()),
            Action::Get(t) => format!("Fetch one {} by id. {}", t.singular().replace('_', " "), key_hint(t)),
            Action::List(t) => format!(
                "List {} (newest first by default). Filter by the listed fields or tag; paginate with limit and offset.",
                t.name().replace('_', " ")
            ),
            Action::Update(t) => format!(
                "Change fields of one {}: give only the fields to change; null clears an optional field. {}",
                t.singular().replace('_', " "),
                key_hint(t)
            ),
            Action::Delete(t) => format!(
                "Delete one {} (it becomes a tombstone that replicates, so other instances delete it too). {}",
                t.singular().replace('_', " "),
                key_hint(t)
            ),
        }
    }

    pub fn input_schema(self) -> Value {
        let id = json!({"type": "string", "description": "Row id (or, where the table has one, its unique name)."});
        let limit = json!({"type": "integer", "minimum": 1, "maximum": 500, "description": "Most results to return (default 50)."});
        let tag = json!({"type": "string", "description": "Only rows carrying this tag."});
        let (properties, required): (Map<String, Value>, Vec<&str>) = match self {
            Action::SearchAll => return Action::SearchMemories.input_schema(),
            Action::Create(t) => {
                let props = t.fields().iter().map(|f| (f.name.to_string(), field_schema(f))).collect();
                let required = t.fields().iter().filter(|f| f.required).map(|f| f.name).collect();
                (props, required)
            }
            Action::Update(t) => {
                let mut props: Map<String, Value> = Map::new();
                props.insert("id".into(), id);
                props.extend(t.fields().iter().filter(|f| !f.immutable).map(|f| {
                    (f.name.to_string(), if f.required { field_schema(f) } else { nullable(field_schema(f)) })
                }));
                (props, vec!["id"])
            }
            Action::StoreMemories => {
                let Value::Object(mut memory) = Action::Create(Table::Memories).input_schema() else {
                    unreachable!("schemas are objects")
                };
                memory.insert("description".into(), json!("One memory, as roost_store_memory takes it."));
                let props = json!({"memories": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                    "items": memory, "description": "The memories to save, in order."}});
                (props.as_object().cloned().unwrap_or_default(), vec!["memories"])
            }
            Action::Get(_) | Action::Delete(_) => (Map::from_iter([("id".to_string(), id)]), vec!["id"]),
            Action::List(t) => {
                let mut props: Map<String, Value> =
                    t.fields().iter().filter(|f| f.filterable).map(|f| (f.name.to_string(), field_schema(f))).collect();
                let sorts: &[&str] = if t == Table::Memories {
                    &["recent", "oldest", "importance", "accessed"]
                } else {
                    &["recent", "oldest"]
                };
                props.insert("tag".into(), tag);
                props.insert(
                    "sort".into(),
                    json!({"type": "string", "enum": sorts, "description": "Order of results."}),
                );
                props.insert("limit".into(), limit);
                props.insert(
                    "offset".into(),
                    json!({"type": "integer", "minimum": 0, "description": "Results to skip."}),
                );
                (props, vec![])
            }
            Action::SearchMemories => {
                let props = json!({
                    "query": {"type": "string", "description": "FTS5 query: words, \"phrases\", OR, NOT, prefix*."},
                    "category": {"type": "string", "description": "Only memories in this category."},
                    "min_importance": {"type": "integer", "minimum": 1, "maximum": 10, "description": "Only memories at least this important."},
                    "project": {"type": "string", "description": "Only memories of this project (id or name)."},
                    "tag": tag,
                    "limit": limit,
                });
                (props.as_object().cloned().unwrap_or_default(), vec!["query"])
            }
            Action::MemoryStats | Action::ListInstances | Action::AgentStatus => (Map::new(), vec![]),
            Action::AgentTopic => {
                let props = json!({
                    "topic": {"type": "string", "description": "The conversation's name (see roost agent topics)."},
                    "limit": limit,
                });
                (props.as_object().cloned().unwrap_or_default(), vec!["topic"])
            }
            Action::Pool => {
                let props = json!({
                    "op": {"type": "string", "enum": ["status", "machine", "placement", "transfer", "nickname", "ask"],
                           "description": "What to do (ask is the machines' own)."},
                    "topic": {"type": "string", "description": "The conversation (placement, transfer)."},
                    "to": {"type": "string", "description": "The machine to move it to: nickname, name or id."},
                    "confirm": {"type": "boolean", "description": "Move it even though that machine is offline."},
                    "machine": {"type": "string", "description": "The machine to show or name: nickname, name or id."},
                    "nickname": {"type": "string", "description": "Its new nickname."},
                    "capacity": {"type": "integer"},
                    "asked_at_ms": {"type": "integer"},
                    "wall_ms": {"type": "integer"},
                    "releases": {"type": "array"},
                });
                (props.as_object().cloned().unwrap_or_default(), vec!["op"])
            }
            Action::ListSyncConflicts => {
                let props = json!({
                    "include_resolved": {"type": "boolean", "description": "Also list resolved conflicts."},
                    "limit": limit,
                });
                (props.as_object().cloned().unwrap_or_default(), vec![])
            }
            Action::ResolveSyncConflict => {
                let props = json!({
                    "id": {"type": "string", "description": "Conflict id (or a unique prefix of it)."},
                    "keep": {"type": "string", "enum": ["local", "remote", "merge"], "description": "Which version to keep."},
                    "fields": {"type": "object", "description": "With keep = merge: the fields to change on the shown version."},
                });
                (props.as_object().cloned().unwrap_or_default(), vec!["id", "keep"])
            }
        };
        json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
    }

    /// A short name for people.
    pub fn title(self) -> String {
        let words = |t: &str| t.replace('_', " ");
        match self {
            Action::Create(Table::Memories) => "Store memory".into(),
            Action::StoreMemories => "Store memories".into(),
            Action::Create(t) => format!("Create {}", words(t.singular())),
            Action::Get(t) => format!("Get {}", words(t.singular())),
            Action::List(t) => format!("List {}", words(t.name())),
            Action::Update(t) => format!("Update {}", words(t.singular())),
            Action::Delete(t) => format!("Delete {}", words(t.singular())),
            Action::SearchMemories => "Search memories".into(),
            Action::MemoryStats => "Memory statistics".into(),
            Action::ListSyncConflicts => "List sync conflicts".into(),
            Action::ResolveSyncConflict => "Resolve sync conflict".into(),
            Action::SearchAll => "Search every machine".into(),
            Action::ListInstances => "List machines".into(),
            Action::AgentStatus => "Agent status".into(),
            Action::AgentTopic => "Read a conversation".into(),
            Action::Pool => "The pool".into(),
        }
    }

    /// Whether calling the tool again with the same arguments leaves things
    /// as the first call left them: reads, updates and deletes do; a create
    /// makes another row.
    pub fn idempotent(self) -> bool {
        !matches!(self, Action::Create(_) | Action::StoreMemories)
    }

    /// The JSON Schema of the tool's structured result, as [`crate::execute`]
    /// and the federation build it. A tool that runs on one instance may
    /// instead return another instance's result, labelled with where it ran.
    pub fn output_schema(self) -> Value {
        let here = match self {
            Action::Create(t) | Action::Update(t) => row_schema(t, false),
            Action::Get(t) => row_schema(t, t == Table::Memories),
            Action::List(t) => listing("items", row_schema(t, t == Table::Memories)),
            Action::StoreMemories => listing("items", row_schema(Table::Memories, false)),
            Action::Delete(_) => object(json!({"deleted": string(), "table": string()}), &["deleted", "table"]),
            Action::SearchMemories => {
                let hit = json!({"memory": row_schema(Table::Memories, false), "score": number(), "snippet": string()});
                listing("results", object(hit, &["memory", "score", "snippet"]))
            }
            Action::MemoryStats => {
                let counts = json!({"type": "object", "additionalProperties": {"type": "integer"}});
                record(json!({
                    "total": integer(), "deleted": integer(), "average_importance": nullable(number()),
                    "oldest": nullable(string()), "newest": nullable(string()), "by_category": counts,
                    "by_importance": counts, "by_project": counts, "lamport": integer(), "change_records": integer(),
                }))
            }
            Action::ListSyncConflicts => listing("conflicts", conflict_schema()),
            Action::ResolveSyncConflict => {
                object(json!({"conflict": conflict_schema(), "row": {"type": "object"}}), &["conflict", "row"])
            }
            Action::SearchAll => {
                let names = json!({"type": "array", "items": string()});
                let holder = object(json!({"id": string(), "name": string()}), &["id", "name"]);
                let hit = object(
                    json!({"id": string(), "score": number(), "memory": {"type": "object"}, "snippet": {},
                           "holders": {"type": "array", "items": holder}}),
                    &["id", "score", "memory", "holders"],
                );
                let report = object(
                    json!({"id": string(), "name": string(), "outcome": {"type": "string",
                           "enum": ["answered", "timed_out", "unreachable", "refused", "skipped"]},
                           "results": integer(), "reason": string(), "ms": number()}),
                    &["id", "name", "outcome", "ms"],
                );
                record(json!({
                    "count": integer(), "results": {"type": "array", "items": hit},
                    "instances": {"type": "array", "items": report}, "answered": names, "timed_out": names,
                    "unreachable": names, "refused": names, "skipped": names,
                }))
            }
            Action::ListInstances => {
                let machine = object(
                    json!({"id": string(), "name": string(), "role": string(), "this": {"type": "boolean"},
                           "status": string(), "addresses": {"type": "array", "items": string()}}),
                    &["id", "name", "role", "this"],
                );
                listing("instances", machine)
            }
            Action::AgentStatus => object(
                json!({"awake": {"type": "boolean"}, "role": string(), "epoch": nullable(integer()),
                       "holder": {"type": ["object", "null"]}, "agent": {"type": ["object", "null"]}}),
                &["awake", "role"],
            ),
            Action::Pool => json!({"type": "object"}),
            Action::AgentTopic => {
                let message = object(
                    json!({"message_id": string(), "channel": string(), "sender": nullable(string()), "text": string(),
                           "received_at": string(), "stage": nullable(string()), "reply": nullable(string()),
                           "epoch": nullable(integer()), "replied_by": nullable(string())}),
                    &["message_id", "channel", "text", "received_at"],
                );
                object(
                    json!({"topic": string(), "count": integer(), "messages": {"type": "array", "items": message}}),
                    &["topic", "count", "messages"],
                )
            }
        };
        if !self.runs_on_one_instance() {
            return here;
        }
        let instance = object(json!({"id": string(), "name": string()}), &["id", "name"]);
        let elsewhere = object(json!({"instance": instance, "result": {"type": "object"}}), &["instance", "result"]);
        json!({"type": "object", "anyOf": [here, elsewhere]})
    }

    /// The tool as listed: its arguments plus, for tools that run on one
    /// instance, `instance`, which the server handles before [`crate::execute`].
    pub fn tool(self) -> Tool {
        let Value::Object(mut schema) = self.input_schema() else { unreachable!("schemas are objects") };
        if self.runs_on_one_instance()
            && let Some(Value::Object(props)) = schema.get_mut("properties")
        {
            props.insert(
                crate::INSTANCE_ARG.into(),
                json!({"type": "string", "description": "Run this tool on another instance (name or id, see \
                    roost_list_instances) instead of this one. The result is labelled with where it ran."}),
            );
        }
        let Value::Object(output) = self.output_schema() else { unreachable!("schemas are objects") };
        // Only the tools that span instances reach other machines on their
        // own; a call naming `instance` runs the same closed operation on
        // another of the user's machines.
        let annotations = ToolAnnotations::with_title(self.title())
            .read_only(self.read_only())
            .destructive(matches!(self, Action::Delete(_) | Action::Update(_) | Action::ResolveSyncConflict))
            .idempotent(self.idempotent())
            .open_world(!self.runs_on_one_instance());
        Tool::new(self.tool_name(), self.description(), Arc::new(schema))
            .with_title(self.title())
            .with_raw_output_schema(Arc::new(output))
            .with_annotations(annotations)
    }
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn number() -> Value {
    json!({"type": "number"})
}

/// `schema`, also accepting `null` (an enum lists it among its values).
fn nullable(mut schema: Value) -> Value {
    if let Some(Value::String(kind)) = schema.get("type").cloned() {
        schema["type"] = json!([kind, "null"]);
    }
    if let Some(Value::Array(options)) = schema.get_mut("enum") {
        options.push(Value::Null);
    }
    schema
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

/// An object that always has every one of `properties`.
fn record(properties: Value) -> Value {
    let required: Vec<String> = properties.as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    json!({"type": "object", "properties": properties, "required": required})
}

/// `{"count": n, key: [item...]}`.
fn listing(key: &str, item: Value) -> Value {
    let mut properties = Map::new();
    properties.insert("count".into(), integer());
    properties.insert(key.into(), json!({"type": "array", "items": item}));
    object(Value::Object(properties), &["count", key])
}

/// A row as the store returns it: the id, every field (null when unset, or
/// cleared by a delete), and the stamps; with `access`, a memory's local
/// access count.
fn row_schema(table: Table, access: bool) -> Value {
    let mut properties = Map::new();
    properties.insert("id".into(), string());
    for field in table.fields() {
        // What was stored is described, not what a new value must be.
        let mut schema = nullable(field_schema(field));
        if let Value::Object(rules) = &mut schema {
            rules.remove("pattern");
            rules.remove("maxLength");
        }
        properties.insert(field.name.into(), schema);
    }
    for (name, schema) in [
        ("created_at", string()),
        ("updated_at", string()),
        ("origin", string()),
        ("lamport", integer()),
        ("deleted_at", string()),
    ] {
        properties.insert(name.into(), schema);
    }
    if access {
        properties.insert("accessed_at".into(), nullable(string()));
        properties.insert("access_count".into(), integer());
    }
    object(Value::Object(properties), &["id", "created_at", "updated_at", "origin", "lamport"])
}

/// A sync conflict: both versions, which fields differ, and its resolution.
fn conflict_schema() -> Value {
    let version = object(
        json!({"origin": string(), "seq": integer(), "lamport": integer(), "op": string(), "row": {},
               "local": {"type": "boolean"}}),
        &["origin", "seq", "lamport", "op", "row", "local"],
    );
    object(
        json!({"id": string(), "table": string(), "row_id": string(), "winner": version, "loser": version,
               "resolved": {"type": "boolean"}, "resolution": nullable(string()), "resolved_at": nullable(string()),
               "created_at": string(), "differing": {"type": "array", "items": string()}}),
        &["id", "table", "row_id", "winner", "loser", "resolved", "created_at", "differing"],
    )
}

fn field_schema(field: &Field) -> Value {
    let mut schema = match field.kind {
        FieldKind::Line(max) => json!({"type": "string", "maxLength": max}),
        FieldKind::Text | FieldKind::Date | FieldKind::Url | FieldKind::ProjectRef => json!({"type": "string"}),
        FieldKind::Slug => json!({"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"}),
        FieldKind::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        FieldKind::Labels => json!({"type": "array", "items": {"type": "string"}}),
        FieldKind::Choice(options) => json!({"type": "string", "enum": options}),
        FieldKind::Flag => json!({"type": "boolean"}),
    };
    schema["description"] = Value::String(field.doc.to_string());
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let all = Action::all();
        let mut names: Vec<_> = all.iter().map(|a| a.tool_name()).collect();
        for action in &all {
            assert_eq!(Action::parse(&action.tool_name()), Some(*action));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(names.contains(&"roost_list_blog_posts".to_string()));
        assert!(names.contains(&"roost_delete_memory".to_string()));
        // Only the lease holder writes agent-owned tables: no tool reads or
        // writes them row by row; the agent's own tools are the two below.
        let agent: Vec<&String> = names.iter().filter(|n| n.contains("agent")).collect();
        assert_eq!(agent, ["roost_agent_status", "roost_agent_topic"]);
    }

    #[test]
    fn update_schemas_accept_null_for_the_fields_null_clears() {
        let schema = Action::Update(Table::Memories).input_schema();
        let props = &schema["properties"];
        assert_eq!(props["context"]["type"], json!(["string", "null"]));
        assert_eq!(props["project"]["type"], json!(["string", "null"]));
        assert_eq!(props["tags"]["type"], json!(["array", "null"]));
        assert_eq!(props["content"]["type"], json!("string"), "a required field cannot be cleared");
        let blog = Action::Update(Table::BlogPosts).input_schema();
        let status = &blog["properties"]["status"];
        assert_eq!(status["type"], json!(["string", "null"]));
        assert!(status["enum"].as_array().unwrap().contains(&Value::Null), "{status}");
    }

    #[test]
    fn every_tool_has_a_title_an_object_output_schema_and_honest_hints() {
        for action in Action::all() {
            let tool = action.tool();
            assert!(tool.title.as_deref().is_some_and(|t| !t.is_empty()), "{}", tool.name);
            let output = tool.output_schema.as_ref().unwrap_or_else(|| panic!("{} has no output schema", tool.name));
            assert_eq!(output["type"], json!("object"), "{}", tool.name);
            let hints = tool.annotations.as_ref().unwrap();
            let spans = matches!(action, Action::SearchAll | Action::ListInstances | Action::Pool);
            assert_eq!(hints.open_world_hint, Some(spans), "{}", tool.name);
            let creates = matches!(action, Action::Create(_) | Action::StoreMemories);
            assert_eq!(hints.idempotent_hint, Some(!creates), "{}", tool.name);
        }
    }
}
