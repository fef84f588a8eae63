//! Replication through real databases: entries written by one store's door,
//! applied by another's, with the conflict rules and their records.

mod common;

use common::{IDS, Node, key, nodes};

use roost_core::Table;
use roost_core::protocol::SignedEntry;
use roost_store::{Keep, Mutation, Standing, Store, StoreError, Verdict};
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Everything in `from`'s log, applied by `to`.
fn ship(nodes: &mut [Node], from: usize, to: usize) -> Vec<Verdict> {
    let entries: Vec<SignedEntry> =
        nodes[from].store.entries_after(0, 100_000).unwrap().into_iter().map(|(_, e)| e).collect();
    nodes[to].store.apply(&entries).unwrap()
}

fn memory(store: &Store, id: &str) -> Map<String, Value> {
    store.get(Table::Memories, id).unwrap()
}

fn edit(store: &Store, id: &str, content: &str) {
    store
        .write(Mutation::Update { table: Table::Memories, key: id.into(), patch: obj(json!({ "content": content })) })
        .unwrap();
}

#[test]
fn writes_flow_transitively_and_a_causal_chain_raises_no_conflict() {
    let mut n = nodes();
    let row = n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "one"})) });
    let id = row.unwrap()["id"].as_str().unwrap().to_string();
    ship(&mut n, 0, 1);
    edit(&n[1].store, &id, "two");
    ship(&mut n, 1, 0);
    edit(&n[0].store, &id, "three");
    ship(&mut n, 0, 1);
    // C only ever talks to B, and still gets A's writes.
    let verdicts = ship(&mut n, 1, 2);
    assert!(verdicts.iter().all(|v| *v == Verdict::Applied), "{verdicts:?}");
    for node in &n {
        assert_eq!(memory(&node.store, &id)["content"], "three");
        assert_eq!(node.store.open_conflicts().unwrap(), 0);
    }
    assert!(ship(&mut n, 1, 2).iter().all(|v| *v == Verdict::Duplicate), "re-sending applies nothing twice");
}

#[test]
fn concurrent_edits_converge_with_one_conflict_record_each_and_resolution_replicates() {
    let mut n = nodes();
    let row = n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "base"})) });
    let id = row.unwrap()["id"].as_str().unwrap().to_string();
    ship(&mut n, 0, 1);
    edit(&n[0].store, &id, "from a");
    edit(&n[1].store, &id, "from b");
    ship(&mut n, 0, 1);
    ship(&mut n, 1, 0);
    let (a, b) = (memory(&n[0].store, &id), memory(&n[1].store, &id));
    assert_eq!(a["content"], b["content"], "one winner everywhere");
    let conflicts_a = n[0].store.conflicts(false, 10).unwrap();
    let conflicts_b = n[1].store.conflicts(false, 10).unwrap();
    assert_eq!((conflicts_a.len(), conflicts_b.len()), (1, 1));
    assert_eq!(conflicts_a[0].id, conflicts_b[0].id, "a conflict has one id everywhere");
    assert_eq!(conflicts_a[0].differing, vec!["content".to_string()]);
    let loser = conflicts_a[0].loser.row["content"].clone();
    assert_ne!(loser, a["content"], "the losing version is preserved");

    // Keep the loser on B; the resolution reaches A and closes it there too.
    let keep = if conflicts_b[0].loser.local { Keep::Local } else { Keep::Remote };
    n[1].store.write(Mutation::Resolve { conflict: conflicts_b[0].id[..8].to_string(), keep }).unwrap();
    ship(&mut n, 1, 0);
    for node in &n[..2] {
        assert_eq!(memory(&node.store, &id)["content"], loser);
        assert_eq!(node.store.open_conflicts().unwrap(), 0);
        assert!(node.store.conflict_exists(&conflicts_a[0].id).unwrap(), "resolved conflicts stay on record");
    }
}

#[test]
fn edit_against_delete_is_a_conflict_and_fts_stays_exact() {
    let mut n = nodes();
    let row = n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "walrus"})) });
    let id = row.unwrap()["id"].as_str().unwrap().to_string();
    ship(&mut n, 0, 1);
    n[0].store.write(Mutation::Delete { table: Table::Memories, key: id.clone() }).unwrap();
    edit(&n[1].store, &id, "narwhal");
    ship(&mut n, 0, 1);
    ship(&mut n, 1, 0);
    assert_eq!(n[0].store.open_conflicts().unwrap(), 1);
    for node in &n[..2] {
        let search = |q: &str| {
            node.store
                .search_memories(&roost_store::SearchQuery { query: q.into(), ..Default::default() })
                .unwrap()
                .len()
        };
        assert_eq!(search("walrus"), 0, "a deleted or replaced version leaves no terms");
        node.store.check_search_index().unwrap();
        let shown = node.store.get(Table::Memories, &id).is_ok();
        assert_eq!(search("narwhal"), usize::from(shown), "the index holds exactly what the row shows");
    }
    let shown: Vec<bool> = n[..2].iter().map(|node| node.store.get(Table::Memories, &id).is_ok()).collect();
    assert_eq!(shown[0], shown[1], "both show the same winner");
}

#[test]
fn forged_and_foreign_entries_are_refused_and_never_reach_the_tables() {
    let n = nodes();
    n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "true"})) }).unwrap();
    let mut entries: Vec<SignedEntry> = n[0].store.entries_after(0, 10).unwrap().into_iter().map(|(_, e)| e).collect();
    let genuine = entries[0].clone();
    entries[0].entry.row = entries[0].entry.row.replace("true", "fake");
    assert!(matches!(&n[1].store.apply(&entries).unwrap()[0], Verdict::Refused(why) if why.contains("signature")));
    assert_eq!(n[1].store.counts().unwrap()["memories"], 0);

    // Signed by a key the registry does not know.
    let mut stranger = genuine.clone();
    stranger.entry.origin = "01900000-0000-7000-8000-0000000000ff".into();
    assert!(
        matches!(&n[1].store.apply(&[stranger]).unwrap()[0], Verdict::Refused(why) if why.contains("unknown origin"))
    );

    // The genuine entry still applies afterwards.
    assert_eq!(n[1].store.apply(&[genuine]).unwrap(), vec![Verdict::Applied]);
}

#[test]
fn local_rows_never_enter_the_log() {
    let n = nodes();
    n[0].store
        .write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "mine", "local": true})) })
        .unwrap();
    n[0].store
        .write(Mutation::Create {
            table: Table::Settings,
            fields: obj(json!({"key": "k", "value": "v", "local": true})),
        })
        .unwrap();
    assert!(n[0].store.entries_after(0, 10).unwrap().is_empty());
    assert_eq!(n[0].store.counts().unwrap()["memories"], 1);
}

#[test]
fn entries_after_revocation_are_refused() {
    let mut n = nodes();
    n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "before"})) }).unwrap();
    ship(&mut n, 0, 1);
    n[1].store.revoke_instance(IDS[0], |_, _| "a signed revocation".into()).unwrap();
    n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "after"})) }).unwrap();
    let verdicts = ship(&mut n, 0, 1);
    assert_eq!(verdicts[0], Verdict::Duplicate);
    assert!(matches!(&verdicts[1], Verdict::Refused(why) if why.contains("revoked")));
}

/// A revocation taken from a peer holds at the `revoked_after` it carries,
/// and keeps the machine (by id or by key) out of the registry for good.
#[test]
fn a_revocation_from_a_peer_refuses_later_entries_and_any_registration() {
    let mut n = nodes();
    for content in ["one", "two"] {
        n[0].store
            .write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": content})) })
            .unwrap();
    }
    let key_hex = roost_core::hex::encode(key(0).verifying_key().as_bytes());
    assert!(n[2].store.take_revocation(IDS[0], &key_hex, "signed", 1).unwrap());
    assert!(!n[2].store.take_revocation(IDS[0], &key_hex, "signed again", 2).unwrap(), "the first one stands");
    assert_eq!(n[2].store.revocations().unwrap(), vec![(IDS[0].to_string(), "signed".to_string())]);
    let verdicts = ship(&mut n, 0, 2);
    assert_eq!(verdicts[0], Verdict::Applied, "written before the revocation");
    assert!(matches!(&verdicts[1], Verdict::Refused(why) if why.contains("revoked")));

    let mut again = n[2].store.instance_by_id(IDS[0]).unwrap();
    assert!(again.is_revoked());
    again.status = Standing::Active;
    assert!(matches!(n[2].store.register_instance(&again), Err(StoreError::Revoked { .. })));
    again.id = "01900000-0000-7000-8000-0000000000ff".into();
    assert!(
        matches!(n[2].store.register_instance(&again), Err(StoreError::Revoked { .. })),
        "a new id does not bring a revoked key back"
    );
}

fn agent_state(store: &Store) -> (String, u64, String) {
    let state = store.agent_state("task").unwrap().expect("the row replicated");
    (state.value, state.epoch, state.origin)
}

#[test]
fn a_stale_holders_entry_is_logged_but_fenced_and_the_heads_still_advance() {
    let mut n = nodes();
    // A holds epoch 1 and is paused; B is granted epoch 2 and writes.
    n[0].store.write_agent_state("task", "from the paused holder", 1).unwrap();
    n[1].store.observe_epoch(2).unwrap();
    n[1].store.write_agent_state("task", "from the new holder", 2).unwrap();
    ship(&mut n, 1, 2);
    assert_eq!(agent_state(&n[2].store), ("from the new holder".into(), 2, IDS[1].into()));

    // A's entry arrives late at C: in the log, changing nothing.
    assert_eq!(ship(&mut n, 0, 2), vec![Verdict::Applied]);
    let c = &n[2].store;
    assert_eq!(agent_state(c), ("from the new holder".into(), 2, IDS[1].into()));
    let heads: Vec<(String, u64)> = c.heads().unwrap().into_iter().collect();
    assert_eq!(heads, vec![(IDS[0].to_string(), 1), (IDS[1].to_string(), 1)], "A's head advanced");
    assert_eq!(c.fenced_entries().unwrap(), 1);
    assert_eq!(c.open_conflicts().unwrap(), 0, "a fenced entry is no conflict");
    assert_eq!(c.highest_epoch().unwrap(), 2);
    assert!(ship(&mut n, 0, 2).iter().all(|v| *v == Verdict::Duplicate), "and it is never applied twice");

    // A, waking up, hears of epoch 2 through replication and is fenced at its door.
    ship(&mut n, 1, 0);
    assert_eq!(n[0].store.highest_epoch().unwrap(), 2, "an applied entry raises the fence");
    assert_eq!(agent_state(&n[0].store), ("from the new holder".into(), 2, IDS[1].into()));
    let err = n[0].store.write_agent_state("task", "still mine", 1).unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch { given: 1, highest: 2 }), "{err}");
}

#[test]
fn agent_state_converges_whichever_way_entries_are_exchanged() {
    let mut n = nodes();
    // Epoch 1 on A, seen by B; then A, paused, writes twice more at epoch 1
    // while B, granted epoch 2, writes twice without hearing of them.
    n[0].store.write_agent_state("task", "a1", 1).unwrap();
    ship(&mut n, 0, 1);
    n[1].store.observe_epoch(2).unwrap();
    n[1].store.write_agent_state("task", "b1", 2).unwrap();
    n[0].store.write_agent_state("task", "a2", 1).unwrap();
    n[1].store.write_agent_state("task", "b2", 2).unwrap();
    n[0].store.write_agent_state("task", "a3", 1).unwrap();

    // A receives B's log, B receives A's: opposite orders of the same entries.
    ship(&mut n, 1, 0);
    ship(&mut n, 0, 1);
    // C hears A's stale writes before B's, entry by entry.
    for from in [0, 1] {
        let entries: Vec<SignedEntry> =
            n[from].store.entries_after(0, 100).unwrap().into_iter().map(|(_, e)| e).collect();
        for entry in entries {
            n[2].store.apply(&[entry]).unwrap();
        }
    }
    let expected = ("b2".to_string(), 2, IDS[1].to_string());
    for node in &n {
        assert_eq!(agent_state(&node.store), expected);
        assert_eq!(node.store.heads().unwrap(), n[0].store.heads().unwrap(), "every log holds every entry");
        assert_eq!(node.store.open_conflicts().unwrap(), 0);
        assert_eq!(node.store.highest_epoch().unwrap(), 2);
    }
    let row = |i: usize| n[i].store.get(Table::AgentState, "task").unwrap();
    assert_eq!(row(0), row(1));
    assert_eq!(row(1), row(2));
    assert_eq!(n[2].store.fenced_entries().unwrap(), 0, "C met every stale entry before the new epoch");
    assert_eq!(n[1].store.fenced_entries().unwrap(), 2, "B fenced a2 and a3");
}

#[test]
fn one_epoch_granted_twice_conflicts_until_a_later_epoch_supersedes_it() {
    let mut n = nodes();
    n[0].store.write_agent_state("task", "a", 1).unwrap();
    n[1].store.write_agent_state("task", "b", 1).unwrap();
    ship(&mut n, 0, 1);
    ship(&mut n, 1, 0);
    for node in &n[..2] {
        assert_eq!(node.store.open_conflicts().unwrap(), 1, "equal epochs keep the causal rules");
    }
    assert_eq!(agent_state(&n[0].store), agent_state(&n[1].store));
    let conflict = n[0].store.conflicts(false, 10).unwrap().remove(0);
    let err = n[0].store.write(Mutation::Resolve { conflict: conflict.id, keep: Keep::Local }).unwrap_err();
    assert!(matches!(err, StoreError::AgentOwned(_)), "{err}");

    // C, granted epoch 2, never saw either version; its write closes the conflict anyway.
    n[2].store.write_agent_state("task", "c", 2).unwrap();
    ship(&mut n, 2, 0);
    assert_eq!(agent_state(&n[0].store), ("c".into(), 2, IDS[2].into()));
    assert_eq!(n[0].store.open_conflicts().unwrap(), 0);
}

#[test]
fn agent_state_without_an_epoch_is_refused() {
    use ed25519_dalek::Signer;
    let n = nodes();
    n[0].store.write_agent_state("task", "v", 1).unwrap();
    let mut entries: Vec<SignedEntry> = n[0].store.entries_after(0, 10).unwrap().into_iter().map(|(_, e)| e).collect();
    let mut row: Map<String, Value> = serde_json::from_str(&entries[0].entry.row).unwrap();
    row.remove("epoch");
    entries[0].entry.row = Value::Object(row).to_string();
    entries[0].signature = key(0).sign(&entries[0].entry.hash()).to_bytes();
    let verdicts = n[1].store.apply(&entries).unwrap();
    assert!(matches!(&verdicts[0], Verdict::Refused(why) if why.contains("without a lease epoch")), "{verdicts:?}");
    assert_eq!(n[1].store.agent_state("task").unwrap(), None);
}

/// The four steps of the field report: M written on B reaches everyone; B,
/// cut off, edits it (v1); C edits it (v2) and edits or deletes it again
/// (v3), which A receives; then everyone meets. Every machine must show the
/// one open conflict with the same winner, the row's current version (v3),
/// and the same loser (v1).
fn one_winner_everywhere(delete_last: bool) {
    let mut n = nodes();
    let (a, b, c) = (0, 1, 2);
    let row = n[b].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "m"})) });
    let id = row.unwrap()["id"].as_str().unwrap().to_string();
    ship(&mut n, b, a);
    ship(&mut n, b, c);
    edit(&n[b].store, &id, "v1 on b");
    edit(&n[c].store, &id, "v2 on c");
    if delete_last {
        n[c].store.write(Mutation::Delete { table: Table::Memories, key: id.clone() }).unwrap();
    } else {
        edit(&n[c].store, &id, "v3 on c");
    }
    ship(&mut n, c, a);
    // B comes back: it hears from C first (v2, then v3), then everyone meets.
    ship(&mut n, c, b);
    for (from, to) in [(b, a), (b, c), (a, b), (a, c), (c, a), (c, b)] {
        ship(&mut n, from, to);
    }
    let shown: Vec<(String, String, u64, String, u64)> = n
        .iter()
        .map(|node| {
            let open = node.store.conflicts(false, 10).unwrap();
            assert_eq!(open.len(), 1, "one open conflict on each machine");
            let c = &open[0];
            (c.id.clone(), c.winner.origin.clone(), c.winner.seq, c.loser.origin.clone(), c.loser.seq)
        })
        .collect();
    assert!(shown.iter().all(|s| *s == shown[0]), "every machine shows the same winner and loser: {shown:?}");
    let conflict = n[b].store.conflicts(false, 10).unwrap().remove(0);
    assert_eq!(
        (conflict.winner.origin.as_str(), conflict.winner.seq),
        (IDS[c], 2),
        "the winner is the current version"
    );
    assert_eq!(conflict.loser.row["content"], "v1 on b");
    let current = n[b].store.get(Table::Memories, &id);
    match (delete_last, current) {
        (true, Err(StoreError::NotFound { .. })) => assert_eq!(conflict.winner.op, "delete"),
        (false, Ok(row)) => assert_eq!(
            (row["content"].clone(), conflict.winner.row["content"].clone()),
            (json!("v3 on c"), json!("v3 on c"))
        ),
        (_, other) => panic!("unexpected row {other:?}"),
    }

    // Keeping the current version on the machine that saw v2 win keeps v3:
    // nothing older comes back.
    let keep_current = if conflict.winner.local { Keep::Local } else { Keep::Remote };
    n[b].store.write(Mutation::Resolve { conflict: conflict.id.clone(), keep: keep_current }).unwrap();
    for from in [b] {
        for to in [a, c] {
            ship(&mut n, from, to);
        }
    }
    for node in &n {
        assert_eq!(node.store.open_conflicts().unwrap(), 0);
        match node.store.get(Table::Memories, &id) {
            Ok(row) => assert!(!delete_last && row["content"] == "v3 on c", "{row:?}"),
            Err(StoreError::NotFound { .. }) => assert!(delete_last, "the acknowledged delete stays"),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_later_version_replacing_the_winner_is_the_winner_everywhere() {
    one_winner_everywhere(false);
}

#[test]
fn a_later_delete_replacing_the_winner_is_the_winner_everywhere() {
    one_winner_everywhere(true);
}

#[test]
fn a_deferred_search_index_says_so_and_the_rebuild_matches_the_rows_exactly() {
    let mut n = nodes();
    let search = |store: &Store, q: &str| {
        store.search_memories(&roost_store::SearchQuery { query: q.into(), ..Default::default() }).map(|h| h.len())
    };
    let kept = n[1].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "otter"})) });
    let kept = kept.unwrap()["id"].as_str().unwrap().to_string();
    let first =
        n[0].store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "walrus"})) });
    let first = first.unwrap()["id"].as_str().unwrap().to_string();
    ship(&mut n, 0, 1);
    assert_eq!(search(&n[1].store, "walrus").unwrap(), 1);

    // A catch-up far behind: the index stands still and search says so.
    n[1].store.pace_search_index(roost_store::DEFER_FROM).unwrap();
    assert_eq!(n[1].store.search_index_behind().unwrap(), Some(0));
    assert!(n[1].store.search_index_deferred().unwrap());
    edit(&n[0].store, &first, "narwhal");
    for i in 0..3 {
        let fields = obj(json!({ "content": format!("beluga {i}") }));
        n[0].store.write(Mutation::Create { table: Table::Memories, fields }).unwrap();
    }
    n[1].store.write(Mutation::Delete { table: Table::Memories, key: kept }).unwrap();
    ship(&mut n, 0, 1);
    assert_eq!(n[1].store.search_index_behind().unwrap(), Some(5), "an edit, three new, a delete");
    let refused = search(&n[1].store, "narwhal").unwrap_err();
    assert!(matches!(refused, StoreError::Indexing { behind: 5 }), "{refused}");
    assert!(refused.to_string().contains("5 memories not indexed yet"), "{refused}");

    // Still behind: nothing changes. Caught up: one rebuild, exact again.
    n[1].store.pace_search_index(1).unwrap();
    assert_eq!(n[1].store.search_index_behind().unwrap(), Some(5));
    n[1].store.pace_search_index(0).unwrap();
    assert_eq!(n[1].store.search_index_behind().unwrap(), None);
    assert!(!n[1].store.search_index_deferred().unwrap());
    n[1].store.check_search_index().unwrap();
    assert_eq!(search(&n[1].store, "walrus").unwrap(), 0, "the edited version's old terms are gone");
    assert_eq!(search(&n[1].store, "narwhal").unwrap(), 1);
    assert_eq!(search(&n[1].store, "beluga").unwrap(), 3);
    assert_eq!(search(&n[1].store, "otter").unwrap(), 0, "the deleted memory is gone");
}
