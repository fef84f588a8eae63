//! `roost bench sync`: how fast replication applies and moves entries.
//!
//! - apply: entries per second through `Store::apply` (signature check,
//!   hash chain, conflict rules, FTS, log), against a raw SQLite baseline
//!   that only inserts the same rows and log records in batched transactions;
//! - catch-up: a fresh `roost serve` receiving a whole history over iroh
//!   from another, and its peak resident memory;
//! - propagation: from an MCP write acknowledged by one gateway until the
//!   row is readable on the other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Map, Value, json};

use roost_core::Table;
use roost_core::protocol::SignedEntry;
use roost_instance::Instance;
use roost_store::{Mutation, Store};

use crate::bench::{ServedProcess, Words, percentile_ms};
use crate::out::{note, say};

pub fn run(entries: usize, runs: usize, writes: usize) -> anyhow::Result<()> {
    let mut apply = Vec::new();
    let mut baseline = Vec::new();
    for run in 1..=runs {
        let (a, b) = apply_run(entries, run as u64)?;
        note!("run {run}/{runs}: apply {a:.0} entries/s, raw SQLite {b:.0} rows/s, ratio {:.2}", a / b);
        apply.push(a);
        baseline.push(b);
    }
    let (catch_up, rss, mut latencies) = process_run(entries, writes)?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut apply), median(&mut baseline));
    say!("median of {runs} run(s), {entries} entries:")?;
    say!("  apply              {a:.0} entries/s   (target >= 50,000)")?;
    say!("  raw SQLite insert  {b:.0} rows/s; apply / raw = {:.2}   (target >= 0.5)", a / b)?;
    say!(
        "  catch-up over iroh {entries} entries in {:.2} s = {:.0} entries/s; 1M would take ~{:.0} s   (target < 40 s)",
        catch_up,
        entries as f64 / catch_up,
        1_000_000.0 * catch_up / entries as f64
    )?;
    say!("  receiver peak RSS  {rss:.1} MiB")?;
    say!(
        "  propagation        p50 {:.2} ms, p99 {:.2} ms over {writes} writes   (target p99 < 10 ms)",
        percentile_ms(&mut latencies, 0.5),
        percentile_ms(&mut latencies, 0.99)
    )?;
    Ok(())
}

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// A store of `n` synthetic memories and its log, in `dir`.
fn source(dir: &Path, n: usize, seed: u64) -> anyhow::Result<(Store, Vec<SignedEntry>)> {
    let store = Store::open(&dir.join("source.db"), "01900000-0000-7000-8000-00000000000a", key(1))?;
    let mut words = Words::new(seed);
    for _ in 0..n {
        let fields = json!({"content": words.sentence(12, 40), "tags": [words.word()]});
        store.write(Mutation::Create { table: Table::Memories, fields: as_map(fields) })?;
    }
    let mut log = Vec::with_capacity(n);
    while log.len() < n {
        log.extend(store.entries_after(log.len() as i64, 10_000)?.into_iter().map(|(_, e)| e));
    }
    Ok((store, log))
}

fn as_map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Entries/s through `Store::apply`, and rows/s of the raw baseline.
fn apply_run(n: usize, seed: u64) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let (source, log) = source(dir.path(), n, seed)?;
    let target = Store::open(&dir.path().join("target.db"), "01900000-0000-7000-8000-00000000000b", key(2))?;
    target.register_instance(&roost_store::InstanceEntry {
        id: source.origin().to_string(),
        name: "source".into(),
        role: roost_core::Role::Home,
        addresses: Vec::new(),
        certificate: String::new(),
        signing_key: roost_core::hex::encode(key(1).verifying_key().as_bytes()),
        encryption_key: "00".repeat(32),
        version: None,
        last_seen: None,
        status: roost_store::Standing::Active,
        created_at: String::new(),
    })?;
    let started = Instant::now();
    for batch in log.chunks(roost_core::protocol::MAX_BATCH) {
        let verdicts = target.apply(batch)?;
        anyhow::ensure!(verdicts.iter().all(|v| *v == roost_store::Verdict::Applied), "apply refused: {verdicts:?}");
    }
    let apply = n as f64 / started.elapsed().as_secs_f64();
    Ok((apply, raw_baseline(&dir.path().join("raw.db"), &log)?))
}

/// The same rows and log records inserted with plain prepared statements, in
/// transactions of one batch each, into a table with the same FTS index.
fn raw_baseline(path: &Path, log: &[SignedEntry]) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE memories (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, content TEXT, tags TEXT);
         CREATE VIRTUAL TABLE memories_fts USING fts5(content, tags, content = 'memories', content_rowid = 'seq');
         CREATE TRIGGER fts AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts (rowid, content, tags) VALUES (new.seq, new.content, new.tags); END;
         CREATE TABLE log (seq INTEGER PRIMARY KEY, origin TEXT, origin_seq INTEGER, body BLOB, UNIQUE (origin, origin_seq));",
    )?;
    let started = Instant::now();
    for batch in log.chunks(roost_core::protocol::MAX_BATCH) {
        let tx = conn.transaction()?;
        for signed in batch {
            let row: Value = serde_json::from_str(&signed.entry.row)?;
            tx.prepare_cached("INSERT INTO memories (id, content, tags) VALUES (?1, ?2, ?3)")?.execute((
                signed.entry.row_id.as_str(),
                row["content"].as_str(),
                row["tags"].to_string(),
            ))?;
            tx.prepare_cached("INSERT INTO log (origin, origin_seq, body) VALUES (?1, ?2, ?3)")?.execute((
                &signed.entry.origin,
                signed.entry.seq as i64,
                &signed.entry.row,
            ))?;
        }
        tx.commit()?;
    }
    Ok(log.len() as f64 / started.elapsed().as_secs_f64())
}

/// Runs this `roost` binary on `home` (identity commands get a passphrase).
pub(crate) fn roost(home: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("ROOST_PASSPHRASE", "benchmark passphrase")
        .output()?;
    anyhow::ensure!(out.status.success(), "roost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Instance homes under `root`, one per name, sharing the first one's identity.
pub(crate) fn same_identity(root: &Path, names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let homes: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    let file = root.join("identity.txt");
    let file = file.to_str().context("path")?;
    roost(&homes[0], &["init", "--name", names[0]])?;
    roost(&homes[0], &["identity", "export", "--out", file])?;
    for (home, name) in homes.iter().zip(names).skip(1) {
        roost(home, &["init", "--name", name])?;
        roost(home, &["identity", "import", file, "--force"])?;
    }
    Ok(homes)
}

/// Catch-up seconds and peak RSS (MiB) of a fresh receiver, then write
/// propagation latencies, between two real gateways.
fn process_run(n: usize, writes: usize) -> anyhow::Result<(f64, f64, Vec<Duration>)> {
    let dir = tempfile::tempdir()?;
    let homes = same_identity(dir.path(), &["a", "b"])?;
    let (a, b) = (&homes[0], &homes[1]);
    {
        let store = Instance::open(a)?.open_store()?;
        let mut words = Words::new(7);
        for _ in 0..n {
            store.write(Mutation::Create {
                table: Table::Memories,
                fields: as_map(json!({"content": words.sentence(12, 40)})),
            })?;
        }
    }
    let served_a = ServedProcess::start(a)?;
    let served_b = ServedProcess::start(b)?;
    let reader = Instance::open(b)?.open_store()?;
    let origin = Instance::open(a)?.id;
    let started = Instant::now();
    roost(b, &["instance", "register", &format!("http://{}", served_a.addr)])?;
    while reader.heads()?.get(&origin).copied().unwrap_or(0) < n as u64 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "catch-up did not finish in 10 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    let catch_up = started.elapsed().as_secs_f64();
    let peak_mib = served_b.memory_mib("VmHWM")?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let latencies = runtime.block_on(async {
        let client = ClientConfig::default()
            .serve(StreamableHttpClientTransport::from_uri(format!("http://{}/mcp", served_a.addr)))
            .await
            .context("connecting the MCP client")?;
        let mut latencies = Vec::with_capacity(writes);
        for i in 0..writes {
            let args = as_map(json!({"content": format!("propagation probe {i}")}));
            let result =
                client.call_tool(CallToolRequestParams::new("roost_store_memory").with_arguments(args)).await?;
            let acknowledged = Instant::now();
            let text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default();
            let id = serde_json::from_str::<Value>(&text)?["id"].as_str().unwrap_or_default().to_string();
            while reader.get(Table::Memories, &id).is_err() {
                anyhow::ensure!(acknowledged.elapsed() < Duration::from_secs(10), "write {i} never arrived");
                std::thread::sleep(Duration::from_micros(100));
            }
            latencies.push(acknowledged.elapsed());
        }
        client.cancel().await.ok();
        anyhow::Ok(latencies)
    })?;
    drop((served_a, served_b));
    Ok((catch_up, peak_mib, latencies))
}
