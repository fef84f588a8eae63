//! `roost backup` while a machine takes writes, the machine lost, and
//! `roost restore` on a new disk: the restored machine takes back what it
//! wrote after the backup before it writes again, and its log goes on
//! without a fork, a conflict, a lost or a doubled entry.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use common::{Served, chain, json_of, roost, roost_bin, succeeded, sync_wait, until};

const PASSPHRASE: &str = "correct horse battery staple";

fn with_passphrase(home: &Path, args: &[&str], passphrase: &str) -> std::process::Output {
    Command::new(roost_bin()).arg("--home").arg(home).args(args).env("ROOST_PASSPHRASE", passphrase).output().unwrap()
}

fn memories(home: &Path) -> u64 {
    json_of(roost(home, &["status", "--json"]))["counts"]["memories"].as_u64().unwrap()
}

/// How many times each memory's content is held at `home`, page by page.
fn contents(home: &Path) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for offset in (0..).step_by(500) {
        let offset = offset.to_string();
        let page = json_of(roost(
            home,
            &["memory", "list", "--json", "--sort", "oldest", "--limit", "500", "--offset", &offset],
        ));
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return seen;
        }
        for item in items {
            *seen.entry(item["content"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    unreachable!("the pages end")
}

/// This machine's own log as `served` holds it: the head of `origin`.
fn head_of(served: &Served, origin: &str) -> u64 {
    served.get("/api/v1/sync/status").unwrap()["heads"][origin].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_a_thousand_writes_restores_and_catches_up_without_forking() {
    common::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let (homes, mut served) = chain(dir.path(), &["home", "laptop"]);
    let id = json_of(roost(&homes[0], &["status", "--json"]))["id"].as_str().unwrap().to_string();
    let client = common::connect_http(&served[0].addr).await;

    // A thousand writes through MCP, with the backup taken in the middle.
    let backup = dir.path().join("home.roostbackup");
    let writes = tokio::spawn(async move {
        for i in 0..1000 {
            common::ok(&client, "roost_store_memory", json!({"content": format!("write {i}")})).await;
        }
        client.cancel().await.unwrap();
    });
    let home = homes[0].clone();
    until("a few hundred writes in", || memories(&home) >= 300);
    let file = backup.clone();
    let taken =
        tokio::task::spawn_blocking(move || with_passphrase(&home, &["backup", file.to_str().unwrap()], PASSPHRASE))
            .await
            .unwrap();
    let said = succeeded(taken);
    assert!(said.contains("backed up home"), "{said}");
    writes.await.unwrap();
    assert_eq!(memories(&homes[0]), 1000);
    sync_wait(&homes[1]);
    assert_eq!(memories(&homes[1]), 1000);

    // The machine is lost with its disk.
    let lost = served.remove(0);
    drop(lost);
    std::fs::remove_dir_all(&homes[0]).unwrap();
    let again = with_passphrase(&homes[1], &["backup", backup.to_str().unwrap()], PASSPHRASE);
    assert!(!again.status.success(), "a backup never overwrites a file");

    // Restored on a new disk: a wrong passphrase opens nothing.
    let restored = dir.path().join("home-restored");
    let wrong = with_passphrase(&restored, &["restore", backup.to_str().unwrap()], "not the passphrase at all");
    assert!(!wrong.status.success());
    assert!(!restored.join("config.toml").exists(), "nothing is written with a wrong passphrase");
    let said = succeeded(with_passphrase(&restored, &["restore", backup.to_str().unwrap()], PASSPHRASE));
    assert!(said.contains("restored home"), "{said}");
    let at_backup = memories(&restored);
    assert!((300..1000).contains(&at_backup), "the backup is the database of one moment mid-way: {at_backup}");

    // Until it has its own log back, it does not write.
    let early = roost(&restored, &["memory", "add", "too early"]);
    assert!(!early.status.success());
    let error = String::from_utf8_lossy(&early.stderr);
    assert!(error.contains("restored from a backup"), "{error}");

    let back = Served::start(&restored);
    until("the restored machine takes back its own writes", || memories(&restored) == 1000);
    until("and writes again", || roost(&restored, &["memory", "add", "write after restore"]).status.success());

    // One log: both machines come to hold the same entries of it, nothing in
    // conflict, every write exactly once.
    until("both hold the restored machine's log alike", || {
        let (here, there) = (head_of(&back, &id), head_of(&served[0], &id));
        here == there && here > 1000
    });
    for home in [&restored, &homes[1]] {
        let conflicts = json_of(roost(home, &["conflicts", "list", "--json"]));
        assert_eq!(conflicts, Value::Array(vec![]), "no conflict on {}", home.display());
        let seen = contents(home);
        assert_eq!(seen.len(), 1001, "every write, once: {} distinct", seen.len());
        assert!(seen.values().all(|n| *n == 1), "a doubled write: {seen:?}");
    }
}
