//! One replication session with one peer: hello, then entries both ways.
//!
//! The sender streams, in local log order, every entry the peer lacks, at
//! most [`WINDOW`] unacknowledged, reading the log in bounded batches — so a
//! slow peer costs neither the writer's time nor unbounded memory. The
//! receiver applies batches through `Store::apply`, holds entries that are
//! not ready in an [`Inbox`], and answers with its heads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{Notify, mpsc};

use roost_core::protocol::{
    Heads, Inbox, MAX_BATCH, Machine, Message, PROTOCOL_VERSION, PeerView, SignedEntry, behind,
};
use roost_identity::Certificate;
use roost_instance::Instance;
use roost_instance::addresses::{host_and_port, is_loopback_url, url_for};
use roost_store::{InstanceEntry, Store, StoreError, Verdict};

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
/// How long a session waits for one database call (an apply of a large
/// batch included) before it gives up and reconnects.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// The peer a session talks to, once its hello checked out.
struct Peer {
    id: String,
    name: String,
    heads: Heads,
    address: Option<String>,
    /// The session runs over loopback: the peer is on this host.
    over_loopback: bool,
    /// Both sides keep the log, so entries flow; with a witness, only the
    /// machines of the chain and heads do.
    entries: bool,
}

/// What this side has told its peer of each machine: certificate and
/// addresses, so only news is sent again.
type Told = HashMap<String, Machine>;

/// A store call off the async threads, bounded by [`STORE_WAIT`].
pub(crate) async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    let store = store.clone();
    Ok(roost_tasks::blocking("a replication database call", STORE_WAIT, move || f(&store)).await??)
}

/// The addresses this machine advertises (reads the running gateway's
/// address file and the network interfaces).
async fn own_addresses(shared: &Shared) -> Result<Vec<String>, SyncError> {
    let instance = shared.instance.clone();
    Ok(roost_tasks::blocking("reading this machine's addresses", STORE_WAIT, move || instance.advertised_urls())
        .await?)
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
    let own = Machine { certificate: shared.instance.certificate.to_text(), addresses: own_addresses(&shared).await? };
    let mut told = Told::new();
    let others = news(&shared, &mut told).await?;
    let machines = std::iter::once(own).chain(others).collect();
    let software = roost_instance::VERSION.to_string();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        software,
        keeps_data: shared.keeps_data,
        machines,
        heads: heads.clone(),
    };
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
    let cancel = shared.tasks.token().child_token();
    let Some(token) = shared.admit(&peer.id, &dialer, cancel.clone()) else {
        conn.close(VarInt::from_u32(0), b"duplicate session");
        return Ok(());
    };
    tracing::info!(peer = %peer.name, "sync session started");
    shared.update(&peer.id, |l| {
        l.connected = true;
        l.attempted = true;
        l.no_address = false;
        l.address = peer.address.clone();
        l.last_error = None;
        l.last_sync = Some(now_text());
        l.behind = if peer.entries { behind(&heads, &peer.heads) } else { 0 };
        l.ahead = if peer.entries { behind(&peer.heads, &heads) } else { 0 };
    });
    let (id, name) = (peer.id.clone(), peer.name.clone());
    let _ = blocking(&store, move |s| s.mark_seen(&id)).await;

    let view = Arc::new(Mutex::new(PeerView::new(peer.heads.clone())));
    let acked = Arc::new(Notify::new());
    let (control, control_rx) = mpsc::channel(64);
    let outcome = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = sender(&shared, &peer, &mut send, view.clone(), acked.clone(), control_rx, told) => r,
        r = receiver(&shared, &peer, &mut recv, view, acked, control) => r,
    };
    shared.release(&peer.id, token);
    if let Err(e) = &outcome {
        tracing::info!(peer = %name, error = %e, "sync session ended");
        shared.update(&peer.id, |l| l.last_error = Some(e.to_string()));
    }
    let id = peer.id.clone();
    let _ = blocking(&store, move |s| s.mark_seen(&id)).await;
    conn.close(VarInt::from_u32(0), b"bye");
    outcome
}

/// The remote IP of the connection's path in use.
fn remote_ip(conn: &Connection) -> Option<IpAddr> {
    let paths = conn.paths();
    let path = paths.iter().find(|p| p.is_selected()).or_else(|| paths.iter().next())?;
    match path.remote_addr() {
        iroh::TransportAddr::Ip(socket) => Some(socket.ip()),
        _ => None,
    }
}

/// The addresses a machine on another host may be trusted to mean: a
/// loopback URL from across the network names the receiver's own loopback.
fn usable(addresses: &[String], over_loopback: bool) -> Vec<String> {
    addresses.iter().filter(|a| over_loopback || !is_loopback_url(a)).cloned().collect()
}

/// Checks the peer's hello: same protocol, a certificate from this identity
/// for the key the connection was made with, not revoked. Records where the
/// peer says it can be reached (and where the connection came from), and
/// the machines it knows.
async fn check_hello(
    shared: &Arc<Shared>,
    conn: &Connection,
    hello: Message,
    expected: Option<&str>,
) -> Result<Peer, SyncError> {
    let Message::Hello { version, software, keeps_data, machines, heads } = hello else {
        return Err(SyncError::Protocol("expected a hello".into()));
    };
    if version != PROTOCOL_VERSION {
        return Err(SyncError::Refused(format!(
            "peer speaks sync protocol {version}, this instance {PROTOCOL_VERSION}; upgrade the older one"
        )));
    }
    let identity = shared.instance.identity_key();
    let own = machines.first().ok_or_else(|| SyncError::Protocol("hello without a certificate".into()))?;
    let cert = Certificate::from_text(&own.certificate)
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
    let ip = remote_ip(conn);
    let over_loopback = ip.is_some_and(|ip| ip.is_loopback());
    let mut reported = usable(&own.addresses, over_loopback);
    // Where it came from, at the port it says its gateway listens on.
    let observed = ip.zip(reported.first().and_then(|u| host_and_port(u)).map(|(_, port)| port));
    let address = observed.map(|(ip, port)| url_for(ip, port));
    if let Some(url) = address.clone().filter(|u| !reported.contains(u)) {
        reported.push(url);
    }
    let instance = shared.instance.clone();
    let store = shared.store.clone();
    let peer_id = id.clone();
    let others: Vec<Machine> = machines[1..].to_vec();
    let registering = move || -> Result<(bool, String), SyncError> {
        let mut grew = match store.instance_by_id(&peer_id) {
            Ok(entry) if entry.is_revoked() => {
                return Err(SyncError::Refused(format!("machine {} is revoked", entry.name)));
            }
            Ok(entry) => refresh_certificate(&instance, &store, &entry, &cert),
            Err(StoreError::NotFound { .. }) => {
                instance.register(&store, &cert, &reported).map_err(|e| SyncError::Refused(e.to_string()))?;
                true
            }
            Err(e) => return Err(e.into()),
        };
        grew |= store.note_self_report(&peer_id, &reported, &software)?;
        grew |= learn(&instance, &store, &others, &peer_id, over_loopback);
        let name = store.instance_by_id(&peer_id).map(|e| e.name).unwrap_or_default();
        Ok((grew, name))
    };
    let (grew, name) = roost_tasks::blocking("registering the peer", STORE_WAIT, registering).await??;
    if grew {
        shared.registry_changed();
    }
    let entries = keeps_data && shared.keeps_data;
    Ok(Peer { id, name, heads, address, over_loopback, entries })
}

/// Takes a newer certificate of a known machine (it was renamed); true if
/// it was taken.
fn refresh_certificate(instance: &Instance, store: &Store, entry: &InstanceEntry, cert: &Certificate) -> bool {
    let known = Certificate::from_text(&entry.certificate).ok();
    let newer = known
        .is_none_or(|k| k.claims.issued_at < cert.claims.issued_at && k.claims.signing_key == cert.claims.signing_key);
    newer && instance.register(store, cert, &[]).is_ok()
}

/// Registers the machines `peer` told of that this one did not know, takes
/// newer certificates of known ones, and adds the addresses it gave (what
/// it says of itself replaces what was known of it); a certificate that does
/// not verify against the identity is ignored. True if the registry learned
/// anything.
fn learn(instance: &Instance, store: &Store, machines: &[Machine], peer: &str, over_loopback: bool) -> bool {
    let mut grew = false;
    for machine in machines {
        let Ok(cert) = Certificate::from_text(&machine.certificate) else { continue };
        let id = &cert.claims.instance_id;
        if *id == instance.id || cert.verify(&instance.identity_key()).is_err() {
            continue;
        }
        let addresses = usable(&machine.addresses, over_loopback);
        if id == peer {
            grew |= store.replace_addresses(id, &addresses).unwrap_or(false);
            continue;
        }
        match store.instance_by_id(id) {
            Err(StoreError::NotFound { .. }) => match instance.register(store, &cert, &addresses) {
                Ok(()) => grew = true,
                Err(e) => tracing::warn!(error = %e, "could not register a machine a peer vouched for"),
            },
            Ok(entry) if !entry.is_revoked() => {
                grew |= refresh_certificate(instance, store, &entry, &cert);
                grew |= store.add_addresses(id, &addresses).unwrap_or(false);
            }
            _ => {}
        }
    }
    if grew && let Err(e) = instance.write_registry_file(store) {
        tracing::warn!(error = %e, "could not rewrite instances.json");
    }
    grew
}

/// The machines (not revoked, not this one) whose certificate or addresses
/// the peer has not been told yet; marks them told.
async fn news(shared: &Arc<Shared>, told: &mut Told) -> Result<Vec<Machine>, SyncError> {
    let me = shared.instance.id.clone();
    let known = blocking(&shared.store, |s| s.instances()).await?;
    let mut news = Vec::new();
    for entry in known.into_iter().filter(|e| !e.is_revoked() && e.id != me) {
        let machine = Machine { certificate: entry.certificate, addresses: entry.addresses };
        if told.get(&entry.id) != Some(&machine) {
            told.insert(entry.id, machine.clone());
            news.push(machine);
        }
    }
    Ok(news)
}

async fn sender(
    shared: &Arc<Shared>,
    link: &Peer,
    send: &mut SendStream,
    view: Arc<Mutex<PeerView>>,
    acked: Arc<Notify>,
    mut control: mpsc::Receiver<Message>,
    mut told: Told,
) -> Result<(), SyncError> {
    let store = &shared.store;
    let peer = link.id.as_str();
    let mut log_grew = shared.log_grew.subscribe();
    let mut registry_grew = shared.registry_grew.subscribe();
    let mut last_news_at = tokio::time::Instant::now();
    let mut advertised = own_addresses(shared).await?;
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
        if link.entries && in_flight < WINDOW {
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
                    // The peer needs the certificate of every origin to verify its entries.
                    let me = &shared.instance.id;
                    let unknown = |o: &String| o != me && o != peer && !told.contains_key(o);
                    if out.iter().any(|e| unknown(&e.entry.origin)) {
                        let machines = news(shared, &mut told).await?;
                        frame::write(send, &Message::Machines(machines)).await?;
                    }
                    frame::write(send, &Message::Entries(out)).await?;
                }
                continue;
            }
        }
        // Idle (or the window is full): tell the peer of machines it has not
        // heard of here (a join spreads this way), and our heads when they
        // moved, and at least every KEEPALIVE.
        if registry_grew.has_changed().unwrap_or(false) || last_news_at.elapsed() >= KEEPALIVE {
            registry_grew.borrow_and_update();
            last_news_at = tokio::time::Instant::now();
            let mut machines = news(shared, &mut told).await?;
            // This machine moved (a new address from DHCP, another network).
            let addresses = own_addresses(shared).await?;
            if addresses != advertised {
                advertised = addresses.clone();
                machines.push(Machine { certificate: shared.instance.certificate.to_text(), addresses });
            }
            if !machines.is_empty() {
                frame::write(send, &Message::Machines(machines)).await?;
            }
        }
        let heads = blocking(store, |s| s.heads()).await?;
        if last_heads.as_ref() != Some(&heads) || last_heads_at.elapsed() >= KEEPALIVE {
            let peer_heads = view.lock().expect("view poisoned").heads().clone();
            if link.entries {
                shared.update(peer, |l| l.ahead = behind(&peer_heads, &heads));
            }
            frame::write(send, &Message::Heads(heads.clone())).await?;
            last_heads = Some(heads);
            last_heads_at = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = log_grew.changed() => {}
            _ = registry_grew.changed() => {}
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
    link: &Peer,
    recv: &mut RecvStream,
    view: Arc<Mutex<PeerView>>,
    acked: Arc<Notify>,
    control: mpsc::Sender<Message>,
) -> Result<(), SyncError> {
    let (peer, over_loopback, entries) = (link.id.as_str(), link.over_loopback, link.entries);
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
                Message::Entries(_) if !entries => {
                    return Err(SyncError::Protocol("entries sent to a machine that keeps no log".into()));
                }
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
                        if entries {
                            l.behind = behind(&ours, &heads);
                            l.ahead = behind(&heads, &ours);
                        }
                        l.last_sync = Some(now_text());
                    });
                    acked.notify_one();
                }
                Message::Machines(machines) => {
                    let (instance, store, peer) = (shared.instance.clone(), store.clone(), peer.to_string());
                    let learning = move || learn(&instance, &store, &machines, &peer, over_loopback);
                    let grew = roost_tasks::blocking("learning the peer's machines", STORE_WAIT, learning).await?;
                    if grew {
                        shared.registry_changed();
                    }
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
