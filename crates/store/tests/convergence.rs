//! Real stores — the door, `Store::apply`, the conflict records and their
//! resolution, in SQLite — exchanging their logs in random order and random
//! pieces converge: the same rows, the same open conflicts with the same
//! winner and loser everywhere, and every open conflict's winner is the
//! version its row shows. (`roost-core`'s own convergence test checks the
//! rules alone; this one checks the store's bookkeeping of them.)

mod common;

use common::nodes;

use proptest::prelude::*;
use roost_core::Table;
use roost_core::protocol::SignedEntry;
use roost_store::{Keep, Mutation, Store, StoreError};
use serde_json::{Map, Value, json};

fn log(store: &Store) -> Vec<SignedEntry> {
    store.entries_after(0, 100_000).unwrap().into_iter().map(|(_, e)| e).collect()
}

/// Entries `from` holds that `to` lacks, in `from`'s log order.
fn missing(from: &Store, to: &Store) -> Vec<SignedEntry> {
    let heads = to.heads().unwrap();
    log(from).into_iter().filter(|e| e.entry.seq > heads.get(&e.entry.origin).copied().unwrap_or(0)).collect()
}

#[derive(Debug, Clone)]
enum Step {
    Edit {
        node: usize,
        row: usize,
        data: u8,
    },
    Delete {
        node: usize,
        row: usize,
    },
    /// Resolve the `pick`-th open conflict on `node`, keeping its local or
    /// its remote version.
    Resolve {
        node: usize,
        pick: usize,
        local: bool,
    },
    /// Apply up to `count` of the entries `from` has and `to` lacks, from
    /// `offset` on, in reverse order when `reverse` (not-ready ones are
    /// refused and come again later).
    Deliver {
        from: usize,
        to: usize,
        offset: usize,
        count: usize,
        reverse: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..2usize, any::<u8>()).prop_map(|(node, row, data)| Step::Edit { node, row, data }),
        1 => (0..3usize, 0..2usize).prop_map(|(node, row)| Step::Delete { node, row }),
        1 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(node, pick, local)| Step::Resolve { node, pick, local }),
        5 => (0..3usize, 0..3usize, 0..8usize, 1..6usize, any::<bool>())
            .prop_map(|(from, to, offset, count, reverse)| Step::Deliver { from, to, offset, count, reverse }),
    ]
}

fn patch(data: u8) -> Map<String, Value> {
    json!({ "content": format!("version {data}") }).as_object().unwrap().clone()
}

/// A write refused because its row is deleted here, or its conflict already
/// closed, is a step that did nothing; anything else is a failure.
fn allowed(outcome: Result<Map<String, Value>, StoreError>) {
    match outcome {
        Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::AlreadyResolved { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let n = nodes();
    let rows: Vec<String> = (0..2)
        .map(|i| {
            let fields = json!({"content": format!("row {i}")}).as_object().unwrap().clone();
            let row = n[0].store.write(Mutation::Create { table: Table::Memories, fields }).unwrap();
            row["id"].as_str().unwrap().to_string()
        })
        .collect();
    for to in 1..3 {
        n[to].store.apply(&log(&n[0].store)).unwrap();
    }
    for s in steps {
        match *s {
            Step::Edit { node, row, data } => {
                let key = rows[row].clone();
                allowed(n[node].store.write(Mutation::Update { table: Table::Memories, key, patch: patch(data) }));
            }
            Step::Delete { node, row } => {
                allowed(n[node].store.write(Mutation::Delete { table: Table::Memories, key: rows[row].clone() }));
            }
            Step::Resolve { node, pick, local } => {
                let open = n[node].store.conflicts(false, 10).unwrap();
                if let Some(conflict) = open.get(pick % open.len().max(1)) {
                    let keep = if local { Keep::Local } else { Keep::Remote };
                    allowed(n[node].store.write(Mutation::Resolve { conflict: conflict.id.clone(), keep }));
                }
            }
            Step::Deliver { from, to, offset, count, reverse } if from != to => {
                let mut batch: Vec<SignedEntry> =
                    missing(&n[from].store, &n[to].store).into_iter().skip(offset).take(count).collect();
                if reverse {
                    batch.reverse();
                }
                n[to].store.apply(&batch).unwrap();
            }
            Step::Deliver { .. } => {}
        }
    }
    // Everyone meets until nobody lacks anything.
    loop {
        let mut moved = false;
        for from in 0..3 {
            for to in (0..3).filter(|to| *to != from) {
                let batch = missing(&n[from].store, &n[to].store);
                moved |= !batch.is_empty();
                n[to].store.apply(&batch).unwrap();
            }
        }
        if !moved {
            break;
        }
    }

    let shown = |store: &Store| -> Vec<Option<(Value, Value)>> {
        rows.iter()
            .map(|id| store.get(Table::Memories, id).ok().map(|r| (r["content"].clone(), r["lamport"].clone())))
            .collect()
    };
    let conflicts = |store: &Store| -> Vec<(String, String, u64, String, u64)> {
        let mut open: Vec<_> = store
            .conflicts(false, 100)
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.winner.origin, c.winner.seq, c.loser.origin, c.loser.seq))
            .collect();
        open.sort();
        open
    };
    for other in &n[1..] {
        prop_assert_eq!(shown(&other.store), shown(&n[0].store), "rows converge");
        prop_assert_eq!(conflicts(&other.store), conflicts(&n[0].store), "open conflicts and their winners converge");
    }
    for node in &n {
        for conflict in node.store.conflicts(false, 100).unwrap() {
            let row = node.store.get(Table::Memories, &conflict.row_id).ok();
            let showing = match &row {
                Some(row) => conflict.winner.op != "delete" && conflict.winner.row["content"] == row["content"],
                None => conflict.winner.op == "delete",
            };
            prop_assert!(showing, "conflict {} names a winner its row no longer shows: {:?}", conflict.id, row);
            prop_assert_eq!(conflict.winner.lamport, conflict.winner.row["lamport"].as_u64().unwrap_or(0));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn stores_converge_whatever_order_their_logs_meet_in(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }
}
