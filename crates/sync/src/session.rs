//! One replication session with one peer: hello, then entries both ways.
//!
//! The sender streams, in local log order, every entry the peer lacks, at
//! most a window unacknowledged, reading the log in bounded batches — so a
//! slow peer costs neither the writer's time nor unbounded memory. The
//! receiver applies batches through `Store::apply`, holds entries that are
//! not ready, and answers with its heads. Those decisions are
//! `roost_core::session`'s, which the simulator drives too; this module
//! does the I/O around them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use roost_core::protocol::{Heads, MAX_BATCH, Machine, Message, PROTOCOL_VERSION, SignedEntry, behind};
use roost_core::session::{self, Greeting, Received, Session, Timing, Verdict};
use roost_identity::Certificate;
use roost_instance::Instance;
use roost_instance::addresses::{host_and_port, is_loopback_url, url_for};
use roost_store::{DEFER_FROM, InstanceEntry, Store, StoreError};

use crate::{Shared, SyncError, frame, now_text};

/// How long a peer has to say hello.
pub const HELLO_WAIT: Duration = Duration::from_secs(10);
const TIMING: Timing = Timing::NETWORK;
/// How often the log is checked for writes made by other processes.
const POLL: Duration = Duration::from_millis(250);
/// Messages the receiver reads ahead of applying. With [`APPLY_MAX`], what
/// a catch-up holds decoded in memory: more buys no speed, only memory.
const READ_AHEAD: usize = 4;
/// Most entries the receiver applies in one transaction.
const APPLY_MAX: usize = 4 * MAX_BATCH;

const CLOSE_REFUSED: u32 = 403;
/// How long a session waits for one database call (an apply of a large
/// batch included) before it gives up and reconnects.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// The peer a session talks to, once its hello checked out.
struct Peer {
    id: String,
    name: String,
    greeting: Greeting,
    address: Option<String>,
    /// The session runs over loopback: the peer is on this host.
    over_loopback: bool,
}

/// The session's state machine, shared by its sender and receiver halves,
/// with the instant its clock reads zero at.
struct Control {
    session: Mutex<Session>,
    started: tokio::time::Instant,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().expect("session poisoned")
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }
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

/// After a restore: tells the store what a peer that keeps the log holds of
/// this machine's own log (`peer_heads`), which decides when its writes
/// resume (see `roost_store`'s `restore`).
async fn own_log_held(store: &Arc<Store>, peer_heads: &Heads) -> Result<(), SyncError> {
    if !store.restoring() {
        return Ok(());
    }
    let held = peer_heads.get(store.origin()).copied().unwrap_or(0);
    blocking(store, move |s| s.own_log_heard(held).map(|_| ())).await
}

/// The addresses this machine advertises (reads the running gateway's
/// address file and the network interfaces).
async fn own_addresses(shared: &Shared) -> Result<Vec<String>, SyncError> {
    let instance = shared.instance.clone();
    Ok(roost_tasks::blocking("reading this machine's addresses", STORE_WAIT, move || instance.advertised_urls())
        .await?)
}

/// `error`, or the peer's refusal if it closed the connection refusing this
/// machine: that is what `sync status` should say.
fn refused_by_peer(conn: &Connection, error: SyncError) -> SyncError {
    match conn.close_reason() {
        Some(iroh::endpoint::ConnectionError::ApplicationClosed(close))
            if close.error_code == VarInt::from_u32(CLOSE_REFUSED) =>
        {
            let reason = String::from_utf8_lossy(&close.reason);
            SyncError::Refused(format!("by the peer: {}", reason.trim_start_matches("refused: ")))
        }
        _ => error,
    }
}

/// Runs a session on an open connection; `expected` is the peer's id when
/// this side dialed. Everything it logs is inside one span, `sync_session`.
pub async fn run(
    shared: Arc<Shared>,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    expected: Option<&str>,
) -> Result<(), SyncError> {
    let span = tracing::info_span!("sync_session", peer = %conn.remote_id().fmt_short(), dialed = expected.is_some());
    session(shared, conn, send, recv, expected).instrument(span).await
}

async fn session(
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
        relays: shared.relays.get().iter().map(ToString::to_string).collect(),
    };
    frame::write(&mut send, &hello).await?;
    let hello = frame::read(&mut recv, HELLO_WAIT).await.map_err(|e| refused_by_peer(&conn, e))?;
    let peer = match check_hello(&shared, &conn, hello, expected).await {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(remote = %conn.remote_id().fmt_short(), reason = %e, "sync peer refused");
            conn.close(VarInt::from_u32(CLOSE_REFUSED), e.to_string().as_bytes());
            return Err(e);
        }
    };
    shared.learn_relays(&peer.greeting.relays).await;
    let dialer = if expected.is_some() { shared.instance.id.clone() } else { peer.id.clone() };
    let entries = peer.greeting.entries;
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
        l.connection = Some(conn.clone());
        l.last_error = None;
        l.last_sync = Some(now_text());
        l.behind = if entries { behind(&heads, &peer.greeting.heads) } else { 0 };
        l.ahead = if entries { behind(&peer.greeting.heads, &heads) } else { 0 };
        l.keeps_log = entries;
        l.holds = if entries { peer.greeting.heads.clone() } else { Heads::new() };
        l.reported = Some(std::time::Instant::now());
    });
    let (id, name) = (peer.id.clone(), peer.name.clone());
    let _ = blocking(&store, move |s| s.mark_seen(&id)).await;
    if entries {
        own_log_held(&store, &peer.greeting.heads).await?;
    }

    let reported = peer.greeting.heads.clone();
    let cursor = blocking(&store, move |s| s.scan_start(&reported)).await?;
    let started = tokio::time::Instant::now();
    let control =
        Control { session: Mutex::new(Session::new(TIMING, &peer.greeting, cursor, Duration::ZERO)), started };
    let acked = Notify::new();
    let (replies, replies_rx) = mpsc::channel(64);
    let outcome = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = sender(&shared, &peer, &mut send, &control, &acked, replies_rx, told) => r,
        r = receiver(&shared, &peer, &mut recv, &control, &acked, replies) => r,
    };
    shared.release(&peer.id, token);
    let outcome = outcome.map_err(|e| refused_by_peer(&conn, e));
    if let Err(e) = &outcome {
        tracing::info!(peer = %name, error = %e, "sync session ended");
        shared.update(&peer.id, |l| l.last_error = Some(e.to_string()));
    }
    let id = peer.id.clone();
    let _ = blocking(&store, move |s| s.mark_seen(&id)).await;
    conn.close(VarInt::from_u32(0), b"bye");
    outcome
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
    let greeting = session::greet(hello, shared.keeps_data)?;
    let identity = shared.instance.identity_key();
    let own = &greeting.machines[0];
    let cert = Certificate::from_text(&own.certificate)
        .map_err(|_| SyncError::Refused("the peer's certificate is malformed".into()))?;
    if cert.claims.signing_key != *conn.remote_id().as_bytes() {
        return Err(SyncError::Refused("the peer's certificate names another machine key".into()));
    }
    // A machine already registered is known by its key, whichever identity
    // its certificate is from (the two sides of a rotation meet this way);
    // registering a new one takes a certificate from this identity.
    let current = cert.verify(&identity).is_ok();
    let id = cert.claims.instance_id.clone();
    if id == shared.instance.id || expected.is_some_and(|e| e != id) {
        return Err(SyncError::Refused(format!("the peer is {id}, not the machine dialed")));
    }
    let ip = crate::remote_ip(conn);
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
    let others: Vec<Machine> = greeting.machines[1..].to_vec();
    let software = greeting.software.clone();
    let registering = move || -> Result<(bool, String), SyncError> {
        let mut grew = match store.instance_by_id(&peer_id) {
            Ok(entry) if entry.is_revoked() => {
                return Err(SyncError::Refused(format!("machine {} is revoked", entry.name)));
            }
            Ok(entry) if !current && entry.signing_key != roost_identity::hex(&cert.claims.signing_key) => {
                return Err(SyncError::Refused(format!("machine {} has another key here", entry.name)));
            }
            Ok(entry) => current && refresh_certificate(&instance, &store, &entry, &cert),
            Err(StoreError::NotFound { .. }) if !current => {
                return Err(SyncError::Refused("the peer's certificate is not from this identity".into()));
            }
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
    Ok(Peer { id, name, greeting, address, over_loopback })
}

/// Takes a newer certificate of a known machine (it was renamed); true if
/// it was taken.
fn refresh_certificate(instance: &Instance, store: &Store, entry: &InstanceEntry, cert: &Certificate) -> bool {
    let known = Certificate::from_text(&entry.certificate).ok();
    // Newer, or the first from this identity after a rotation.
    let newer = known.is_none_or(|k| {
        k.claims.signing_key == cert.claims.signing_key
            && (k.claims.issued_at < cert.claims.issued_at || k.verify(&instance.identity_key()).is_err())
    });
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

/// Sends the peer the rotations recorded here it has not been told yet, if
/// any, the whole lineage in order; marks them told.
async fn send_rotations(
    shared: &Arc<Shared>,
    send: &mut SendStream,
    told: &mut HashSet<String>,
) -> Result<(), SyncError> {
    let home = shared.instance.home.clone();
    let reading = move || roost_instance::recorded_rotations(&home);
    let recorded = roost_tasks::blocking("reading the rotations", STORE_WAIT, reading).await?.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not read the rotations to pass on");
        Vec::new()
    });
    if recorded.iter().any(|r| !told.contains(r)) {
        told.extend(recorded.iter().cloned());
        frame::write(send, &Message::Rotations(recorded)).await?;
    }
    Ok(())
}

/// Sends the peer the revocations it has not been told yet, if any; marks
/// them told.
async fn send_revocations(
    shared: &Arc<Shared>,
    send: &mut SendStream,
    told: &mut HashSet<String>,
) -> Result<(), SyncError> {
    let held = blocking(&shared.store, |s| s.revocations()).await?;
    let news: Vec<String> = held.into_iter().filter(|(id, _)| told.insert(id.clone())).map(|(_, text)| text).collect();
    if !news.is_empty() {
        frame::write(send, &Message::Revocations(news)).await?;
    }
    Ok(())
}

/// Takes the revocations a peer passed on that the identity signed. The dial
/// loop then ends the revoked machines' sessions and tells every peer.
async fn take_revocations(shared: &Arc<Shared>, revocations: Vec<String>) -> Result<(), SyncError> {
    let instance = shared.instance.clone();
    let store = shared.store.clone();
    let taking = move || {
        for text in &revocations {
            match instance.take_revocation(&store, text) {
                Ok(Some(id)) => {
                    tracing::warn!(machine = %id, "a machine of the chain was revoked; refusing it from now on")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "ignored a revocation a peer passed on"),
            }
        }
    };
    Ok(roost_tasks::blocking("taking revocations", STORE_WAIT, taking).await?)
}

/// Takes the rotations a peer passed on, oldest first; when this machine
/// adopted a new identity, asks for replication and the lease to start
/// again on it.
async fn take_rotations(shared: &Arc<Shared>, rotations: Vec<String>) -> Result<(), SyncError> {
    let held = shared.instance.lineage_texts();
    let news: Vec<String> = rotations.into_iter().filter(|r| !held.contains(r)).collect();
    if news.is_empty() {
        return Ok(());
    }
    let (home, store) = (shared.instance.home.clone(), shared.store.clone());
    let taking = move || {
        let mut instance = match Instance::open(&home) {
            Ok(instance) => instance,
            Err(e) => {
                tracing::warn!(error = %e, "could not open this instance to take a rotation");
                return false;
            }
        };
        let mut adopted = false;
        for text in &news {
            match instance.take_rotation(&store, text) {
                Ok(Some(taken)) => {
                    let (roost_id, left_behind) = (taken.roost_id, taken.left_behind);
                    tracing::warn!(%roost_id, ?left_behind, "the chain's identity rotated; this machine took the new one");
                    adopted = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "ignored a rotation a peer passed on"),
            }
        }
        adopted
    };
    if roost_tasks::blocking("taking rotations", STORE_WAIT, taking).await? {
        shared.identity_changed.send_modify(|n| *n += 1);
    }
    Ok(())
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
    control: &Control,
    acked: &Notify,
    mut replies: mpsc::Receiver<Message>,
    mut told: Told,
) -> Result<(), SyncError> {
    let store = &shared.store;
    let peer = link.id.as_str();
    let mut log_grew = shared.log_grew.subscribe();
    let mut registry_grew = shared.registry_grew.subscribe();
    let mut last_news_at = tokio::time::Instant::now();
    let mut advertised = own_addresses(shared).await?;
    // The identity's rotations go first, then revocations: the peer adopts
    // the identity this machine has (a machine that rotates as it leaves
    // is refused right after), and refuses a revoked machine's entries
    // before any of them can arrive from here.
    let (mut rotations_told, mut revocations_told) = (HashSet::new(), HashSet::new());
    send_rotations(shared, send, &mut rotations_told).await?;
    send_revocations(shared, send, &mut revocations_told).await?;
    loop {
        while let Ok(message) = replies.try_recv() {
            frame::write(send, &message).await?;
        }
        log_grew.borrow_and_update();
        let next_read = control.lock().next_read();
        if let Some(after) = next_read {
            let batch = blocking(store, move |s| s.entries_after(after, MAX_BATCH as u32)).await?;
            let picked = control.lock().pick(batch, control.now());
            if let Some(out) = picked {
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
        // moved, and at least every keepalive.
        if registry_grew.has_changed().unwrap_or(false) || last_news_at.elapsed() >= TIMING.keepalive {
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
            send_rotations(shared, send, &mut rotations_told).await?;
            send_revocations(shared, send, &mut revocations_told).await?;
        }
        let heads = blocking(store, |s| s.heads()).await?;
        let (due, peer_heads, ended) = {
            let mut session = control.lock();
            (session.heads_due(&heads, control.now()), session.peer_heads().clone(), session.ended(control.now()))
        };
        if let Some(why) = ended {
            return Err(why.into());
        }
        if due {
            if link.greeting.entries {
                shared.update(peer, |l| l.ahead = behind(&peer_heads, &heads));
            }
            frame::write(send, &Message::Heads(heads)).await?;
        }
        tokio::select! {
            _ = log_grew.changed() => {}
            _ = registry_grew.changed() => {}
            _ = acked.notified() => {}
            message = replies.recv() => {
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
    control: &Control,
    acked: &Notify,
    replies: mpsc::Sender<Message>,
) -> Result<(), SyncError> {
    let (peer, over_loopback) = (link.id.as_str(), link.over_loopback);
    let (arrived, mut incoming) = mpsc::channel(READ_AHEAD);
    let reader = async move {
        loop {
            let message = frame::read(recv, TIMING.idle).await?;
            if arrived.send(message).await.is_err() {
                return Ok(());
            }
        }
    };
    let store = &shared.store;
    let mut log_grew = shared.log_grew.subscribe();
    let handler = async move {
        let mut next: Option<Message> = None;
        // This machine's heads after the last batch this session applied.
        let mut ours: Option<Heads> = None;
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => tokio::select! {
                    message = incoming.recv() => match message {
                        Some(message) => message,
                        None => return Ok(()),
                    },
                    // Another session applied entries: what this one holds
                    // may be ready now.
                    Ok(()) = log_grew.changed() => {
                        let held = control.lock().retry();
                        if let Some(held) = held {
                            apply_through(store, control, peer, held).await?;
                        }
                        continue;
                    }
                },
            };
            let received = control.lock().receive(message, control.now())?;
            match received {
                Received::Entries(mut batch) => {
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
                    // Far behind, the search index waits for the end of the
                    // catch-up (decided before the batch, so it is never
                    // indexed row by row), and is rebuilt once nothing is.
                    // Only a session that may be far behind, by the heads it
                    // last saw, asks the store before applying.
                    let peer_heads = control.lock().peer_heads().clone();
                    if ours.as_ref().is_none_or(|ours| behind(ours, &peer_heads) >= DEFER_FROM) {
                        let reported = peer_heads.clone();
                        blocking(store, move |s| s.pace_search_index(behind(&s.heads()?, &reported))).await?;
                    }
                    apply_through(store, control, peer, batch).await?;
                    let reported = peer_heads.clone();
                    let heads = blocking(store, move |s| {
                        let heads = s.heads()?;
                        s.pace_search_index(behind(&heads, &reported))?;
                        Ok(heads)
                    })
                    .await?;
                    shared.update(peer, |l| {
                        l.behind = behind(&heads, &peer_heads);
                        l.last_sync = Some(now_text());
                    });
                    if link.greeting.entries {
                        own_log_held(store, &peer_heads).await?;
                    }
                    ours = Some(heads.clone());
                    let due = control.lock().heads_due(&heads, control.now());
                    if due && replies.send(Message::Heads(heads)).await.is_err() {
                        return Ok(());
                    }
                }
                Received::Heads => {
                    let ours = blocking(store, |s| s.heads()).await?;
                    let heads = control.lock().peer_heads().clone();
                    if link.greeting.entries {
                        own_log_held(store, &heads).await?;
                    }
                    shared.update(peer, |l| {
                        if link.greeting.entries {
                            l.behind = behind(&ours, &heads);
                            l.ahead = behind(&heads, &ours);
                            l.holds = heads;
                            l.reported = Some(std::time::Instant::now());
                        }
                        l.last_sync = Some(now_text());
                    });
                    acked.notify_one();
                }
                Received::Machines(machines) => {
                    let (instance, store, peer) = (shared.instance.clone(), store.clone(), peer.to_string());
                    let learning = move || learn(&instance, &store, &machines, &peer, over_loopback);
                    let grew = roost_tasks::blocking("learning the peer's machines", STORE_WAIT, learning).await?;
                    if grew {
                        shared.registry_changed();
                    }
                }
                Received::Revocations(revocations) => take_revocations(shared, revocations).await?,
                Received::Rotations(rotations) => take_rotations(shared, rotations).await?,
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = handler => r,
    }
}

/// Applies `batch`, and what the session holds back whenever something
/// applied (it may be ready now), as the session says.
async fn apply_through(
    store: &Arc<Store>,
    control: &Control,
    peer: &str,
    batch: Vec<SignedEntry>,
) -> Result<(), SyncError> {
    let mut attempt = Some(batch);
    while let Some(batch) = attempt {
        let (batch, verdicts) = blocking(store, move |s| {
            let verdicts = s.apply(&batch)?;
            Ok((batch, verdicts))
        })
        .await?;
        for verdict in &verdicts {
            let verdict = match verdict {
                Verdict::Applied => "applied",
                Verdict::Duplicate => "duplicate",
                Verdict::NotReady => "held",
                Verdict::Refused(_) => "refused",
            };
            roost_metrics::count(&roost_metrics::metrics().entries, &[("peer", peer), ("verdict", verdict)]);
        }
        attempt = control.lock().applied(batch, &verdicts)?;
    }
    Ok(())
}
