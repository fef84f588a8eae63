//! `roost bench federation`: a search of all instances, as an agent calls it
//! (`roost_search_all` over MCP on one gateway), across three real gateways
//! each holding its own memories. Reports latency percentiles and how much of
//! each search was spent waiting on the slowest instance.

use std::time::Instant;

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Map, Value, json};

use roost_core::Table;
use roost_instance::Instance;
use roost_store::Mutation;

use crate::bench::{ServedProcess, Words, percentile_ms};
use crate::bench_sync::{roost, same_identity};
use crate::out::{note, say};

/// Searches run before timing, so sessions and caches are warm.
const WARM_UP: usize = 20;

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
    let served: Vec<ServedProcess> = homes.iter().map(|h| ServedProcess::start(h)).collect::<Result<_, _>>()?;
    for (i, home) in homes.iter().enumerate() {
        for (j, peer) in served.iter().enumerate() {
            if i != j {
                roost(home, &["instance", "register", &format!("http://{}", peer.addr)])?;
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut shares = Vec::new();
    let mut results = 0usize;
    runtime.block_on(async {
        let client = ClientConfig::default()
            .serve(StreamableHttpClientTransport::from_uri(format!("http://{}/mcp", served[0].addr)))
            .await
            .context("connecting the MCP client")?;
        let mut words = Words::new(99);
        for _ in 0..WARM_UP {
            search_all(&client, &words.query()).await?;
        }
        for run in 1..=runs {
            let mut times = Vec::with_capacity(searches);
            let mut share = Vec::with_capacity(searches);
            for _ in 0..searches {
                let started = Instant::now();
                let merged = search_all(&client, &words.query()).await?;
                let took = started.elapsed();
                anyhow::ensure!(
                    merged["answered"].as_array().map(Vec::len) == Some(3),
                    "an instance did not answer: {merged}"
                );
                let slowest = merged["instances"].as_array().into_iter().flatten().filter_map(|i| i["ms"].as_f64());
                share.push(slowest.fold(0.0, f64::max) / (took.as_secs_f64() * 1000.0));
                results += merged["count"].as_u64().unwrap_or(0) as usize;
                times.push(took);
            }
            share.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile_ms(&mut times, 0.5), percentile_ms(&mut times, 0.99));
            note!(
                "run {run}/{runs}: p50 {p50:.2} ms, p99 {p99:.2} ms, slowest-instance share {:.2}",
                share[share.len() / 2]
            );
            p50s.push(p50);
            p99s.push(p99);
            shares.push(share[share.len() / 2]);
        }
        client.cancel().await.ok();
        anyhow::Ok(())
    })?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    say!("median of {runs} run(s), {searches} searches each, 3 instances x {memories} memories:")?;
    say!(
        "  roost_search_all   p50 {:.2} ms, p99 {:.2} ms   (target p50 < 30 ms)",
        median(&mut p50s),
        median(&mut p99s)
    )?;
    say!("  waiting on the slowest instance: {:.0}% of each search (median)", 100.0 * median(&mut shares))?;
    say!("  {:.1} results per search on average", results as f64 / (runs * searches) as f64)?;
    drop(served);
    Ok(())
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
