//! `roost conflicts`: list, show and resolve sync conflicts.
//!
//! Works on the instance's database directly, like `roost memory`; a
//! resolution goes through the write door and the running gateway ships it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Map, Value};

use roost_instance::Instance;
use roost_store::{Conflict, Keep, Mutation};

use crate::out::{self, note, say};

#[derive(Subcommand)]
pub enum ConflictsCommand {
    /// List open conflicts (with --all, resolved ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show both versions of one conflict, the differing fields first.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resolve a conflict: keep one version, or write a merge.
    Resolve {
        id: String,
        /// local (the version this instance wrote, else the one shown) or remote (the other)
        #[arg(long, value_name = "SIDE", conflicts_with_all = ["merge_file", "edit"])]
        keep: Option<String>,
        /// A JSON object of the fields to write over the shown version.
        #[arg(long, value_name = "FILE", conflicts_with = "edit")]
        merge_file: Option<PathBuf>,
        /// Edit the shown version's fields in $EDITOR, then write them.
        #[arg(long)]
        edit: bool,
    },
}

pub fn run(instance: &Instance, command: ConflictsCommand) -> anyhow::Result<()> {
    let store = instance.open_store()?;
    match command {
        ConflictsCommand::List { all, json } => {
            let conflicts = store.conflicts(all, 1000)?;
            if json {
                out::json(&conflicts)?;
                return Ok(());
            }
            let rows = conflicts.iter().map(|c| {
                vec![
                    out::field(c.id.get(..8).unwrap_or(&c.id)).into_owned(),
                    c.table.to_string(),
                    out::field(&c.row_id).into_owned(),
                    c.differing.len().to_string(),
                    out::field(state(c)).into_owned(),
                ]
            });
            out::table(&["ID", "TABLE", "ROW", "FIELDS DIFFERING", "STATE"], rows)?;
            note!("{} conflict(s)", conflicts.len());
        }
        ConflictsCommand::Show { id, json } => {
            let conflict = store.conflict(&id)?;
            if json {
                out::json(&conflict)?;
            } else {
                print_conflict(&conflict)?;
            }
        }
        ConflictsCommand::Resolve { id, keep, merge_file, edit } => {
            let keep = match (keep, merge_file, edit) {
                (Some(side), None, false) => Keep::parse(&side, None)?,
                (None, Some(path), false) => Keep::Merge(read_fields(&path)?),
                (None, None, true) => Keep::Merge(edit_fields(&store.conflict(&id)?)?),
                _ => bail!("say how to resolve: --keep local, --keep remote, --merge-file FILE or --edit"),
            };
            store.write(Mutation::Resolve { conflict: id.clone(), keep })?;
            let conflict = store.conflict(&id)?;
            say!("resolved conflict {}: {}", conflict.id, out::field(&conflict.resolution.unwrap_or_default()))?;
        }
    }
    Ok(())
}

/// Open, or how it was resolved.
fn state(c: &Conflict) -> &str {
    if c.resolved { c.resolution.as_deref().unwrap_or("resolved") } else { "open" }
}

/// Both versions, the differing fields first, each value as JSON (which
/// escapes control characters) on one line.
fn print_conflict(c: &Conflict) -> anyhow::Result<()> {
    say!("conflict   {} ({})", out::field(&c.id), out::field(state(c)))?;
    say!("row        {} {}", c.table, out::field(&c.row_id))?;
    for (label, v) in [("shown", &c.winner), ("kept aside", &c.loser)] {
        let side = if std::ptr::eq(v, c.local_version()) { "local" } else { "remote" };
        say!("{label:<10} {side}: {} by {} (entry {}, lamport {})", v.op, out::field(&v.origin), v.seq, v.lamport)?;
    }
    for field in &c.differing {
        say!("  {}:", out::field(field))?;
        say!("    shown:      {}", c.winner.row.get(field).unwrap_or(&Value::Null))?;
        say!("    kept aside: {}", c.loser.row.get(field).unwrap_or(&Value::Null))?;
    }
    Ok(())
}

fn read_fields(path: &PathBuf) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => bail!("{} must hold a JSON object of field: value", path.display()),
    }
}

/// Writes the shown version's fields to a temporary file, opens $EDITOR on
/// it and reads the result back.
fn edit_fields(conflict: &Conflict) -> anyhow::Result<Map<String, Value>> {
    const STAMPS: [&str; 7] = ["id", "origin", "lamport", "created_at", "updated_at", "deleted_at", "local"];
    let mut fields = conflict.winner.row.as_object().cloned().unwrap_or_default();
    fields.retain(|k, _| !STAMPS.contains(&k.as_str()));
    let mut file = tempfile::Builder::new().suffix(".json").tempfile()?;
    writeln!(file, "{}", serde_json::to_string_pretty(&fields)?)?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new(&editor)
        .arg(file.path())
        .status()
        .with_context(|| format!("starting the editor {editor:?} (set EDITOR)"))?;
    if !status.success() {
        bail!("the editor exited with {status}; nothing was written");
    }
    read_fields(&file.path().to_path_buf())
}
