//! `roost import ...`: data people already have, brought in through the
//! write door as ordinary creates.
//!
//! Every imported row's id is named by where it came from (see
//! `Store::import`), so running an import again, here or on another machine
//! of the chain, adds nothing. What is skipped is counted by reason.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use roost_core::Table;
use roost_instance::Instance;
use roost_store::{ImportOutcome, Imported, Store};

use crate::crow;
use crate::out::{self, say};

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Read a Crow database: memories, projects, sources, notes, blog posts, contacts and settings.
    Crow {
        /// Crow's SQLite file (crow.db in Crow's data directory)
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read one memory per line, each a JSON object of roost_store_memory's fields; an "id" names the
    /// memory where it came from, so that it is imported once.
    Jsonl {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// A row to import, and how to name it to a person: `memories #12` (the
/// other program's table and id), `line 3`.
pub struct Incoming {
    pub label: String,
    pub row: Imported,
}

/// Rows written per transaction: large enough that commits cost little,
/// small enough that the progress bar moves and serve's writes interleave.
const CHUNK: usize = 500;

pub fn run(instance: &Instance, command: ImportCommand) -> anyhow::Result<()> {
    let (rows, json) = match command {
        ImportCommand::Crow { path, json } => (crow::read(&path)?, json),
        ImportCommand::Jsonl { file, json } => (jsonl(&file)?, json),
    };
    let store = instance.open_store()?;
    let report = import(&store, rows)?;
    if json {
        return out::json(&report.to_json());
    }
    report.print()
}

/// What an import did: rows added per table, and rows skipped by reason.
#[derive(Debug, Default)]
pub struct Report {
    pub added: BTreeMap<&'static str, usize>,
    pub skipped: BTreeMap<String, Vec<String>>,
}

impl Report {
    fn to_json(&self) -> Value {
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .map(|(reason, sources)| serde_json::json!({"reason": reason, "count": sources.len(), "rows": sources}))
            .collect();
        serde_json::json!({"added": self.added, "skipped": skipped})
    }

    fn print(&self) -> anyhow::Result<()> {
        let added: usize = self.added.values().sum();
        let per_table: Vec<String> =
            self.added.iter().map(|(table, n)| format!("{} {n}", table.replace('_', " "))).collect();
        if per_table.is_empty() {
            say!("added nothing")?;
        } else {
            say!("added {added}: {}", per_table.join(", "))?;
        }
        for (reason, sources) in &self.skipped {
            let shown: Vec<&str> = sources.iter().take(3).map(String::as_str).collect();
            let more = if sources.len() > shown.len() { ", …" } else { "" };
            say!("skipped {}: {reason} ({}{more})", sources.len(), shown.join(", "))?;
        }
        Ok(())
    }
}

/// Writes `rows` through the door in chunks, with a progress bar on a terminal.
pub fn import(store: &Store, rows: Vec<Incoming>) -> anyhow::Result<Report> {
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("importing [{bar:30}] {pos}/{len} rows")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut report = Report::default();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let (labels, chunk): (Vec<_>, Vec<_>) =
            rows.by_ref().take(CHUNK).map(|r| ((r.row.table.name(), r.label), r.row)).unzip();
        let written = chunk.len() as u64;
        let outcomes = store.import(chunk).context("writing imported rows")?;
        for ((table, label), outcome) in labels.into_iter().zip(outcomes) {
            match outcome {
                ImportOutcome::Added(_) => *report.added.entry(table).or_default() += 1,
                ImportOutcome::Skipped(reason) => report.skipped.entry(reason).or_default().push(label),
            }
        }
        bar.inc(written);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// One memory per non-blank line. A line that is not a JSON object is
/// refused with its number: the file is not what it claims, and nothing is
/// imported from it.
fn jsonl(file: &Path) -> anyhow::Result<Vec<Incoming>> {
    let reader =
        std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?);
    let mut rows = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&line) else {
            anyhow::bail!(
                "{}:{}: not a JSON object; each line must be one memory, e.g. {{\"content\": \"...\"}}",
                file.display(),
                number + 1
            );
        };
        let source = match fields.remove("id") {
            Some(Value::String(id)) => format!("jsonl/id/{id}"),
            Some(Value::Number(id)) => format!("jsonl/id/{id}"),
            _ => format!("jsonl/content/{}", content_digest(&fields)),
        };
        rows.push(Incoming {
            label: format!("line {}", number + 1),
            row: Imported { table: Table::Memories, source, fields },
        });
    }
    Ok(rows)
}

/// A line's fields, hashed in a canonical order: the same memory on two
/// lines, or in two files, is one memory.
fn content_digest(fields: &Map<String, Value>) -> String {
    let canonical: BTreeMap<&String, &Value> = fields.iter().collect();
    let bytes = serde_json::to_vec(&canonical).expect("JSON values serialise");
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}
