//! The checker catches what it claims to: each deliberately broken variant
//! (`roost_sim::Bug`) must make some seed fail with the invariant that bug
//! breaks. By default seeds run until each bug is caught (at most 1000);
//! with `ROOST_SIM_BROKEN_SEEDS=N` every bug runs N seeds and the counts are
//! printed.

use std::collections::BTreeMap;

use roost_sim::{Bug, Failure, Invariant};

fn expected(bug: Bug) -> &'static [Invariant] {
    match bug {
        Bug::IgnoreDrift => &[Invariant::OneHolder],
        Bug::StaleSink => &[Invariant::Epochs],
        Bug::ForgetVotes | Bug::SendBeforePersist => &[Invariant::OneHolder, Invariant::Epochs],
        Bug::SendWithoutLease => &[Invariant::OneReply],
        Bug::PoolNoSettle => &[Invariant::OneOwner],
    }
}

#[test]
fn broken_variants_fail_the_invariant_they_break() {
    let counting: Option<u64> = std::env::var("ROOST_SIM_BROKEN_SEEDS").ok().map(|v| v.parse().expect("a number"));
    let mut missed = Vec::new();
    for bug in Bug::ALL {
        let mut failures: Vec<Box<Failure>> = Vec::new();
        let mut ran = 0;
        let limit = counting.unwrap_or(1000);
        while ran < limit && (counting.is_some() || !failures.iter().any(|f| expected(bug).contains(&f.invariant))) {
            let chunk = (limit - ran).min(if counting.is_some() { limit } else { 20 });
            failures.extend(roost_sim::run_many(ran, chunk, Some(bug)).into_iter().filter_map(Result::err));
            ran += chunk;
        }
        let mut by_invariant = BTreeMap::new();
        for f in &failures {
            *by_invariant.entry(f.invariant.number()).or_insert(0) += 1;
        }
        println!("{}: {} of {ran} seeds fail; by invariant {by_invariant:?}", bug.name(), failures.len());
        match failures.iter().find(|f| expected(bug).contains(&f.invariant)) {
            Some(first) => println!("{first}\n"),
            None => missed.push(bug.name()),
        }
    }
    assert!(missed.is_empty(), "the checker missed {missed:?}");
}
