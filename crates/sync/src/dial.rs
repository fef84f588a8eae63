//! Dialing another machine, and getting a machine that moved back.
//!
//! iroh sends the first packets of a new connection only along the path it
//! selected for the peer while any connection to that peer is open, and it
//! selects again only when a path or a connection opens. A peer that took a
//! new address (a new DHCP lease) while an old connection to it was still
//! timing out leaves that selection on its old address, and nothing moves it:
//! every new dial goes there and times out, though the peer's own connections
//! here work. So every connection this process makes or accepts is noted by
//! the two keys, and a dial that times out while connections to that peer are
//! open closes them all. iroh then drops the selection, the next dial tries
//! every address known, and the sessions on those connections are made again.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use iroh::endpoint::{Connection, VarInt, WeakConnectionHandle};
use iroh::{Endpoint, EndpointAddr, EndpointId};

/// The code connections are closed with when a dial to their peer timed out.
const UNREACHABLE: u32 = 504;

/// Why no connection was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Open connections by (this endpoint's key, the peer's key). Weak: a
/// connection is gone from here once nothing holds it.
type Book = HashMap<(EndpointId, EndpointId), Vec<WeakConnectionHandle>>;

static OPEN: LazyLock<Mutex<Book>> = LazyLock::new(Mutex::default);

/// Notes a connection `endpoint` made or accepted.
pub fn note(endpoint: &Endpoint, conn: &Connection) {
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|_, conns| {
        conns.retain(|weak| weak.upgrade().is_some_and(|c| c.close_reason().is_none()));
        !conns.is_empty()
    });
    open.entry((endpoint.id(), conn.remote_id())).or_default().push(conn.weak_handle());
}

/// Connects to `to` with `alpn` within `wait`, and notes the connection. On
/// a timeout, closes this endpoint's open connections to that peer (see the
/// module's doc).
pub async fn connect(
    endpoint: &Endpoint,
    to: EndpointAddr,
    alpn: &[u8],
    wait: Duration,
) -> Result<Connection, DialError> {
    let peer = to.id;
    match tokio::time::timeout(wait, endpoint.connect(to, alpn)).await {
        Ok(Ok(conn)) => {
            note(endpoint, &conn);
            Ok(conn)
        }
        Ok(Err(e)) => Err(DialError::Failed(e.to_string())),
        Err(_) => {
            close_all(endpoint, peer);
            Err(DialError::TimedOut(wait))
        }
    }
}

/// Closes every open connection `endpoint` has with `peer`.
fn close_all(endpoint: &Endpoint, peer: EndpointId) {
    let conns = OPEN.lock().unwrap_or_else(PoisonError::into_inner).remove(&(endpoint.id(), peer)).unwrap_or_default();
    let open: Vec<Connection> = conns.iter().filter_map(WeakConnectionHandle::upgrade).collect();
    if open.is_empty() {
        return;
    }
    tracing::debug!(peer = %peer.fmt_short(), connections = open.len(), "a dial timed out beside open connections; closing them so every address is tried");
    for conn in open {
        conn.close(VarInt::from_u32(UNREACHABLE), b"redialing");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};

    use ed25519_dalek::SigningKey;
    use iroh::TransportAddr;
    use iroh::endpoint::ConnectionError;

    use super::*;

    const ALPN: &[u8] = b"roost/dial-test";

    async fn endpoint(seed: u8) -> Endpoint {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        crate::bind_endpoint(&key, Some(loopback), &[], vec![ALPN.to_vec()]).await.expect("a loopback endpoint")
    }

    /// Accepts connections on `server` into `kept`, which holds them open
    /// after the task is stopped.
    fn keep_accepting(server: Endpoint, kept: Arc<Mutex<Vec<Connection>>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                if let Ok(conn) = incoming.await {
                    kept.lock().unwrap().push(conn);
                }
            }
        })
    }

    fn address_of(server: &Endpoint) -> EndpointAddr {
        let addrs = server.bound_sockets().into_iter().map(TransportAddr::Ip);
        EndpointAddr::from_parts(server.id(), addrs)
    }

    #[tokio::test]
    async fn a_dial_that_times_out_closes_the_open_connections_to_that_peer_and_the_next_dial_works() {
        let (client, server) = (endpoint(1).await, endpoint(2).await);
        let kept = Arc::new(Mutex::new(Vec::new()));
        let accepting = keep_accepting(server.clone(), kept.clone());
        let wait = Duration::from_secs(5);

        let open = connect(&client, address_of(&server), ALPN, wait).await.expect("the first dial");
        // The peer stops taking connections: the next dial cannot finish.
        accepting.abort();
        let short = Duration::from_millis(300);
        let timed_out = connect(&client, address_of(&server), ALPN, short).await;
        assert_eq!(timed_out.unwrap_err(), DialError::TimedOut(short));
        let closed = tokio::time::timeout(wait, open.closed()).await.expect("the open connection closes");
        assert!(
            matches!(closed, ConnectionError::LocallyClosed),
            "closed by this side, not by the peer or a timeout: {closed:?}"
        );

        let accepting = keep_accepting(server.clone(), kept);
        let again = connect(&client, address_of(&server), ALPN, wait).await.expect("a dial after the repair");
        assert!(again.close_reason().is_none());

        accepting.abort();
        client.close().await;
        server.close().await;
    }
}
