//! `roost bench failover`: the awake role between three real `roost serve`
//! processes. Measures the unplanned failover (kill -9 the holder, until
//! another machine is awake) and the pause of a planned handoff (from the
//! holder's "pause" to the target's "awake"), both from the processes' own
//! role-change logs on the shared CLOCK_BOOTTIME, and checks those logs for
//! any moment with two machines awake.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use roost_awake::status::Role;
use roost_awake::{LeaseStatus, clock, events};

use crate::bench::{ServedProcess, percentile_ms};
use crate::bench_sync::{roost, same_identity};
use crate::out::{note, say};

/// The targets: failover within TTL + 1 s, handoff pause under 300 ms.
const FAILOVER_SLACK: Duration = Duration::from_secs(1);
const PAUSE_TARGET: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(30);

/// One `roost serve` of a benchmark's chain.
pub(crate) struct Machine {
    pub home: PathBuf,
    pub addr: String,
    pub process: Option<ServedProcess>,
}

/// Serves each home and registers every machine with every other.
pub(crate) fn start_registered(homes: &[PathBuf]) -> anyhow::Result<Vec<Machine>> {
    let machines: Vec<Machine> = homes
        .iter()
        .map(|home| {
            let process = ServedProcess::start(home)?;
            Ok(Machine { home: home.clone(), addr: process.addr.clone(), process: Some(process) })
        })
        .collect::<anyhow::Result<_>>()?;
    for (i, machine) in machines.iter().enumerate() {
        for (j, peer) in machines.iter().enumerate() {
            if i != j {
                roost(&machine.home, &["instance", "register", &format!("http://{}", peer.addr)])?;
            }
        }
    }
    Ok(machines)
}

impl Machine {
    /// Its lease status, if its gateway answers with one.
    fn lease(&self) -> Option<LeaseStatus> {
        let url = format!("http://{}/health", self.addr);
        let health = crate::http::get(&url, Duration::from_secs(2)).ok()?;
        serde_json::from_value(health["lease"].clone()).ok()
    }
}

pub fn run(kills: usize, handoffs: usize, ttl_ms: u64, etcd: Option<&str>) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        note!(
            "roost: warning: this is a debug build; benchmark a release build (cargo run --release -- bench failover)"
        );
    }
    let ttl = Duration::from_millis(ttl_ms);
    let dir = tempfile::tempdir()?;
    let homes = same_identity(dir.path(), &["a", "b", "c"])?;
    for home in &homes {
        let config = home.join("config.toml");
        let text = std::fs::read_to_string(&config)?;
        let mut text = text.replace("ttl_ms = 3000", &format!("ttl_ms = {ttl_ms}"));
        if let Some(url) = etcd {
            text = text
                .replace("backend = \"quorum\"", "backend = \"etcd\"")
                .replace("etcd_endpoints = []", &format!("etcd_endpoints = [\"{url}\"]"));
        }
        std::fs::write(&config, text)?;
    }
    let mut machines = start_registered(&homes)?;
    settle(&machines)?;
    let formed = clock::now();

    let mut pauses = Vec::with_capacity(handoffs);
    for i in 0..handoffs {
        let holder = settle(&machines)?;
        let before = machines[holder].lease().and_then(|l| l.epoch).context("the holder reports its epoch")?;
        let target = (holder + 1 + i % 2) % machines.len();
        let wakeup = json!({"force": false});
        crate::http::local(&machines[target].home, "/api/v1/lease/wakeup", Some(&wakeup), crate::http::WAIT)
            .with_context(|| format!("handoff {i}"))?;
        let epoch = machines[target].lease().and_then(|l| l.epoch).context("the target reports its epoch")?;
        let paused = last_event(&machines[holder].home, "pause", before)?;
        let asleep = last_event(&machines[holder].home, "asleep", before)?;
        let awake = event_at(&machines[target].home, "awake", epoch)?;
        let pause = awake.saturating_sub(paused);
        if pause > PAUSE_TARGET {
            // Where the time went: before the holder let go (its log head,
            // the target's catch-up and ack) or after (the release, the
            // yield and the target's grant).
            note!(
                "handoff {}: pause {:.1} ms = {:.1} ms until the holder let go + {:.1} ms until the target was awake",
                i + 1,
                ms(pause),
                ms(asleep.saturating_sub(paused)),
                ms(awake.saturating_sub(asleep))
            );
        }
        pauses.push(pause);
    }

    let mut failovers = Vec::with_capacity(kills);
    let mut killed = Vec::new();
    for k in 0..kills {
        let holder = settle(&machines)?;
        // Kill at a different point of the renewal cycle each time.
        std::thread::sleep(ttl / 3 * (k % 3) as u32 / 2);
        let killed_at = clock::now();
        drop(machines[holder].process.take());
        killed.push((machines[holder].home.clone(), killed_at));
        let started = Instant::now();
        let (next, epoch) = loop {
            let awake =
                machines.iter().enumerate().filter(|(i, _)| *i != holder).find_map(|(i, m)| {
                    m.lease().filter(|l| l.role == Role::Awake).and_then(|l| l.epoch).map(|e| (i, e))
                });
            if let Some(found) = awake {
                break found;
            }
            if started.elapsed() > WAIT {
                bail!("no failover within {WAIT:?} after kill {k}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        failovers.push(event_at(&machines[next].home, "awake", epoch)?.saturating_sub(killed_at));
        let machine = &mut machines[holder];
        machine.process = Some(ServedProcess::start_at(&machine.home, &machine.addr)?);
        note!("kill {}/{kills}: failover {:.0} ms", k + 1, failovers.last().unwrap().as_secs_f64() * 1000.0);
    }

    let mut terms: Vec<events::Term> = Vec::new();
    for machine in &machines {
        let log = events::read(&machine.home)?;
        // A killed process never logs its end: close each term at its kill.
        let mut machine_terms = events::terms(&log, None);
        for term in machine_terms.iter_mut().filter(|t| t.until.is_none()) {
            term.until =
                killed.iter().filter(|(home, at)| home == &machine.home && *at >= term.from).map(|(_, at)| *at).min();
        }
        terms.extend(machine_terms.into_iter().filter(|t| t.until.is_none_or(|u| u > formed)));
    }
    let overlap = events::overlap(&terms);

    let (failover_p50, failover_max) = (percentile_ms(&mut failovers, 0.5), percentile_ms(&mut failovers, 1.0));
    let (pause_p50, pause_max) = (percentile_ms(&mut pauses, 0.5), percentile_ms(&mut pauses, 1.0));
    let failover_target = (ttl + FAILOVER_SLACK).as_secs_f64() * 1000.0;
    let pause_target = PAUSE_TARGET.as_secs_f64() * 1000.0;
    let backend = etcd.map_or("the machines' votes".to_string(), |url| format!("etcd at {url}"));
    say!("lease TTL {ttl_ms} ms, 3 machines on loopback, granted by {backend}")?;
    say!(
        "unplanned failover over {kills} kills: median {failover_p50:.0} ms, max {failover_max:.0} ms \
         (target < {failover_target:.0} ms: median at {:.2}, max at {:.2} of it)",
        failover_p50 / failover_target,
        failover_max / failover_target
    )?;
    say!(
        "planned handoff pause over {handoffs} handoffs: median {pause_p50:.1} ms, max {pause_max:.1} ms \
         (target < {pause_target:.0} ms: median at {:.3}, max at {:.3} of it)",
        pause_p50 / pause_target,
        pause_max / pause_target
    )?;
    match overlap {
        None => say!("two machines awake at once: never ({} terms checked)", terms.len()),
        Some((a, b)) => bail!("two machines were awake at once: {a:?} and {b:?}"),
    }
}

/// Waits until exactly one machine is awake and every one names it; returns it.
fn settle(machines: &[Machine]) -> anyhow::Result<usize> {
    let started = Instant::now();
    loop {
        let leases: Vec<Option<LeaseStatus>> = machines.iter().map(Machine::lease).collect();
        let awake: Vec<usize> =
            (0..leases.len()).filter(|i| leases[*i].as_ref().is_some_and(|l| l.role == Role::Awake)).collect();
        let holder = |l: &Option<LeaseStatus>| l.as_ref().and_then(|l| l.holder.as_ref().map(|h| h.id.clone()));
        let agreed = awake.len() == 1
            && leases
                .iter()
                .all(|l| holder(l) == holder(&leases[awake[0]]) && l.as_ref().is_some_and(|l| l.voters_heard == 3));
        if agreed {
            return Ok(awake[0]);
        }
        if started.elapsed() > WAIT {
            bail!("the machines did not agree on one holder within {WAIT:?}: {leases:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn last_event(home: &Path, kind: &str, epoch: u64) -> anyhow::Result<Duration> {
    let log = events::read(home)?;
    log.iter()
        .rev()
        .find(|e| e.event == kind && e.epoch == Some(epoch))
        .map(|e| e.at)
        .with_context(|| format!("no {kind} event at epoch {epoch}"))
}

fn event_at(home: &Path, kind: &str, epoch: u64) -> anyhow::Result<Duration> {
    let log = events::read(home)?;
    log.iter()
        .find(|e| e.event == kind && e.epoch == Some(epoch))
        .map(|e| e.at)
        .with_context(|| format!("no {kind} event at epoch {epoch}"))
}
