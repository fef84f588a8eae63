//! The awake role on a real machine: the thin shell around `roost-lease`.
//!
//! One task, the driver, owns the lease [`Node`]. It feeds it ticks every
//! [`TICK`], lease messages from peers (QUIC datagrams, [`link`]), commands
//! (`roost wakeup`, `roost leave`) and facts about the local log, each with
//! the time from [`clock`], and performs the actions the node returns: it
//! sends messages, stores the voter state before sending anything after it
//! ([`state`]), records role changes, and answers the commands. Every wait it
//! makes on the disk or the database is bounded, and the status it publishes
//! carries the age of its last turn, so `/health` shows a stalled loop.

pub mod clock;
pub mod events;
mod link;
mod state;
pub mod status;
pub mod words;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iroh::Endpoint;
use serde_json::json;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use roost_core::protocol::Heads;
use roost_instance::Instance;
use roost_lease::{
    Action, Config, Effect, Envelope, ExternalAnswer, ExternalRequest, Grantor, Input, Node, NodeId, Shell, Takeover,
    Tenure, View,
};
use roost_store::{InstanceEntry, Store};
use roost_sync::{PeerState, SyncService};
use roost_tasks::Tasks;

pub use iroh::endpoint::Connection;
pub use link::ALPN;
pub use state::StateError;
pub use status::{LeaseReport, LeaseStatus, Part, TakeoverSeen};

use status::{AwakeRecord, Backend, Machine, PeerSeen, Role};

/// How often the node's timers are checked.
pub const TICK: Duration = Duration::from_millis(20);
/// The longest any one disk or database wait of the loop may take.
const IO_WAIT: Duration = Duration::from_secs(1);
/// How often the voter list is re-read from the registry.
const ROSTER_EVERY: Duration = Duration::from_secs(1);
/// How often replication is asked whether this machine is caught up.
const CAUGHT_UP_EVERY: Duration = Duration::from_millis(200);
/// The agent-state key of the record each new holder writes.
pub const AWAKE_KEY: &str = "awake";
/// A loop that has not turned for this long is reported stalled.
const STALLED: Duration = Duration::from_secs(2);
/// Takeovers of the role the status keeps.
const KEPT_TAKEOVERS: usize = 10;

#[derive(Debug, Error)]
pub enum AwakeError {
    #[error("[lease] ttl_ms = {0} is too short; use at least 300 (the default is 3000)")]
    TtlTooShort(u64),
    #[error("[lease] backend = {0:?} is not known; use \"quorum\" or \"etcd\"")]
    UnknownBackend(String),
    #[error("[lease] backend = \"etcd\" needs etcd_endpoints, e.g. [\"http://127.0.0.1:2379\"]")]
    NoEtcdEndpoints,
    #[error("[lease] etcd: {0}")]
    Etcd(#[from] roost_etcd::EtcdError),
    #[error("lease state: {0}")]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sync(#[from] roost_sync::SyncError),
}

/// Where a `wakeup` or `leave` left the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// `name` holds the role at `epoch`.
    Awake { name: String, epoch: u64 },
    /// This machine left and takes the role no more.
    Retired,
}

impl std::fmt::Display for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Settled::Awake { name, epoch } => write!(f, "{name} is awake at epoch {epoch}"),
            Settled::Retired => f.write_str("this machine will not take the role until `roost wakeup`"),
        }
    }
}

/// Why a `wakeup` or `leave` did not happen.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("the lease loop has stopped")]
    Stopped,
    #[error("the lease loop dropped the request")]
    Dropped,
    #[error("no answer from the lease loop within {0:?}")]
    NoAnswer(Duration),
    #[error("another wakeup or leave is under way")]
    Busy,
    /// The protocol's own reason (a handoff refused or aborted).
    #[error("{0}")]
    Refused(String),
}

type CommandReply = oneshot::Sender<Result<Settled, CommandError>>;

/// How long a command waits for the lease loop to settle it.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

enum Command {
    Wakeup { force: bool, reply: CommandReply },
    Leave { reply: CommandReply },
    HandOver { why: String, reply: CommandReply },
    Able(bool),
    Stop { done: oneshot::Sender<()> },
}

/// What the driver last published.
struct Snapshot {
    status: LeaseStatus,
    turned_at: Duration,
    working: Option<Working>,
}

/// The grant a holder works under: its epoch, and when its lease ends on
/// this machine's clock ([`clock::now`]). Work that must not outlive the
/// lease (a reply's send) checks the end right before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Working {
    pub epoch: u64,
    pub until: Duration,
    /// Held by this machine's vote alone (`wakeup --force`): the person said
    /// the others are down.
    pub forced: bool,
}

struct Shared {
    commands: mpsc::Sender<Command>,
    snapshot: Mutex<Snapshot>,
}

/// The running lease of one machine.
pub struct AwakeService {
    shared: Arc<Shared>,
    /// The driver, its watchers, links and the work they start.
    tasks: Tasks,
}

impl AwakeService {
    /// Starts the lease on `endpoint`, reading peers' connections from
    /// `accepted` and dialing them through `relays` too. `sync`, when given,
    /// tells whether the log is caught up.
    pub fn start(
        instance: Arc<Instance>,
        store: Arc<Store>,
        sync: Option<Arc<SyncService>>,
        endpoint: Endpoint,
        relays: roost_sync::Relays,
        mut accepted: mpsc::Receiver<Connection>,
        part: Part,
    ) -> Result<AwakeService, AwakeError> {
        let settings = &instance.config.lease;
        if settings.ttl_ms < 300 {
            return Err(AwakeError::TtlTooShort(settings.ttl_ms));
        }
        let etcd = match settings.backend.as_str() {
            "quorum" => None,
            "etcd" if settings.etcd_endpoints.is_empty() => return Err(AwakeError::NoEtcdEndpoints),
            "etcd" => {
                let key = format!("/roost/{}/awake", instance.chain_key());
                let client = roost_etcd::EtcdLease::new(settings.etcd_endpoints.clone(), key, IO_WAIT)?;
                Some(Arc::new(client))
            }
            other => return Err(AwakeError::UnknownBackend(other.to_string())),
        };
        // Votes outlive rotations of the identity: they are kept under the
        // Roost ID the chain was created with.
        let chain = instance.chain_key().to_string();
        let mut durable = state::load(&instance.home, &chain)?;
        // The machine that created the chain starts as its only voter; one
        // that joined waits for the holder to admit it.
        if durable.view.is_none() && instance.founded_chain() {
            durable.view = Some(View::genesis(&instance.id));
        }
        let now = clock::now();
        let mut config = Config::new(&instance.id, Tenure::new(Duration::from_millis(settings.ttl_ms)));
        config.witness = part == Part::Witness;
        if etcd.is_some() {
            config.grantor = Grantor::External;
        }
        config.seed = now.as_nanos() as u64 ^ instance.id.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        let node = Node::new(config, durable, now);
        let setup = Setup {
            backend: if etcd.is_some() { Backend::Etcd } else { Backend::Quorum },
            part,
            ttl: Duration::from_millis(settings.ttl_ms),
        };
        let names = HashMap::from([(instance.id.clone(), instance.config.name.clone())]);
        let starting = LeaseStatus { role: Role::Starting, ..setup.describe(&node, &names, true, None, now) };

        let tasks = Tasks::new();
        let (inbox_sender, inbox) = mpsc::channel(256);
        let links = link::Links::new(endpoint, relays, inbox_sender, tasks.clone());
        let (commands_sender, commands) = mpsc::channel(4);
        let (internal_sender, internal) = mpsc::channel(64);
        let (roster_sender, roster) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            commands: commands_sender,
            snapshot: Mutex::new(Snapshot { status: starting, turned_at: now, working: None }),
        });
        let accepting = links.clone();
        tasks.spawn(async move {
            while let Some(conn) = accepted.recv().await {
                accepting.accepted(conn);
            }
        });
        tasks.spawn(watch_roster(store.clone(), roster_sender));
        tasks.spawn(watch_fence(store.clone(), internal_sender.clone()));
        if let Some(sync) = sync {
            tasks.spawn(watch_caught_up(sync, internal_sender.clone()));
        }
        let driver = Driver {
            me: instance.id.clone(),
            events: state::Events::open(&instance.home, &chain),
            persister: state::Persister::start(&instance.home, &chain),
            reading_log: false,
            store,
            shell: Shell::new(node),
            links,
            names,
            internal: internal_sender,
            pending: None,
            lease_end: None,
            shared: shared.clone(),
            setup,
            retired: false,
            etcd,
            grants: Arc::default(),
            fenced_to: 0,
            takeovers: Vec::new(),
            tasks: tasks.clone(),
            releases: tasks.child(),
        };
        tasks.spawn(driver.run(inbox, commands, internal, roster));
        Ok(AwakeService { shared, tasks })
    }

    /// What this machine believes about the role, with the loop's progress.
    pub fn status(&self) -> LeaseStatus {
        let snapshot = self.shared.snapshot.lock().expect("lease snapshot poisoned");
        let mut status = snapshot.status.clone();
        let lag = clock::now().saturating_sub(snapshot.turned_at);
        status.loop_lag_ms = lag.as_millis() as u64;
        // A stalled loop, or votes that cannot be stored: this machine
        // cannot play its part in the role.
        status.ok = lag < STALLED && status.votes_error.is_none();
        status
    }

    /// The grant this machine works under, if it holds the role and is not
    /// handing it over; none once the lease has run out, whatever the loop
    /// last published.
    pub fn working(&self) -> Option<Working> {
        let working = self.shared.snapshot.lock().expect("lease snapshot poisoned").working?;
        (clock::now() < working.until).then_some(working)
    }

    /// Takes the role here: by handoff from the holder, or by a fresh grant
    /// when nobody holds it. `force` takes it with this machine's vote alone.
    pub async fn wakeup(&self, force: bool) -> Result<Settled, CommandError> {
        self.command(|reply| Command::Wakeup { force, reply }).await
    }

    /// Hands the role to a standby (when held here) and stops taking it.
    pub async fn leave(&self) -> Result<Settled, CommandError> {
        self.command(|reply| Command::Leave { reply }).await
    }

    /// Hands the role, held here, to a live standby because this machine
    /// cannot do its work (`why`, recorded in the role's event log); it
    /// stays eligible to take the role again.
    pub async fn hand_over(&self, why: String) -> Result<Settled, CommandError> {
        self.command(|reply| Command::HandOver { why, reply }).await
    }

    /// Tells the others whether this machine could do the agent's work now
    /// (reach its channels), so a holder that cannot hands the role to one
    /// that can. Waits only for room in the loop's queue.
    pub async fn set_able(&self, able: bool) {
        let _ = self.shared.commands.send(Command::Able(able)).await;
    }

    async fn command(&self, make: impl FnOnce(CommandReply) -> Command) -> Result<Settled, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.shared.commands.send(make(reply)).await.map_err(|_| CommandError::Stopped)?;
        match tokio::time::timeout(COMMAND_WAIT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CommandError::Dropped),
            Err(_) => Err(CommandError::NoAnswer(COMMAND_WAIT)),
        }
    }

    /// Stops the loop: a holder stops acting and releases its lease, so a
    /// standby takes the role at once. Then every task of the lease ends;
    /// each wait is bounded, and the tasks end regardless.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.shared.commands.send(Command::Stop { done }).await.is_ok() {
            let _ = tokio::time::timeout(IO_WAIT * 2, stopped).await;
        }
        if !self.tasks.stop(IO_WAIT * 2).await {
            tracing::warn!("lease tasks still running {:?} after the stop", IO_WAIT * 2);
        }
    }

    /// Ends the loop at once, releasing nothing: the others take over when
    /// the lease runs out.
    pub fn shutdown(&self) {
        self.tasks.cancel();
    }
}

impl Drop for AwakeService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the published status says of this machine beyond the node's beliefs.
struct Setup {
    backend: Backend,
    part: Part,
    ttl: Duration,
}

impl Setup {
    /// The status to publish: what `node` believes, with machines named from
    /// `names` and how the voter state's writes fare.
    fn describe(
        &self,
        node: &Node,
        names: &HashMap<NodeId, String>,
        votes_stored: bool,
        votes_error: Option<String>,
        now: Duration,
    ) -> LeaseStatus {
        let name = |id: &NodeId| names.get(id).cloned().unwrap_or_else(|| id.clone());
        let status = node.status(now);
        LeaseStatus {
            backend: self.backend,
            part: self.part,
            role: status.role.into(),
            holder: status.holder.as_ref().map(|id| Machine { id: id.clone(), name: name(id) }),
            epoch: status.epoch,
            claims_seen: status.claims_seen,
            voters: status.voters,
            voter_ids: status.voter_ids,
            peers: status
                .peers
                .into_iter()
                .map(|p| PeerSeen {
                    name: name(&p.id),
                    id: p.id,
                    witness: p.witness,
                    eligible: p.eligible,
                    leaving: p.leaving,
                    able: p.able,
                    live: p.live,
                })
                .collect(),
            view: status.view.map(|v| v.to_string()),
            voters_heard: status.voters_heard,
            failover: words::failover(&status.failover),
            not_eligible: status.not_eligible.as_ref().map(words::not_eligible),
            lease_left_ms: status.lease_left.map(|d| d.as_millis() as u64),
            ttl_ms: self.ttl.as_millis() as u64,
            protocol: roost_lease::PROTOCOL_VERSION,
            votes_stored,
            votes_error,
            // Measured when the status is read: `AwakeService::status`.
            loop_lag_ms: 0,
            ok: true,
            takeovers: Vec::new(),
        }
    }
}

/// Reads the registry (every machine not revoked votes) once a second.
async fn watch_roster(store: Arc<Store>, roster: mpsc::Sender<Vec<InstanceEntry>>) {
    loop {
        let store = store.clone();
        match roost_tasks::blocking("reading the registry for the lease", IO_WAIT, move || store.instances()).await {
            Ok(Ok(entries)) => {
                if roster.send(entries).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the registry for the lease"),
            Err(e) => tracing::warn!(error = %e, "no registry for the lease"),
        }
        tokio::time::sleep(ROSTER_EVERY).await;
    }
}

/// Tells the node the highest epoch the log has seen, which replication may
/// have learned before the lease did.
async fn watch_fence(store: Arc<Store>, internal: mpsc::Sender<Fact>) {
    loop {
        let store = store.clone();
        match roost_tasks::blocking("reading the epoch fence", IO_WAIT, move || store.highest_epoch()).await {
            Ok(Ok(epoch)) => {
                if internal.send(Fact::Input(Input::EpochSeen(epoch))).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the epoch fence"),
            Err(e) => tracing::warn!(error = %e, "no epoch fence for the lease"),
        }
        tokio::time::sleep(ROSTER_EVERY).await;
    }
}

/// Tells the node whether replication has caught up with reachable peers.
async fn watch_caught_up(sync: Arc<SyncService>, internal: mpsc::Sender<Fact>) {
    loop {
        let sync = sync.clone();
        let status = roost_tasks::blocking("replication's status", IO_WAIT, move || sync.status()).await;
        let caught_up = match status {
            Ok(Ok(peers)) => peers.iter().all(|p| p.state != PeerState::Syncing || p.behind == 0),
            _ => false,
        };
        if internal.send(Fact::Input(Input::LogCaughtUp(caught_up))).await.is_err() {
            return;
        }
        tokio::time::sleep(CAUGHT_UP_EVERY).await;
    }
}

/// What the driver's helper tasks report back.
enum Fact {
    /// An input for the node (a grant from etcd, whether the log is caught up).
    Input(Input),
    /// The log's heads, which the shell asked for.
    Log(Heads),
}

struct Driver {
    me: NodeId,
    /// Writes the voter state; the shell holds back what depends on it.
    persister: state::Persister,
    /// A read of the log's heads is under way.
    reading_log: bool,
    store: Arc<Store>,
    shell: Shell,
    links: Arc<link::Links>,
    names: HashMap<NodeId, String>,
    internal: mpsc::Sender<Fact>,
    events: state::Events,
    pending: Option<CommandReply>,
    /// When the held lease runs out (or ran out), as last published.
    lease_end: Option<Duration>,
    shared: Arc<Shared>,
    setup: Setup,
    /// This machine was revoked here: it no longer takes the role.
    retired: bool,
    /// The etcd server that grants the lease, with `Grantor::External`.
    etcd: Option<Arc<roost_etcd::EtcdLease>>,
    /// etcd's grants by epoch, for renewing and releasing them.
    grants: Arc<Mutex<HashMap<u64, roost_etcd::Grant>>>,
    /// The highest epoch handed to the store's fence.
    fenced_to: u64,
    /// The last times this machine took the role, oldest first.
    takeovers: Vec<TakeoverSeen>,
    /// Where the driver's own helper work runs (reads, writes, etcd calls).
    tasks: Tasks,
    /// etcd releases under way, which a stop waits for.
    releases: Tasks,
}

impl Driver {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<(NodeId, Bytes)>,
        mut commands: mpsc::Receiver<Command>,
        mut internal: mpsc::Receiver<Fact>,
        mut roster: mpsc::Receiver<Vec<InstanceEntry>>,
    ) {
        // Until the registry is read, this node would count itself the only
        // voter and grant itself the lease.
        match roster.recv().await {
            Some(voters) => {
                let now = clock::now();
                let actions = self.set_roster(voters, now);
                self.perform(actions, now).await;
            }
            None => return,
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let input = tokio::select! {
                _ = tick.tick() => {
                    // A write that outlasted its wait has ended since.
                    self.shell.written(self.persister.through(), true, clock::now());
                    if let Some(write) = self.shell.retry(clock::now()) {
                        self.perform(vec![write], clock::now()).await;
                    }
                    Input::Tick
                }
                Some((from, bytes)) = inbox.recv() => match Envelope::decode(&bytes) {
                    Ok(envelope) => Input::Received { from, envelope },
                    Err(e) => {
                        tracing::debug!(error = %e, "undecodable lease message");
                        continue;
                    }
                },
                Some(command) = commands.recv() => match command {
                    Command::Stop { done } => {
                        let now = clock::now();
                        let effects = self.shell.handle(Input::Stop, now);
                        self.perform(effects, now).await;
                        // The release reaches the others before the lease's tasks end.
                        self.links.flushed(IO_WAIT).await;
                        self.releases.finish(IO_WAIT).await;
                        let _ = done.send(());
                        return;
                    }
                    Command::Able(able) => Input::Able(able),
                    command => match self.admit(command) {
                        Some(input) => input,
                        None => continue,
                    },
                },
                Some(fact) = internal.recv() => match fact {
                    Fact::Input(input) => input,
                    Fact::Log(heads) => {
                        self.reading_log = false;
                        let now = clock::now();
                        let effects = self.shell.log(&heads, now);
                        self.perform(effects, now).await;
                        if self.shell.waiting_for_log() {
                            self.read_log(Duration::from_millis(5));
                        }
                        continue;
                    }
                },
                Some(voters) = roster.recv() => {
                    let now = clock::now();
                    let actions = self.set_roster(voters, now);
                    self.perform(actions, now).await;
                    continue;
                }
                else => return,
            };
            let now = clock::now();
            let effects = self.shell.handle(input, now);
            self.perform(effects, now).await;
            self.publish(clock::now());
        }
    }

    /// Reads the log's heads for the shell, after `delay`, bounded.
    fn read_log(&mut self, delay: Duration) {
        if std::mem::replace(&mut self.reading_log, true) {
            return;
        }
        let (store, internal) = (self.store.clone(), self.internal.clone());
        self.tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let heads = match roost_tasks::blocking("reading the log's heads", IO_WAIT, move || store.heads()).await {
                Ok(Ok(heads)) => heads,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the log's heads");
                    Heads::new()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no heads for the lease");
                    Heads::new()
                }
            };
            let _ = internal.send(Fact::Log(heads)).await;
        });
    }

    fn admit(&mut self, command: Command) -> Option<Input> {
        let (input, reply, why) = match command {
            Command::Wakeup { force, reply } => (Input::Wakeup { force }, reply, None),
            Command::Leave { reply } => (Input::Leave, reply, None),
            Command::HandOver { why, reply } => (Input::HandOver, reply, Some(why)),
            Command::Stop { .. } | Command::Able(_) => unreachable!("the loop handles these itself"),
        };
        // A command whose caller stopped waiting no longer holds the loop.
        if self.pending.as_ref().is_some_and(|pending| !pending.is_closed()) {
            let _ = reply.send(Err(CommandError::Busy));
            return None;
        }
        if let Some(why) = why {
            self.events.record(json!({"event": "hand-over", "node": self.me, "reason": why}), clock::now());
        }
        self.pending = Some(reply);
        Some(input)
    }

    /// Tells the node the registry's machines (the holder admits those it
    /// hears as voters and removes revoked ones); what the node must do when
    /// this machine itself was revoked.
    fn set_roster(&mut self, entries: Vec<InstanceEntry>, now: Duration) -> Vec<Effect> {
        // This machine left the chain (`roost leave` revoked it here): it
        // hands the role off if it holds it, and never takes it again.
        let mut effects = Vec::new();
        if !self.retired && entries.iter().any(|e| e.id == self.me && e.is_revoked()) {
            self.retired = true;
            effects = self.shell.handle(Input::Leave, now);
        }
        let (revoked, active): (Vec<InstanceEntry>, Vec<InstanceEntry>) =
            entries.into_iter().partition(InstanceEntry::is_revoked);
        let peers: Vec<InstanceEntry> = active.iter().filter(|e| e.id != self.me).cloned().collect();
        self.links.set_peers(&peers);
        for entry in &active {
            self.names.insert(entry.id.clone(), entry.name.clone());
        }
        let mut members: Vec<NodeId> = active.into_iter().map(|e| e.id).collect();
        members.push(self.me.clone());
        let revoked = revoked.into_iter().map(|e| e.id).collect();
        effects.extend(self.shell.handle(Input::Members { active: members, revoked }, now));
        effects
    }

    fn name(&self, id: &str) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    async fn perform(&mut self, effects: Vec<Effect>, now: Duration) {
        for effect in effects {
            let action = match effect {
                // Nothing leaves while a state it may depend on is not on
                // disk: not an answer, not a renewal, not a view.
                Effect::Send { to, envelope, after } => {
                    if !self.shell.may_send(after) {
                        continue;
                    }
                    if to == self.me {
                        // Its own vote, stored: back to the node, in turn.
                        let vote = Input::Received { from: to, envelope };
                        if self.internal.try_send(Fact::Input(vote)).is_err() {
                            tracing::warn!("the lease loop is too busy to count its own vote; the protocol asks again");
                        }
                    } else {
                        self.links.send(&to, envelope.encode());
                    }
                    continue;
                }
                Effect::Write { number, durable } => {
                    self.persister.write(number, durable);
                    let stored = self.persister.wait(number, IO_WAIT).await;
                    if !stored {
                        let why = self.persister.failure().unwrap_or_else(|| format!("not done within {IO_WAIT:?}"));
                        tracing::error!(%why, "cannot store the lease votes; this machine sends nothing until it can");
                    }
                    // A write still under way is reported when it ends.
                    if stored || self.persister.failure().is_some() {
                        self.shell.written(number, stored, clock::now());
                    }
                    continue;
                }
                Effect::ReadLog => {
                    self.read_log(Duration::ZERO);
                    continue;
                }
                Effect::Act(action) => action,
            };
            match action {
                Action::Awake { epoch, how } => {
                    self.events.record(json!({"event": "awake", "epoch": epoch, "node": self.me}), now);
                    self.took_role(epoch, how);
                    // A machine that knows no other voters is a chain of one
                    // only in its own eyes (its registry may be incomplete):
                    // it writes nothing that would meet another's at one epoch.
                    if self.shell.node().voters() > 1 {
                        self.record_awake(epoch);
                    }
                }
                Action::Asleep { epoch, reason } => {
                    // It stopped acting when its lease ran out, if that came first.
                    let until = self.lease_end.map_or(now, |end| end.min(now));
                    let event = json!({"event": "asleep", "epoch": epoch, "node": self.me,
                                       "reason": words::asleep(&reason),
                                       "until_ns": until.as_nanos() as u64});
                    self.events.record(event, now);
                }
                Action::Pause { epoch } => {
                    self.events.record(json!({"event": "pause", "epoch": epoch, "node": self.me}), now);
                }
                Action::Resume { epoch } => {
                    self.events.record(json!({"event": "resume", "epoch": epoch, "node": self.me}), now);
                }
                Action::Send { .. } | Action::Persist(_) | Action::NeedHead | Action::CatchUp { .. } => {
                    unreachable!("the shell turns these into effects")
                }
                Action::HandoffDone { holder, epoch } => {
                    let settled = match holder {
                        None => Settled::Retired,
                        Some(holder) => Settled::Awake { name: self.name(&holder), epoch },
                    };
                    if let Some(reply) = self.pending.take() {
                        let _ = reply.send(Ok(settled));
                    }
                }
                Action::HandoffFailed { reason } => {
                    let reason = words::handoff_failure(&reason);
                    self.events.record(json!({"event": "handoff-failed", "node": self.me, "reason": reason}), now);
                    if let Some(reply) = self.pending.take() {
                        let _ = reply.send(Err(CommandError::Refused(reason)));
                    }
                }
                Action::External(ExternalRequest::Acquire { req }) => self.etcd_acquire(req),
                Action::External(ExternalRequest::Renew { req, epoch }) => self.etcd_renew(req, epoch),
                Action::External(ExternalRequest::Release { epoch }) => self.etcd_release(epoch),
            }
        }
    }

    /// The awake role's first effect: the `awake` record of agent state,
    /// written through the write door stamped with the epoch, so the
    /// replicated log refuses it from any machine holding an older grant.
    fn record_awake(&self, epoch: u64) {
        let store = self.store.clone();
        let record = AwakeRecord { epoch, holder: self.me.clone(), name: self.name(&self.me) };
        let value = serde_json::to_string(&record).expect("a record serializes");
        self.tasks.spawn(async move {
            let write = move || store.write_agent_state(AWAKE_KEY, &value, epoch);
            match roost_tasks::blocking("writing the awake record", IO_WAIT, write).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the awake record was refused"),
                Err(e) => tracing::warn!(error = %e, "no awake record"),
            }
        });
    }

    /// Raises the log's epoch fence to the highest epoch the lease knows was granted (not a round merely promised).
    fn fence_to(&mut self, epoch: u64) {
        if epoch <= self.fenced_to {
            return;
        }
        self.fenced_to = epoch;
        let store = self.store.clone();
        self.tasks.spawn(async move {
            let observe = move || store.observe_epoch(epoch);
            if !matches!(roost_tasks::blocking("raising the epoch fence", IO_WAIT, observe).await, Ok(Ok(_))) {
                tracing::warn!(epoch, "could not raise the epoch fence");
            }
        });
    }

    fn etcd(&self) -> Arc<roost_etcd::EtcdLease> {
        self.etcd.clone().expect("external grants come only with an etcd backend")
    }

    /// Asks etcd for the lease; the answer is timed from when it was asked.
    fn etcd_acquire(&self, req: u64) {
        let (etcd, grants, internal, me, ttl) =
            (self.etcd(), self.grants.clone(), self.internal.clone(), self.me.clone(), self.setup.ttl);
        self.tasks.spawn(async move {
            let sent_at = clock::now();
            let answer = match etcd.acquire(&me, ttl).await {
                Ok(roost_etcd::Acquire::Granted(grant)) => {
                    let epoch = grant.epoch;
                    grants.lock().expect("etcd grants poisoned").insert(epoch, grant);
                    ExternalAnswer::Granted { req, epoch, sent_at }
                }
                Ok(roost_etcd::Acquire::Held { holder, epoch }) => ExternalAnswer::Held { req, holder, epoch },
                Err(e) => {
                    tracing::warn!(error = %e, "etcd did not grant the lease");
                    ExternalAnswer::Failed { req }
                }
            };
            let _ = internal.send(Fact::Input(Input::External(answer))).await;
        });
    }

    fn etcd_renew(&self, req: u64, epoch: u64) {
        let Some(grant) = self.grants.lock().expect("etcd grants poisoned").get(&epoch).cloned() else { return };
        let (etcd, internal) = (self.etcd(), self.internal.clone());
        self.tasks.spawn(async move {
            let sent_at = clock::now();
            let answer = match etcd.renew(&grant).await {
                Ok(true) => ExternalAnswer::Renewed { req, sent_at },
                Ok(false) => ExternalAnswer::Lost { req },
                // Unconfirmed: the holder stops when its lease runs out.
                Err(e) => return tracing::warn!(error = %e, "etcd did not renew the lease"),
            };
            let _ = internal.send(Fact::Input(Input::External(answer))).await;
        });
    }

    fn etcd_release(&self, epoch: u64) {
        let grant = self.grants.lock().expect("etcd grants poisoned").remove(&epoch);
        let (etcd, internal) = (self.etcd(), self.internal.clone());
        self.releases.spawn(async move {
            if let Some(grant) = grant
                && let Err(e) = etcd.release(&grant).await
            {
                tracing::warn!(error = %e, "etcd did not release the lease; it ends at its TTL");
            }
            let _ = internal.send(Fact::Input(Input::External(ExternalAnswer::Released { epoch }))).await;
        });
    }

    /// Keeps the last takeovers for the status, and counts and times them.
    fn took_role(&mut self, epoch: u64, how: Takeover) {
        let (word, took) = match how {
            Takeover::First => ("first", None),
            Takeover::Failover { silent } => ("failover", Some(silent)),
            Takeover::Handoff { took } => ("handoff", Some(took)),
        };
        let metrics = roost_metrics::metrics();
        roost_metrics::count(&metrics.takeovers, &[("how", word)]);
        if let Some(took) = took {
            roost_metrics::time(&metrics.takeover_seconds, &[("how", word)], took);
        }
        if self.takeovers.len() == KEPT_TAKEOVERS {
            self.takeovers.remove(0);
        }
        self.takeovers.push(TakeoverSeen {
            epoch,
            how: word.into(),
            took_ms: took.map(|d| d.as_millis() as u64),
            at_unix: roost_instance::unix_now().max(0) as u64,
        });
    }

    fn publish(&mut self, now: Duration) {
        self.fence_to(self.shell.node().highest_grant());
        self.lease_end = self.shell.node().lease_end();
        let mut status =
            self.setup.describe(self.shell.node(), &self.names, self.shell.settled(), self.persister.failure(), now);
        status.takeovers = self.takeovers.clone();
        let node = self.shell.node();
        let working = node.working().map(|(epoch, until)| Working { epoch, until, forced: node.forced() });
        *self.shared.snapshot.lock().expect("lease snapshot poisoned") = Snapshot { status, turned_at: now, working };
    }
}
