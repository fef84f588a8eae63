//! Every MCP tool, through a real `roost` process, over both transports.
//!
//! The same scenario runs over Streamable HTTP (`roost serve`) and stdio
//! (`roost mcp`). After every successful write it checks, through
//! `roost_memory_stats`, that exactly one change record was appended, and that
//! refused calls appended none. It ends by checking that every listed tool was
//! called.

mod common;

use std::collections::BTreeSet;

use common::{Client, call, connect_http, connect_stdio};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

struct Session<'a> {
    client: &'a Client,
    called: BTreeSet<String>,
    changes: i64,
}

impl<'a> Session<'a> {
    async fn new(client: &'a Client) -> Session<'a> {
        let mut s = Session { client, called: BTreeSet::new(), changes: 0 };
        s.changes = s.change_records().await;
        s
    }

    async fn change_records(&mut self) -> i64 {
        self.called.insert("roost_memory_stats".into());
        common::ok(self.client, "roost_memory_stats", json!({})).await["change_records"].as_i64().unwrap()
    }

    async fn expect_changes(&mut self, added: i64, what: &str) {
        let now = self.change_records().await;
        assert_eq!(now - self.changes, added, "{what}: change records appended");
        self.changes = now;
    }

    /// A read-only call that must succeed.
    async fn read(&mut self, tool: &str, args: Value) -> Value {
        self.called.insert(tool.into());
        common::ok(self.client, tool, args).await
    }

    /// A write that must succeed and append exactly one change record.
    async fn write(&mut self, tool: &str, args: Value) -> Value {
        self.called.insert(tool.into());
        let v = common::ok(self.client, tool, args.clone()).await;
        self.expect_changes(1, &format!("{tool}({args})")).await;
        v
    }

    /// A write of an instance-local row: it succeeds and adds nothing to the
    /// log, which is what replicates.
    async fn write_local(&mut self, tool: &str, args: Value) -> Value {
        self.called.insert(tool.into());
        let v = common::ok(self.client, tool, args.clone()).await;
        self.expect_changes(0, &format!("{tool}({args})")).await;
        v
    }

    /// A call that must be refused, appending nothing; returns the message.
    async fn refused(&mut self, tool: &str, args: Value, expect: &str) -> String {
        self.called.insert(tool.into());
        let message = common::refused(self.client, tool, args.clone()).await;
        assert!(message.contains(expect), "{tool}({args}): {message:?} should mention {expect:?}");
        assert!(!message.contains('\n'), "errors are one line: {message:?}");
        self.expect_changes(0, &format!("refused {tool}")).await;
        message
    }
}

fn batch_of(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"content": format!("fact {i}")})).collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("row has an id").to_string()
}

fn contents(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key].as_array().unwrap().iter().map(|r| r[field].as_str().unwrap_or_default().to_string()).collect()
}

async fn exercise_every_tool(client: &Client, gateway_runs: bool) {
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(
        tools.len(),
        45,
        "8 memory tools, 5 tools for each of 6 other tables, 2 for sync conflicts, 2 federated, 2 of the agent, the pool"
    );
    for tool in &tools {
        assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40), "{} needs a real description", tool.name);
        assert_eq!(tool.input_schema["type"], json!("object"));
        let spans_instances = ["roost_search_all", "roost_list_instances", "roost_pool"].contains(&tool.name.as_ref());
        assert_eq!(tool.input_schema["properties"].get("instance").is_none(), spans_instances, "{}", tool.name);
    }
    let mut s = Session::new(client).await;

    // Alone, an instance's search of all instances is its own search.
    let alone = s.read("roost_search_all", json!({"query": "nothingmatchesthis"})).await;
    assert_eq!(alone["answered"].as_array().map(Vec::len), Some(1), "{alone}");
    let instances = s.read("roost_list_instances", json!({})).await;
    assert_eq!(instances["instances"][0]["this"], json!(true), "{instances}");

    // Projects.
    let roost = s.write("roost_create_project", json!({"name": "Roost", "description": "the agent's home"})).await;
    s.refused("roost_create_project", json!({"name": "Roost"}), "already exists").await;
    assert_eq!(s.read("roost_get_project", json!({"id": "Roost"})).await["id"], roost["id"]);
    assert_eq!(s.read("roost_get_project", json!({"id": id(&roost)})).await["name"], json!("Roost"));
    let paused = s.write("roost_create_project", json!({"name": "Garden", "status": "paused"})).await;
    s.write("roost_update_project", json!({"id": "Garden", "status": "active", "tags": ["home"]})).await;
    let active = s.read("roost_list_projects", json!({"status": "active"})).await;
    assert_eq!(active["count"], json!(2));
    s.refused("roost_update_project", json!({"id": "Garden", "status": "someday"}), "must be one of").await;

    // Memories: unicode, large content, ranking and filters.
    let tea = s
        .write(
            "roost_store_memory",
            json!({"content": "Prefers green tea; tea before nine, never coffee. Tea tea.", "category": "preference",
                   "tags": ["drinks", "morning"], "importance": 8, "project": "Roost"}),
        )
        .await;
    assert_eq!(tea["project"], roost["id"], "project names resolve to ids");
    let cafe = s
        .write("roost_store_memory", json!({"content": "Café ☕ in Zürich — 東京で寿司を食べた 🍣", "importance": 3, "source": "tea shop receipt"}))
        .await;
    let big_text = "lorem ipsum dolor sit amet ".repeat(2000) + "needle-in-haystack";
    assert!(big_text.len() >= 50_000);
    let big = s.write("roost_store_memory", json!({"content": big_text, "category": "archive", "importance": 1})).await;
    let fetched = s.read("roost_get_memory", json!({"id": id(&big)})).await;
    assert_eq!(fetched["content"].as_str().unwrap().len(), big_text.len(), "50 KB content survives intact");

    let hits = s.read("roost_search_memories", json!({"query": "tea"})).await;
    assert_eq!(contents(&hits, "results", "snippet").len(), 2);
    assert_eq!(hits["results"][0]["memory"]["id"], tea["id"], "content matches outrank a source match");
    assert!(hits["results"][0]["score"].as_f64() > hits["results"][1]["score"].as_f64());
    assert!(hits["results"][0]["snippet"].as_str().unwrap().contains("[tea]"));
    let unicode = s.read("roost_search_memories", json!({"query": "cafe zurich"})).await;
    assert_eq!(unicode["results"][0]["memory"]["id"], cafe["id"], "diacritics fold in search");
    assert_eq!(unicode["results"][0]["memory"]["content"], cafe["content"], "unicode is stored exactly");
    let japanese = s.read("roost_search_memories", json!({"query": "東京で寿司を食べた"})).await;
    assert_eq!(japanese["count"], json!(1));
    assert_eq!(s.read("roost_search_memories", json!({"query": "needle*"})).await["count"], json!(1));
    for (filter, expected) in [
        (json!({"query": "tea", "category": "preference"}), 1),
        (json!({"query": "tea", "min_importance": 5}), 1),
        (json!({"query": "tea", "project": "Roost"}), 1),
        (json!({"query": "tea", "tag": "drinks"}), 1),
        (json!({"query": "tea", "tag": "nope"}), 0),
        (json!({"query": "tea", "limit": 1}), 1),
        (json!({"query": "tea OR lorem"}), 3),
        (json!({"query": "tea NOT coffee"}), 1),
        (json!({"query": "\"green tea\""}), 1),
    ] {
        let hits = s.read("roost_search_memories", filter.clone()).await;
        assert_eq!(hits["count"], json!(expected), "{filter}");
    }
    s.refused("roost_search_memories", json!({"query": "tea AND ("}), "invalid search query").await;
    s.refused("roost_search_memories", json!({"query": "  "}), "empty").await;
    s.refused("roost_search_memories", json!({"query": "tea", "project": "Nope"}), "no project").await;

    // Access counting and listing orders.
    assert_eq!(s.read("roost_get_memory", json!({"id": id(&cafe)})).await["access_count"], json!(1));
    assert_eq!(s.read("roost_get_memory", json!({"id": id(&cafe)})).await["access_count"], json!(2));
    let by_importance = s.read("roost_list_memories", json!({"sort": "importance"})).await;
    assert_eq!(contents(&by_importance, "items", "id"), vec![id(&tea), id(&cafe), id(&big)]);
    let by_access = s.read("roost_list_memories", json!({"sort": "accessed", "limit": 1})).await;
    assert_eq!(contents(&by_access, "items", "id"), vec![id(&cafe)]);
    let oldest = s.read("roost_list_memories", json!({"sort": "oldest", "offset": 1, "limit": 1})).await;
    assert_eq!(contents(&oldest, "items", "id"), vec![id(&cafe)]);
    let filtered = s.read("roost_list_memories", json!({"category": "archive"})).await;
    assert_eq!(contents(&filtered, "items", "id"), vec![id(&big)]);
    assert_eq!(s.read("roost_list_memories", json!({"tag": "morning"})).await["count"], json!(1));
    s.refused("roost_list_memories", json!({"sort": "sideways"}), "unknown order").await;

    // Updates and deletes.
    let updated = s
        .write("roost_update_memory", json!({"id": id(&cafe), "content": "Espresso in Zürich", "importance": 6}))
        .await;
    assert_eq!(updated["importance"], json!(6));
    assert!(updated["lamport"].as_i64() > cafe["lamport"].as_i64());
    assert_eq!(s.read("roost_search_memories", json!({"query": "espresso"})).await["count"], json!(1));
    assert_eq!(
        s.read("roost_search_memories", json!({"query": "sushi OR 東京で寿司を食べた"})).await["count"],
        json!(0)
    );
    s.refused("roost_update_memory", json!({"id": id(&cafe), "importance": 0}), "from 1 to 10").await;
    s.refused("roost_update_memory", json!({"id": id(&cafe), "mood": "happy"}), "unknown argument `mood`").await;
    s.refused("roost_update_memory", json!({"id": id(&cafe), "content": null}), "cannot be cleared").await;
    s.write("roost_update_memory", json!({"id": id(&cafe), "source": null})).await;
    s.write("roost_delete_memory", json!({"id": id(&big)})).await;
    s.refused("roost_get_memory", json!({"id": id(&big)}), "no memory").await;
    s.refused("roost_delete_memory", json!({"id": id(&big)}), "no memory").await;
    assert_eq!(s.read("roost_search_memories", json!({"query": "needle*"})).await["count"], json!(0));
    let stats = s.read("roost_memory_stats", json!({})).await;
    assert_eq!(stats["total"], json!(2));
    assert_eq!(stats["deleted"], json!(1));
    assert_eq!(stats["by_category"]["preference"], json!(1));
    assert_eq!(stats["by_project"]["Roost"], json!(1));

    // Many memories in one call: one change record each, all or none.
    s.called.insert("roost_store_memories".into());
    let batch: Vec<Value> =
        (0..500).map(|i| json!({"content": format!("batch fact {i}"), "category": "batch"})).collect();
    let stored = common::ok(client, "roost_store_memories", json!({"memories": batch})).await;
    assert_eq!(stored["count"], json!(500));
    assert_eq!(stored["items"][499]["content"], json!("batch fact 499"), "stored in order");
    s.expect_changes(500, "roost_store_memories of 500").await;
    let mut too_many = batch_of(501);
    s.refused("roost_store_memories", json!({"memories": too_many.clone()}), "give 1 to 500 per call").await;
    too_many.truncate(3);
    too_many[1] = json!({"content": "x", "importance": 11});
    s.refused("roost_store_memories", json!({"memories": too_many}), "memory 2 of 3: field `importance`").await;
    s.refused("roost_store_memories", json!({"memories": []}), "give 1 to 500 per call").await;
    let batch_hits = s.read("roost_list_memories", json!({"category": "batch", "limit": 500})).await;
    assert_eq!(batch_hits["count"], json!(500));
    for hit in batch_hits["items"].as_array().unwrap() {
        s.write("roost_delete_memory", json!({"id": id(hit)})).await;
    }

    // Bad arguments.
    s.refused("roost_store_memory", json!({"category": "x"}), "field `content`: is required").await;
    s.refused("roost_store_memory", json!({"content": "x", "importance": "high"}), "must be an integer").await;
    s.refused("roost_store_memory", json!({"content": "x", "tags": [1, 2]}), "entries must be strings").await;
    s.refused("roost_get_memory", json!({}), "`id` is required").await;
    s.refused("roost_get_memory", json!({"id": 42}), "must be a string").await;
    let unknown = client.call_tool(CallToolRequestParams::new("roost_no_such_tool")).await;
    assert!(unknown.is_err(), "an unknown tool is a protocol error");

    // Sources.
    let source = s
        .write(
            "roost_create_source",
            json!({"title": "Time, Clocks, and the Ordering of Events", "authors": ["Leslie Lamport"],
                   "url": "https://example.org/lamport", "published": "1978-07", "kind": "paper", "project": "Roost"}),
        )
        .await;
    assert_eq!(source["authors"], json!(["Leslie Lamport"]));
    s.refused("roost_create_source", json!({"title": "x", "url": "not a url"}), "http").await;
    s.refused("roost_create_source", json!({"title": "x", "published": "July"}), "YYYY").await;
    assert_eq!(s.read("roost_list_sources", json!({"kind": "paper", "project": "Roost"})).await["count"], json!(1));
    s.write("roost_update_source", json!({"id": id(&source), "notes": "the classic"})).await;
    assert_eq!(s.read("roost_get_source", json!({"id": id(&source)})).await["notes"], json!("the classic"));
    s.write("roost_delete_source", json!({"id": id(&source)})).await;
    assert_eq!(s.read("roost_list_sources", json!({})).await["count"], json!(0));

    // Notes.
    let free = s.write("roost_create_note", json!({"body": "buy seeds"})).await;
    let attached =
        s.write("roost_create_note", json!({"title": "Plan", "body": "# Plan\n- sync", "project": "Roost"})).await;
    assert_eq!(
        contents(&s.read("roost_list_notes", json!({"project": "Roost"})).await, "items", "id"),
        vec![id(&attached)]
    );
    s.write("roost_update_note", json!({"id": id(&free), "project": "Garden"})).await;
    assert_eq!(s.read("roost_get_note", json!({"id": id(&free)})).await["project"], paused["id"]);
    s.write("roost_delete_note", json!({"id": id(&free)})).await;

    // Blog posts.
    let post = s.write("roost_create_blog_post", json!({"title": "Hello, Roost!", "body": "First *post*."})).await;
    assert_eq!(post["slug"], json!("hello-roost"));
    assert_eq!(post["status"], json!("draft"));
    assert_eq!(post["published_at"], Value::Null);
    s.refused("roost_create_blog_post", json!({"title": "Other", "slug": "hello-roost"}), "already exists").await;
    let published = s.write("roost_update_blog_post", json!({"id": "hello-roost", "status": "published"})).await;
    assert!(published["published_at"].is_string(), "publishing stamps published_at");
    assert_eq!(s.read("roost_list_blog_posts", json!({"status": "published"})).await["count"], json!(1));
    assert_eq!(s.read("roost_get_blog_post", json!({"id": "hello-roost"})).await["id"], post["id"]);
    s.write("roost_delete_blog_post", json!({"id": "hello-roost"})).await;

    // Contacts.
    let ada = s
        .write("roost_create_contact", json!({"name": "Ada", "email": "ada@example.org", "organization": "Engines"}))
        .await;
    assert_eq!(s.read("roost_list_contacts", json!({"organization": "Engines"})).await["count"], json!(1));
    s.write("roost_update_contact", json!({"id": id(&ada), "phone": "+44 20 0000"})).await;
    assert_eq!(s.read("roost_get_contact", json!({"id": id(&ada)})).await["phone"], json!("+44 20 0000"));
    s.write("roost_delete_contact", json!({"id": id(&ada)})).await;

    // Settings.
    let theme = s.write("roost_create_setting", json!({"key": "ui.theme", "value": "dark"})).await;
    let cache =
        s.write_local("roost_create_setting", json!({"key": "gateway.cache", "value": "64", "local": true})).await;
    s.refused("roost_update_setting", json!({"id": id(&cache), "local": false}), "local").await;
    s.refused("roost_create_setting", json!({"key": "ui.theme", "value": "x"}), "already exists").await;
    s.refused("roost_update_setting", json!({"id": "ui.theme", "key": "ui.colour"}), "unknown argument `key`").await;
    s.write("roost_update_setting", json!({"id": "ui.theme", "value": "light"})).await;
    assert_eq!(s.read("roost_get_setting", json!({"id": "ui.theme"})).await["value"], json!("light"));
    assert_eq!(
        contents(&s.read("roost_list_settings", json!({"local": true})).await, "items", "key"),
        vec!["gateway.cache"]
    );
    s.write("roost_delete_setting", json!({"id": "ui.theme"})).await;
    let again = s.write("roost_create_setting", json!({"key": "ui.theme", "value": "auto"})).await;
    assert_eq!(again["id"], theme["id"], "a setting's id is derived from its key");

    s.write("roost_delete_project", json!({"id": "Garden"})).await;
    assert_eq!(contents(&s.read("roost_list_projects", json!({})).await, "items", "name"), vec!["Roost"]);

    // Sync conflicts: none on a lone instance; resolving needs a real one.
    assert_eq!(s.read("roost_list_sync_conflicts", json!({"include_resolved": true})).await["count"], json!(0));
    s.refused("roost_resolve_sync_conflict", json!({"id": "0123abcd", "keep": "remote"}), "no conflict").await;
    s.refused("roost_resolve_sync_conflict", json!({"id": "0123abcd", "keep": "theirs"}), "keep must be").await;

    // The agent: its status comes from the lease, which `roost serve` runs
    // (`roost mcp` asks it, and says so when it is not running).
    if gateway_runs {
        let status = s.read("roost_agent_status", json!({})).await;
        assert_eq!((status["awake"].as_bool(), status["role"].as_str()), (Some(true), Some("awake")), "{status}");
        assert_eq!(status["agent"]["handler"], json!("echo (built in)"));
    } else {
        s.refused("roost_agent_status", json!({}), "roost serve is not running").await;
    }
    let topic = s.read("roost_agent_topic", json!({"topic": "nothing yet"})).await;
    assert_eq!((topic["count"].as_u64(), topic["messages"].as_array().map(Vec::len)), (Some(0), Some(0)));
    s.refused("roost_agent_topic", json!({}), "`topic` is required").await;
    // The pool is off unless configured.
    s.refused("roost_pool", json!({"op": "status"}), "pool is off").await;

    let listed: BTreeSet<String> = tools.iter().map(|t| t.name.to_string()).collect();
    let missing: Vec<_> = listed.difference(&s.called).collect();
    assert!(missing.is_empty(), "tools never exercised: {missing:?}");
}

#[tokio::test]
async fn every_tool_over_streamable_http() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::Served::start(&dir.path().join("home"));
    let client = connect_http(&served.addr).await;
    exercise_every_tool(&client, true).await;
    client.cancel().await.unwrap();
    assert!(served.stop().success(), "serve exits cleanly on SIGTERM");
}

#[tokio::test]
async fn every_tool_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let client = connect_stdio(&dir.path().join("home")).await;
    exercise_every_tool(&client, false).await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn tool_errors_never_end_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let client = connect_stdio(&dir.path().join("home")).await;
    for bad in [json!({"query": "\"unterminated"}), json!({"query": "a NEAR("}), json!({"query": "*"})] {
        assert!(call(&client, "roost_search_memories", bad).await.is_err());
    }
    let stored = common::ok(&client, "roost_store_memory", json!({"content": "still alive"})).await;
    assert_eq!(stored["content"], json!("still alive"));
    client.cancel().await.unwrap();
}
