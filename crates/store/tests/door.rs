//! The write door's promises, checked against a real database file.

use roost_core::{Op, Table};
use roost_store::{ListQuery, Mutation, SearchQuery, Store, StoreError};
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn create(store: &Store, table: Table, v: Value) -> Map<String, Value> {
    store.write(Mutation::Create { table, fields: obj(v) }).unwrap()
}

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("roost.db"), "instance-a", key()).unwrap();
    (dir, store)
}

#[test]
fn every_mutation_appends_exactly_one_change_with_a_fresh_stamp() {
    let (_dir, store) = open();
    let project = create(&store, Table::Projects, json!({"name": "Taxes"}));
    let memory = create(&store, Table::Memories, json!({"content": "file by April", "project": "Taxes"}));
    assert_eq!(memory["project"], project["id"], "project names resolve to ids");
    let id = memory["id"].as_str().unwrap().to_string();
    store
        .write(Mutation::Update { table: Table::Memories, key: id.clone(), patch: obj(json!({"importance": 9})) })
        .unwrap();
    // An update that changes nothing writes nothing.
    store
        .write(Mutation::Update { table: Table::Memories, key: id.clone(), patch: obj(json!({"importance": 9})) })
        .unwrap();
    store.write(Mutation::Delete { table: Table::Memories, key: id.clone() }).unwrap();

    let changes = store.changes_since(0, 100).unwrap();
    let ops: Vec<(Table, Op)> = changes.iter().map(|c| (c.entry.table, c.entry.op)).collect();
    assert_eq!(
        ops,
        vec![
            (Table::Projects, Op::Insert),
            (Table::Memories, Op::Insert),
            (Table::Memories, Op::Update),
            (Table::Memories, Op::Delete)
        ]
    );
    let stamps: Vec<u64> = changes.iter().map(|c| c.entry.lamport.0).collect();
    assert_eq!(stamps, vec![1, 2, 3, 4]);
    let tombstone = &changes[3].row;
    assert_eq!(tombstone["content"], Value::Null, "a tombstone drops the content");
    assert!(tombstone["deleted_at"].is_string());
    assert!(changes.iter().all(|c| c.entry.origin == "instance-a"));
    assert!(matches!(store.get(Table::Memories, &id), Err(StoreError::NotFound { .. })));
}

#[test]
fn the_clock_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roost.db");
    {
        let store = Store::open(&path, "instance-a", key()).unwrap();
        create(&store, Table::Notes, json!({"body": "one"}));
        create(&store, Table::Notes, json!({"body": "two"}));
    }
    let store = Store::open(&path, "instance-a", key()).unwrap();
    let note = create(&store, Table::Notes, json!({"body": "three"}));
    assert_eq!(note["lamport"], json!(3));
    assert!(matches!(Store::open(&path, "instance-b", key()), Err(StoreError::WrongInstance { .. })));
}

#[test]
fn writes_that_bypass_the_door_are_refused() {
    let (dir, store) = open();
    create(&store, Table::Memories, json!({"content": "kept"}));
    let raw = rusqlite::Connection::open(dir.path().join("roost.db")).unwrap();
    // Without the door's function registered, any write to a synced table fails.
    let err = raw.execute("UPDATE memories SET content = 'sneaky'", []).unwrap_err();
    assert!(err.to_string().contains("roost_write_door"), "{err}");
    // With the function answering "closed", the guard trigger aborts.
    raw.create_scalar_function("roost_write_door", 0, rusqlite::functions::FunctionFlags::SQLITE_UTF8, |_| Ok(0i64))
        .unwrap();
    for sql in [
        "UPDATE memories SET content = 'sneaky'",
        "DELETE FROM memories",
        "INSERT INTO settings (id, origin, lamport, created_at, updated_at, key, value) VALUES ('x', 'o', 1, 't', 't', 'k', 'v')",
        "INSERT INTO changes (table_name, op, row_id, row_json, lamport, origin, created_at) VALUES ('memories', 'insert', 'x', '{}', 1, 'o', 't')",
    ] {
        let err = raw.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("only through the write door"), "{sql}: {err}");
    }
    let memories = store.list(Table::Memories, &ListQuery::default()).unwrap();
    assert_eq!(memories[0]["content"], json!("kept"));
    assert_eq!(store.changes_since(0, 10).unwrap().len(), 1);
}

#[test]
fn the_full_text_index_follows_updates_and_deletes() {
    let (dir, store) = open();
    let a = create(&store, Table::Memories, json!({"content": "the heron nests by the river", "tags": ["birds"]}));
    create(&store, Table::Memories, json!({"content": "a heron, a heron, heron everywhere", "importance": 8}));
    let search = |q: &str| store.search_memories(&SearchQuery { query: q.into(), ..Default::default() }).unwrap();
    let hits = search("heron");
    assert_eq!(hits.len(), 2);
    assert!(hits[0].memory["content"].as_str().unwrap().contains("everywhere"), "more matches rank first");
    assert!(hits[0].snippet.contains("[heron]"));
    let id = a["id"].as_str().unwrap().to_string();
    store
        .write(Mutation::Update {
            table: Table::Memories,
            key: id.clone(),
            patch: obj(json!({"content": "the egret"})),
        })
        .unwrap();
    assert_eq!(search("heron").len(), 1);
    assert_eq!(search("egret").len(), 1);
    assert_eq!(search("birds").len(), 1, "tags are indexed");
    store.write(Mutation::Delete { table: Table::Memories, key: id }).unwrap();
    assert!(search("egret").is_empty());
    let raw = rusqlite::Connection::open(dir.path().join("roost.db")).unwrap();
    raw.execute("INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)", []).unwrap();
    let err = store.search_memories(&SearchQuery { query: "heron AND (".into(), ..Default::default() }).unwrap_err();
    assert!(matches!(err, StoreError::BadQuery(_)), "{err}");
}

#[test]
fn unique_fields_and_name_based_ids() {
    let (_dir, store) = open();
    create(&store, Table::Projects, json!({"name": "Roost"}));
    let err =
        store.write(Mutation::Create { table: Table::Projects, fields: obj(json!({"name": "Roost"})) }).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let first = create(&store, Table::Settings, json!({"key": "ui.theme", "value": "dark"}));
    store.write(Mutation::Delete { table: Table::Settings, key: "ui.theme".into() }).unwrap();
    let again = create(&store, Table::Settings, json!({"key": "ui.theme", "value": "light"}));
    assert_eq!(first["id"], again["id"], "a setting's id comes from its key");
    assert_eq!(store.get(Table::Settings, "ui.theme").unwrap()["value"], json!("light"));
    let err = store
        .write(Mutation::Create { table: Table::Notes, fields: obj(json!({"body": "x", "project": "Nope"})) })
        .unwrap_err();
    assert!(err.to_string().contains("no project"), "{err}");
}

#[test]
fn the_change_table_is_a_signed_hash_chain() {
    let (_dir, store) = open();
    let note = create(&store, Table::Notes, json!({"body": "one"}));
    let id = note["id"].as_str().unwrap().to_string();
    store.write(Mutation::Update { table: Table::Notes, key: id.clone(), patch: obj(json!({"body": "two"})) }).unwrap();
    store.write(Mutation::Delete { table: Table::Notes, key: id }).unwrap();
    let public = key().verifying_key();
    let mut prev = roost_core::GENESIS;
    for (i, change) in store.changes_since(0, 100).unwrap().iter().enumerate() {
        assert_eq!(change.entry.seq, i as u64 + 1, "per-origin sequence numbers count from 1");
        assert_eq!(change.entry.prev_hash, prev, "each entry names the previous one's hash");
        assert_eq!(change.hash, change.entry.hash(), "the stored hash is the entry's");
        public.verify_strict(&change.hash, &ed25519_dalek::Signature::from_bytes(&change.signature)).unwrap();
        prev = change.hash;
    }
    let mut tampered = store.changes_since(0, 1).unwrap().remove(0);
    tampered.entry.row = tampered.entry.row.replace("one", "0ne");
    assert_ne!(tampered.entry.hash(), tampered.hash, "a changed row no longer matches its signed hash");
}

#[test]
fn entries_written_before_the_log_was_signed_are_signed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roost.db");
    {
        let store = Store::open(&path, "instance-a", key()).unwrap();
        create(&store, Table::Notes, json!({"body": "old"}));
        create(&store, Table::Notes, json!({"body": "older"}));
    }
    // Make the rows look as schema version 2 left them.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.create_scalar_function("roost_write_door", 0, rusqlite::functions::FunctionFlags::SQLITE_UTF8, |_| Ok(1i64))
        .unwrap();
    raw.execute("UPDATE changes SET origin_seq = NULL, prev_hash = NULL, hash = NULL, signature = NULL", []).unwrap();
    drop(raw);
    let store = Store::open(&path, "instance-a", key()).unwrap();
    let changes = store.changes_since(0, 10).unwrap();
    assert_eq!(changes.iter().map(|c| c.entry.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(changes[1].entry.prev_hash, changes[0].hash);
    let public = key().verifying_key();
    for c in &changes {
        public.verify_strict(&c.hash, &ed25519_dalek::Signature::from_bytes(&c.signature)).unwrap();
    }
}

#[test]
fn every_malformed_search_is_a_query_error_with_a_hint() {
    let (_dir, store) = open();
    create(&store, Table::Memories, json!({"content": "tax deadline"}));
    for (query, hint) in [
        ("\"tax", "double quote is not closed"),
        ("*", "`*` must end a word"),
        ("-word", "use NOT to leave a word out"),
        ("tax -word", "use NOT to leave a word out"),
        ("tax AND", "syntax error"),
        ("OR tax", "syntax error near \"OR\""),
        ("(tax", "syntax error"),
        ("a NEAR/x b", "syntax error"),
    ] {
        let err = store.search_memories(&SearchQuery { query: query.into(), ..Default::default() }).unwrap_err();
        assert!(matches!(err, StoreError::BadQuery(_)), "{query}: {err}");
        let message = err.to_string();
        assert!(message.contains(hint) && message.contains("prefix*"), "{query}: {message}");
    }
}

#[test]
fn a_column_filter_in_a_search_is_a_query_error_not_a_crash() {
    let (_dir, store) = open();
    create(&store, Table::Memories, json!({"content": "heron"}));
    let err =
        store.search_memories(&SearchQuery { query: "nosuchcolumn:heron".into(), ..Default::default() }).unwrap_err();
    assert!(matches!(err, StoreError::BadQuery(_)), "{err}");
}

#[test]
fn agent_state_is_written_under_the_highest_epoch_seen_only() {
    let (_dir, store) = open();
    assert_eq!(store.highest_epoch().unwrap(), 0);
    assert_eq!(store.agent_state("task").unwrap(), None);
    let first = store.write_agent_state("task", "index the inbox", 2).unwrap();
    assert_eq!((first.key.as_str(), first.value.as_str(), first.epoch), ("task", "index the inbox", 2));
    assert_eq!(first.origin, "instance-a");
    assert_eq!(store.highest_epoch().unwrap(), 2, "a door write raises the fence");

    let head = store.changes_since(0, 100).unwrap().len();
    let err = store.write_agent_state("task", "overwrite it", 1).unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch { given: 1, highest: 2 }), "{err}");
    assert!(!err.to_string().contains('\n') && err.to_string().contains("epoch 1 is stale"), "{err}");
    let err = store.write_agent_state("other", "new key, old epoch", 1).unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch { .. }), "the fence is per store, not per key: {err}");
    assert_eq!(store.changes_since(0, 100).unwrap().len(), head, "a refused write appends nothing");
    assert_eq!(store.agent_state("task").unwrap(), Some(first.clone()), "and changes nothing");
    assert_eq!(store.agent_state("other").unwrap(), None);

    // The holder of the current epoch writes on; an unchanged write is no write.
    let second = store.write_agent_state(" task ", "index the archive", 2).unwrap();
    assert_eq!((second.id.as_str(), second.value.as_str()), (first.id.as_str(), "index the archive"));
    store.write_agent_state("task", "index the archive", 2).unwrap();
    let changes = store.changes_since(0, 100).unwrap();
    assert_eq!(changes.len(), head + 1);
    assert_eq!(changes.last().unwrap().entry.op, Op::Update);
    assert_eq!(changes.last().unwrap().row["epoch"], json!(2), "the epoch travels inside the signed row");

    // The lease tells the store of a newer grant before this machine writes.
    assert_eq!(store.observe_epoch(5).unwrap(), 5);
    assert_eq!(store.observe_epoch(3).unwrap(), 5, "observing never lowers the fence");
    let err = store.write_agent_state("task", "late", 4).unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch { given: 4, highest: 5 }), "{err}");
    assert_eq!(store.write_agent_state("task", "index the archive", 5).unwrap().epoch, 5, "a new epoch is a write");
    assert_eq!(store.changes_since(0, 100).unwrap().len(), head + 2);

    for bad in [0, u64::MAX] {
        let err = store.observe_epoch(bad).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(e) if e.field.as_deref() == Some("epoch")), "{err}");
        let err = store.write_agent_state("task", "x", bad).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(e) if e.field.as_deref() == Some("epoch")), "{err}");
    }
}

#[test]
fn the_fence_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roost.db");
    Store::open(&path, "instance-a", key()).unwrap().observe_epoch(7).unwrap();
    let store = Store::open(&path, "instance-a", key()).unwrap();
    assert_eq!(store.highest_epoch().unwrap(), 7);
    assert!(matches!(store.write_agent_state("k", "v", 6), Err(StoreError::StaleEpoch { .. })));
}

#[test]
fn agent_state_is_written_only_through_its_fenced_door() {
    let (dir, store) = open();
    store.write_agent_state("task", "v", 1).unwrap();
    let refused = [
        Mutation::Create { table: Table::AgentState, fields: obj(json!({"key": "k", "value": "v", "epoch": 9})) },
        Mutation::Update { table: Table::AgentState, key: "task".into(), patch: obj(json!({"value": "w"})) },
        Mutation::Delete { table: Table::AgentState, key: "task".into() },
    ];
    for mutation in refused {
        let err = store.write(mutation).unwrap_err();
        assert!(matches!(err, StoreError::AgentOwned("agent_state")), "{err}");
    }
    assert_eq!(store.changes_since(0, 10).unwrap().len(), 1);
    assert_eq!(store.agent_state("task").unwrap().unwrap().value, "v");

    let raw = rusqlite::Connection::open(dir.path().join("roost.db")).unwrap();
    raw.create_scalar_function("roost_write_door", 0, rusqlite::functions::FunctionFlags::SQLITE_UTF8, |_| Ok(0i64))
        .unwrap();
    for sql in ["UPDATE agent_state SET epoch = 99", "UPDATE epoch_fence SET highest = 0"] {
        let err = raw.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("only through the write door"), "{sql}: {err}");
    }
    assert_eq!(store.highest_epoch().unwrap(), 1);
}

#[test]
fn data_another_program_damaged_is_an_error_never_a_panic() {
    let (dir, store) = open();
    create(&store, Table::Projects, json!({"name": "Taxes"}));
    // A program that opens the guard the way the store does.
    let db = rusqlite::Connection::open(dir.path().join("roost.db")).unwrap();
    db.create_scalar_function("roost_write_door", 0, rusqlite::functions::FunctionFlags::SQLITE_UTF8, |_| Ok(1))
        .unwrap();
    db.execute("UPDATE projects SET id = 'not-an-id' WHERE name = 'Taxes'", []).unwrap();
    let renamed = store.write(Mutation::Update {
        table: Table::Projects,
        key: "Taxes".into(),
        patch: obj(json!({"name": "Tax"})),
    });
    assert!(matches!(renamed, Err(StoreError::Damaged(_))), "{renamed:?}");

    db.execute("UPDATE changes SET hash = x'00'", []).unwrap();
    let written =
        store.write(Mutation::Create { table: Table::Memories, fields: obj(json!({"content": "still here"})) });
    let error = written.unwrap_err();
    assert!(matches!(error, StoreError::Damaged(_)), "{error:?}");
    assert!(error.to_string().contains("restore it"), "the error says what to do: {error}");
}

/// Commits do not checkpoint the WAL themselves (that would stall the write
/// that crossed the threshold for two fsyncs); the store's checkpointer does,
/// so a long run of small writes still leaves a bounded WAL behind.
#[test]
fn the_checkpointer_keeps_the_wal_bounded() {
    let (dir, store) = open();
    let wal = dir.path().join("roost.db-wal");
    let text = "a memory long enough to fill a few pages of the log and the index ".repeat(8);
    let mut largest = 0;
    for i in 0..6000 {
        create(&store, Table::Memories, json!({"content": format!("{text} {i}")}));
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    }
    // 6,000 commits write a WAL of over 350 MiB if nothing checkpoints it or
    // makes it start over; the checkpointer keeps it to what is written
    // during one of its rounds (about 30 MiB here at full speed; a busy
    // machine makes rounds longer).
    assert!(largest < 128 << 20, "the WAL grew to {largest} bytes");
    assert!(store.search_memories(&SearchQuery { query: "5999".into(), ..Default::default() }).unwrap().len() == 1);
}

/// A rebuilt search index is merged into one segment: left as the rebuild's
/// many, the merges of the next few hundred writes would reach into them and
/// stall single writes for 100-200 ms.
#[test]
fn a_rebuilt_search_index_is_one_segment() {
    let (dir, store) = open();
    store.defer_search_index().unwrap();
    let text = "plenty of distinct words so the rebuild flushes several segments".repeat(4);
    let batch: Vec<Mutation> = (0..20_000)
        .map(|i| Mutation::Create { table: Table::Memories, fields: obj(json!({"content": format!("{text} w{i}")})) })
        .collect();
    store.write_all(batch).unwrap();
    store.rebuild_search_index().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("roost.db")).unwrap();
    let segments: i64 = db.query_row("SELECT count(DISTINCT segid) FROM memories_fts_idx", [], |r| r.get(0)).unwrap();
    assert_eq!(segments, 1);
    store.check_search_index().unwrap();
    assert_eq!(store.search_memories(&SearchQuery { query: "w19999".into(), ..Default::default() }).unwrap().len(), 1);
}
