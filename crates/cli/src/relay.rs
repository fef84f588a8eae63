//! `roost relay`: iroh's own relay server (the `iroh-relay` crate), for a
//! machine every other machine can reach (a VPS). Two machines that cannot
//! reach each other directly — both behind NAT, or UDP blocked between them —
//! meet through it: each keeps a connection to it, and iroh first tries to
//! punch a direct path and relays the packets when it cannot. What it relays
//! is the machines' QUIC, end-to-end encrypted between their keys, so the
//! relay sees who talks to whom and how much, never what. It serves plain
//! HTTP on `bind`; for `https://` put a TLS-terminating proxy in front.

use std::net::SocketAddr;

use anyhow::Context;
use iroh_relay::server::{RelayConfig, Server, ServerConfig};

use crate::out::say;

pub async fn run(bind: SocketAddr) -> anyhow::Result<()> {
    let mut config = ServerConfig::default();
    config.relay = Some(RelayConfig::new(bind));
    let mut server = Server::spawn(config).await.with_context(|| {
        format!("cannot start the relay on {bind}; is another program using it? choose another with --bind")
    })?;
    let addr = server.http_addr().context("the relay has no HTTP address")?;
    say!("roost: relay listening on http://{addr} (name it in each machine's [sync] relays)")?;
    tracing::info!(%addr, "relay started");
    tokio::select! {
        _ = crate::serve::shutdown_signal() => {}
        ended = server.join() => {
            anyhow::bail!("the relay stopped by itself: {ended:?}");
        }
    }
    server.shutdown().await.context("stopping the relay")?;
    tracing::info!("relay stopped");
    Ok(())
}
