//! The `roost` command line and the gateway's HTTP surface, as a person uses them.

mod common;

use common::roost;
use serde_json::Value;

fn stdout_json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "roost failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// A refusal: non-zero exit and exactly one line on stderr.
fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("roost: error: "), "{stderr:?}");
    stderr
}

#[test]
fn memory_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(roost(&home, &["init", "--name", "laptop"]).status.success());
    let err = one_line_error(&roost(&home, &["init", "--name", "again"]));
    assert!(err.contains("already exists"), "{err}");

    let added = stdout_json(&roost(
        &home,
        &["memory", "add", "The heron nests by the river", "--tags", "birds,river", "--importance", "7", "--json"],
    ));
    let id = added["id"].as_str().unwrap().to_string();
    stdout_json(&roost(&home, &["memory", "add", "Herons eat fish", "--category", "learning", "--json"]));

    let found = stdout_json(&roost(&home, &["memory", "search", "heron*", "--json"]));
    assert_eq!(found["count"], 2);
    let filtered = stdout_json(&roost(&home, &["memory", "search", "heron*", "--category", "learning", "--json"]));
    assert_eq!(filtered["count"], 1);
    let listed = stdout_json(&roost(&home, &["memory", "list", "--sort", "importance", "--json"]));
    assert_eq!(listed["items"][0]["id"], Value::String(id.clone()));

    let updated =
        stdout_json(&roost(&home, &["memory", "update", &id, "--content", "The egret nests by the river", "--json"]));
    assert_eq!(updated["content"], "The egret nests by the river");
    let got = stdout_json(&roost(&home, &["memory", "get", &id, "--json"]));
    assert_eq!(got["tags"], serde_json::json!(["birds", "river"]));
    assert_eq!(got["access_count"], 1);

    let human = roost(&home, &["memory", "search", "egret"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("[egret]"));

    assert!(roost(&home, &["memory", "rm", &id]).status.success());
    one_line_error(&roost(&home, &["memory", "get", &id]));
    let err = one_line_error(&roost(&home, &["memory", "add", "x", "--importance", "11"]));
    assert!(err.contains("importance"), "{err}");
    let err = one_line_error(&roost(&home, &["memory", "search", "egret AND ("]));
    assert!(err.contains("invalid search query"), "{err}");
    one_line_error(&roost(&home, &["memory", "update", "01a20806-d44d-7d33-90d7-0d66fd9bc558"]));

    let status = stdout_json(&roost(&home, &["status", "--json"]));
    assert_eq!(status["name"], "laptop");
    assert_eq!(status["counts"]["memories"], 1);
    assert_eq!(status["change_records"], 4, "2 inserts, 1 update, 1 delete: CLI writes are recorded too");
    assert_eq!(status["lamport"], 4);
}

#[test]
fn commands_on_a_missing_instance_say_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = one_line_error(&roost(&dir.path().join("none"), &["status"]));
    assert!(err.contains("roost init"), "{err}");
    assert!(!dir.path().join("none").exists(), "a read-only command creates nothing");
}

#[tokio::test]
async fn gateway_health_api_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let served = common::Served::start(&home);
    let out = roost(&home, &["memory", "add", "kingfisher on the branch", "--json"]);
    let id = stdout_json(&out)["id"].as_str().unwrap().to_string();

    common::install_tls_provider();
    let http = reqwest::Client::new();
    let health: Value = http.get(served.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"]["ok"], true);
    assert_eq!(health["name"], "test");
    let instance: Value = http.get(served.url("/api/v1/instance")).send().await.unwrap().json().await.unwrap();
    assert_eq!(instance["id"], health["instance_id"]);
    assert_eq!(instance["counts"]["memories"], 1);
    let hits: Value =
        http.get(served.url("/api/v1/memories/search?q=kingfisher")).send().await.unwrap().json().await.unwrap();
    assert_eq!(hits["results"][0]["memory"]["id"], Value::String(id.clone()));
    let memory = http.get(served.url(&format!("/api/v1/memories/{id}"))).send().await.unwrap();
    assert_eq!(memory.status(), 200);
    let missing = http.get(served.url("/api/v1/memories/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let bad = http.get(served.url("/api/v1/memories/search?q=a%20AND%20(")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("invalid search query"));

    // A Host header naming another site is refused (DNS rebinding).
    let rebinding = http
        .post(served.url("/mcp"))
        .header("Host", "evil.example")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status(), 401, "no token and a foreign Host: refused before rmcp sees it");
    let rebound_api = http
        .get(served.url("/api/v1/memories/search?q=kingfisher"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound_api.status(), 401, "the loopback exemption needs a loopback Host too");

    assert!(served.stop().success(), "SIGTERM stops the gateway with exit code 0");
}

#[test]
fn two_instances_on_one_machine_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let served_a = common::Served::start(&a);
    let served_b = common::Served::start(&b);
    assert_ne!(served_a.addr, served_b.addr);
    stdout_json(&roost(&a, &["memory", "add", "only in a", "--json"]));
    let in_b = stdout_json(&roost(&b, &["memory", "search", "only", "--json"]));
    assert_eq!(in_b["count"], 0);
    let status_a = stdout_json(&roost(&a, &["status", "--json"]));
    let status_b = stdout_json(&roost(&b, &["status", "--json"]));
    assert_ne!(status_a["id"], status_b["id"]);
    assert_ne!(status_a["machine_key_fingerprint"], status_b["machine_key_fingerprint"]);
    let key = std::fs::metadata(a.join("keys/machine.sealed")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);
}

#[test]
fn without_home_an_instance_lives_where_the_platform_keeps_data_or_in_an_earlier_roost() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path();
    let run = |data: Option<&std::path::Path>, args: &[&str]| {
        let mut command = std::process::Command::new(common::roost_bin());
        command.args(args).env("HOME", user).env_remove("ROOST_HOME").env_remove("XDG_DATA_HOME");
        if let Some(data) = data {
            command.env("XDG_DATA_HOME", data);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = run(None, &["init", "--name", "first"]);
    assert!(said.contains(&user.join(".local/share/roost").display().to_string()), "{said}");
    assert!(user.join(".local/share/roost/config.toml").exists());
    let data = user.join("data");
    run(Some(&data), &["init", "--name", "second"]);
    assert!(data.join("roost/config.toml").exists(), "$XDG_DATA_HOME/roost");

    // A home made where earlier versions put it is used as it is.
    run(None, &["--home", user.join(".roost").to_str().unwrap(), "init", "--name", "earlier"]);
    let status: Value = serde_json::from_str(&run(Some(&data), &["status", "--json"])).unwrap();
    assert_eq!(status["name"], "earlier");
}
