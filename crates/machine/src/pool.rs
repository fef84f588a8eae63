//! The pool's shell: topics run on several machines, one owner each.
//!
//! Every machine with `[pool] enabled` asks the awake machine (the
//! coordinator) every [`ASK_EVERY`] for the topics placed on it, and runs
//! those it is granted under their topic stamps ([`PoolService::working`]);
//! the agent's loop plans nothing else. The coordinator keeps the grants,
//! the machines it heard and the moves in a `roost_pool::Coordination`
//! (memory: a new coordinator settles first), and
//! the placements, pins and nicknames as replicated agent state under its
//! lease epoch (`pool/placement/<topic>`, `pool/nickname/<machine>`), so the
//! next coordinator starts from them and every machine reads the nicknames.
//!
//! Everything the pool answers goes through [`PoolService::call`], one JSON
//! operation at a time (`ask`, `status`, `machine`, `placement`,
//! `transfer`, `nickname`): on the coordinator it runs here; elsewhere it is forwarded
//! to the coordinator as the MCP tool `roost_pool` over federation. A
//! refusal is an answer `{"error", "status"}`, so its HTTP status survives
//! the forwarding.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use roost_awake::{AwakeService, Working, clock};
use roost_federation::client::Connections;
use roost_instance::Instance;
use roost_lease::Tenure;
use roost_pool::{
    Coordination, Grant, Member, MoveRequest, PLACEMENT_PREFIX, Placed, Settings, Timing, Transfer, TransferRefused,
};
use roost_store::Store;
use roost_tasks::Tasks;

/// How often a member asks the coordinator for its topics.
const ASK_EVERY: Duration = Duration::from_millis(200);
/// One ask, forwarded operation or store access is bounded by this.
const CALL_WAIT: Duration = Duration::from_secs(2);
/// The coordinator waits this much longer than a grant before re-placing.
const MARGIN_MS: u64 = 500;
const NICKNAME: &str = "pool/nickname/";
/// The MCP tool the pool answers to on every machine.
pub const TOOL: &str = "roost_pool";
/// Why a machine without the pool answers nothing of it.
pub const DISABLED: &str = "the pool is off on this machine: every topic runs on the awake machine; set [pool] enabled = true in config.toml to turn it on";

/// A refusal: what was wrong and the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolError {
    pub status: u16,
    pub message: String,
}

impl PoolError {
    fn new(status: u16, message: impl Into<String>) -> PoolError {
        PoolError { status, message: message.into() }
    }

    /// The answer that carries it, to travel as a tool result.
    pub fn to_value(&self) -> Value {
        json!({"error": self.message, "status": self.status})
    }

    /// The refusal a tool result carries, if it is one.
    pub fn from_value(value: &Value) -> Option<PoolError> {
        let message = value.get("error")?.as_str()?.to_string();
        let status = value.get("status").and_then(Value::as_u64).unwrap_or(502) as u16;
        Some(PoolError { status, message })
    }
}

/// An `ask`: what a member holds and releases, and when it asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ask {
    capacity: u32,
    asked_at_ms: u64,
    wall_ms: i64,
    releases: Vec<(String, u64)>,
}

/// The coordinator's answer to an `ask`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Answer {
    grants: Vec<(String, u64, u64)>,
    drop: Vec<(String, u64)>,
}

struct Inner {
    me: String,
    /// `[pool] capacity`, told to the coordinator at every ask.
    capacity: u32,
    settings: Settings,
    store: Arc<Store>,
    awake: Arc<AwakeService>,
    connections: Connections,
    member: Mutex<Member>,
    coordinating: Mutex<Option<Coordination>>,
    /// Woken when this machine gains a topic.
    gained: Notify,
    /// Wakes the loop to ask at once: a moved topic may be released.
    ask_now: Notify,
    /// Moves whenever the log grows (every commit, local or received).
    log_grew: Mutex<watch::Receiver<u64>>,
    /// The ledger's topics as last read.
    topics: Mutex<Vec<String>>,
}

/// The pool on one running machine.
pub struct PoolService {
    inner: Arc<Inner>,
    tasks: Tasks,
}

impl PoolService {
    /// Starts asking for topics, and coordinating while awake.
    pub fn start(
        instance: &Instance,
        store: Arc<Store>,
        awake: Arc<AwakeService>,
        sync: Arc<roost_sync::SyncService>,
    ) -> PoolService {
        let config = &instance.config.pool;
        // The clocks drift no more than the lease assumes.
        let drift_ppm = u64::from(Tenure::DEFAULT_DRIFT_PPM);
        let settings = Settings {
            timing: Timing { lease_ms: config.lease_ms, margin_ms: MARGIN_MS, drift_ppm },
            clock_bound_ms: config.clock_bound_ms as i64,
            transfer_interval_ms: config.transfer_interval_ms,
        };
        let log_grew = sync.log_grew();
        let inner = Arc::new(Inner {
            me: instance.id.clone(),
            capacity: config.capacity,
            settings,
            store,
            awake,
            connections: Connections::new(instance, Arc::new(move || Some(sync.clone()))),
            member: Mutex::new(Member::default()),
            coordinating: Mutex::new(None),
            gained: Notify::new(),
            ask_now: Notify::new(),
            log_grew: Mutex::new(log_grew),
            topics: Mutex::new(Vec::new()),
        });
        let tasks = Tasks::new();
        tasks.spawn(run(inner.clone()));
        PoolService { inner, tasks }
    }

    /// The topic stamp this machine works `topic` under now, and until when.
    pub fn working(&self, topic: &str) -> Option<Working> {
        let member = self.inner.member.lock().expect("pool member poisoned");
        let (epoch, until) = member.acting(topic, now_ms())?;
        Some(Working { epoch, until: Duration::from_millis(until), forced: false })
    }

    /// Every topic this machine works now, with its stamp.
    pub fn owned(&self) -> Vec<(String, u64)> {
        let member = self.inner.member.lock().expect("pool member poisoned");
        member.owned(now_ms()).into_iter().map(|(t, e)| (t.to_string(), e)).collect()
    }

    /// Changes each time this machine takes a new topic epoch: its first
    /// round after must take in what the other machines hold.
    pub fn generation(&self) -> u64 {
        self.inner.member.lock().expect("pool member poisoned").generation()
    }

    /// Starts a piece of work on `topic` under `stamp`, if this machine
    /// still owns it under that stamp: until [`PoolService::end_work`], the
    /// topic is not released, even once moved.
    pub fn begin_work(&self, topic: &str, stamp: u64) -> bool {
        self.inner.member.lock().expect("pool member poisoned").start(topic, stamp, now_ms())
    }

    /// The work [`PoolService::begin_work`] began on `topic` is over.
    pub fn end_work(&self, topic: &str) {
        let mut member = self.inner.member.lock().expect("pool member poisoned");
        member.finish(topic);
        if member.has_releasable() {
            self.inner.ask_now.notify_one();
        }
    }

    /// Resolves when this machine gains a topic.
    pub async fn gained(&self) {
        self.inner.gained.notified().await;
    }

    /// Runs one operation of the pool (`op` in `args`), from `caller` (a
    /// machine of the chain, or `None` for a person through this machine's
    /// API or MCP): here on the coordinator, else forwarded to it.
    pub async fn call(&self, caller: Option<&str>, args: Map<String, Value>) -> Value {
        match self.inner.call(caller, args).await {
            Ok(value) => value,
            Err(e) => e.to_value(),
        }
    }

    /// The reply to a message of `topic` whose text asks to move the
    /// conversation ("move this to the laptop", "move it back here"), once
    /// the transfer ran or was refused; None for any other message, which
    /// is the handler's. "Here" is the machine the message reached.
    pub async fn answer_move(&self, topic: &str, text: &str, received_by: &str) -> Option<String> {
        // Not phrased as a move with any names at all: the handler's, with
        // no need to read the machines.
        roost_pool::parse_move(text, &[], "")?;
        let machines = match self.inner.nicknames().await {
            Ok(machines) => machines,
            Err(e) => return Some(format!("Cannot tell which machines there are to move this to: {}", e.message)),
        };
        let here = machines.get(received_by).or_else(|| machines.get(&self.inner.me)).map(|(_, n)| n.as_str())?;
        let nicknames: Vec<&str> = machines.values().map(|(_, nickname)| nickname.as_str()).collect();
        let asked = match roost_pool::parse_move(text, &nicknames, here)? {
            MoveRequest::To(nickname) => nickname,
            MoveRequest::NoSuchMachine(name) => {
                return Some(format!("No machine is called {name:?}; the machines are {}.", nicknames.join(", ")));
            }
        };
        let mut args = Map::new();
        args.insert("op".into(), "transfer".into());
        args.insert("topic".into(), topic.into());
        args.insert("to".into(), asked.clone().into());
        // Boxed: the agent's task holding this future stays shallow enough to lay out.
        Some(match Box::pin(self.inner.call(None, args)).await {
            Ok(done) if done["moved"] == true => format!("Moved this conversation to {asked}."),
            Ok(_) => format!("This conversation runs on {asked}."),
            // A chat has no confirmation: say where one is given.
            Err(e) if e.status == 409 => format!(
                "This conversation stays where it is: {asked} is offline. To move it anyway, run \
                 `roost pool move {topic} {asked} --confirm` or use the Nest's Pool page."
            ),
            Err(e) => format!("This conversation stays where it is: {}.", e.message),
        })
    }

    pub async fn stop(&self) {
        if !self.tasks.stop(CALL_WAIT).await {
            tracing::warn!("pool tasks still running {CALL_WAIT:?} after the stop");
        }
    }
}

impl Drop for PoolService {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// Milliseconds of CLOCK_BOOTTIME, the lease's clock.
fn now_ms() -> u64 {
    clock::now().as_millis() as u64
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn run(inner: Arc<Inner>) {
    loop {
        inner.coordinate().await;
        inner.ask().await;
        tokio::select! {
            () = tokio::time::sleep(ASK_EVERY) => {}
            () = inner.ask_now.notified() => {}
        }
    }
}

impl Inner {
    /// The awake machine's id and lease epoch, if one is known.
    fn coordinator(&self) -> Option<(String, u64)> {
        let lease = self.awake.status();
        Some((lease.holder?.id, lease.epoch?))
    }

    /// Keeps the coordinator's state while this machine is awake: started
    /// from the replicated placements when it takes the role, dropped when
    /// it loses it; places topics that have no machine or whose machine is
    /// gone.
    async fn coordinate(&self) {
        let Some(working) = self.awake.working() else {
            *self.coordinating.lock().expect("pool coordinator poisoned") = None;
            return;
        };
        let fresh = self.coordinating.lock().expect("pool coordinator poisoned").as_ref().map(|c| c.lease_epoch)
            != Some(working.epoch);
        if fresh {
            let placements = match self.on_store(|s| s.agent_states(PLACEMENT_PREFIX)).await {
                Ok(states) => states.iter().filter_map(|s| Placed::recorded(&s.key, &s.value)).collect(),
                Err(_) => return,
            };
            *self.coordinating.lock().expect("pool coordinator poisoned") =
                Some(Coordination::new(self.settings, working.epoch, now_ms(), placements));
        }
        // The ledger's topics, read again only once the log has grown:
        // seen first, so a commit during the read is read next time.
        let grew = {
            let mut log_grew = self.log_grew.lock().expect("pool log watch poisoned");
            let grew = log_grew.has_changed().unwrap_or(true);
            log_grew.borrow_and_update();
            grew
        };
        if grew || fresh {
            let Ok(read) = self.on_store(|s| s.topics()).await else { return };
            *self.topics.lock().expect("pool topics poisoned") = read.into_iter().map(|(topic, _, _)| topic).collect();
        }
        let topics = self.topics.lock().expect("pool topics poisoned").clone();
        let writes = {
            let mut guard = self.coordinating.lock().expect("pool coordinator poisoned");
            let Some(c) = guard.as_mut() else { return };
            c.place_topics(topics.iter().map(String::as_str), now_ms())
        };
        for (topic, placed) in writes {
            self.record_placement(&topic, &placed, working.epoch).await;
        }
    }

    async fn record_placement(&self, topic: &str, placed: &Placed, epoch: u64) {
        let (key, value) = placed.record(topic);
        if let Err(e) = self.on_store(move |s| s.write_agent_state(&key, &value, epoch).map(drop)).await {
            tracing::warn!(%topic, error = %e.message, "could not record a placement");
        }
    }

    /// Asks the coordinator for this machine's topics and takes what it
    /// answers.
    async fn ask(&self) {
        let releases = {
            let mut member = self.member.lock().expect("pool member poisoned");
            member.forget_lapsed(now_ms());
            member.releasable()
        };
        let ask = Ask { capacity: self.capacity, asked_at_ms: now_ms(), wall_ms: wall_ms(), releases };
        let Some((coordinator, _)) = self.coordinator() else { return };
        let answered = if coordinator == self.me {
            self.answer_ask(&self.me, ask)
        } else {
            let mut args = serde_json::to_value(&ask).expect("serializes").as_object().cloned().unwrap_or_default();
            args.insert("op".into(), "ask".into());
            self.forward(&coordinator, args).await
        };
        let answer = match answered.and_then(|v| {
            serde_json::from_value::<Answer>(v).map_err(|e| PoolError::new(502, format!("a malformed grant: {e}")))
        }) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %e.message, "the coordinator did not answer the pool's ask");
                return;
            }
        };
        let granted: Vec<(String, u64)> =
            answer.grants.iter().map(|(topic, epoch, _)| (topic.clone(), *epoch)).collect();
        let raise = move |s: &Store| {
            granted.iter().try_for_each(|(topic, epoch)| s.observe_topic_epoch(topic, *epoch).map(drop))
        };
        if let Err(e) = self.on_store(raise).await {
            tracing::warn!(error = %e.message, "could not raise the granted topics' fences");
            return;
        }
        let mut member = self.member.lock().expect("pool member poisoned");
        let before = member.generation();
        for (topic, epoch, asked_at_ms) in answer.grants {
            member.granted(&Grant { topic, owner: self.me.clone(), epoch, asked_at_ms }, &self.settings.timing);
        }
        for (topic, epoch) in answer.drop {
            member.drop_topic(&topic, epoch);
        }
        // A moved topic with nothing in flight goes back to the coordinator
        // at once, so its new owner need not wait a round.
        if member.has_releasable() {
            self.ask_now.notify_one();
        }
        if member.generation() != before {
            self.gained.notify_one();
        }
    }

    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, roost_store::StoreError> + Send + 'static,
    ) -> Result<T, PoolError> {
        let store = self.store.clone();
        match roost_tasks::blocking("the pool's store access", CALL_WAIT, move || work(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(PoolError::new(500, e.to_string())),
            Err(e) => Err(PoolError::new(503, e.to_string())),
        }
    }

    async fn call(&self, caller: Option<&str>, args: Map<String, Value>) -> Result<Value, PoolError> {
        let op = args.get("op").and_then(Value::as_str).unwrap_or_default().to_string();
        if op == "ask" && caller.is_none() {
            return Err(PoolError::new(403, "only the chain's machines ask for topics"));
        }
        let Some((coordinator, epoch)) = self.coordinator() else {
            return Err(PoolError::new(503, "no machine is awake to coordinate the pool; try again shortly"));
        };
        if coordinator != self.me {
            if caller.is_some() {
                return Err(PoolError::new(
                    503,
                    format!("this machine no longer coordinates the pool; {coordinator} does"),
                ));
            }
            return self.forward(&coordinator, args).await;
        }
        match op.as_str() {
            "ask" => {
                let from = caller.unwrap_or(&self.me);
                let ask: Ask = serde_json::from_value(Value::Object(args))
                    .map_err(|e| PoolError::new(400, format!("a malformed ask: {e}")))?;
                self.answer_ask(from, ask)
            }
            "status" => self.status(epoch).await,
            "machine" => {
                let (id, _) = self.resolve(&text(&args, "machine")?).await?;
                let status = self.status(epoch).await?;
                let mut machines = status["machines"].as_array().into_iter().flatten();
                machines.find(|m| m["id"] == id.as_str()).cloned().ok_or_else(|| {
                    PoolError::new(404, format!("{id} left the pool just now; `roost pool` lists the machines"))
                })
            }
            "placement" => {
                let topic = text(&args, "topic")?;
                self.placement(&topic, &coordinator).await
            }
            "transfer" => {
                let topic = text(&args, "topic")?;
                let to = text(&args, "to")?;
                let confirm = args.get("confirm").and_then(Value::as_bool).unwrap_or(false);
                self.transfer(&topic, &to, confirm, epoch).await
            }
            "nickname" => {
                let machine = text(&args, "machine")?;
                let nickname = text(&args, "nickname")?;
                self.set_nickname(&machine, &nickname, epoch).await
            }
            other => Err(PoolError::new(
                400,
                format!("unknown pool operation {other:?}; use status, machine, placement, transfer or nickname"),
            )),
        }
    }

    /// Forwards an operation to the coordinator over federation.
    async fn forward(&self, coordinator: &str, args: Map<String, Value>) -> Result<Value, PoolError> {
        let id = coordinator.to_string();
        let peer = self.on_store(move |s| s.instance(&id)).await.map_err(|_| {
            PoolError::new(503, format!("the coordinator {coordinator} is not in this machine's registry"))
        })?;
        match self.connections.call(&peer, TOOL, args, CALL_WAIT).await {
            Ok(value) => match PoolError::from_value(&value) {
                Some(refused) => Err(refused),
                None => Ok(value),
            },
            Err(e) => Err(PoolError::new(502, format!("the coordinator {} did not answer: {e}", peer.name))),
        }
    }

    fn answer_ask(&self, from: &str, ask: Ask) -> Result<Value, PoolError> {
        let mut guard = self.coordinating.lock().expect("pool coordinator poisoned");
        let c = guard.as_mut().ok_or_else(|| PoolError::new(503, "the coordinator is starting; ask again"))?;
        // A coordinator grants only while its lease lasts: once the role
        // may have moved, the next coordinator's settling covers only the
        // grants made before.
        if self.awake.working().map(|w| w.epoch) != Some(c.lease_epoch) {
            return Err(PoolError::new(503, "this machine no longer coordinates the pool; ask again"));
        }
        let asked = roost_pool::Ask {
            capacity: ask.capacity,
            asked_at_ms: ask.asked_at_ms,
            clock_offset_ms: ask.wall_ms - wall_ms(),
            releases: ask.releases,
        };
        let answer = c.ask(from, &asked, now_ms());
        let grants = answer.grants.into_iter().map(|g| (g.topic, g.epoch, g.asked_at_ms)).collect();
        Ok(serde_json::to_value(Answer { grants, drop: answer.drop }).expect("serializes"))
    }

    /// Every machine's nickname: the one set, else the first label of its
    /// name, lowercase ("home.lan" is "home").
    async fn nicknames(&self) -> Result<BTreeMap<String, (String, String)>, PoolError> {
        let (machines, set) = self.on_store(|s| Ok((s.instances()?, s.agent_states(NICKNAME)?))).await?;
        let set: BTreeMap<String, String> =
            set.into_iter().filter_map(|s| Some((s.key.strip_prefix(NICKNAME)?.to_string(), s.value))).collect();
        Ok(machines
            .into_iter()
            .filter(|m| !m.is_revoked())
            .map(|m| {
                let nickname = set.get(&m.id).cloned().unwrap_or_else(|| default_nickname(&m.name));
                (m.id, (m.name, nickname))
            })
            .collect())
    }

    /// The machine `to` names: a nickname, a name or an id.
    async fn resolve(&self, to: &str) -> Result<(String, String), PoolError> {
        let wanted = to.trim().to_lowercase();
        let machines = self.nicknames().await?;
        machines
            .iter()
            .find(|(id, (name, nickname))| **id == to.trim() || *nickname == wanted || name.to_lowercase() == wanted)
            .map(|(id, (_, nickname))| (id.clone(), nickname.clone()))
            .ok_or_else(|| PoolError::new(404, format!("no machine is called {to:?}; `roost pool` lists them")))
    }

    async fn status(&self, epoch: u64) -> Result<Value, PoolError> {
        let names = self.nicknames().await?;
        let now = now_ms();
        let guard = self.coordinating.lock().expect("pool coordinator poisoned");
        let c = guard.as_ref().ok_or_else(|| PoolError::new(503, "the coordinator is starting; ask again"))?;
        let bound = self.settings.clock_bound_ms;
        let candidates = c.candidates(now);
        let machines: Vec<Value> = names
            .iter()
            .map(|(id, (name, nickname))| {
                let seen = candidates.iter().find(|k| k.id == *id);
                let excluded = seen.map_or(Some(roost_pool::Excluded::Offline), |k| k.excluded(bound));
                json!({
                    "id": id,
                    "name": name,
                    "nickname": nickname,
                    "role": if *id == self.me { "coordinator" } else { "member" },
                    "capacity": seen.map(|k| k.capacity),
                    "load": c.load(id),
                    "online": seen.is_some_and(|k| k.online),
                    "clock_offset_ms": seen.map(|k| k.clock_offset_ms),
                    "health": match excluded {
                        None => "ok",
                        Some(roost_pool::Excluded::Offline) => "offline",
                        Some(roost_pool::Excluded::NoCapacity) => "no capacity",
                        Some(roost_pool::Excluded::Quarantined) => "quarantined",
                    },
                })
            })
            .collect();
        let topics: Vec<Value> = c
            .placements()
            .iter()
            .map(|(topic, p)| {
                let owner = c.owner(topic, now);
                json!({"topic": topic, "machine": p.machine, "pinned": p.pinned,
                       "owner": owner.map(|o| o.0), "epoch": owner.map(|o| o.1)})
            })
            .collect();
        Ok(json!({"coordinator": self.me, "epoch": epoch, "machines": machines, "topics": topics}))
    }

    async fn placement(&self, topic: &str, coordinator: &str) -> Result<Value, PoolError> {
        let names = self.nicknames().await?;
        let guard = self.coordinating.lock().expect("pool coordinator poisoned");
        let c = guard.as_ref().ok_or_else(|| PoolError::new(503, "the coordinator is starting; ask again"))?;
        let placed = c.placement(topic);
        let owner = c.owner(topic, now_ms());
        let reason = match placed {
            Some(p) if p.pinned => "pinned",
            Some(_) => "placed",
            None => "unowned",
        };
        let machine = placed.map(|p| p.machine.clone());
        let nickname = machine.as_ref().and_then(|m| names.get(m)).map(|(_, n)| n.clone());
        Ok(json!({"topic": topic, "machine": machine, "nickname": nickname, "coordinator": coordinator,
                  "reason": reason, "epoch": owner.map(|o| o.1)}))
    }

    async fn transfer(&self, topic: &str, to: &str, confirm: bool, epoch: u64) -> Result<Value, PoolError> {
        let (machine, nickname) = self.resolve(to).await?;
        let wanted = topic.to_string();
        let known = self.on_store(move |s| Ok(s.topics()?.into_iter().any(|(t, _, _)| t == wanted))).await?;
        if !known {
            return Err(PoolError::new(
                404,
                format!("no conversation is called {topic:?}; `roost agent topics` lists them"),
            ));
        }
        let moved = {
            let mut guard = self.coordinating.lock().expect("pool coordinator poisoned");
            let c = guard.as_mut().ok_or_else(|| PoolError::new(503, "the coordinator is starting; ask again"))?;
            c.transfer(topic, &machine, confirm, now_ms())
        };
        let from = match moved {
            Ok(Transfer::Already { pinned }) => {
                return Ok(json!({"topic": topic, "from": machine, "to": machine, "nickname": nickname,
                                 "moved": false, "pinned": pinned,
                                 "said": format!("{topic} already runs on {nickname}")}));
            }
            Ok(Transfer::Moved { from }) => from,
            Err(TransferRefused::TooSoon { ago_ms }) => {
                let interval = self.settings.transfer_interval_ms;
                return Err(PoolError::new(
                    429,
                    format!("{topic} moved {ago_ms} ms ago; a topic moves at most once every {interval} ms"),
                ));
            }
            Err(TransferRefused::Offline) => {
                return Err(PoolError::new(
                    409,
                    format!("{nickname} is offline: the topic would wait until it is back; confirm to move it anyway"),
                ));
            }
        };
        self.record_placement(topic, &Placed { machine: machine.clone(), pinned: true }, epoch).await;
        Ok(json!({"topic": topic, "from": from, "to": machine, "nickname": nickname, "moved": true, "pinned": true,
                  "said": format!("moved {topic} to {nickname}")}))
    }

    async fn set_nickname(&self, machine: &str, nickname: &str, epoch: u64) -> Result<Value, PoolError> {
        let nickname = nickname.trim().to_lowercase();
        let valid = (1..=32).contains(&nickname.len())
            && nickname.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid || nickname == "here" {
            return Err(PoolError::new(
                400,
                format!("{nickname:?} cannot be a nickname: use 1 to 32 letters, digits or '-', not \"here\""),
            ));
        }
        let (id, _) = self.resolve(machine).await?;
        let taken = self.nicknames().await?.into_iter().any(|(other, (_, n))| other != id && n == nickname);
        if taken {
            return Err(PoolError::new(409, format!("another machine is already called {nickname:?}")));
        }
        let (key, value) = (format!("{NICKNAME}{id}"), nickname.clone());
        self.on_store(move |s| s.write_agent_state(&key, &value, epoch).map(drop)).await?;
        Ok(json!({"machine": id, "nickname": nickname}))
    }
}

/// A machine's nickname until one is set: its name up to the first dot,
/// lowercase, as a person says it.
fn default_nickname(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_lowercase()
}

fn text(args: &Map<String, Value>, name: &str) -> Result<String, PoolError> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| PoolError::new(400, format!("`{name}` is missing; give it as a string")))
}
