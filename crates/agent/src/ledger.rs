//! The message ledger's rules and the fenced outbox's decisions.
//!
//! The ledger is replicated state in two parts. A **message** row (table
//! `agent_messages`) is written by whichever machine received it, awake or
//! not; its id is derived from (channel, the channel's message id), so two
//! machines receiving one message make one row. A **reply** record
//! (`agent_state` key `reply/<message row id>`) is written only by the awake
//! machine, stamped with its lease epoch and fenced by the store's epoch
//! rules; it moves claimed → replied → sent, or to failed after
//! [`Limits::attempts`] tries of the handler.
//!
//! [`plan`] reads the ledger and says what the holder does next, topic by
//! topic, in message order: run the handler for a message nobody has
//! answered, send a reply committed but not confirmed (with the idempotency
//! key it was committed with), or give up on one that failed too often. It
//! never asks for a second reply to a message that has one: a reply, once
//! committed, is only ever sent again as it is.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The channel whose replies are delivered by the ledger itself: `roost
/// agent say` reads them from there, so committing one is sending it.
pub const CLI_CHANNEL: &str = "cli";

/// The agent-state key of a message's reply record.
pub fn reply_key(message_row_id: &str) -> String {
    format!("{REPLY_PREFIX}{message_row_id}")
}

/// What every reply record's key starts with.
pub const REPLY_PREFIX: &str = "reply/";

/// The natural key of a message row: what makes one channel message one
/// row on every machine.
pub fn message_key(channel: &str, message_id: &str) -> String {
    format!("{channel}/{message_id}")
}

/// The idempotency key of a message's `index`th reply: derived from the
/// message and the index only, so every holder that sends it sends it under
/// the same key.
pub fn idempotency_key(message_row_id: &str, index: u32) -> String {
    let digest = Sha256::digest(format!("roost agent reply\0{message_row_id}\0{index}"));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("roost-{hex}")
}

/// A channel name: lowercase letters, digits, `-` and `_`, 1 to 32 bytes.
pub fn valid_channel(channel: &str) -> bool {
    (1..=32).contains(&channel.len())
        && channel.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// One inbound message as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The row id, from (channel, message id).
    pub id: String,
    pub channel: String,
    pub topic: String,
    pub message_id: String,
    pub sender: Option<String>,
    /// Redacted before it was written.
    pub text: String,
    /// When the receiving machine wrote it (RFC 3339): the topic's order.
    pub received_at: String,
    pub received_by: String,
}

/// Where a message's reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The handler was started (or failed `attempts` times so far).
    Claimed,
    /// The reply is committed, not yet confirmed sent.
    Replied,
    /// The channel accepted it.
    Sent,
    /// The handler failed [`Limits::attempts`] times, or the channel refused
    /// the reply for good; shown, never retried.
    Failed,
}

impl Stage {
    /// The stage's name, as serialized.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Claimed => "claimed",
            Stage::Replied => "replied",
            Stage::Sent => "sent",
            Stage::Failed => "failed",
        }
    }
}

/// A message's reply record, as kept in agent state (its epoch is the
/// row's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub message: String,
    pub stage: Stage,
    /// Handler runs started.
    pub attempts: u32,
    /// The reply, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its idempotency key (reply index 0).
    pub key: String,
    /// Why the last attempt failed, or the last send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The machine that wrote this version.
    pub machine: String,
}

impl Reply {
    /// A claim: the handler starts its `attempts`th run.
    pub fn claimed(message: &str, attempts: u32, error: Option<String>, machine: &str) -> Reply {
        Reply {
            message: message.to_string(),
            stage: Stage::Claimed,
            attempts,
            text: None,
            key: idempotency_key(message, 0),
            error,
            machine: machine.to_string(),
        }
    }

    /// The handler's answer, committed before it is sent.
    pub fn replied(&self, text: String, machine: &str) -> Reply {
        assert_eq!(self.stage, Stage::Claimed, "only a claimed message gets its reply");
        Reply { stage: Stage::Replied, text: Some(text), error: None, machine: machine.to_string(), ..self.clone() }
    }

    /// The channel accepted the reply.
    pub fn sent(&self, machine: &str) -> Reply {
        assert!(matches!(self.stage, Stage::Replied | Stage::Sent), "only a committed reply is sent");
        Reply { stage: Stage::Sent, error: None, machine: machine.to_string(), ..self.clone() }
    }

    /// The channel refused the committed reply for good (the chat is gone,
    /// the bot is blocked): shown as failed, with why, and never sent again.
    /// Its text stays: a message still has one reply at most.
    pub fn refused(&self, why: String, machine: &str) -> Reply {
        assert_eq!(self.stage, Stage::Replied, "only a committed reply is refused");
        Reply { stage: Stage::Failed, error: Some(why), machine: machine.to_string(), ..self.clone() }
    }

    /// Given up after the handler failed too often.
    pub fn failed(&self, machine: &str) -> Reply {
        assert_eq!(self.stage, Stage::Claimed, "a committed reply never fails back");
        Reply { stage: Stage::Failed, machine: machine.to_string(), ..self.clone() }
    }

    fn done(&self) -> bool {
        matches!(self.stage, Stage::Sent | Stage::Failed)
    }
}

/// A message with its reply record and that record's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub message: Message,
    pub reply: Option<(Reply, u64)>,
}

/// How far the holder goes with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Handler runs before a message is marked failed.
    pub attempts: u32,
    /// Earlier messages and replies of the topic handed to the handler.
    pub history: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { attempts: 3, history: 20 }
    }
}

/// One turn of the topic's conversation, for the handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// `message` or `reply`.
    pub role: String,
    pub text: String,
    pub sender: Option<String>,
}

/// What the holder does next for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Claim the message (this is the `attempt`th run) and run the handler
    /// (with the topic's [`context`]).
    Run { message: Message, attempt: u32 },
    /// Send a committed reply, as committed (under `epoch`).
    Send { message: Message, reply: Reply, epoch: u64 },
    /// The handler failed `Limits::attempts` times: record it as failed.
    Fail { message: Message, reply: Reply },
}

impl Work {
    pub fn topic(&self) -> &str {
        match self {
            Work::Run { message, .. } | Work::Send { message, .. } | Work::Fail { message, .. } => &message.topic,
        }
    }
}

/// The ledger's topics, each in message order: by when received, and
/// messages received in the same millisecond in the order `entries` has them
/// (the store's: by the Lamport clock of their writes, then id, so every
/// machine orders one topic alike and one machine's messages as it wrote
/// them).
pub fn by_topic(entries: &[Entry]) -> Vec<(String, Vec<&Entry>)> {
    let mut topics: std::collections::BTreeMap<&str, Vec<&Entry>> = Default::default();
    for entry in entries {
        topics.entry(&entry.message.topic).or_default().push(entry);
    }
    topics
        .into_iter()
        .map(|(topic, mut entries)| {
            entries.sort_by(|a, b| a.message.received_at.cmp(&b.message.received_at));
            (topic.to_string(), entries)
        })
        .collect()
}

/// What the holder at `epoch` does next, from the messages not done yet
/// (done ones may be left out): at most one piece of work per
/// topic, for the topic's first message not done, skipping topics in
/// `busy` (work already under way). A later message of a topic waits for
/// the earlier ones, so replies go out in message order.
pub fn plan(entries: &[Entry], epoch: u64, busy: &dyn Fn(&str) -> bool, limits: Limits) -> Vec<Work> {
    let mut work = Vec::new();
    for (topic, entries) in by_topic(entries) {
        if busy(&topic) {
            continue;
        }
        let Some(at) = entries.iter().position(|e| !e.reply.as_ref().is_some_and(|(r, _)| r.done())) else {
            continue;
        };
        let entry = entries[at];
        let message = entry.message.clone();
        let next = match &entry.reply {
            None => Work::Run { message, attempt: 1 },
            // A later holder wrote it: this machine's grant is over, it
            // just has not heard yet.
            Some((_, written)) if *written > epoch => continue,
            Some((reply, written)) => match reply.stage {
                Stage::Replied => Work::Send { message, reply: reply.clone(), epoch: *written },
                Stage::Claimed if reply.attempts >= limits.attempts => Work::Fail { message, reply: reply.clone() },
                Stage::Claimed => Work::Run { message, attempt: reply.attempts + 1 },
                Stage::Sent | Stage::Failed => unreachable!("done entries are skipped"),
            },
        };
        work.push(next);
    }
    debug_assert!(
        work.iter().map(Work::topic).collect::<std::collections::HashSet<_>>().len() == work.len(),
        "one piece of work per topic"
    );
    work
}

/// What the handler is told of a message's topic, from the topic's entries:
/// the last `limits.history` turns before the message, and the message's
/// place in the topic (1 for the first).
pub fn context(topic: &[Entry], message_id: &str, limits: Limits) -> (Vec<Turn>, usize) {
    let (_, entries) = by_topic(topic).into_iter().next().unwrap_or_default();
    let at = entries.iter().position(|e| e.message.id == message_id).unwrap_or(entries.len());
    let mut turns = Vec::new();
    for entry in &entries[..at] {
        let m = &entry.message;
        turns.push(Turn { role: "message".into(), text: m.text.clone(), sender: m.sender.clone() });
        if let Some((Reply { text: Some(text), .. }, _)) = &entry.reply {
            turns.push(Turn { role: "reply".into(), text: text.clone(), sender: None });
        }
    }
    let skip = turns.len().saturating_sub(limits.history);
    (turns.split_off(skip), at + 1)
}

/// The ledger in numbers, for `/health` and `roost status` (the store
/// counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub messages: usize,
    /// Not yet answered or sent.
    pub queued: usize,
    /// Answered and committed, not yet confirmed sent.
    pub unsent: usize,
    pub sent: usize,
    pub failed: usize,
    pub topics: usize,
}

/// The built-in handler: echoes the message with the topic's message count.
pub fn echo(text: &str, topic: &str, count: usize) -> String {
    format!("echo #{count} in {topic}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, n: u32) -> Message {
        Message {
            id: format!("{topic}-{n}"),
            channel: "webhook".into(),
            topic: topic.into(),
            message_id: n.to_string(),
            sender: Some("ann".into()),
            text: format!("hello {n}"),
            received_at: format!("2026-01-01T00:00:{n:02}Z"),
            received_by: "a".into(),
        }
    }

    fn entry(topic: &str, n: u32, reply: Option<(Stage, u32, u64)>) -> Entry {
        let m = message(topic, n);
        let reply = reply.map(|(stage, attempts, epoch)| {
            let mut r = Reply::claimed(&m.id, attempts, None, "a");
            r.stage = stage;
            if matches!(stage, Stage::Replied | Stage::Sent) {
                r.text = Some(format!("reply {n}"));
            }
            (r, epoch)
        });
        Entry { message: m, reply }
    }

    const NOT_BUSY: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn each_topic_gets_its_first_unfinished_message_in_order() {
        let entries = vec![
            entry("t", 2, None),
            entry("t", 1, Some((Stage::Sent, 1, 1))),
            entry("u", 1, Some((Stage::Replied, 1, 1))),
            entry("u", 2, None),
            entry("v", 1, Some((Stage::Failed, 3, 1))),
        ];
        let work = plan(&entries, 2, NOT_BUSY, Limits::default());
        assert_eq!(work.len(), 2);
        match &work[0] {
            Work::Run { message, attempt } => {
                assert_eq!((message.id.as_str(), *attempt), ("t-2", 1));
                let topic: Vec<Entry> = entries.iter().filter(|e| e.message.topic == "t").cloned().collect();
                let (history, count) = context(&topic, &message.id, Limits::default());
                assert_eq!(count, 2);
                assert_eq!(history.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["hello 1", "reply 1"]);
            }
            other => panic!("{other:?}"),
        }
        match &work[1] {
            Work::Send { message, reply, epoch } => {
                assert_eq!((message.id.as_str(), *epoch), ("u-1", 1));
                assert_eq!(reply.key, idempotency_key("u-1", 0), "sent again under the key it was committed with");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_of_one_millisecond_keep_the_order_the_ledger_gives_them() {
        let mut later = entry("t", 9, None);
        let mut earlier = entry("t", 3, None);
        // Written in that order within one millisecond; their ids sort the other way.
        later.message.received_at = earlier.message.received_at.clone();
        (earlier.message.id, later.message.id) = ("t-z".into(), "t-a".into());
        let work = plan(&[earlier, later], 1, NOT_BUSY, Limits::default());
        assert!(matches!(&work[..], [Work::Run { message, .. }] if message.id == "t-z"), "{work:?}");
    }

    #[test]
    fn a_claim_is_retried_until_the_attempts_run_out_and_busy_topics_wait() {
        let limits = Limits { attempts: 2, history: 20 };
        let once = vec![entry("t", 1, Some((Stage::Claimed, 1, 1)))];
        assert!(matches!(&plan(&once, 3, NOT_BUSY, limits)[0], Work::Run { attempt: 2, .. }));
        let twice = vec![entry("t", 1, Some((Stage::Claimed, 2, 3)))];
        assert!(matches!(&plan(&twice, 3, NOT_BUSY, limits)[0], Work::Fail { .. }));
        assert!(plan(&once, 3, &|t| t == "t", limits).is_empty());
    }

    #[test]
    fn a_committed_reply_is_never_run_again() {
        for stage in [Stage::Replied, Stage::Sent] {
            let entries = vec![entry("t", 1, Some((stage, 1, 1)))];
            assert!(!plan(&entries, 9, NOT_BUSY, Limits::default()).iter().any(|w| matches!(w, Work::Run { .. })));
        }
    }

    #[test]
    #[should_panic(expected = "only a claimed message gets its reply")]
    fn a_reply_cannot_replace_a_committed_one() {
        let r = Reply::claimed("m", 1, None, "a").replied("one".into(), "a");
        r.replied("two".into(), "b");
    }

    #[test]
    fn keys_depend_on_the_message_and_index_only() {
        assert_eq!(idempotency_key("m", 0), idempotency_key("m", 0));
        assert_ne!(idempotency_key("m", 0), idempotency_key("m", 1));
        assert_ne!(idempotency_key("m", 0), idempotency_key("n", 0));
        assert!(valid_channel("webhook") && valid_channel("cli") && !valid_channel("Web hook") && !valid_channel(""));
    }
}
