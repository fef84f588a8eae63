//! `roost serve` and `roost mcp`: the long-running processes.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;

use std::net::SocketAddr;

use tokio::sync::mpsc;

use roost_awake::{AwakeService, Connection, Part};
use roost_federation::Federation;
use roost_gateway::Gateway;
use roost_instance::Instance;
use roost_mcp::RoostTools;
use roost_store::Store;
use roost_sync::SyncService;

/// Binding must not hang the boot path.
const BIND_WAIT: Duration = Duration::from_secs(5);

pub async fn serve(instance: Instance, bind: Option<String>) -> anyhow::Result<()> {
    let (store, listener, addr, instance) = open_and_bind(instance, bind).await?;
    let (lease_connections, accepted) = mpsc::channel(16);
    let sync = Arc::new(start_sync(&instance, &store, addr, lease_connections).await?);
    let awake = AwakeService::start(
        instance.clone(),
        store.clone(),
        Some(sync.clone()),
        sync.endpoint().clone(),
        accepted,
        Part::Machine,
    )?;
    let federation = Federation::new(&instance, store.clone(), Some(sync.clone()));
    let refreshing = federation.start_refreshing();
    let mut gateway = Gateway::new(instance.clone(), store, addr);
    gateway.sync = Some(sync.clone());
    gateway.federation = Some(federation);
    gateway.awake = Some(Arc::new(awake));
    let served = run_gateway(&instance, gateway, listener, "").await;
    refreshing.abort();
    sync.shutdown().await;
    served
}

/// `roost witness`: a voter of the lease that holds no data and is never
/// awake. It serves `/health` and its certificate (so machines can register
/// it) and answers lease messages on the same port.
pub async fn witness(instance: Instance, bind: Option<String>) -> anyhow::Result<()> {
    let (store, listener, addr, instance) = open_and_bind(instance, bind).await?;
    let (endpoint, accepted) = roost_awake::own_endpoint(&instance, addr).await?;
    let awake = AwakeService::start(instance.clone(), store.clone(), None, endpoint.clone(), accepted, Part::Witness)?;
    let mut gateway = Gateway::new(instance.clone(), store, addr);
    gateway.awake = Some(Arc::new(awake));
    let served = run_gateway(&instance, gateway, listener, "witness ").await;
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.close()).await;
    served
}

async fn open_and_bind(
    instance: Instance,
    bind: Option<String>,
) -> anyhow::Result<(Arc<Store>, tokio::net::TcpListener, SocketAddr, Arc<Instance>)> {
    let store = Arc::new(instance.open_store()?);
    let bind = bind.unwrap_or_else(|| instance.config.gateway.bind.clone());
    let listener = tokio::time::timeout(BIND_WAIT, tokio::net::TcpListener::bind(&bind))
        .await
        .with_context(|| format!("binding {bind} took longer than {BIND_WAIT:?}"))?
        .with_context(|| {
            format!("cannot listen on {bind}; is another roost serve running? choose another with --bind")
        })?;
    let addr = listener.local_addr()?;
    Ok((store, listener, addr, Arc::new(instance)))
}

/// Announces the gateway, serves until SIGINT or SIGTERM, and tidies up.
async fn run_gateway(
    instance: &Arc<Instance>,
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    what: &str,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    // Recorded before it is announced, so a command run after the
    // announcement finds the gateway.
    instance.record_gateway_addr(&addr.to_string())?;
    // The first line on stdout is the address, for people and for scripts.
    println!("roost: {what}listening on http://{addr} (instance {}, {})", instance.config.name, instance.id);
    std::io::stdout().flush()?;
    tracing::info!(%addr, home = %instance.home.display(), "gateway started");
    let served = gateway.serve(listener, shutdown_signal()).await;
    instance.clear_gateway_addr();
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Replication listens on UDP at the gateway's address and port, which is
/// where peers look for it (they know the gateway URL from the registry); the
/// lease shares that endpoint. If the port is taken, it binds another: this
/// machine still dials its peers, they just cannot dial it.
async fn start_sync(
    instance: &Arc<Instance>,
    store: &Arc<Store>,
    addr: SocketAddr,
    lease: mpsc::Sender<Connection>,
) -> anyhow::Result<SyncService> {
    let share = || Some((roost_awake::ALPN, lease.clone()));
    match SyncService::start_sharing(instance.clone(), store.clone(), addr, share()).await {
        Ok(sync) => Ok(sync),
        Err(e) => {
            tracing::warn!(error = %e, "sync endpoint not on the gateway's port; peers cannot dial this machine");
            Ok(SyncService::start_sharing(instance.clone(), store.clone(), SocketAddr::new(addr.ip(), 0), share())
                .await?)
        }
    }
}

pub async fn stdio(instance: Instance) -> anyhow::Result<()> {
    let store = Arc::new(instance.open_store()?);
    let federation = Federation::new(&instance, store.clone(), None);
    let refreshing = federation.start_refreshing();
    let config = &instance.config;
    let tools = RoostTools::new(store, &config.name, &config.federation.peer_tools).with_remote(Arc::new(federation));
    let service = tools.serve(rmcp::transport::stdio()).await.context("starting the MCP session on stdio")?;
    let ended = service.waiting().await.context("MCP session on stdio");
    refreshing.abort();
    ended.map(drop)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
