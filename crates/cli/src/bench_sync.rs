//! `roost bench sync`: how fast replication applies and moves entries.
//!
//! - apply: entries per second through `Store::apply` (signature check,
//!   hash chain, conflict rules, FTS, log), against a raw SQLite baseline
//!   that only inserts the same rows and log records in batched transactions;
//! - catch-up: a fresh `roost serve` receiving a whole history over iroh
//!   from another, and its peak resident memory;
//! - propagation: from an MCP write acknowledged by one gateway until the
//!   row is readable on the other;
//! - with `--netns`, catch-up and propagation again between two network
//!   namespaces, against the loopback figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value, json};

use roost_core::Table;
use roost_core::protocol::SignedEntry;
use roost_instance::Instance;
use roost_store::{Mutation, Store};

use crate::bench::{ServedProcess, Words, percentile_ms};
use crate::out::{note, say};

pub fn run(entries: usize, runs: usize, writes: usize, netns: bool, relay: bool) -> anyhow::Result<()> {
    let (mut apply, mut same_schema, mut minimal) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let r = apply_run(entries, run as u64)?;
        note!(
            "run {run}/{runs}: apply {:.0} entries/s, raw SQLite {:.0} rows/s (same schema), ratio {:.2}",
            r.apply,
            r.same_schema,
            r.apply / r.same_schema
        );
        apply.push(r.apply);
        same_schema.push(r.same_schema);
        minimal.push(r.minimal);
    }
    let loopback = process_runs(entries, runs, writes, None, None)?;
    let (a, b, m) = (median(&mut apply), median(&mut same_schema), median(&mut minimal));
    say!("median of {runs} run(s), {entries} entries:")?;
    say!("  apply              {a:.0} entries/s")?;
    say!("  raw SQLite insert  {b:.0} rows/s, same schema; apply / raw = {:.2}   (target >= 0.9)", a / b)?;
    say!("  raw SQLite insert  {m:.0} rows/s, minimal table; apply / minimal = {:.2}", a / m)?;
    let caught_up = entries as f64 / loopback.catch_up;
    say!(
        "  catch-up over iroh {entries} entries in {:.2} s = {caught_up:.0} entries/s; catch-up / raw = {:.2}   (target >= 0.8)",
        loopback.catch_up,
        caught_up / b
    )?;
    if entries < 1_000_000 {
        say!(
            "  1M entries would take ~{:.0} s at this rate   (target < 40 s; run --entries 1000000)",
            1e6 / caught_up
        )?;
    }
    say!("  receiver peak RSS  {:.1} MiB; {}", loopback.peak_mib, loopback.peak_when)?;
    say!("  propagation        {}   (target p99 < 10 ms)", loopback.propagation())?;
    let mut direct = ("loopback", loopback);
    if netns {
        let wire = crate::bench_netns::Wire::new(2)?;
        let across = process_runs(entries, runs, writes, Some(&wire), None)?;
        say!("between two network namespaces (veth pairs on a bridge), median of {runs} run(s):")?;
        say!(
            "  catch-up           {:.2} s = {:.0} entries/s; namespaces / loopback = {:.2}   (target >= 0.9)",
            across.catch_up,
            entries as f64 / across.catch_up,
            direct.1.catch_up / across.catch_up
        )?;
        say!("  receiver peak RSS  {:.1} MiB", across.peak_mib)?;
        say!("  propagation        {}   (target p99 < 10 ms)", across.propagation())?;
        direct = ("namespaces", across);
    }
    if relay {
        let wire = crate::bench_netns::Wire::new(3)?;
        let relay = crate::bench_netns::Relay::start(&wire, 2)?;
        wire.drop_udp_between(0, 1)?;
        let through = process_runs(entries, runs, writes, Some(&wire), Some(&relay.url))?;
        say!(
            "between two network namespaces with no UDP between them, through `roost relay` in a third, median of {runs} run(s):"
        )?;
        say!(
            "  catch-up           {:.2} s = {:.0} entries/s; relayed / {} = {:.2}",
            through.catch_up,
            entries as f64 / through.catch_up,
            direct.0,
            direct.1.catch_up / through.catch_up
        )?;
        say!("  receiver peak RSS  {:.1} MiB", through.peak_mib)?;
        say!("  propagation        {} (direct: {})", through.propagation(), direct.1.propagation())?;
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// A store of `n` synthetic memories and its log, in `dir`.
fn source(dir: &Path, n: usize, seed: u64) -> anyhow::Result<(Store, Vec<SignedEntry>)> {
    let store = Store::open(&dir.join("source.db"), "01900000-0000-7000-8000-00000000000a", key(1))?;
    write_history(&store, n, seed)?;
    let mut log = Vec::with_capacity(n);
    while log.len() < n {
        log.extend(store.entries_after(log.len() as i64, 10_000)?.into_iter().map(|(_, e)| e));
    }
    Ok((store, log))
}

/// Writes `n` synthetic memories through the door, many to a transaction.
fn write_history(store: &Store, n: usize, seed: u64) -> anyhow::Result<()> {
    let mut words = Words::new(seed);
    let mut written = 0;
    while written < n {
        let count = (n - written).min(10_000);
        let batch = (0..count)
            .map(|_| {
                let fields = json!({"content": words.sentence(12, 40), "tags": [words.word()]});
                Mutation::Create { table: Table::Memories, fields: as_map(fields) }
            })
            .collect();
        store.write_all(batch)?;
        written += count;
    }
    Ok(())
}

fn as_map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// One apply run: entries/s through `Store::apply`, and rows/s of the two
/// raw baselines.
struct ApplyRun {
    apply: f64,
    same_schema: f64,
    minimal: f64,
}

fn apply_run(n: usize, seed: u64) -> anyhow::Result<ApplyRun> {
    let dir = tempfile::tempdir()?;
    let (source, log) = source(dir.path(), n, seed)?;
    let target_path = dir.path().join("target.db");
    let target = Store::open(&target_path, "01900000-0000-7000-8000-00000000000b", key(2))?;
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
    drop((source, target));
    Ok(ApplyRun {
        apply,
        same_schema: same_schema_baseline(&dir.path().join("same.db"), &target_path)?,
        minimal: minimal_baseline(&dir.path().join("raw.db"), &log)?,
    })
}

/// The rows `apply` wrote (memories and their log records), read back and
/// inserted with plain prepared statements into a database with the same
/// schema (tables, indexes, the FTS index and its triggers; not the write
/// door's guards), in transactions of one batch each: what SQLite itself
/// does with exactly these rows.
fn same_schema_baseline(path: &Path, applied: &Path) -> anyhow::Result<f64> {
    use rusqlite::types::Value as Sql;
    let from = rusqlite::Connection::open(applied)?;
    let schema: Vec<String> = from
        .prepare(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite%'
                 AND name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow')
                 AND NOT (type = 'trigger' AND sql LIKE '%roost_write_door%')
             ORDER BY rowid",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let read = |table: &str| -> anyhow::Result<(String, Vec<Vec<Sql>>)> {
        let mut stmt = from.prepare(&format!("SELECT * FROM {table} ORDER BY seq"))?;
        let columns = stmt.column_names().collect::<Vec<_>>().join(", ");
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |r| (0..width).map(|i| r.get::<_, Sql>(i)).collect::<Result<Vec<_>, _>>())?
            .collect::<Result<Vec<_>, _>>()?;
        let slots = (1..=width).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        Ok((format!("INSERT INTO {table} ({columns}) VALUES ({slots})"), rows))
    };
    let (insert_change, changes) = read("changes")?;
    let (insert_memory, memories) = read("memories")?;
    anyhow::ensure!(changes.len() == memories.len(), "one memory per log record");
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    for sql in &schema {
        conn.execute_batch(sql)?;
    }
    let started = Instant::now();
    let batch = roost_core::protocol::MAX_BATCH;
    for (changes, memories) in changes.chunks(batch).zip(memories.chunks(batch)) {
        let tx = conn.transaction()?;
        for (change, memory) in changes.iter().zip(memories) {
            tx.prepare_cached(&insert_change)?.execute(rusqlite::params_from_iter(change))?;
            tx.prepare_cached(&insert_memory)?.execute(rusqlite::params_from_iter(memory))?;
        }
        tx.commit()?;
    }
    Ok(changes.len() as f64 / started.elapsed().as_secs_f64())
}

/// The content and tags of each row and its log record, inserted with plain
/// prepared statements into a minimal table with a two-column FTS index, in
/// transactions of one batch each.
fn minimal_baseline(path: &Path, log: &[SignedEntry]) -> anyhow::Result<f64> {
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

/// Lets the other machines call `roost_store_memory` on the instance at
/// `home` (by its `[federation] peer_tools`), as the propagation writes do.
fn allow_peers_to_write_memories(home: &Path) -> anyhow::Result<()> {
    let path = home.join("config.toml");
    let config = std::fs::read_to_string(&path)?;
    let allowed = config.replacen("peer_tools = [", "peer_tools = [\"roost_store_memory\", ", 1);
    std::fs::write(&path, allowed)?;
    let tools = Instance::open(home)?.config.federation.peer_tools;
    anyhow::ensure!(tools.iter().any(|t| t == "roost_store_memory"), "config.toml lost its peer_tools list");
    Ok(())
}

/// Runs this `roost` binary on `home` (identity commands get a passphrase).
pub(crate) fn roost(home: &Path, args: &[&str]) -> anyhow::Result<()> {
    roost_in(None, home, args)
}

/// [`roost`] inside a network namespace, or here when there is none.
fn roost_in(namespace: Option<&str>, home: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = crate::bench_netns::command_in(namespace, &std::env::current_exe()?)
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

/// What the process runs measured: medians of catch-up seconds and peak RSS,
/// and every propagation latency.
struct ProcessRuns {
    catch_up: f64,
    peak_mib: f64,
    /// Which part of the median run's catch-up the receiver was largest in,
    /// as far as sampling saw.
    peak_when: String,
    latencies: Vec<Duration>,
}

impl ProcessRuns {
    fn propagation(&self) -> String {
        let mut latencies = self.latencies.clone();
        format!(
            "p50 {:.2} ms, p99 {:.2} ms over {} writes",
            percentile_ms(&mut latencies, 0.5),
            percentile_ms(&mut latencies, 0.99),
            latencies.len()
        )
    }
}

fn process_runs(
    n: usize,
    runs: usize,
    writes: usize,
    wire: Option<&crate::bench_netns::Wire>,
    relay: Option<&str>,
) -> anyhow::Result<ProcessRuns> {
    let mut measured = Vec::new();
    for run in 1..=runs {
        let r = process_run(n, writes, wire, relay)?;
        note!(
            "{} run {run}/{runs}: catch-up {:.2} s, receiver peak RSS {:.1} MiB",
            match (wire, relay) {
                (_, Some(_)) => "relayed",
                (Some(_), None) => "namespaces",
                (None, None) => "loopback",
            },
            r.catch_up,
            r.peak_mib
        );
        measured.push(r);
    }
    measured.sort_by(|x, y| x.catch_up.total_cmp(&y.catch_up));
    let mut peaks: Vec<f64> = measured.iter().map(|r| r.peak_mib).collect();
    let peak_mib = median(&mut peaks);
    let latencies = measured.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    let middle = measured.swap_remove(measured.len() / 2);
    Ok(ProcessRuns { catch_up: middle.catch_up, peak_mib, peak_when: middle.peak_when, latencies })
}

/// One catch-up of a fresh receiver, then write propagation latencies,
/// between two real gateways: on loopback, or each in a namespace of `wire`,
/// both naming `relay` in `[sync] relays` when given.
fn process_run(
    n: usize,
    writes: usize,
    wire: Option<&crate::bench_netns::Wire>,
    relay: Option<&str>,
) -> anyhow::Result<ProcessRuns> {
    let dir = tempfile::tempdir()?;
    let homes = same_identity(dir.path(), &["a", "b", "w"])?;
    let (a, b, w) = (&homes[0], &homes[1], &homes[2]);
    if let Some(relay) = relay {
        for home in [a, b] {
            let path = home.join("config.toml");
            let config = std::fs::read_to_string(&path)?;
            std::fs::write(&path, format!("{config}\n[sync]\nrelays = [\"{relay}\"]\n"))?;
        }
    }
    {
        write_history(&Instance::open(a)?.open_store()?, n, 7)?;
    }
    allow_peers_to_write_memories(a)?;
    let namespace = |i: usize| wire.map(|w| w.namespace(i));
    let bind = |i: usize| wire.map_or_else(|| "127.0.0.1:0".to_string(), |w| format!("{}:0", w.machine_address(i)));
    let served_a = ServedProcess::start_in(namespace(0), a, &bind(0))?;
    let served_b = ServedProcess::start_in(namespace(1), b, &bind(1))?;
    // The propagation writes come from a third machine of the chain, w: a
    // client off loopback needs a machine key, and with b's own key this
    // process's direct path would take over b's relayed one at a. a learns
    // w's certificate from its gateway, which then stops.
    {
        let outside = wire.map_or_else(|| "127.0.0.1:0".to_string(), |w| format!("{}:0", w.bridge_address()));
        let served_w = ServedProcess::start_in(None, w, &outside)?;
        roost_in(namespace(0), a, &["instance", "register", &format!("http://{}", served_w.addr)])?;
    }
    let reader = Instance::open(b)?.open_store()?;
    let origin = Instance::open(a)?.id;
    let started = Instant::now();
    roost_in(namespace(1), b, &["instance", "register", &format!("http://{}", served_a.addr)])?;
    // Caught up means every entry applied and search answering from an
    // index that holds them all. The receiver's size is sampled on the way,
    // to say which part of the catch-up its peak came in.
    let (mut applying, mut indexing) = (0.0f64, 0.0f64);
    loop {
        let applied = reader.heads()?.get(&origin).copied().unwrap_or(0);
        let deferred = reader.search_index_deferred()?;
        if applied >= n as u64 && !deferred {
            break;
        }
        let rss = served_b.memory_mib("VmRSS")?;
        if applied < n as u64 {
            applying = applying.max(rss)
        } else {
            indexing = indexing.max(rss)
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "catch-up did not finish in 10 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    let peak_when = format!(
        "largest sampled while applying {applying:.1} MiB, while building the search index at the end {indexing:.1} MiB"
    );
    let catch_up = started.elapsed().as_secs_f64();
    // The first word the history was written with.
    let probe = Words::new(7).word().to_string();
    let found = reader.search_memories(&roost_store::SearchQuery { query: probe, ..Default::default() });
    anyhow::ensure!(found.is_ok_and(|hits| !hits.is_empty()), "search finds the history after the catch-up");
    let peak_mib = served_b.memory_mib("VmHWM")?;
    let writer = Instance::open(w)?;
    let client = roost_federation::client::Connections::new(&writer, Arc::new(|| None));
    let target = reader.instances()?.into_iter().find(|e| e.id == origin).context("b has a registered")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let latencies = runtime.block_on(async {
        let mut latencies = Vec::with_capacity(writes);
        for i in 0..writes {
            let args = as_map(json!({"content": format!("propagation probe {i}")}));
            let written = client
                .call(&target, "roost_store_memory", args, Duration::from_secs(10))
                .await
                .with_context(|| format!("propagation write {i}"))?;
            let acknowledged = Instant::now();
            let id = written["id"].as_str().context("the write's answer names its id")?.to_string();
            while reader.get(Table::Memories, &id).is_err() {
                anyhow::ensure!(acknowledged.elapsed() < Duration::from_secs(10), "write {i} never arrived");
                std::thread::sleep(Duration::from_micros(100));
            }
            latencies.push(acknowledged.elapsed());
        }
        client.close().await;
        anyhow::Ok(latencies)
    })?;
    drop((served_a, served_b));
    Ok(ProcessRuns { catch_up, peak_mib, peak_when, latencies })
}
