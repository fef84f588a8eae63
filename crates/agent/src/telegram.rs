//! The Telegram Bot API as far as the agent uses it: reading a `getUpdates`
//! answer into inbound messages and the next offset, and the `sendMessage`
//! request for a reply and what its answer means. Pure: the shell in
//! `roost-machine` does the HTTP, on the awake machine only.
//!
//! The offset (the first update not yet taken) is agent state in the
//! replicated ledger ([`OFFSET_KEY`]), so a new holder polls from where the
//! last one stopped. Updates are recorded as messages before the offset
//! moves past them, and a message's row id comes from (chat, message id), so
//! an update fetched twice is one message.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Message;

/// The channel name of messages from Telegram. Reserved: only the poller
/// records messages on it.
pub const CHANNEL: &str = "telegram";

/// The agent-state key of the next update id to ask for.
pub const OFFSET_KEY: &str = "channel/telegram/offset";

/// Telegram refuses a message longer than this, in UTF-16 code units.
pub const MAX_TEXT: usize = 4096;

/// What a longer reply is cut to before it is sent, with this after it. The
/// ledger keeps the whole reply (`roost agent tail`).
const CUT_NOTE: &str = "\n… (cut: the whole reply is in roost agent tail)";

/// An inbound message from one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The chat id: the topic.
    pub chat: String,
    /// `chat:message id`, unique per bot (message ids are per chat).
    pub message_id: String,
    pub sender: Option<String>,
    pub text: String,
}

/// One update: its id, and the message it carries if it is a text message
/// (others, such as edits or stickers, only move the offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Inbound>,
}

/// What an answer of the Bot API says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Done(T),
    /// Flood control: ask again after this long.
    RetryAfter(Duration),
    /// Refused for good (a chat that is gone, a bot the person blocked):
    /// asking again would get the same answer.
    Refused(String),
    /// Anything else, in one line: worth asking again.
    Failed(String),
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

#[derive(Deserialize)]
struct RawUpdate {
    update_id: i64,
    #[serde(default)]
    message: Option<RawMessage>,
}

#[derive(Deserialize)]
struct RawMessage {
    message_id: i64,
    chat: RawChat,
    #[serde(default)]
    from: Option<RawUser>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caption: Option<String>,
}

#[derive(Deserialize)]
struct RawChat {
    id: i64,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
}

/// Reads the envelope every Bot API answer comes in (`status` is the HTTP
/// status), then its result with `read`.
fn answer<T>(status: u16, body: &[u8], read: impl FnOnce(Value) -> Result<T, String>) -> Answer<T> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(e) => return Answer::Failed(format!("HTTP {status} with an answer that is not the Bot API's: {e}")),
    };
    if !envelope.ok {
        if let Some(after) = envelope.parameters.and_then(|p| p.retry_after) {
            return Answer::RetryAfter(Duration::from_secs(after.clamp(1, 3600)));
        }
        let code = envelope.error_code.unwrap_or(i64::from(status));
        let why =
            format!("error {code}: {}", one_line(&envelope.description.unwrap_or_else(|| "no description".into())));
        return match code {
            400 | 403 => Answer::Refused(why),
            401 | 404 => Answer::Failed(format!("{why}; check [agent.telegram] token (and api_url)")),
            _ => Answer::Failed(why),
        };
    }
    match read(envelope.result.unwrap_or(Value::Null)) {
        Ok(value) => Answer::Done(value),
        Err(why) => Answer::Failed(why),
    }
}

fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").chars().take(200).collect()
}

/// Reads a `getUpdates` answer, oldest update first. An update not
/// understood only moves the offset (if it has an id), so one odd update
/// never holds up the rest.
pub fn read_updates(status: u16, body: &[u8]) -> Answer<Vec<Update>> {
    answer(status, body, |result| {
        let Value::Array(raw) = result else { return Err("updates not understood: not a list".into()) };
        let mut updates: Vec<Update> = raw
            .into_iter()
            .filter_map(|value| {
                let id = value.get("update_id").and_then(Value::as_i64)?;
                let read = serde_json::from_value::<RawUpdate>(value);
                Some(read.map_or(Update { update_id: id, message: None }, Update::from))
            })
            .collect();
        updates.sort_by_key(|u| u.update_id);
        Ok(updates)
    })
}

impl From<RawUpdate> for Update {
    fn from(raw: RawUpdate) -> Update {
        let message = raw.message.and_then(|m| {
            let text = m.text.or(m.caption)?;
            let sender = m.from.and_then(|f| f.username.or(f.first_name));
            Some(Inbound {
                chat: m.chat.id.to_string(),
                message_id: format!("{}:{}", m.chat.id, m.message_id),
                sender,
                text,
            })
        });
        Update { update_id: raw.update_id, message }
    }
}

/// The offset to ask for after `updates`, from `current`: past the last
/// update taken, never back.
pub fn next_offset(current: i64, updates: &[Update]) -> i64 {
    updates.iter().map(|u| u.update_id.saturating_add(1)).fold(current, i64::max)
}

/// The `getUpdates` body: from `offset`, held open up to `wait` (whole
/// seconds) when there is nothing yet, messages only.
pub fn updates_request(offset: i64, wait: Duration) -> Value {
    json!({ "offset": offset, "timeout": wait.as_secs(), "allowed_updates": ["message"] })
}

/// The `sendMessage` body for `text`, the reply to `message` (a Telegram
/// message: its topic is the chat, its message id `chat:id`).
pub fn send_request(message: &Message, text: &str) -> Result<Value, String> {
    let chat: i64 =
        message.topic.parse().map_err(|_| format!("topic {:?} is not a Telegram chat id", message.topic))?;
    let mut body = json!({ "chat_id": chat, "text": fit(text) });
    if let Some(id) = message.message_id.rsplit_once(':').and_then(|(_, id)| id.parse::<i64>().ok()) {
        body["reply_parameters"] = json!({ "message_id": id, "allow_sending_without_reply": true });
    }
    Ok(body)
}

/// Reads a `sendMessage` answer.
pub fn read_sent(status: u16, body: &[u8]) -> Answer<()> {
    answer(status, body, |_| Ok(()))
}

/// `text` cut to what Telegram takes, with a note when it was cut.
pub fn fit(text: &str) -> String {
    if text.encode_utf16().count() <= MAX_TEXT {
        return text.to_string();
    }
    let room = MAX_TEXT - CUT_NOTE.encode_utf16().count();
    let mut used = 0;
    let kept: String = text
        .chars()
        .take_while(|c| {
            used += c.len_utf16();
            used <= room
        })
        .collect();
    kept + CUT_NOTE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, message_id: &str) -> Message {
        Message {
            id: "m".into(),
            channel: CHANNEL.into(),
            topic: topic.into(),
            message_id: message_id.into(),
            sender: None,
            text: "hi".into(),
            received_at: String::new(),
            received_by: String::new(),
        }
    }

    #[test]
    fn updates_become_messages_and_every_update_moves_the_offset() {
        let body = br#"{"ok":true,"result":[
            {"update_id":12,"edited_message":{"message_id":3,"chat":{"id":5}}},
            {"update_id":11,"message":{"message_id":4,"chat":{"id":-100},"from":{"id":1,"first_name":"Ann"},"text":"hello"}},
            {"update_id":13,"message":{"message_id":5,"chat":{"id":-100},"caption":"a photo"}},
            {"update_id":14,"message":{"message_id":6,"chat":{"id":-100}}}
        ]}"#;
        let Answer::Done(updates) = read_updates(200, body) else { panic!("read") };
        assert_eq!(updates.iter().map(|u| u.update_id).collect::<Vec<_>>(), [11, 12, 13, 14]);
        let odd = br#"{"ok":true,"result":[{"update_id":3,"message":{"chat":"x"}},{"no":"id"},
            {"update_id":4,"message":{"message_id":1,"chat":{"id":5},"text":"hi"}}]}"#;
        let Answer::Done(read) = read_updates(200, odd) else { panic!("read") };
        let seen: Vec<(i64, bool)> = read.iter().map(|u| (u.update_id, u.message.is_some())).collect();
        assert_eq!(seen, [(3, false), (4, true)]);
        let first = updates[0].message.clone().unwrap();
        assert_eq!((first.chat.as_str(), first.message_id.as_str()), ("-100", "-100:4"));
        assert_eq!((first.sender.as_deref(), first.text.as_str()), (Some("Ann"), "hello"));
        assert!(updates[1].message.is_none() && updates[3].message.is_none());
        assert_eq!(updates[2].message.as_ref().unwrap().text, "a photo");
        assert_eq!(next_offset(0, &updates), 15);
        assert_eq!(next_offset(20, &updates), 20, "never back");
        assert_eq!(next_offset(7, &[]), 7);
    }

    #[test]
    fn errors_say_what_telegram_said_and_flood_control_says_when() {
        let flood =
            br#"{"ok":false,"error_code":429,"description":"Too Many Requests","parameters":{"retry_after":7}}"#;
        assert_eq!(read_sent(429, flood), Answer::RetryAfter(Duration::from_secs(7)));
        let blocked = br#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#;
        assert_eq!(
            read_sent(403, blocked),
            Answer::Refused("error 403: Forbidden: bot was blocked by the user".into())
        );
        let unauthorized = br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#;
        let Answer::Failed(why) = read_sent(401, unauthorized) else { panic!("failed") };
        assert!(why.ends_with("check [agent.telegram] token (and api_url)"), "{why}");
        let conflict =
            br#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request"}"#;
        let Answer::Failed(why) = read_updates(409, conflict) else { panic!("failed") };
        assert!(why.starts_with("error 409: Conflict"), "{why}");
        let Answer::Failed(why) = read_sent(502, b"<html>Bad Gateway</html>") else { panic!("failed") };
        assert!(why.contains("HTTP 502"), "{why}");
        assert_eq!(read_sent(200, br#"{"ok":true,"result":{"message_id":9}}"#), Answer::Done(()));
    }

    #[test]
    fn a_reply_goes_to_its_chat_in_reply_to_its_message_cut_to_what_telegram_takes() {
        let body = send_request(&message("-100", "-100:4"), "hi").unwrap();
        assert_eq!(body["chat_id"], -100);
        assert_eq!(body["reply_parameters"]["message_id"], 4);
        assert!(send_request(&message("general", "x"), "hi").is_err());
        let long = "é".repeat(5000);
        let cut = fit(&long);
        assert!(cut.encode_utf16().count() <= MAX_TEXT && cut.ends_with(CUT_NOTE));
        let wide = "😀".repeat(3000);
        assert!(fit(&wide).encode_utf16().count() <= MAX_TEXT);
        assert_eq!(fit("short"), "short");
    }
}
