//! The awake role as a plain state machine: at most one machine of a chain
//! acts as the agent, under a lease that a majority of the chain's voters
//! grant.
//!
//! The algorithm is **PaxosLease** (Trencseni, Gazsó, Reinhardt, 2010): a
//! proposer asks every voter to promise a ballot, and once a majority has
//! promised with no open lease held by someone else, asks them to accept it
//! for a time-to-live. Voters keep no shared clock: each times the lease it
//! accepted on its own clock from when the request arrived, and the holder
//! times its own from when it sent the request, shortened by a drift bound, so
//! the holder's lease ends before any voter's. Two additions to the paper:
//!
//! * the ballot's round is the **epoch**, a fencing token: a voter promises a
//!   round only if it is strictly greater than every round it has promised
//!   (a voter keeps that durably), so two grants never share an epoch, and a
//!   later grant always has a greater one;
//! * renewals re-propose the same ballot, so a tenure keeps its epoch, and a
//!   voter holding an open lease refuses other proposers' prepares outright,
//!   so standbys probing for the role never disturb a live holder;
//! * the voters are not fixed: they are a [`View`] that the holder changes one
//!   voter at a time as machines join and leave (the `view` module argues why any two
//!   majorities that can grant a lease still overlap).
//!
//! Everything here is handed `now` (time since an arbitrary origin, on this
//! machine's clock) and returns [`Action`]s; the shell (`roost-awake`) sends
//! the messages, keeps [`Durable`] state on disk, and reads the clock. The
//! deterministic simulator drives the same [`Node`] under faults.
//!
//! The grant can also come from outside: with [`Grantor::External`] the shell
//! asks an etcd server instead of voters, and this core still times the
//! tenure, tracks claims, and runs the handoff.

mod acceptor;
mod ballot;
mod message;
mod node;
mod report;
pub mod shell;
mod tenure;
mod view;

pub use acceptor::{Acceptor, Durable};
pub use ballot::{Ballot, NodeId};
pub use message::{Envelope, MAX_VOTERS, Message, Refusal};
pub use node::{
    Action, Config, ExternalAnswer, ExternalRequest, Grantor, Input, LeaseRole, Node, PeerSeen, Status, Takeover,
};
pub use report::{Abort, Failover, HandoffFailure, NotEligible, SleepReason, Stage};
pub use shell::{Effect, Shell};
pub use tenure::Tenure;
pub use view::{View, ViewId};

/// The lease protocol's version, which is also the agent's: the holder of
/// the role runs the agent (its ledger rules, outbox and channels), so a
/// change to either is a new version. Machines on another version are not
/// eligible to take the role and say so in their status. Version 3: the
/// agent's ledger and fenced outbox; 4: heartbeats say whether a machine
/// could do the agent's work now.
pub const PROTOCOL_VERSION: u16 = 4;
