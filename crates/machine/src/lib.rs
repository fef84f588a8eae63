//! One running machine: the instance and the services that depend on its
//! identity — replication and the awake role — started together and, when
//! the identity changes (`roost join` or `roost identity import` while
//! `roost serve` runs, or a rotation replication took), stopped together and
//! started again on the new one.
//!
//! The QUIC endpoint outlives them: it is keyed by the machine key, which a
//! new identity does not change, so the UDP port peers know stays bound. The
//! old services are stopped before the new ones start, so no session, vote or
//! record is ever made under two identities at once. So do the streams of
//! connections the gateway serves, federation (ALPN `roost/mcp/1`) and
//! pairing through a relay (`roost/pair/1`): whichever replication runs
//! hands them over.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use iroh::Endpoint;
use iroh::endpoint::Connection;
use thiserror::Error;
use tokio::sync::mpsc;

use roost_awake::{AwakeService, Part};

pub mod agent;
pub mod pool;
use agent::AgentService;
use pool::PoolService;
use roost_federation::SyncSource;
use roost_instance::Instance;
use roost_store::Store;
use roost_sync::SyncService;

#[derive(Debug, Error)]
pub enum MachineError {
    #[error(transparent)]
    Instance(#[from] roost_instance::InstanceError),
    #[error(transparent)]
    Sync(#[from] roost_sync::SyncError),
    #[error(transparent)]
    Awake(#[from] roost_awake::AwakeError),
}

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The identity on disk is the one running.
    Unchanged,
    /// Replication and the lease run on the identity now on disk.
    Restarted { roost_id: String },
}

/// The services of one identity.
struct Running {
    instance: Arc<Instance>,
    sync: Arc<SyncService>,
    awake: Arc<AwakeService>,
    /// None on a witness, which holds no ledger and is never awake.
    agent: Option<Arc<AgentService>>,
    /// With `[pool] enabled` on a full machine.
    pool: Option<Arc<PoolService>>,
}

pub struct Machine {
    store: Arc<Store>,
    endpoint: Endpoint,
    /// The gateway's address, where the agent's handler finds MCP.
    gateway: SocketAddr,
    part: Part,
    /// Where replication hands the connections of the protocols the gateway
    /// serves, by ALPN (a full machine only).
    handed_over: Vec<(&'static [u8], mpsc::Sender<Connection>)>,
    /// Their other ends, until the gateway takes them.
    waiting: std::sync::Mutex<Vec<(&'static [u8], mpsc::Receiver<Connection>)>>,
    running: RwLock<Running>,
    /// Bumped by replication when this machine took a rotation of the
    /// chain's identity: the services start again on it.
    identity_changed: tokio::sync::watch::Sender<u64>,
    /// Serialises reloads.
    changing: tokio::sync::Mutex<()>,
}

impl Machine {
    /// Binds the endpoint at the gateway's address (UDP, the same port) and
    /// starts replication (for a full machine) and the lease.
    pub async fn start(
        instance: Arc<Instance>,
        store: Arc<Store>,
        gateway: SocketAddr,
        part: Part,
    ) -> Result<Arc<Machine>, MachineError> {
        let endpoint = bind(&instance, gateway, part).await?;
        let (handed_over, waiting): (Vec<_>, Vec<_>) = gateway_protocols(part)
            .iter()
            .map(|alpn| {
                let (sender, receiver) = mpsc::channel(16);
                ((*alpn, sender), (*alpn, receiver))
            })
            .unzip();
        let (identity_changed, mut rotated) = tokio::sync::watch::channel(0u64);
        let running = run(instance, &store, &endpoint, gateway, part, &handed_over, &identity_changed)?;
        let machine = Arc::new(Machine {
            store,
            endpoint,
            gateway,
            part,
            handed_over,
            waiting: std::sync::Mutex::new(waiting),
            running: RwLock::new(running),
            identity_changed,
            changing: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&machine);
        tokio::spawn(async move {
            while rotated.changed().await.is_ok() {
                let Some(machine) = weak.upgrade() else { return };
                if let Err(e) = machine.reload().await {
                    tracing::error!(error = %e, "could not start again on the rotated identity");
                }
            }
        });
        Ok(machine)
    }

    fn running(&self) -> std::sync::RwLockReadGuard<'_, Running> {
        self.running.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The instance as the running services know it.
    pub fn instance(&self) -> Arc<Instance> {
        self.running().instance.clone()
    }

    pub fn sync(&self) -> Arc<SyncService> {
        self.running().sync.clone()
    }

    pub fn awake(&self) -> Arc<AwakeService> {
        self.running().awake.clone()
    }

    pub fn agent(&self) -> Option<Arc<AgentService>> {
        self.running().agent.clone()
    }

    /// The pool, when this machine takes part in it.
    pub fn pool(&self) -> Option<Arc<PoolService>> {
        self.running().pool.clone()
    }

    /// The connections other machines open here with `alpn` (one of
    /// [`gateway_protocols`]), for the one server that answers them; `None`
    /// on a witness, or once taken.
    pub fn take_connections(&self, alpn: &[u8]) -> Option<mpsc::Receiver<Connection>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = waiting.iter().position(|(a, _)| *a == alpn)?;
        Some(waiting.swap_remove(at).1)
    }

    /// Where the federation finds replication, whichever identity runs.
    pub fn sync_source(self: &Arc<Self>) -> SyncSource {
        let machine = Arc::downgrade(self);
        Arc::new(move || machine.upgrade().map(|m| m.sync()))
    }

    /// Reads the identity on disk; if it is not the one running, stops the
    /// services and starts them again on it.
    pub async fn reload(&self) -> Result<Reloaded, MachineError> {
        let _one_at_a_time = self.changing.lock().await;
        let home = self.instance().home.clone();
        let fresh = Instance::open(&home)?;
        let current = self.instance();
        if fresh.certificate == current.certificate && fresh.roost_id() == current.roost_id() {
            return Ok(Reloaded::Unchanged);
        }
        let roost_id = fresh.roost_id().to_string();
        tracing::info!(%roost_id, "the identity changed; restarting replication and the lease on it");
        self.stop_services().await;
        // Relays it learned when it joined: the endpoint keeps a connection
        // to them from now on.
        let known = roost_sync::relays(&current);
        for relay in roost_sync::relays(&fresh).into_iter().filter(|r| !known.contains(r)) {
            tracing::info!(%relay, "using a relay learned at join");
            self.endpoint.insert_relay(relay.clone(), Arc::new(iroh::RelayConfig::from(relay))).await;
        }
        let running = run(
            Arc::new(fresh),
            &self.store,
            &self.endpoint,
            self.gateway,
            self.part,
            &self.handed_over,
            &self.identity_changed,
        )?;
        *self.running.write().unwrap_or_else(std::sync::PoisonError::into_inner) = running;
        Ok(Reloaded::Restarted { roost_id })
    }

    /// Stops the agent first (no work outlives the role it was started
    /// under), then the lease (a holder releases the role), then replication.
    async fn stop_services(&self) {
        let (sync, awake, agent, pool) = {
            let running = self.running();
            (running.sync.clone(), running.awake.clone(), running.agent.clone(), running.pool.clone())
        };
        if let Some(agent) = agent {
            agent.stop().await;
        }
        if let Some(pool) = pool {
            pool.stop().await;
        }
        awake.stop().await;
        sync.stop().await;
    }

    /// Stops everything and closes the endpoint, waiting a bounded time.
    pub async fn shutdown(&self) {
        self.stop_services().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), self.endpoint.close()).await;
    }
}

/// The protocols on the endpoint the gateway answers, not replication or the
/// lease: federation and pairing, on a full machine only.
pub fn gateway_protocols(part: Part) -> &'static [&'static [u8]] {
    match part {
        Part::Machine => &[roost_federation::ALPN, roost_identity::pairing::ALPN],
        Part::Witness => &[],
    }
}

/// The endpoint on the gateway's port; if that UDP port is taken, another
/// one: this machine still dials its peers, they just cannot dial it. A
/// witness answers no federation calls.
async fn bind(instance: &Instance, gateway: SocketAddr, part: Part) -> Result<Endpoint, MachineError> {
    let mut alpns = vec![roost_sync::ALPN.to_vec(), roost_awake::ALPN.to_vec()];
    alpns.extend(gateway_protocols(part).iter().map(|alpn| alpn.to_vec()));
    let key = &instance.machine_key;
    let relays = roost_sync::relays(instance);
    match roost_sync::bind_endpoint(key, Some(gateway), &relays, alpns.clone()).await {
        Ok(endpoint) => Ok(endpoint),
        Err(e) => {
            tracing::warn!(error = %e, "the endpoint is not on the gateway's port; peers cannot dial this machine");
            Ok(roost_sync::bind_endpoint(key, Some(SocketAddr::new(gateway.ip(), 0)), &relays, alpns).await?)
        }
    }
}

fn run(
    instance: Arc<Instance>,
    store: &Arc<Store>,
    endpoint: &Endpoint,
    gateway: SocketAddr,
    part: Part,
    handed_over: &[(&'static [u8], mpsc::Sender<Connection>)],
    identity_changed: &tokio::sync::watch::Sender<u64>,
) -> Result<Running, MachineError> {
    let (lease_connections, accepted) = mpsc::channel(16);
    let mut others = vec![(roost_awake::ALPN, lease_connections)];
    others.extend(handed_over.iter().cloned());
    // A witness keeps no log, but still learns the chain's machines (and is
    // known to them) through replication's hellos.
    let keeps_data = part == Part::Machine;
    let sync = Arc::new(SyncService::start_on(
        instance.clone(),
        store.clone(),
        endpoint.clone(),
        others,
        keeps_data,
        identity_changed.clone(),
    ));
    let caught_up = keeps_data.then(|| sync.clone());
    let relays = sync.relay_set();
    let awake = Arc::new(AwakeService::start(
        instance.clone(),
        store.clone(),
        caught_up,
        endpoint.clone(),
        relays,
        accepted,
        part,
    )?);
    let pool = (keeps_data && instance.config.pool.enabled)
        .then(|| Arc::new(PoolService::start(&instance, store.clone(), awake.clone(), sync.clone())));
    let agent = keeps_data.then(|| {
        let mcp_url = format!("http://{gateway}/mcp");
        Arc::new(AgentService::start(&instance, store.clone(), awake.clone(), sync.clone(), pool.clone(), mcp_url))
    });
    Ok(Running { instance, sync, awake, agent, pool })
}
