//! The agent's ledger in the store: inbound messages (`agent_messages`,
//! written through the door by whichever machine received them) and their
//! reply records (agent state under `reply/<message row id>`, written by the
//! holder under its epoch). The rules are `roost_agent::ledger`'s.

use serde_json::{Map, Value, json};

use roost_agent::{Counts, Entry, Message, Reply, ledger};
use roost_core::{RowId, Table};

use crate::door::{Mutation, find_live};
use crate::{Result, Store, StoreError};

/// An inbound message as a channel hands it over.
#[derive(Debug, Clone)]
pub struct Inbound<'a> {
    pub channel: &'a str,
    pub topic: &'a str,
    pub message_id: &'a str,
    pub sender: Option<&'a str>,
    /// Redacted by the caller.
    pub text: &'a str,
}

impl Store {
    /// Records an inbound message, once: a message already in the ledger
    /// (received here before, or replicated from the machine that received
    /// it) is returned as it is. The second value says whether this call
    /// recorded it.
    pub fn record_message(&self, inbound: &Inbound) -> Result<(Message, bool)> {
        let key = ledger::message_key(inbound.channel, inbound.message_id);
        if let Some(known) = self.message(&key)? {
            return Ok((known, false));
        }
        let fields = json!({
            "key": key,
            "channel": inbound.channel,
            "topic": inbound.topic,
            "message_id": inbound.message_id,
            "sender": inbound.sender,
            "text": inbound.text,
        });
        let Value::Object(fields) = fields else { unreachable!("an object") };
        match self.write(Mutation::Create { table: Table::AgentMessages, fields }) {
            Ok(row) => Ok((message_from(&row)?, true)),
            // Recorded by a concurrent call between the look and the write.
            Err(StoreError::Duplicate(_)) => match self.message(&key)? {
                Some(known) => Ok((known, false)),
                None => Err(StoreError::Damaged(format!("message {key} is neither new nor recorded"))),
            },
            Err(e) => Err(e),
        }
    }

    /// The message under its natural key (`channel/message id`), if recorded.
    pub fn message(&self, key: &str) -> Result<Option<Message>> {
        let id = RowId::named(Table::AgentMessages.name(), key);
        self.read(|c| match find_live(c, Table::AgentMessages, id.as_str()) {
            Ok((_, row)) => message_from(&row).map(Some),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// The ledger: every message (of `topic`, when given) with its reply
    /// record and that record's epoch, in the order received.
    pub fn ledger(&self, topic: Option<&str>) -> Result<Vec<Entry>> {
        self.entries(if topic.is_some() { "m.topic = ?1" } else { "1" }, topic)
    }

    /// The messages not done yet (no reply record, or one claimed or
    /// replied but not sent): what the holder plans from.
    pub fn open_ledger(&self) -> Result<Vec<Entry>> {
        self.entries("(s.value IS NULL OR json_extract(s.value, '$.stage') IN ('claimed', 'replied'))", None)
    }

    /// The ledger in numbers.
    pub fn agent_counts(&self) -> Result<Counts> {
        self.read(|c| {
            let counted = c
                .prepare_cached(
                    "SELECT count(*), count(DISTINCT m.topic),
                        sum(s.value IS NULL OR json_extract(s.value, '$.stage') = 'claimed'),
                        sum(json_extract(s.value, '$.stage') = 'replied'),
                        sum(json_extract(s.value, '$.stage') = 'sent'),
                        sum(json_extract(s.value, '$.stage') = 'failed')
                 FROM agent_messages m
                 LEFT JOIN agent_state s ON s.key = 'reply/' || m.id AND s.deleted_at IS NULL
                 WHERE m.deleted_at IS NULL",
                )?
                .query_row([], |r| {
                    let n = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as usize);
                    Ok(Counts {
                        messages: n(0)?,
                        topics: n(1)?,
                        queued: n(2)?,
                        unsent: n(3)?,
                        sent: n(4)?,
                        failed: n(5)?,
                    })
                })?;
            Ok(counted)
        })
    }

    /// The entries whose message and reply record meet `condition` (which
    /// may name `?1`, bound to `topic`), in the order received.
    fn entries(&self, condition: &str, topic: Option<&str>) -> Result<Vec<Entry>> {
        self.read(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT m.id, m.channel, m.topic, m.message_id, m.sender, m.text, m.created_at, m.origin,
                        s.value, s.epoch
                 FROM agent_messages m
                 LEFT JOIN agent_state s ON s.key = 'reply/' || m.id AND s.deleted_at IS NULL
                 WHERE m.deleted_at IS NULL AND {condition}
                 ORDER BY m.created_at, m.lamport, m.id"
            ))?;
            let rows = statement.query_map(rusqlite::params_from_iter(topic), |r| {
                let message = Message {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    topic: r.get(2)?,
                    message_id: r.get(3)?,
                    sender: r.get(4)?,
                    text: r.get(5)?,
                    received_at: r.get(6)?,
                    received_by: r.get(7)?,
                };
                let reply: Option<(String, i64)> = match r.get::<_, Option<String>>(8)? {
                    Some(value) => Some((value, r.get(9)?)),
                    None => None,
                };
                Ok((message, reply))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (message, reply) = row?;
                let reply = match reply {
                    Some((value, epoch)) => {
                        let reply: Reply = serde_json::from_str(&value).map_err(|e| {
                            StoreError::SchemaMismatch(format!("the reply record of message {}: {e}", message.id))
                        })?;
                        Some((reply, epoch as u64))
                    }
                    None => None,
                };
                entries.push(Entry { message, reply });
            }
            Ok(entries)
        })
    }

    /// A message's reply record and its epoch, if any.
    pub fn reply(&self, message_row_id: &str) -> Result<Option<(Reply, u64)>> {
        let Some(state) = self.agent_state(&ledger::reply_key(message_row_id))? else { return Ok(None) };
        let reply = serde_json::from_str(&state.value)
            .map_err(|e| StoreError::SchemaMismatch(format!("the reply record of message {message_row_id}: {e}")))?;
        Ok(Some((reply, state.epoch)))
    }

    /// Writes a message's reply record as the holder of `epoch`; refused (a
    /// `Fenced` error) once this machine has seen a later epoch.
    pub fn write_reply(&self, reply: &Reply, epoch: u64) -> Result<()> {
        let value = serde_json::to_string(reply).expect("a reply record serializes");
        self.write_agent_state(&ledger::reply_key(&reply.message), &value, epoch).map(drop)
    }

    /// The topics with how many messages each has and when the last came.
    pub fn topics(&self) -> Result<Vec<(String, u64, String)>> {
        self.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT topic, count(*), max(created_at) FROM agent_messages WHERE deleted_at IS NULL
                 GROUP BY topic ORDER BY max(created_at) DESC",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

fn message_from(row: &Map<String, Value>) -> Result<Message> {
    let text = |name: &str| row.get(name).and_then(Value::as_str).map(str::to_string);
    let needed = |name: &str| {
        text(name).ok_or_else(|| StoreError::SchemaMismatch(format!("an agent message without its {name}")))
    };
    Ok(Message {
        id: needed("id")?,
        channel: needed("channel")?,
        topic: needed("topic")?,
        message_id: needed("message_id")?,
        sender: text("sender"),
        text: needed("text")?,
        received_at: needed("created_at")?,
        received_by: needed("origin")?,
    })
}
