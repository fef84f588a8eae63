//! The awake role between real `roost serve` (and `roost witness`) processes
//! on loopback: failover after kill -9, a holder paused past its lease,
//! planned handoffs back and forth, a witness, a chain of two, and leaving;
//! the first of these again with the lease held in a real etcd server.
//!
//! Every process logs its role changes with CLOCK_BOOTTIME readings, which
//! all processes of one machine share; the tests check those logs for any
//! moment with two machines awake.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Served, configure, lease, roost, signal, succeeded, until};
use roost_awake::events::{self, Event, Term};
use roost_awake::status::Role;
use roost_awake::{LeaseReport, LeaseStatus, clock};
use serde_json::Value;

/// One chain at a time: each test's waits are counted in TTLs, and several
/// chains of debug builds sharing two cores would measure the load.
static ONE_CHAIN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_chain() -> std::sync::MutexGuard<'static, ()> {
    ONE_CHAIN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lease TTL the tests run with (the default is 3 s).
const TTL: Duration = Duration::from_secs(2);

/// A chain of `names`, each joining through the first by pairing; the ones
/// in `witnesses` run `roost witness`. With `etcd`, the lease is held in that
/// etcd server instead of by the voters. Returns once every machine counts
/// and hears every voter.
fn chain(root: &Path, names: &[&str], witnesses: &[&str], etcd: Option<&str>) -> (Vec<PathBuf>, Vec<Served>) {
    chain_at(root, names, witnesses, etcd, TTL)
}

/// [`chain`] with the lease TTL `ttl`.
fn chain_at(
    root: &Path,
    names: &[&str],
    witnesses: &[&str],
    etcd: Option<&str>,
    ttl: Duration,
) -> (Vec<PathBuf>, Vec<Served>) {
    let setup = |homes: &[PathBuf]| {
        for home in homes {
            configure(home, "ttl_ms", &ttl.as_millis().to_string());
            if let Some(url) = etcd {
                configure(home, "backend", "\"etcd\"");
                configure(home, "etcd_endpoints", &format!("[\"{url}\"]"));
            }
        }
    };
    let (h, served) = common::chain_with(root, names, witnesses, setup, |_| 0);
    let n = names.len();
    common::until_every_voter_heard(&served, n);
    (h, served)
}

fn role(s: &Served) -> String {
    lease(s)["role"].as_str().unwrap_or("unreachable").to_string()
}

/// The one machine awake, once every running machine names it holder.
fn settled(served: &[&Served]) -> usize {
    let started = std::time::Instant::now();
    loop {
        let leases: Vec<Value> = served.iter().map(|s| lease(s)).collect();
        let awake: Vec<usize> = (0..served.len()).filter(|i| leases[*i]["role"] == "awake").collect();
        let named: Vec<&Value> = leases.iter().map(|l| &l["holder"]["id"]).collect();
        if awake.len() == 1
            && named.iter().all(|n| *n == named[awake[0]])
            && leases.iter().all(|l| l["claims_seen"] == 1)
        {
            return awake[0];
        }
        assert!(started.elapsed() < common::WAIT, "no agreed holder: {leases:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all(served: &[Served]) -> Vec<&Served> {
    served.iter().collect()
}

fn terms(homes: &[PathBuf], ended: Option<Duration>) -> Vec<Term> {
    homes.iter().flat_map(|h| events::terms(&events::read(h).unwrap(), ended)).collect()
}

/// No two machines of the chain awake at once, from the moment each machine
/// started (before joining, each was the only machine of a chain of its own;
/// those terms belong to other chains). `ended` closes the terms of a
/// process killed while awake.
fn assert_no_overlap(homes: &[PathBuf], ended: Option<Duration>) {
    let terms: Vec<Term> = terms(homes, ended);
    assert!(!terms.is_empty());
    if let Some((a, b)) = events::overlap(&terms) {
        panic!("two machines awake at once: {a:?} and {b:?}");
    }
}

/// The first `kind` event of `epoch` in `home`'s log, on the shared clock,
/// once it is there: the log is appended by a thread of its own, so a role
/// the API already reports may not be in the file yet.
fn logged(home: &Path, kind: &str, epoch: u64) -> Event {
    let find = || events::read(home).unwrap().into_iter().find(|e| e.event == kind && e.epoch == Some(epoch));
    until(&format!("{} logs {kind} at epoch {epoch}", home.display()), || find().is_some());
    find().unwrap()
}

/// When `home` last became awake, on the shared clock.
fn awake_at(home: &Path, epoch: u64) -> Duration {
    logged(home, "awake", epoch).at
}

/// Kills the holder with SIGKILL and waits for another machine to take a
/// later epoch, never while the killed one could act; reports how long that
/// took. Returns the killed machine, the new holder and when the kill was.
fn kill_the_holder(h: &[PathBuf], served: &mut [Served]) -> (usize, usize, Duration) {
    let holder = settled(&all(served));
    let old_epoch = lease(&served[holder])["epoch"].as_u64().unwrap();
    let killed_at = clock::now();
    let _ = served[holder].child.kill();
    let _ = served[holder].child.wait();
    let rest: Vec<&Served> = served.iter().enumerate().filter(|(i, _)| *i != holder).map(|(_, s)| s).collect();
    let next = settled(&rest);
    let next = served.iter().position(|s| std::ptr::eq(s, rest[next])).unwrap();
    let next_epoch = lease(&served[next])["epoch"].as_u64().unwrap();
    assert!(next_epoch > old_epoch);
    eprintln!("failover took {:?}", awake_at(&h[next], next_epoch) - killed_at);
    assert_no_overlap(h, Some(killed_at));
    (holder, next, killed_at)
}

fn wakeup(home: &Path, force: bool) -> std::process::Output {
    let mut args = vec!["wakeup"];
    if force {
        args.push("--force");
    }
    roost(home, &args)
}

#[test]
fn the_role_survives_kill_nine_a_long_pause_and_fifty_handoffs_without_two_awake() {
    survives_kill_pause_and_handoffs(None);
}

#[test]
fn with_etcd_the_role_survives_kill_nine_a_long_pause_and_fifty_handoffs_without_two_awake() {
    let etcd = roost_etcd::testing::EtcdServer::start();
    survives_kill_pause_and_handoffs(Some(&etcd.client_url()));
}

fn survives_kill_pause_and_handoffs(etcd: Option<&str>) {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    let (h, mut served) = chain(root.path(), &["a", "b", "c"], &[], etcd);
    assert_eq!(lease(&served[0])["backend"], if etcd.is_some() { "etcd" } else { "quorum" });
    let first = settled(&all(&served));
    let formed = clock::now();
    let status = lease(&served[first]);
    assert_eq!(status["voters"], 3);
    assert!(status["failover"].as_str().unwrap().starts_with("automatic"), "{status}");
    let typed: LeaseStatus = serde_json::from_value(status.clone()).expect("/health's lease reads as a LeaseStatus");
    assert_eq!((typed.role, typed.voters), (Role::Awake, 3));

    // Planned handoffs, back and forth between the other two machines.
    let (x, y) = ((first + 1) % 3, (first + 2) % 3);
    let mut epoch = status["epoch"].as_u64().unwrap();
    for i in 0..50 {
        let target = if i % 2 == 0 { x } else { y };
        let said = succeeded(wakeup(&h[target], false));
        assert!(said.contains("is awake at epoch"), "{said}");
        let now = lease(&served[target]);
        assert_eq!(now["role"], "awake", "handoff {i}: {now}");
        let next = now["epoch"].as_u64().unwrap();
        assert!(next > epoch, "handoff {i}: epoch {next} after {epoch}");
        epoch = next;
    }
    let events = events::read(&h[x]).unwrap();
    assert!(events.iter().filter(|e| e.event == "awake" && e.at > formed).count() >= 25);
    assert!(events.iter().any(|e| e.event == "pause"), "the holder stopped taking work before yielding");
    assert_no_overlap(&h, None);

    // kill -9 the holder: another machine is awake (how soon is reported;
    // `roost bench failover` measures it).
    let (holder, next_index, killed_at) = kill_the_holder(&h, &mut served);

    // The killed machine comes back as a standby and learns the holder.
    served[holder] = Served::start(&h[holder]);
    let back = settled(&all(&served));
    assert_eq!(back, next_index, "a restarted machine does not take the role from a live holder");

    // SIGSTOP the holder for 3 × TTL: another takes over; after SIGCONT the
    // old one does not act, and learns the new epoch.
    let paused = back;
    let paused_epoch = lease(&served[paused])["epoch"].as_u64().unwrap();
    signal(&served[paused].child, "STOP");
    std::thread::sleep(TTL * 3);
    let others: Vec<&Served> = served.iter().enumerate().filter(|(i, _)| *i != paused).map(|(_, s)| s).collect();
    let taker = served.iter().position(|s| std::ptr::eq(s, others[settled(&others)])).unwrap();
    let taker_epoch = lease(&served[taker])["epoch"].as_u64().unwrap();
    assert!(taker_epoch > paused_epoch);
    signal(&served[paused].child, "CONT");
    until("the resumed machine learns the new holder", || {
        let l = lease(&served[paused]);
        l["role"] == "standby" && l["epoch"].as_u64() == Some(taker_epoch)
    });
    let asleep = logged(&h[paused], "asleep", paused_epoch);
    assert!(
        asleep.until.unwrap() <= awake_at(&h[taker], taker_epoch),
        "the paused holder's authority ended before the new one began: {asleep:?}"
    );
    assert_eq!(settled(&all(&served)), taker);
    assert_no_overlap(&h, Some(killed_at));

    // The new holder's record, stamped with its epoch, reaches every
    // machine's log, and every fence (the paused machine's too) is at least
    // that epoch: a write stamped with the old epoch would be refused.
    until("every machine holds the new holder's record behind its fence", || {
        served.iter().all(|s| {
            let Some(report) = s.get("/api/v1/lease").and_then(|v| serde_json::from_value::<LeaseReport>(v).ok())
            else {
                return false;
            };
            let holder = report.status.holder.as_ref().map(|h| &h.id);
            report.record.is_some_and(|r| r.epoch == taker_epoch && r.holder.as_ref().map(|h| &h.holder) == holder)
                && report.fence >= taker_epoch
        })
    });
}

/// `[lease] ttl_ms = 1000`, the shortest TTL README offers: kill -9 the
/// holder; another machine takes over, never while the old one could act,
/// and the killed one comes back as a standby.
#[test]
fn at_a_one_second_ttl_kill_nine_fails_over_without_two_awake() {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    let (h, mut served) = chain_at(root.path(), &["a", "b", "c"], &[], None, Duration::from_secs(1));
    let (holder, next, _) = kill_the_holder(&h, &mut served);
    served[holder] = Served::start(&h[holder]);
    assert_eq!(settled(&all(&served)), next, "the killed machine came back as a standby");
}

#[test]
fn two_machines_and_a_witness_fail_over_and_the_witness_never_holds() {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    // The witness joins before b does: it learns of b from a's replication,
    // as b learns of it.
    let (h, mut served) = chain(root.path(), &["a", "w", "b"], &["w"], None);
    let holder = settled(&[&served[0], &served[1], &served[2]]);
    assert_ne!(holder, 1);
    let witness = lease(&served[1]);
    assert_eq!(witness["role"], "witness", "{witness}");
    assert_eq!(witness["part"], "witness");
    assert!(witness["not_eligible"].as_str().unwrap().contains("witness"));
    assert!(wakeup(&h[1], false).stderr.ends_with(b"a witness never takes the role\n"));
    let listed = common::json_of(roost(&h[0], &["machines", "--json"]));
    let w = listed.as_array().unwrap().iter().find(|m| m["name"] == "w").unwrap().clone();
    assert_eq!((w["role"].as_str(), w["sync"].as_str()), (Some("witness"), Some("online")), "{w}");

    let killed_at = clock::now();
    let _ = served[holder].child.kill();
    let _ = served[holder].child.wait();
    let other = 2 - holder;
    until("the other machine takes over with the witness's vote", || role(&served[other]) == "awake");
    let epoch = lease(&served[other])["epoch"].as_u64().unwrap();
    let failover = awake_at(&h[other], epoch) - killed_at;
    eprintln!("failover took {failover:?}");
    assert!(events::read(&h[1]).unwrap().iter().all(|e| e.event != "awake"));
    served[holder] = Served::start(&h[holder]);
    assert_eq!(settled(&[&served[0], &served[1], &served[2]]), other);
    assert_no_overlap(&h, Some(killed_at));
}

#[test]
fn two_voters_never_fail_over_alone_and_force_takes_the_role_with_a_warning() {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    let (h, mut served) = chain(root.path(), &["a", "b"], &[], None);
    let holder = settled(&[&served[0], &served[1]]);
    let other = 1 - holder;
    let failover = lease(&served[other])["failover"].as_str().unwrap().to_string();
    assert!(failover.starts_with("none: 2 voter(s)") && failover.contains("roost witness"), "{failover}");

    let _ = served[holder].child.kill();
    let _ = served[holder].child.wait();
    std::thread::sleep(TTL * 4);
    assert_ne!(role(&served[other]), "awake", "no majority, no failover");
    let refused = wakeup(&h[other], false);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("no majority") && why.contains("--force"), "{why}");

    let forced = wakeup(&h[other], true);
    let warning = String::from_utf8_lossy(&forced.stderr);
    assert!(forced.status.success(), "{warning}");
    assert!(warning.contains("warning: --force") && warning.contains("two machines act"), "{warning}");
    assert_eq!(role(&served[other]), "awake");
    let forced_epoch = lease(&served[other])["epoch"].as_u64().unwrap();

    // The old holder comes back: it learns the later epoch and stays standby.
    served[holder] = Served::start(&h[holder]);
    assert_eq!(settled(&[&served[0], &served[1]]), other);
    assert!(lease(&served[other])["epoch"].as_u64().unwrap() >= forced_epoch);
}

#[test]
fn leaving_the_chain_hands_the_role_off_first() {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    let (h, served) = chain(root.path(), &["a", "b", "c"], &[], None);
    let holder = settled(&[&served[0], &served[1], &served[2]]);
    let said = succeeded(roost(&h[holder], &["leave", "--force"]));
    assert!(said.contains("left the voters"), "{said}");
    let others: Vec<&Served> = served.iter().enumerate().filter(|(i, _)| *i != holder).map(|(_, s)| s).collect();
    let next = settled(&others);
    assert_eq!(role(others[next]), "awake");
    assert_ne!(role(&served[holder]), "awake");
    let not_eligible = lease(&served[holder])["not_eligible"].as_str().unwrap_or_default().to_string();
    assert!(not_eligible.contains("left the role"), "{not_eligible}");
    assert_no_overlap(&h, None);
}

/// Makes `lease.json` of `home` impossible to write (a directory in its
/// place), or possible again.
fn break_votes_file(home: &Path, broken: bool) {
    let path = home.join("lease.json");
    if broken {
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir_all(path.join("blocked")).unwrap();
    } else {
        std::fs::remove_dir_all(&path).unwrap();
    }
}

#[test]
fn votes_that_cannot_be_stored_are_never_sent_and_no_two_machines_are_awake() {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    let (h, mut served) = chain(root.path(), &["a", "b", "c"], &[], None);
    let holder = settled(&all(&served));
    let voter = (holder + 1) % 3;
    let third = (holder + 2) % 3;
    break_votes_file(&h[holder], true);
    break_votes_file(&h[voter], true);

    // A handoff to the third machine needs the votes of the holder or the
    // voter, which cannot store them, so never send them: it fails. (The
    // holder may have released the role by then: safe, and nobody can take
    // it until a majority can store its votes again.)
    let refused = wakeup(&h[third], false);
    assert!(!refused.status.success(), "a handoff went through on votes never stored");
    until("the voter reports its votes cannot be stored", || {
        let l = lease(&served[voter]);
        l["votes_stored"] == false && l["votes_error"].is_string() && l["ok"] == false
    });
    std::thread::sleep(TTL * 3);
    assert_ne!(role(&served[third]), "awake", "a majority formed on votes never stored");

    // The old holder dies.
    let killed_at = clock::now();
    let _ = served[holder].child.kill();
    let _ = served[holder].child.wait();
    std::thread::sleep(TTL * 2);
    assert_ne!(role(&served[third]), "awake", "a majority formed on votes never stored");
    assert_ne!(role(&served[voter]), "awake");

    // Its file mended, the voter stores its votes again and the chain has a
    // holder.
    break_votes_file(&h[voter], false);
    until("a holder once the voter's votes are stored", || {
        role(&served[third]) == "awake" || role(&served[voter]) == "awake"
    });
    let state: Value = serde_json::from_str(&std::fs::read_to_string(h[voter].join("lease.json")).unwrap()).unwrap();
    assert!(state["promised"].is_object(), "{state}");
    break_votes_file(&h[holder], false);
    served[holder] = Served::start(&h[holder]);
    settled(&all(&served));
    assert_no_overlap(&h, Some(killed_at));
}

#[test]
fn a_voter_killed_fifty_times_in_the_middle_of_storing_its_votes_keeps_one_holder() {
    let _one = one_chain();
    let root = tempfile::tempdir().unwrap();
    let (h, mut served) = chain(root.path(), &["a", "b", "c"], &[], None);
    let mut kills = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..50 {
        let holder = settled(&all(&served));
        // Every handoff has every voter store new promises and a new lease:
        // the killed machine dies somewhere in the middle of that.
        let (target, victim) = ((holder + 1) % 3, (holder + 2) % 3);
        let mut asking = std::process::Command::new(common::roost_bin())
            .arg("--home")
            .arg(&h[target])
            .arg("wakeup")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 40));
        let killed_at = clock::now();
        let _ = served[victim].child.kill();
        let _ = served[victim].child.wait();
        kills.push(killed_at);
        let _ = asking.wait();
        let text = std::fs::read_to_string(h[victim].join("lease.json")).unwrap_or_default();
        if !text.is_empty() {
            let state: Result<Value, _> = serde_json::from_str(&text);
            assert!(state.is_ok(), "round {round}: the votes file does not parse: {text:?}");
        }
        served[victim] = Served::start(&h[victim]);
    }
    settled(&all(&served));
    // A killed machine's term, if it held the role, ends at its kill.
    let mut terms = Vec::new();
    for home in &h {
        let log = events::read(home).unwrap();
        for mut term in events::terms(&log, None) {
            if term.until.is_none() {
                term.until = kills.iter().copied().find(|k| *k > term.from);
            }
            terms.push(term);
        }
    }
    if let Some((a, b)) = events::overlap(&terms) {
        panic!("two machines awake at once: {a:?} and {b:?}");
    }
}
