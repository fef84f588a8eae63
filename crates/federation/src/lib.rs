//! Federation: this instance calling the MCP tools of the user's other
//! instances.
//!
//! - [`Federation::forward`] runs one tool on a named instance and labels the
//!   result with where it ran;
//! - [`Federation::search_all`] searches this instance and every other one in
//!   parallel, each bounded by its timeout, and merges the answers
//!   ([`search`]);
//! - [`Federation::overview`] lists every instance with its sync state and the
//!   cached summaries a background task keeps ([`summaries`]).
//!
//! Calls go over QUIC connections keyed by the machines' keys, or over the
//! other gateways' `/mcp` with single-use machine tokens ([`client`]).
//! Whether a call is allowed is the callee's decision (its `[federation]
//! peer_tools`).

pub mod client;

pub use client::ALPN;
pub mod search;
pub mod summaries;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};

use roost_instance::{FederationConfig, Instance};
use roost_mcp::{Action, Pending, Remote, RemoteError};
use roost_store::{InstanceEntry, Store, StoreError};
use roost_sync::{PeerStatus, SyncError, SyncService};
use roost_tasks::{Blocked, Tasks};

/// Where the federation finds the replication service running now (it is
/// replaced when the machine takes another identity).
pub type SyncSource = Arc<dyn Fn() -> Option<Arc<SyncService>> + Send + Sync>;

use client::{CallError, Connections};
use search::{Answer, InstanceRef, Merged, Outcome};
use summaries::{Freshness, InstanceCache, Summary};

/// Why a federated call, search or overview gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("no instance named {0:?}; roost_list_instances shows the names and ids")]
    NoSuchInstance(String),
    #[error("{} instances are named {name:?}; give one of their ids: {}", ids.len(), ids.join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    #[error("{0} is this instance; run the tool without `instance`")]
    ThisInstance(String),
    #[error("cannot call {name}: {why}")]
    NotCallable { name: String, why: NotCallable },
    #[error("{name} did not answer within {limit:?}")]
    TimedOut { name: String, limit: Duration },
    #[error("{name}: {source}")]
    Call { name: String, source: CallError },
    #[error("argument `limit` must be 1 to 500")]
    BadLimit,
    /// This instance refused the query (the caller's mistake, not an outage).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

impl FederationError {
    /// Whether the request itself was wrong (as opposed to this instance or
    /// another failing to answer it).
    pub fn is_callers_mistake(&self) -> bool {
        matches!(
            self,
            FederationError::NoSuchInstance(_)
                | FederationError::Ambiguous { .. }
                | FederationError::ThisInstance(_)
                | FederationError::BadLimit
                | FederationError::Refused(_)
        )
    }
}

/// Why an instance may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCallable {
    #[error("revoked")]
    Revoked,
    #[error("no gateway address known for it; it is learned when it connects")]
    NoAddress,
}

/// Why a machine's health could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("no gateway address known for it")]
    NoAddress,
    #[error("unreachable: {0}")]
    Unreachable(reqwest::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("unreadable health: {0}")]
    Unreadable(reqwest::Error),
    #[error("health answered {status}: {body}")]
    Failed { status: reqwest::StatusCode, body: Value },
}

/// Longest wait on the local database from a federation task.
const DB_WAIT: Duration = Duration::from_secs(5);
/// How often the refresher looks for summaries that are due.
const REFRESH_TICK: Duration = Duration::from_secs(1);
/// How long stopping waits for fetches under way.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Results a search of all instances returns when the caller names no limit.
const DEFAULT_LIMIT: u64 = 20;

/// This instance's view of the others. Cheap to clone.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    me: InstanceRef,
    store: Arc<Store>,
    sync: SyncSource,
    config: FederationConfig,
    connections: Connections,
    caches: Mutex<HashMap<String, InstanceCache>>,
    /// The refresher and the fetches it starts.
    tasks: Tasks,
}

/// One instance as `roost_list_instances` and the Nest show it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceOverview {
    pub id: String,
    pub name: String,
    pub role: roost_core::Role,
    /// Whether it is the instance answering.
    pub this: bool,
    /// active or revoked, from the registry.
    pub status: roost_store::Standing,
    /// Where it can be reached, freshest first.
    pub addresses: Vec<String>,
    /// The Roost version it last said it runs.
    pub version: Option<String>,
    /// When this machine last had a session with it.
    pub last_seen: Option<String>,
    /// Fingerprint of its machine key.
    pub fingerprint: String,
    /// Replication with it (absent for this instance).
    pub sync: Option<PeerStatus>,
    /// Open conflicts in which one of the two versions is its.
    pub open_conflicts: usize,
    pub summary: Freshness<Summary>,
    pub health: Freshness<Value>,
}

impl Federation {
    pub fn new(instance: &Instance, store: Arc<Store>, sync: SyncSource) -> Federation {
        Federation {
            inner: Arc::new(Inner {
                me: InstanceRef { id: instance.id.clone(), name: instance.config.name.clone() },
                store,
                sync: sync.clone(),
                config: instance.config.federation.clone(),
                connections: Connections::new(instance, sync),
                caches: Mutex::new(HashMap::new()),
                tasks: Tasks::new(),
            }),
        }
    }

    /// Keeps the summaries of the other instances fresh until [`Self::stop`].
    pub fn start_refreshing(&self) {
        let federation = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                federation.refresh_due().await;
                tokio::time::sleep(REFRESH_TICK).await;
            }
        });
    }

    /// Stops refreshing and every fetch under way, waiting a bounded time.
    pub async fn stop(&self) {
        if !self.inner.tasks.stop(STOP_GRACE).await {
            tracing::warn!("summary fetches still running {STOP_GRACE:?} after the stop");
        }
        self.inner.connections.close().await;
    }

    /// Runs `tool` with `args` on `instance` (name or id).
    pub async fn forward(
        &self,
        instance: &str,
        tool: &str,
        args: Map<String, Value>,
    ) -> Result<Value, FederationError> {
        let entries = self.registry().await?;
        let target = resolve(&entries, instance)?;
        let name = target.name.clone();
        if target.id == self.inner.me.id {
            return Err(FederationError::ThisInstance(name));
        }
        reachable(target).map_err(|why| FederationError::NotCallable { name: name.clone(), why })?;
        let limit = Duration::from_millis(self.inner.config.call_timeout_ms);
        match self.inner.connections.call(target, tool, args, limit).await {
            Ok(result) => Ok(json!({"instance": {"id": target.id, "name": name}, "result": result})),
            Err(CallError::TimedOut) => Err(FederationError::TimedOut { name, limit }),
            Err(source) => Err(FederationError::Call { name, source }),
        }
    }

    /// Searches this instance and every other reachable one in parallel.
    pub async fn search_all(&self, args: Map<String, Value>) -> Result<Merged, FederationError> {
        let limit = match args.get("limit") {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(v) => v.as_u64().filter(|n| (1..=500).contains(n)).ok_or(FederationError::BadLimit)?,
        };
        let mut args = args;
        args.insert("limit".into(), Value::from(limit));
        let entries = self.registry().await?;
        let timeout = Duration::from_millis(self.inner.config.search_timeout_ms);
        let local = {
            let store = self.inner.store.clone();
            let args = args.clone();
            let me = self.inner.me.clone();
            async move {
                let started = Instant::now();
                let run = move || roost_mcp::execute(&store, Action::SearchMemories, args);
                let outcome = match roost_tasks::blocking("the local search", DB_WAIT, run).await {
                    Ok(Ok(found)) => Ok(hits_of(found)),
                    Ok(Err(refused)) => Err(FederationError::Refused(refused)),
                    Err(blocked) => Err(FederationError::Blocked(blocked)),
                };
                (me, outcome, started.elapsed())
            }
        };
        let remotes = entries.iter().filter(|e| e.id != self.inner.me.id).map(|entry| {
            let args = args.clone();
            let instance = InstanceRef { id: entry.id.clone(), name: entry.name.clone() };
            async move {
                if let Err(why) = reachable(entry) {
                    return Answer { instance, outcome: Outcome::Skipped(why.to_string()), elapsed_ms: 0.0 };
                }
                let started = Instant::now();
                let outcome = match self.inner.connections.call(entry, "roost_search_memories", args, timeout).await {
                    Ok(found) => Outcome::Answered(hits_of(found)),
                    Err(CallError::TimedOut) => Outcome::TimedOut,
                    Err(CallError::Unreachable(why)) => Outcome::Unreachable(why),
                    Err(CallError::Refused(why)) => Outcome::Refused(why),
                };
                Answer { instance, outcome, elapsed_ms: millis(started.elapsed()) }
            }
        });
        let ((me, local, local_time), remote) = tokio::join!(local, futures::future::join_all(remotes));
        // A query this instance rejects is the caller's mistake, not an outage.
        let local = local?;
        let mut answers =
            vec![Answer { instance: me, outcome: Outcome::Answered(local), elapsed_ms: millis(local_time) }];
        answers.extend(remote);
        Ok(search::merge(answers, limit as usize))
    }

    /// Every registered instance, this one first, with what is known of it.
    pub async fn overview(&self) -> Result<Vec<InstanceOverview>, FederationError> {
        let me = self.inner.me.id.clone();
        let sync = (self.inner.sync)();
        let (entries, conflicts, own, peers) = blocking(&self.inner.store, move |s| {
            let conflicts = s.conflicts(false, 10_000)?;
            let own = own_summary(s)?;
            let peers = match &sync {
                Some(sync) => sync.status()?,
                None => Vec::new(),
            };
            Ok::<_, FederationError>((s.instances()?, conflicts, own, peers))
        })
        .await?;
        let now = Instant::now();
        let caches = self.inner.caches.lock().expect("summary cache poisoned").clone();
        let (summary_every, health_every) = self.intervals();
        let mut rows: Vec<InstanceOverview> = entries
            .into_iter()
            .map(|e| {
                let this = e.id == me;
                let cache = caches.get(&e.id).cloned().unwrap_or_default();
                let (summary, health) = if this {
                    (Freshness::current(own.clone()), Freshness::current(json!({"status": "ok"})))
                } else {
                    (cache.summary.show(now, summary_every), cache.health.show(now, health_every))
                };
                InstanceOverview {
                    open_conflicts: conflicts
                        .iter()
                        .filter(|c| c.winner.origin == e.id || c.loser.origin == e.id)
                        .count(),
                    sync: peers.iter().find(|p| p.id == e.id).cloned(),
                    fingerprint: roost_instance::parse_key_hex(&e.signing_key)
                        .map(|k| roost_instance::key_fingerprint(&k))
                        .unwrap_or_default(),
                    this,
                    id: e.id,
                    name: e.name,
                    role: e.role,
                    status: e.status,
                    addresses: e.addresses,
                    version: e.version,
                    last_seen: e.last_seen,
                    summary,
                    health,
                }
            })
            .collect();
        rows.sort_by_key(|r| !r.this);
        Ok(rows)
    }

    fn intervals(&self) -> (Duration, Duration) {
        let c = &self.inner.config;
        (Duration::from_secs(c.summary_interval_secs.max(1)), Duration::from_secs(c.health_interval_secs.max(1)))
    }

    async fn registry(&self) -> Result<Vec<InstanceEntry>, FederationError> {
        blocking(&self.inner.store, |s| s.instances()).await
    }

    /// Starts the refreshes that are due, each in its own task.
    async fn refresh_due(&self) {
        let entries = match self.registry().await {
            Ok(entries) => entries,
            Err(e) => return tracing::warn!(error = %e, "cannot read the registry to refresh summaries"),
        };
        let now = Instant::now();
        let (summary_every, health_every) = self.intervals();
        let mut caches = self.inner.caches.lock().expect("summary cache poisoned");
        for entry in entries.into_iter().filter(|e| e.id != self.inner.me.id) {
            if reachable(&entry).is_err() {
                continue;
            }
            let cache = caches.entry(entry.id.clone()).or_default();
            if cache.summary.due(now, summary_every) {
                cache.summary.begin(now);
                let federation = self.clone();
                let entry = entry.clone();
                self.inner.tasks.spawn(async move {
                    let outcome = federation.fetch_summary(&entry).await;
                    let id = &entry.id;
                    federation.settle(id, |c| c.summary.finish(Instant::now(), roost_store::now_text(), outcome));
                });
            }
            if cache.health.due(now, health_every) {
                cache.health.begin(now);
                let federation = self.clone();
                let (id, urls) = (entry.id.clone(), entry.addresses.clone());
                self.inner.tasks.spawn(async move {
                    let outcome = federation.fetch_health(&urls).await;
                    federation.settle(&id, |c| c.health.finish(Instant::now(), roost_store::now_text(), outcome));
                });
            }
        }
    }

    fn settle(&self, id: &str, update: impl FnOnce(&mut InstanceCache)) {
        update(self.inner.caches.lock().expect("summary cache poisoned").entry(id.to_string()).or_default());
    }

    async fn fetch_summary(&self, entry: &InstanceEntry) -> Result<Summary, CallError> {
        let limit = Duration::from_millis(self.inner.config.call_timeout_ms);
        let connections = &self.inner.connections;
        let stats = connections.call(entry, "roost_memory_stats", Map::new(), limit);
        let mut list = Map::new();
        list.insert("limit".into(), Value::from(500));
        let projects = connections.call(entry, "roost_list_projects", list, limit);
        let (stats, projects) = tokio::join!(stats, projects);
        Ok(Summary::from_answers(&stats?, &projects?))
    }

    /// The health of the machine at the first of `urls` that answers.
    async fn fetch_health(&self, urls: &[String]) -> Result<Value, HealthError> {
        let limit = Duration::from_millis(self.inner.config.call_timeout_ms);
        let mut last = HealthError::NoAddress;
        let mut answered = None;
        for url in urls {
            let request = self.inner.connections.http().get(format!("{}/health", url.trim_end_matches('/'))).send();
            match tokio::time::timeout(limit, request).await {
                Ok(Ok(response)) => {
                    answered = Some(response);
                    break;
                }
                Ok(Err(e)) => last = HealthError::Unreachable(e),
                Err(_) => last = HealthError::TimedOut(limit),
            }
        }
        let response = answered.ok_or(last)?;
        let status = response.status();
        let body: Value = tokio::time::timeout(limit, response.json())
            .await
            .map_err(|_| HealthError::TimedOut(limit))?
            .map_err(HealthError::Unreadable)?;
        if status.is_success() { Ok(body) } else { Err(HealthError::Failed { status, body }) }
    }
}

impl Remote for Federation {
    fn forward(&self, instance: String, tool: String, args: Map<String, Value>) -> Pending<Result<Value, RemoteError>> {
        let federation = self.clone();
        Box::pin(async move { Ok(federation.forward(&instance, &tool, args).await?) })
    }

    fn search_all(&self, args: Map<String, Value>) -> Pending<Result<Value, RemoteError>> {
        let federation = self.clone();
        Box::pin(async move { Ok(json!(federation.search_all(args).await?)) })
    }

    fn list_instances(&self) -> Pending<Result<Value, RemoteError>> {
        let federation = self.clone();
        Box::pin(async move {
            let instances = federation.overview().await?;
            Ok(json!({"count": instances.len(), "instances": instances}))
        })
    }
}

/// The registry entry `name` (an id, or a name, case-insensitive) refers to.
fn resolve<'a>(entries: &'a [InstanceEntry], name: &str) -> Result<&'a InstanceEntry, FederationError> {
    let name = name.trim();
    if let Some(entry) = entries.iter().find(|e| e.id == name) {
        return Ok(entry);
    }
    let named: Vec<&InstanceEntry> = entries.iter().filter(|e| e.name.eq_ignore_ascii_case(name)).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(FederationError::NoSuchInstance(name.to_string())),
        many => {
            Err(FederationError::Ambiguous { name: name.to_string(), ids: many.iter().map(|e| e.id.clone()).collect() })
        }
    }
}

/// Whether an instance may be called, or why not.
fn reachable(entry: &InstanceEntry) -> Result<(), NotCallable> {
    if entry.is_revoked() {
        return Err(NotCallable::Revoked);
    }
    if entry.addresses.is_empty() {
        return Err(NotCallable::NoAddress);
    }
    Ok(())
}

/// The hits of a `roost_search_memories` answer, best first.
fn hits_of(answer: Value) -> Vec<Value> {
    match answer {
        Value::Object(mut map) => match map.remove("results") {
            Some(Value::Array(hits)) => hits,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn own_summary(store: &Store) -> Result<Summary, StoreError> {
    let stats = store.memory_stats()?;
    let query = roost_store::ListQuery { limit: 500, ..Default::default() };
    let projects = store.list(roost_core::Table::Projects, &query)?;
    Ok(Summary::from_answers(&stats, &json!({"items": projects})))
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Runs a blocking store call off the async threads, bounded by [`DB_WAIT`].
async fn blocking<T: Send + 'static, E: Into<FederationError> + Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
) -> Result<T, FederationError> {
    let store = store.clone();
    roost_tasks::blocking("a database call", DB_WAIT, move || f(&store)).await?.map_err(Into::into)
}
