//! Replication between real `roost serve` processes on loopback, over iroh.

mod common;

use std::process::Command;

use common::{
    Served, add, chain, chain_with, conflicts, content, edit, join, json_of, roost, succeeded, sync_wait, until,
};
use roost_core::Table;
use roost_instance::Instance;
use roost_store::Mutation;
use serde_json::{Value, json};

#[test]
fn writes_flow_every_way_when_each_machine_joined_through_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    // B joins through A, C through B: C learns of A from B.
    let (h, served) = chain_with(dir.path(), &["a", "b", "c"], &[], |_| {}, |i| i - 1);
    let [a, b, c]: [Served; 3] = served.try_into().unwrap_or_else(|_| unreachable!());
    let from_a = add(&h[0], "written on a");
    let from_b = add(&h[1], "written on b");
    let from_c = add(&h[2], "written on c");
    for home in &h {
        for id in [&from_a, &from_b, &from_c] {
            until("every write on every machine", || content(home, id).is_some());
        }
    }
    let status = json_of(roost(&h[1], &["sync", "status", "--json"]));
    let states: Vec<&str> = status["peers"].as_array().unwrap().iter().map(|p| p["state"].as_str().unwrap()).collect();
    assert!(states.iter().all(|s| ["online", "syncing"].contains(s)), "{status}");
    let health: Value =
        serde_json::from_str(&succeeded(Command::new("curl").args(["-s", &b.url("/health")]).output().unwrap()))
            .unwrap();
    assert!(health["sync"]["peers"].as_array().is_some_and(|p| p.len() == 2), "{health}");

    // A causal chain of edits across machines raises no conflict.
    edit(&h[0], &from_a, "a edits");
    until("b sees a's edit", || content(&h[1], &from_a).as_deref() == Some("a edits"));
    edit(&h[1], &from_a, "b edits");
    until("a sees b's edit", || content(&h[0], &from_a).as_deref() == Some("b edits"));
    edit(&h[0], &from_a, "a again");
    until("c sees the last edit", || content(&h[2], &from_a).as_deref() == Some("a again"));
    for home in &h {
        assert!(conflicts(home).is_empty(), "no conflict from a causal chain");
    }
    drop((a, b, c));
}

#[test]
fn concurrent_edits_while_apart_converge_with_one_conflict_each_and_resolution_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let (h, served) = chain(dir.path(), &["a", "b"]);
    let [a, b]: [Served; 2] = served.try_into().unwrap_or_else(|_| unreachable!());
    let id = add(&h[0], "base");
    until("b has the memory", || content(&h[1], &id).is_some());
    sync_wait(&h[1]);

    // Link down: B stops; both edit; B comes back.
    b.stop();
    edit(&h[0], &id, "edited on a");
    edit(&h[1], &id, "edited on b");
    let b = Served::start(&h[1]);
    until("both show one winner", || {
        let (x, y) = (content(&h[0], &id), content(&h[1], &id));
        x == y && conflicts(&h[0]).len() == 1 && conflicts(&h[1]).len() == 1
    });
    let (ca, cb) = (conflicts(&h[0]), conflicts(&h[1]));
    assert_eq!(ca[0]["id"], cb[0]["id"], "one conflict, one id, on each instance");
    let winner = content(&h[0], &id).unwrap();
    let loser = ca[0]["loser"]["row"]["content"].as_str().unwrap().to_string();
    assert_ne!(winner, loser);
    assert!(["edited on a", "edited on b"].contains(&loser.as_str()));

    // Resolve on B by keeping the version that lost; A closes it too.
    let side = if cb[0]["loser"]["local"] == true { "local" } else { "remote" };
    let conflict = cb[0]["id"].as_str().unwrap().to_string();
    succeeded(roost(&h[1], &["conflicts", "resolve", &conflict, "--keep", side]));
    until("the resolution reaches a", || conflicts(&h[0]).is_empty() && content(&h[0], &id) == Some(loser.clone()));
    assert!(conflicts(&h[1]).is_empty());
    let shown = json_of(roost(&h[0], &["conflicts", "show", &conflict, "--json"]));
    assert_eq!(shown["resolved"], true);
    drop((a, b));
}

#[test]
fn a_new_machine_gets_the_whole_history_even_when_killed_midway() {
    const HISTORY: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let h = [dir.path().join("a"), dir.path().join("late")];
    for (home, name) in h.iter().zip(["a", "late"]) {
        succeeded(roost(home, &["init", "--name", name]));
    }
    let history = (0..HISTORY)
        .map(|i| {
            let fields = json!({"content": format!("memory number {i} about walruses")});
            Mutation::Create { table: Table::Memories, fields: fields.as_object().unwrap().clone() }
        })
        .collect();
    Instance::open(&h[0]).unwrap().open_store().unwrap().write_all(history).unwrap();
    let a = Served::start(&h[0]);
    let late = Served::start(&h[1]);
    let reader = Instance::open(&h[1]).unwrap().open_store().unwrap();
    let received = || -> u64 { reader.heads().unwrap().values().sum() };
    join(&h[1], &h[0], &a);
    // Watch closely (a whole catch-up takes few transactions), freeze the
    // machine at its first applied batch, then kill it there.
    let started = std::time::Instant::now();
    while received() == 0 {
        assert!(started.elapsed() < common::WAIT, "the catch-up never started");
        std::thread::yield_now();
    }
    common::signal(&late.child, "STOP");
    let midway = received();
    // So far behind, the search index waits for the end of the catch-up, and
    // search says so rather than answer from it.
    let behind = reader.search_index_behind().unwrap();
    assert_eq!(behind, Some(midway), "every memory received is waiting for the index");
    let search = roost_store::SearchQuery { query: "walruses".into(), ..Default::default() };
    let refused = reader.search_memories(&search).unwrap_err();
    assert!(refused.to_string().contains("not indexed yet"), "{refused}");
    common::signal(&late.child, "KILL");
    drop(late);
    assert!(midway < HISTORY as u64, "killed before the end ({midway} of {HISTORY})");

    let late = Served::start(&h[1]);
    sync_wait(&h[1]);
    let store = Instance::open(&h[1]).unwrap().open_store().unwrap();
    assert_eq!(store.counts().unwrap()["memories"], json!(HISTORY), "every memory, once");
    // Everything a wrote, its awake records included (a chain of two needs
    // both to renew, so a wakes again after the kill).
    let a_store = Instance::open(&h[0]).unwrap();
    let origin_a = a_store.id.clone();
    assert_eq!(store.heads().unwrap()[&origin_a], a_store.open_store().unwrap().heads().unwrap()[&origin_a]);
    // The holders' awake records are in the log too; count the memories'.
    let memory_records = store
        .changes_since(0, 2 * HISTORY as u32)
        .unwrap()
        .into_iter()
        .filter(|c| c.entry.table == roost_core::Table::Memories)
        .count();
    assert_eq!(memory_records, HISTORY, "no entry applied twice");
    // `roost sync wait` returned once search answers, from an index that
    // holds every memory exactly.
    assert_eq!(store.search_index_behind().unwrap(), None);
    store.check_search_index().unwrap();
    let found = json_of(roost(&h[1], &["search", "walruses", "--limit", "100", "--json"]));
    assert_eq!(found["results"].as_array().map(Vec::len), Some(100), "{found}");
    drop((a, late));
}

#[test]
fn a_machine_of_another_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = [dir.path().join("a")];
    succeeded(roost(&h[0], &["init", "--name", "a"]));
    let stranger_home = dir.path().join("stranger");
    succeeded(roost(&stranger_home, &["init", "--name", "stranger"]));
    let a = Served::start(&h[0]);
    // The stranger's registry names A by hand (the CLI would refuse).
    {
        let a_entry = Instance::open(&h[0]).unwrap().open_store().unwrap().instances().unwrap().remove(0);
        let mut entry = a_entry.clone();
        entry.addresses = vec![format!("http://{}", a.addr)];
        Instance::open(&stranger_home).unwrap().open_store().unwrap().register_instance(&entry).unwrap();
    }
    add(&stranger_home, "stranger's secret");
    let stranger = Served::start(&stranger_home);
    until("the stranger gave up on a", || {
        let status = json_of(roost(&stranger_home, &["sync", "status", "--json"]));
        status["peers"][0]["last_error"].as_str().is_some_and(|e| !e.is_empty())
    });
    let registry = json_of(roost(&h[0], &["machines", "--json"]));
    assert_eq!(registry.as_array().unwrap().len(), 1, "a never registered the stranger: {registry}");
    let listed = json_of(roost(&h[0], &["memory", "list", "--json"]));
    assert_eq!(listed["count"], 0);
    drop((a, stranger));
}

/// The field report's four steps between real processes: M written on B
/// reaches everyone; B's gateway stops and M is edited there (v1); on C, M is
/// edited (v2) and edited again or deleted (v3), which A receives; B starts
/// again. Every machine then shows one conflict with the same winner (v3, the
/// version the row shows) and the same loser (v1).
fn one_winner_everywhere(delete_last: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (h, served) = chain(dir.path(), &["a", "b", "c"]);
    let [a, b, c]: [Served; 3] = served.try_into().unwrap_or_else(|_| unreachable!());
    let id = add(&h[1], "m");
    for home in [&h[0], &h[2]] {
        until("everyone has m", || content(home, &id).is_some());
    }
    sync_wait(&h[1]);
    b.stop();
    edit(&h[1], &id, "v1 on b");
    edit(&h[2], &id, "v2 on c");
    if delete_last {
        succeeded(roost(&h[2], &["memory", "rm", &id]));
        until("a has the delete", || content(&h[0], &id).is_none());
    } else {
        edit(&h[2], &id, "v3 on c");
        until("a has v3", || content(&h[0], &id).as_deref() == Some("v3 on c"));
    }
    let b = Served::start(&h[1]);
    let shown = |home: &std::path::Path| {
        conflicts(home)
            .iter()
            .map(|c| {
                (c["id"].clone(), c["winner"]["origin"].clone(), c["winner"]["seq"].clone(), c["loser"]["seq"].clone())
            })
            .collect::<Vec<_>>()
    };
    until("one conflict, the same on every machine", || {
        let all: Vec<_> = h.iter().map(|home| shown(home)).collect();
        all[0].len() == 1 && all.iter().all(|s| *s == all[0])
    });
    let conflict = conflicts(&h[1]).remove(0);
    assert_eq!(conflict["loser"]["row"]["content"], "v1 on b");
    if delete_last {
        assert_eq!(conflict["winner"]["op"], "delete");
    } else {
        assert_eq!(conflict["winner"]["row"]["content"], "v3 on c");
    }
    drop((a, b, c));
}

#[test]
fn a_later_edit_of_the_winner_is_the_winner_on_every_machine() {
    one_winner_everywhere(false);
}

#[test]
fn a_later_delete_of_the_winner_is_the_winner_on_every_machine() {
    one_winner_everywhere(true);
}
