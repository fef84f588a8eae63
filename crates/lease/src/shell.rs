//! The rules of the shell around a [`Node`], without its I/O: what the real
//! driver (`roost-awake`) and the simulator both run, so the simulator tests
//! the rules that ship rather than its own copy of them.
//!
//! * **Votes on disk before anything leaves.** Each [`Action::Persist`]
//!   becomes an [`Effect::Write`] with a number; every send after it carries
//!   the number of the last write it may depend on, and may leave only once
//!   [`Shell::written`] has confirmed that write ([`Shell::may_send`]). A
//!   write that fails, or is still under way, holds back every send queued
//!   after it; after a failure the node's state is written again
//!   ([`Shell::retry`]) until it is on disk.
//! * **Catch-up.** A handoff target's log must cover the head the holder
//!   sent: the shell keeps that head and reports the node caught up once the
//!   log it is shown ([`Shell::log`]) covers it.
//! * **Heads.** A holder asked for its log head gets it from the log it is
//!   shown.

use std::time::Duration;

use roost_core::protocol::Heads;

use crate::acceptor::Durable;
use crate::ballot::NodeId;
use crate::message::Envelope;
use crate::node::{Action, Input, Node};

/// How long after a failed write the state is written again.
pub const RETRY_WRITE: Duration = Duration::from_millis(250);

/// What the shell's I/O must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write `durable` to disk, then report [`Shell::written`] with `number`.
    Write { number: u64, durable: Durable },
    /// Send `envelope` to `to`, if [`Shell::may_send`] allows `after` by then.
    Send { to: NodeId, envelope: Envelope, after: u64 },
    /// Report the log's heads with [`Shell::log`]: a holder needs its head,
    /// or a handoff target waits for its log to cover one.
    ReadLog,
    /// Everything else the node asked for (role changes, handoff outcomes,
    /// external grants), for the shell to carry out.
    Act(Action),
}

pub struct Shell {
    node: Node,
    /// Numbers of the writes asked for, and of the last one on disk.
    requested: u64,
    written: u64,
    /// The last write failed; when the state was last written again.
    failed: Option<Duration>,
    /// A handoff target's wait: the epoch and the head its log must cover.
    catching_up: Option<(u64, Heads)>,
    /// The holder asked for its head.
    head_asked: bool,
}

/// Whether `ours` holds every entry `head` names.
pub fn covers(ours: &Heads, head: &Heads) -> bool {
    head.iter().all(|(origin, seq)| ours.get(origin).is_some_and(|have| have >= seq))
}

impl Shell {
    pub fn new(node: Node) -> Shell {
        Shell { node, requested: 0, written: 0, failed: None, catching_up: None, head_asked: false }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Feeds the node one input and turns its actions into effects.
    pub fn handle(&mut self, input: Input, now: Duration) -> Vec<Effect> {
        let actions = self.node.handle(input, now);
        self.effects(actions)
    }

    fn effects(&mut self, actions: Vec<Action>) -> Vec<Effect> {
        let mut effects = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Send { to, envelope } => effects.push(Effect::Send { to, envelope, after: self.requested }),
                Action::Persist(durable) => {
                    self.requested += 1;
                    effects.push(Effect::Write { number: self.requested, durable });
                }
                Action::NeedHead => {
                    self.head_asked = true;
                    effects.push(Effect::ReadLog);
                }
                Action::CatchUp { epoch, head } => {
                    self.catching_up = Some((epoch, head));
                    effects.push(Effect::ReadLog);
                }
                other => effects.push(Effect::Act(other)),
            }
        }
        effects
    }

    /// Write `number` ended: on disk (`ok`), or failed.
    pub fn written(&mut self, number: u64, ok: bool, now: Duration) {
        if ok {
            assert!(number <= self.requested, "only writes asked for are reported");
            self.written = self.written.max(number);
            if self.written == self.requested {
                self.failed = None;
            }
        } else {
            self.failed.get_or_insert(now);
        }
    }

    /// Whether a send queued after write `after` may leave now.
    pub fn may_send(&self, after: u64) -> bool {
        self.written >= after
    }

    /// Whether every write asked for is on disk.
    pub fn settled(&self) -> bool {
        self.written == self.requested
    }

    /// Whether the last write failed and the disk is behind because of it.
    pub fn failing(&self) -> bool {
        self.failed.is_some()
    }

    /// After a failure, the node's state to write again, at most every
    /// [`RETRY_WRITE`].
    pub fn retry(&mut self, now: Duration) -> Option<Effect> {
        let failed = self.failed?;
        if now < failed + RETRY_WRITE {
            return None;
        }
        self.failed = Some(now);
        self.requested += 1;
        Some(Effect::Write { number: self.requested, durable: self.node.durable().clone() })
    }

    /// The log's heads now: what a holder asked for, and what a handoff
    /// target waits for.
    pub fn log(&mut self, heads: &Heads, now: Duration) -> Vec<Effect> {
        let mut effects = Vec::new();
        if std::mem::take(&mut self.head_asked) {
            effects.extend(self.handle(Input::Head(heads.clone()), now));
        }
        // A handoff abandoned meanwhile waits for nothing.
        self.catching_up.take_if(|(epoch, _)| !self.node.awaits_log(*epoch));
        if let Some((epoch, head)) = self.catching_up.take_if(|(_, head)| covers(heads, head)) {
            effects.extend(self.handle(Input::CaughtUp { epoch, head }, now));
        }
        effects
    }

    /// Whether the shell still needs to be shown the log.
    pub fn waiting_for_log(&self) -> bool {
        self.head_asked || self.catching_up.as_ref().is_some_and(|(epoch, _)| self.node.awaits_log(*epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Message, Tenure, View};

    fn shell() -> Shell {
        let config = Config::new("a", Tenure::new(Duration::from_secs(3)));
        let durable =
            Durable { view: Some(View::new(0, 1, vec!["a".into(), "b".into(), "c".into()])), ..Default::default() };
        Shell::new(Node::new(config, durable, Duration::ZERO))
    }

    fn prepare(from: &str, round: u64) -> Input {
        let view = Some(View::new(0, 1, vec!["a".into(), "b".into(), "c".into()]).id);
        let message = Message::Prepare { req: 1, ballot: crate::Ballot::new(round, from), force: false };
        Input::Received {
            from: from.into(),
            envelope: Envelope { version: crate::PROTOCOL_VERSION, view, message: Some(message) },
        }
    }

    #[test]
    fn a_promise_leaves_only_once_it_is_on_disk_and_a_failed_write_is_tried_again() {
        let mut shell = shell();
        let effects = shell.handle(prepare("b", 5), Duration::ZERO);
        let Some(Effect::Write { number, .. }) = effects.first().cloned() else { panic!("{effects:?}") };
        let Some(Effect::Send { after, .. }) = effects.get(1).cloned() else { panic!("{effects:?}") };
        assert!(!shell.may_send(after), "not before the promise is on disk");
        shell.written(number, false, Duration::ZERO);
        assert!(!shell.may_send(after) && shell.failing());
        assert_eq!(shell.retry(Duration::from_millis(100)), None, "not at once");
        let Some(Effect::Write { number: again, .. }) = shell.retry(RETRY_WRITE) else { panic!("a retry") };
        shell.written(again, true, RETRY_WRITE);
        assert!(shell.may_send(after) && shell.settled() && !shell.failing());
    }

    #[test]
    fn a_handoff_target_is_caught_up_once_its_log_covers_the_head() {
        let head: Heads = [("a".to_string(), 3)].into();
        assert!(covers(&[("a".to_string(), 4)].into(), &head));
        assert!(!covers(&[("a".to_string(), 2)].into(), &head));
        assert!(!covers(&Heads::new(), &head));
    }
}
