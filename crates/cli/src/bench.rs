//! `roost bench store`: write-door rate, FTS search latency, MCP round trip,
//! memories stored over stdio MCP one per call and in batches, and idle
//! memory of `roost serve`, each run on a fresh temporary instance filled
//! with synthetic memories. Reports every run and the medians.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Map, Value, json};

use crate::out::{self, note, say};
use roost_core::Table;
use roost_gateway::Gateway;
use roost_instance::Instance;
use roost_store::{Mutation, SearchQuery, Store};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Store, search and serve N synthetic memories.
    Store {
        /// Memories written per run.
        #[arg(long, default_value_t = 100_000)]
        memories: usize,
        /// FTS queries timed per run.
        #[arg(long, default_value_t = 2000)]
        searches: usize,
        /// MCP round trips timed per run.
        #[arg(long, default_value_t = 500)]
        mcp_calls: usize,
        /// Independent runs; medians are reported across them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Replication: apply rate against raw SQLite, catch-up over iroh, propagation latency.
    Sync {
        /// Entries in the history.
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Writes timed for propagation.
        #[arg(long, default_value_t = 500)]
        writes: usize,
        /// Also measure catch-up and propagation between two network
        /// namespaces joined by veth pairs (needs root and iproute2).
        #[arg(long)]
        netns: bool,
        /// Also measure them between two network namespaces that cannot
        /// reach each other over UDP, through `roost relay` in a third
        /// (needs root, iproute2 and iptables).
        #[arg(long)]
        relay: bool,
    },
    /// Federation: roost_search_all across three gateways with their own memories.
    Federation {
        /// Memories on each instance.
        #[arg(long, default_value_t = 10_000)]
        memories: usize,
        /// Searches timed per run.
        #[arg(long, default_value_t = 300)]
        searches: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The agent: inbound → reply latency, sustained messages/s, and the reply gap at failover.
    Agent {
        /// Messages timed one at a time, to the holder and then to a standby.
        #[arg(long, default_value_t = 300)]
        messages: usize,
        /// Messages posted at once for the sustained rate.
        #[arg(long, default_value_t = 2000)]
        burst: usize,
        /// Holders killed with -9 (each restarted before the next).
        #[arg(long, default_value_t = 5)]
        kills: usize,
    },
    /// The awake role: unplanned failover after kill -9, and the pause of a planned handoff.
    Failover {
        /// Holders killed (each restarted before the next).
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Planned handoffs (`roost wakeup`).
        #[arg(long, default_value_t = 50)]
        handoffs: usize,
        /// The lease TTL, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        ttl_ms: u64,
        /// Hold the lease in this etcd server (client URL) instead of by the machines' votes.
        #[arg(long, value_name = "URL")]
        etcd: Option<String>,
    },
    /// The pool: time from a transfer request to the first reply from the new owner.
    Pool {
        /// Transfers timed.
        #[arg(long, default_value_t = 100)]
        transfers: usize,
    },
    /// Mint and verify machine tokens (signature, expiry and replay checks).
    Tokens {
        /// Tokens per run.
        #[arg(long, default_value_t = 50_000)]
        count: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
struct RunResult {
    insert_per_sec: f64,
    search_p50_ms: f64,
    search_p99_ms: f64,
    mcp_search_p50_ms: f64,
    mcp_search_p99_ms: f64,
    stdio_store_single_per_sec: f64,
    stdio_store_batch_per_sec: f64,
    idle_rss_mib: f64,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let (memories, searches, mcp_calls, runs, json) = match command {
        BenchCommand::Store { memories, searches, mcp_calls, runs, json } => {
            (memories, searches, mcp_calls, runs, json)
        }
        BenchCommand::Tokens { count, runs } => return tokens(count, runs),
        BenchCommand::Sync { entries, runs, writes, netns, relay } => {
            return crate::bench_sync::run(entries, runs, writes, netns, relay);
        }
        BenchCommand::Failover { kills, handoffs, ttl_ms, etcd } => {
            return crate::bench_failover::run(kills, handoffs, ttl_ms, etcd.as_deref());
        }
        BenchCommand::Agent { messages, burst, kills } => return crate::bench_agent::run(messages, burst, kills),
        BenchCommand::Pool { transfers } => return crate::bench_pool::run(transfers),
        BenchCommand::Federation { memories, searches, runs } => {
            return crate::bench_federation::run(memories, searches, runs);
        }
    };
    if cfg!(debug_assertions) {
        note!("roost: warning: this is a debug build; benchmark a release build (cargo run --release -- bench store)");
    }
    let mut results = Vec::new();
    for run in 1..=runs {
        note!("run {run}/{runs}: {memories} memories");
        let result = one_run(memories, searches, mcp_calls, run as u64)?;
        results.push(result);
    }
    let median = |f: fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let summary = json!({
        "memories": memories,
        "runs": results,
        "median": {
            "insert_per_sec": median(|r| r.insert_per_sec).round(),
            "search_p50_ms": median(|r| r.search_p50_ms),
            "search_p99_ms": median(|r| r.search_p99_ms),
            "mcp_search_p50_ms": median(|r| r.mcp_search_p50_ms),
            "mcp_search_p99_ms": median(|r| r.mcp_search_p99_ms),
            "stdio_store_single_per_sec": median(|r| r.stdio_store_single_per_sec).round(),
            "stdio_store_batch_per_sec": median(|r| r.stdio_store_batch_per_sec).round(),
            "idle_rss_mib": median(|r| r.idle_rss_mib),
        },
        "targets": {"search_p50_ms": "< 5", "idle_rss_mib": "< 20"},
    });
    if json {
        out::json(&summary)?;
    } else {
        let rows = results.iter().enumerate().map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                format!("{:.0}", r.insert_per_sec),
                format!("{:.3}", r.search_p50_ms),
                format!("{:.3}", r.search_p99_ms),
                format!("{:.3}", r.mcp_search_p50_ms),
                format!("{:.3}", r.mcp_search_p99_ms),
                format!("{:.0}", r.stdio_store_single_per_sec),
                format!("{:.0}", r.stdio_store_batch_per_sec),
                format!("{:.1}", r.idle_rss_mib),
            ]
        });
        let header = [
            "RUN",
            "WRITES/S",
            "FTS P50 MS",
            "FTS P99 MS",
            "MCP P50 MS",
            "MCP P99 MS",
            "STDIO 1/CALL/S",
            "STDIO BATCH/S",
            "IDLE RSS MIB",
        ];
        out::table(&header, rows)?;
        let m = &summary["median"];
        say!("median of {runs} run(s), {memories} memories:")?;
        say!("  write door         {} memories/s", m["insert_per_sec"])?;
        say!(
            "  FTS search         p50 {:.3} ms, p99 {:.3} ms   (target p50 < 5 ms)",
            num(&m["search_p50_ms"]),
            num(&m["search_p99_ms"])
        )?;
        say!(
            "  MCP search (HTTP)  p50 {:.3} ms, p99 {:.3} ms",
            num(&m["mcp_search_p50_ms"]),
            num(&m["mcp_search_p99_ms"])
        )?;
        let (single, batch) = (num(&m["stdio_store_single_per_sec"]), num(&m["stdio_store_batch_per_sec"]));
        say!(
            "  MCP store (stdio)  {single} memories/s one per call, {batch} memories/s in batches of {}   ({:.1}x)",
            roost_mcp::catalog::MAX_BATCH,
            batch / single
        )?;
        say!("  idle RSS of serve  {:.1} MiB   (target < 20 MiB)", num(&m["idle_rss_mib"]))?;
    }
    Ok(())
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn one_run(memories: usize, searches: usize, mcp_calls: usize, seed: u64) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let instance = Arc::new(Instance::init(&home, "bench")?);
    let store = Arc::new(instance.open_store()?);
    let mut words = Words::new(seed);

    let started = Instant::now();
    for _ in 0..memories {
        let mut fields = Map::new();
        fields.insert("content".into(), Value::String(words.sentence(12, 40)));
        fields.insert(
            "category".into(),
            json!(["general", "preference", "project", "person", "learning"][words.below(5)]),
        );
        fields.insert("importance".into(), json!(1 + words.below(10)));
        fields.insert("tags".into(), json!([words.word(), words.word()]));
        store.write(Mutation::Create { table: Table::Memories, fields })?;
    }
    let insert_per_sec = memories as f64 / started.elapsed().as_secs_f64();

    let queries: Vec<String> = (0..searches.max(mcp_calls)).map(|_| words.query()).collect();
    let mut search_times = Vec::with_capacity(searches);
    for q in queries.iter().take(searches) {
        let t = Instant::now();
        store.search_memories(&SearchQuery { query: q.clone(), limit: 10, ..Default::default() })?;
        search_times.push(t.elapsed());
    }

    let mcp_times = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(mcp_round_trips(store.clone(), instance, &queries[..mcp_calls]))?;
    drop(store);
    let (stdio_store_single_per_sec, stdio_store_batch_per_sec) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(stdio_store_rates(&home, mcp_calls))?;

    let idle_rss_mib = idle_rss(&home)?;
    Ok(RunResult {
        insert_per_sec,
        search_p50_ms: percentile_ms(&mut search_times, 0.50),
        search_p99_ms: percentile_ms(&mut search_times, 0.99),
        mcp_search_p50_ms: percentile_ms(&mut mcp_times.clone(), 0.50),
        mcp_search_p99_ms: percentile_ms(&mut mcp_times.clone(), 0.99),
        stdio_store_single_per_sec,
        stdio_store_batch_per_sec,
        idle_rss_mib,
    })
}

async fn mcp_round_trips(
    store: Arc<Store>,
    instance: Arc<Instance>,
    queries: &[String],
) -> anyhow::Result<Vec<Duration>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::new(instance, store, addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, None, async move {
        let _ = stopped.await;
    }));
    let client = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp")))
        .await
        .context("connecting the MCP client")?;
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let args = json!({"query": q, "limit": 10}).as_object().cloned().unwrap_or_default();
        let t = Instant::now();
        let result = client.call_tool(CallToolRequestParams::new("roost_search_memories").with_arguments(args)).await?;
        times.push(t.elapsed());
        anyhow::ensure!(result.is_error != Some(true), "search failed over MCP: {result:?}");
    }
    client.cancel().await?;
    let _ = stop.send(());
    server.await??;
    Ok(times)
}

/// Memories per second stored through `roost mcp` on `home`, as a client
/// that launches it sees them: `calls` calls of `roost_store_memory`, then as
/// many memories by `roost_store_memories` in full batches (at least one).
async fn stdio_store_rates(home: &std::path::Path, calls: usize) -> anyhow::Result<(f64, f64)> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("--home").arg(home).arg("mcp").env("RUST_LOG", "warn");
    let client = ClientConfig::default().serve(TokioChildProcess::new(command)?).await.context("starting roost mcp")?;
    let memory = |i: usize| json!({"content": format!("stdio memory {i} about the garden"), "importance": 1 + i % 10});
    let started = Instant::now();
    for i in 0..calls {
        let args = memory(i).as_object().cloned().unwrap_or_default();
        let result = client.call_tool(CallToolRequestParams::new("roost_store_memory").with_arguments(args)).await?;
        anyhow::ensure!(result.is_error != Some(true), "store failed over stdio: {result:?}");
    }
    let single = calls as f64 / started.elapsed().as_secs_f64();
    let batch = roost_mcp::catalog::MAX_BATCH;
    let batches = calls.div_ceil(batch).max(1);
    let started = Instant::now();
    for b in 0..batches {
        let memories: Vec<Value> = (b * batch..(b + 1) * batch).map(memory).collect();
        let args = json!({"memories": memories}).as_object().cloned().unwrap_or_default();
        let result = client.call_tool(CallToolRequestParams::new("roost_store_memories").with_arguments(args)).await?;
        anyhow::ensure!(result.is_error != Some(true), "batch store failed over stdio: {result:?}");
    }
    let batched = (batches * batch) as f64 / started.elapsed().as_secs_f64();
    client.cancel().await?;
    Ok((single, batched))
}

/// Starts `roost serve` on `home`, waits until it listens and settles, and
/// reads its resident set size.
fn idle_rss(home: &std::path::Path) -> anyhow::Result<f64> {
    let served = ServedProcess::start(home)?;
    std::thread::sleep(Duration::from_secs(2));
    let rss = served.memory_mib("VmRSS")?;
    Command::new("kill").args(["-TERM", &served.child.id().to_string()]).status()?;
    Ok(rss)
}

/// A `roost serve` child on a free loopback port, killed when dropped.
pub(crate) struct ServedProcess {
    pub child: std::process::Child,
    pub addr: String,
}

impl ServedProcess {
    pub(crate) fn start(home: &std::path::Path) -> anyhow::Result<ServedProcess> {
        ServedProcess::start_at(home, "127.0.0.1:0")
    }

    /// `roost serve` on `bind` (a restarted machine keeps its address, which
    /// the others have registered).
    pub(crate) fn start_at(home: &std::path::Path, bind: &str) -> anyhow::Result<ServedProcess> {
        ServedProcess::start_in(None, home, bind)
    }

    /// `roost serve` on `bind` inside a network namespace (see `bench_netns`).
    pub(crate) fn start_in(
        namespace: Option<&str>,
        home: &std::path::Path,
        bind: &str,
    ) -> anyhow::Result<ServedProcess> {
        ServedProcess::spawn(namespace, home, bind, Stdio::inherit(), Command::spawn)
    }

    /// [`ServedProcess::start`] with its log thrown away (`roost demo`
    /// shows what happens; the log would only interleave with it).
    /// `spawn` starts the prepared command, so a caller can account for
    /// the child from the moment it exists.
    pub(crate) fn start_quiet(
        home: &std::path::Path,
        spawn: impl FnOnce(&mut Command) -> std::io::Result<std::process::Child>,
    ) -> anyhow::Result<ServedProcess> {
        ServedProcess::spawn(None, home, "127.0.0.1:0", Stdio::null(), spawn)
    }

    fn spawn(
        namespace: Option<&str>,
        home: &std::path::Path,
        bind: &str,
        log: Stdio,
        spawn: impl FnOnce(&mut Command) -> std::io::Result<std::process::Child>,
    ) -> anyhow::Result<ServedProcess> {
        let mut command = crate::bench_netns::command_in(namespace, &std::env::current_exe()?);
        command
            .args(["serve", "--bind", bind, "--home"])
            .arg(home)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = spawn(&mut command)?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("serve stdout")?).read_line(&mut line)?;
        let addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next());
        let addr = addr.with_context(|| format!("roost serve did not start: {line:?}"))?.to_string();
        Ok(ServedProcess { child, addr })
    }

    /// A memory figure from `/proc/PID/status` (`VmRSS`, `VmHWM`), in MiB.
    pub(crate) fn memory_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("{field} missing from /proc status"))?;
        Ok(kib / 1024.0)
    }
}

impl Drop for ServedProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub(crate) fn percentile_ms(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    let index = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[index].as_secs_f64() * 1000.0
}

/// Deterministic synthetic text: a 5,000-word vocabulary with a skewed
/// (Zipf-like) frequency, so some words are common and most are rare.
pub(crate) struct Words {
    state: u64,
    vocabulary: Vec<String>,
}

impl Words {
    pub(crate) fn new(seed: u64) -> Words {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "bo", "da", "fe", "gu", "hi", "ja", "ko", "li", "mo",
            "nu", "pa", "re", "si", "tu", "wo",
        ];
        let mut vocabulary = Vec::with_capacity(5000);
        for i in 0..5000usize {
            let mut w = String::new();
            let mut n = i + 24;
            while n > 0 {
                w.push_str(SYLLABLES[n % 24]);
                n /= 24;
            }
            vocabulary.push(w);
        }
        Words { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, vocabulary }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn word(&mut self) -> &str {
        let index = (self.vocabulary.len() as f64 * self.unit().powf(2.5)) as usize;
        &self.vocabulary[index.min(self.vocabulary.len() - 1)]
    }

    pub(crate) fn sentence(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below(max - min + 1);
        (0..n).map(|_| self.word().to_string()).collect::<Vec<_>>().join(" ")
    }

    /// One or two words drawn uniformly from the vocabulary: a mix of common
    /// and rare terms, as an agent's queries are.
    pub(crate) fn query(&mut self) -> String {
        let words = 1 + self.below(2);
        let picks: Vec<usize> = (0..words).map(|_| self.below(self.vocabulary.len())).collect();
        picks.iter().map(|&i| self.vocabulary[i].as_str()).collect::<Vec<_>>().join(" ")
    }
}

/// Tokens minted and verified per second, each run on fresh tokens; the
/// verifier checks signature, audience, lifetime and replay as the gateway does.
fn tokens(count: usize, runs: usize) -> anyhow::Result<()> {
    use roost_identity::token::{Issuer, Token, TokenVerifier};
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let issuer = roost_core::RowId::v7(1, rand::random()).to_string();
    let audience = roost_core::RowId::v7(2, rand::random()).to_string();
    let now = roost_instance::unix_now();
    let (mut minted, mut verified) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let started = Instant::now();
        let texts: Vec<String> = (0..count)
            .map(|_| {
                let t = Token {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    issued_at: now,
                    expires_at: now + 300,
                    nonce: rand::random(),
                };
                t.sign(&key).expect("valid ids")
            })
            .collect();
        minted.push(count as f64 / started.elapsed().as_secs_f64());
        let mut verifier = TokenVerifier::new(&audience);
        let public = key.verifying_key();
        let started = Instant::now();
        for text in &texts {
            verifier.verify(text, now, |_| Issuer::Active(public)).map_err(anyhow::Error::msg)?;
        }
        verified.push(count as f64 / started.elapsed().as_secs_f64());
        note!("run {run}/{runs}: minted {:.0}/s, verified {:.0}/s", minted[run - 1], verified[run - 1]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    say!(
        "median of {runs} run(s), {count} tokens: minted {:.0}/s, verified {:.0}/s",
        median(&mut minted),
        median(&mut verified)
    )?;
    Ok(())
}
