//! Roost's deterministic simulator.
//!
//! One thread runs N machines of the **real** sans-IO cores — the lease
//! ([`roost_lease::Node`]: PaxosLease voters, proposer, handoff) and the
//! replication rules of [`roost_core::sync`] with the protocol's `Inbox` and
//! `PeerView` — with simulated time, a simulated network, and one seeded
//! random generator, so a seed is a complete, replayable run. Each machine has
//! its own clock (an origin minutes away from the others and a rate within
//! the drift bound the lease states); nodes only ever see their local clock.
//!
//! Faults: message loss, duplication, reordering, delay and delay spikes;
//! partitions (symmetric, one-way, bridge); crashes, also in the middle of
//! carrying out a step's actions, with restarts that keep only what the
//! shell persisted; process pauses longer than the lease; handoffs (some
//! stalled so they time out), a holder handing the role over as a stuck
//! agent does, leaves, witnesses, two-voter chains, and
//! `wakeup --force` once the other machine has crashed for good. Clients
//! write to shared rows at random machines; the holder makes effects stamped
//! with its epoch, which a fencing sink accepts only if no higher epoch came
//! before. Inbound agent messages arrive at random machines; the holder
//! answers them through the real ledger rules (`roost_agent::ledger::plan`,
//! the reply record's stages) and the outbox's (`roost_agent::outbox`:
//! settle before a round, send only once the peers hold the commit and
//! while the lease lasts), writing through the real store, to a receiver
//! that honours idempotency keys. [`check`] lists the invariants asserted
//! after every step.
//!
//! Modules: [`rng`] (the seeded generator), [`clock`] (local clocks),
//! [`net`] (links and what happens to a message), [`replica`] (one machine's
//! replicated rows), [`scenario`] (what a seed runs), [`world`] (the event
//! loop and the shell around each node), [`check`] (the invariants),
//! [`trace`] (the replay hash and the last events).

pub mod check;
pub mod clock;
pub mod net;
pub mod replica;
pub mod rng;
pub mod scenario;
pub mod trace;
pub mod world;

use std::fmt;
use std::time::Duration;

pub use check::Invariant;

/// A deliberate bug, to show the checker catches what it claims to. None of
/// these touch the cores: they change what the simulator builds around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Holders time their lease as if clocks never drifted: the full TTL,
    /// no margin (`Tenure { drift_ppm: 0, margin: 0, .. }`), while clocks
    /// still drift within the bound.
    IgnoreDrift,
    /// The effect sink accepts effects of any epoch.
    StaleSink,
    /// The shell forgets its voter's promises across a restart.
    ForgetVotes,
    /// The shell sends what the node says at once, without waiting for the
    /// voter state it rests on to be on disk.
    SendBeforePersist,
    /// The agent's outbox sends a committed reply without checking that its
    /// lease still runs (and still under the epoch it was planned in).
    SendWithoutLease,
    /// A new pool coordinator does not settle: the shell tells the core it
    /// took the role long ago, so it places and grants at once, while a
    /// grant of the coordinator before may still run.
    PoolNoSettle,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::IgnoreDrift,
        Bug::StaleSink,
        Bug::ForgetVotes,
        Bug::SendBeforePersist,
        Bug::SendWithoutLease,
        Bug::PoolNoSettle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::IgnoreDrift => "ignore-drift",
            Bug::StaleSink => "stale-sink",
            Bug::ForgetVotes => "forget-votes",
            Bug::SendBeforePersist => "send-before-persist",
            Bug::SendWithoutLease => "send-without-lease",
            Bug::PoolNoSettle => "pool-no-settle",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The one command that replays a seed.
pub fn replay_command(seed: u64, bug: Option<Bug>) -> String {
    let bug = bug.map(|b| format!("ROOST_SIM_BUG={} ", b.name())).unwrap_or_default();
    format!("{bug}ROOST_SIM_SEED={seed} ROOST_SIM_SEEDS=1 cargo test -p roost-sim --test seeds -- --nocapture")
}

/// What a passing run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub seed: u64,
    pub trace: u64,
    pub steps: u64,
    pub grants: u64,
    pub writes: usize,
    pub effects_accepted: u64,
    pub effects_refused: u64,
    pub handoffs_done: u64,
    pub handoffs_failed: u64,
    /// Whether the scenario promises a holder after the heal, and how long
    /// after the heal (or the forced wakeup) one appeared.
    pub live: bool,
    pub holder_after: Option<Duration>,
    pub bound: Duration,
}

/// A run that broke an invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub bug: Option<Bug>,
    pub invariant: Invariant,
    pub detail: String,
    pub at: Duration,
    pub scenario: String,
    pub trace: u64,
    pub recent: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bug = self.bug.map(|b| format!(" with bug {}", b.name())).unwrap_or_default();
        writeln!(
            f,
            "seed {}{bug} failed {} at {:.3}s: {}",
            self.seed,
            self.invariant,
            self.at.as_secs_f64(),
            self.detail
        )?;
        writeln!(f, "scenario: {}", self.scenario)?;
        writeln!(f, "last events (true time, machine, what):")?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", replay_command(self.seed, self.bug))
    }
}

/// Runs one seed to the end, or to the first broken invariant.
pub fn run(seed: u64, bug: Option<Bug>) -> Result<Summary, Box<Failure>> {
    world::World::new(seed, bug).run()
}

/// Runs `count` seeds from `first` on two threads; results in seed order.
pub fn run_many(first: u64, count: u64, bug: Option<Bug>) -> Vec<Result<Summary, Box<Failure>>> {
    const THREADS: u64 = 2;
    let mut results: Vec<(u64, Result<Summary, Box<Failure>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    (first + t..first + count)
                        .step_by(THREADS as usize)
                        .map(|seed| (seed, run(seed, bug)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a run catches its own panics")).collect()
    });
    results.sort_by_key(|(seed, _)| *seed);
    results.into_iter().map(|(_, result)| result).collect()
}
