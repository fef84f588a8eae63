//! The loop of each protocol replication hands the gateway by ALPN
//! (federation, pairing): every connection served as a task until the
//! gateway stops, then a bounded wait for them all.

use std::future::Future;
use std::time::Duration;

use iroh::endpoint::Connection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use roost_tasks::Tasks;

/// How long stopping waits for the connections' tasks to end.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Serves each connection from `incoming` with `serve` (given the task set,
/// for the tasks it starts in turn) until `cancel`; `what` names them in the
/// warning when they outlast the stop.
pub(crate) async fn serve_each<F, Fut>(
    mut incoming: mpsc::Receiver<Connection>,
    cancel: CancellationToken,
    what: &str,
    mut serve: F,
) where
    F: FnMut(Connection, Tasks) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tasks = Tasks::new();
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => break,
            conn = incoming.recv() => match conn {
                Some(conn) => conn,
                None => break,
            },
        };
        tasks.spawn(serve(conn, tasks.clone()));
    }
    if !tasks.stop(STOP_GRACE).await {
        tracing::warn!("{what} still open {STOP_GRACE:?} after the stop");
    }
}
