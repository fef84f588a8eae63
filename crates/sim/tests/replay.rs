//! One seed, one run: running a seed twice gives the same trace hash (every
//! step, message and action, in order), passing or failing.

use roost_sim::Bug;

#[test]
fn a_seed_gives_the_same_trace_twice() {
    let mut hashes = Vec::new();
    for seed in [3, 1234] {
        let first = roost_sim::run(seed, None).unwrap_or_else(|f| panic!("{f}"));
        let again = roost_sim::run(seed, None).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!((first.trace, first.steps), (again.trace, again.steps), "seed {seed} ran differently twice");
        hashes.push(first.trace);
    }
    assert_ne!(hashes[0], hashes[1], "different seeds run differently");
}

#[test]
fn a_failing_seed_fails_the_same_way_twice() {
    let failure = (0..300)
        .find_map(|seed| roost_sim::run(seed, Some(Bug::StaleSink)).err())
        .expect("a sink taking stale epochs breaks a seed within three hundred");
    let again = roost_sim::run(failure.seed, failure.bug).expect_err("the replay fails too");
    assert_eq!(
        (again.invariant, again.at, again.trace, &again.recent),
        (failure.invariant, failure.at, failure.trace, &failure.recent)
    );
}
