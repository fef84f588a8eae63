//! Reads: get, list, full-text search, statistics and the change table.
//!
//! Reads use pooled connections and never enter the write door. The one write
//! here, [`Store::record_access`], touches only `memory_access`, a local table
//! of usage counters that never syncs.

use rusqlite::{OptionalExtension, params_from_iter};
use serde::Serialize;
use serde_json::{Map, Value, json};

use roost_core::validate::normalise;
use roost_core::{FieldKind, Lamport, Table};

use crate::door::{find_live, resolve_project_ref};
use crate::row::{column_count, row_json, select_list};
use crate::{Result, Store, StoreError, now_text};

const MAX_LIMIT: u32 = 500;

/// bm25 column weights: content, context, tags, source, category.
const BM25_WEIGHTS: &str = "4.0, 1.5, 2.0, 0.5, 1.0";

/// Order of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Most recently updated first.
    #[default]
    Recent,
    /// Oldest created first.
    Oldest,
    /// Highest importance first (memories).
    Importance,
    /// Most recently accessed first (memories).
    Accessed,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "recent" => Some(Sort::Recent),
            "oldest" => Some(Sort::Oldest),
            "importance" => Some(Sort::Importance),
            "accessed" => Some(Sort::Accessed),
            _ => None,
        }
    }
}

/// A listing: equality filters on filterable fields, an optional tag.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filters: Map<String, Value>,
    pub tag: Option<String>,
    pub sort: Sort,
    pub limit: u32,
    pub offset: u32,
}

/// A full-text search over memories.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub query: String,
    pub category: Option<String>,
    pub min_importance: Option<i64>,
    pub project: Option<String>,
    pub tag: Option<String>,
    pub limit: u32,
}

/// One search result: the memory, its relevance (bm25 negated, so higher is
/// better) and a snippet with matches in [brackets].
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub memory: Map<String, Value>,
    pub score: f64,
    pub snippet: String,
}

impl Store {
    /// A live row by id (or unique field), or `NotFound`.
    pub fn get(&self, table: Table, key: &str) -> Result<Map<String, Value>> {
        self.read(|c| {
            let (_, mut row) = find_live(c, table, key)?;
            if table == Table::Memories {
                add_access(c, &mut row)?;
            }
            Ok(row)
        })
    }

    /// Counts one access to a memory (local usage statistics, never synced).
    pub fn record_access(&self, memory_id: &str) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.raw_mut().execute(
            "INSERT INTO memory_access (memory_id, accessed_at, access_count) VALUES (?1, ?2, 1)
             ON CONFLICT (memory_id) DO UPDATE SET accessed_at = excluded.accessed_at,
                                                 access_count = access_count + 1",
            rusqlite::params![memory_id, now_text()],
        )?;
        Ok(())
    }

    /// Live rows matching `query`.
    pub fn list(&self, table: Table, query: &ListQuery) -> Result<Vec<Map<String, Value>>> {
        self.read(|c| {
            let mut clauses = vec!["t.deleted_at IS NULL".to_string()];
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            for (name, value) in &query.filters {
                let field = table.field(name).filter(|f| f.filterable).ok_or_else(|| filter_error(table, name))?;
                let value = match field.kind {
                    FieldKind::ProjectRef => Value::String(resolve_project_ref(c, value.as_str().unwrap_or_default())?),
                    _ => normalise(field, value)?,
                };
                values.push(crate::row::to_sql(field.kind, &value));
                clauses.push(format!("t.{} = ?{}", field.name, values.len()));
            }
            if let Some(tag) = &query.tag {
                values.push(tag.trim().to_string().into());
                clauses.push(format!(
                    "EXISTS (SELECT 1 FROM json_each(t.tags) WHERE json_each.value = ?{})",
                    values.len()
                ));
            }
            let memories = table == Table::Memories;
            let order = match query.sort {
                Sort::Recent => "t.updated_at DESC, t.seq DESC",
                Sort::Oldest => "t.created_at ASC, t.seq ASC",
                Sort::Importance if memories => "t.importance DESC, t.updated_at DESC",
                Sort::Accessed if memories => "a.accessed_at IS NULL, a.accessed_at DESC, t.updated_at DESC",
                _ => {
                    return Err(StoreError::Invalid(roost_core::ValidationError {
                        field: Some("sort".into()),
                        message: "importance and accessed apply to memories only; use recent or oldest".into(),
                    }));
                }
            };
            let access_join = if memories { "LEFT JOIN memory_access a ON a.memory_id = t.id" } else { "" };
            let access_cols = if memories { ", a.accessed_at, a.access_count" } else { "" };
            let sql = format!(
                "SELECT {}{access_cols} FROM {} t {access_join} WHERE {} ORDER BY {order} LIMIT {} OFFSET {}",
                select_list(table, "t"),
                table.name(),
                clauses.join(" AND "),
                clamp_limit(query.limit),
                query.offset
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| {
                let mut row = row_json(table, r, 0)?;
                if memories {
                    let n = column_count(table);
                    row.insert("accessed_at".into(), json!(r.get::<_, Option<String>>(n)?));
                    row.insert("access_count".into(), json!(r.get::<_, Option<i64>>(n + 1)?.unwrap_or(0)));
                }
                Ok(row)
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Full-text search over memories, best match first.
    pub fn search_memories(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        if query.query.trim().is_empty() {
            return Err(StoreError::BadQuery("the query is empty".into()));
        }
        self.read(|c| {
            Store::searchable(c)?;
            let mut clauses = vec!["memories_fts MATCH ?1".to_string(), "m.deleted_at IS NULL".to_string()];
            let mut values: Vec<rusqlite::types::Value> = vec![query.query.clone().into()];
            if let Some(category) = &query.category {
                values.push(category.trim().to_string().into());
                clauses.push(format!("m.category = ?{}", values.len()));
            }
            if let Some(min) = query.min_importance {
                values.push(min.into());
                clauses.push(format!("m.importance >= ?{}", values.len()));
            }
            if let Some(project) = &query.project {
                values.push(resolve_project_ref(c, project)?.into());
                clauses.push(format!("m.project = ?{}", values.len()));
            }
            if let Some(tag) = &query.tag {
                values.push(tag.trim().to_string().into());
                clauses.push(format!(
                    "EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value = ?{})",
                    values.len()
                ));
            }
            let sql = format!(
                "SELECT {}, bm25(memories_fts, {BM25_WEIGHTS}) AS score,
                        snippet(memories_fts, -1, '[', ']', '…', 16)
                 FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid
                 WHERE {} ORDER BY score LIMIT {}",
                select_list(Table::Memories, "m"),
                clauses.join(" AND "),
                clamp_limit(query.limit)
            );
            let n = column_count(Table::Memories);
            // The statement is fixed and prepares; FTS5 reads the query text
            // only when the statement runs, so a plain SQLITE_ERROR from
            // running it is the query's fault, whatever its wording.
            let mut stmt = c.prepare(&sql)?;
            let hits = stmt
                .query_map(params_from_iter(values.iter()), |r| {
                    Ok(SearchHit {
                        memory: row_json(Table::Memories, r, 0)?,
                        score: -r.get::<_, f64>(n)?,
                        snippet: r.get(n + 1)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
            hits.map_err(|e| match &e {
                rusqlite::Error::SqliteFailure(failure, message) if failure.code == rusqlite::ErrorCode::Unknown => {
                    StoreError::BadQuery(explain_query_error(message.as_deref().unwrap_or("")))
                }
                _ => StoreError::from(e),
            })
        })
    }

    /// Counts and spread of the live memories, plus the clock and change log.
    pub fn memory_stats(&self) -> Result<Value> {
        self.read(|c| {
            let (total, avg, oldest, newest): (i64, Option<f64>, Option<String>, Option<String>) = c.query_row(
                "SELECT count(*), avg(importance), min(created_at), max(created_at) FROM memories WHERE deleted_at IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let grouped = |sql: &str| -> rusqlite::Result<Map<String, Value>> {
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?)))?;
                rows.map(|r| r.map(|(k, n)| (k.unwrap_or_else(|| "(none)".into()), Value::from(n)))).collect()
            };
            let by_category = grouped(
                "SELECT category, count(*) FROM memories WHERE deleted_at IS NULL GROUP BY category ORDER BY count(*) DESC",
            )?;
            let by_importance = grouped(
                "SELECT CAST(importance AS TEXT), count(*) FROM memories WHERE deleted_at IS NULL GROUP BY importance ORDER BY importance DESC",
            )?;
            let by_project = grouped(
                "SELECT coalesce(p.name, m.project), count(*) FROM memories m LEFT JOIN projects p ON p.id = m.project
                 WHERE m.deleted_at IS NULL AND m.project IS NOT NULL GROUP BY m.project ORDER BY count(*) DESC",
            )?;
            let deleted: i64 = c.query_row("SELECT count(*) FROM memories WHERE deleted_at IS NOT NULL", [], |r| r.get(0))?;
            let (lamport, changes) = clock_and_changes(c)?;
            Ok(json!({
                "total": total,
                "deleted": deleted,
                "average_importance": avg.map(|a| (a * 100.0).round() / 100.0),
                "oldest": oldest,
                "newest": newest,
                "by_category": by_category,
                "by_importance": by_importance,
                "by_project": by_project,
                "lamport": lamport,
                "change_records": changes,
            }))
        })
    }

    /// Live row counts per synced table.
    pub fn counts(&self) -> Result<Map<String, Value>> {
        self.read(|c| {
            Table::ALL
                .iter()
                .map(|t| {
                    let sql = format!("SELECT count(*) FROM {} WHERE deleted_at IS NULL", t.name());
                    Ok((t.name().to_string(), Value::from(c.query_row(&sql, [], |r| r.get::<_, i64>(0))?)))
                })
                .collect()
        })
    }

    /// Runs FTS5's integrity check: the index must mirror the memories table
    /// exactly.
    pub fn check_search_index(&self) -> Result<()> {
        self.read(|c| {
            c.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)", [])?;
            Ok(())
        })
    }

    /// The Lamport clock and the number of change records.
    pub fn clock(&self) -> Result<(Lamport, i64)> {
        self.read(|c| Ok(clock_and_changes(c)?)).map(|(l, n)| (Lamport(l as u64), n))
    }
}

fn clock_and_changes(c: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    c.query_row("SELECT (SELECT lamport FROM clock WHERE id = 1), (SELECT count(*) FROM changes)", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

fn add_access(c: &rusqlite::Connection, row: &mut Map<String, Value>) -> Result<()> {
    let id = row["id"].as_str().unwrap_or_default().to_string();
    let access: Option<(String, i64)> = c
        .query_row("SELECT accessed_at, access_count FROM memory_access WHERE memory_id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.insert("accessed_at".into(), json!(access.as_ref().map(|a| &a.0)));
    row.insert("access_count".into(), json!(access.map_or(0, |a| a.1)));
    Ok(())
}

/// What FTS5's complaint about a query means, in the query's own terms.
fn explain_query_error(message: &str) -> String {
    if message == "unterminated string" {
        "a double quote is not closed".into()
    } else if message.starts_with("unknown special query") {
        "`*` must end a word, as in tax*".into()
    } else if let Some(column) = message.strip_prefix("no such column: ") {
        format!(
            "`-{column}` and `{column}:` read as column filters; use NOT to leave a word out, and put words with - or : in double quotes"
        )
    } else {
        message.strip_prefix("fts5: ").unwrap_or(message).to_string()
    }
}

fn filter_error(table: Table, name: &str) -> StoreError {
    let allowed: Vec<_> = table.fields().iter().filter(|f| f.filterable).map(|f| f.name).collect();
    StoreError::Invalid(roost_core::ValidationError {
        field: Some(name.to_string()),
        message: format!("cannot filter {} by this field; filterable: {}, or tag", table.name(), allowed.join(", ")),
    })
}

fn clamp_limit(limit: u32) -> u32 {
    if limit == 0 { 50 } else { limit.min(MAX_LIMIT) }
}
