//! The lease core's reports in words: what `/health`, `roost status`, the
//! event log and the answers to `roost wakeup` and `roost leave` say.

use roost_lease::{Failover, HandoffFailure, NotEligible, PROTOCOL_VERSION, SleepReason};

pub fn failover(failover: &Failover) -> String {
    match failover {
        Failover::External => "automatic: the lease server decides".into(),
        Failover::NoView => {
            "none yet: this machine holds no view of the voters; the awake machine sends it once it hears it".into()
        }
        Failover::TooFewVoters { voters } => format!(
            "none: {voters} voter(s), and a majority needs all of them; run `roost witness` on a third device, \
             or take the role with `roost wakeup --force` only when the other machine is really down"
        ),
        Failover::NotNow { heard, voters, majority } => {
            format!("not now: {heard} of {voters} voters reachable, {majority} needed")
        }
        Failover::Automatic { heard, voters } => format!("automatic: {heard} of {voters} voters reachable"),
    }
}

pub fn not_eligible(why: &NotEligible) -> String {
    match why {
        NotEligible::Witness => "this machine is a witness: it votes and never takes the role".into(),
        NotEligible::Left => "this machine left the role; `roost wakeup` makes it eligible again".into(),
        NotEligible::Incompatible { peer, version } => format!(
            "{peer} speaks lease protocol {version} and this machine {PROTOCOL_VERSION}; upgrade both to the same version"
        ),
        NotEligible::NotAVoter => "not a voter yet: the awake machine admits this machine once it hears it".into(),
    }
}

pub fn asleep(why: &SleepReason) -> String {
    match why {
        SleepReason::RenewalUnconfirmed => "its renewal was not confirmed in time".into(),
        SleepReason::LaterPromise { voter, epoch } => format!("{voter} promised a later epoch ({epoch})"),
        SleepReason::Stopping => "this machine is stopping".into(),
        SleepReason::ExternalLost => "the lease server says the lease is gone".into(),
        SleepReason::VotersChanged { epoch } => format!("a holder of a later epoch ({epoch}) changed the voters"),
        SleepReason::LaterClaim { machine, epoch } => format!("{machine} holds a later epoch ({epoch})"),
        SleepReason::SameClaim { machine, epoch } => format!("{machine} claims the same epoch ({epoch})"),
        SleepReason::HandedOver { to } => format!("handed over to {to}"),
    }
}

pub fn handoff_failure(why: &HandoffFailure) -> String {
    match why {
        HandoffFailure::Witness => "a witness never takes the role".into(),
        HandoffFailure::Yielding => {
            "this machine is handing the role to another right now; ask again in a moment".into()
        }
        HandoffFailure::NotAVoter => "this machine is not a voter yet: the awake machine admits it once it hears it \
                                      (or take the role with --force when the others are really down)"
            .into(),
        HandoffFailure::NoStandby => {
            "no eligible standby that can do the agent's work is reachable to take the role; this machine stays awake"
                .into()
        }
        HandoffFailure::NotHolder => "this machine does not hold the role".into(),
        HandoffFailure::NotRemoved => "no awake machine removed this one from the voters in time, so it stays one \
                                       (run `roost status` on another machine; a chain needs an awake machine to \
                                       let one go)"
            .into(),
        HandoffFailure::Aborted(abort) => abort.to_string(),
        HandoffFailure::Refused { by, reason } => format!("{by} refused: {reason}"),
        HandoffFailure::LeaseLost(why) => format!("the lease was lost: {}", asleep(why)),
        HandoffFailure::NoMajorityReachable => {
            "no majority of voters is reachable (a chain of two voters needs both; add a witness or use --force)".into()
        }
        HandoffFailure::ExternalSilent => "the lease server did not grant the lease in time".into(),
        HandoffFailure::NotGranted => "no majority of voters granted the lease in time".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_lease::{Abort, Stage};

    #[test]
    fn the_words_are_those_the_cli_and_its_tests_know() {
        let none = failover(&Failover::TooFewVoters { voters: 2 });
        assert!(none.starts_with("none: 2 voter(s)") && none.contains("roost witness"), "{none}");
        assert_eq!(failover(&Failover::Automatic { heard: 3, voters: 3 }), "automatic: 3 of 3 voters reachable");
        assert!(not_eligible(&NotEligible::Left).contains("left the role"));
        let incompatible = not_eligible(&NotEligible::Incompatible { peer: "z".into(), version: 9 });
        assert_eq!(
            incompatible,
            format!("z speaks lease protocol 9 and this machine {PROTOCOL_VERSION}; upgrade both to the same version")
        );
        let lost = HandoffFailure::LeaseLost(SleepReason::LaterClaim { machine: "b".into(), epoch: 7 });
        assert_eq!(handoff_failure(&lost), "the lease was lost: b holds a later epoch (7)");
        let timed_out = HandoffFailure::Aborted(Abort::TimedOut(Stage::CatchingUp));
        assert_eq!(handoff_failure(&timed_out), "the handoff timed out waiting for this machine's log to catch up");
        let refused = HandoffFailure::Refused { by: "a".into(), reason: Abort::NotAwake.to_string() };
        assert_eq!(handoff_failure(&refused), "a refused: this machine is not awake");
        assert_eq!(
            handoff_failure(&HandoffFailure::NotRemoved),
            "no awake machine removed this one from the voters in time, so it stays one (run `roost status` on \
             another machine; a chain needs an awake machine to let one go)"
        );
    }
}
