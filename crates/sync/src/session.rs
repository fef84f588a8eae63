//! One replication session with one peer: hello, then entries both ways.
//!
//! The sender streams, in local log order, every entry the peer lacks, at
//! most [`WINDOW`] unacknowledged, reading the log in bounded batches — so a
//! slow peer costs neither the writer's time nor unbounded memory. The
//! receiver applies batches through `Store::apply`, holds entries that are
//! not ready in an [`Inbox`], and answers with its heads.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{Notify, mpsc};

use roost_core::protocol::{Heads, Inbox, MAX_BATCH, Message, PROTOCOL_VERSION, PeerView, SignedEntry, behind};
use roost_identity::Certificate;
use roost_instance::Instance;
use roost_store::{Store, StoreError, Verdict};

use crate::{Shared, SyncError, frame, now_text};

/// How long a peer has to say hello.
pub const HELLO_WAIT: Duration = Duration::from_secs(10);
/// A peer silent for this long is gone (each side sends heads every [`KEEPALIVE`]).
const IDLE_WAIT: Duration = Duration::from_secs(20);
const KEEPALIVE: Duration = Duration::from_secs(3);
/// How often the log is checked for writes made by other processes.
const POLL: Duration = Duration::from_millis(250);
/// Most entries sent and not yet acknowledged.
const WINDOW: u64 = 16 * MAX_BATCH as u64;
/// Bytes of rows per batch, so batches of large rows stay small.
const BATCH_BYTES: usize = 4 << 20;
/// Messages the receiver reads ahead of applying.
const READ_AHEAD: usize = 8;
/// Most entries the receiver applies in one transaction.
const APPLY_MAX: usize = 8 * MAX_BATCH;

const CLOSE_REFUSED: u32 = 403;

/// The peer a session talks to, once its hello checked out.
struct Peer {
    id: String,
    name: String,
    heads: Heads,
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| SyncError::Stream(format!("store task failed: {e}")))?
        .map_err(SyncError::from)
}

/// Runs a session on an open connection; `expected` is the peer's id when
/// this side dialed.
pub async fn run(
    shared: Arc<Shared>,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    expected: Option<&str>,
) -> Result<(), SyncError> {
    let store = shared.store.clone();
    let heads = blocking(&store, |s| s.heads()).await?;
    let known: Vec<_> =
        blocking(&store, |s| s.instances()).await?.into_iter().filter(|e| e.status != "revoked").collect();
    let announced: HashSet<String> = known.iter().map(|e| e.id.clone()).collect();
    let certificates = std::iter::once(shared.instance.certificate.to_text())
        .chain(known.into_iter().map(|e| e.certificate))
        .take(1024)
        .collect();
    let hello = Message::Hello { version: PROTOCOL_VERSION, certificates, heads: heads.clone() };
    frame::write(&mut send, &hello).await?;
    let hello = frame::read(&mut recv, HELLO_WAIT).await?;
    let peer = match check_hello(&shared, &conn, hello, expected).await {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(remote = %conn.remote_id().fmt_short(), reason = %e, "sync peer refused");
            conn.close(VarInt::from_u32(CLOSE_REFUSED), e.to_string().as_bytes());
            return Err(e);
        }
    };
    let dialer = if expected.is_some() { shared.instance.id.clone() } else { peer.id.clone() };
    let cancel = shared.stop.child_token();
    let Some(token) = shared.admit(&peer.id, &dialer, cancel.clone()) else {
        conn.close(VarInt::from_u32(0), b"duplicate session");
        return Ok(());
    };
    tracing::info!(peer = %peer.name, "sync session started");
    shared.update(&peer.id, |l| {
        l.connected = true;
        l.attempted = true;
        l.last_error = None;
        l.last_sync = Some(now_text());
        l.behind = behind(&heads, &peer.heads);
        l.ahead = behind(&peer.heads, &heads);
    });
    let (id, name) = (peer.id.clone(), peer.name.clone());
    let _ = blocking(&store, move |s| s.mark_seen(&id, "online")).await;

    let view = Arc::new(Mutex::new(PeerView::new(peer.heads)));
    let acked = Arc::new(Notify::new());
    let (control, control_rx) = mpsc::channel(64);
    let outcome = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = sender(&shared, &peer.id, &mut send, view.clone(), acked.clone(), control_rx, announced) => r,
        r = receiver(&shared, &peer.id, &mut recv, view, acked, control) => r,
    };
    shared.release(&peer.id, token);
    if let Err(e) = &outcome {
        tracing::info!(peer = %name, error = %e, "sync session ended");
        shared.update(&peer.id, |l| l.last_error = Some(e.to_string()));
    }
    let id = peer.id.clone();
    let _ = blocking(&store, move |s| s.mark_seen(&id, "offline")).await;
    conn.close(VarInt::from_u32(0), b"bye");
    outcome
}

/// Checks the peer's hello: same protocol, a certificate from this identity
/// for the key the connection was made with, not revoked. Machines the peer
/// knows and this one does not are registered from their certificates.
async fn check_hello(
    shared: &Arc<Shared>,
    conn: &Connection,
    hello: Message,
    expected: Option<&str>,
) -> Result<Peer, SyncError> {
    let Message::Hello { version, certificates, heads } = hello else {
        return Err(SyncError::Protocol("expected a hello".into()));
    };
    if version != PROTOCOL_VERSION {
        return Err(SyncError::Refused(format!(
            "peer speaks sync protocol {version}, this instance {PROTOCOL_VERSION}; upgrade the older one"
        )));
    }
    let identity = shared.instance.identity_key();
    let own = certificates.first().ok_or_else(|| SyncError::Protocol("hello without a certificate".into()))?;
    let cert = Certificate::from_text(own)
        .ok()
        .filter(|c| c.verify(&identity).is_ok())
        .ok_or_else(|| SyncError::Refused("the peer's certificate is not from this identity".into()))?;
    if cert.claims.signing_key != *conn.remote_id().as_bytes() {
        return Err(SyncError::Refused("the peer's certificate names another machine key".into()));
    }
    let id = cert.claims.instance_id.clone();
    if id == shared.instance.id || expected.is_some_and(|e| e != id) {
        return Err(SyncError::Refused(format!("the peer is {id}, not the machine dialed")));
    }
    let instance = shared.instance.clone();
    let store = shared.store.clone();
    let peer_id = id.clone();
    tokio::task::spawn_blocking(move || -> Result<(), SyncError> {
        match store.instance_by_id(&peer_id) {
            Ok(entry) if entry.status == "revoked" => {
                return Err(SyncError::Refused(format!("machine {} is revoked", entry.name)));
            }
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                instance.register(&store, &cert, None).map_err(|e| SyncError::Refused(e.to_string()))?
            }
            Err(e) => return Err(e.into()),
        }
        learn(&instance, &store, &certificates[1..]);
        Ok(())
    })
    .await
    .map_err(|e| SyncError::Stream(e.to_string()))??;
    let name = shared.store.instance_by_id(&id).map(|e| e.name).unwrap_or_default();
    Ok(Peer { id, name, heads })
}

/// Registers the machines of these certificates that this one does not know
/// yet; a certificate that does not verify against the identity is ignored.
fn learn(instance: &Instance, store: &Store, certificates: &[String]) {
    for text in certificates {
        let Ok(cert) = Certificate::from_text(text) else { continue };
        let unknown = matches!(store.instance_by_id(&cert.claims.instance_id), Err(StoreError::NotFound { .. }));
        if unknown
            && cert.claims.instance_id != instance.id
            && cert.verify(&instance.identity_key()).is_ok()
            && let Err(e) = instance.register(store, &cert, None)
        {
            tracing::warn!(error = %e, "could not register a machine a peer vouched for");
        }
    }
}

/// The certificates of origins in `entries` not yet announced to the peer.
async fn unannounced(
    store: &Arc<Store>,
    entries: &[SignedEntry],
    announced: &mut HashSet<String>,
) -> Result<Vec<String>, SyncError> {
    let new: Vec<String> = entries
        .iter()
        .map(|e| e.entry.origin.clone())
        .filter(|o| !announced.contains(o))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if new.is_empty() {
        return Ok(Vec::new());
    }
    announced.extend(new.iter().cloned());
    blocking(store, move |s| Ok(new.iter().filter_map(|id| s.instance_by_id(id).ok()).map(|e| e.certificate).collect()))
        .await
}

async fn sender(
    shared: &Arc<Shared>,
    peer: &str,
    send: &mut SendStream,
    view: Arc<Mutex<PeerView>>,
    acked: Arc<Notify>,
    mut control: mpsc::Receiver<Message>,
    mut announced: HashSet<String>,
) -> Result<(), SyncError> {
    let store = &shared.store;
    let mut log_grew = shared.log_grew.subscribe();
    let reported = view.lock().expect("view poisoned").heads().clone();
    let mut cursor = blocking(store, move |s| s.scan_start(&reported)).await?;
    let mut last_heads: Option<Heads> = None;
    let mut last_heads_at = tokio::time::Instant::now();
    loop {
        while let Ok(message) = control.try_recv() {
            frame::write(send, &message).await?;
        }
        log_grew.borrow_and_update();
        let in_flight = view.lock().expect("view poisoned").in_flight();
        if in_flight < WINDOW {
            let after = cursor;
            let batch = blocking(store, move |s| s.entries_after(after, MAX_BATCH as u32)).await?;
            if let Some((last, _)) = batch.last() {
                cursor = *last;
                let mut out: Vec<SignedEntry> = Vec::new();
                let mut bytes = 0;
                {
                    let mut view = view.lock().expect("view poisoned");
                    for (seq, signed) in batch {
                        if !view.lacks(&signed.entry.origin, signed.entry.seq) {
                            continue;
                        }
                        if bytes > BATCH_BYTES {
                            cursor = seq - 1;
                            break;
                        }
                        bytes += signed.entry.row.len();
                        view.sent(&signed.entry.origin, signed.entry.seq);
                        out.push(signed);
                    }
                }
                if !out.is_empty() {
                    let certificates = unannounced(store, &out, &mut announced).await?;
                    if !certificates.is_empty() {
                        frame::write(send, &Message::Certificates(certificates)).await?;
                    }
                    frame::write(send, &Message::Entries(out)).await?;
                }
                continue;
            }
        }
        // Idle (or the window is full): tell the peer our heads when they
        // moved, and at least every KEEPALIVE.
        let heads = blocking(store, |s| s.heads()).await?;
        if last_heads.as_ref() != Some(&heads) || last_heads_at.elapsed() >= KEEPALIVE {
            let peer_heads = view.lock().expect("view poisoned").heads().clone();
            shared.update(peer, |l| l.ahead = behind(&peer_heads, &heads));
            frame::write(send, &Message::Heads(heads.clone())).await?;
            last_heads = Some(heads);
            last_heads_at = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = log_grew.changed() => {}
            _ = acked.notified() => {}
            message = control.recv() => {
                if let Some(message) = message {
                    frame::write(send, &message).await?;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Reads messages ahead of the applier, so the network and decoding overlap
/// with applying, and applies runs of entry batches that have arrived
/// together in one transaction.
async fn receiver(
    shared: &Arc<Shared>,
    peer: &str,
    recv: &mut RecvStream,
    view: Arc<Mutex<PeerView>>,
    acked: Arc<Notify>,
    control: mpsc::Sender<Message>,
) -> Result<(), SyncError> {
    let (arrived, mut incoming) = mpsc::channel(READ_AHEAD);
    let reader = async move {
        loop {
            let message = frame::read(recv, IDLE_WAIT).await?;
            if arrived.send(message).await.is_err() {
                return Ok(());
            }
        }
    };
    let store = &shared.store;
    let handler = async move {
        let mut inbox = Inbox::default();
        let mut next: Option<Message> = None;
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => match incoming.recv().await {
                    Some(message) => message,
                    None => return Ok(()),
                },
            };
            match message {
                Message::Entries(mut batch) => {
                    while batch.len() < APPLY_MAX {
                        match incoming.try_recv() {
                            Ok(Message::Entries(more)) => batch.extend(more),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut applied = apply_holding(store, batch, &mut inbox).await?;
                    // Entries held back may be ready now; retry while that helps.
                    while applied && !inbox.is_empty() {
                        applied = apply_holding(store, inbox.drain(), &mut inbox).await?;
                    }
                    let heads = blocking(store, |s| s.heads()).await?;
                    let peer_heads = view.lock().expect("view poisoned").heads().clone();
                    shared.update(peer, |l| {
                        l.behind = behind(&heads, &peer_heads);
                        l.last_sync = Some(now_text());
                    });
                    if control.send(Message::Heads(heads)).await.is_err() {
                        return Ok(());
                    }
                }
                Message::Heads(heads) => {
                    let ours = blocking(store, |s| s.heads()).await?;
                    view.lock().expect("view poisoned").reported(&heads);
                    shared.update(peer, |l| {
                        l.behind = behind(&ours, &heads);
                        l.ahead = behind(&heads, &ours);
                        l.last_sync = Some(now_text());
                    });
                    acked.notify_one();
                }
                Message::Certificates(certificates) => {
                    let (instance, store) = (shared.instance.clone(), store.clone());
                    tokio::task::spawn_blocking(move || learn(&instance, &store, &certificates))
                        .await
                        .map_err(|e| SyncError::Stream(e.to_string()))?;
                }
                Message::Hello { .. } => return Err(SyncError::Protocol("a second hello".into())),
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = handler => r,
    }
}

/// Applies `batch`, holding what is not ready yet; true if anything applied.
async fn apply_holding(store: &Arc<Store>, batch: Vec<SignedEntry>, inbox: &mut Inbox) -> Result<bool, SyncError> {
    let (batch, verdicts) = blocking(store, move |s| {
        let verdicts = s.apply(&batch)?;
        Ok((batch, verdicts))
    })
    .await?;
    let mut applied = false;
    for (entry, verdict) in batch.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Applied => applied = true,
            Verdict::NotReady => {
                if !inbox.hold(entry) {
                    return Err(SyncError::Protocol("too many entries waiting for their dependencies".into()));
                }
            }
            Verdict::Duplicate | Verdict::Refused(_) => {}
        }
    }
    Ok(applied)
}
