//! The gateway and two stdio MCP processes write to one instance at once:
//! no write is lost, none surfaces "database is locked", and each write has
//! exactly one change record with its own Lamport stamp.

mod common;

use std::collections::HashMap;

use roost_instance::Instance;
use serde_json::json;

const WRITES_PER_CLIENT: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_and_two_stdio_processes_lose_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let served = common::Served::start(&home);
    let clients = vec![
        common::connect_http(&served.addr).await,
        common::connect_stdio(&home).await,
        common::connect_stdio(&home).await,
    ];
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..WRITES_PER_CLIENT {
                let memory =
                    common::ok(&client, "roost_store_memory", json!({"content": format!("client {c} write {i}")}))
                        .await;
                // Interleave updates so rows are rewritten while others insert.
                if i % 10 == 0 {
                    let id = memory["id"].as_str().unwrap();
                    common::ok(&client, "roost_update_memory", json!({"id": id, "importance": 9})).await;
                }
                ids.push(memory["id"].as_str().unwrap().to_string());
            }
            client.cancel().await.unwrap();
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert!(served.stop().success());

    let total = 3 * WRITES_PER_CLIENT;
    let updates = 3 * WRITES_PER_CLIENT.div_ceil(10);
    let store = Instance::open(&home).unwrap().open_store().unwrap();
    let memories =
        store.list(roost_core::Table::Memories, &roost_store::ListQuery { limit: 500, ..Default::default() }).unwrap();
    assert_eq!(memories.len(), total, "every write is stored");
    let changes = store.changes_since(0, 10_000).unwrap();
    assert_eq!(changes.len(), total + updates, "one change record per write");
    let mut per_row: HashMap<&str, Vec<roost_core::Op>> = HashMap::new();
    for change in &changes {
        per_row.entry(change.entry.row_id.as_str()).or_default().push(change.entry.op);
    }
    for id in &ids {
        let ops = &per_row[id.as_str()];
        assert_eq!(ops[0], roost_core::Op::Insert);
        assert!(ops.len() <= 2, "{id}: {ops:?}");
    }
    let mut stamps: Vec<u64> = changes.iter().map(|c| c.entry.lamport.0).collect();
    let ordered = stamps.windows(2).all(|w| w[0] < w[1]);
    assert!(ordered, "stamps rise with the change sequence");
    stamps.dedup();
    assert_eq!(stamps.len(), changes.len(), "no Lamport stamp is reused");
    assert_eq!(store.clock().unwrap().0.0, changes.len() as u64);

    // Three processes appended to one signed chain without a gap or a fork.
    let key = Instance::open(&home).unwrap().machine_key.verifying_key();
    let mut prev = roost_core::GENESIS;
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(change.entry.seq, i as u64 + 1);
        assert_eq!(change.entry.prev_hash, prev);
        assert_eq!(change.hash, change.entry.hash());
        key.verify_strict(&change.hash, &ed25519_dalek::Signature::from_bytes(&change.signature)).unwrap();
        prev = change.hash;
    }
}
