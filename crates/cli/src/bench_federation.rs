//! `roost bench federation`: a search of all instances, as an agent calls it
//! (`roost_search_all` over MCP on one gateway), across three real gateways
//! each holding its own memories, once with the gateways calling each other
//! over QUIC and once over HTTP with machine tokens, alternating within each
//! run so both meet the same machine. Reports latency percentiles, the
//! QUIC/HTTP ratio, and how much of each search was spent waiting on the
//! slowest instance.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Map, Value, json};

use roost_core::Table;
use roost_instance::{FederationTransport, Instance};
use roost_store::Mutation;

use crate::bench::{ServedProcess, Words, percentile_ms};
use crate::bench_sync::{roost, same_identity};
use crate::out::{note, say};

/// Searches run before timing, so sessions and caches are warm.
const WARM_UP: usize = 20;

/// The transports compared, in the order each run takes them.
const TRANSPORTS: [(FederationTransport, &str); 2] =
    [(FederationTransport::Quic, "quic"), (FederationTransport::Http, "http")];

/// What the runs over one transport measured.
#[derive(Default)]
struct Figures {
    p50s: Vec<f64>,
    p99s: Vec<f64>,
    shares: Vec<f64>,
    results: usize,
}

pub fn run(memories: usize, searches: usize, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let names = ["a", "b", "c"];
    let homes = same_identity(dir.path(), &names)?;
    for (seed, home) in homes.iter().enumerate() {
        note!("writing {memories} memories on {}", names[seed]);
        let store = Instance::open(home)?.open_store()?;
        let mut words = Words::new(seed as u64 + 11);
        for _ in 0..memories {
            // Local: each instance holds its own memories, none replicate.
            let fields = json!({"content": words.sentence(12, 40), "local": true});
            store.write(Mutation::Create { table: Table::Memories, fields: object(fields) })?;
        }
    }
    // Registered once at the addresses every later start keeps.
    let addrs: Vec<String> = {
        let served: Vec<ServedProcess> = homes.iter().map(|h| ServedProcess::start(h)).collect::<Result<_, _>>()?;
        for (i, home) in homes.iter().enumerate() {
            for (j, peer) in served.iter().enumerate() {
                if i != j {
                    roost(home, &["instance", "register", &format!("http://{}", peer.addr)])?;
                }
            }
        }
        served.iter().map(|s| s.addr.clone()).collect()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut figures: Vec<Figures> = TRANSPORTS.iter().map(|_| Figures::default()).collect();
    let mut words = Words::new(99);
    for run in 1..=runs {
        for ((transport, name), figures) in TRANSPORTS.iter().zip(&mut figures) {
            for home in &homes {
                use_transport(home, *transport, name)?;
            }
            let served: Vec<ServedProcess> =
                homes.iter().zip(&addrs).map(|(h, a)| ServedProcess::start_at(h, a)).collect::<Result<_, _>>()?;
            let searched = runtime.block_on(timed_searches(&served[0].addr, searches, &mut words))?;
            let (mut times, mut share, results) = searched;
            share.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile_ms(&mut times, 0.5), percentile_ms(&mut times, 0.99));
            note!(
                "run {run}/{runs} over {name}: p50 {p50:.2} ms, p99 {p99:.2} ms, slowest-instance share {:.2}",
                share[share.len() / 2]
            );
            figures.p50s.push(p50);
            figures.p99s.push(p99);
            figures.shares.push(share[share.len() / 2]);
            figures.results += results;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    say!("median of {runs} run(s), {searches} searches each, 3 instances x {memories} memories:")?;
    let mut p50_of = Vec::new();
    for ((_, name), figures) in TRANSPORTS.iter().zip(&mut figures) {
        let p50 = median(&mut figures.p50s);
        p50_of.push(p50);
        say!(
            "  roost_search_all over {name:<4}  p50 {p50:.2} ms, p99 {:.2} ms   (target p50 < 30 ms)",
            median(&mut figures.p99s)
        )?;
        say!(
            "    waiting on the slowest instance: {:.0}% of each search (median); {:.1} results per search",
            100.0 * median(&mut figures.shares),
            figures.results as f64 / (runs * searches) as f64
        )?;
    }
    say!("  p50 quic/http: {:.2}", p50_of[0] / p50_of[1])?;
    Ok(())
}

/// Sets `[federation] transport` in `home`'s config.toml, for the gateway
/// started next.
fn use_transport(home: &Path, transport: FederationTransport, name: &str) -> anyhow::Result<()> {
    let path: PathBuf = home.join("config.toml");
    let text = std::fs::read_to_string(&path)?;
    let mut edited: Vec<String> =
        text.lines()
            .map(|l| {
                if l.trim_start().starts_with("transport =") {
                    format!("transport = \"{name}\"")
                } else {
                    l.to_string()
                }
            })
            .collect();
    edited.push(String::new());
    std::fs::write(&path, edited.join("\n"))?;
    let set = Instance::open(home)?.config.federation.transport;
    anyhow::ensure!(set == transport, "config.toml in {} has no [federation] transport line", home.display());
    Ok(())
}

/// Warms up, then times `searches` searches of all instances through the
/// gateway at `addr`: each one's time, the slowest instance's share of it,
/// and the results found.
async fn timed_searches(
    addr: &str,
    searches: usize,
    words: &mut Words,
) -> anyhow::Result<(Vec<std::time::Duration>, Vec<f64>, usize)> {
    let client = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp")))
        .await
        .context("connecting the MCP client")?;
    for _ in 0..WARM_UP {
        search_all(&client, &words.query()).await?;
    }
    let mut times = Vec::with_capacity(searches);
    let mut share = Vec::with_capacity(searches);
    let mut results = 0;
    for _ in 0..searches {
        let started = Instant::now();
        let merged = search_all(&client, &words.query()).await?;
        let took = started.elapsed();
        anyhow::ensure!(merged["answered"].as_array().map(Vec::len) == Some(3), "an instance did not answer: {merged}");
        let slowest = merged["instances"].as_array().into_iter().flatten().filter_map(|i| i["ms"].as_f64());
        share.push(slowest.fold(0.0, f64::max) / (took.as_secs_f64() * 1000.0));
        results += merged["count"].as_u64().unwrap_or(0) as usize;
        times.push(took);
    }
    client.cancel().await.ok();
    Ok((times, share, results))
}

async fn search_all(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>,
    query: &str,
) -> anyhow::Result<Value> {
    let args = object(json!({"query": query, "limit": 20}));
    let result = client.call_tool(CallToolRequestParams::new("roost_search_all").with_arguments(args)).await?;
    anyhow::ensure!(result.is_error != Some(true), "roost_search_all failed: {:?}", result.content);
    result.structured_content.context("roost_search_all returned no structured result")
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
