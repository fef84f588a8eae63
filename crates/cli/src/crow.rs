//! Reads a Crow database as rows for Roost's tables.
//!
//! Crow's schema has changed over time (projects moved from
//! `research_projects` to `project_spaces`; columns were added), so every
//! table is read with `SELECT *` and its columns found by name: a column an
//! older Crow lacks is simply absent. Each row is named
//! `crow/TABLE/ID/CREATED_AT`: the id alone would collide between two Crow
//! databases, and the creation time does not change when a row is edited.

use std::path::Path;

use anyhow::Context;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value, json};

use roost_core::Table;
use roost_store::Imported;

use crate::import::Incoming;

/// One Crow row: its columns by name, text and numbers as JSON.
type CrowRow = Map<String, Value>;

/// Every row Roost can take from the Crow database at `path`, projects
/// first so that what belongs to a project finds it.
pub fn read(path: &Path) -> anyhow::Result<Vec<Incoming>> {
    if !path.is_file() {
        anyhow::bail!(
            "{} is not a file; give the path of Crow's database (crow.db in its data directory)",
            path.display()
        );
    }
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open {} as a SQLite database", path.display()))?;
    let not_crow = || format!("{} is not a Crow database (crow.db in Crow's data directory)", path.display());
    if !has_table(&db, "memories").with_context(not_crow)? {
        anyhow::bail!("{}: it has no memories table", not_crow());
    }
    let mut rows = Vec::new();
    let projects_table = if has_table(&db, "project_spaces")? { "project_spaces" } else { "research_projects" };
    for project in read_table(&db, projects_table)? {
        rows.push(imported(Table::Projects, projects_table, &project, project_fields(&project)));
    }
    // By name: a project Roost already had under that name is the same one.
    let project_ref = |row: &CrowRow, rows: &[Incoming]| -> Option<Value> {
        let id = row.get("project_id").filter(|v| !v.is_null())?;
        let wanted = format!("crow/{projects_table}/{id}/");
        rows.iter()
            .find(|r| r.row.table == Table::Projects && r.row.source.starts_with(&wanted))
            .and_then(|r| r.row.fields.get("name").cloned())
    };
    for memory in read_table(&db, "memories")? {
        let mut fields = pick(&memory, &[("content", "content"), ("category", "category"), ("context", "context")]);
        fields.extend(pick(&memory, &[("tags", "tags"), ("source", "source"), ("importance", "importance")]));
        if let Some(project) = project_ref(&memory, &rows) {
            fields.insert("project".into(), project);
        }
        rows.push(imported(Table::Memories, "memories", &memory, fields));
    }
    for source in read_table(&db, "research_sources")? {
        let mut fields = pick(&source, &[("title", "title"), ("url", "url"), ("tags", "tags")]);
        if let Some(authors) = text(&source, "authors") {
            fields.insert("authors".into(), json!(authors));
        }
        if let Some(date) = text(&source, "publication_date").and_then(date_part) {
            fields.insert("published".into(), json!(date));
        }
        fields.insert("kind".into(), json!(source_kind(text(&source, "source_type").unwrap_or_default())));
        let notes: Vec<String> = ["abstract", "content_summary", "citation_apa"]
            .into_iter()
            .filter_map(|c| text(&source, c))
            .map(str::to_string)
            .collect();
        if !notes.is_empty() {
            fields.insert("notes".into(), json!(notes.join("\n\n")));
        }
        if let Some(project) = project_ref(&source, &rows) {
            fields.insert("project".into(), project);
        }
        rows.push(imported(Table::Sources, "research_sources", &source, fields));
    }
    for note in read_table(&db, "research_notes")? {
        let mut fields = pick(&note, &[("title", "title"), ("content", "body")]);
        let mut tags: Vec<String> =
            text(&note, "tags").map(|t| t.split(',').map(str::to_string).collect()).unwrap_or_default();
        if let Some(kind) = text(&note, "note_type").filter(|k| *k != "note") {
            tags.push(kind.to_string());
        }
        if !tags.is_empty() {
            fields.insert("tags".into(), json!(tags.join(",")));
        }
        if let Some(project) = project_ref(&note, &rows) {
            fields.insert("project".into(), project);
        }
        rows.push(imported(Table::Notes, "research_notes", &note, fields));
    }
    for post in read_table(&db, "blog_posts")? {
        let mut fields = pick(&post, &[("slug", "slug"), ("title", "title"), ("content", "body"), ("tags", "tags")]);
        let published = text(&post, "status") == Some("published");
        fields.insert("status".into(), json!(if published { "published" } else { "draft" }));
        if let Some(date) = text(&post, "published_at").and_then(date_part) {
            fields.insert("published_at".into(), json!(date));
        }
        rows.push(imported(Table::BlogPosts, "blog_posts", &post, fields));
    }
    for contact in read_table(&db, "contacts")? {
        let mut fields = Map::new();
        let name = text(&contact, "display_name").or(text(&contact, "crow_id")).unwrap_or_default();
        fields.insert("name".into(), json!(name));
        let keys: Vec<String> = [("Crow ID", "crow_id"), ("Ed25519 key", "ed25519_pubkey"), ("Relay", "relay_url")]
            .into_iter()
            .filter_map(|(label, column)| text(&contact, column).map(|v| format!("{label}: {v}")))
            .collect();
        fields.insert("notes".into(), json!(keys.join("\n")));
        let mut tags = vec!["crow"];
        if contact.get("is_blocked").and_then(Value::as_i64).unwrap_or(0) != 0 {
            tags.push("blocked");
        }
        fields.insert("tags".into(), json!(tags));
        rows.push(imported(Table::Contacts, "contacts", &contact, fields));
    }
    for setting in read_table(&db, "dashboard_settings")? {
        let fields = pick(&setting, &[("key", "key"), ("value", "value")]);
        rows.push(imported(Table::Settings, "dashboard_settings", &setting, fields));
    }
    Ok(rows)
}

fn imported(table: Table, crow_table: &str, row: &CrowRow, fields: Map<String, Value>) -> Incoming {
    let id = row.get("id").or(row.get("key")).map(plain).unwrap_or_default();
    let created = row.get("created_at").map(plain).unwrap_or_default();
    let label = if row.contains_key("id") { format!("{crow_table} #{id}") } else { format!("{crow_table} {id:?}") };
    Incoming { label, row: Imported { table, source: format!("crow/{crow_table}/{id}/{created}"), fields } }
}

/// A value as text, without JSON's quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The non-empty columns of `row` under Roost's field names.
fn pick(row: &CrowRow, columns: &[(&str, &str)]) -> Map<String, Value> {
    columns
        .iter()
        .filter_map(|(column, field)| {
            let value = row.get(*column).filter(|v| !v.is_null() && v.as_str() != Some(""))?;
            Some((field.to_string(), value.clone()))
        })
        .collect()
}

fn text<'a>(row: &'a CrowRow, column: &str) -> Option<&'a str> {
    row.get(column).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn project_fields(project: &CrowRow) -> Map<String, Value> {
    let mut fields = pick(project, &[("name", "name"), ("description", "description"), ("tags", "tags")]);
    let status = match text(project, "status") {
        Some("paused") => "paused",
        Some("completed") => "done",
        Some("archived") => "archived",
        _ => "active",
    };
    fields.insert("status".into(), json!(status));
    fields
}

/// Crow's source types, as Roost's kinds.
fn source_kind(crow: &str) -> &'static str {
    match crow {
        "web_article" | "social_media" => "article",
        "academic_paper" | "government_doc" => "paper",
        "book" => "book",
        "video" => "video",
        "podcast" => "podcast",
        "dataset" | "api_data" => "dataset",
        "web_search" | "web_scrape" => "web",
        _ => "other",
    }
}

/// The date of an SQLite `datetime('now')` text or a date, as YYYY-MM-DD.
fn date_part(text: &str) -> Option<&str> {
    let date = text.get(..10).unwrap_or(text);
    let valid = match date.len() {
        4 => date.bytes().all(|b| b.is_ascii_digit()),
        7 | 10 => date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() }),
        _ => false,
    };
    valid.then_some(date)
}

fn has_table(db: &Connection, name: &str) -> anyhow::Result<bool> {
    Ok(db.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })? > 0)
}

/// Every row of `table` (none when Crow never made it), in id order.
fn read_table(db: &Connection, table: &str) -> anyhow::Result<Vec<CrowRow>> {
    if !has_table(db, table)? {
        return Ok(Vec::new());
    }
    let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))?;
    let columns: Vec<String> = statement.column_names().map(str::to_string).collect();
    let rows = statement.query_map([], |r| {
        let mut row = Map::new();
        for (i, column) in columns.iter().enumerate() {
            let value = match r.get_ref(i)? {
                ValueRef::Null | ValueRef::Blob(_) => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(x) => json!(x),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
            };
            row.insert(column.clone(), value);
        }
        Ok(row)
    })?;
    rows.collect::<Result<_, _>>().with_context(|| format!("reading Crow's {table}"))
}
