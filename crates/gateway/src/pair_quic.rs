//! Pairing over QUIC (ALPN `roost/pair/1`), for a joiner on another network
//! that reaches this machine only through a relay: the same two steps as
//! `POST /api/v1/pair/start` and `/finish`, each a JSON frame on one
//! stream, answered by the same code. The connection is from a key no
//! machine of the chain knows yet; SPAKE2 and the code are what admit it.

use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Connection, VarInt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use roost_sync::frame;

use crate::AppState;
use crate::api::ApiError;
use crate::pair::{FinishRequest, StartRequest, finished, started};

/// How long a joiner may take over each step: reading the short
/// authentication string and answering yes is one of them.
const STEP_WAIT: Duration = Duration::from_secs(120);
/// How long the joiner has to close once it has the grant.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Serves the pairing connections replication hands over until `cancel`.
pub(crate) async fn serve(incoming: mpsc::Receiver<Connection>, state: Arc<AppState>, cancel: CancellationToken) {
    crate::handed_over::serve_each(incoming, cancel, "pairing exchanges", |conn, _| {
        let state = state.clone();
        async move {
            if let Err(e) = exchange(&state, &conn).await {
                tracing::info!(error = %e, "pairing through a relay ended early");
            }
            conn.close(VarInt::from_u32(0), b"done");
        }
    })
    .await;
}

/// One joiner's exchange: start, then finish, each answered with the HTTP
/// endpoint's body or `{"error": ...}`.
async fn exchange(state: &Arc<AppState>, conn: &Connection) -> Result<(), roost_sync::SyncError> {
    let accepted = tokio::time::timeout(STEP_WAIT, conn.accept_bi()).await;
    let (mut send, mut recv) = accepted
        .map_err(|_| roost_sync::SyncError::Stream("no stream opened".into()))?
        .map_err(|e| roost_sync::SyncError::Stream(e.to_string()))?;
    let request: StartRequest = frame::read_json(&mut recv, STEP_WAIT).await?;
    let reply = answer(started(state, request).await);
    let failed = reply.get("error").is_some();
    frame::write_json(&mut send, &reply).await?;
    if failed {
        return Ok(());
    }
    let request: FinishRequest = frame::read_json(&mut recv, STEP_WAIT).await?;
    let from = roost_sync::remote_ip(conn);
    frame::write_json(&mut send, &answer(finished(state, request, from).await)).await?;
    let _ = send.finish();
    // The joiner closes once it has read the grant.
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.closed()).await;
    Ok(())
}

fn answer<T: serde::Serialize>(result: Result<T, ApiError>) -> Value {
    match result {
        Ok(answer) => json!(answer),
        Err(ApiError(status, message)) => json!({"error": message, "status": status.as_u16()}),
    }
}
