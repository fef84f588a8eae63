//! The invariants. The world calls these after every step, with what it
//! observed; each returns the violation it finds.
//!
//! 0. No step panics: an assertion inside a core or the simulator is a
//!    failure of its seed like any other.
//! 1. At most one machine may act at any true time: among live machines
//!    (paused ones included), `Node::may_act(local now)` is `Some` for at most
//!    one. Between steps nothing changes but time, which can only end a lease,
//!    so checking right after every step covers every instant.
//! 2. Grant epochs (`Action::Awake`) strictly increase in true-time order over
//!    the whole run; the effect sink never accepts an epoch lower than one it
//!    accepted before (checked here, apart from the sink's own rule); and
//!    every accepted effect carries the epoch of the machine that was the one
//!    holder when the effect was made.
//! 3. Liveness (checked by the world): after the heal, a chain that can form
//!    a majority without any one machine has a holder within the bound that
//!    `World::liveness_bound` states and justifies; with two voters, one dead
//!    for good, the survivor holds within 1 s of `wakeup --force`.
//! 4. After the heal and quiet, every replica has the same heads, rows and
//!    open conflicts, holds nothing back, and holds every acknowledged write
//!    as it was acknowledged.
//! 5. The agent's receiver, which honours idempotency keys, never gets two
//!    different replies for one message (one key per message, one body per
//!    key).
//! 6. Every inbound message a machine acknowledged is answered once the
//!    network has healed, in every run that promises a holder after the heal
//!    (invariant 3), unless every machine holding it died for good.
//! 7. With the pool, at most one machine acts on a topic at any true time:
//!    among live machines (paused ones included), `Member::acting(topic,
//!    local now)` is `Some` for at most one, checked after every step as
//!    invariant 1 is.

use std::collections::BTreeMap;
use std::fmt;

use crate::replica::Replica;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Neither a core nor the simulator may panic (a core's own assertion).
    NoPanic,
    OneHolder,
    Epochs,
    Liveness,
    Convergence,
    OneReply,
    Answered,
    OneOwner,
}

impl Invariant {
    pub fn number(self) -> u8 {
        match self {
            Invariant::NoPanic => 0,
            Invariant::OneHolder => 1,
            Invariant::Epochs => 2,
            Invariant::Liveness => 3,
            Invariant::Convergence => 4,
            Invariant::OneReply => 5,
            Invariant::Answered => 6,
            Invariant::OneOwner => 7,
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Invariant::NoPanic => "no panic",
            Invariant::OneHolder => "at most one holder at a time",
            Invariant::Epochs => "epochs increase and fence effects",
            Invariant::Liveness => "a holder soon after the heal",
            Invariant::Convergence => "replicas converge, no acknowledged write lost",
            Invariant::OneReply => "one reply per message at the receiver",
            Invariant::Answered => "every acknowledged message answered after the heal",
            Invariant::OneOwner => "at most one machine acting on a topic at a time",
        };
        write!(f, "invariant {} ({name})", self.number())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

fn fail<T>(invariant: Invariant, detail: String) -> Result<T, Violation> {
    Err(Violation { invariant, detail })
}

/// An effect as it was made: by whom, under which epoch, and who held the
/// role at that moment by the checker's own reckoning.
#[derive(Debug)]
struct Issued {
    issuer: usize,
    epoch: u64,
    holder: Option<(usize, u64)>,
}

#[derive(Debug, Default)]
pub struct Checker {
    last_grant: Option<(usize, u64)>,
    issued: Vec<Issued>,
    highest_accepted: Option<u64>,
    acked: BTreeMap<(String, u64), [u8; 32]>,
    /// Inbound messages a machine acknowledged, by message id.
    inbound: BTreeMap<String, usize>,
    /// What the receiver took: the reply of each message and its key.
    replies: BTreeMap<String, (String, String)>,
    pub grants: u64,
    pub accepted: u64,
    /// Replies the receiver got again under a key it had (re-sends).
    pub resent: u64,
}

impl Checker {
    /// Invariant 1, given every live machine that may act now and its epoch.
    pub fn one_holder(&self, holders: &[(usize, u64)], names: &[String]) -> Result<(), Violation> {
        if holders.len() <= 1 {
            return Ok(());
        }
        let who: Vec<String> = holders.iter().map(|(n, e)| format!("{} (epoch {e})", names[*n])).collect();
        fail(Invariant::OneHolder, format!("{} may all act at once", who.join(" and ")))
    }

    /// Invariant 7, given every live machine acting on `topic` now and the
    /// topic stamp it acts under.
    pub fn one_owner(&self, topic: &str, owners: &[(usize, u64)], names: &[String]) -> Result<(), Violation> {
        if owners.len() <= 1 {
            return Ok(());
        }
        let who: Vec<String> = owners.iter().map(|(n, e)| format!("{} (stamp {e:#x})", names[*n])).collect();
        fail(Invariant::OneOwner, format!("{} all act on {topic} at once", who.join(" and ")))
    }

    /// Invariant 2: a grant's epoch is above every earlier grant's.
    pub fn grant(&mut self, node: usize, epoch: u64, names: &[String]) -> Result<(), Violation> {
        self.grants += 1;
        if let Some((before, last)) = self.last_grant
            && epoch <= last
        {
            let detail =
                format!("{} was granted epoch {epoch} after {} was granted {last}", names[node], names[before]);
            return fail(Invariant::Epochs, detail);
        }
        self.last_grant = Some((node, epoch));
        Ok(())
    }

    /// Records an effect made now; returns its id.
    pub fn issue(&mut self, issuer: usize, epoch: u64, holders: &[(usize, u64)]) -> usize {
        let holder = match holders {
            [one] => Some(*one),
            _ => None,
        };
        self.issued.push(Issued { issuer, epoch, holder });
        self.issued.len() - 1
    }

    pub fn epoch_of(&self, effect: usize) -> u64 {
        self.issued[effect].epoch
    }

    /// Invariant 2: what the sink accepted.
    pub fn accept(&mut self, effect: usize, names: &[String]) -> Result<(), Violation> {
        let issued = &self.issued[effect];
        self.accepted += 1;
        if let Some(highest) = self.highest_accepted
            && issued.epoch < highest
        {
            let detail = format!("the sink accepted epoch {} after accepting {highest}", issued.epoch);
            return fail(Invariant::Epochs, detail);
        }
        if issued.holder != Some((issued.issuer, issued.epoch)) {
            let detail = format!(
                "the sink accepted an effect of {} under epoch {} made while the holder was {:?}",
                names[issued.issuer],
                issued.epoch,
                issued.holder.map(|(n, e)| format!("{} (epoch {e})", names[n]))
            );
            return fail(Invariant::Epochs, detail);
        }
        self.highest_accepted = Some(issued.epoch);
        Ok(())
    }

    /// A write its machine committed: it must never be lost.
    pub fn acked(&mut self, origin: String, seq: u64, hash: [u8; 32]) {
        self.acked.insert((origin, seq), hash);
    }

    /// An inbound message `machine` acknowledged.
    pub fn inbound(&mut self, id: &str, machine: usize) {
        self.inbound.entry(id.to_string()).or_insert(machine);
    }

    pub fn messages(&self) -> (usize, usize) {
        (self.inbound.len(), self.replies.len())
    }

    /// Invariant 5: the receiver gets `text` for `message` under `key`.
    pub fn reply(&mut self, message: &str, key: &str, text: &str) -> Result<(), Violation> {
        match self.replies.get(message) {
            None => {
                self.replies.insert(message.to_string(), (key.to_string(), text.to_string()));
                Ok(())
            }
            Some((k, t)) if k == key && t == text => {
                self.resent += 1;
                Ok(())
            }
            Some((k, t)) => fail(
                Invariant::OneReply,
                format!("message {message} got {text:?} under key {key} after {t:?} under key {k}"),
            ),
        }
    }

    /// Invariant 6: every message acknowledged and held by a live replica
    /// (`held`) has its reply.
    pub fn answered(&self, held: &dyn Fn(&str) -> bool) -> Result<(), Violation> {
        let unanswered: Vec<&String> =
            self.inbound.keys().filter(|id| !self.replies.contains_key(*id) && held(id)).collect();
        match unanswered.first() {
            None => Ok(()),
            Some(first) => fail(
                Invariant::Answered,
                format!("{} acknowledged messages unanswered after the heal, {first} among them", unanswered.len()),
            ),
        }
    }

    pub fn writes(&self) -> usize {
        self.acked.len()
    }

    /// Invariant 4, over the replicas of the live machines. With a machine
    /// dead for good, entries of its that wait for predecessors that died
    /// with it may be held back forever, and its own writes that never left
    /// it are gone: `all_live` says whether to ask for an empty inbox, and
    /// `origins` lists whose acknowledged writes must be everywhere.
    pub fn convergence(
        &self,
        replicas: &[(&str, &Replica)],
        origins: &[&str],
        all_live: bool,
    ) -> Result<(), Violation> {
        let Some((first, reference)) = replicas.first() else { return Ok(()) };
        for (name, replica) in replicas {
            if all_live && replica.pending() > 0 {
                return fail(Invariant::Convergence, format!("{name} still holds {} entries back", replica.pending()));
            }
            let (ours, theirs) = (replica.converged(), reference.converged());
            if ours != theirs {
                let detail = format!(
                    "{name} differs from {first}: heads {:?} vs {:?}; {} vs {} rows ({} differ); open conflicts {:?} vs {:?}",
                    ours.heads,
                    theirs.heads,
                    ours.rows.len(),
                    theirs.rows.len(),
                    ours.rows.iter().filter(|(id, s)| theirs.rows.get(*id) != Some(s)).count(),
                    ours.open,
                    theirs.open
                );
                return fail(Invariant::Convergence, detail);
            }
            for ((origin, seq), hash) in &self.acked {
                if origins.contains(&origin.as_str()) && !replica.holds(origin, *seq, hash) {
                    let detail = format!("{name} lacks {origin}'s acknowledged write {seq}");
                    return fail(Invariant::Convergence, detail);
                }
            }
        }
        Ok(())
    }
}
