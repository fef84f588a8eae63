//! `roost agent`: talk to the agent from the terminal (the `cli` channel),
//! and read its conversations. Every command goes to this machine's own
//! gateway; the message is recorded here whether or not this machine is
//! awake, and the reply comes from whichever machine is.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use roost_gateway::agent_api::TopicEntry;
use roost_instance::Instance;

use crate::http::{WAIT, local};
use crate::out::say;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Say TEXT in TOPIC and print the agent's reply when it comes.
    Say {
        topic: String,
        text: String,
        /// Give up waiting after this many seconds (the message stays and is answered).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// List the conversations: each topic, its messages and when the last came.
    Topics {
        #[arg(long)]
        json: bool,
    },
    /// Print a topic's messages and replies; --follow keeps printing new ones.
    Tail {
        topic: String,
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(instance: &Instance, command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Say { topic, text, wait } => say_and_wait(instance, &topic, &text, Duration::from_secs(wait)),
        AgentCommand::Topics { json } => topics(instance, json),
        AgentCommand::Tail { topic, follow, json } => tail(instance, &topic, follow, json),
    }
}

fn say_and_wait(instance: &Instance, topic: &str, text: &str, wait: Duration) -> anyhow::Result<()> {
    let message_id = format!("{:032x}", rand::random::<u128>());
    let body = json!({"channel": "cli", "topic": topic, "message_id": message_id, "sender": "cli", "text": text});
    let recorded = local(&instance.home, "/api/v1/agent/messages", Some(&body), WAIT)?;
    let id = recorded["id"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    loop {
        if let Some(entry) = entries(instance, topic)?.into_iter().find(|e| e.id == id) {
            if let Some(reply) = &entry.reply {
                say!("{reply}")?;
                return Ok(());
            }
            if entry.stage == Some(roost_agent::Stage::Failed) {
                bail!(
                    "the agent could not answer ({}); see `roost agent tail {topic}`",
                    entry.error.as_deref().unwrap_or("the handler failed")
                );
            }
        }
        if started.elapsed() >= wait {
            bail!(
                "no reply within {}s; the message is kept and will be answered: see `roost agent tail {topic}`",
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn entries(instance: &Instance, topic: &str) -> anyhow::Result<Vec<TopicEntry>> {
    let answer = local(&instance.home, &format!("/api/v1/agent/topics/{}", encode(topic)), None, WAIT)?;
    Ok(serde_json::from_value(answer["messages"].clone())?)
}

/// A topic as one path segment.
fn encode(topic: &str) -> String {
    topic
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn topics(instance: &Instance, json: bool) -> anyhow::Result<()> {
    let answer = local(&instance.home, "/api/v1/agent/topics", None, WAIT)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&answer["topics"])?)?;
        return Ok(());
    }
    let topics = answer["topics"].as_array().cloned().unwrap_or_default();
    if topics.is_empty() {
        say!("no conversations yet; start one with `roost agent say TOPIC TEXT`")?;
    }
    for topic in topics {
        let field = |name: &str| topic[name].as_str().unwrap_or_default().to_string();
        say!("{}  {} messages, last {}", field("topic"), topic["messages"], field("last_at"))?;
    }
    Ok(())
}

fn tail(instance: &Instance, topic: &str, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut shown: Vec<(String, Option<String>)> = Vec::new();
    loop {
        for entry in entries(instance, topic)? {
            let state = (entry.id.clone(), entry.reply.clone());
            if shown.contains(&state) {
                continue;
            }
            let message_shown = shown.iter().any(|(id, _)| *id == entry.id);
            shown.retain(|(id, _)| *id != entry.id);
            shown.push(state);
            if json {
                say!("{}", serde_json::to_string(&entry)?)?;
                continue;
            }
            if !message_shown {
                say!("> {}: {}", entry.sender.as_deref().unwrap_or(&entry.channel), entry.text)?;
            }
            if let Some(reply) = &entry.reply {
                let by = match (&entry.replied_by, entry.epoch) {
                    (Some(machine), Some(epoch)) => format!(" [{machine}, epoch {epoch}]"),
                    _ => String::new(),
                };
                say!("< {reply}{by}")?;
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The agent part of `roost status`, from `/health`.
pub fn describe(health: &Value) -> Option<String> {
    let agent = health.get("agent").filter(|a| !a.is_null())?;
    let role = if agent["working"].as_bool() == Some(true) { "answering here" } else { "standing by" };
    let telegram = match agent.get("telegram").filter(|t| !t.is_null()) {
        Some(t) if t["polling"].as_bool() == Some(true) => match t["last_poll_ms_ago"].as_u64() {
            Some(ms) => format!("; Telegram polled here {:.1} s ago", ms as f64 / 1000.0),
            None => "; Telegram polled here, no answer yet".to_string(),
        },
        Some(_) => "; Telegram polled by the awake machine".to_string(),
        None => String::new(),
    };
    Some(format!(
        "{role}; handler {}; {} messages, {} queued, {} unsent, {} failed, {} in flight{telegram}",
        agent["handler"].as_str().unwrap_or("?"),
        agent["messages"],
        agent["queued"],
        agent["unsent"],
        agent["failed"],
        agent["in_flight"],
    ))
}
