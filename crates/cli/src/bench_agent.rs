//! `roost bench agent`: the agent between three real `roost serve`
//! processes with the built-in handler, replying to a webhook receiver in
//! this process. Measures inbound → reply latency (a message posted to the
//! holder, and one posted to a standby, which replication carries to the
//! holder), sustained messages per second over 20 topics, and the reply gap
//! at failover: from kill -9 of the holder to the first reply the webhook
//! gets after it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use roost_awake::LeaseStatus;
use roost_awake::status::Role;

use crate::bench::{ServedProcess, percentile_ms};
use crate::bench_failover::{Machine, start_registered};
use crate::bench_sync::same_identity;
use crate::out::{note, say};

const WAIT: Duration = Duration::from_secs(60);
const TOPICS: usize = 20;

/// When each reply reached the receiver, and from which machine, by
/// message id (the first time).
pub(crate) type Arrivals = Arc<Mutex<HashMap<String, (Instant, String)>>>;

pub fn run(messages: usize, burst: usize, kills: usize) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        note!("roost: warning: this is a debug build; benchmark a release build (cargo run --release -- bench agent)");
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let (arrivals, mut machines) = webhook_chain(dir.path(), "").await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let mut sent = 0usize;
        let mut post = |machine: &Machine, topic: usize| {
            sent += 1;
            let id = format!("m{sent}");
            let body = json!({"channel": "webhook", "topic": format!("topic-{topic}"), "message_id": id,
                              "sender": "bench", "text": format!("message {sent}")});
            let request = client.post(format!("http://{}/api/v1/agent/messages", machine.addr)).json(&body).send();
            (id, request)
        };
        let mut round = 0usize;

        let holder = settle(&machines).await?;
        let standby = (holder + 1) % machines.len();
        let mut latencies = [Vec::with_capacity(messages), Vec::with_capacity(messages)];
        for (which, at) in [holder, standby].into_iter().enumerate() {
            for i in 0..messages {
                let started = Instant::now();
                let (id, request) = post(&machines[at], i % TOPICS);
                accepted(request.await?).await?;
                let arrived = arrival(&arrivals, &id).await?;
                latencies[which].push(arrived.duration_since(started));
            }
        }

        let started = Instant::now();
        let mut ids = Vec::with_capacity(burst);
        let mut pending = Vec::with_capacity(burst);
        for i in 0..burst {
            let (id, request) = post(&machines[i % machines.len()], i % TOPICS);
            ids.push(id);
            pending.push(request);
            if pending.len() == 64 {
                for request in pending.drain(..) {
                    accepted(request.await?).await?;
                }
            }
        }
        for request in pending {
            accepted(request.await?).await?;
        }
        let mut last = started;
        for id in &ids {
            last = last.max(arrival(&arrivals, id).await?);
        }
        let rate = burst as f64 / last.duration_since(started).as_secs_f64();

        let mut gaps = Vec::with_capacity(kills);
        for k in 0..kills {
            let holder = settle(&machines).await?;
            let others: Vec<usize> = (0..machines.len()).filter(|i| *i != holder).collect();
            let killed_at = Instant::now();
            drop(machines[holder].process.take());
            // A message every 20 ms to the machines still running, until
            // replies come again.
            let first = loop {
                round += 1;
                let (_, request) = post(&machines[others[round % others.len()]], round % TOPICS);
                accepted(request.await?).await?;
                let after = arrivals
                    .lock()
                    .expect("arrivals poisoned")
                    .values()
                    .map(|(at, _)| *at)
                    .filter(|at| *at > killed_at)
                    .min();
                if let Some(first) = after {
                    break first;
                }
                if killed_at.elapsed() > WAIT {
                    bail!("no reply within {WAIT:?} after kill {}", k + 1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            gaps.push(first.duration_since(killed_at));
            note!("kill {}/{kills}: first reply after {:.0} ms", k + 1, ms(gaps[k]));
            let machine = &mut machines[holder];
            machine.process = Some(ServedProcess::start_at(&machine.home, &machine.addr)?);
        }

        say!("agent, 3 machines on loopback, built-in handler, replies to a webhook in this process")?;
        for (which, times) in ["the holder", "a standby"].iter().zip(latencies.iter_mut()) {
            say!(
                "message posted to {which} → reply at the webhook over {messages}: p50 {:.2} ms, p99 {:.2} ms",
                percentile_ms(times, 0.5),
                percentile_ms(times, 0.99)
            )?;
        }
        say!("sustained: {burst} messages over {TOPICS} topics posted to all three: {rate:.0} messages/s")?;
        if kills > 0 {
            say!(
                "reply gap at failover over {kills} kills (lease TTL 3 s): median {:.0} ms, max {:.0} ms",
                percentile_ms(&mut gaps, 0.5),
                percentile_ms(&mut gaps, 1.0)
            )?;
        }
        Ok(())
    })
}

/// Three machines of one identity, registered with each other, whose
/// agent replies to a webhook receiver in this process; `extra` is added to
/// each `config.toml`. Returns where the replies are recorded, and the
/// machines.
pub(crate) async fn webhook_chain(root: &Path, extra: &str) -> anyhow::Result<(Arrivals, Vec<Machine>)> {
    let arrivals: Arrivals = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", receiver.local_addr()?);
    tokio::spawn(receive(receiver, arrivals.clone()));
    let homes = same_identity(root, &["a", "b", "c"])?;
    for home in &homes {
        let mut config = std::fs::OpenOptions::new().append(true).open(home.join("config.toml"))?;
        let section = format!("\n[agent.webhook]\nurl = \"{url}\"\n\n{extra}\n");
        std::io::Write::write_all(&mut config, section.as_bytes())?;
    }
    Ok((arrivals, start_registered(&homes)?))
}

pub(crate) async fn accepted(response: reqwest::Response) -> anyhow::Result<()> {
    let status = response.status();
    if status != reqwest::StatusCode::ACCEPTED {
        bail!("a message was not accepted: {status} {}", response.text().await.unwrap_or_default());
    }
    Ok(())
}

/// When the reply to `id` arrived, waiting for it.
pub(crate) async fn arrival(arrivals: &Arrivals, id: &str) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        if let Some((at, _)) = arrivals.lock().expect("arrivals poisoned").get(id) {
            return Ok(*at);
        }
        if started.elapsed() > WAIT {
            bail!("no reply to {id} within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// The webhook: HTTP/1.1 with keep-alive, recording each reply's arrival
/// and answering 200.
async fn receive(listener: tokio::net::TcpListener, arrivals: Arrivals) {
    while let Ok((stream, _)) = listener.accept().await {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            loop {
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if read.read_exact(&mut body).await.is_err() {
                    return;
                }
                let at = Instant::now();
                if let Ok(reply) = serde_json::from_slice::<Value>(&body)
                    && let Some(id) = reply["message_id"].as_str()
                {
                    let machine = reply["machine"].as_str().unwrap_or_default().to_string();
                    arrivals.lock().expect("arrivals poisoned").entry(id.to_string()).or_insert((at, machine));
                }
                if write.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Waits until exactly one machine is awake, every one names it and its
/// agent works; returns it.
async fn settle(machines: &[Machine]) -> anyhow::Result<usize> {
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    loop {
        let mut healths = Vec::new();
        for machine in machines {
            let health = client.get(format!("http://{}/health", machine.addr)).send().await;
            let health: Option<Value> = match health {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            healths.push(health);
        }
        let lease =
            |h: &Option<Value>| h.as_ref().and_then(|h| serde_json::from_value::<LeaseStatus>(h["lease"].clone()).ok());
        let leases: Vec<Option<LeaseStatus>> = healths.iter().map(lease).collect();
        let awake: Vec<usize> =
            (0..leases.len()).filter(|i| leases[*i].as_ref().is_some_and(|l| l.role == Role::Awake)).collect();
        let holder = |l: &Option<LeaseStatus>| l.as_ref().and_then(|l| l.holder.as_ref().map(|h| h.id.clone()));
        if awake.len() == 1
            && leases
                .iter()
                .all(|l| holder(l) == holder(&leases[awake[0]]) && l.as_ref().is_some_and(|l| l.voters_heard == 3))
            && healths[awake[0]]
                .as_ref()
                .is_some_and(|h| h["agent"]["working"] == true && h["agent"]["catching_up"] == false)
        {
            return Ok(awake[0]);
        }
        if started.elapsed() > WAIT {
            bail!("the machines did not agree on one holder within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
