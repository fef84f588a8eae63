//! The world: an event loop in true time, and around each node the shell a
//! real machine would run. The shell carries out a node's actions in order —
//! persisting voter state exactly at `Action::Persist`, sending, answering
//! `NeedHead`, reporting catch-up and `LogCaughtUp` — runs the agent (effects
//! only while `may_act`, none between `Pause` and `Resume`), the replica and
//! the timers, and suffers the faults the chaos draws.
//!
//! A run: machines start within the first two seconds; until the heal,
//! clients write and faults come; at the heal every partition, loss and
//! pause ends and every crashed machine restarts (delay spikes stopped
//! [`SPIKE_MAX`] earlier, so what is in flight then is normally delayed);
//! the agent keeps working until the liveness deadline; then everything is
//! quiet for ten seconds (`QUIET`) and the replicas must have converged.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use roost_agent::ledger::{self, Limits, Work};
use roost_agent::outbox::{self, Heads, SEND_MARGIN, Seen, Settle};
use roost_agent::{Message, Reply};
use roost_core::protocol;
use roost_lease::{Action, Config, Durable, Effect, Envelope, Input, Node, Shell, Tenure, View};
use roost_pool::{Coordination, Member, PLACEMENT_PREFIX, Placed, Settings, Timing, Transfer};

use crate::check::{Checker, Invariant, Violation};
use crate::clock::Clock;
use crate::net::{Net, SPIKE_MAX};
use crate::replica::Replica;
use crate::rng::Rng;
use crate::scenario::{MS, SEC, Scenario};
use crate::trace::Trace;
use crate::{Bug, Failure, Summary};

/// Writes one readable line to the trace: `note!(world, machine, "format", args…)`.
macro_rules! note {
    ($world:expr, $who:expr, $($arg:tt)*) => {
        $world.trace.note($world.now, $world.names.get($who).map_or("sim", String::as_str), format_args!($($arg)*))
    };
}

/// Quiet time after the liveness deadline before convergence is checked.
const QUIET: u64 = 10 * SEC;
/// The agent's outbox stops this long before the end, so that what it
/// wrote last has reached every replica when convergence is checked.
const OUTBOX_QUIET: u64 = 3 * SEC;
/// Topics the inbound messages fall into.
const TOPICS: u64 = 8;
/// How soon a forced wakeup must give a holder, with the other machine dead.
const FORCE_BOUND: u64 = SEC;
/// The pool's timing, as `[pool]` sets it by default.
const POOL_LEASE_MS: u64 = 2000;
const POOL_MARGIN_MS: u64 = 500;

#[derive(Debug, Clone)]
enum Payload {
    Lease(Vec<u8>),
    /// Replication also carries the sender's registry (certificates travel
    /// in every hello), so joins and revocations spread with it.
    Sync(Vec<u8>, Registry),
    /// A member asks the coordinator for its topics.
    PoolAsk(roost_pool::Ask),
    /// The coordinator's grants and drops.
    PoolAnswer(roost_pool::Answer),
}

/// The machines one machine's registry holds: those it knows, and which of
/// them are revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Registry {
    known: BTreeSet<usize>,
    revoked: BTreeSet<usize>,
}

impl Registry {
    /// Takes in what `other` knows; true if anything was new.
    fn merge(&mut self, other: &Registry) -> bool {
        let before = (self.known.len(), self.revoked.len());
        self.known.extend(&other.known);
        self.revoked.extend(&other.revoked);
        before != (self.known.len(), self.revoked.len())
    }
}

/// What happens at one instant of true time. Timers carry the life of the
/// machine that set them, so a restart silences the timers of the life before.
#[derive(Debug)]
enum Event {
    /// A machine's first start.
    Start(usize),
    Tick(usize, u64),
    /// Anti-entropy: send peers heads and what they lack.
    Sync(usize, u64),
    /// The agent's turn to make an effect, if the machine may act.
    Agent(usize, u64),
    /// The pool's turn: coordinate while holding the role, then ask.
    Pool(usize, u64),
    /// A person moves a topic to another machine.
    Transfer,
    Deliver {
        from: usize,
        to: usize,
        payload: Payload,
    },
    /// An effect reaches the sink.
    Effect(usize),
    /// An inbound message of the agent reaches a random machine.
    Inbound,
    /// The agent's outbox on a machine: send what is ready, plan more.
    Outbox(usize, u64),
    /// A reply reaches the receiver.
    Reply {
        from: usize,
        life: u64,
        topic: String,
        message: String,
        key: String,
        text: String,
    },
    /// The receiver's 2xx reaches the machine that sent the reply.
    ReplyTaken {
        to: usize,
        life: u64,
        topic: String,
        message: String,
    },
    /// Draw the next fault.
    Chaos,
    ClientWrite,
    Uncut(u64),
    Lossless(u64),
    Calm(u64),
    Restart(usize, u64),
    Resume(usize, u64),
    SpikesOff,
    /// Crash one of two voters for good (force scenarios).
    Bury,
    /// A machine joins the chain by pairing through another.
    Join {
        joiner: usize,
        through: usize,
    },
    /// A machine whose write stalled crashes; the state landed or not.
    CrashMidWrite {
        machine: usize,
        life: u64,
    },
    /// A failing disk works again (for the trace: writes look at the time).
    DiskMended(usize),
    Heal,
    /// `wakeup --force` on the survivor (force scenarios).
    Force,
    /// Invariant 3: a holder by now.
    Deadline,
    /// Invariant 4: converged by now.
    Finish,
}

/// What the simulated shell does next for a machine.
enum Todo {
    Input(Input),
    /// Show the shell the log.
    Log,
    /// Write the node's state again after a failed write, if due.
    Retry,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so the heap pops the earliest event (ties in scheduling order).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Machine {
    config: Config,
    clock: Clock,
    /// `None` while crashed (or not started yet): the shipped shell rules
    /// around the node; the simulator does only their I/O.
    node: Option<Shell>,
    /// The voter state on disk: the last write that completed.
    disk: Durable,
    /// Writes fail (a full or failing disk) until this true time.
    disk_fails_until: u64,
    /// The next write stalls, and the machine then crashes before it is
    /// known to have ended (it may or may not have landed).
    stall_next_write: bool,
    /// A write has stalled: the writes after it wait behind it (one writer,
    /// in order) until the machine crashes.
    stalled: bool,
    /// What the stalled write leaves on disk when the machine crashes: the
    /// new state if it landed first, else nothing new.
    landing: Option<Durable>,
    /// A read of the log never answers (a stuck disk or database), so a
    /// handoff waiting on it times out.
    log_stuck: bool,
    /// `None` for a witness, which keeps no data.
    replica: Option<Replica>,
    /// `Some(keep)` while the process is paused; `keep` says whether messages
    /// arriving meanwhile wait in socket buffers (read at resume) or are lost.
    paused: Option<bool>,
    held: Vec<(usize, Payload)>,
    /// Counts starts and crashes, so timers of an earlier life are ignored.
    life: u64,
    /// Crash before this action of the next step that returns any.
    crash_after: Option<usize>,
    /// The shell remembers a `roost leave` that completed and repeats it
    /// after a restart.
    left: bool,
    /// A `roost leave` waiting for its answer.
    leaving: bool,
    /// Between `Action::Pause` and `Action::Resume`: no new agent work.
    agent_paused: bool,
    caught_up: Option<bool>,
    /// Crashed for good (force scenarios).
    dead: bool,
    /// Part of the chain: a founder, or joined by now.
    joined: bool,
    /// The agent's outbox: volatile, as in the real shell.
    outbox: Outbox,
    /// The pool's member side: the topics granted here (volatile).
    member: Member,
    /// The pool's coordinator while this machine holds the role (volatile).
    coordination: Option<Coordination>,
}

/// What the simulated shell keeps of the agent's work between turns.
#[derive(Default)]
struct Outbox {
    settle: Settle,
    /// A committed reply per topic, waiting to leave or for the receiver.
    jobs: BTreeMap<String, Job>,
}

struct Job {
    message: Message,
    reply: Reply,
    /// The epoch it is sent under.
    epoch: u64,
    /// What the peers must hold before it leaves.
    commit: Heads,
    /// When it last left (true time), while no answer came.
    sent_at: Option<u64>,
}

impl Machine {
    fn running(&self) -> bool {
        self.node.is_some() && self.paused.is_none()
    }
}

pub struct World {
    seed: u64,
    bug: Option<Bug>,
    scenario: Scenario,
    names: Vec<String>,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    machines: Vec<Machine>,
    net: Net,
    /// The highest epoch the effect sink has accepted.
    sink: Option<u64>,
    checker: Checker,
    trace: Trace,
    next_id: u64,
    /// From when a holder is promised, within `bound`.
    live_from: Option<u64>,
    bound: u64,
    /// When a wakeup or leave was last asked for.
    handoff_asked: Option<u64>,
    holder_after: Option<u64>,
    agent_until: u64,
    end: u64,
    steps: u64,
    refused: u64,
    handoffs_done: u64,
    handoffs_failed: u64,
    registries: Vec<Registry>,
    /// A machine was revoked: the chain may have too few voters left for the
    /// liveness promise.
    revoked_any: bool,
}

impl World {
    pub fn new(seed: u64, bug: Option<Bug>) -> World {
        let mut rng = Rng::new(seed);
        let scenario = Scenario::draw(&mut rng, bug);
        let names = scenario.names.clone();
        let founders = scenario.founders;
        let founding = View::new(0, 1, names[..founders].to_vec());
        let machines = (0..names.len())
            .map(|i| {
                let mut config = Config::new(&names[i], scenario.tenure);
                config.witness = scenario.witness == Some(i);
                config.handoff_timeout = scenario.handoff_timeout;
                Machine {
                    replica: (!config.witness).then(|| Replica::new(&names[i], &names)),
                    config,
                    clock: scenario.clocks[i],
                    node: None,
                    disk: Durable { view: (i < founders).then(|| founding.clone()), ..Durable::default() },
                    disk_fails_until: 0,
                    stall_next_write: false,
                    stalled: false,
                    landing: None,
                    log_stuck: false,
                    paused: None,
                    held: Vec::new(),
                    life: 0,
                    crash_after: None,
                    left: false,
                    leaving: false,
                    agent_paused: false,
                    caught_up: None,
                    dead: false,
                    joined: i < founders,
                    outbox: Outbox::default(),
                    member: Member::default(),
                    coordination: None,
                }
            })
            .collect();
        let net = Net::new(names.len(), scenario.latency, scenario.dup_ppm, scenario.spike_ppm);
        let heal = scenario.heal_at;
        let mut world = World {
            seed,
            bug,
            names,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            machines,
            net,
            sink: None,
            checker: Checker::default(),
            trace: Trace::default(),
            next_id: 0,
            live_from: None,
            bound: 0,
            handoff_asked: None,
            holder_after: None,
            agent_until: 0,
            end: 0,
            steps: 0,
            refused: 0,
            handoffs_done: 0,
            handoffs_failed: 0,
            registries: (0..scenario.names.len())
                .map(|i| Registry {
                    known: if i < founders { (0..founders).collect() } else { BTreeSet::from([i]) },
                    revoked: BTreeSet::new(),
                })
                .collect(),
            revoked_any: false,
            scenario,
        };
        for i in 0..founders {
            let at = world.rng.below(2 * SEC);
            world.schedule_at(at, Event::Start(i));
        }
        for (joiner, through, at) in world.scenario.joins.clone() {
            world.schedule_at(at, Event::Join { joiner, through });
        }
        world.schedule_at(SEC, Event::Chaos);
        world.schedule_at(SEC, Event::ClientWrite);
        world.schedule_at(SEC, Event::Inbound);
        if world.scenario.pool.is_some() {
            world.schedule_at(3 * SEC, Event::Transfer);
        }
        world.schedule_at(heal - SPIKE_MAX, Event::SpikesOff);
        world.schedule_at(heal, Event::Heal);
        if world.scenario.force {
            let bury = heal - world.rng.between(0, 8 * SEC);
            let force = heal + world.rng.between(0, SEC);
            world.schedule_at(bury, Event::Bury);
            world.schedule_at(force, Event::Force);
            (world.live_from, world.bound) = (Some(force), FORCE_BOUND);
            world.schedule_at(force + FORCE_BOUND, Event::Deadline);
        }
        // The run's end is fixed now; the liveness deadline is set at the
        // heal, when it is known whether a handoff was under way.
        world.agent_until = heal + SEC + world.liveness_bound(true);
        world.end = world.agent_until + QUIET;
        world.schedule_at(world.end, Event::Finish);
        world
    }

    /// How long after the heal a holder must exist (invariant 3):
    ///
    /// * `TTL / (1 − ε)`: the longest a voter may still refuse others for a
    ///   lease it holds — a voter restarting at the heal reopens its last
    ///   accepted lease for a full TTL of its own clock, a paused one reads
    ///   stale renewals when it resumes, and a standby believes a claim it
    ///   heard for a TTL;
    /// * `catch_up_limit`: a standby whose log is behind waits this long
    ///   before taking a free lease;
    /// * 1 s: ticks, jitter (≤ 150 ms), a few round trips at ≤ 40 ms, and a
    ///   collision with another proposer or two;
    /// * and, when a wakeup or leave was asked within `2 × handoff_timeout`
    ///   before the heal, those two handoff stages, during which the target
    ///   waits for the holder and voters keep the lease for the target.
    fn liveness_bound(&self, handoff: bool) -> u64 {
        let ttl = self.scenario.tenure.ttl.as_nanos() as u64;
        let epsilon = u64::from(Tenure::DEFAULT_DRIFT_PPM);
        let lease = ttl * 1_000_000 / (1_000_000 - epsilon);
        let catch_up = self.machines[0].config.catch_up_limit.as_nanos() as u64;
        let handoffs = if handoff { 2 * self.scenario.handoff_timeout.as_nanos() as u64 } else { 0 };
        lease + catch_up + SEC + handoffs
    }

    pub fn run(mut self) -> Result<Summary, Box<Failure>> {
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            self.now = at;
            self.steps += 1;
            let step = panic::catch_unwind(AssertUnwindSafe(|| self.step(event).and_then(|()| self.check())));
            let result = step.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Violation { invariant: Invariant::NoPanic, detail: format!("panicked: {message}") })
            });
            if let Err(violation) = result {
                return Err(Box::new(self.failure(violation)));
            }
            if at >= self.end {
                break;
            }
        }
        Ok(Summary {
            seed: self.seed,
            trace: self.trace.hash(),
            steps: self.steps,
            grants: self.checker.grants,
            writes: self.checker.writes(),
            effects_accepted: self.checker.accepted,
            effects_refused: self.refused,
            handoffs_done: self.handoffs_done,
            handoffs_failed: self.handoffs_failed,
            live: self.live_from.is_some(),
            holder_after: self.holder_after.map(Duration::from_nanos),
            bound: Duration::from_nanos(self.bound),
        })
    }

    fn failure(&self, violation: Violation) -> Failure {
        Failure {
            seed: self.seed,
            bug: self.bug,
            invariant: violation.invariant,
            detail: violation.detail,
            at: Duration::from_nanos(self.now),
            scenario: self.scenario.describe(),
            trace: self.trace.hash(),
            recent: self.trace.recent(),
        }
    }

    fn schedule_at(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.schedule_at(self.now + after, event);
    }

    fn local(&self, n: usize) -> Duration {
        self.machines[n].clock.read(self.now)
    }

    /// Every live machine that may act now, with its epoch.
    fn holders(&self) -> Vec<(usize, u64)> {
        let now = self.now;
        self.machines
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.node.as_ref()?.node().may_act(m.clock.read(now)).map(|e| (i, e)))
            .collect()
    }

    /// Invariant 1 (and 7 with the pool) after every step; notes the first
    /// holder after the heal.
    fn check(&mut self) -> Result<(), Violation> {
        let holders = self.holders();
        self.checker.one_holder(&holders, &self.names)?;
        if self.scenario.pool.is_some() {
            for topic in (0..TOPICS).map(|t| format!("topic-{t}")) {
                let owners: Vec<(usize, u64)> = (0..self.machines.len())
                    .filter(|i| self.machines[*i].node.is_some())
                    .filter_map(|i| {
                        let now = self.local(i).as_millis() as u64;
                        self.machines[i].member.acting(&topic, now).map(|(epoch, _)| (i, epoch))
                    })
                    .collect();
                self.checker.one_owner(&topic, &owners, &self.names)?;
            }
        }
        if let Some(from) = self.live_from
            && self.now >= from
            && self.holder_after.is_none()
            && !holders.is_empty()
        {
            self.holder_after = Some(self.now - from);
        }
        Ok(())
    }

    fn step(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Start(n) => self.start(n),
            Event::Tick(n, life) => {
                if self.timer(n, life, Event::Tick(n, life), (5 * MS, 25 * MS)) {
                    self.run_shell(n, Todo::Retry)?;
                    self.input(n, Input::Tick)?;
                }
                Ok(())
            }
            Event::CrashMidWrite { machine, life } => {
                if self.machines[machine].life == life && self.machines[machine].node.is_some() {
                    note!(self, machine, "crashes in the middle of a write");
                    self.crash_mid_write(machine, true);
                }
                Ok(())
            }
            Event::DiskMended(n) => {
                note!(self, n, "its disk works again");
                Ok(())
            }
            Event::Sync(n, life) => {
                if self.timer(n, life, Event::Sync(n, life), (100 * MS, 250 * MS)) {
                    self.sync(n)?;
                    // As the driver's fence watcher does.
                    if let Some(epoch) = self.machines[n].replica.as_ref().map(Replica::highest_epoch) {
                        self.input(n, Input::EpochSeen(epoch))?;
                    }
                }
                Ok(())
            }
            Event::Agent(n, life) => {
                if self.timer(n, life, Event::Agent(n, life), (100 * MS, 500 * MS)) {
                    self.agent(n);
                }
                Ok(())
            }
            Event::Pool(n, life) => {
                if self.timer(n, life, Event::Pool(n, life), (150 * MS, 250 * MS)) {
                    self.pool_turn(n);
                }
                Ok(())
            }
            Event::Transfer => {
                if self.now < self.scenario.heal_at {
                    self.transfer();
                    let gap = self.rng.between(SEC, 5 * SEC);
                    self.schedule(gap, Event::Transfer);
                }
                Ok(())
            }
            Event::Deliver { from, to, payload } => self.deliver(from, to, payload),
            Event::Effect(id) => self.sink(id),
            Event::Inbound => {
                if self.now < self.scenario.heal_at {
                    self.inbound();
                    let gap = self.rng.between(2 * SEC, 8 * SEC);
                    self.schedule(gap, Event::Inbound);
                }
                Ok(())
            }
            Event::Outbox(n, life) => {
                if self.now + OUTBOX_QUIET < self.end
                    && self.timer(n, life, Event::Outbox(n, life), (100 * MS, 300 * MS))
                {
                    self.outbox(n);
                }
                Ok(())
            }
            Event::Reply { from, life, topic, message, key, text } => {
                note!(self, usize::MAX, "receiver takes the reply to {message} ({key})");
                self.checker.reply(&message, &key, &text)?;
                for delay in self.net.fate(&mut self.rng, false) {
                    let taken = Event::ReplyTaken { to: from, life, topic: topic.clone(), message: message.clone() };
                    self.schedule(delay, taken);
                }
                Ok(())
            }
            Event::ReplyTaken { to, life, topic, message } => {
                self.reply_taken(to, life, &topic, &message);
                Ok(())
            }
            Event::Chaos => {
                if self.now + SEC < self.scenario.heal_at {
                    self.chaos()?;
                    let gap = self.rng.between(self.scenario.fault_gap.0, self.scenario.fault_gap.1);
                    self.schedule(gap, Event::Chaos);
                }
                Ok(())
            }
            Event::ClientWrite => {
                if self.now < self.scenario.heal_at {
                    self.client_write();
                    let gap = self.rng.between(self.scenario.write_gap.0, self.scenario.write_gap.1);
                    self.schedule(gap, Event::ClientWrite);
                }
                Ok(())
            }
            Event::Uncut(id) => {
                self.net.uncut(id);
                note!(self, usize::MAX, "cut {id} heals");
                Ok(())
            }
            Event::Lossless(id) => {
                self.net.lossless(id);
                Ok(())
            }
            Event::Calm(id) => {
                self.net.calm(id);
                Ok(())
            }
            Event::Restart(n, life) => {
                if self.machines[n].life == life {
                    self.start(n)?;
                }
                Ok(())
            }
            Event::Resume(n, life) => {
                if self.machines[n].life == life && self.machines[n].paused.is_some() {
                    self.resume(n)?;
                }
                Ok(())
            }
            Event::SpikesOff => {
                self.net.spike_ppm = 0;
                Ok(())
            }
            Event::Bury => {
                let holder = self.holders().first().map(|(n, _)| *n);
                let n = holder.unwrap_or_else(|| self.rng.below(2) as usize);
                note!(self, n, "crashes for good");
                self.crash(n, false);
                self.machines[n].dead = true;
                Ok(())
            }
            Event::Heal => self.heal(),
            Event::Join { joiner, through } => self.join(joiner, through),
            Event::Force => {
                let n = self.machines.iter().position(|m| !m.dead).expect("one machine survives");
                note!(self, n, "wakeup --force");
                self.machines[n].left = false;
                self.machines[n].leaving = false;
                self.input(n, Input::Wakeup { force: true })
            }
            Event::Deadline => match self.holder_after {
                Some(_) => Ok(()),
                None => Err(Violation {
                    invariant: Invariant::Liveness,
                    detail: format!(
                        "no holder {:.3}s after the {}",
                        self.bound as f64 / SEC as f64,
                        if self.scenario.force { "forced wakeup" } else { "heal" }
                    ),
                }),
            },
            Event::Finish => {
                let live: Vec<&Machine> = self.machines.iter().filter(|m| !m.dead).collect();
                let replicas: Vec<(&str, &Replica)> =
                    live.iter().filter_map(|m| Some((m.config.me.as_str(), m.replica.as_ref()?))).collect();
                let origins: Vec<&str> = replicas.iter().map(|(name, _)| *name).collect();
                self.checker.convergence(&replicas, &origins, live.len() == self.machines.len())?;
                let held: BTreeSet<String> =
                    replicas.iter().flat_map(|(_, r)| r.ledger().into_iter().map(|e| e.message.message_id)).collect();
                // Only a chain promised a holder after the heal can answer.
                if self.live_from.is_none() {
                    return Ok(());
                }
                self.checker.answered(&|id| held.contains(id))
            }
        }
    }

    /// Whether a machine's timer of life `life` fires now; reschedules it
    /// while that life lasts. A paused process's timers do nothing.
    fn timer(&mut self, n: usize, life: u64, again: Event, gap: (u64, u64)) -> bool {
        let m = &self.machines[n];
        if m.life != life || m.node.is_none() {
            return false;
        }
        let paused = m.paused.is_some();
        let gap = self.rng.between(gap.0, gap.1);
        self.schedule(gap, again);
        if paused {
            self.trace.quiet(self.now, n, &[]);
        }
        !paused
    }

    fn start(&mut self, n: usize) -> Result<(), Violation> {
        let now = self.local(n);
        let forget = self.bug == Some(Bug::ForgetVotes);
        let seed = self.rng.next_u64();
        let m = &mut self.machines[n];
        if m.node.is_some() || m.dead {
            return Ok(());
        }
        m.life += 1;
        m.config.seed = seed;
        let durable = if forget { Durable { view: m.disk.view.clone(), ..Durable::default() } } else { m.disk.clone() };
        m.node = Some(Shell::new(Node::new(m.config.clone(), durable, now)));
        let (life, replica, left) = (m.life, m.replica.is_some(), m.left);
        note!(self, n, "starts (local clock {:.3}s)", now.as_secs_f64());
        self.members(n)?;
        let tick = self.rng.below(25 * MS);
        self.schedule(tick, Event::Tick(n, life));
        if replica {
            let (sync, agent) = (self.rng.below(250 * MS), self.rng.below(300 * MS));
            self.schedule(sync, Event::Sync(n, life));
            self.schedule(agent, Event::Agent(n, life));
            let outbox = self.rng.below(100 * MS);
            self.schedule(outbox, Event::Outbox(n, life));
            if self.scenario.pool.is_some() {
                let pool = self.rng.below(200 * MS);
                self.schedule(pool, Event::Pool(n, life));
            }
        }
        if left { self.input(n, Input::Leave) } else { Ok(()) }
    }

    /// Volatile state is lost; what the shell persisted stays. A crash that
    /// is not for good restarts after a while, sometimes as a reboot (the
    /// monotonic clock starts from a new origin).
    /// A crash while a write is stalled: the disk keeps what landed.
    fn crash_mid_write(&mut self, n: usize, restart: bool) {
        if let Some(durable) = self.machines[n].landing.take() {
            self.machines[n].disk = durable;
        }
        self.crash(n, restart);
    }

    fn crash(&mut self, n: usize, restart: bool) {
        let m = &mut self.machines[n];
        m.node = None;
        m.life += 1;
        m.paused = None;
        m.held.clear();
        m.crash_after = None;
        m.leaving = false;
        m.agent_paused = false;
        m.stall_next_write = false;
        m.stalled = false;
        m.landing = None;
        m.log_stuck = false;
        m.caught_up = None;
        m.outbox = Outbox::default();
        m.member = Member::default();
        m.coordination = None;
        if let Some(replica) = &mut m.replica {
            replica.crash();
        }
        let life = m.life;
        if restart {
            if self.rng.chance(500_000) {
                self.machines[n].clock.origin = self.rng.between(60 * SEC, 600 * SEC);
            }
            let down = self.rng.between(200 * MS, 10 * SEC);
            self.schedule(down, Event::Restart(n, life));
        }
    }

    fn resume(&mut self, n: usize) -> Result<(), Violation> {
        let m = &mut self.machines[n];
        m.paused = None;
        let held = std::mem::take(&mut m.held);
        note!(self, n, "resumes; reads {} buffered messages", held.len());
        for (from, payload) in held {
            if !self.machines[n].running() {
                break;
            }
            self.receive(from, n, payload)?;
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), Violation> {
        if self.scenario.live() && !self.revoked_any {
            let window = 2 * self.scenario.handoff_timeout.as_nanos() as u64;
            let handoff = self.handoff_asked.is_some_and(|at| at + window >= self.now);
            (self.live_from, self.bound) = (Some(self.now), self.liveness_bound(handoff));
            self.schedule(self.bound, Event::Deadline);
        }
        self.net.heal();
        note!(self, usize::MAX, "heal: no cuts, no loss, no pauses, every crashed machine restarts");
        for n in 0..self.machines.len() {
            // A stalled write ends now, in the crash it was headed for; the
            // machine restarts below with the rest.
            if self.machines[n].stalled && self.machines[n].node.is_some() {
                note!(self, n, "crashes in the middle of a write, at the heal");
                self.crash_mid_write(n, false);
            }
            self.machines[n].crash_after = None;
            self.machines[n].disk_fails_until = 0;
            self.machines[n].stall_next_write = false;
            if self.machines[n].paused.is_some() {
                self.resume(n)?;
            }
            if self.machines[n].node.is_none() && self.machines[n].joined {
                self.start(n)?;
            }
        }
        Ok(())
    }

    /// Feeds one input and carries out the effects, and those of what they
    /// lead to, in order.
    fn input(&mut self, n: usize, first: Input) -> Result<(), Violation> {
        self.run_shell(n, Todo::Input(first))
    }

    fn run_shell(&mut self, n: usize, first: Todo) -> Result<(), Violation> {
        let mut queue = VecDeque::from([first]);
        while let Some(todo) = queue.pop_front() {
            let now = self.local(n);
            let m = &mut self.machines[n];
            let Some(shell) = m.node.as_mut() else { return Ok(()) };
            let effects = match todo {
                Todo::Input(input) => shell.handle(input, now),
                Todo::Log => match &m.replica {
                    Some(replica) if !m.log_stuck => shell.log(replica.heads(), now),
                    _ => Vec::new(),
                },
                Todo::Retry => shell.retry(now).into_iter().collect(),
            };
            if effects.is_empty() {
                self.trace.quiet(self.now, n, &[]);
                continue;
            }
            let crash_at = m.crash_after.take();
            let count = effects.len();
            for (i, effect) in effects.into_iter().enumerate() {
                if crash_at == Some(i) {
                    note!(self, n, "crashes after {i} of {count} effects");
                    self.crash(n, true);
                    return Ok(());
                }
                self.effect(n, effect, &mut queue)?;
                if self.machines[n].node.is_none() {
                    return Ok(());
                }
            }
            if crash_at.is_some() {
                note!(self, n, "crashes after all {count} effects");
                self.crash(n, true);
                return Ok(());
            }
        }
        // As the real driver does after every turn: the store's epoch fence
        // rises to the highest epoch the lease knows was granted.
        let m = &mut self.machines[n];
        if let (Some(shell), Some(replica)) = (&m.node, &mut m.replica) {
            replica.fence(shell.node().highest_grant());
        }
        Ok(())
    }

    /// The I/O of one effect: the disk (with its faults), the network, the
    /// log, and the rest.
    fn effect(&mut self, n: usize, effect: Effect, queue: &mut VecDeque<Todo>) -> Result<(), Violation> {
        match effect {
            Effect::Write { number, durable } => self.write(n, number, durable),
            Effect::Send { to, envelope, after } => {
                let m = &self.machines[n];
                let allowed = m.node.as_ref().is_some_and(|shell| shell.may_send(after));
                if allowed || self.bug == Some(Bug::SendBeforePersist) {
                    let message = envelope.message.as_ref().expect("a node sends messages of its own version");
                    note!(self, n, "→ {to} {message:?}");
                    if to == self.names[n] {
                        // Its own vote, stored: back to the node, in turn.
                        queue.push_back(Todo::Input(Input::Received { from: to, envelope }));
                    } else {
                        let to = self.names.iter().position(|name| *name == to).expect("nodes send to voters");
                        self.transmit(n, to, Payload::Lease(envelope.encode()));
                    }
                }
            }
            Effect::ReadLog => {
                if self.rng.chance(self.scenario.stall_ppm) {
                    note!(self, n, "its log stops answering");
                    self.machines[n].log_stuck = true;
                } else {
                    queue.push_back(Todo::Log);
                }
            }
            Effect::Act(action) => self.act(n, action)?,
        }
        Ok(())
    }

    /// One write of the voter state, as the disk allows: it lands and is
    /// confirmed; it fails (the disk is full or failing); or it stalls, and
    /// the machine crashes before it is known to have ended, with the state
    /// either written or not (a rename is atomic: never half of it).
    fn write(&mut self, n: usize, number: u64, durable: Durable) {
        let now = self.local(n);
        let m = &mut self.machines[n];
        let Some(shell) = m.node.as_mut() else { return };
        if m.stalled {
            note!(self, n, "a write waits behind the stalled one");
        } else if std::mem::take(&mut m.stall_next_write) {
            m.stalled = true;
            let life = m.life;
            let landed = self.rng.chance(500_000);
            let after = self.rng.below(2 * SEC);
            note!(self, n, "a write stalls; it {} before the crash", if landed { "lands" } else { "does not land" });
            m.landing = landed.then_some(durable);
            self.schedule(after, Event::CrashMidWrite { machine: n, life });
        } else if self.now < m.disk_fails_until {
            note!(self, n, "cannot write its votes");
            shell.written(number, false, now);
        } else {
            note!(self, n, "persists {durable:?}");
            m.disk = durable;
            shell.written(number, true, now);
        }
    }

    fn act(&mut self, n: usize, action: Action) -> Result<(), Violation> {
        match action {
            Action::Awake { epoch, how } => {
                note!(self, n, "AWAKE epoch {epoch} ({how:?})");
                self.machines[n].agent_paused = false;
                self.checker.grant(n, epoch, &self.names)?;
            }
            Action::Asleep { epoch, reason } => {
                note!(self, n, "ASLEEP epoch {epoch}: {reason:?}");
                self.machines[n].agent_paused = false;
            }
            Action::Pause { epoch } => {
                note!(self, n, "pauses the agent (epoch {epoch})");
                self.machines[n].agent_paused = true;
            }
            Action::Resume { epoch } => {
                note!(self, n, "resumes the agent (epoch {epoch})");
                self.machines[n].agent_paused = false;
            }
            Action::HandoffDone { holder, epoch } => {
                let m = &mut self.machines[n];
                m.left |= std::mem::take(&mut m.leaving);
                m.log_stuck = false;
                self.handoffs_done += 1;
                let holder = holder.unwrap_or_else(|| "nobody".into());
                note!(self, n, "handoff done: {holder} holds epoch {epoch}");
            }
            Action::HandoffFailed { reason } => {
                let m = &mut self.machines[n];
                m.leaving = false;
                m.log_stuck = false;
                self.handoffs_failed += 1;
                note!(self, n, "handoff failed: {reason:?}");
            }
            Action::Send { .. } | Action::Persist(_) | Action::NeedHead | Action::CatchUp { .. } => {
                unreachable!("the shell turns these into effects")
            }
            Action::External(_) => {
                unreachable!("the simulator runs quorum grants only")
            }
        }
        Ok(())
    }

    fn transmit(&mut self, from: usize, to: usize, payload: Payload) {
        if !self.net.open(from, to) {
            return;
        }
        for delay in self.net.fate(&mut self.rng, true) {
            self.schedule(delay, Event::Deliver { from, to, payload: payload.clone() });
        }
    }

    fn deliver(&mut self, from: usize, to: usize, payload: Payload) -> Result<(), Violation> {
        if matches!(payload, Payload::Lease(_)) && self.refuses(to, from) {
            return Ok(());
        }
        let m = &mut self.machines[to];
        if !self.net.open(from, to) || m.node.is_none() {
            return Ok(());
        }
        match m.paused {
            Some(true) => m.held.push((from, payload)),
            Some(false) => {}
            None => self.receive(from, to, payload)?,
        }
        Ok(())
    }

    /// Whether lease messages between `a` and `b` are refused: one of them
    /// knows the other revoked (its link layer no longer talks to it).
    fn refuses(&self, a: usize, b: usize) -> bool {
        self.registries[a].revoked.contains(&b) || self.registries[b].revoked.contains(&a)
    }

    /// Tells machine `n`'s node what its registry holds.
    fn members(&mut self, n: usize) -> Result<(), Violation> {
        let registry = &self.registries[n];
        let active = registry.known.difference(&registry.revoked).map(|i| self.names[*i].clone()).collect();
        let revoked = registry.revoked.iter().map(|i| self.names[*i].clone()).collect();
        self.input(n, Input::Members { active, revoked })
    }

    /// `roost join` through `through`: each registry then holds the other,
    /// and the joiner starts with no view of the voters.
    fn join(&mut self, joiner: usize, through: usize) -> Result<(), Violation> {
        note!(self, joiner, "joins through {}", self.names[through]);
        let mut registry = self.registries[through].clone();
        registry.known.insert(joiner);
        self.registries[through] = registry.clone();
        self.registries[joiner] = registry;
        self.machines[joiner].joined = true;
        self.members(through)?;
        self.start(joiner)
    }

    fn receive(&mut self, from: usize, to: usize, payload: Payload) -> Result<(), Violation> {
        match payload {
            Payload::Lease(bytes) => {
                let envelope = Envelope::decode(&bytes).expect("lease messages decode");
                let message = envelope.message.as_ref().expect("every node speaks one version");
                note!(self, to, "← {} {message:?}", self.names[from]);
                self.input(to, Input::Received { from: self.names[from].clone(), envelope })
            }
            Payload::Sync(bytes, registry) => {
                self.trace.quiet(self.now, to, &bytes);
                if self.registries[to].merge(&registry) {
                    note!(self, to, "registry now {:?}", self.registries[to]);
                    self.members(to)?;
                }
                let message = protocol::Message::decode(&bytes).expect("sync messages decode");
                let now = self.local(to);
                let peer = self.names[from].clone();
                self.machines[to].replica.as_mut().expect("only replicas sync").receive(&peer, message, now);
                self.replica_moved(to)
            }
            Payload::PoolAsk(ask) => {
                self.pool_asked(from, to, ask);
                Ok(())
            }
            Payload::PoolAnswer(answer) => {
                self.pool_answered(to, answer);
                Ok(())
            }
        }
    }

    /// Anti-entropy: heads and missing entries to every peer that keeps data.
    fn sync(&mut self, n: usize) -> Result<(), Violation> {
        let now = self.local(n);
        for peer in 0..self.machines.len() {
            if peer == n || self.machines[peer].replica.is_none() {
                continue;
            }
            let name = self.names[peer].clone();
            let replica = self.machines[n].replica.as_mut().expect("only replicas sync");
            let registry = self.registries[n].clone();
            for message in replica.outgoing(&name, now) {
                self.transmit(n, peer, Payload::Sync(message.encode(), registry.clone()));
            }
        }
        self.replica_moved(n)
    }

    /// Shows the shell the log when it waits for it (a handoff catch-up),
    /// and tells the node whether it holds everything its peers hold.
    fn replica_moved(&mut self, n: usize) -> Result<(), Violation> {
        let now = self.local(n);
        let m = &mut self.machines[n];
        let Some(replica) = m.replica.as_ref() else { return Ok(()) };
        let waiting = m.node.as_ref().is_some_and(Shell::waiting_for_log);
        let done = replica.caught_up(now);
        let changed = m.caught_up != Some(done);
        m.caught_up = Some(done);
        if waiting {
            self.run_shell(n, Todo::Log)?;
        }
        if changed { self.input(n, Input::LogCaughtUp(done)) } else { Ok(()) }
    }

    /// The agent: one effect, if this machine may act and is not handing off.
    fn agent(&mut self, n: usize) {
        let m = &self.machines[n];
        if m.agent_paused || self.now >= self.agent_until {
            return;
        }
        let Some(epoch) = m.node.as_ref().and_then(|shell| shell.node().may_act(m.clock.read(self.now))) else {
            return;
        };
        let holders = self.holders();
        let id = self.checker.issue(n, epoch, &holders);
        let now = self.local(n);
        let replica = self.machines[n].replica.as_mut().expect("a holder keeps data");
        let (key, value) = (format!("agent-{}", id % 3), format!("effect {id} epoch {epoch}"));
        let Some((origin, seq, hash)) = replica.write_agent(&key, &value, epoch, now) else {
            return note!(self, n, "effect {id}: the store's fence refuses epoch {epoch}");
        };
        self.checker.acked(origin, seq, hash);
        note!(self, n, "effect {id} under epoch {epoch}");
        for delay in self.net.fate(&mut self.rng, false) {
            self.schedule(delay, Event::Effect(id));
        }
    }

    /// An effect reaches the sink, which refuses an epoch below the highest
    /// it has accepted.
    fn sink(&mut self, id: usize) -> Result<(), Violation> {
        let epoch = self.checker.epoch_of(id);
        let accepted = self.bug == Some(Bug::StaleSink) || self.sink.is_none_or(|highest| epoch >= highest);
        let verdict = if accepted { "accepts" } else { "refuses" };
        note!(self, usize::MAX, "sink {verdict} effect {id} (epoch {epoch})");
        if !accepted {
            self.refused += 1;
            return Ok(());
        }
        self.sink = Some(self.sink.map_or(epoch, |highest| highest.max(epoch)));
        self.checker.accept(id, &self.names)
    }

    /// An inbound message reaches a random running machine, which records
    /// it (and so acknowledges it to the channel).
    fn inbound(&mut self) {
        let n = self.rng.below(self.machines.len() as u64) as usize;
        let id = format!("msg{}", self.fresh_id());
        let topic = format!("topic-{}", self.rng.below(TOPICS));
        let now = self.local(n);
        let m = &mut self.machines[n];
        let Some(replica) = m.replica.as_mut().filter(|_| m.node.is_some() && m.paused.is_none()) else { return };
        let Some((origin, seq, hash)) = replica.record_message(&topic, &id, now) else { return };
        self.checker.acked(origin, seq, hash);
        self.checker.inbound(&id, n);
        note!(self, n, "records inbound {id} in {topic}");
    }

    /// The agent's outbox turn: the real shell's rules, on the simulated
    /// machine. Sends each committed reply whose commit the peers hold, while
    /// the lease lasts (with the pool, while this machine owns the reply's
    /// topic under the reply's topic stamp); then, once the round has
    /// settled, plans more.
    fn outbox(&mut self, n: usize) {
        let now = self.local(n);
        let now_ms = now.as_millis() as u64;
        let pool = self.scenario.pool.is_some();
        let bug = self.bug == Some(Bug::SendWithoutLease);
        let me = self.names[n].clone();
        let m = &mut self.machines[n];
        if m.agent_paused || !m.running() {
            return;
        }
        let Some(shell) = m.node.as_ref() else { return };
        let node = shell.node();
        let working = node.may_act(now).zip(node.lease_end());
        // The epoch work on `topic` runs under now, and until when.
        let acting = |member: &Member, topic: &str| match pool {
            true => member.acting(topic, now_ms).map(|(epoch, until)| (epoch, Duration::from_millis(until))),
            false => working,
        };
        let status = node.status(now);
        let life = m.life;
        let Some(replica) = m.replica.as_mut() else { return };
        let peers = replica.peer_holdings(now);
        let seen: Vec<Seen> =
            status.peers.iter().map(|p| Seen { id: p.id.clone(), live: p.live, witness: p.witness }).collect();
        let keepers = outbox::keepers(&me, &status.voter_ids, &seen, node.forced());
        let mut leaving = Vec::new();
        let mut ended = Vec::new();
        let member = &m.member;
        m.outbox.jobs.retain(|topic, job| {
            let work = acting(member, topic);
            let leased =
                work.is_some_and(|(epoch, until)| epoch == job.epoch && outbox::may_send(now, until, SEND_MARGIN));
            if !leased && !bug {
                // The role (or the topic) is gone or going: the next holder
                // (or owner) sends it.
                let keep = work.is_some_and(|(epoch, _)| epoch == job.epoch);
                if !keep {
                    ended.push(topic.clone());
                }
                return keep;
            }
            if outbox::held(&me, &job.commit, &keepers, &peers) && job.sent_at.is_none_or(|at| self.now >= at + SEC) {
                job.sent_at = Some(self.now);
                leaving.push((
                    topic.clone(),
                    job.message.message_id.clone(),
                    job.reply.key.clone(),
                    job.reply.text.clone(),
                ));
            }
            true
        });
        if pool {
            for topic in ended {
                m.member.finish(&topic);
            }
        }
        // The round's key and each topic's epoch: the lease's, or with the
        // pool each owned topic's stamp, the round keyed by the member's
        // generation as the shell keys it.
        let round: Option<(u64, Vec<Lane>)> = match (pool, working) {
            (true, _) => {
                let owned: Vec<Lane> =
                    m.member.owned(now_ms).into_iter().map(|(topic, stamp)| (Some(topic.to_string()), stamp)).collect();
                (!owned.is_empty()).then(|| (m.member.generation(), owned))
            }
            (false, Some((epoch, _))) => Some((epoch, vec![(None, epoch)])),
            (false, None) => None,
        };
        if let Some((key, lanes)) = round {
            let required = outbox::voters_to_meet(&me, &status.voter_ids, &seen);
            let heads = replica.heads().clone();
            let meet = outbox::Meet { me: &me, keepers: &keepers, required: &required };
            if m.outbox.settle.ready(key, &heads, &peers, meet, now) {
                let open = replica.open_ledger();
                for (only, epoch) in lanes {
                    let entries: Vec<ledger::Entry> =
                        open.iter().filter(|e| only.as_ref().is_none_or(|t| e.message.topic == *t)).cloned().collect();
                    let jobs = &m.outbox.jobs;
                    let plan = ledger::plan(&entries, epoch, &|topic| jobs.contains_key(topic), Limits::default());
                    for work in plan {
                        let topic = work.topic().to_string();
                        if pool && !m.member.start(&topic, epoch, now_ms) {
                            continue;
                        }
                        let job = match work {
                            Work::Run { message, attempt } => {
                                let claim = Reply::claimed(&message.id, attempt, None, &me);
                                // A handler whose every answer differs: two
                                // runs for one message would show at the
                                // receiver.
                                let text = format!("{me} at epoch {epoch}, draw {}", self.rng.next_u64() % 1_000_000);
                                replica.write_reply(&claim, epoch, now).and_then(|_| {
                                    let replied = claim.replied(text, &me);
                                    let (origin, seq, hash) = replica.write_reply(&replied, epoch, now)?;
                                    self.checker.acked(origin.clone(), seq, hash);
                                    let commit = Heads::from([(origin, seq)]);
                                    Some(Job { message, reply: replied, epoch, commit, sent_at: None })
                                })
                            }
                            Work::Send { message, reply, .. } => {
                                Some(Job { message, reply, epoch, commit: replica.heads().clone(), sent_at: None })
                            }
                            Work::Fail { reply, .. } => {
                                replica.write_reply(&reply.failed(&me), epoch, now);
                                None
                            }
                        };
                        match job {
                            Some(job) => {
                                m.outbox.jobs.insert(topic, job);
                            }
                            None if pool => m.member.finish(&topic),
                            None => {}
                        }
                    }
                }
            }
        }
        for (topic, message, key, text) in leaving {
            note!(self, n, "sends the reply to {message} ({key})");
            let text = text.unwrap_or_default();
            for delay in self.net.fate(&mut self.rng, false) {
                let reply = Event::Reply {
                    from: n,
                    life,
                    topic: topic.clone(),
                    message: message.clone(),
                    key: key.clone(),
                    text: text.clone(),
                };
                self.schedule(delay, reply);
            }
        }
    }

    /// The receiver took a reply `n` sent: it commits that it was sent, if it
    /// still works under the reply's epoch (with the pool, still owns its
    /// topic under the reply's stamp).
    fn reply_taken(&mut self, n: usize, life: u64, topic: &str, message: &str) {
        let now = self.local(n);
        let pool = self.scenario.pool.is_some();
        let me = self.names[n].clone();
        let m = &mut self.machines[n];
        if m.life != life || !m.running() {
            return;
        }
        let Some(job) = m.outbox.jobs.remove(topic) else { return };
        if job.message.message_id != message {
            m.outbox.jobs.insert(topic.to_string(), job);
            return;
        }
        let working = match pool {
            true => m.member.acting(topic, now.as_millis() as u64).map(|(epoch, _)| epoch),
            false => m.node.as_ref().and_then(|shell| shell.node().may_act(now)),
        };
        if working == Some(job.epoch)
            && let Some(replica) = m.replica.as_mut()
            && let Some((origin, seq, hash)) = replica.write_reply(&job.reply.sent(&me), job.epoch, now)
        {
            self.checker.acked(origin, seq, hash);
        }
        if pool {
            m.member.finish(topic);
        }
    }

    /// The pool's settings, as every machine's `[pool]` has them.
    fn pool_settings(&self) -> Settings {
        let timing = Timing {
            lease_ms: POOL_LEASE_MS,
            margin_ms: POOL_MARGIN_MS,
            drift_ppm: u64::from(Tenure::DEFAULT_DRIFT_PPM),
        };
        // The simulator keeps no wall clocks: every offset is zero.
        Settings { timing, clock_bound_ms: 2000, transfer_interval_ms: 1000 }
    }

    /// The pool's turn on machine `n`, as the shell's loop runs it: while it
    /// holds the role it coordinates — a new coordinator for a new lease
    /// epoch, from the replicated placements — and places the ledger's new
    /// topics; then it asks the holder it knows of for its topics, with the
    /// topics it released.
    fn pool_turn(&mut self, n: usize) {
        let now = self.local(n);
        let now_ms = now.as_millis() as u64;
        let settings = self.pool_settings();
        let no_settle = self.bug == Some(Bug::PoolNoSettle);
        let capacity = self.scenario.pool.as_ref().map_or(1, |capacities| capacities[n]);
        let m = &mut self.machines[n];
        if !m.running() {
            return;
        }
        let Some(shell) = m.node.as_ref() else { return };
        let acting = shell.node().may_act(now);
        let holder = shell.node().status(now).holder;
        let Some(replica) = m.replica.as_mut() else { return };
        let mut recorded = Vec::new();
        match acting {
            Some(epoch) => {
                if m.coordination.as_ref().map(|c| c.lease_epoch) != Some(epoch) {
                    let placements = replica
                        .agent_states(PLACEMENT_PREFIX)
                        .iter()
                        .filter_map(|(key, value)| Placed::recorded(key, value))
                        .collect();
                    // The broken variant tells the core it took the role
                    // long ago, so it does not settle.
                    let since = if no_settle { now_ms.saturating_sub(settings.timing.inherited_ms()) } else { now_ms };
                    m.coordination = Some(Coordination::new(settings, epoch, since, placements));
                }
                let c = m.coordination.as_mut().expect("just made");
                let topics = replica.topics();
                for (topic, placed) in c.place_topics(topics.iter().map(String::as_str), now_ms) {
                    let (key, value) = placed.record(&topic);
                    recorded.extend(replica.write_agent(&key, &value, epoch, now));
                }
            }
            None => m.coordination = None,
        }
        m.member.forget_lapsed(now_ms);
        let releases = m.member.releasable();
        for (origin, seq, hash) in recorded {
            self.checker.acked(origin, seq, hash);
        }
        let ask = roost_pool::Ask { capacity, asked_at_ms: now_ms, clock_offset_ms: 0, releases };
        match holder.and_then(|holder| self.names.iter().position(|name| *name == holder)) {
            Some(holder) if holder == n => self.pool_asked(n, n, ask),
            Some(holder) => self.transmit(n, holder, Payload::PoolAsk(ask)),
            None => {}
        }
    }

    /// The coordinator on `to` answers `from`'s ask, while it holds the
    /// role under the epoch it coordinates for.
    fn pool_asked(&mut self, from: usize, to: usize, ask: roost_pool::Ask) {
        let now = self.local(to);
        let m = &mut self.machines[to];
        let Some(shell) = m.node.as_ref() else { return };
        let epoch = shell.node().may_act(now);
        let Some(c) = m.coordination.as_mut().filter(|c| Some(c.lease_epoch) == epoch) else { return };
        let answer = c.ask(&self.names[from], &ask, now.as_millis() as u64);
        if !answer.drop.is_empty() {
            note!(self, to, "pool: {} drops {:?}", self.names[from], answer.drop);
        }
        if from == to {
            self.pool_answered(to, answer);
        } else {
            self.transmit(to, from, Payload::PoolAnswer(answer));
        }
    }

    /// A member takes the coordinator's answer: it raises each granted
    /// topic's fence first, as the shell does, then takes the grants and
    /// drops.
    fn pool_answered(&mut self, n: usize, answer: roost_pool::Answer) {
        let timing = self.pool_settings().timing;
        let m = &mut self.machines[n];
        let Some(replica) = m.replica.as_mut() else { return };
        for grant in &answer.grants {
            replica.observe_topic_epoch(&grant.topic, grant.epoch);
        }
        let before = m.member.generation();
        for grant in &answer.grants {
            m.member.granted(grant, &timing);
        }
        for (topic, epoch) in &answer.drop {
            m.member.drop_topic(topic, *epoch);
        }
        if m.member.generation() != before {
            let grants: Vec<(&str, u64)> = answer.grants.iter().map(|g| (g.topic.as_str(), g.epoch)).collect();
            note!(self, n, "pool: granted {grants:?}");
        }
    }

    /// A person moves a topic the holder placed to a machine picked at
    /// random, confirming a move to an offline machine now and then.
    fn transfer(&mut self) {
        let Some(&(h, epoch)) = self.holders().first() else { return };
        let replicas: Vec<usize> = (0..self.machines.len()).filter(|i| self.machines[*i].replica.is_some()).collect();
        let to = self.names[self.rng.pick(&replicas)].clone();
        let confirm = self.rng.chance(300_000);
        let pick = self.rng.next_u64();
        let now = self.local(h);
        let m = &mut self.machines[h];
        let Some(c) = m.coordination.as_mut().filter(|c| c.lease_epoch == epoch) else { return };
        let topics: Vec<String> = c.placements().keys().cloned().collect();
        if topics.is_empty() {
            return;
        }
        let topic = topics[(pick % topics.len() as u64) as usize].clone();
        let moved = c.transfer(&topic, &to, confirm, now.as_millis() as u64);
        note!(self, h, "pool: move {topic} to {to} (confirmed: {confirm}): {moved:?}");
        if let Ok(Transfer::Moved { .. }) = moved {
            let placed = Placed { machine: to, pinned: true };
            let replica = self.machines[h].replica.as_mut().expect("a holder keeps data");
            let (key, value) = placed.record(&topic);
            if let Some((origin, seq, hash)) = replica.write_agent(&key, &value, epoch, now) {
                self.checker.acked(origin, seq, hash);
            }
        }
    }

    fn client_write(&mut self) {
        let n = self.rng.below(self.machines.len() as u64) as usize;
        let key = format!("k{}", self.rng.below(4));
        let value = self.rng.below(1000).to_string();
        let now = self.local(n);
        let m = &mut self.machines[n];
        let Some(replica) = m.replica.as_mut().filter(|_| m.node.is_some() && m.paused.is_none()) else { return };
        let Some((origin, seq, hash)) = replica.write(&key, &value, now) else { return };
        self.checker.acked(origin, seq, hash);
        note!(self, n, "client writes {key} = {value} (seq {seq})");
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Draws and applies one fault.
    fn chaos(&mut self) -> Result<(), Violation> {
        let size = self.machines.len();
        let alive: Vec<usize> = (0..size).filter(|i| !self.machines[*i].dead).collect();
        let running: Vec<usize> = alive.iter().copied().filter(|i| self.machines[*i].running()).collect();
        let lasting = self.rng.between(SEC, 15 * SEC);
        let ttl = self.scenario.tenure.ttl.as_nanos() as u64;
        // The holder is the one to hurt: pausing or isolating it is what
        // tests the lease's timing, so those faults often pick it.
        let holder = self.holders().first().map(|(n, _)| *n).filter(|_| self.rng.chance(700_000));
        let revoke = if self.scenario.revocation && !self.revoked_any { 6 } else { 0 };
        let disk = if self.scenario.disk_faults { 8 } else { 0 };
        match self.rng.weighted(&[15, 10, 10, 15, 20, 8, 7, 15, 8, revoke, disk, disk]) {
            0 => {
                let side: Vec<bool> = match holder {
                    Some(h) => (0..size).map(|i| i == h).collect(),
                    None => (0..size).map(|_| self.rng.chance(500_000)).collect(),
                };
                let links: Vec<(usize, usize)> = (0..size)
                    .flat_map(|a| (0..size).map(move |b| (a, b)))
                    .filter(|(a, b)| side[*a] != side[*b])
                    .collect();
                let id = self.fresh_id();
                note!(self, usize::MAX, "cut {id}: split {side:?} for {:.1}s", lasting as f64 / 1e9);
                self.net.cut(id, links);
                self.schedule(lasting, Event::Uncut(id));
            }
            1 => {
                let (a, b) = (self.rng.pick(&alive), self.rng.pick(&alive));
                if a != b {
                    let id = self.fresh_id();
                    note!(
                        self,
                        usize::MAX,
                        "cut {id}: {} → {} one way for {:.1}s",
                        self.names[a],
                        self.names[b],
                        lasting as f64 / 1e9
                    );
                    self.net.cut(id, vec![(a, b)]);
                    self.schedule(lasting, Event::Uncut(id));
                }
            }
            2 => {
                let (a, c) = (self.rng.pick(&alive), self.rng.pick(&alive));
                if a != c && alive.len() >= 3 {
                    let id = self.fresh_id();
                    note!(
                        self,
                        usize::MAX,
                        "cut {id}: bridge, {} and {} apart for {:.1}s",
                        self.names[a],
                        self.names[c],
                        lasting as f64 / 1e9
                    );
                    self.net.cut(id, vec![(a, c), (c, a)]);
                    self.schedule(lasting, Event::Uncut(id));
                }
            }
            3 => {
                if let Some(&n) = running.get(self.rng.below(running.len().max(1) as u64) as usize) {
                    if self.rng.chance(300_000) {
                        let after = self.rng.below(4) as usize;
                        note!(self, n, "will crash in the middle of its next step");
                        self.machines[n].crash_after = Some(after);
                    } else {
                        note!(self, n, "crashes");
                        self.crash(n, true);
                    }
                }
            }
            4 => {
                let any = running.get(self.rng.below(running.len().max(1) as u64) as usize).copied();
                if let Some(n) = holder.filter(|h| running.contains(h)).or(any) {
                    let pause = ttl * self.rng.between(300, 3000) / 1000;
                    let keep = self.rng.chance(500_000);
                    let life = self.machines[n].life;
                    self.machines[n].paused = Some(keep);
                    let what = if keep { "buffering" } else { "dropping" };
                    note!(self, n, "paused for {:.2}s, {what} messages", pause as f64 / 1e9);
                    self.schedule(pause, Event::Resume(n, life));
                }
            }
            5 => {
                let id = self.fresh_id();
                let ppm = self.rng.pick(&[50_000, 200_000, 500_000]);
                note!(self, usize::MAX, "loss {ppm} ppm for {:.1}s", lasting as f64 / 1e9);
                self.net.lossy(id, ppm);
                self.schedule(lasting, Event::Lossless(id));
            }
            6 => {
                let id = self.fresh_id();
                let max = self.rng.between(100 * MS, 800 * MS);
                note!(self, usize::MAX, "delays up to {}ms for {:.1}s", max / MS, lasting as f64 / 1e9);
                self.net.storm(id, max);
                self.schedule(lasting, Event::Calm(id));
            }
            7 if self.rng.chance(250_000) => {
                // A machine's channels go out of reach or come back: the
                // role is handed over only to one that says it can work.
                if let Some(&n) = running.get(self.rng.below(running.len().max(1) as u64) as usize) {
                    let able = self.rng.chance(500_000);
                    note!(self, n, "says it {} do the agent's work", if able { "can" } else { "cannot" });
                    self.input(n, Input::Able(able))?;
                }
                // The holder's agent is stuck: it hands the role over.
                if let Some(n) = holder.filter(|h| running.contains(h)) {
                    note!(self, n, "hands the role over");
                    self.handoff_asked = Some(self.now);
                    self.input(n, Input::HandOver)?;
                }
            }
            7 => {
                if let Some(&n) = running.get(self.rng.below(running.len().max(1) as u64) as usize) {
                    note!(self, n, "wakeup");
                    self.handoff_asked = Some(self.now);
                    self.machines[n].left = false;
                    self.machines[n].leaving = false;
                    self.input(n, Input::Wakeup { force: false })?;
                }
            }
            10 => {
                if let Some(&n) = running.get(self.rng.below(running.len().max(1) as u64) as usize) {
                    note!(self, n, "its disk fails for {:.1}s", lasting as f64 / 1e9);
                    self.machines[n].disk_fails_until = self.now + lasting;
                    self.schedule(lasting, Event::DiskMended(n));
                }
            }
            11 => {
                if let Some(&n) = running.get(self.rng.below(running.len().max(1) as u64) as usize) {
                    note!(self, n, "its next write will stall");
                    self.machines[n].stall_next_write = true;
                }
            }
            9 => {
                // `roost instance revoke` typed on one machine of the chain.
                let joined: Vec<usize> = alive.iter().copied().filter(|i| self.machines[*i].joined).collect();
                let (target, typed_on) = (self.rng.pick(&joined), self.rng.pick(&joined));
                if target != typed_on {
                    note!(self, typed_on, "revokes {}", self.names[target]);
                    self.revoked_any = true;
                    self.registries[typed_on].revoked.insert(target);
                    self.members(typed_on)?;
                }
            }
            _ => {
                let candidates: Vec<usize> =
                    running.iter().copied().filter(|i| self.machines[*i].replica.is_some()).collect();
                let staying =
                    alive.iter().filter(|i| self.machines[**i].replica.is_some() && !self.machines[**i].left).count();
                // Two voters forcing keep both: a machine outside the voters
                // never hears the epochs the other is granted alone.
                if let Some(&n) = candidates.get(self.rng.below(candidates.len().max(1) as u64) as usize)
                    && !self.machines[n].left
                    && !self.machines[n].leaving
                    && !self.scenario.force
                    && staying >= 2
                {
                    note!(self, n, "leave");
                    self.handoff_asked = Some(self.now);
                    self.machines[n].leaving = true;
                    self.input(n, Input::Leave)?;
                }
            }
        }
        Ok(())
    }
}

/// The topic a round plans for (every topic when none) and the epoch its
/// work runs under.
type Lane = (Option<String>, u64);
