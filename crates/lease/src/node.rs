//! One machine's part in the lease: voter, proposer, holder, and both ends
//! of a handoff, as one state machine.
//!
//! The shell feeds [`Input`]s with the current time and carries out the
//! returned [`Action`]s in order (a [`Action::Persist`] before any send that
//! follows it). Messages a node sends itself are handled inside
//! [`Node::handle`], so its own vote counts like any other.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use roost_core::protocol::Heads;

use crate::acceptor::{Acceptor, Durable};
use crate::ballot::{Ballot, NodeId};
use crate::message::{Envelope, Message, Refusal};
use crate::report::{Abort, Failover, HandoffFailure, NotEligible, SleepReason, Stage};
use crate::tenure::Tenure;
use crate::view::{View, ViewId};

mod external;

pub use external::{ExternalAnswer, ExternalRequest};

/// Where grants come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantor {
    /// A majority of `voters` (PaxosLease).
    Quorum,
    /// Something linearizable outside, such as etcd: the shell carries out
    /// [`Action::External`] and reports the answers ([`Input::External`]).
    External,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub me: NodeId,
    /// A witness votes but never takes the role.
    pub witness: bool,
    pub tenure: Tenure,
    pub grantor: Grantor,
    /// How long a standby waits for its log to catch up before taking a free
    /// lease anyway.
    pub catch_up_limit: Duration,
    /// How long each stage of a handoff may take before it is abandoned.
    pub handoff_timeout: Duration,
    /// Seeds the jitter that keeps competing proposers apart.
    pub seed: u64,
}

impl Config {
    pub fn new(me: &str, tenure: Tenure) -> Config {
        Config {
            me: me.to_string(),
            witness: false,
            tenure,
            grantor: Grantor::Quorum,
            catch_up_limit: Duration::from_millis(500),
            handoff_timeout: Duration::from_secs(2),
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed; due timers fire.
    Tick,
    Received {
        from: NodeId,
        envelope: Envelope,
    },
    /// `roost wakeup`: take the role, by handoff if someone holds it.
    Wakeup {
        force: bool,
    },
    /// `roost leave`: hand the role off (if held) and stop taking it.
    Leave,
    /// The holder cannot do the role's work (its agent is stuck): hand the
    /// role to a live standby that can and stay eligible.
    HandOver,
    /// Whether this machine could do the role's work now (its agent reaches
    /// its channels); told to every peer in heartbeats. It stays eligible
    /// either way: with the holder gone, a machine that can only record
    /// messages is better than none.
    Able(bool),
    /// The machine is shutting down: a holder stops acting and releases its
    /// lease, so another machine takes it at once rather than after the TTL.
    Stop,
    /// The machines of the chain as this machine's registry knows them: the
    /// holder adds `active` machines it hears to the voters, one at a time,
    /// and removes `revoked` ones.
    Members {
        active: Vec<NodeId>,
        revoked: Vec<NodeId>,
    },
    /// Whether this machine's log holds everything its reachable peers hold.
    LogCaughtUp(bool),
    /// The highest epoch this machine's log has seen (its epoch fence): a
    /// grant this node asks for later, a forced one included, is above it,
    /// so the log never refuses the new holder's writes.
    EpochSeen(u64),
    /// The holder's log head, asked for by [`Action::NeedHead`].
    Head(Heads),
    /// The handoff target's log now covers `head`.
    CaughtUp {
        epoch: u64,
        head: Heads,
    },
    /// The lease server's answer to an [`Action::External`] request.
    External(ExternalAnswer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        to: NodeId,
        envelope: Envelope,
    },
    /// Store the voter state before sending anything after this action.
    Persist(Durable),
    /// Start acting as the agent, stamping effects with `epoch`.
    Awake {
        epoch: u64,
        how: Takeover,
    },
    /// Stop acting now.
    Asleep {
        epoch: u64,
        reason: SleepReason,
    },
    /// The holder stops taking new work (a handoff began)…
    Pause {
        epoch: u64,
    },
    /// …and takes it again (the handoff was abandoned).
    Resume {
        epoch: u64,
    },
    /// Report the log head with [`Input::Head`].
    NeedHead,
    /// Catch the log up to `head`, then report [`Input::CaughtUp`].
    CatchUp {
        epoch: u64,
        head: Heads,
    },
    /// A wakeup, leave or handoff finished: `holder` (this machine or
    /// another) holds `epoch`, or no holder is known.
    HandoffDone {
        holder: Option<NodeId>,
        epoch: u64,
    },
    HandoffFailed {
        reason: HandoffFailure,
    },
    /// Ask the lease server, and report its answer with [`Input::External`].
    External(ExternalRequest),
}

/// The part a machine plays in the role now, as `roost status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRole {
    Awake,
    /// Awake, and handing the role to another machine.
    HandingOff,
    /// Asking the voters for the role.
    Acquiring,
    Standby,
    /// A voter that is never awake.
    Witness,
}

/// What a node believes, for `/health` and `roost status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub role: LeaseRole,
    pub holder: Option<NodeId>,
    pub epoch: Option<u64>,
    /// Machines (this one included) heard claiming the role within a TTL.
    pub claims_seen: usize,
    pub voters: usize,
    /// The view this node holds, and its voters.
    pub view: Option<ViewId>,
    pub voter_ids: Vec<NodeId>,
    /// Every machine heard from, with what it last said of itself.
    pub peers: Vec<PeerSeen>,
    /// Voters (this one included) heard from within a TTL.
    pub voters_heard: usize,
    /// Whether a failover could happen now, and if not, why.
    pub failover: Failover,
    /// Why this machine cannot take the role, if it cannot.
    pub not_eligible: Option<NotEligible>,
    /// How long the held lease has left.
    pub lease_left: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Peer {
    heard: Duration,
    claim: Option<u64>,
    eligible: bool,
    witness: bool,
    leaving: bool,
    able: bool,
}

/// A machine this node has heard from, as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeen {
    pub id: NodeId,
    pub witness: bool,
    pub eligible: bool,
    pub leaving: bool,
    /// Said it could do the role's work.
    pub able: bool,
    /// Heard within a TTL.
    pub live: bool,
}

#[derive(Debug, Clone)]
enum Phase {
    Preparing { promises: BTreeSet<NodeId> },
    Proposing { sent_at: Duration, accepted: BTreeSet<NodeId> },
}

#[derive(Debug, Clone)]
struct Attempt {
    ballot: Ballot,
    req: u64,
    phase: Phase,
    refused: BTreeSet<NodeId>,
    /// Longest open lease reported by a refusing voter.
    wait: Duration,
    started: Duration,
    /// When the current phase's request last went out.
    last_sent: Duration,
    force: bool,
}

#[derive(Debug, Clone)]
struct Renewal {
    req: u64,
    sent_at: Duration,
    accepted: BTreeSet<NodeId>,
}

#[derive(Debug, Clone)]
struct Outgoing {
    target: NodeId,
    deadline: Duration,
    head: Option<Heads>,
    purpose: Purpose,
}

/// Why a holder hands the role over: a standby asked for it (`roost wakeup`
/// there), or a command here waits for the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Asked,
    /// `roost leave`: hand the role off and stop taking it.
    Leave,
    /// The holder cannot do the role's work: hand it off, stay eligible.
    HandOver,
}

impl Purpose {
    /// A command on this machine waits for a `HandoffDone` or `HandoffFailed`.
    fn reported(self) -> bool {
        self != Purpose::Asked
    }
}

#[derive(Debug, Clone)]
struct Holding {
    ballot: Ballot,
    valid_until: Duration,
    /// Taken with `--force`: renewals count this voter alone until a majority
    /// answers again.
    forced: bool,
    last_renewal: Duration,
    renewals: Vec<Renewal>,
    outgoing: Option<Outgoing>,
    /// The view a majority of which accepted the latest grant or renewal:
    /// the lease is held by that majority until it runs out. The voters
    /// change only from such a view, so the next view's majorities meet it.
    backed_by: Option<ViewId>,
}

/// The part this machine plays now: one at a time, so a holder is never also
/// asking for the lease or yielding it.
#[derive(Debug, Clone)]
enum Role {
    Standby,
    Acquiring(Attempt),
    Awake(Holding),
    /// Handed over: no longer acting, waiting for the voters to confirm the
    /// release before telling the target.
    Yielding(Yielding),
}

/// The holder's side after the ack: released, waiting for voters to confirm.
#[derive(Debug, Clone)]
struct Yielding {
    target: NodeId,
    ballot: Ballot,
    req: u64,
    released: BTreeSet<NodeId>,
    deadline: Duration,
    /// When the release last went out to the voters that had not confirmed it.
    last_sent: Duration,
    purpose: Purpose,
}

/// A holder's word to its successor that the lease is released, repeated
/// until the successor claims the role or the handoff's time is up: if it
/// were lost, the successor would wait out the whole handoff.
#[derive(Debug, Clone)]
struct Yielded {
    target: NodeId,
    epoch: u64,
    last_sent: Duration,
    until: Duration,
}

/// The target's side of a handoff: how far it got, and until when the
/// current stage may take.
#[derive(Debug, Clone)]
struct HandoffIn {
    holder: NodeId,
    epoch: u64,
    stage: Stage,
    deadline: Duration,
    /// When this machine first heard of the handoff.
    since: Duration,
}

/// How a machine came to hold the role, as far as it can tell: for the
/// operator's view of failovers and handoffs, never for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// It had never heard another machine claim the role.
    First,
    /// It took the role after the last claim it heard from another machine
    /// went `silent` that long before.
    Failover { silent: Duration },
    /// It was handed the role (a `roost wakeup`, or a holder leaving or
    /// handing over), which `took` that long from the start.
    Handoff { took: Duration },
}

/// A `roost wakeup` (or a handoff this machine was chosen for) waiting for
/// this machine to become awake.
#[derive(Debug, Clone)]
struct Wakeup {
    /// When the move began: the command, or the holder's first word of it.
    since: Duration,
    deadline: Duration,
    /// The holder that refused to hand over, and why: it is not asked again
    /// within this wakeup, and its answer is reported if the wakeup fails.
    refusal: Option<Refused>,
}

#[derive(Debug, Clone)]
struct Refused {
    holder: Ballot,
    reason: String,
}

impl Wakeup {
    fn refused(&self, holder: &Ballot) -> bool {
        self.refusal.as_ref().is_some_and(|r| r.holder == *holder)
    }
}

pub struct Node {
    config: Config,
    acceptor: Acceptor,
    role: Role,
    peers: BTreeMap<NodeId, Peer>,
    /// Peers that speak another protocol version, and which.
    incompatible: BTreeMap<NodeId, u16>,
    /// The registry's machines not revoked, and those revoked.
    active: BTreeSet<NodeId>,
    revoked: BTreeSet<NodeId>,
    /// The view each peer last said it holds.
    views_heard: BTreeMap<NodeId, Option<ViewId>>,
    /// When each peer was last sent this node's view, and which.
    views_told: BTreeMap<NodeId, (ViewId, Duration)>,
    max_round: u64,
    /// The highest epoch this node knows was granted (its own grants, the
    /// proposals it accepted, claims and views it heard): what the log's
    /// epoch fence rises to. Not a round merely promised, which a machine
    /// cut off from the rest promises itself again and again; fencing the
    /// log at such a round would refuse the real holder's writes.
    granted: u64,
    next_req: u64,
    rng: u64,
    next_attempt: Duration,
    last_heartbeat: Option<Duration>,
    free_since: Option<Duration>,
    log_caught_up: bool,
    left: bool,
    /// What [`Input::Able`] last said.
    able: bool,
    /// A leave waiting for the holder to remove this machine, until then.
    leaving: Option<Duration>,
    /// The highest epoch this machine has held.
    held: u64,
    /// This input changed the voter state: answers to this machine go
    /// through the shell, which holds them until the state is stored.
    unstored: bool,
    handoff_in: Option<HandoffIn>,
    /// When another machine's claim to the role was last heard.
    claim_heard: Option<Duration>,
    wakeup: Option<Wakeup>,
    yielded: Option<Yielded>,
    loopback: VecDeque<(NodeId, Message)>,
    actions: Vec<Action>,
}

impl Node {
    /// A node starting (or restarting) at `now` with the voter state it kept
    /// (a chain's founder starts from [`View::genesis`], a machine that
    /// joined from no view at all).
    pub fn new(config: Config, durable: Durable, now: Duration) -> Node {
        let promised = durable.promised.as_ref().map_or(0, |b| b.round);
        let granted =
            durable.accepted.as_ref().map_or(0, |(b, _)| b.round).max(durable.view.as_ref().map_or(0, |v| v.id.epoch));
        let max_round = promised.max(granted);
        let active = durable.view.iter().flat_map(|v| v.voters.iter().cloned()).collect();
        Node {
            rng: config.seed | 1,
            acceptor: Acceptor::restore(durable, now),
            config,
            role: Role::Standby,
            peers: BTreeMap::new(),
            incompatible: BTreeMap::new(),
            active,
            revoked: BTreeSet::new(),
            views_heard: BTreeMap::new(),
            views_told: BTreeMap::new(),
            max_round,
            granted,
            next_req: 1,
            next_attempt: now,
            last_heartbeat: None,
            free_since: None,
            log_caught_up: false,
            left: false,
            able: true,
            leaving: None,
            held: 0,
            unstored: false,
            handoff_in: None,
            claim_heard: None,
            wakeup: None,
            yielded: None,
            loopback: VecDeque::new(),
            actions: Vec::new(),
        }
    }

    /// The view of voters this node holds.
    pub fn view(&self) -> Option<&View> {
        self.acceptor.durable().view.as_ref()
    }

    fn view_id(&self) -> Option<ViewId> {
        self.view().map(|v| v.id)
    }

    /// The voters of the view; with a lease server granting, whose voters do
    /// not matter, the machines of the registry.
    fn voter_list(&self) -> Vec<NodeId> {
        match self.config.grantor {
            Grantor::Quorum => self.view().map(|v| v.voters.clone()).unwrap_or_default(),
            Grantor::External => {
                let members: BTreeSet<&NodeId> = self.active.iter().chain([&self.config.me]).collect();
                members.into_iter().cloned().collect()
            }
        }
    }

    /// How many machines vote, this one included if it votes.
    pub fn voters(&self) -> usize {
        self.voter_list().len()
    }

    pub fn me(&self) -> &str {
        &self.config.me
    }

    /// The epoch this node acts under, if it is awake.
    pub fn acting_epoch(&self) -> Option<u64> {
        match &self.role {
            Role::Awake(h) => Some(h.ballot.round),
            _ => None,
        }
    }

    /// The epoch this node may act under at `now`: awake, and its lease
    /// confirmed long enough ago to still hold everywhere.
    pub fn may_act(&self, now: Duration) -> Option<u64> {
        match &self.role {
            Role::Awake(h) if now < h.valid_until => Some(h.ballot.round),
            _ => None,
        }
    }

    /// When this node's lease ends (or ended) on its clock, while it holds
    /// the role: past this it may not act, even before it notices.
    pub fn lease_end(&self) -> Option<Duration> {
        match &self.role {
            Role::Awake(h) => Some(h.valid_until),
            _ => None,
        }
    }

    /// The epoch and lease end of a holder that may take on work: awake and
    /// not handing the role over (from `Action::Pause` to its `Resume`).
    pub fn working(&self) -> Option<(u64, Duration)> {
        match &self.role {
            Role::Awake(h) if h.outgoing.is_none() => Some((h.ballot.round, h.valid_until)),
            _ => None,
        }
    }

    /// Whether this node holds the role by its own vote alone, after
    /// `wakeup --force`, until a majority answers again.
    pub fn forced(&self) -> bool {
        matches!(&self.role, Role::Awake(h) if h.forced)
    }

    /// Whether this node, the target of a handoff at `epoch`, waits for its
    /// log to catch up with the holder's head.
    pub fn awaits_log(&self, epoch: u64) -> bool {
        self.handoff_in.as_ref().is_some_and(|i| i.epoch == epoch && i.stage == Stage::CatchingUp)
    }

    /// The highest round this node has seen promised or granted.
    pub fn max_round(&self) -> u64 {
        self.max_round
    }

    /// The highest epoch this node knows was granted: the log's epoch fence.
    pub fn highest_grant(&self) -> u64 {
        self.granted
    }

    /// Notes an epoch known to have been granted.
    fn granted(&mut self, epoch: u64) {
        self.granted = self.granted.max(epoch);
        self.max_round = self.max_round.max(epoch);
    }

    pub fn durable(&self) -> &Durable {
        self.acceptor.durable()
    }

    /// Handles one input at `now` and returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Duration) -> Vec<Action> {
        self.unstored = false;
        match input {
            Input::Tick => self.tick(now),
            Input::Received { from, envelope } => self.receive(from, envelope, now),
            Input::Wakeup { force } => self.wakeup(force, now),
            Input::Leave => self.leave(now),
            Input::HandOver => self.hand_over(now),
            Input::Able(able) => {
                if std::mem::replace(&mut self.able, able) != able {
                    self.announce(now);
                }
            }
            Input::Stop => self.stop(now),
            Input::Members { active, revoked } => {
                self.active = active.into_iter().collect();
                self.revoked = revoked.into_iter().collect();
            }
            Input::LogCaughtUp(done) => self.log_caught_up = done,
            Input::EpochSeen(epoch) => self.granted(epoch),
            Input::Head(head) => self.head(head),
            Input::CaughtUp { epoch, head } => self.caught_up(epoch, head),
            Input::External(answer) => self.on_external(answer, now),
        }
        while let Some((from, message)) = self.loopback.pop_front() {
            self.on_message(&from, message, now);
        }
        self.assert_one_role();
        std::mem::take(&mut self.actions)
    }

    /// One role at a time: a holder (or a machine yielding the role) is not
    /// also taking one in a handoff, and a machine that may not hold the role
    /// holds none. Holding, acquiring and yielding exclude each other by
    /// [`Role`].
    fn assert_one_role(&self) {
        if let Role::Yielding(_) = &self.role {
            assert!(self.handoff_in.is_none(), "a machine yielding the role is not also taking it in a handoff");
        }
        if let Role::Awake(holding) = &self.role {
            assert!(self.handoff_in.is_none(), "a holder is not also taking the role in a handoff");
            assert!(!self.config.witness, "a witness never holds the role");
            assert!(holding.ballot.node == self.config.me, "a holder holds its own ballot");
        }
    }

    /// A majority of the view; with no view, more than there are voters.
    fn majority(&self) -> usize {
        self.view().map_or(usize::MAX, View::majority)
    }

    fn is_voter(&self, node: &str) -> bool {
        match self.config.grantor {
            Grantor::Quorum => self.view().is_some_and(|v| v.contains(node)),
            Grantor::External => node == self.config.me || self.active.contains(node),
        }
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Duration::from_micros(self.rng % (max.as_micros() as u64).max(1))
    }

    fn fresh_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn send(&mut self, to: &str, message: Message) {
        if to == self.config.me && !self.unstored {
            self.loopback.push_back((to.to_string(), message));
        } else {
            let envelope = Envelope { version: crate::PROTOCOL_VERSION, view: self.view_id(), message: Some(message) };
            self.actions.push(Action::Send { to: to.to_string(), envelope });
        }
    }

    fn broadcast(&mut self, message: Message) {
        for voter in self.voter_list() {
            self.send(&voter, message.clone());
        }
    }

    /// Abandons (or refuses) the handoff of `epoch` with `to`, saying why.
    fn abort(&mut self, to: &str, epoch: u64, why: &Abort) {
        self.send(to, Message::HandoffAbort { epoch, reason: why.to_string() });
    }

    /// Every other machine this node knows: the voters and the registry's.
    fn peers(&self) -> Vec<NodeId> {
        let voters = self.voter_list();
        let known: BTreeSet<&NodeId> = voters.iter().chain(&self.active).collect();
        known.into_iter().filter(|v| **v != self.config.me).cloned().collect()
    }

    fn eligible(&self) -> bool {
        !self.config.witness && !self.left && self.is_voter(&self.config.me)
    }

    // Timers.

    fn tick(&mut self, now: Duration) {
        if self.last_heartbeat.is_none_or(|at| now >= at + self.config.tenure.renew_every()) {
            self.announce(now);
        }
        self.holder_timers(now);
        self.manage_view(now);
        self.handoff_timers(now);
        self.leaving_timers(now);
        if let Role::Acquiring(attempt) = &self.role
            && now >= attempt.started + self.config.tenure.ttl / 2
        {
            self.abandon(Duration::ZERO, now);
        }
        self.resend_unanswered(now);
        if matches!(self.role, Role::Standby) && self.eligible() && self.handoff_in.is_none() {
            // A pending wakeup tries whatever this node believes: the voters decide.
            if self.wakeup.is_none() && self.believed_holder(now).is_some() {
                self.free_since = None;
            } else {
                let free_since = *self.free_since.get_or_insert(now);
                let log_ready = self.log_caught_up || now >= free_since + self.config.catch_up_limit;
                if log_ready && now >= self.next_attempt.max(free_since + self.precedence()) {
                    self.attempt(false, now);
                }
            }
        }
    }

    fn holder_timers(&mut self, now: Duration) {
        let Role::Awake(holding) = &mut self.role else { return };
        if now >= holding.valid_until {
            return self.sleep(SleepReason::RenewalUnconfirmed, now);
        }
        if now < holding.last_renewal + self.config.tenure.renew_every() {
            return;
        }
        holding.last_renewal = now;
        let ballot = holding.ballot.clone();
        let req = self.fresh_req();
        let Role::Awake(holding) = &mut self.role else { unreachable!() };
        holding.renewals.push(Renewal { req, sent_at: now, accepted: BTreeSet::new() });
        if holding.renewals.len() > 3 {
            holding.renewals.remove(0);
        }
        self.ask_renewal(req, ballot);
    }

    fn handoff_timers(&mut self, now: Duration) {
        if let Role::Awake(holding) = &mut self.role
            && let Some(outgoing) = holding.outgoing.take_if(|o| now >= o.deadline)
        {
            let epoch = holding.ballot.round;
            let why = Abort::TargetSilent(outgoing.target.clone());
            self.abort(&outgoing.target, epoch, &why);
            self.actions.push(Action::Resume { epoch });
            self.actions.push(Action::HandoffFailed { reason: HandoffFailure::Aborted(why) });
        }
        if matches!(&self.role, Role::Yielding(y) if now >= y.deadline) {
            // Voters were slow to confirm the release; the target takes the
            // lease once their copies of it run out.
            self.finish_yield(now);
        }
        if let Some(incoming) = self.handoff_in.take_if(|i| now >= i.deadline) {
            let why = Abort::TimedOut(incoming.stage);
            self.abort(&incoming.holder, incoming.epoch, &why);
            self.wakeup = None;
            self.actions.push(Action::HandoffFailed { reason: HandoffFailure::Aborted(why) });
        }
        if let Some(wakeup) = self.wakeup.take_if(|w| now >= w.deadline) {
            let reason = if let Some(refusal) = wakeup.refusal {
                HandoffFailure::Refused { by: refusal.holder.node, reason: refusal.reason }
            } else if self.voters() < 3 && self.voters_heard(now) < self.majority() {
                HandoffFailure::NoMajorityReachable
            } else if self.config.grantor == Grantor::External {
                HandoffFailure::ExternalSilent
            } else {
                HandoffFailure::NotGranted
            };
            self.actions.push(Action::HandoffFailed { reason });
        }
    }

    // Where grants come from: the one place the node asks the voters or the
    // lease server; the lease server's answers arrive in `external`.

    fn ask_grant(&mut self, req: u64, ballot: Ballot, force: bool) {
        match self.config.grantor {
            Grantor::Quorum => self.broadcast(Message::Prepare { req, ballot, force }),
            Grantor::External => self.actions.push(Action::External(ExternalRequest::Acquire { req })),
        }
    }

    fn ask_renewal(&mut self, req: u64, ballot: Ballot) {
        match self.config.grantor {
            Grantor::Quorum => self.broadcast(Message::Propose { req, ballot, ttl: self.config.tenure.ttl }),
            Grantor::External => {
                self.actions.push(Action::External(ExternalRequest::Renew { req, epoch: ballot.round }))
            }
        }
    }

    /// Lets go of `ballot`'s lease; `successor` alone may take it next.
    fn release(&mut self, req: u64, ballot: Ballot, successor: Option<NodeId>) {
        match self.config.grantor {
            Grantor::Quorum => self.broadcast(Message::Release { req, ballot, successor }),
            Grantor::External => self.actions.push(Action::External(ExternalRequest::Release { epoch: ballot.round })),
        }
    }

    // Acquiring.

    fn attempt(&mut self, force: bool, now: Duration) {
        assert!(!matches!(self.role, Role::Yielding(_)), "a machine yielding the role does not ask for it");
        let req = self.fresh_req();
        let round = self.max_round.max(self.acceptor.durable().promised.as_ref().map_or(0, |b| b.round)) + 1;
        let ballot = Ballot::new(round, &self.config.me);
        self.role = Role::Acquiring(Attempt {
            ballot: ballot.clone(),
            req,
            phase: Phase::Preparing { promises: BTreeSet::new() },
            refused: BTreeSet::new(),
            wait: Duration::ZERO,
            started: now,
            last_sent: now,
            force,
        });
        self.ask_grant(req, ballot, force);
    }

    /// Repeats what is waiting for answers to the voters that have not given
    /// one: an attempt's prepare or proposal, a yielding holder's release.
    /// Lease messages are datagrams, and a lost one should cost a resend
    /// interval, not the whole attempt or handoff. Voters answer a repeat as
    /// they answered the first; a repeated proposal only makes a voter hold
    /// the lease longer, never the proposer.
    fn resend_unanswered(&mut self, now: Duration) {
        let every = self.config.tenure.resend_every();
        self.repeat_yield(now, every);
        if self.config.grantor == Grantor::External {
            return;
        }
        let ttl = self.config.tenure.ttl;
        let voters = self.voter_list();
        let peers = self.peers();
        let me = self.config.me.clone();
        let (message, recipients, answered) = match &mut self.role {
            Role::Acquiring(attempt) if now >= attempt.last_sent + every => {
                attempt.last_sent = now;
                let (req, ballot, force) = (attempt.req, attempt.ballot.clone(), attempt.force);
                let (message, recipients, answered) = match &attempt.phase {
                    Phase::Preparing { promises } => (Message::Prepare { req, ballot, force }, voters, promises),
                    Phase::Proposing { accepted, .. } => {
                        (Message::Propose { req, ballot, ttl }, if force { peers } else { voters }, accepted)
                    }
                };
                (message, recipients, answered.union(&attempt.refused).cloned().collect::<BTreeSet<_>>())
            }
            Role::Yielding(yielding) if now >= yielding.last_sent + every => {
                yielding.last_sent = now;
                let successor = Some(yielding.target.clone());
                let message = Message::Release { req: yielding.req, ballot: yielding.ballot.clone(), successor };
                (message, voters, yielding.released.clone())
            }
            _ => return,
        };
        for voter in recipients.into_iter().filter(|v| *v != me && !answered.contains(v)) {
            self.send(&voter, message.clone());
        }
    }

    /// Repeats a handoff's closing word until the successor claims the role.
    fn repeat_yield(&mut self, now: Duration, every: Duration) {
        let Some(yielded) = self.yielded.take() else { return };
        let claimed = self.peers.get(&yielded.target).and_then(|p| p.claim).is_some_and(|c| c > yielded.epoch);
        if claimed || now >= yielded.until {
            return;
        }
        if now >= yielded.last_sent + every {
            self.send(&yielded.target, Message::HandoffYield { epoch: yielded.epoch });
            self.yielded = Some(Yielded { last_sent: now, ..yielded });
        } else {
            self.yielded = Some(yielded);
        }
    }

    /// Gives up the current attempt and waits `wait` plus jitter (and, when
    /// no wakeup presses, this node's precedence, so rivals do not collide
    /// again).
    fn abandon(&mut self, wait: Duration, now: Duration) {
        self.role = Role::Standby;
        let pause = match self.wakeup {
            Some(_) => self.jitter(Duration::from_millis(10)),
            None => self.precedence() + self.jitter(Duration::from_millis(100)),
        };
        self.next_attempt = now + wait + pause;
    }

    /// How long this node lets the ones before it (by id) try first for a
    /// free lease: standbys that all saw the holder go would otherwise
    /// split the votes and retry together.
    fn precedence(&self) -> Duration {
        let rank = self.view().and_then(|v| v.voters.iter().position(|v| *v == self.config.me)).unwrap_or(0);
        Duration::from_millis(40) * rank as u32
    }

    fn on_promise(&mut self, from: &str, req: u64, now: Duration) {
        let majority = self.majority();
        let Role::Acquiring(attempt) = &mut self.role else { return };
        let needed = if attempt.force { 1 } else { majority };
        let Phase::Preparing { promises } = &mut attempt.phase else { return };
        if attempt.req != req {
            return;
        }
        promises.insert(from.to_string());
        if promises.len() < needed || (attempt.force && !promises.contains(&self.config.me)) {
            return;
        }
        attempt.phase = Phase::Proposing { sent_at: now, accepted: BTreeSet::new() };
        attempt.last_sent = now;
        let ballot = attempt.ballot.clone();
        let ttl = self.config.tenure.ttl;
        if attempt.force {
            let me = self.config.me.clone();
            self.send(&me, Message::Propose { req, ballot: ballot.clone(), ttl });
            for peer in self.peers() {
                self.send(&peer, Message::Propose { req, ballot: ballot.clone(), ttl });
            }
        } else {
            self.broadcast(Message::Propose { req, ballot, ttl });
        }
    }

    fn on_accepted(&mut self, from: &str, req: u64, ballot: &Ballot, now: Duration) {
        let valid_for = self.config.tenure.valid_for();
        let majority = self.majority();
        let view = self.view_id();
        match &mut self.role {
            Role::Acquiring(attempt) if attempt.req == req && attempt.ballot == *ballot => {
                let needed = if attempt.force { 1 } else { majority };
                let Phase::Proposing { sent_at, accepted } = &mut attempt.phase else { return };
                accepted.insert(from.to_string());
                if accepted.len() < needed || (attempt.force && !accepted.contains(&self.config.me)) {
                    return;
                }
                if now >= *sent_at + valid_for {
                    // The answers came after the lease they confirm ran out
                    // here (a process pause, a slow network): a later epoch
                    // may have been granted since. No grant; try afresh.
                    return self.abandon(Duration::ZERO, now);
                }
                let holding = Holding {
                    ballot: ballot.clone(),
                    valid_until: *sent_at + valid_for,
                    forced: attempt.force,
                    last_renewal: *sent_at,
                    renewals: Vec::new(),
                    outgoing: None,
                    backed_by: (accepted.len() >= majority).then_some(view).flatten(),
                };
                self.become_awake(holding, now);
            }
            Role::Awake(holding) if holding.ballot == *ballot => {
                let needed = if holding.forced { 1 } else { majority };
                let Some(at) = holding.renewals.iter().position(|r| r.req == req) else { return };
                holding.renewals[at].accepted.insert(from.to_string());
                let count = holding.renewals[at].accepted.len();
                if count >= needed {
                    holding.valid_until = holding.valid_until.max(holding.renewals[at].sent_at + valid_for);
                    assert!(holding.valid_until <= now + valid_for, "a renewal is counted from when it was sent");
                    holding.forced &= count < majority;
                    if count >= majority {
                        holding.backed_by = view;
                    }
                    holding.renewals.drain(..=at);
                }
            }
            _ => {}
        }
    }

    fn become_awake(&mut self, holding: Holding, now: Duration) {
        let epoch = holding.ballot.round;
        assert!(epoch > self.held, "a grant's epoch ({epoch}) is above every epoch this machine held ({})", self.held);
        assert!(
            holding.valid_until <= holding.last_renewal + self.config.tenure.valid_for(),
            "a lease is trusted no longer than its tenure from when it was asked for"
        );
        self.held = epoch;
        // `max_round` also counts rounds merely promised: a voter outside the
        // accepting majority may have promised a higher round to a proposer
        // that never got a majority. The grant stands; the round stays known.
        self.granted(epoch);
        self.role = Role::Awake(holding);
        self.free_since = None;
        let wakeup = self.wakeup.take();
        let how = match (&wakeup, self.claim_heard) {
            (Some(wakeup), _) => Takeover::Handoff { took: now.saturating_sub(wakeup.since) },
            (None, Some(heard)) => Takeover::Failover { silent: now.saturating_sub(heard) },
            (None, None) => Takeover::First,
        };
        self.actions.push(Action::Awake { epoch, how });
        if wakeup.is_some() {
            self.actions.push(Action::HandoffDone { holder: Some(self.config.me.clone()), epoch });
        }
        self.announce(now);
    }

    /// Heartbeats every peer now, so a change of role is known at once.
    fn announce(&mut self, now: Duration) {
        self.last_heartbeat = Some(now);
        let heartbeat = Message::Heartbeat {
            claim: self.acting_epoch(),
            eligible: self.eligible(),
            witness: self.config.witness,
            leaving: self.left,
            able: self.able,
        };
        for peer in self.peers() {
            self.send(&peer, heartbeat.clone());
        }
    }

    fn on_reject(&mut self, from: &str, req: u64, why: Refusal, now: Duration) {
        let seen = match &why {
            Refusal::Promised(b) | Refusal::Open { holder: b, .. } => b.round,
            Refusal::Reserved { .. } => 0,
        };
        self.max_round = self.max_round.max(seen);
        if let Refusal::Open { holder, .. } = &why {
            self.granted(holder.round);
        }
        let voters = self.voters();
        let majority = self.majority();
        match &mut self.role {
            Role::Acquiring(attempt) if attempt.req == req => {
                attempt.refused.insert(from.to_string());
                match &why {
                    Refusal::Open { remaining, .. } => attempt.wait = attempt.wait.max(*remaining),
                    Refusal::Reserved { .. } => attempt.wait = attempt.wait.max(self.config.tenure.renew_every()),
                    Refusal::Promised(_) => {}
                }
                let needed = if attempt.force { 1 } else { majority };
                let refused_me = attempt.force && from == self.config.me;
                // A wakeup that finds a live holder asks it for a handoff.
                let holder = match &why {
                    Refusal::Open { holder, .. } if !attempt.force && holder.node != self.config.me => {
                        self.wakeup.as_ref().filter(|w| !w.refused(holder)).map(|_| holder.clone())
                    }
                    _ => None,
                };
                if let Some(holder) = holder {
                    self.role = Role::Standby;
                    self.ask_for_handoff(&holder.node, holder.round, now);
                } else if refused_me || voters - attempt.refused.len() < needed {
                    let wait = attempt.wait;
                    self.abandon(wait, now);
                }
            }
            Role::Awake(holding) if holding.renewals.iter().any(|r| r.req == req) => {
                if let Refusal::Promised(b) = &why
                    && *b > holding.ballot
                {
                    let reason = SleepReason::LaterPromise { voter: from.to_string(), epoch: b.round };
                    self.sleep(reason, now);
                }
            }
            _ => {}
        }
    }

    fn stop(&mut self, now: Duration) {
        self.left = true;
        let Role::Awake(holding) = &self.role else { return };
        let ballot = holding.ballot.clone();
        self.sleep(SleepReason::Stopping, now);
        let req = self.fresh_req();
        self.release(req, ballot, None);
    }

    fn sleep(&mut self, reason: SleepReason, now: Duration) {
        let Role::Awake(holding) = &self.role else { return };
        let (epoch, handing_off) = (holding.ballot.round, holding.outgoing.is_some());
        self.role = Role::Standby;
        if handing_off {
            self.actions.push(Action::Asleep { epoch, reason: reason.clone() });
            self.actions.push(Action::HandoffFailed { reason: HandoffFailure::LeaseLost(reason) });
        } else {
            self.actions.push(Action::Asleep { epoch, reason });
        }
        self.next_attempt = now + self.jitter(Duration::from_millis(150));
        self.announce(now);
    }

    // Messages.

    fn receive(&mut self, from: NodeId, envelope: Envelope, now: Duration) {
        if from == self.config.me {
            // This machine's own vote, back from the shell once stored.
            if let Some(message) = envelope.message.filter(|m| m.is_vote()) {
                self.on_message(&from, message, now);
            }
            return;
        }
        let Some(message) = envelope.message else {
            // Say so once per disagreement, so two such peers do not echo forever.
            if self.incompatible.insert(from.clone(), envelope.version).is_none() {
                self.send(&from, Message::Incompatible { version: crate::PROTOCOL_VERSION });
            }
            return;
        };
        self.incompatible.remove(&from);
        self.views_heard.insert(from.clone(), envelope.view);
        let mine = self.view_id();
        if envelope.view != mine {
            if envelope.view < mine {
                self.tell_view(&from, now);
            }
            // Votes count only between holders of one view; the one behind
            // catches up from the other's view first.
            if message.is_vote() {
                return;
            }
        } else if message.is_vote() && !self.is_voter(&from) {
            return;
        }
        self.on_message(&from, message, now);
    }

    fn on_message(&mut self, from: &str, message: Message, now: Duration) {
        if message.is_vote()
            && self.is_voter(&self.config.me)
            && let Some((answer, changed)) = self.acceptor.handle(from, &message, now)
        {
            if changed {
                self.actions.push(Action::Persist(self.acceptor.durable().clone()));
                // The answer rests on that state: this machine counts its own
                // vote only once the shell has stored it, like anyone's.
                self.unstored = true;
            }
            if let Some(promised) = &self.acceptor.durable().promised {
                self.max_round = self.max_round.max(promised.round);
            }
            if let Some((accepted, _)) = &self.acceptor.durable().accepted {
                self.granted(accepted.round);
            }
            self.send(from, answer);
            return;
        }
        match message {
            Message::Promise { req, .. } => self.on_promise(from, req, now),
            Message::Accepted { req, ballot } => self.on_accepted(from, req, &ballot, now),
            Message::Reject { req, why } => self.on_reject(from, req, why, now),
            Message::Released { req, .. } => self.on_released(from, req, now),
            Message::Heartbeat { claim, eligible, witness, leaving, able } => {
                let peer = Peer { heard: now, claim, eligible, witness, leaving, able };
                self.on_heartbeat(from, peer, now)
            }
            Message::Incompatible { version } => {
                self.incompatible.insert(from.to_string(), version);
            }
            Message::View(view) => self.on_view(view, now),
            Message::HandoffAsk { epoch } => self.on_handoff_ask(from, epoch, now),
            Message::HandoffBegin { epoch, head } => self.on_handoff_begin(from, epoch, head, now),
            Message::HandoffAck { epoch, head } => self.on_handoff_ack(from, epoch, head, now),
            Message::HandoffYield { epoch } => self.on_handoff_yield(from, epoch, now),
            Message::HandoffAbort { epoch, reason } => self.on_handoff_abort(from, epoch, reason, now),
            Message::Prepare { .. } | Message::Propose { .. } | Message::Release { .. } => {}
        }
    }

    // Views.

    /// Sends this node's view to `to`, which holds an older one (at most once
    /// a renewal period per view, so two nodes do not echo).
    fn tell_view(&mut self, to: &str, now: Duration) {
        let Some(view) = self.view().cloned() else { return };
        let again = self.config.tenure.renew_every();
        if self.views_told.get(to).is_some_and(|(told, at)| *told == view.id && now < *at + again) {
            return;
        }
        self.views_told.insert(to.to_string(), (view.id, now));
        self.send(to, Message::View(view));
    }

    /// Takes a newer view: stored before anything else is sent. Whatever
    /// was being counted under the old one no longer counts.
    fn adopt(&mut self, view: View, now: Duration) {
        let (epoch, admitted) = (view.id.epoch, view.contains(&self.config.me));
        let was_eligible = self.eligible();
        if !self.acceptor.adopt(view) {
            return;
        }
        self.granted(epoch);
        self.actions.push(Action::Persist(self.acceptor.durable().clone()));
        if self.eligible() != was_eligible {
            // Admitted or removed: the others (a holder choosing whom to hand
            // off to) learn it now, not a renewal period later.
            self.announce(now);
        }
        match &mut self.role {
            Role::Awake(holding) if holding.ballot.round >= epoch && admitted => holding.renewals.clear(),
            Role::Awake(_) => self.sleep(SleepReason::VotersChanged { epoch }, now),
            Role::Acquiring(_) => self.abandon(Duration::ZERO, now),
            Role::Yielding(yielding) => yielding.released.clear(),
            Role::Standby => {}
        }
    }

    fn on_view(&mut self, view: View, now: Duration) {
        if Some(view.id) > self.view_id() {
            self.adopt(view, now);
        }
    }

    /// Whether a majority of `view` holds it (or a later one).
    fn committed(&self, view: &View) -> bool {
        let holding = |v: &NodeId| *v == self.config.me || self.views_heard.get(v).is_some_and(|h| *h >= Some(view.id));
        view.voters.iter().filter(|v| holding(v)).count() >= view.majority()
    }

    /// The holder's part in changing the voters: first its view re-issued
    /// under its own epoch; once a majority holds that, one change at a time,
    /// each once the last is held by a majority.
    fn manage_view(&mut self, now: Duration) {
        let Role::Awake(holding) = &self.role else { return };
        if self.config.grantor == Grantor::External {
            return;
        }
        let epoch = holding.ballot.round;
        let Some(view) = self.view().cloned() else { return };
        if view.id.epoch < epoch {
            return self.issue(view.next(epoch, view.voters.clone()), now);
        }
        let backed = matches!(&self.role, Role::Awake(h) if h.backed_by == Some(view.id));
        if !self.committed(&view) || !backed {
            for peer in self.peers() {
                if self.views_heard.get(&peer).is_none_or(|held| *held < Some(view.id)) {
                    self.tell_view(&peer, now);
                }
            }
            return;
        }
        if let Some(voters) = self.next_voters(&view, now) {
            self.issue(view.next(epoch, voters), now);
        }
    }

    fn issue(&mut self, view: View, now: Duration) {
        self.adopt(view, now);
        for peer in self.peers() {
            self.tell_view(&peer, now);
        }
    }

    /// The voters one change away from `view` towards the registry: a
    /// revoked or leaving voter removed, else a machine of the registry this
    /// node hears, that speaks its protocol and is not leaving, added.
    fn next_voters(&self, view: &View, now: Duration) -> Option<Vec<NodeId>> {
        let ttl = self.config.tenure.ttl;
        let leaving = |id: &NodeId| self.peers.get(id).is_some_and(|p| p.leaving && now < p.heard + ttl);
        let gone = view.voters.iter().find(|v| **v != self.config.me && (self.revoked.contains(*v) || leaving(v)));
        if let Some(gone) = gone {
            return Some(view.voters.iter().filter(|v| *v != gone).cloned().collect());
        }
        if view.voters.len() >= crate::message::MAX_VOTERS {
            return None;
        }
        let heard = |id: &NodeId| self.peers.get(id).is_some_and(|p| now < p.heard + ttl && !p.leaving);
        let new = self.active.iter().find(|id| {
            !view.contains(id) && !self.revoked.contains(*id) && heard(id) && !self.incompatible.contains_key(*id)
        })?;
        Some(view.voters.iter().chain([new]).cloned().collect())
    }

    fn on_heartbeat(&mut self, from: &str, peer: Peer, now: Duration) {
        let claim = peer.claim;
        self.peers.insert(from.to_string(), peer);
        let Some(claimed) = claim else { return };
        self.claim_heard = Some(now);
        self.granted(claimed);
        let Role::Awake(holding) = &self.role else { return };
        let mine = holding.ballot.round;
        if claimed > mine {
            self.sleep(SleepReason::LaterClaim { machine: from.to_string(), epoch: claimed }, now);
        } else if claimed == mine {
            // Two claims at one epoch: never wait it out, move past it.
            self.sleep(SleepReason::SameClaim { machine: from.to_string(), epoch: claimed }, now);
            self.attempt(false, now);
        }
        // A lower claim is stale: it never demotes a live holder.
    }

    // Handoff: the holder's side.

    fn on_handoff_ask(&mut self, from: &str, epoch: u64, now: Duration) {
        let refuse = match &self.role {
            Role::Awake(h) if h.ballot.round != epoch => Some(Abort::HoldsEpoch(h.ballot.round)),
            Role::Awake(h) if h.outgoing.is_some() => Some(Abort::AlreadyHandingOff),
            Role::Awake(_) if self.peers.get(from).is_some_and(|p| !p.eligible) => {
                Some(Abort::NotEligible(from.to_string()))
            }
            Role::Awake(_) => None,
            _ => Some(Abort::NotAwake),
        };
        match refuse {
            Some(why) => self.abort(from, epoch, &why),
            None => self.begin_outgoing(from, Purpose::Asked, now),
        }
    }

    fn begin_outgoing(&mut self, target: &str, purpose: Purpose, now: Duration) {
        let deadline = now + self.config.handoff_timeout;
        let Role::Awake(holding) = &mut self.role else { return };
        holding.outgoing = Some(Outgoing { target: target.to_string(), deadline, head: None, purpose });
        self.actions.push(Action::Pause { epoch: holding.ballot.round });
        self.actions.push(Action::NeedHead);
    }

    fn head(&mut self, head: Heads) {
        let Role::Awake(holding) = &mut self.role else { return };
        let epoch = holding.ballot.round;
        let Some(outgoing) = holding.outgoing.as_mut().filter(|o| o.head.is_none()) else { return };
        outgoing.head = Some(head.clone());
        let target = outgoing.target.clone();
        self.send(&target, Message::HandoffBegin { epoch, head });
    }

    fn on_handoff_ack(&mut self, from: &str, epoch: u64, head: Heads, now: Duration) {
        let Role::Awake(holding) = &mut self.role else { return };
        let Some(outgoing) = holding.outgoing.take_if(|o| o.target == from) else { return };
        let mine = holding.ballot.round;
        if epoch != mine || outgoing.head.as_ref() != Some(&head) {
            self.abort(from, mine, &Abort::AckMismatch);
            self.actions.push(Action::Resume { epoch: mine });
            if outgoing.purpose.reported() {
                self.actions.push(Action::HandoffFailed { reason: HandoffFailure::Aborted(Abort::AckMismatch) });
            }
            return;
        }
        let ballot = holding.ballot.clone();
        self.actions.push(Action::Asleep { epoch: mine, reason: SleepReason::HandedOver { to: from.to_string() } });
        let req = self.fresh_req();
        self.role = Role::Yielding(Yielding {
            target: from.to_string(),
            ballot: ballot.clone(),
            req,
            released: BTreeSet::new(),
            deadline: now + self.config.handoff_timeout,
            last_sent: now,
            purpose: outgoing.purpose,
        });
        self.announce(now);
        self.left |= outgoing.purpose == Purpose::Leave;
        self.release(req, ballot, Some(from.to_string()));
    }

    fn on_released(&mut self, from: &str, req: u64, now: Duration) {
        let majority = self.majority();
        let Role::Yielding(yielding) = &mut self.role else { return };
        if yielding.req != req {
            return;
        }
        yielding.released.insert(from.to_string());
        if yielding.released.len() >= majority {
            self.finish_yield(now);
        }
    }

    fn finish_yield(&mut self, now: Duration) {
        let Role::Yielding(yielding) = &self.role else { return };
        let (target, epoch, purpose) = (yielding.target.clone(), yielding.ballot.round, yielding.purpose);
        self.role = Role::Standby;
        self.send(&target, Message::HandoffYield { epoch });
        let until = now + self.config.handoff_timeout;
        self.yielded = Some(Yielded { target: target.clone(), epoch, last_sent: now, until });
        match purpose {
            Purpose::Leave => self.start_leaving(now),
            // The target takes the role at the next epoch.
            Purpose::HandOver => self.actions.push(Action::HandoffDone { holder: Some(target), epoch: epoch + 1 }),
            Purpose::Asked => {}
        }
    }

    /// `roost leave` once this machine holds no lease: it stops taking the
    /// role and says so, and the leave is done once the holder has removed
    /// it from the voters. With nobody to remove it in time it stays a
    /// voter, eligible again, so the chain is never left without one.
    fn start_leaving(&mut self, now: Duration) {
        self.left = true;
        self.announce(now);
        if self.config.grantor == Grantor::External || !self.is_voter(&self.config.me) {
            return self.finish_leaving(now);
        }
        self.leaving = Some(now + self.config.handoff_timeout * 2);
    }

    fn finish_leaving(&mut self, now: Duration) {
        self.leaving = None;
        let holder = self.believed_holder(now).map(|(h, _)| h);
        self.actions.push(Action::HandoffDone { holder, epoch: self.max_round });
    }

    fn leaving_timers(&mut self, now: Duration) {
        let Some(deadline) = self.leaving else { return };
        if !self.is_voter(&self.config.me) {
            self.finish_leaving(now);
        } else if now >= deadline {
            self.leaving = None;
            self.left = false;
            self.announce(now);
            self.actions.push(Action::HandoffFailed { reason: HandoffFailure::NotRemoved });
        }
    }

    // Handoff: the target's side.

    fn wakeup(&mut self, force: bool, now: Duration) {
        if self.config.witness {
            return self.actions.push(Action::HandoffFailed { reason: HandoffFailure::Witness });
        }
        if matches!(self.role, Role::Yielding(_)) {
            return self.actions.push(Action::HandoffFailed { reason: HandoffFailure::Yielding });
        }
        self.left = false;
        self.leaving = None;
        if let Some(pending) = &mut self.wakeup {
            pending.refusal = None;
        }
        if let Some(epoch) = self.acting_epoch() {
            return self.actions.push(Action::HandoffDone { holder: Some(self.config.me.clone()), epoch });
        }
        // A new wakeup replaces one still waiting for a holder's handoff.
        if let Some(earlier) = self.handoff_in.take() {
            self.abort(&earlier.holder, earlier.epoch, &Abort::AskedAgain);
        }
        if force {
            self.force_view(now);
        } else if !self.is_voter(&self.config.me) {
            return self.actions.push(Action::HandoffFailed { reason: HandoffFailure::NotAVoter });
        }
        self.wakeup = Some(Wakeup { since: now, deadline: now + self.config.handoff_timeout * 2, refusal: None });
        match self.believed_holder(now) {
            Some((holder, epoch)) if !force && holder != self.config.me => self.ask_for_handoff(&holder, epoch, now),
            _ => self.attempt(force, now),
        }
    }

    /// `wakeup --force` declares the machines it cannot hear gone: the voters
    /// become this machine and those it hears, in a view newer than any it
    /// knows, which the others adopt when they hear of it.
    fn force_view(&mut self, now: Duration) {
        let ttl = self.config.tenure.ttl;
        let heard = self.peers.iter().filter(|(id, p)| {
            now < p.heard + ttl && !p.leaving && !self.revoked.contains(*id) && self.active.contains(*id)
        });
        let voters: Vec<NodeId> = [self.config.me.clone()]
            .into_iter()
            .chain(heard.map(|(id, _)| id.clone()))
            .take(crate::message::MAX_VOTERS)
            .collect();
        let epoch = self.max_round.max(self.acceptor.durable().promised.as_ref().map_or(0, |b| b.round)) + 1;
        self.adopt(View::new(epoch, 1, voters), now);
    }

    fn ask_for_handoff(&mut self, holder: &str, epoch: u64, now: Duration) {
        let deadline = now + self.config.handoff_timeout;
        self.handoff_in =
            Some(HandoffIn { holder: holder.to_string(), epoch, stage: Stage::Asked, deadline, since: now });
        self.send(holder, Message::HandoffAsk { epoch });
    }

    fn leave(&mut self, now: Duration) {
        let Role::Awake(_) = &self.role else {
            return self.start_leaving(now);
        };
        match self.live_standby(now, false) {
            Some(target) => self.begin_outgoing(&target, Purpose::Leave, now),
            None => self.actions.push(Action::HandoffFailed { reason: HandoffFailure::NoStandby }),
        }
    }

    fn hand_over(&mut self, now: Duration) {
        let Role::Awake(holding) = &self.role else {
            return self.actions.push(Action::HandoffFailed { reason: HandoffFailure::NotHolder });
        };
        if holding.outgoing.is_some() {
            return self.actions.push(Action::HandoffFailed { reason: HandoffFailure::Yielding });
        }
        match self.live_standby(now, true) {
            Some(target) => self.begin_outgoing(&target, Purpose::HandOver, now),
            None => self.actions.push(Action::HandoffFailed { reason: HandoffFailure::NoStandby }),
        }
    }

    /// The eligible standby heard from within a TTL that speaks this
    /// protocol: one that says it can do the role's work before one that
    /// does not (only such a one when `able_only`), then the one heard from
    /// most recently.
    fn live_standby(&self, now: Duration, able_only: bool) -> Option<NodeId> {
        let ttl = self.config.tenure.ttl;
        self.peers
            .iter()
            .filter(|(id, p)| p.eligible && now < p.heard + ttl && !self.incompatible.contains_key(*id))
            .filter(|(_, p)| p.able || !able_only)
            .max_by_key(|(_, p)| (p.able, p.heard))
            .map(|(id, _)| id.clone())
    }

    fn on_handoff_begin(&mut self, from: &str, epoch: u64, head: Heads, now: Duration) {
        let expected = match &self.handoff_in {
            Some(i) => i.holder == from && i.epoch == epoch && i.stage == Stage::Asked,
            // Unasked: the holder is leaving and chose this machine.
            None => matches!(self.role, Role::Standby | Role::Acquiring(_)) && self.eligible(),
        };
        if !expected {
            return self.abort(from, epoch, &Abort::NotWaiting);
        }
        self.granted(epoch);
        self.role = Role::Standby;
        let since = self.handoff_in.as_ref().map_or(now, |asked| asked.since);
        self.handoff_in = Some(HandoffIn {
            holder: from.to_string(),
            epoch,
            stage: Stage::CatchingUp,
            deadline: now + self.config.handoff_timeout,
            since,
        });
        self.actions.push(Action::CatchUp { epoch, head });
    }

    fn caught_up(&mut self, epoch: u64, head: Heads) {
        let Some(incoming) = self.handoff_in.as_mut().filter(|i| i.epoch == epoch && i.stage == Stage::CatchingUp)
        else {
            return;
        };
        incoming.stage = Stage::Acked;
        let holder = incoming.holder.clone();
        self.send(&holder, Message::HandoffAck { epoch, head });
    }

    fn on_handoff_yield(&mut self, from: &str, epoch: u64, now: Duration) {
        let Some(incoming) =
            self.handoff_in.take_if(|i| i.holder == from && i.epoch == epoch && i.stage == Stage::Acked)
        else {
            return;
        };
        self.granted(epoch);
        let deadline = now + self.config.handoff_timeout;
        self.wakeup.get_or_insert(Wakeup { since: incoming.since, deadline, refusal: None });
        self.attempt(false, now);
    }

    fn on_handoff_abort(&mut self, from: &str, epoch: u64, reason: String, now: Duration) {
        if let Role::Awake(holding) = &mut self.role
            && let Some(outgoing) = holding.outgoing.take_if(|o| o.target == from)
        {
            self.actions.push(Action::Resume { epoch: holding.ballot.round });
            if outgoing.purpose.reported() {
                let reason = HandoffFailure::Refused { by: from.to_string(), reason: reason.clone() };
                self.actions.push(Action::HandoffFailed { reason });
            }
        }
        let Some(incoming) = self.handoff_in.take_if(|i| i.holder == from && i.epoch == epoch) else { return };
        match &mut self.wakeup {
            Some(wakeup) if incoming.stage == Stage::Asked && now < wakeup.deadline => {
                // Asked a machine that no longer holds the role: try for the
                // lease at the next tick; it is either free or names the real
                // holder (never this one again, so the two cannot ping-pong).
                wakeup.refusal = Some(Refused { holder: Ballot::new(epoch, from), reason });
                self.next_attempt = now + self.jitter(Duration::from_millis(20));
            }
            _ => {
                self.wakeup = None;
                let reason = HandoffFailure::Refused { by: from.to_string(), reason };
                self.actions.push(Action::HandoffFailed { reason });
            }
        }
    }

    // What this node believes.

    /// The holder as far as this node knows: itself, the freshest claim heard
    /// within a TTL, or the open lease its own voter holds.
    pub fn believed_holder(&self, now: Duration) -> Option<(NodeId, u64)> {
        if let Some(epoch) = self.acting_epoch() {
            return Some((self.config.me.clone(), epoch));
        }
        let ttl = self.config.tenure.ttl;
        let claimed = self
            .peers
            .iter()
            .filter(|(_, p)| now < p.heard + ttl)
            .filter_map(|(id, p)| p.claim.map(|c| (id.clone(), c)))
            .max_by_key(|(_, c)| *c);
        let open =
            self.acceptor.open(now).filter(|(b, _)| b.node != self.config.me).map(|(b, _)| (b.node.clone(), b.round));
        [claimed, open].into_iter().flatten().max_by_key(|(_, round)| *round)
    }

    fn voters_heard(&self, now: Duration) -> usize {
        let ttl = self.config.tenure.ttl;
        self.voter_list()
            .iter()
            .filter(|v| **v == self.config.me || self.peers.get(*v).is_some_and(|p| now < p.heard + ttl))
            .count()
    }

    pub fn status(&self, now: Duration) -> Status {
        let ttl = self.config.tenure.ttl;
        let holder = self.believed_holder(now);
        let claims_seen = usize::from(self.acting_epoch().is_some())
            + self.peers.values().filter(|p| now < p.heard + ttl && p.claim.is_some()).count();
        let role = match &self.role {
            _ if self.config.witness => LeaseRole::Witness,
            Role::Awake(h) if h.outgoing.is_some() => LeaseRole::HandingOff,
            Role::Awake(_) => LeaseRole::Awake,
            Role::Acquiring(_) => LeaseRole::Acquiring,
            Role::Standby | Role::Yielding(_) => LeaseRole::Standby,
        };
        let voters = self.voters();
        let heard = self.voters_heard(now);
        let majority = self.majority();
        let failover = if self.config.grantor == Grantor::External {
            Failover::External
        } else if voters == 0 {
            Failover::NoView
        } else if voters < 3 {
            Failover::TooFewVoters { voters }
        } else if heard < majority {
            Failover::NotNow { heard, voters, majority }
        } else {
            Failover::Automatic { heard, voters }
        };
        let not_eligible = if self.config.witness {
            Some(NotEligible::Witness)
        } else if self.left {
            Some(NotEligible::Left)
        } else if let Some((peer, version)) = self.incompatible.iter().next() {
            Some(NotEligible::Incompatible { peer: peer.clone(), version: *version })
        } else if !self.is_voter(&self.config.me) && self.config.grantor == Grantor::Quorum {
            Some(NotEligible::NotAVoter)
        } else {
            None
        };
        let lease_left = match &self.role {
            Role::Awake(h) => Some(h.valid_until.saturating_sub(now)),
            _ => None,
        };
        Status {
            role,
            holder: holder.as_ref().map(|(h, _)| h.clone()),
            epoch: holder.map(|(_, e)| e),
            claims_seen,
            voters,
            view: self.view_id(),
            voter_ids: self.voter_list(),
            peers: self
                .peers
                .iter()
                .map(|(id, p)| PeerSeen {
                    id: id.clone(),
                    witness: p.witness,
                    eligible: p.eligible,
                    leaving: p.leaving,
                    able: p.able,
                    live: now < p.heard + ttl,
                })
                .collect(),
            voters_heard: heard,
            failover,
            not_eligible,
            lease_left,
        }
    }
}
