//! The Telegram channel's shell: on the awake machine only, long-polls the
//! Bot API for updates, records each text message in the ledger, and moves
//! the replicated offset past them once a majority of the machines that keep
//! the log hold them (Telegram forgets an update as soon as it is asked for a
//! later one). Replies leave through [`Telegram::send`]. The shapes and rules
//! are `roost_agent::telegram`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use roost_agent::redact;
use roost_agent::telegram::{self, Answer, CHANNEL, OFFSET_KEY, Update};
use roost_instance::TelegramConfig;
use roost_store::Store;
use roost_store::agent::Inbound;

use super::{Context, TICK};

/// The longest a `getUpdates` request is held open by the Bot API.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// What a request may take beyond the time the Bot API holds it open.
const REQUEST_SLACK: Duration = Duration::from_secs(5);
/// The first wait after a failed poll; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What `/health` shows of the Telegram channel on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChannelStatus {
    /// This machine is the one polling (it is awake).
    pub polling: bool,
    /// How long ago this machine's last poll succeeded.
    pub last_poll_ms_ago: Option<u64>,
    /// The next update this machine will ask for.
    pub offset: Option<i64>,
}

/// A bot on the Bot API.
pub(super) struct Telegram {
    http: reqwest::Client,
    /// `{api_url}/bot{token}`: holds the token, so it is never logged and
    /// errors are shown without it.
    base: String,
}

impl Telegram {
    pub(super) fn new(config: &TelegramConfig, http: reqwest::Client) -> Option<Telegram> {
        let token = config.token.as_ref()?;
        Some(Telegram { http, base: format!("{}/bot{token}", config.api_url.trim_end_matches('/')) })
    }

    async fn call(&self, method: &str, body: serde_json::Value, bound: Duration) -> Result<(u16, Vec<u8>), String> {
        let request = self.http.post(format!("{}/{method}", self.base)).json(&body).timeout(bound);
        let response = request.send().await.map_err(|e| format!("{method}: {}", e.without_url()))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| format!("{method}: {}", e.without_url()))?;
        Ok((status, body.to_vec()))
    }

    async fn updates(&self, offset: i64, wait: Duration) -> Answer<Vec<Update>> {
        match self.call("getUpdates", telegram::updates_request(offset, wait), wait + REQUEST_SLACK).await {
            Ok((status, body)) => telegram::read_updates(status, &body),
            Err(why) => Answer::Failed(why),
        }
    }

    /// Sends `text` in reply to `message`, the request bounded by `bound`.
    pub(super) async fn send(&self, message: &roost_agent::Message, text: &str, bound: Duration) -> Answer<()> {
        let body = match telegram::send_request(message, text) {
            Ok(body) => body,
            Err(why) => return Answer::Failed(why),
        };
        match self.call("sendMessage", body, bound).await {
            Ok((status, body)) => telegram::read_sent(status, &body),
            Err(why) => Answer::Failed(why),
        }
    }
}

/// Polls while this machine is awake; waits for the role otherwise.
pub(super) async fn poll(context: Arc<Context>) {
    let Some(telegram) = &context.telegram else { return };
    let mut offset = 0i64;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(working) = context.awake.working() else {
            context.telegram_status(|s| s.polling = false);
            tokio::time::sleep(TICK).await;
            continue;
        };
        context.telegram_status(|s| s.polling = true);
        let stored = context.on_store("reading the Telegram offset", |store| store.agent_state(OFFSET_KEY)).await;
        let Some(stored) = stored else {
            tokio::time::sleep(backoff).await;
            continue;
        };
        offset = offset.max(stored.and_then(|s| s.value.parse().ok()).unwrap_or(0));
        context.telegram_status(|s| s.offset = Some(offset));
        // A long poll, dropped as soon as the role moves.
        let polled = tokio::select! {
            answer = telegram.updates(offset, POLL_WAIT) => answer,
            () = context.role_ends(None, working.epoch) => continue,
        };
        let updates = match polled {
            Answer::Done(updates) => updates,
            Answer::RetryAfter(after) => {
                context.sleep_while_working(after, None, working.epoch).await;
                continue;
            }
            // Cut by the next holder's poll as the role moved: not a failure.
            Answer::Failed(_) | Answer::Refused(_)
                if context.awake.working().is_none_or(|w| w.epoch != working.epoch) =>
            {
                continue;
            }
            Answer::Failed(why) | Answer::Refused(why) => {
                context.failed(format!("polling Telegram: {why}"));
                context.shared.telegram_failing.lock().expect("agent status poisoned").get_or_insert_with(Instant::now);
                context.sleep_while_working(backoff, None, working.epoch).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        *context.shared.telegram_polled.lock().expect("agent status poisoned") = Some(Instant::now());
        *context.shared.telegram_failing.lock().expect("agent status poisoned") = None;
        if !record(&context, &updates).await {
            context.sleep_while_working(backoff, None, working.epoch).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = FIRST_BACKOFF;
        let next = telegram::next_offset(offset, &updates);
        if next == offset {
            continue;
        }
        // Asking for `next` makes Telegram forget what came before it: only
        // once a majority of the keepers hold the messages just recorded.
        if !context.held_by_peers(None, working.epoch).await {
            continue;
        }
        let write = move |store: &Store| store.write_agent_state(OFFSET_KEY, &next.to_string(), working.epoch);
        if context.on_store("writing the Telegram offset", write).await.is_some() {
            offset = next;
        } else {
            context.sleep_while_working(backoff, None, working.epoch).await;
        }
    }
}

/// Records the text messages among `updates`; false if one could not be.
async fn record(context: &Context, updates: &[Update]) -> bool {
    let messages: Vec<telegram::Inbound> = updates.iter().filter_map(|u| u.message.clone()).collect();
    if messages.is_empty() {
        return true;
    }
    let write = move |store: &Store| {
        for m in &messages {
            let text = redact(&m.text);
            store.record_message(&Inbound {
                channel: CHANNEL,
                topic: &m.chat,
                message_id: &m.message_id,
                sender: m.sender.as_deref(),
                text: &text,
            })?;
        }
        Ok(())
    };
    let recorded = context.on_store("recording Telegram messages", write).await.is_some();
    context.shared.wake.notify_one();
    recorded
}
