//! The agent's shell: on the awake machine, reads the ledger, asks
//! `roost_agent::ledger::plan` what to do, and does it — claims a message,
//! runs the handler, commits the reply under the lease epoch, sends it, and
//! commits that it was sent. On a standby it does nothing but report.
//!
//! A reply is sent only while this machine still works under the epoch it
//! was planned under, and the request is bounded by what is left of the lease
//! ([`AwakeService::working`], checked right before each attempt). Every
//! write goes through the store's door under that epoch, so once this
//! machine has heard of a later grant its writes are refused; what it wrote
//! before hearing is fenced wherever it arrives.
//!
//! Channels: webhook messages arrive through the gateway on any machine and
//! replies are POSTed to `[agent.webhook] url`; Telegram is polled by the
//! awake machine ([`telegram`]); `cli` replies are read from the ledger.

mod reach;
mod telegram;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use roost_agent::ledger::{self, CLI_CHANNEL, Counts, Limits, Work};
use roost_agent::liveness;
use roost_agent::outbox::{self, Settle};
use roost_agent::telegram::{Answer, CHANNEL as TELEGRAM};
use roost_agent::{Message, Reply, redact};
use roost_awake::{AwakeService, Working, clock};
use roost_instance::{Handler, Instance};
use roost_store::Store;
use roost_sync::{Heads, SyncService};
use roost_tasks::Tasks;

use crate::pool::PoolService;

/// Every read or write of the store is bounded by this.
const DB_WAIT: Duration = Duration::from_secs(5);
/// How often the ledger is read when nothing wakes the loop.
const TICK: Duration = Duration::from_millis(250);
/// A send attempt needs at least this much of the lease left.
const SEND_MARGIN: Duration = outbox::SEND_MARGIN;
/// One webhook request is bounded by this (and by the lease).
const SEND_WAIT: Duration = Duration::from_secs(5);
/// Topics worked on at once.
const PARALLEL: usize = 32;
/// How often a reply waiting for its commit to reach the peers looks again.
const HELD_POLL: Duration = Duration::from_millis(2);
/// How often a round waiting to take in what the peers held looks again.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// What `/health`, `roost status` and the Nest show of the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub handler: String,
    /// This machine holds the role and works the ledger.
    pub working: bool,
    /// It holds the role and is still taking in what the connected
    /// machines held when it took it, before it answers anything.
    pub catching_up: bool,
    pub epoch: Option<u64>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Messages whose handler or send is under way here.
    pub in_flight: usize,
    pub webhook: Option<String>,
    /// How long ago this machine last had a reply accepted by a channel.
    pub last_sent_ms_ago: Option<u64>,
    /// The last thing that went wrong here, in one line.
    pub last_error: Option<String>,
    /// Whether this machine reaches the endpoints its replies go to (none
    /// until first tried, or when there are none): a holder that cannot
    /// work hands the role only to a machine that does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaches_channels: Option<bool>,
    /// The Telegram channel, when a bot is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<ChannelStatus>,
}

pub use telegram::ChannelStatus;

struct Shared {
    status: Mutex<AgentStatus>,
    last_sent: Mutex<Option<Instant>>,
    telegram_polled: Mutex<Option<Instant>>,
    /// Since when every Telegram poll here has failed, if they do.
    telegram_failing: Mutex<Option<Instant>>,
    /// When the handler last answered or a channel last took a reply.
    progressed: Mutex<Option<Instant>>,
    wake: Notify,
}

/// The agent of one running machine.
pub struct AgentService {
    shared: Arc<Shared>,
    tasks: Tasks,
}

/// What every piece of work needs.
struct Context {
    me: String,
    name: String,
    store: Arc<Store>,
    awake: Arc<AwakeService>,
    sync: Arc<SyncService>,
    /// With the pool, the topics this machine runs are those it is granted,
    /// each under its topic stamp; without, all of them while awake.
    pool: Option<Arc<PoolService>>,
    handler: Handler,
    handler_timeout: Duration,
    stuck_after: Duration,
    webhook: Option<String>,
    telegram: Option<telegram::Telegram>,
    mcp_url: String,
    http: reqwest::Client,
    shared: Arc<Shared>,
}

impl AgentService {
    /// Starts the loop for `instance`, whose gateway answers MCP at `mcp_url`.
    pub fn start(
        instance: &Instance,
        store: Arc<Store>,
        awake: Arc<AwakeService>,
        sync: Arc<SyncService>,
        pool: Option<Arc<PoolService>>,
        mcp_url: String,
    ) -> AgentService {
        let config = &instance.config.agent;
        let status = AgentStatus {
            handler: config.handler.to_string(),
            webhook: config.webhook.url.clone(),
            telegram: config.telegram.token.is_some().then(ChannelStatus::default),
            ..AgentStatus::default()
        };
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            last_sent: Mutex::new(None),
            telegram_polled: Mutex::new(None),
            telegram_failing: Mutex::new(None),
            progressed: Mutex::new(None),
            wake: Notify::new(),
        });
        // reqwest takes its TLS settings (for an https:// webhook) from
        // rustls's process-wide provider; Roost uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().build().expect("an HTTP client with a TLS provider builds");
        let context = Arc::new(Context {
            me: instance.id.clone(),
            name: instance.config.name.clone(),
            store,
            awake,
            sync,
            pool,
            handler: config.handler.clone(),
            handler_timeout: Duration::from_millis(config.handler_timeout_ms),
            stuck_after: Duration::from_millis(config.stuck_after_ms),
            webhook: config.webhook.url.clone(),
            telegram: telegram::Telegram::new(&config.telegram, http.clone()),
            mcp_url,
            http,
            shared: shared.clone(),
        });
        let limits = Limits { attempts: config.attempts, ..Limits::default() };
        let tasks = Tasks::new();
        if context.telegram.is_some() {
            tasks.spawn(telegram::poll(context.clone()));
        }
        let bot_api = config.telegram.token.is_some().then_some(config.telegram.api_url.as_str());
        let endpoints = reach::endpoints(config.webhook.url.as_deref().into_iter().chain(bot_api));
        if !endpoints.is_empty() {
            tasks.spawn(reach::watch(context.clone(), endpoints));
        }
        tasks.spawn(run(context, limits, tasks.clone()));
        AgentService { shared, tasks }
    }

    pub fn status(&self) -> AgentStatus {
        let mut status = self.shared.status.lock().expect("agent status poisoned").clone();
        let ms_ago = |at: &Mutex<Option<Instant>>| age(at).map(|age| age.as_millis() as u64);
        status.last_sent_ms_ago = ms_ago(&self.shared.last_sent);
        if let Some(telegram) = &mut status.telegram {
            telegram.last_poll_ms_ago = ms_ago(&self.shared.telegram_polled);
        }
        status
    }

    /// A message was recorded: look at the ledger now, not at the next tick.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Ends the loop and whatever it started (a handler is killed; a reply
    /// committed and not confirmed is sent again by the next holder).
    pub async fn stop(&self) {
        if !self.tasks.stop(DB_WAIT).await {
            tracing::warn!("agent tasks still running {DB_WAIT:?} after the stop");
        }
    }
}

impl Drop for AgentService {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// How long ago the moment kept in `at` was, if one was.
fn age(at: &Mutex<Option<Instant>>) -> Option<Duration> {
    at.lock().expect("agent status poisoned").map(|at| at.elapsed())
}

async fn run(context: Arc<Context>, limits: Limits, tasks: Tasks) {
    let mut busy: HashSet<String> = HashSet::new();
    let mut settle = Settle::default();
    let mut log_grew = context.sync.log_grew();
    let (done, mut finished) = mpsc::unbounded_channel::<String>();
    // The epoch this machine holds and since when; when it last asked to
    // hand the role over.
    let mut held: Option<(u64, Instant)> = None;
    let mut handing: Option<Instant> = None;
    // Since when messages have waited without a break.
    let mut waiting_since: Option<Instant> = None;
    loop {
        let wait = if settle.waiting() { SETTLE_POLL } else { TICK };
        let now = clock::now();
        tokio::select! {
            _ = context.shared.wake.notified() => {}
            () = context.gained() => {}
            _ = log_grew.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(topic) = finished.recv() => { busy.remove(&topic); }
        }
        while let Ok(topic) = finished.try_recv() {
            busy.remove(&topic);
        }
        let working = context.awake.working();
        // The heads first: the ledger read after them holds every entry
        // they count.
        let read = |store: &Store| Ok((store.heads()?, store.open_ledger()?, store.agent_counts()?));
        let Some((heads, entries, counts)) = context.on_store("reading the agent ledger", read).await else { continue };
        // The topics this machine works and under which stamp, with the pool;
        // a round's first take-in is then keyed by the pool's generation,
        // which moves whenever a topic comes with a new stamp.
        let owned = context.pool.as_ref().map(|pool| (pool.owned(), pool.generation()));
        let round = match &owned {
            Some((topics, generation)) => (!topics.is_empty()).then_some((*generation, false)),
            None => working.map(|w| (w.epoch, w.forced)),
        };
        let settled = round.is_some_and(|(key, forced)| {
            let idle = settle.started(Some(key)) && counts.queued + counts.unsent == 0;
            idle || {
                let (required, keepers) = context.voters(forced);
                let meet = outbox::Meet { me: &context.me, keepers: &keepers, required: &required };
                settle.ready(key, &heads, &context.reports(), meet, now)
            }
        });
        {
            let mut status = context.shared.status.lock().expect("agent status poisoned");
            status.working = round.is_some();
            status.catching_up = round.is_some() && !settle.started(round.map(|(key, _)| key));
            status.epoch = working.map(|w| w.epoch);
            status.counts = counts;
            status.in_flight = busy.len();
        }
        let waiting = counts.queued + counts.unsent;
        if waiting == 0 {
            waiting_since = None;
        }
        if let Some(w) = working.filter(|_| owned.is_none()) {
            let waited = waiting_since.get_or_insert_with(Instant::now).elapsed();
            let since = match held {
                Some((epoch, since)) if epoch == w.epoch => since,
                _ => held.insert((w.epoch, Instant::now())).1,
            };
            if let Some(why) = context.stuck(since, waiting, waited)
                && handing.is_none_or(|at| at.elapsed() > context.stuck_after)
            {
                handing = Some(Instant::now());
                tasks.spawn(context.clone().hand_over(why));
            }
        }
        if !settled {
            continue;
        }
        // Each piece of work with the epoch it runs under.
        let plan: Vec<(Work, u64)> = match (&owned, working) {
            (Some((topics, _)), _) => topics
                .iter()
                .flat_map(|(topic, stamp)| {
                    let of_topic: Vec<ledger::Entry> =
                        entries.iter().filter(|e| e.message.topic == *topic).cloned().collect();
                    ledger::plan(&of_topic, *stamp, &|topic| busy.contains(topic), limits)
                        .into_iter()
                        .map(|work| (work, *stamp))
                })
                .collect(),
            (None, Some(working)) => ledger::plan(&entries, working.epoch, &|topic| busy.contains(topic), limits)
                .into_iter()
                .map(|work| (work, working.epoch))
                .collect(),
            (None, None) => continue,
        };
        for (work, epoch) in plan.into_iter().take(PARALLEL.saturating_sub(busy.len())) {
            let topic = work.topic().to_string();
            // With the pool, a topic moved since it was planned starts
            // nothing; one that starts is not released until it ends.
            if context.pool.as_ref().is_some_and(|pool| !pool.begin_work(&topic, epoch)) {
                continue;
            }
            busy.insert(topic.clone());
            let (context, done) = (context.clone(), done.clone());
            tasks.spawn(async move {
                context.perform(work, epoch, limits).await;
                if let Some(pool) = &context.pool {
                    pool.end_work(&topic);
                }
                let _ = done.send(topic);
                context.shared.wake.notify_one();
            });
        }
    }
}

impl Context {
    /// Runs `work` on the store off the async threads, bounded by
    /// [`DB_WAIT`]; a failure is recorded as the last error, naming `what`.
    async fn on_store<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Store) -> Result<T, roost_store::StoreError> + Send + 'static,
    ) -> Option<T> {
        let store = self.store.clone();
        match roost_tasks::blocking(what, DB_WAIT, move || work(&store)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.failed(format!("{what}: {e}"));
                None
            }
            Err(e) => {
                self.failed(e.to_string());
                None
            }
        }
    }

    fn failed(&self, why: String) {
        tracing::warn!(%why, "agent");
        self.shared.status.lock().expect("agent status poisoned").last_error = Some(why);
    }

    /// Why this machine, holding the role since `since` with `waiting`
    /// messages open for `waited`, should hand it over ([`liveness::stuck`]).
    fn stuck(&self, since: Instant, waiting: usize, waited: Duration) -> Option<String> {
        let progress = liveness::Progress {
            held_for: since.elapsed(),
            since_progress: age(&self.shared.progressed),
            waiting,
            waiting_for: waited,
            polls_failing_for: age(&self.shared.telegram_failing),
        };
        liveness::stuck(&progress, self.stuck_after)
    }

    /// Gives the role to a live standby, saying why; this machine stays
    /// eligible. Without a standby it keeps the role and says so.
    async fn hand_over(self: Arc<Self>, why: String) {
        self.failed(format!("handing the role over: {why}"));
        match self.awake.hand_over(why.clone()).await {
            Ok(settled) => tracing::warn!(%settled, %why, "handed the role over"),
            Err(e) => self.failed(format!("cannot hand the role over ({why}): {e}")),
        }
    }

    fn progressed(&self) {
        *self.shared.progressed.lock().expect("agent status poisoned") = Some(Instant::now());
    }

    fn telegram_status(&self, change: impl FnOnce(&mut ChannelStatus)) {
        if let Some(telegram) = &mut self.shared.status.lock().expect("agent status poisoned").telegram {
            change(telegram);
        }
    }

    /// What each machine with a live session that keeps the log last
    /// reported, on the lease's clock.
    fn reports(&self) -> Vec<outbox::Report> {
        let now = clock::now();
        self.sync
            .connected_holdings()
            .into_iter()
            .map(|(peer, heads, age)| outbox::Report { peer, heads, at: now.saturating_sub(age) })
            .collect()
    }

    /// The other voters a new holder's first round waits to meet, and the
    /// voters a reply's commit must reach a majority of.
    fn voters(&self, forced: bool) -> (Vec<String>, Vec<String>) {
        let lease = self.awake.status();
        let seen: Vec<outbox::Seen> =
            lease.peers.iter().map(|p| outbox::Seen { id: p.id.clone(), live: p.live, witness: p.witness }).collect();
        (
            outbox::voters_to_meet(&self.me, &lease.voter_ids, &seen),
            outbox::keepers(&self.me, &lease.voter_ids, &seen, forced),
        )
    }

    /// Resolves when the pool grants this machine a topic (never without
    /// the pool).
    async fn gained(&self) {
        match &self.pool {
            Some(pool) => pool.gained().await,
            None => std::future::pending().await,
        }
    }

    /// Where this machine may work `topic` now: under its topic stamp with
    /// the pool, else (and for work of no topic) under the lease while awake.
    fn working_on(&self, topic: Option<&str>) -> Option<Working> {
        match (&self.pool, topic) {
            (Some(pool), Some(topic)) => pool.working(topic),
            _ => self.awake.working(),
        }
    }

    /// Returns once this machine no longer works `topic` under `epoch`: a
    /// request raced against it is dropped within [`TICK`] of the role (or
    /// the topic) moving.
    async fn role_ends(&self, topic: Option<&str>, epoch: u64) {
        while self.working_on(topic).is_some_and(|w| w.epoch == epoch) {
            tokio::time::sleep(TICK).await;
        }
    }

    /// Sleeps `wait`, or less if the work on `topic` at `epoch` ends first.
    async fn sleep_while_working(&self, wait: Duration, topic: Option<&str>, epoch: u64) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.role_ends(topic, epoch) => {}
        }
    }

    /// Still working `topic` at `epoch`, with more than `margin` of the
    /// lease (or the topic's grant) left.
    fn still_working(&self, topic: Option<&str>, epoch: u64, margin: Duration) -> Option<Working> {
        self.working_on(topic).filter(|w| w.epoch == epoch && outbox::may_send(clock::now(), w.until, margin))
    }

    async fn write(&self, topic: &str, reply: Reply, epoch: u64) -> bool {
        if self.still_working(Some(topic), epoch, Duration::ZERO).is_none() {
            return false;
        }
        self.on_store("writing a reply record", move |store| store.write_reply(&reply, epoch)).await.is_some()
    }

    async fn perform(&self, work: Work, epoch: u64, limits: Limits) {
        match work {
            Work::Run { message, attempt } => {
                let claim = Reply::claimed(&message.id, attempt, None, &self.me);
                if !self.write(&message.topic, claim.clone(), epoch).await {
                    return;
                }
                let topic = message.topic.clone();
                let Some(entries) = self.on_store("reading the topic", move |store| store.ledger(Some(&topic))).await
                else {
                    return;
                };
                let (history, count) = ledger::context(&entries, &message.id, limits);
                match self.answer(&message, &history, count, epoch).await {
                    Ok(text) => {
                        self.progressed();
                        let replied = claim.replied(redact(&text), &self.me);
                        if self.write(&message.topic, replied.clone(), epoch).await
                            && self.held_by_peers(Some(&message.topic), epoch).await
                        {
                            self.deliver(&message, replied, epoch, epoch).await;
                        }
                    }
                    Err(why) => {
                        self.failed(format!("the handler failed on message {} (run {attempt}): {why}", message.id));
                        let failed = Reply::claimed(&message.id, attempt, Some(why), &self.me);
                        self.write(&message.topic, failed, epoch).await;
                    }
                }
            }
            Work::Send { message, reply, epoch: committed } => self.deliver(&message, reply, committed, epoch).await,
            Work::Fail { message, reply } => {
                self.write(&message.topic, reply.failed(&self.me), epoch).await;
            }
        }
    }

    /// Waits until a majority of the voters that keep the log hold this
    /// machine's log as it is now (the reply just committed with it), so
    /// that whichever machine holds the role next sees the reply and sends
    /// it again as it is, never a second one ([`outbox::held`]). False when
    /// the role is lost first.
    async fn held_by_peers(&self, topic: Option<&str>, epoch: u64) -> bool {
        let Some(mine) = self.on_store("reading the log's head", |store| store.heads()).await else { return false };
        let ours: Heads = mine.into_iter().filter(|(origin, _)| *origin == self.me).collect();
        loop {
            let Some(working) = self.still_working(topic, epoch, SEND_MARGIN) else { return false };
            let (_, keepers) = self.voters(working.forced);
            if outbox::held(&self.me, &ours, &keepers, &self.reports()) {
                return true;
            }
            tokio::time::sleep(HELD_POLL).await;
        }
    }

    /// The handler's reply to `message`.
    async fn answer(
        &self,
        message: &Message,
        history: &[ledger::Turn],
        count: usize,
        epoch: u64,
    ) -> Result<String, String> {
        if let Some(pool) = &self.pool
            && let Some(said) = pool.answer_move(&message.topic, &message.text, &message.received_by).await
        {
            return Ok(said);
        }
        let argv = match &self.handler {
            Handler::Builtin(_) => return Ok(ledger::echo(&message.text, &message.topic, count)),
            Handler::Program(argv) => argv,
        };
        let input = json!({
            "message": message,
            "history": history,
            "mcp_url": self.mcp_url,
            "epoch": epoch,
            "machine": self.name,
        });
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("ROOST_MCP_URL", &self.mcp_url)
            .env("ROOST_TOPIC", &message.topic)
            .env("ROOST_EPOCH", epoch.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let run = async move {
            // A handler that does not read its input still gets to answer.
            let _ = stdin.write_all(input.to_string().as_bytes()).await;
            drop(stdin);
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout(self.handler_timeout, run).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(format!("{} failed: {e}", argv[0])),
            Err(_) => return Err(format!("no reply within {:?}; the handler was killed", self.handler_timeout)),
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr.lines().next().unwrap_or("").trim();
            return Err(format!("{} exited with {}: {said}", argv[0], output.status));
        }
        let reply =
            String::from_utf8(output.stdout).map_err(|_| format!("{} wrote a reply that is not UTF-8", argv[0]))?;
        let reply = reply.trim_end_matches('\n').to_string();
        if reply.trim().is_empty() {
            return Err(format!("{} wrote no reply", argv[0]));
        }
        Ok(reply)
    }

    /// Sends a committed reply (committed under `committed`) while this
    /// machine works under `epoch`, retrying with backoff, then commits that
    /// it was sent.
    async fn deliver(&self, message: &Message, reply: Reply, committed: u64, epoch: u64) {
        if message.channel == CLI_CHANNEL {
            // `roost agent say` reads the reply from the ledger.
            self.write(&message.topic, reply.sent(&self.me), epoch).await;
            return self.sent(message);
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(working) = self.still_working(Some(&message.topic), epoch, SEND_MARGIN) else { return };
            let bound = working.until.saturating_sub(clock::now()).min(SEND_WAIT);
            let retry_after = match self.send_once(message, &reply, committed, bound).await {
                Answer::Done(()) => {
                    self.write(&message.topic, reply.sent(&self.me), epoch).await;
                    return self.sent(message);
                }
                Answer::RetryAfter(after) => after,
                Answer::Refused(why) => {
                    self.failed(format!("{why}; the reply is marked failed"));
                    self.write(&message.topic, reply.refused(why, &self.me), epoch).await;
                    return;
                }
                Answer::Failed(why) => {
                    self.failed(why);
                    backoff
                }
            };
            self.sleep_while_working(retry_after, Some(&message.topic), epoch).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    /// One attempt at handing `reply` to its channel, bounded by `bound`.
    async fn send_once(&self, message: &Message, reply: &Reply, committed: u64, bound: Duration) -> Answer<()> {
        if message.channel == TELEGRAM {
            return match &self.telegram {
                Some(telegram) => {
                    match telegram.send(message, reply.text.as_deref().unwrap_or_default(), bound).await {
                        Answer::Failed(why) => {
                            Answer::Failed(format!("Telegram did not take reply {}: {why}", reply.key))
                        }
                        Answer::Refused(why) => Answer::Refused(format!("Telegram refused reply {}: {why}", reply.key)),
                        answer => answer,
                    }
                }
                None => Answer::Failed("a reply to a Telegram message waits: no [agent.telegram] token is set".into()),
            };
        }
        let Some(url) = &self.webhook else {
            return Answer::Failed(format!(
                "a reply to a {} message waits: no [agent.webhook] url is set",
                message.channel
            ));
        };
        let body = json!({
            "channel": message.channel,
            "topic": message.topic,
            "message_id": message.message_id,
            "reply_index": 0,
            "text": reply.text,
            "epoch": committed,
            "machine": reply.machine,
        });
        let request = self.http.post(url).header("Idempotency-Key", &reply.key).json(&body).timeout(bound);
        match request.send().await {
            Ok(response) if response.status().is_success() => Answer::Done(()),
            Ok(response) => {
                Answer::Failed(format!("the webhook answered {} to reply {}", response.status(), reply.key))
            }
            Err(e) => Answer::Failed(format!("the webhook did not take reply {}: {e}", reply.key)),
        }
    }

    fn sent(&self, message: &Message) {
        if let Some(age) = roost_store::age_of(&message.received_at) {
            roost_metrics::metrics().agent_reply_seconds.observe(age.as_secs_f64());
        }
        *self.shared.last_sent.lock().expect("agent status poisoned") = Some(Instant::now());
        self.progressed();
    }
}
