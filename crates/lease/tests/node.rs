//! A few walks through the lease with instant, lossless delivery. The
//! simulator (crates/sim) runs the same nodes under faults.

use std::collections::VecDeque;
use std::time::Duration;

use roost_lease::{
    Action, Ballot, Config, Durable, Envelope, Failover, HandoffFailure, Input, LeaseRole, Message, Node, NotEligible,
    Refusal, Tenure, View,
};

/// Handles `input` as a shell whose disk answers at once would: this
/// machine's own votes, sent to itself once stored, come straight back.
fn stored(node: &mut Node, input: Input, now: Duration) -> Vec<Action> {
    let mut all = Vec::new();
    let mut queue = VecDeque::from([input]);
    while let Some(input) = queue.pop_front() {
        for action in node.handle(input, now) {
            if let Action::Send { to, envelope } = &action
                && to == node.me()
            {
                queue.push_back(Input::Received { from: to.clone(), envelope: envelope.clone() });
            }
            all.push(action);
        }
    }
    all
}

fn node(config: Config, view: Option<View>) -> Node {
    Node::new(config, Durable { view, ..Durable::default() }, Duration::ZERO)
}

/// Which messages a loss applies to.
type MessageKind = fn(&Message) -> bool;

struct Net {
    nodes: Vec<Node>,
    down: Vec<bool>,
    now: Duration,
    log: Vec<(usize, Action)>,
    /// Whether a handoff target reports its log caught up at once.
    catch_up: bool,
    /// Messages lost on the way: the next one from, to, of a kind.
    lose: Vec<(usize, usize, MessageKind)>,
}

impl Net {
    fn new(names: &[&str], witness: Option<usize>) -> Net {
        let voters: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut config = Config::new(n, Tenure::new(Duration::from_secs(3)));
                config.witness = witness == Some(i);
                config.seed = i as u64 + 7;
                node(config, Some(View::new(0, 1, voters.clone())))
            })
            .collect();
        let mut net = Net {
            nodes,
            down: vec![false; names.len()],
            now: Duration::ZERO,
            log: Vec::new(),
            catch_up: true,
            lose: Vec::new(),
        };
        net.members(&voters, &[]);
        net
    }

    /// Tells every node the registry holds `active` and `revoked`.
    fn members(&mut self, active: &[String], revoked: &[String]) {
        for i in 0..self.nodes.len() {
            self.input(i, Input::Members { active: active.to_vec(), revoked: revoked.to_vec() });
        }
    }

    fn index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.me() == id).unwrap()
    }

    fn input(&mut self, at: usize, input: Input) {
        let mut queue = VecDeque::from([(at, input)]);
        while let Some((i, input)) = queue.pop_front() {
            if self.down[i] {
                continue;
            }
            for action in self.nodes[i].handle(input, self.now) {
                match &action {
                    Action::Send { to, envelope } => {
                        let to = self.index(to);
                        let lost = self.lose.iter().position(|(from, dest, kind)| {
                            (*from, *dest) == (i, to) && envelope.message.as_ref().is_some_and(kind)
                        });
                        if let Some(lost) = lost {
                            self.lose.remove(lost);
                        } else {
                            let from = self.nodes[i].me().to_string();
                            queue.push_back((to, Input::Received { from, envelope: envelope.clone() }));
                        }
                    }
                    Action::NeedHead => queue.push_back((i, Input::Head([("a".to_string(), 3)].into()))),
                    Action::CatchUp { epoch, head } if self.catch_up => {
                        queue.push_back((i, Input::CaughtUp { epoch: *epoch, head: head.clone() }))
                    }
                    _ => {}
                }
                self.log.push((i, action));
            }
        }
    }

    fn run(&mut self, for_: Duration) {
        let end = self.now + for_;
        while self.now < end {
            self.now += Duration::from_millis(10);
            for i in 0..self.nodes.len() {
                self.input(i, Input::Tick);
                self.input(i, Input::LogCaughtUp(true));
            }
            let acting: Vec<usize> = (0..self.nodes.len()).filter(|i| self.acting(*i).is_some()).collect();
            assert!(acting.len() <= 1, "two holders at {:?}: {acting:?}", self.now);
        }
    }

    /// Runs until `done` holds, at most `limit` (else fails saying `what`);
    /// returns how long that took.
    fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Net) -> bool) -> Duration {
        let started = self.now;
        while !done(self) {
            self.run(Duration::from_millis(10));
            assert!(self.now - started < limit, "{what} within {limit:?}: {:?}", self.log);
        }
        self.now - started
    }

    fn acting(&self, i: usize) -> Option<u64> {
        (!self.down[i]).then(|| self.nodes[i].may_act(self.now)).flatten()
    }

    fn holder(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|i| self.acting(*i).is_some())
    }
}

#[test]
fn one_machine_takes_the_role_and_keeps_its_epoch_while_renewing() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let holder = net.holder().expect("someone is awake");
    let epoch = net.acting(holder).unwrap();
    net.run(Duration::from_secs(20));
    assert_eq!(net.holder(), Some(holder));
    assert_eq!(net.acting(holder), Some(epoch), "renewals keep the epoch");
    let status = net.nodes[(holder + 1) % 3].status(net.now);
    assert_eq!(status.holder.as_deref(), Some(net.nodes[holder].me()));
    assert_eq!(status.claims_seen, 1);
    assert_eq!(status.failover, Failover::Automatic { heard: 3, voters: 3 });
}

#[test]
fn when_the_holder_dies_another_takes_over_within_ttl_plus_a_second() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let old = net.holder().unwrap();
    let old_epoch = net.acting(old).unwrap();
    net.down[old] = true;
    net.run_until(Duration::from_secs(4), "a failover", |net| net.holder().is_some());
    let new = net.holder().unwrap();
    assert_ne!(new, old);
    assert!(net.acting(new).unwrap() > old_epoch);
}

#[test]
fn a_lost_request_costs_a_resend_not_the_attempt() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let old = net.holder().unwrap();
    net.down[old] = true;
    let (b, c) = ((old + 1) % 3, (old + 2) % 3);
    // Each standby's first prepare and first proposal to the other are lost.
    let request = |m: &Message| matches!(m, Message::Prepare { .. } | Message::Propose { .. });
    net.lose = vec![(b, c, request), (c, b, request), (b, c, request), (c, b, request)];
    let took = net.run_until(Duration::from_secs(6), "a failover", |net| net.holder().is_some());
    let ttl = Duration::from_secs(3);
    // Waiting out the attempt instead (half a TTL per loss) would take longer.
    assert!(took < ttl + ttl / 2, "failover took {took:?} with four requests lost");
    assert!(net.lose.len() < 4, "requests were lost");
}

#[test]
fn a_handoff_survives_its_release_and_its_last_word_being_lost() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let old = net.holder().unwrap();
    let epoch = net.acting(old).unwrap();
    let (target, other) = ((old + 1) % 3, (old + 2) % 3);
    let release = |m: &Message| matches!(m, Message::Release { .. });
    let last_word = |m: &Message| matches!(m, Message::HandoffYield { .. });
    net.lose = vec![(old, target, release), (old, other, release), (old, target, last_word)];
    net.log.clear();
    net.input(target, Input::Wakeup { force: false });
    let paused = net.run_until(Duration::from_secs(5), "a handoff", |net| net.holder() == Some(target));
    assert!(net.lose.is_empty(), "all three were lost");
    assert_eq!(net.acting(target), Some(epoch + 1));
    // Waiting for the handoff's deadlines instead would take two seconds.
    assert!(paused < Duration::from_millis(700), "the handoff took {paused:?}");
}

#[test]
fn a_witness_votes_but_never_holds() {
    let mut net = Net::new(&["a", "b", "w"], Some(2));
    for _ in 0..5 {
        net.run(Duration::from_secs(2));
        let holder = net.holder().expect("a holder");
        assert_ne!(holder, 2);
        net.down[holder] = true;
        net.run(Duration::from_secs(5));
        assert_eq!(net.holder(), Some(1 - holder), "the other machine took over with the witness's vote");
        net.down[holder] = false;
    }
    assert_eq!(net.nodes[2].status(net.now).role, LeaseRole::Witness);
}

#[test]
fn two_voters_never_fail_over_on_their_own_but_force_takes_the_role() {
    let mut net = Net::new(&["a", "b"], None);
    net.run(Duration::from_secs(2));
    let old = net.holder().unwrap();
    let other = 1 - old;
    net.down[old] = true;
    net.run(Duration::from_secs(10));
    assert_eq!(net.holder(), None, "no majority, no failover");
    assert_eq!(net.nodes[other].status(net.now).failover, Failover::TooFewVoters { voters: 2 });
    net.input(other, Input::Wakeup { force: true });
    net.run(Duration::from_millis(100));
    assert_eq!(net.holder(), Some(other));
}

#[test]
fn wakeup_hands_the_role_over_with_the_next_epoch_and_no_overlap() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    for _ in 0..10 {
        let old = net.holder().unwrap();
        let epoch = net.acting(old).unwrap();
        let target = (old + 1) % 3;
        net.log.clear();
        net.input(target, Input::Wakeup { force: false });
        net.run(Duration::from_millis(100));
        assert_eq!(net.holder(), Some(target), "{:?}", net.log);
        assert_eq!(net.acting(target), Some(epoch + 1));
        assert!(net.log.iter().any(|(i, a)| *i == target && matches!(a, Action::HandoffDone { .. })));
        let asleep = net.log.iter().position(|(i, a)| *i == old && matches!(a, Action::Asleep { .. })).unwrap();
        let awake = net.log.iter().position(|(i, a)| *i == target && matches!(a, Action::Awake { .. })).unwrap();
        assert!(asleep < awake, "the old holder stopped before the new one started");
    }
}

#[test]
fn a_handoff_whose_ack_never_comes_leaves_the_holder_awake() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let old = net.holder().unwrap();
    let target = (old + 1) % 3;
    // The target never catches up, so never acknowledges.
    net.catch_up = false;
    net.input(target, Input::Wakeup { force: false });
    assert!(net.log.iter().any(|(i, a)| *i == old && matches!(a, Action::Pause { .. })));
    net.run(Duration::from_secs(3));
    assert_eq!(net.holder(), Some(old));
    assert!(net.log.iter().any(|(i, a)| *i == old && matches!(a, Action::Resume { .. })));
    assert!(net.log.iter().any(|(i, a)| *i == target && matches!(a, Action::HandoffFailed { .. })));
}

#[test]
fn a_grant_stands_when_a_voter_outside_the_majority_promised_a_higher_round() {
    let voters: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|v| v.to_string()).collect();
    let mut c = node(Config::new("c", Tenure::new(Duration::from_secs(3))), Some(View::new(0, 1, voters)));
    let now = Duration::from_millis(600);
    let sent = |actions: &[Action]| -> Vec<(String, Envelope)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, envelope } => Some((to.clone(), envelope.clone())),
                _ => None,
            })
            .collect()
    };
    stored(&mut c, Input::LogCaughtUp(true), now);
    // c waits its precedence (80 ms, third by id) after seeing the lease free.
    stored(&mut c, Input::Tick, now - Duration::from_millis(200));
    let prepares = sent(&stored(&mut c, Input::Tick, now));
    let (_, prepare) = prepares
        .iter()
        .find(|(to, e)| to == "a" && matches!(e.message, Some(Message::Prepare { .. })))
        .expect("c prepares");
    let Some(Message::Prepare { req, ballot, .. }) = prepare.message.clone() else { unreachable!() };
    let answer = |message: Message| Envelope { message: Some(message), ..prepare.clone() };
    let from = |who: &str, message: Message| Input::Received { from: who.to_string(), envelope: answer(message) };
    // b promised round 9 to d, which never gets a majority; a and e promise c's round.
    stored(&mut c, from("b", Message::Reject { req, why: Refusal::Promised(Ballot::new(9, "d")) }), now);
    stored(&mut c, from("a", Message::Promise { req, ballot: ballot.clone() }), now);
    stored(&mut c, from("e", Message::Promise { req, ballot: ballot.clone() }), now);
    stored(&mut c, from("a", Message::Accepted { req, ballot: ballot.clone() }), now);
    let actions = stored(&mut c, from("e", Message::Accepted { req, ballot: ballot.clone() }), now);
    assert!(actions.iter().any(|a| matches!(a, Action::Awake { epoch, .. } if *epoch == ballot.round)), "{actions:?}");
    assert_eq!(c.may_act(now), Some(ballot.round));
    assert_eq!(c.max_round(), 9, "the higher promised round stays known");
}

#[test]
fn a_majority_that_answers_after_the_lease_ran_out_grants_nothing() {
    let voters: Vec<String> = ["a", "b", "c"].iter().map(|v| v.to_string()).collect();
    let tenure = Tenure::new(Duration::from_secs(3));
    let mut c = node(Config::new("c", tenure), Some(View::new(0, 1, voters)));
    let start = Duration::from_millis(600);
    stored(&mut c, Input::LogCaughtUp(true), start);
    stored(&mut c, Input::Tick, start - Duration::from_millis(200));
    let actions = stored(&mut c, Input::Tick, start);
    let prepare = actions
        .iter()
        .find_map(|a| match a {
            Action::Send { to, envelope } if to == "a" && matches!(envelope.message, Some(Message::Prepare { .. })) => {
                Some(envelope.clone())
            }
            _ => None,
        })
        .expect("c prepares");
    let Some(Message::Prepare { req, ballot, .. }) = prepare.message.clone() else { unreachable!() };
    let from_a = |message: Message| Input::Received {
        from: "a".to_string(),
        envelope: Envelope { message: Some(message), ..prepare.clone() },
    };
    stored(&mut c, from_a(Message::Promise { req, ballot: ballot.clone() }), start);
    // c proposed at `start`, then its process stopped; a's acceptance is read
    // only once the lease it confirms has run out on c's clock.
    let late = start + tenure.valid_for();
    let actions = stored(&mut c, from_a(Message::Accepted { req, ballot: ballot.clone() }), late);
    assert!(!actions.iter().any(|a| matches!(a, Action::Awake { .. })), "{actions:?}");
    assert_eq!(c.may_act(late), None);
    assert_eq!(c.status(late).role, LeaseRole::Standby);
}

#[test]
fn a_machine_on_another_protocol_version_gets_no_votes_and_is_told_why() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let holder = net.holder().unwrap();
    let standby = (holder + 1) % 3;
    // A newer machine asks the standby to promise; the body is not understood.
    let foreign = roost_lease::Envelope { version: roost_lease::PROTOCOL_VERSION + 1, view: None, message: None };
    let actions = net.nodes[standby].handle(Input::Received { from: "z".into(), envelope: foreign }, net.now);
    let told = actions.iter().any(|a| {
        matches!(a, Action::Send { to, envelope } if to == "z"
            && matches!(envelope.message, Some(roost_lease::Message::Incompatible { version, .. }) if version == roost_lease::PROTOCOL_VERSION))
    });
    assert!(told, "{actions:?}");
    // And the standby learns the other side's version is not its own.
    let status = net.nodes[standby].status(net.now);
    let version = roost_lease::PROTOCOL_VERSION + 1;
    assert_eq!(status.not_eligible, Some(NotEligible::Incompatible { peer: "z".into(), version }));
    assert_eq!(net.holder(), Some(holder), "the live holder is untouched");
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

/// A chain founded by `a`, whose other machines joined and hold no view yet.
fn founded_by_a(others: &[&str]) -> Net {
    let mut net = Net::new(&["a"], None);
    for (i, name) in others.iter().enumerate() {
        let mut config = Config::new(name, Tenure::new(Duration::from_secs(3)));
        config.seed = i as u64 + 100;
        net.nodes.push(node(config, None));
        net.down.push(false);
    }
    net.nodes[0] = node(Config::new("a", Tenure::new(Duration::from_secs(3))), Some(View::genesis("a")));
    net
}

fn views(net: &Net) -> Vec<Vec<String>> {
    net.nodes.iter().map(|n| n.view().map(|v| v.voters.clone()).unwrap_or_default()).collect()
}

#[test]
fn a_founder_admits_joiners_one_at_a_time_and_never_two_act() {
    let mut net = founded_by_a(&["b", "c"]);
    net.members(&names(&["a"]), &[]);
    net.run(Duration::from_secs(2));
    assert_eq!(net.holder(), Some(0), "the founder is a chain of one");
    // b and c joined: the registry knows them, and they hear the holder.
    net.members(&names(&["a", "b", "c"]), &[]);
    net.run(Duration::from_secs(10));
    assert_eq!(views(&net), vec![names(&["a", "b", "c"]); 3], "every machine holds the view of all three");
    let view = net.nodes[0].view().unwrap().id;
    assert!(view.seq >= 4, "genesis, the holder's own, then one view per joiner: {view}");
    // With three voters the chain fails over.
    let holder = net.holder().unwrap();
    net.down[holder] = true;
    net.run(Duration::from_secs(5));
    assert!(net.holder().is_some_and(|h| h != holder), "another machine took over");
}

#[test]
fn a_machine_that_joined_is_never_awake_as_a_chain_of_one() {
    let mut net = founded_by_a(&["b"]);
    net.members(&names(&["a", "b"]), &[]);
    net.down[0] = true;
    net.input(1, Input::Wakeup { force: false });
    net.run(Duration::from_secs(30));
    assert_eq!(net.holder(), None);
    let status = net.nodes[1].status(net.now);
    assert_eq!(status.voters, 0);
    assert_eq!(status.not_eligible, Some(NotEligible::NotAVoter));
    assert!(
        net.log
            .iter()
            .any(|(i, a)| *i == 1 && matches!(a, Action::HandoffFailed { reason: HandoffFailure::NotAVoter }))
    );
}

#[test]
fn leaving_and_revoked_voters_are_removed_one_at_a_time() {
    let mut net = Net::new(&["a", "b", "c", "d"], None);
    net.run(Duration::from_secs(2));
    let holder = net.holder().unwrap();
    let others: Vec<usize> = (0..4).filter(|i| *i != holder).collect();
    net.input(others[0], Input::Leave);
    let revoked = net.nodes[others[1]].me().to_string();
    let all: Vec<String> = net.nodes.iter().map(|n| n.me().to_string()).collect();
    let active: Vec<String> = all.iter().filter(|n| **n != revoked).cloned().collect();
    net.members(&active, std::slice::from_ref(&revoked));
    net.run(Duration::from_secs(10));
    let view = net.nodes[holder].view().unwrap().voters.clone();
    let left = net.nodes[others[0]].me().to_string();
    assert!(!view.contains(&left) && !view.contains(&revoked), "{view:?}");
    assert_eq!(view.len(), 2);
    assert_eq!(net.holder(), Some(holder), "the holder kept the role through both changes");
}

#[test]
fn force_makes_the_machines_it_hears_the_voters_and_the_others_rejoin_later() {
    let mut net = Net::new(&["a", "b"], None);
    net.run(Duration::from_secs(2));
    let old = net.holder().unwrap();
    let other = 1 - old;
    net.down[old] = true;
    net.run(Duration::from_secs(5));
    net.input(other, Input::Wakeup { force: true });
    net.run(Duration::from_secs(1));
    assert_eq!(net.holder(), Some(other));
    assert_eq!(net.nodes[other].view().unwrap().voters, vec![net.nodes[other].me().to_string()]);
    // The other machine comes back: it adopts the newer view, stays asleep,
    // and is admitted again.
    net.down[old] = false;
    net.run(Duration::from_secs(10));
    assert_eq!(net.holder(), Some(other));
    assert_eq!(views(&net), vec![names(&["a", "b"]); 2]);
}

#[test]
fn a_holder_that_cannot_work_hands_the_role_over_and_stays_eligible() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let holder = net.holder().unwrap();
    let standby = (holder + 1) % 3;
    net.input(standby, Input::HandOver);
    net.run(Duration::from_millis(200));
    let refused = |net: &Net, at: usize, why: HandoffFailure| {
        net.log.iter().any(|(i, a)| *i == at && matches!(a, Action::HandoffFailed { reason } if *reason == why))
    };
    assert!(refused(&net, standby, HandoffFailure::NotHolder), "only the holder hands the role over");
    net.input(holder, Input::HandOver);
    net.run(Duration::from_secs(2));
    let next = net.holder().unwrap();
    assert_ne!(next, holder, "a live standby took the role");
    let epoch = net.nodes[next].status(net.now).epoch.unwrap();
    let done = net.log.iter().find_map(|(i, a)| match a {
        Action::HandoffDone { holder: Some(to), epoch } if *i == holder => Some((to.clone(), *epoch)),
        _ => None,
    });
    assert_eq!(done, Some((net.nodes[next].me().to_string(), epoch)), "the hand-over is reported done");
    // Once more, from the new holder back: nothing is left waiting.
    net.input(next, Input::HandOver);
    net.run(Duration::from_secs(2));
    assert_ne!(net.holder(), Some(next));
    assert_eq!(net.nodes[holder].status(net.now).not_eligible, None, "the old holder may take the role again");
    assert_eq!(net.nodes[next].view().unwrap().voters.len(), 3);
    // With no standby to take it, the holder keeps the role.
    let mut alone = Net::new(&["a"], None);
    alone.run(Duration::from_secs(2));
    alone.input(0, Input::HandOver);
    alone.run(Duration::from_secs(2));
    assert!(refused(&alone, 0, HandoffFailure::NoStandby));
    assert_eq!(alone.holder(), Some(0));
}

/// A hand-over goes to a standby that says it can do the role's work, never
/// to one that says it cannot; with none that can, the holder keeps the role.
#[test]
fn a_holder_hands_the_role_only_to_a_standby_that_can_work() {
    let mut net = Net::new(&["a", "b", "c"], None);
    net.run(Duration::from_secs(2));
    let holder = net.holder().unwrap();
    let (cannot, can) = ((holder + 1) % 3, (holder + 2) % 3);
    net.input(cannot, Input::Able(false));
    net.run(Duration::from_secs(1));
    assert!(
        net.nodes[holder].status(net.now).peers.iter().any(|p| p.id == net.nodes[cannot].me() && !p.able),
        "the holder heard which standby cannot work"
    );
    net.input(holder, Input::HandOver);
    net.run(Duration::from_secs(2));
    assert_eq!(net.holder(), Some(can), "the role went to the standby that can work");

    net.input(holder, Input::Able(false));
    net.run(Duration::from_secs(1));
    net.input(can, Input::HandOver);
    net.run(Duration::from_secs(2));
    let refused = net.log.iter().any(|(i, a)| {
        *i == can && matches!(a, Action::HandoffFailed { reason } if *reason == HandoffFailure::NoStandby)
    });
    assert!(refused, "no standby that can work: the hand-over is refused");
    assert_eq!(net.holder(), Some(can), "and the holder keeps the role");
}
