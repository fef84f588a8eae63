//! `roost memory ...`: the memory tools from the command line.
//!
//! Each command builds the same arguments an MCP client would send and runs
//! them through `roost_mcp::execute`, so validation, the write door and the
//! results are identical to the tools'.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use std::sync::Arc;

use crate::federate::ThroughGateway;
use roost_core::Table;
use roost_instance::Instance;
use roost_mcp::Action;
use roost_store::Store;

use crate::out::{self, note, say};

#[derive(Subcommand)]
pub enum MemoryCommand {
    /// Store a memory.
    Add {
        /// The memory's text.
        content: String,
        #[command(flatten)]
        fields: MemoryFields,
        /// Keep it on this instance only: it never syncs.
        #[arg(long)]
        local: bool,
        #[arg(long)]
        json: bool,
    },
    /// Full-text search (FTS5 syntax: words, "phrases", OR, NOT, prefix*).
    Search(SearchArgs),
    /// List memories.
    List {
        /// recent, oldest, importance or accessed
        #[arg(long, default_value = "recent")]
        sort: String,
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        offset: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Show one memory.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change fields of a memory.
    Update {
        id: String,
        #[arg(long)]
        content: Option<String>,
        #[command(flatten)]
        fields: MemoryFields,
        #[arg(long)]
        json: bool,
    },
    /// Delete a memory.
    Rm {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// `roost memory search` and `roost search`.
#[derive(Args)]
pub struct SearchArgs {
    query: String,
    /// Search every other reachable instance too, in parallel.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    min_importance: Option<u32>,
    #[command(flatten)]
    filters: Filters,
    #[arg(long)]
    json: bool,
}

/// Filters shared by `search` and `list`.
#[derive(Args)]
pub struct Filters {
    #[arg(long)]
    category: Option<String>,
    /// Project id or name.
    #[arg(long)]
    project: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
}

impl Filters {
    fn into_args(self, args: &mut Map<String, Value>) {
        put(args, "category", self.category);
        put(args, "project", self.project);
        put(args, "tag", self.tag);
        put(args, "limit", self.limit);
    }
}

#[derive(Args)]
pub struct MemoryFields {
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    context: Option<String>,
    /// Comma-separated labels.
    #[arg(long)]
    tags: Option<String>,
    #[arg(long)]
    source: Option<String>,
    /// 1 to 10
    #[arg(long)]
    importance: Option<i64>,
    /// Project id or name.
    #[arg(long)]
    project: Option<String>,
}

impl MemoryFields {
    fn into_args(self, args: &mut Map<String, Value>) {
        let strings = [
            ("category", self.category),
            ("context", self.context),
            ("tags", self.tags),
            ("source", self.source),
            ("project", self.project),
        ];
        for (name, value) in strings {
            if let Some(v) = value {
                args.insert(name.into(), Value::String(v));
            }
        }
        if let Some(i) = self.importance {
            args.insert("importance".into(), json!(i));
        }
    }
}

fn put(args: &mut Map<String, Value>, name: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        args.insert(name.into(), v.into());
    }
}

pub fn run(instance: &Instance, command: MemoryCommand) -> anyhow::Result<()> {
    let store = instance.open_store()?;
    let mut args = Map::new();
    let (action, json) = match command {
        MemoryCommand::Add { content, fields, local, json } => {
            args.insert("content".into(), Value::String(content));
            if local {
                args.insert("local".into(), Value::Bool(true));
            }
            fields.into_args(&mut args);
            (Action::Create(Table::Memories), json)
        }
        MemoryCommand::Search(SearchArgs { query, all, min_importance, filters, json }) => {
            args.insert("query".into(), Value::String(query));
            put(&mut args, "min_importance", min_importance);
            filters.into_args(&mut args);
            if all {
                return search_all(instance, store, args, json);
            }
            (Action::SearchMemories, json)
        }
        MemoryCommand::List { sort, filters, offset, json } => {
            args.insert("sort".into(), Value::String(sort));
            filters.into_args(&mut args);
            put(&mut args, "offset", offset);
            (Action::List(Table::Memories), json)
        }
        MemoryCommand::Get { id, json } => {
            args.insert("id".into(), Value::String(id));
            (Action::Get(Table::Memories), json)
        }
        MemoryCommand::Update { id, content, fields, json } => {
            args.insert("id".into(), Value::String(id));
            put(&mut args, "content", content);
            fields.into_args(&mut args);
            if args.len() == 1 {
                bail!(
                    "nothing to update: give at least one of --content, --category, --context, --tags, --source, --importance, --project"
                );
            }
            (Action::Update(Table::Memories), json)
        }
        MemoryCommand::Rm { id, json } => {
            args.insert("id".into(), Value::String(id));
            (Action::Delete(Table::Memories), json)
        }
    };
    let result = roost_mcp::execute(&store, action, args).map_err(anyhow::Error::msg)?;
    if json {
        out::json(&result)?;
        return Ok(());
    }
    match action {
        Action::Create(_) => say!("stored memory {}", cell(&result["id"]))?,
        Action::Update(_) => say!("updated memory {}", cell(&result["id"]))?,
        Action::Delete(_) => say!("deleted memory {}", cell(&result["deleted"]))?,
        Action::Get(_) => print_memory(&result)?,
        Action::SearchMemories => {
            let rows = result["results"].as_array().into_iter().flatten().map(|hit| {
                let m = &hit["memory"];
                let snippet = one_line(text(&hit["snippet"]), 200);
                vec![cell(&m["id"]), m["importance"].to_string(), cell(&m["category"]), snippet]
            });
            out::table(&["ID", "IMP", "CATEGORY", "MATCH"], rows)?;
            note!("{} result(s)", result["count"]);
        }
        Action::List(_) => {
            let rows = result["items"].as_array().into_iter().flatten().map(|m| {
                vec![
                    cell(&m["id"]),
                    m["importance"].to_string(),
                    cell(&m["category"]),
                    one_line(text(&m["content"]), 80),
                ]
            });
            out::table(&["ID", "IMP", "CATEGORY", "CONTENT"], rows)?;
            note!("{} memor{}", result["count"], if result["count"] == 1 { "y" } else { "ies" });
        }
        _ => out::json(&result)?,
    }
    Ok(())
}

/// `--all`: the same search of all instances `roost_search_all` runs.
fn search_all(instance: &Instance, store: Store, args: Map<String, Value>, json: bool) -> anyhow::Result<()> {
    let federation = ThroughGateway::new(instance, Arc::new(store));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let merged = runtime.block_on(async {
        let merged = federation.search_all(args).await;
        federation.stop().await;
        merged
    });
    let merged = merged.map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        out::json(&merged)?;
        return Ok(());
    }
    let rows = merged.results.iter().map(|hit| {
        let holders: Vec<_> = hit.holders.iter().map(|h| out::field(&h.name)).collect();
        vec![
            out::field(&hit.id).into_owned(),
            format!("{:.2}", hit.score),
            cell(&hit.memory["category"]),
            one_line(text(&hit.snippet), 200),
            holders.join(", "),
        ]
    });
    out::table(&["ID", "SCORE", "CATEGORY", "MATCH", "HELD BY"], rows)?;
    for report in &merged.instances {
        let detail = report.reason.as_deref().map(|r| format!(": {}", out::field(r))).unwrap_or_default();
        note!("{}: {} in {:.1} ms{detail}", out::field(&report.instance.name), report.outcome.label(), report.ms);
    }
    note!("{} result(s)", merged.count);
    Ok(())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A single-line value as a table cell or field shows it.
fn cell(v: &Value) -> String {
    out::field(text(v)).into_owned()
}

/// `s` on one line: runs of whitespace (newlines and tabs too) become one space.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn one_line(s: &str, max: usize) -> String {
    let flat = flat(s);
    if flat.chars().count() <= max { flat } else { format!("{}…", flat.chars().take(max - 1).collect::<String>()) }
}

/// The content whole (newlines and tabs kept), then each other field on one
/// line; `say!` escapes any control character left.
fn print_memory(m: &Value) -> anyhow::Result<()> {
    say!("{}", text(&m["content"]))?;
    say!()?;
    for key in [
        "id",
        "category",
        "importance",
        "tags",
        "context",
        "source",
        "project",
        "created_at",
        "updated_at",
        "accessed_at",
        "access_count",
        "origin",
        "lamport",
    ] {
        let value = &m[key];
        if !value.is_null() {
            let shown = match value {
                Value::String(s) => flat(s),
                Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
                other => other.to_string(),
            };
            say!("{key:>13}: {shown}")?;
        }
    }
    Ok(())
}
