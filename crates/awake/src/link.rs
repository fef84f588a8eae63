//! Lease messages between machines: QUIC datagrams over iroh.
//!
//! Datagrams suit the lease: every message is small and self-contained, and a
//! lost one is covered by the next renewal or retry, so nothing waits on
//! retransmission. One connection per peer carries both directions: the one
//! this machine dialed or the one the peer dialed, whichever is newest and
//! alive, so a machine others cannot dial (its port was taken) still takes
//! part through its own dials. A peer is known by its key, which the QUIC
//! handshake proves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iroh::Endpoint;
use iroh::endpoint::{Connection, VarInt};
use tokio::sync::mpsc;

use roost_lease::NodeId;
use roost_store::InstanceEntry;
use roost_tasks::Tasks;

/// The ALPN of the lease protocol.
pub const ALPN: &[u8] = b"roost/lease/1";

const DIAL_WAIT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Messages waiting for a connection; more are dropped (the protocol retries).
const QUEUE: usize = 64;

/// A peer's outgoing queue; dropping it ends the peer's send loop.
struct PeerLink {
    addresses: Vec<String>,
    queue: mpsc::Sender<Bytes>,
}

pub(crate) struct Links {
    endpoint: Endpoint,
    /// Relays peers may be reached through (replication's set: `[sync]
    /// relays`, and those peers named since).
    relays: roost_sync::Relays,
    inbox: mpsc::Sender<(NodeId, Bytes)>,
    peers: Mutex<HashMap<NodeId, PeerLink>>,
    /// Signing key (hex) → instance id, for accepted connections.
    keys: Mutex<HashMap<String, NodeId>>,
    /// The newest connection with each peer, whoever dialed it.
    connections: Mutex<HashMap<NodeId, Connection>>,
    /// The send and read loops, stopped with the lease.
    tasks: Tasks,
}

impl Links {
    pub fn new(
        endpoint: Endpoint,
        relays: roost_sync::Relays,
        inbox: mpsc::Sender<(NodeId, Bytes)>,
        tasks: Tasks,
    ) -> Arc<Links> {
        Arc::new(Links {
            endpoint,
            relays,
            inbox,
            peers: Mutex::default(),
            keys: Mutex::default(),
            connections: Mutex::default(),
            tasks,
        })
    }

    /// Keeps a link to each of `peers` (this machine excluded by the caller)
    /// and drops links to machines no longer among them, closing their
    /// connections (a revoked machine is heard no more).
    pub fn set_peers(self: &Arc<Links>, peers: &[InstanceEntry]) {
        *self.keys.lock().expect("keys poisoned") =
            peers.iter().map(|p| (p.signing_key.clone(), p.id.clone())).collect();
        self.connections.lock().expect("connections poisoned").retain(|id, conn| {
            let kept = peers.iter().any(|p| &p.id == id);
            if !kept {
                conn.close(VarInt::from_u32(403), b"no longer a machine of this chain");
            }
            kept
        });
        let mut links = self.peers.lock().expect("links poisoned");
        links.retain(|id, link| peers.iter().any(|p| &p.id == id && p.addresses == link.addresses));
        for peer in peers {
            if links.contains_key(&peer.id) {
                continue;
            }
            let (queue, outgoing) = mpsc::channel(QUEUE);
            self.tasks.spawn(self.clone().send_loop(peer.clone(), outgoing));
            links.insert(peer.id.clone(), PeerLink { addresses: peer.addresses.clone(), queue });
        }
    }

    /// Waits at most `limit` until every queued message has been handed to
    /// its connection (a release, before the lease stops).
    pub async fn flushed(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline && self.queued() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn queued(&self) -> bool {
        self.peers.lock().expect("links poisoned").values().any(|link| link.queue.capacity() < QUEUE)
    }

    /// Queues `bytes` for `to`; dropped when its queue is full.
    pub fn send(&self, to: &str, bytes: Vec<u8>) {
        if let Some(link) = self.peers.lock().expect("links poisoned").get(to) {
            let _ = link.queue.try_send(Bytes::from(bytes));
        }
    }

    /// Takes a connection a peer dialed, once it is known to be one.
    pub fn accepted(self: &Arc<Links>, conn: Connection) {
        let key = roost_core::hex::encode(conn.remote_id().as_bytes());
        let peer = self.keys.lock().expect("keys poisoned").get(&key).cloned();
        match peer {
            Some(peer) => self.adopt(peer, conn),
            None => conn.close(VarInt::from_u32(403), b"not a machine of this chain"),
        }
    }

    /// Sends over `conn` from now on, and reads from it until it closes.
    fn adopt(self: &Arc<Links>, peer: NodeId, conn: Connection) {
        self.connections.lock().expect("connections poisoned").insert(peer.clone(), conn.clone());
        self.tasks.spawn(self.clone().read(peer, conn));
    }

    fn live(&self, peer: &str) -> Option<Connection> {
        let connections = self.connections.lock().expect("connections poisoned");
        connections.get(peer).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// Sends each queued message over the live connection, dialing when
    /// there is none (at most once per backoff; messages meanwhile are
    /// dropped, the protocol repeats what matters).
    async fn send_loop(self: Arc<Links>, peer: InstanceEntry, mut outgoing: mpsc::Receiver<Bytes>) {
        let mut backoff = BACKOFF_MIN;
        let mut next_dial = tokio::time::Instant::now();
        while let Some(bytes) = outgoing.recv().await {
            let conn = match self.live(&peer.id) {
                Some(conn) => conn,
                None if tokio::time::Instant::now() < next_dial => continue,
                None => match self.dial(&peer).await {
                    Some(conn) => {
                        backoff = BACKOFF_MIN;
                        self.adopt(peer.id.clone(), conn.clone());
                        conn
                    }
                    None => {
                        next_dial = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            if let Err(e) = conn.send_datagram(bytes) {
                tracing::debug!(peer = %peer.name, error = %e, "lease link lost");
            }
        }
    }

    async fn dial(&self, peer: &InstanceEntry) -> Option<Connection> {
        let address =
            match roost_sync::address::endpoint_addr(peer, &self.relays.get(), &self.endpoint.bound_sockets()).await {
                Ok(address) => address,
                Err(e) => {
                    tracing::debug!(peer = %peer.name, error = %e, "lease peer cannot be dialed");
                    return None;
                }
            };
        roost_sync::dial::connect(&self.endpoint, address, ALPN, DIAL_WAIT)
            .await
            .inspect_err(|e| tracing::debug!(peer = %peer.name, error = %e, "lease dial failed"))
            .ok()
    }

    async fn read(self: Arc<Links>, peer: NodeId, conn: Connection) {
        while let Ok(bytes) = conn.read_datagram().await {
            if self.inbox.send((peer.clone(), bytes)).await.is_err() {
                return;
            }
        }
    }
}
