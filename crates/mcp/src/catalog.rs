//! The tool catalogue: every tool's name, description and input schema,
//! generated from the core's table descriptors.

use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

use roost_core::{Field, FieldKind, Table};

/// What a tool does, independent of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create(Table),
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
}

impl Action {
    /// Every tool Roost serves, in listing order.
    pub fn all() -> Vec<Action> {
        let mut all = vec![
            Action::SearchMemories,
            Action::SearchAll,
            Action::MemoryStats,
            Action::ListInstances,
            Action::ListSyncConflicts,
            Action::ResolveSyncConflict,
        ];
        // Agent-owned state is the awake machine's, written through its own
        // fenced door: no tool reads or writes it.
        for table in Table::ALL.into_iter().filter(|t| !t.agent_owned()) {
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
        )
    }

    /// Whether the tool runs on one instance and so takes the `instance`
    /// argument; the federated tools span all instances themselves.
    pub fn runs_on_one_instance(self) -> bool {
        !matches!(self, Action::SearchAll | Action::ListInstances)
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
                props.extend(t.fields().iter().filter(|f| !f.immutable).map(|f| (f.name.to_string(), field_schema(f))));
                (props, vec!["id"])
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
            Action::MemoryStats | Action::ListInstances => (Map::new(), vec![]),
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
        Tool::new(self.tool_name(), self.description(), Arc::new(schema)).with_annotations(
            ToolAnnotations::new()
                .read_only(self.read_only())
                .destructive(matches!(self, Action::Delete(_) | Action::Update(_) | Action::ResolveSyncConflict))
                .open_world(false),
        )
    }
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
        assert!(!names.iter().any(|n| n.contains("agent")), "agent state has no tools");
    }
}
