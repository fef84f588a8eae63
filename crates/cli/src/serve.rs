//! `roost serve`, `roost witness` and `roost mcp`: the long-running processes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;
use tokio::net::UnixListener;

use roost_awake::Part;
use roost_federation::Federation;
use roost_gateway::Gateway;
use roost_instance::Instance;
use roost_machine::Machine;
use roost_mcp::RoostTools;

use crate::federate::ThroughGateway;
use crate::out::say;

/// Binding must not hang the boot path.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// `roost serve`: the gateway, replication and the awake role; with
/// `insecure_http` the Nest answers other machines over plain HTTP too.
pub async fn serve(instance: Instance, bind: Option<String>, insecure_http: bool) -> anyhow::Result<()> {
    run(instance, bind, Part::Machine, insecure_http).await
}

/// `roost witness`: a voter of the lease that holds no data and is never
/// awake. It serves `/health` and its certificate and answers lease messages
/// on the same port.
pub async fn witness(instance: Instance, bind: Option<String>) -> anyhow::Result<()> {
    run(instance, bind, Part::Witness, false).await
}

async fn run(instance: Instance, bind: Option<String>, part: Part, insecure_http: bool) -> anyhow::Result<()> {
    let _serving = instance.lock_serving()?;
    // Every connection holds a descriptor: take all the system allows.
    let shown = |limit: Option<u64>| limit.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    match roost_gateway::conn::raise_descriptor_limit() {
        Ok((before, after, hard)) => tracing::info!(
            "open-descriptor soft limit was {}, now {} (hard limit {})",
            shown(before),
            shown(after),
            shown(hard)
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-descriptor limit; fewer connections will be allowed")
        }
    }
    let store = Arc::new(instance.open_store()?);
    let bind = bind.unwrap_or_else(|| instance.config.gateway.bind.clone());
    let listener = tokio::time::timeout(BIND_WAIT, tokio::net::TcpListener::bind(&bind))
        .await
        .with_context(|| format!("binding {bind} took longer than {BIND_WAIT:?}"))?
        .with_context(|| format!("cannot listen on {bind}; is another program using it? choose another with --bind"))?;
    let addr = listener.local_addr()?;
    // Recorded before anything advertises this machine's addresses.
    instance.record_gateway_addr(&addr.to_string())?;
    let instance = Arc::new(instance);
    instance.register_self(&store)?;
    let machine = Machine::start(instance.clone(), store.clone(), addr, part).await?;
    let mut gateway = Gateway::new(instance.clone(), store.clone(), addr);
    gateway.nest_insecure_http = insecure_http;
    if !addr.ip().is_loopback() && !insecure_http {
        tracing::info!("the Nest answers only this machine; --insecure-http serves it to others over plain HTTP");
    }
    let federation = (part == Part::Machine).then(|| {
        let federation = Federation::new(&instance, store, machine.sync_source());
        federation.start_refreshing();
        federation
    });
    gateway.federation = federation.clone();
    gateway.machine = Some(machine.clone());
    let socket = Socket::bind(&instance.home)?;
    let what = if part == Part::Witness { "witness " } else { "" };
    let served = announce_and_serve(&instance, gateway, listener, socket, what).await;
    if let Some(federation) = federation {
        federation.stop().await;
    }
    machine.shutdown().await;
    served
}

/// The gateway's Unix socket in the home (mode 0600), removed on drop.
struct Socket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Socket {
    fn bind(home: &Path) -> anyhow::Result<Socket> {
        let path = home.join(roost_instance::SOCKET);
        // Left behind by a process that died: this one holds the home's lock.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
        Ok(Socket { path, listener: Some(listener) })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Announces the gateway, serves until SIGINT or SIGTERM, and tidies up.
async fn announce_and_serve(
    instance: &Arc<Instance>,
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    mut socket: Socket,
    what: &str,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    // The first line on stdout is the address, for people and for scripts. A
    // closed stdout stops no gateway: the log says the address too.
    if let Err(e) = say!("roost: {what}listening on http://{addr} (instance {}, {})", instance.config.name, instance.id)
    {
        tracing::warn!(error = %e, "cannot print the gateway's address on stdout");
    }
    tracing::info!(%addr, home = %instance.home.display(), "gateway started");
    let notifier = crate::notify::Notifier::from_env();
    if let Some(notifier) = &notifier {
        notifier.send(&format!("READY=1\nSTATUS=listening on http://{addr}"));
        notifier.keep_watchdog(gateway.store.clone(), gateway.machine.clone());
    }
    let served = gateway.serve(listener, socket.listener.take(), shutdown_signal()).await;
    if let Some(notifier) = &notifier {
        notifier.send("STOPPING=1");
    }
    instance.clear_gateway_addr();
    drop(socket);
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

pub async fn stdio(instance: Instance) -> anyhow::Result<()> {
    let store = Arc::new(instance.open_store()?);
    let federation = ThroughGateway::new(&instance, store.clone());
    federation.start_refreshing();
    let config = &instance.config;
    let tools = RoostTools::new(store, &config.name, &config.federation.peer_tools)
        .with_remote(Arc::new(federation.clone()))
        .with_agent(Arc::new(GatewayAgent(instance.home.clone())));
    let transport = roost_mcp::stdio::transport(tokio::io::stdin(), tokio::io::stdout());
    let service = tools.serve(transport).await.context("starting the MCP session on stdio")?;
    let ended = service.waiting().await.context("MCP session on stdio");
    federation.stop().await;
    ended.map(drop)
}

/// `roost_agent_status` in `roost mcp`: asks this machine's gateway, which
/// runs the lease.
struct GatewayAgent(PathBuf);

impl roost_mcp::AgentSource for GatewayAgent {
    fn status(&self) -> roost_mcp::Pending<Result<serde_json::Value, String>> {
        let home = self.0.clone();
        Box::pin(async move {
            let ask = move || crate::http::local(&home, "/health", None, crate::http::WAIT);
            let health = match roost_tasks::blocking("asking the gateway", crate::http::WAIT * 2, ask).await {
                Ok(Ok(health)) => health,
                Ok(Err(e)) => return Err(format!("{e:#}")),
                Err(e) => return Err(e.to_string()),
            };
            Ok(roost_mcp::agent_status(&health["lease"], &health["agent"]))
        })
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
