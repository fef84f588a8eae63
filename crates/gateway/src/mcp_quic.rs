//! The MCP tools for the other machines of the chain over QUIC (ALPN
//! `roost/mcp/1`): each bidirectional stream a peer opens is one MCP session,
//! newline-delimited JSON-RPC as on stdio, encrypted by the connection.
//!
//! The caller is the machine whose key the connection was made with: it must
//! be registered here and not revoked, checked for every new session and
//! every second while the connection is open. What
//! it may call is `[federation] peer_tools`, as over HTTP.

use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Connection, VarInt};
use rmcp::ServiceExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use roost_mcp::{Caller, RoostTools};
use roost_store::Store;
use roost_tasks::Tasks;

use crate::DB_WAIT;

/// How often an open connection's machine is checked again: a revocation
/// closes it within this.
const RECHECK: Duration = Duration::from_secs(1);
/// The code a connection is closed with when its key is no machine of the chain.
const NOT_A_MACHINE: u32 = 403;

/// Serves the connections replication hands over until `cancel`.
pub(crate) async fn serve(
    incoming: mpsc::Receiver<Connection>,
    tools: RoostTools,
    store: Arc<Store>,
    cancel: CancellationToken,
) {
    crate::handed_over::serve_each(incoming, cancel, "federation sessions", |conn, sessions| {
        connection(conn, tools.clone(), store.clone(), sessions)
    })
    .await;
}

/// Serves every stream of one connection as a session of the machine whose
/// key made it, until that machine is revoked: then the connection closes,
/// and its open sessions with it.
async fn connection(conn: Connection, tools: RoostTools, store: Arc<Store>, sessions: Tasks) {
    let Some(id) = machine_of(&store, &conn).await else {
        return refuse(&conn);
    };
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        let (send, recv) = tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok(streams) => streams,
                Err(_) => return,
            },
            _ = recheck.tick() => {
                if machine_of(&store, &conn).await.is_none() {
                    return refuse(&conn);
                }
                continue;
            }
        };
        if machine_of(&store, &conn).await.is_none() {
            return refuse(&conn);
        }
        let tools = tools.clone().for_caller(Caller::Machine { id: id.clone() });
        let id = id.clone();
        sessions.spawn(async move {
            match tools.serve(roost_mcp::stdio::transport(recv, send)).await {
                Ok(session) => {
                    let _ = session.waiting().await;
                }
                Err(e) => tracing::debug!(machine = %id, error = %e, "a federation session did not start"),
            }
        });
    }
}

fn refuse(conn: &Connection) {
    tracing::warn!(key = %conn.remote_id().fmt_short(), "refused federation from a key that is no machine of this chain");
    conn.close(VarInt::from_u32(NOT_A_MACHINE), b"not a machine of this chain");
}

/// The id of the active registered machine whose key made `conn`.
async fn machine_of(store: &Arc<Store>, conn: &Connection) -> Option<String> {
    let key = roost_core::hex::encode(conn.remote_id().as_bytes());
    let store = store.clone();
    let entries = roost_tasks::blocking("the registry", DB_WAIT, move || store.instances()).await.ok()?.ok()?;
    entries.into_iter().find(|e| e.signing_key == key && !e.is_revoked()).map(|e| e.id)
}
