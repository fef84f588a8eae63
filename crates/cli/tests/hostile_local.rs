//! Hostile neighbours on this machine, through the real `roost` binary:
//! other users of the host (the files), a witness started on a served home,
//! text that other clients and machines stored (the terminal), and a reader
//! that closes the pipe.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Served, connect_stdio, json_of, refused, roost, roost_bin, succeeded, until};
use serde_json::json;

/// Clears the screen, then asks the terminal (OSC 52) to put "pwned" on the
/// clipboard, then a C1 control sequence introducer: what an MCP client may
/// store and a careless `cat` would obey.
const HOSTILE: &str = "heron \u{1b}[2J\u{1b}]52;c;cHduZWQ=\u{7} nests \u{9b}31m by the river";
/// How `roost` shows [`HOSTILE`] to people.
const SHOWN: &str = "heron \\u{1b}[2J\\u{1b}]52;c;cHduZWQ=\\u{7} nests \\u{9b}31m by the river";

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every entry under `dir`, the directory itself first.
fn everything(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            found.extend(everything(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Directories 0700 and everything else 0600, all through the home.
fn assert_owner_only(home: &Path) {
    for path in everything(home) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{} is {:o}", path.display(), mode(&path));
    }
}

/// The files the issue names, which must exist while a gateway serves.
const NAMED: [&str; 7] =
    ["roost.db", "roost.db-wal", "roost.db-shm", "lease.json", "lease-events.jsonl", "config.toml", "instances.json"];

/// `roost serve` on `home` with its stderr kept in `log`.
fn serve_logged(home: &Path, log: &Path) -> Served {
    let mut child = Command::new(roost_bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--name", "laptop", "--home"])
        .arg(home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string();
    assert!(!addr.is_empty(), "unexpected first line {line:?}: {}", fs::read_to_string(log).unwrap());
    Served { child, addr, home: home.to_path_buf() }
}

fn wait_for_named_files(home: &Path) {
    until("the database, its WAL and SHM and the lease's files", || NAMED.iter().all(|f| home.join(f).exists()));
}

#[test]
fn a_new_home_is_owner_only_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let log = dir.path().join("serve.log");
    let served = serve_logged(&home, &log);
    wait_for_named_files(&home);
    assert_owner_only(&home);
    assert!(!fs::read_to_string(&log).unwrap().contains("warning: other users"), "nothing to tighten");
    drop(served);
}

#[test]
fn a_home_others_could_read_is_made_owner_only_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    set_mode(&home, 0o755);
    let out = roost(&home, &["init", "--name", "laptop"]);
    let warning = stderr(&out);
    succeeded(out);
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(warning.contains("the directory itself") && warning.contains("owner-only"), "{warning}");
    assert_owner_only(&home);

    // What an older Roost, run under umask 022, leaves behind: a gateway
    // killed with its WAL and SHM in place, everything 0644 and 0755.
    let first = serve_logged(&home, &dir.path().join("first.log"));
    succeeded(roost(&home, &["memory", "add", "The heron nests by the river"]));
    wait_for_named_files(&home);
    drop(first);
    for path in everything(&home) {
        set_mode(&path, if path.is_dir() { 0o755 } else { 0o644 });
    }
    assert!(NAMED.iter().all(|f| home.join(f).exists()), "the killed gateway left its files");

    let log = dir.path().join("second.log");
    let second = serve_logged(&home, &log);
    wait_for_named_files(&home);
    assert_owner_only(&home);
    let logged = fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = logged.lines().filter(|l| l.contains("warning: other users")).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {logged}");
    for name in NAMED.iter().chain(&["the directory itself", "keys/machine.sealed"]) {
        assert!(warnings[0].contains(name), "the warning names {name}: {}", warnings[0]);
    }
    assert!(second.get("/health").is_some_and(|h| h["status"] == "ok"), "and it serves");
}

/// `hostile_http.rs` refuses a second `serve`; a witness takes the same lock.
#[test]
fn a_witness_on_a_served_home_is_refused_and_the_gateway_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let first = Served::start(&home);
    let pid = first.child.id().to_string();
    let out = roost(&home, &["witness", "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success(), "a witness must not run beside the gateway");
    assert!(out.stdout.is_empty(), "it never announced an address: {:?}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("pid {pid}")) && err.contains(&first.addr), "names pid and address: {err}");
    assert!(first.get("/health").is_some_and(|h| h["status"] == "ok"), "the gateway still answers");
    let status = json_of(roost(&home, &["status", "--json"]));
    assert_eq!(status["gateway"]["running"], true, "the CLI still finds it: {status}");
    assert_eq!(first.stop().code(), Some(0), "and stops cleanly");
}

#[tokio::test]
async fn stored_control_characters_are_printed_escaped_and_json_stays_faithful() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "laptop"]));
    let client = connect_stdio(&home).await;
    let stored = common::ok(&client, "roost_store_memory", json!({"content": HOSTILE, "importance": 9})).await;
    let id = stored["id"].as_str().unwrap().to_string();
    client.cancel().await.unwrap();

    let raw = |c: char| c.is_control() && c != '\n';
    for args in [vec!["memory", "get", &id], vec!["memory", "list"], vec!["memory", "search", "heron"]] {
        let shown = succeeded(roost(&home, &args));
        assert!(!shown.chars().any(raw), "{args:?} printed a raw control character: {shown:?}");
        let expected = if args[1] == "search" { "\\u{1b}]52;c;cHduZWQ=\\u{7}" } else { SHOWN };
        assert!(shown.contains(expected), "{args:?} shows the escapes: {shown}");
    }
    let got = json_of(roost(&home, &["memory", "get", &id, "--json"]));
    assert_eq!(got["content"], HOSTILE, "--json gives back exactly what was stored");
    let text = succeeded(roost(&home, &["memory", "list", "--json"]));
    assert!(!text.chars().any(raw), "--json escapes even DEL and C1: {text:?}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["items"][0]["content"], HOSTILE);

    // NUL is refused at validation, but a row an older Roost stored, on this
    // machine or another, may hold one: write it as the store's own door would.
    let db = rusqlite::Connection::open(home.join("roost.db")).unwrap();
    db.create_scalar_function("roost_write_door", 0, rusqlite::functions::FunctionFlags::SQLITE_UTF8, |_| Ok(1))
        .unwrap();
    db.execute("UPDATE memories SET content = ?1 WHERE id = ?2", ["before\0after \u{7f}", id.as_str()]).unwrap();
    drop(db);
    let shown = succeeded(roost(&home, &["memory", "get", &id]));
    assert!(shown.starts_with("before\\u{0}after \\u{7f}\n"), "{shown:?}");
    assert_eq!(json_of(roost(&home, &["memory", "get", &id, "--json"]))["content"], "before\0after \u{7f}");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "laptop"]));
    // Longer than a pipe holds, so `head` is gone before it is all written.
    let long = "heron ".repeat(20_000);
    let id = common::add(&home, &long);
    for _ in 0..3 {
        common::add(&home, "Herons eat fish");
    }

    let pipeline = format!("set -o pipefail; '{}' --home '{}' memory get {id} | head -c1", roost_bin(), home.display());
    let out = Command::new("bash").args(["-c", &pipeline]).output().unwrap();
    assert_eq!(out.stdout, b"h");
    assert_eq!(stderr(&out), "", "no panic, no message");
    assert!(out.status.success(), "status 0 (under pipefail, roost's own): {:?}", out.status);

    // A reader gone before the first byte: every write fails.
    for args in [
        vec!["memory", "get", &id],
        vec!["memory", "list"],
        vec!["memory", "search", "heron"],
        vec!["memory", "list", "--json"],
        vec!["status"],
        vec!["whoami"],
        vec!["machines"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(roost_bin()).arg("--home").arg(&home).args(&args).stdout(writer).output().unwrap();
        assert_eq!(stderr(&out), "", "{args:?}: no panic, no message");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

#[tokio::test]
async fn control_characters_in_single_line_fields_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "laptop"]));
    for (flag, value, field) in [
        ("--category", "work\u{1b}[2J", "category"),
        ("--tags", "birds,river\u{1b}]52;c;eA==\u{7}", "tags"),
        ("--source", "chat\u{9b}31m", "source"),
    ] {
        let out = roost(&home, &["memory", "add", "The heron nests by the river", flag, value]);
        assert!(!out.status.success(), "{flag} {value:?} was accepted");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("field `{field}`")) && err.contains("control character U+"), "{err}");
        assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "the error is printable: {err:?}");
    }
    for (args, what) in [(vec!["rename", "lap\u{1b}top"], "rename"), (vec!["init", "--name", "a\u{7}b"], "init")] {
        let target = if what == "init" { dir.path().join("other") } else { home.clone() };
        let out = roost(&target, &args);
        assert!(!out.status.success() && stderr(&out).contains("without control characters"), "{what}: {out:?}");
    }

    let client = connect_stdio(&home).await;
    for (tool, args, field) in [
        ("roost_store_memory", json!({"content": "x", "category": "a\u{0}b"}), "category"),
        ("roost_store_memory", json!({"content": "x", "tags": ["ok", "b\u{1b}c"]}), "tags"),
        ("roost_store_memory", json!({"content": "a\u{0}b"}), "content"),
        ("roost_create_project", json!({"name": "roost\u{1b}]0;owned\u{7}"}), "name"),
        ("roost_create_contact", json!({"name": "Ada\u{0}"}), "name"),
        ("roost_create_note", json!({"title": "t\u{8}", "body": "x"}), "title"),
    ] {
        let err = refused(&client, tool, args).await;
        assert!(err.contains(&format!("field `{field}`")), "{tool} names {field}: {err}");
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }
    let kept = common::ok(&client, "roost_store_memory", json!({"content": "tab\there\nline \u{1b}[1mbold"})).await;
    assert_eq!(kept["content"], "tab\there\nline \u{1b}[1mbold", "free text keeps its control characters");
    client.cancel().await.unwrap();
}
