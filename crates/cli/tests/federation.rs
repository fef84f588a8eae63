//! Federation between real `roost serve` processes on loopback: tool calls
//! forwarded to a named instance, the search of all instances, cached
//! summaries, and the allowlist. Every kind of bad token against a real
//! `/mcp` is in `tokens.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Client, Served, call, configure, connect_http, json_of, roost, signal, succeeded, until};
use roost_instance::Instance;
use serde_json::{Value, json};

/// Three machines of one chain, b and c joined through a by pairing,
/// configured by `setup` before they start.
fn three_machines(root: &Path, setup: impl Fn(&[PathBuf])) -> (Vec<PathBuf>, Vec<Served>) {
    common::chain_with(root, &["a", "b", "c"], &[], setup, |_| 0)
}

fn add(home: &Path, content: &str, local: bool) -> String {
    let mut args = vec!["memory", "add", content, "--json"];
    if local {
        args.push("--local");
    }
    json_of(roost(home, &args))["id"].as_str().unwrap().to_string()
}

fn holders(hit: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = hit["holders"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    names.sort();
    names
}

async fn search_all(client: &Client, query: &str) -> (Value, Duration) {
    let started = Instant::now();
    let answer = call(client, "roost_search_all", json!({"query": query})).await.unwrap();
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_all_forwarding_and_summaries_across_three_machines() {
    let dir = tempfile::tempdir().unwrap();
    // A refreshes its summaries every second, gives each instance 1.5 s to
    // answer a search and 2 s for any other call.
    let (h, mut served) = three_machines(dir.path(), |h| {
        configure(&h[0], "call_timeout_ms", "2000");
        configure(&h[0], "summary_interval_secs", "1");
        configure(&h[0], "health_interval_secs", "1");
        configure(&h[0], "search_timeout_ms", "1500");
    });
    let only_c = add(&h[2], "the zebra key is under the mat", true);
    let shared = add(&h[0], "the shared umbrella is blue", false);
    succeeded(roost(&h[2], &["memory", "add", "second umbrella note, kept on c", "--local"]));
    for home in &h[1..] {
        until("the shared memory on every machine", || roost(home, &["memory", "get", &shared]).status.success());
    }
    assert!(!roost(&h[0], &["memory", "get", &only_c]).status.success(), "a local memory stays on c");

    let a = connect_http(&served[0].addr).await;
    let (found, _) = search_all(&a, "zebra").await;
    assert_eq!(found["count"], 1, "{found:#}");
    assert_eq!(found["results"][0]["id"], only_c.as_str());
    assert_eq!(holders(&found["results"][0]), ["c"]);
    let mut answered: Vec<&str> = found["answered"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    answered.sort();
    assert_eq!(answered, ["a", "b", "c"], "{found:#}");

    let (found, _) = search_all(&a, "umbrella").await;
    let hits = found["results"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "the replicated memory appears once: {found:#}");
    let replicated = hits.iter().find(|hit| hit["id"] == shared.as_str()).unwrap();
    assert_eq!(holders(replicated), ["a", "b", "c"]);
    assert_eq!(replicated["score"], 1.0, "a's best hit: {found:#}");

    // The CLI runs the same search.
    let cli = json_of(roost(&h[0], &["search", "zebra", "--all", "--json"]));
    assert_eq!(cli["results"][0]["id"], only_c.as_str());

    // A tool forwarded to C runs there, labelled with where it ran.
    let there = call(&a, "roost_get_memory", json!({"id": only_c, "instance": "c"})).await.unwrap();
    assert_eq!(there["instance"]["name"], "c");
    assert_eq!(there["result"]["content"], "the zebra key is under the mat");
    let here = call(&a, "roost_get_memory", json!({"id": only_c, "instance": "a"})).await;
    assert!(here.is_err(), "naming this instance runs the tool here, where the memory is not");
    let unknown = call(&a, "roost_memory_stats", json!({"instance": "nowhere"})).await.unwrap_err();
    assert!(unknown.contains("no instance named \"nowhere\""), "{unknown}");

    // C's allowlist keeps writes out by default.
    let write = call(&a, "roost_store_memory", json!({"content": "from afar", "instance": "c"})).await.unwrap_err();
    assert!(write.contains("not open to other instances"), "{write}");

    // Forwarding onward: a call that reaches C asking to be relayed to B.
    let me = Instance::open(&h[0]).unwrap();
    let federation = roost_federation::Federation::new(
        &me,
        std::sync::Arc::new(me.open_store().unwrap()),
        std::sync::Arc::new(|| None),
    );
    let args = json!({"query": "umbrella", "instance": "b"}).as_object().cloned().unwrap();
    let relayed = federation.forward("c", "roost_search_memories", args).await.unwrap_err().to_string();
    assert!(relayed.contains("forwarding onward is refused"), "{relayed}");

    // Summaries: C's projects and counts, fresh, then stale once C is gone.
    succeeded(roost(&h[2], &["memory", "add", "a fact for the summary", "--category", "fact", "--local"]));
    let summary_of_c = |listing: &Value| -> Value {
        listing["instances"].as_array().unwrap().iter().find(|i| i["name"] == "c").unwrap()["summary"].clone()
    };
    let mut listing = Value::Null;
    for _ in 0..100 {
        listing = call(&a, "roost_list_instances", json!({})).await.unwrap();
        if summary_of_c(&listing)["value"]["memories"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = summary_of_c(&listing);
    assert_eq!(summary["value"]["memories"], 4, "{listing:#}");
    assert_eq!(summary["value"]["by_category"]["fact"], 1, "{listing:#}");
    assert_eq!(summary["stale"], false);
    assert_eq!(listing["instances"][0]["this"], true);
    let api: Value = reqwest::get(served[0].url("/api/v1/instances")).await.unwrap().json().await.unwrap();
    assert_eq!(api["count"], 3, "the JSON API lists the same instances: {api:#}");

    // A paused instance times out; the answer still comes within its bound.
    signal(&served[2].child, "STOP");
    let (paused, took) = search_all(&a, "umbrella").await;
    signal(&served[2].child, "CONT");
    assert_eq!(paused["timed_out"], json!(["c"]), "{paused:#}");
    assert_eq!(paused["count"], 1, "a and b still answer: {paused:#}");
    assert!(took < Duration::from_millis(1500 + 2500), "took {took:?}");

    // A stopped instance is named unreachable, and its summary goes stale.
    served.pop().unwrap().stop();
    let (gone, took) = search_all(&a, "zebra").await;
    assert_eq!(gone["unreachable"], json!(["c"]), "{gone:#}");
    assert_eq!(gone["count"], 0);
    assert!(took < Duration::from_millis(1500 + 2500), "took {took:?}");
    let mut stale = Value::Null;
    for _ in 0..100 {
        stale = summary_of_c(&call(&a, "roost_list_instances", json!({})).await.unwrap());
        if stale["stale"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stale["stale"], true, "{stale:#}");
    assert_eq!(stale["value"]["memories"], 4, "the last known summary stays, marked stale");
    assert!(stale["last_error"].is_string());
    a.cancel().await.unwrap();
}
