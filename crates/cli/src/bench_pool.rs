//! `roost bench pool`: the time a transfer takes, from the request to the
//! first reply the new owner sends, between three real `roost serve`
//! processes with `[pool] enabled`, the built-in handler replying to a
//! webhook receiver in this process. While a transfer runs, a message of
//! the topic is posted every 20 ms, so the first reply from the new owner
//! comes as soon as that machine can answer.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench::percentile_ms;
use crate::bench_agent::{accepted, arrival, webhook_chain};
use crate::bench_failover::Machine;
use crate::out::{note, say};

const WAIT: Duration = Duration::from_secs(60);
/// Topics moved in turn.
const TOPICS: usize = 6;
/// A topic moves at most once in this long (`[pool] transfer_interval_ms`),
/// and a little more, as the coordinator counts from when it took the move.
const INTERVAL: Duration = Duration::from_millis(1100);

pub fn run(transfers: usize) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        note!("roost: warning: this is a debug build; benchmark a release build (cargo run --release -- bench pool)");
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let (arrivals, machines) = webhook_chain(dir.path(), "[pool]\nenabled = true").await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let ids = online(&client, &machines[0]).await?;
        let mut sent = 0usize;
        let mut post = |machine: &Machine, topic: &str| {
            sent += 1;
            let id = format!("m{sent}");
            let body = json!({"channel": "webhook", "topic": topic, "message_id": id,
                              "sender": "bench", "text": format!("message {sent}")});
            let request = client.post(format!("http://{}/api/v1/agent/messages", machine.addr)).json(&body).send();
            (id, request)
        };
        for topic in 0..TOPICS {
            let (id, request) = post(&machines[topic % 3], &format!("topic-{topic}"));
            accepted(request.await?).await?;
            arrival(&arrivals, &id).await?;
        }

        let mut times = Vec::with_capacity(transfers);
        let mut moved_at: Vec<Option<Instant>> = vec![None; TOPICS];
        for k in 0..transfers {
            let topic = format!("topic-{}", k % TOPICS);
            if let Some(at) = moved_at[k % TOPICS] {
                tokio::time::sleep(INTERVAL.saturating_sub(at.elapsed())).await;
            }
            let asked_on = &machines[k % machines.len()];
            let placement = get(&client, asked_on, &format!("/api/v1/pool/placement?topic={topic}")).await?;
            let from = ids.iter().position(|id| placement["machine"] == id.as_str()).context("a placed topic")?;
            let to = &ids[(from + 1) % ids.len()];
            let started = Instant::now();
            moved_at[k % TOPICS] = Some(started);
            let moved = client
                .post(format!("http://{}/api/v1/pool/transfer", asked_on.addr))
                .json(&json!({"topic": topic, "to": to}))
                .send()
                .await?;
            let status = moved.status();
            let moved: Value = moved.json().await?;
            if !status.is_success() || moved["moved"] != true {
                bail!("transfer {} of {topic} was not made: {status} {moved}", k + 1);
            }
            let first = loop {
                let (_, request) = post(asked_on, &topic);
                accepted(request.await?).await?;
                let from_new = arrivals
                    .lock()
                    .expect("arrivals poisoned")
                    .values()
                    .filter(|(at, machine)| *at > started && machine == to)
                    .map(|(at, _)| *at)
                    .min();
                if let Some(first) = from_new {
                    break first;
                }
                if started.elapsed() > WAIT {
                    bail!("no reply from the new owner within {WAIT:?} of transfer {}", k + 1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            times.push(first.duration_since(started));
        }
        say!("pool, 3 machines on loopback, built-in handler, replies to a webhook in this process")?;
        say!(
            "transfer (request → first reply from the new owner) over {transfers} transfers: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile_ms(&mut times, 0.5),
            percentile_ms(&mut times, 0.99),
            percentile_ms(&mut times, 1.0)
        )?;
        Ok(())
    })
}

async fn get(client: &reqwest::Client, machine: &Machine, path: &str) -> anyhow::Result<Value> {
    let response = client.get(format!("http://{}{path}", machine.addr)).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("GET {path}: {status} {body}");
    }
    Ok(body)
}

/// Waits until the pool lists every machine online; returns their ids.
async fn online(client: &reqwest::Client, machine: &Machine) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    loop {
        if let Ok(pool) = get(client, machine, "/api/v1/pool").await {
            let machines = pool["machines"].as_array().cloned().unwrap_or_default();
            if machines.len() == 3 && machines.iter().all(|m| m["online"] == true) {
                return Ok(machines.iter().filter_map(|m| m["id"].as_str().map(String::from)).collect());
            }
        }
        if started.elapsed() > WAIT {
            bail!("the pool did not list three machines online within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
