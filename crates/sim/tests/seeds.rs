//! Runs many seeds (`ROOST_SIM_SEEDS`, default 400, from `ROOST_SIM_SEED`,
//! default 0), each a random scenario of one to two simulated minutes, and
//! fails with the seed, the broken invariant, the last events and the replay
//! command of every failing seed. `ROOST_SIM_BUG` runs a deliberately broken
//! variant (see `roost_sim::Bug`), to replay what the `broken` test found.

use std::time::Instant;

use roost_sim::{Bug, Failure, Summary};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[test]
fn seeds() {
    let first: u64 = env("ROOST_SIM_SEED").map_or(0, |v| v.parse().expect("ROOST_SIM_SEED is a number"));
    let count: u64 = env("ROOST_SIM_SEEDS").map_or(400, |v| v.parse().expect("ROOST_SIM_SEEDS is a number"));
    let bug = env("ROOST_SIM_BUG").map(|v| Bug::parse(&v).expect("ROOST_SIM_BUG names a bug"));
    let started = Instant::now();
    let results = roost_sim::run_many(first, count, bug);
    let elapsed = started.elapsed();
    let passed: Vec<&Summary> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let failed: Vec<&Failure> = results.iter().filter_map(|r| r.as_ref().err().map(|f| &**f)).collect();
    let live: Vec<&Summary> = passed.iter().copied().filter(|s| s.live).collect();
    let slowest = live.iter().max_by_key(|s| s.holder_after);
    let share = |s: &&&Summary| s.holder_after.unwrap_or_default().as_secs_f64() / s.bound.as_secs_f64();
    let tightest = live.iter().max_by(|a, b| share(a).total_cmp(&share(b)));
    println!(
        "{count} seeds from {first} in {:.1}s ({:.1} seeds/s): {} passed, {} failed\n\
         passing runs: {} steps, {} grants, {} writes, {} effects accepted and {} refused by the sink, \
         {} handoffs done and {} failed",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        passed.len(),
        failed.len(),
        passed.iter().map(|s| s.steps).sum::<u64>(),
        passed.iter().map(|s| s.grants).sum::<u64>(),
        passed.iter().map(|s| s.writes).sum::<usize>(),
        passed.iter().map(|s| s.effects_accepted).sum::<u64>(),
        passed.iter().map(|s| s.effects_refused).sum::<u64>(),
        passed.iter().map(|s| s.handoffs_done).sum::<u64>(),
        passed.iter().map(|s| s.handoffs_failed).sum::<u64>(),
    );
    if let (Some(slow), Some(tight)) = (slowest, tightest) {
        let show = |s: &Summary| format!("{:?} of {:?} (seed {})", s.holder_after.unwrap_or_default(), s.bound, s.seed);
        println!(
            "holder after the heal in {} runs that promise one: slowest {}, closest to its bound {}",
            live.len(),
            show(slow),
            show(tight)
        );
    }
    for failure in &failed {
        println!("\n{failure}\n");
    }
    assert!(failed.is_empty(), "{} of {count} seeds failed; replay commands above", failed.len());
}
