//! Grants from a lease server (etcd) instead of the voters. The node asks
//! with [`ExternalRequest`]s; the shell's adapter asks the server and turns
//! its answers into [`ExternalAnswer`]s. Timing the lease, claims and the
//! handoff stay the node's own, as with voters.

use std::time::Duration;

use super::{Holding, Node, Role};
use crate::ballot::{Ballot, NodeId};
use crate::report::SleepReason;

/// What the node asks of the lease server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalRequest {
    Acquire { req: u64 },
    Renew { req: u64, epoch: u64 },
    Release { epoch: u64 },
}

/// The lease server's answer to an [`ExternalRequest`], with the time the
/// request was sent where the lease is timed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalAnswer {
    Granted {
        req: u64,
        epoch: u64,
        sent_at: Duration,
    },
    /// Someone holds the lease already.
    Held {
        req: u64,
        holder: NodeId,
        epoch: u64,
    },
    Failed {
        req: u64,
    },
    Renewed {
        req: u64,
        sent_at: Duration,
    },
    /// The lease is no longer this machine's.
    Lost {
        req: u64,
    },
    Released {
        epoch: u64,
    },
}

impl Node {
    pub(super) fn on_external(&mut self, answer: ExternalAnswer, now: Duration) {
        match answer {
            ExternalAnswer::Granted { req, epoch, sent_at } => self.external_granted(req, epoch, sent_at, now),
            ExternalAnswer::Held { req, holder, epoch } => self.external_held(req, holder, epoch, now),
            ExternalAnswer::Failed { req } => {
                if matches!(&self.role, Role::Acquiring(a) if a.req == req) {
                    self.abandon(Duration::ZERO, now);
                }
            }
            ExternalAnswer::Renewed { req, sent_at } => self.external_renewed(req, sent_at),
            ExternalAnswer::Lost { req } => {
                if matches!(&self.role, Role::Awake(h) if h.renewals.iter().any(|r| r.req == req)) {
                    self.sleep(SleepReason::ExternalLost, now);
                }
            }
            ExternalAnswer::Released { epoch } => {
                if matches!(&self.role, Role::Yielding(y) if y.ballot.round == epoch) {
                    self.finish_yield(now);
                }
            }
        }
    }

    fn external_granted(&mut self, req: u64, epoch: u64, sent_at: Duration, now: Duration) {
        let Role::Acquiring(attempt) = &self.role else { return };
        if attempt.req != req {
            return;
        }
        // A grant must come with a greater epoch than any seen, and while
        // the lease it grants can still be trusted here.
        if epoch <= self.max_round || now >= sent_at + self.config.tenure.valid_for() {
            return self.abandon(Duration::ZERO, now);
        }
        let holding = Holding {
            ballot: Ballot::new(epoch, &self.config.me),
            valid_until: sent_at + self.config.tenure.valid_for(),
            forced: false,
            last_renewal: sent_at,
            renewals: Vec::new(),
            outgoing: None,
            backed_by: None,
        };
        self.become_awake(holding, now);
    }

    fn external_held(&mut self, req: u64, holder: NodeId, epoch: u64, now: Duration) {
        self.max_round = self.max_round.max(epoch);
        if matches!(&self.role, Role::Acquiring(a) if a.req == req) {
            if holder == self.config.me {
                return self.abandon(Duration::ZERO, now);
            }
            let held = Ballot::new(epoch, &holder);
            if self.wakeup.as_ref().is_some_and(|w| !w.refused(&held)) {
                // A wakeup that finds a live holder asks it for a handoff.
                self.role = Role::Standby;
                return self.ask_for_handoff(&holder, epoch, now);
            }
            // The server does not say how long the lease has left: ask
            // again soon, so a lapse is noticed within a tenth of the TTL.
            self.abandon(self.config.tenure.ttl / 10, now);
        }
    }

    fn external_renewed(&mut self, req: u64, sent_at: Duration) {
        let valid_for = self.config.tenure.valid_for();
        if let Role::Awake(holding) = &mut self.role
            && let Some(at) = holding.renewals.iter().position(|r| r.req == req)
        {
            holding.valid_until = holding.valid_until.max(sent_at + valid_for);
            holding.renewals.drain(..=at);
        }
    }
}
