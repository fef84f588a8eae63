//! `roost pool`: where the conversations run, moving one, naming machines;
//! through this machine's gateway, which asks the coordinator.

use clap::Subcommand;
use serde_json::{Value, json};

use roost_instance::Instance;

use crate::http::{WAIT, local, local_request};
use crate::out::say;

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Move a conversation to a machine (its nickname, name or id) and pin it there.
    Move {
        topic: String,
        machine: String,
        /// Move it even though that machine is offline (it runs once the machine is back).
        #[arg(long)]
        confirm: bool,
    },
    /// Give a machine a nickname, for moves by name ("move this to the mini").
    Nickname { machine: String, nickname: String },
    /// Where one conversation runs, and why.
    Placement { topic: String },
}

pub fn run(instance: &Instance, command: Option<PoolCommand>, json_out: bool) -> anyhow::Result<()> {
    let home = &instance.home;
    let answer = match command {
        None => local(home, "/api/v1/pool", None, WAIT)?,
        Some(PoolCommand::Move { topic, machine, confirm }) => {
            let body = json!({"topic": topic, "to": machine, "confirm": confirm});
            let moved = local(home, "/api/v1/pool/transfer", Some(&body), WAIT)?;
            if !json_out {
                return say!("{}", moved["said"].as_str().unwrap_or_default());
            }
            moved
        }
        Some(PoolCommand::Nickname { machine, nickname }) => {
            let path = format!("/api/v1/pool/machines/{}", encode(&machine));
            let named = local_request(home, reqwest::Method::PATCH, &path, Some(&json!({"nickname": nickname})), WAIT)?;
            if !json_out {
                return say!("{} is now called {}", machine, named["nickname"].as_str().unwrap_or_default());
            }
            named
        }
        Some(PoolCommand::Placement { topic }) => {
            let placed = local(home, &format!("/api/v1/pool/placement?topic={}", encode(&topic)), None, WAIT)?;
            if !json_out {
                let machine = placed["nickname"].as_str().or(placed["machine"].as_str()).unwrap_or("no machine");
                return say!("{topic}: {machine} ({})", placed["reason"].as_str().unwrap_or_default());
            }
            placed
        }
    };
    if json_out {
        return say!("{}", serde_json::to_string_pretty(&answer)?);
    }
    show(&answer)
}

/// The pool as a table of machines, then each topic's machine.
fn show(pool: &Value) -> anyhow::Result<()> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    say!("{:<12} {:<12} {:<12} {:>8} {:>5}  health", "nickname", "name", "role", "capacity", "load")?;
    for m in pool["machines"].as_array().into_iter().flatten() {
        say!(
            "{:<12} {:<12} {:<12} {:>8} {:>5}  {}",
            text(&m["nickname"]),
            text(&m["name"]),
            text(&m["role"]),
            m["capacity"].as_u64().map_or("-".into(), |c| c.to_string()),
            m["load"],
            text(&m["health"])
        )?;
    }
    let nickname = |id: &str| {
        pool["machines"].as_array().into_iter().flatten().find(|m| m["id"] == id).map(|m| text(&m["nickname"]))
    };
    for t in pool["topics"].as_array().into_iter().flatten() {
        let machine = t["machine"].as_str().unwrap_or_default();
        let pinned = if t["pinned"] == true { ", pinned" } else { "" };
        say!("{}  on {}{pinned}", text(&t["topic"]), nickname(machine).unwrap_or_else(|| machine.to_string()))?;
    }
    Ok(())
}

/// `text` as a URL path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
