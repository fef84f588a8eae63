//! What a node reports, as data: the shell (`roost-awake`'s `words`) puts it
//! into the words `roost status` and the commands show. An [`Abort`] alone
//! has its words here, because they travel to the other machine of the
//! handoff, which reports them as its refusal.

use std::fmt;

use crate::ballot::NodeId;

/// Whether a failover could happen now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failover {
    /// A lease server grants the lease: it decides.
    External,
    /// This machine holds no view of the voters yet.
    NoView,
    /// Fewer than three voters: a majority needs all of them.
    TooFewVoters {
        voters: usize,
    },
    /// Fewer than a majority of the voters are reachable.
    NotNow {
        heard: usize,
        voters: usize,
        majority: usize,
    },
    Automatic {
        heard: usize,
        voters: usize,
    },
}

/// Why this machine cannot take the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotEligible {
    Witness,
    /// `roost leave`, until `roost wakeup`.
    Left,
    /// `peer` speaks lease protocol `version`, not this machine's.
    Incompatible {
        peer: NodeId,
        version: u16,
    },
    /// The awake machine has not admitted this one as a voter yet.
    NotAVoter,
}

/// Why a holder stopped acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SleepReason {
    /// No renewal was confirmed before the lease ran out here.
    RenewalUnconfirmed,
    /// `voter` promised a later epoch than the one held.
    LaterPromise {
        voter: NodeId,
        epoch: u64,
    },
    Stopping,
    /// The lease server says the lease is gone.
    ExternalLost,
    /// A holder of a later epoch changed the voters.
    VotersChanged {
        epoch: u64,
    },
    /// `machine` claims a later epoch.
    LaterClaim {
        machine: NodeId,
        epoch: u64,
    },
    /// `machine` claims the epoch held here.
    SameClaim {
        machine: NodeId,
        epoch: u64,
    },
    HandedOver {
        to: NodeId,
    },
}

/// Why a wakeup, a leave or a handoff did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffFailure {
    /// A wakeup on a witness, which never takes the role.
    Witness,
    /// A wakeup while this machine hands the role to another.
    Yielding,
    /// A wakeup on a machine not admitted as a voter.
    NotAVoter,
    /// A leave with no eligible standby in reach, or a hand-over with none
    /// that can do the role's work: the holder stays awake.
    NoStandby,
    /// A hand-over asked of a machine that does not hold the role.
    NotHolder,
    /// A leave that no awake machine completed by removing this one from the
    /// voters in time: it stays one, eligible again.
    NotRemoved,
    /// This machine abandoned the handoff and told the other one why.
    Aborted(Abort),
    /// The other machine abandoned the handoff (or refused it), saying why.
    Refused { by: NodeId, reason: String },
    /// The lease was lost while handing it over.
    LeaseLost(SleepReason),
    /// A wakeup's time ran out with no majority of voters reachable in a
    /// chain of fewer than three voters.
    NoMajorityReachable,
    /// A wakeup's time ran out with no grant from the lease server.
    ExternalSilent,
    /// A wakeup's time ran out with no grant from a majority of voters.
    NotGranted,
}

/// How far the target of a handoff got: what it waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Asked the holder, which has not begun.
    Asked,
    /// Catching its log up to the holder's head.
    CatchingUp,
    /// Acknowledged the head; the holder has not yielded.
    Acked,
}

/// Why a machine abandons (or refuses) a handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// A handoff this machine did not ask for and cannot take.
    NotWaiting,
    /// The wakeup that asked for it was asked again.
    AskedAgain,
    /// Asked for another epoch than the one held here.
    HoldsEpoch(u64),
    AlreadyHandingOff,
    /// The machine asking may not take the role.
    NotEligible(NodeId),
    NotAwake,
    /// The target acknowledged another epoch or log head than it was sent.
    AckMismatch,
    /// The target did not acknowledge in time.
    TargetSilent(NodeId),
    /// The target waited too long at `Stage`.
    TimedOut(Stage),
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Abort::NotWaiting => f.write_str("this machine is not waiting for that handoff"),
            Abort::AskedAgain => f.write_str("this machine's wakeup was asked again"),
            Abort::HoldsEpoch(epoch) => write!(f, "this machine holds epoch {epoch}"),
            Abort::AlreadyHandingOff => f.write_str("a handoff is already under way"),
            Abort::NotEligible(machine) => write!(f, "{machine} is not eligible to take the role"),
            Abort::NotAwake => f.write_str("this machine is not awake"),
            Abort::AckMismatch => f.write_str("the target acknowledged a different epoch or log head"),
            Abort::TargetSilent(target) => write!(f, "{target} did not acknowledge the handoff in time"),
            Abort::TimedOut(stage) => {
                let waiting = match stage {
                    Stage::Asked => "for the holder to begin",
                    Stage::CatchingUp => "for this machine's log to catch up",
                    Stage::Acked => "for the holder to yield",
                };
                write!(f, "the handoff timed out waiting {waiting}")
            }
        }
    }
}
