//! `roost import`: a Crow database and a JSON-lines file, each brought in on
//! a running machine of a chain, twice, and then on another machine of it.

mod common;

use std::path::Path;

use serde_json::Value;

use common::{chain, json_of, roost, succeeded, sync_wait};

/// A Crow database as Crow's published schema shapes it: the columns Roost
/// reads, Crow's types and defaults, and columns it ignores.
fn crow_fixture(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE project_spaces (
            id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),
            slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL, description TEXT,
            type TEXT NOT NULL DEFAULT 'general', status TEXT NOT NULL DEFAULT 'active', tags TEXT,
            created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
         CREATE TABLE memories (
            id INTEGER PRIMARY KEY AUTOINCREMENT, category TEXT NOT NULL DEFAULT 'general',
            content TEXT NOT NULL, context TEXT, tags TEXT, source TEXT,
            importance INTEGER DEFAULT 5 CHECK(importance BETWEEN 1 AND 10),
            created_at TEXT DEFAULT (datetime('now')), updated_at TEXT DEFAULT (datetime('now')),
            accessed_at TEXT DEFAULT (datetime('now')), access_count INTEGER DEFAULT 0,
            instance_id TEXT, project_id INTEGER);
         CREATE TABLE research_sources (
            id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER, title TEXT NOT NULL,
            source_type TEXT NOT NULL, url TEXT, authors TEXT, publication_date TEXT, publisher TEXT,
            abstract TEXT, content_summary TEXT, citation_apa TEXT NOT NULL, tags TEXT,
            created_at TEXT DEFAULT (datetime('now')));
         CREATE TABLE research_notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER, source_id INTEGER, title TEXT,
            content TEXT NOT NULL, note_type TEXT DEFAULT 'note', tags TEXT,
            created_at TEXT DEFAULT (datetime('now')));
         CREATE TABLE blog_posts (
            id INTEGER PRIMARY KEY AUTOINCREMENT, slug TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
            content TEXT NOT NULL, excerpt TEXT, author TEXT, status TEXT DEFAULT 'draft', tags TEXT,
            published_at TEXT, created_at TEXT DEFAULT (datetime('now')), updated_at TEXT DEFAULT (datetime('now')));
         CREATE TABLE contacts (
            id INTEGER PRIMARY KEY AUTOINCREMENT, crow_id TEXT NOT NULL UNIQUE, display_name TEXT,
            ed25519_pubkey TEXT NOT NULL, secp256k1_pubkey TEXT NOT NULL, relay_url TEXT,
            is_blocked INTEGER DEFAULT 0, last_seen TEXT, created_at TEXT DEFAULT (datetime('now')));
         CREATE TABLE dashboard_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT DEFAULT (datetime('now')));

         INSERT INTO project_spaces (id, slug, name, description, status, tags) VALUES
            (1, 'garden', 'Garden', 'Raised beds and the orchard', 'active', 'outdoors,home'),
            (2, 'thesis', 'Thesis', 'Finished in spring', 'completed', NULL);
         INSERT INTO memories (category, content, context, tags, source, importance, project_id) VALUES
            ('preference', 'Prefers tomatoes grown from the Brandywine seeds', 'said at dinner', 'garden,food', 'conversation', 7, 1),
            ('general', 'The quince tree needs pruning in February', NULL, 'garden', NULL, 5, 1),
            ('person', 'Sam is allergic to hazelnuts', NULL, NULL, NULL, 9, NULL),
            ('decision', 'Chapter three uses the 2019 survey data', NULL, 'thesis', NULL, 6, 2),
            ('general', '', 'an empty memory Roost refuses', NULL, NULL, 5, NULL);
         INSERT INTO research_sources (project_id, title, source_type, url, authors, publication_date, abstract, citation_apa, tags) VALUES
            (2, 'Survey methods in practice', 'academic_paper', 'https://example.org/paper', 'Ada Lovelace, Alan Turing',
             '2019-05-01', 'On sampling', 'Lovelace, A. (2019). Survey methods in practice.', 'methods'),
            (NULL, 'Pruning fruit trees', 'video', NULL, NULL, 'sometime in 2020', NULL, 'Pruning fruit trees [Video].', NULL);
         INSERT INTO research_notes (project_id, title, content, note_type, tags) VALUES
            (2, 'Sampling', 'Stratify by region first', 'insight', 'methods');
         INSERT INTO blog_posts (slug, title, content, status, published_at, tags) VALUES
            ('first-harvest', 'First harvest', 'Beans, mostly.', 'published', '2024-08-30 18:00:00', 'garden'),
            ('old-notes', 'Old notes', 'Archived thoughts', 'archived', NULL, NULL);
         INSERT INTO contacts (crow_id, display_name, ed25519_pubkey, secp256k1_pubkey, relay_url, is_blocked) VALUES
            ('crow:sam', 'Sam', 'ed-key', 'secp-key', 'wss://relay.example', 0);
         INSERT INTO dashboard_settings (key, value) VALUES ('theme', 'dark'), ('ui.language', 'en');",
    )
    .unwrap();
}

fn imported(home: &Path, args: &[&str]) -> Value {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    all.push("--json");
    json_of(roost(home, &all))
}

fn skipped(report: &Value, reason_part: &str) -> u64 {
    report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"].as_str().unwrap().contains(reason_part))
        .map(|s| s["count"].as_u64().unwrap())
        .sum()
}

fn listed(home: &Path, kind: &str) -> Vec<Value> {
    let out = json_of(roost(home, &[kind, "list", "--json"]));
    out.as_array().cloned().unwrap_or_else(|| out["items"].as_array().cloned().unwrap_or_default())
}

#[test]
fn a_crow_database_is_imported_once_on_every_machine_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let crow = dir.path().join("crow.db");
    crow_fixture(&crow);
    let (homes, _served) = chain(dir.path(), &["home", "laptop"]);
    let crow = crow.to_str().unwrap();

    let first = imported(&homes[0], &["crow", crow]);
    let added = &first["added"];
    assert_eq!(added["projects"], 2, "{first}");
    assert_eq!(added["memories"], 4, "{first}");
    assert_eq!(added["sources"], 2, "{first}");
    assert_eq!(added["notes"], 1, "{first}");
    assert_eq!(added["blog_posts"], 2, "{first}");
    assert_eq!(added["contacts"], 1, "{first}");
    assert_eq!(added["settings"], 2, "{first}");
    assert_eq!(skipped(&first, "content"), 1, "the empty memory is skipped, naming the field: {first}");

    let again = imported(&homes[0], &["crow", crow]);
    assert_eq!(again["added"], serde_json::json!({}), "a second import adds nothing: {again}");
    assert_eq!(skipped(&again, "already imported"), 12, "{again}");
    assert_eq!(skipped(&again, "already set here"), 2, "{again}");

    // What Crow linked stays linked, in Roost's terms.
    let found = json_of(roost(&homes[0], &["search", "Brandywine", "--json"]));
    let memory = &found["results"][0]["memory"];
    assert_eq!(memory["category"], "preference", "{found}");
    assert_eq!(memory["tags"], serde_json::json!(["garden", "food"]), "{found}");
    let garden = json_of(roost(&homes[0], &["memory", "list", "--project", "Garden", "--json"]));
    assert_eq!(garden["count"], 2, "both garden memories belong to the Garden project: {garden}");

    // The imported rows replicate, and the laptop importing the same
    // database finds every one of them already there.
    sync_wait(&homes[1]);
    let on_laptop = json_of(roost(&homes[1], &["search", "hazelnuts", "--json"]));
    assert_eq!(on_laptop["count"], 1, "{on_laptop}");
    let there = imported(&homes[1], &["crow", crow]);
    assert_eq!(there["added"], serde_json::json!({}), "the laptop adds nothing: {there}");
    sync_wait(&homes[0]);
    let conflicts = json_of(roost(&homes[0], &["conflicts", "list", "--json"]));
    assert_eq!(conflicts, serde_json::json!([]), "importing on two machines makes no conflict");

    // The summary a person reads says the same in words.
    let text = succeeded(roost(&homes[0], &["import", "crow", crow]));
    assert!(text.starts_with("added nothing"), "{text}");
    assert!(text.contains("skipped 12: already imported"), "{text}");
}

#[test]
fn memories_as_json_lines_are_imported_once_and_a_bad_file_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "home"]));
    let lines = dir.path().join("memories.jsonl");
    std::fs::write(
        &lines,
        concat!(
            "{\"content\": \"Likes long walks\", \"tags\": [\"outdoors\"]}\n",
            "\n",
            "{\"content\": \"Likes long walks\", \"tags\": [\"outdoors\"]}\n",
            "{\"id\": \"export-7\", \"content\": \"Reads before sleeping\", \"importance\": 3}\n",
            "{\"content\": \"Too important\", \"importance\": 42}\n",
        ),
    )
    .unwrap();
    let lines = lines.to_str().unwrap();

    let first = imported(&home, &["jsonl", lines]);
    assert_eq!(first["added"]["memories"], 2, "{first}");
    assert_eq!(skipped(&first, "already imported"), 1, "the repeated line is one memory: {first}");
    assert_eq!(skipped(&first, "importance"), 1, "{first}");
    let again = imported(&home, &["jsonl", lines]);
    assert_eq!(again["added"], serde_json::json!({}), "{again}");
    assert_eq!(skipped(&again, "already imported"), 3, "{again}");

    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"content\": \"Fine\"}\nnot json\n").unwrap();
    let out = roost(&home, &["import", "jsonl", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("broken.jsonl:2: not a JSON object"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    let all = listed(&home, "memory");
    assert_eq!(all.len(), 2, "the broken file added nothing: {all:?}");
}
