//! Serving connections: the accept loop of the gateway's listeners, and what
//! bounds each connection.
//!
//! Opening a connection needs no token, so nothing a client sends or leaves
//! unsent may hold the gateway's resources for long:
//! - the request head must arrive within [`HEADER_READ_TIMEOUT`] of the
//!   connection waiting for one (so a keep-alive connection left silent
//!   closes after that long too);
//! - a request body must arrive whole within [`BODY_READ_TIMEOUT`];
//! - a connection on which no byte moves either way for [`IDLE_TIMEOUT`] is
//!   closed (an MCP event stream sends a keep-alive every 15 s, so a live
//!   stream never goes that quiet);
//! - at most [`Limits::connections`] are open at once. A new connection
//!   beyond that closes the one that has waited longest for a request; when
//!   every connection is busy with a request, the new one is answered 503 at
//!   once and closed, without being read.
//!
//! The connection cap stays below the process's descriptor limit, which
//! [`raise_descriptor_limit`] lifts to the hard limit at start, so accepting
//! never fails for want of a descriptor. HTTP/1.1 only: hyper has no header
//! timeout for cleartext HTTP/2, and no client of the gateway uses it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::serve::Listener;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// How long a request head may take to arrive, counted from when the
/// connection starts waiting for it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive whole.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may go without a byte moving either way.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most TCP connections open at once, when descriptors allow.
pub const MAX_CONNECTIONS: usize = 1024;
/// The most connections open at once on the instance's Unix socket.
pub const MAX_SOCKET_CONNECTIONS: usize = 32;
/// Descriptors kept for everything else the process opens: the database and
/// its pool, replication's sockets, calls to other machines, log files.
const RESERVED_DESCRIPTORS: u64 = 256;

/// What the gateway answers a connection it has no room for.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n\
Content-Length: 77\r\nRetry-After: 1\r\n\r\n{\"error\":\"the gateway has too many open connections; try again in a moment\"}";

/// The bounds one listener's connections are held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
}

impl Limits {
    /// The limits of a listener allowed `connections` at once.
    pub fn with_connections(connections: usize) -> Limits {
        Limits { connections, header_read: HEADER_READ_TIMEOUT, body_read: BODY_READ_TIMEOUT, idle: IDLE_TIMEOUT }
    }

    /// The TCP listener's limits: [`MAX_CONNECTIONS`], or fewer when the
    /// descriptor limit would not leave room for the rest of the process.
    pub fn for_tcp() -> Limits {
        let descriptors = descriptor_limit().current.unwrap_or(u64::MAX);
        let room = descriptors.saturating_sub(RESERVED_DESCRIPTORS + MAX_SOCKET_CONNECTIONS as u64);
        Limits::with_connections(MAX_CONNECTIONS.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1))
    }
}

fn descriptor_limit() -> rustix::process::Rlimit {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
}

/// Raises the soft limit on open descriptors to the hard limit; returns the
/// soft limit before and after, and the hard limit (`None`: unlimited).
pub fn raise_descriptor_limit() -> std::io::Result<(Option<u64>, Option<u64>, Option<u64>)> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let before = descriptor_limit();
    if before.current != before.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: before.maximum, maximum: before.maximum })?;
    }
    Ok((before.current, descriptor_limit().current, before.maximum))
}

/// A connection as the accept loop sees it.
pub(crate) trait Accepted: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Answers 503 if the socket takes it at once, and closes.
    fn refuse(self);
}

impl Accepted for TcpStream {
    fn refuse(self) {
        let _ = self.try_write(BUSY);
    }
}

impl Accepted for UnixStream {
    fn refuse(self) {
        let _ = self.try_write(BUSY);
    }
}

/// The peer's address, for the handlers that read it (`ConnectInfo`).
pub(crate) trait Peer: Send {
    fn socket_addr(&self) -> Option<SocketAddr>;
}

impl Peer for SocketAddr {
    fn socket_addr(&self) -> Option<SocketAddr> {
        Some(*self)
    }
}

impl Peer for tokio::net::unix::SocketAddr {
    fn socket_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets the
/// open connections finish (each told to close once its request is done)
/// and returns when they have.
pub(crate) async fn serve<L>(mut listener: L, router: Router, limits: Limits, stop: CancellationToken)
where
    L: Listener,
    L::Io: Accepted,
    L::Addr: Peer,
{
    let open = Arc::new(Open::new(limits.connections));
    let tasks = TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        match open.admit() {
            Some(slot) => {
                tasks.spawn(connection(io, addr.socket_addr(), router.clone(), slot, limits, stop.clone()));
            }
            None => io.refuse(),
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// One connection, from its first byte to its close.
async fn connection<I: Accepted>(
    io: I,
    peer: Option<SocketAddr>,
    router: Router,
    slot: Slot,
    limits: Limits,
    stop: CancellationToken,
) {
    let progress = Arc::new(Progress::new());
    let io = TokioIo::new(Watched { io, progress: progress.clone() });
    let slot = Arc::new(slot);
    let requests = slot.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let busy = requests.begin();
        let mut request: Request = request.map(|body| Body::new(Deadline::new(body, limits.body_read)));
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let answer = router.clone().call(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(io, service);
    let mut served = pin!(served);
    let mut closing = false;
    loop {
        let quiet_until = progress.last() + limits.idle;
        tokio::select! {
            ended = served.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(?peer, error = %e, "connection ended");
                }
                return;
            }
            _ = slot.evicted.cancelled() => return,
            _ = stop.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                if progress.last() + limits.idle <= Instant::now() {
                    tracing::debug!(?peer, "closed a connection silent for {:?}", limits.idle);
                    return;
                }
            }
        }
    }
}

/// The open connections of one listener, and which of them wait for a
/// request.
struct Open {
    cap: usize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    by_id: HashMap<u64, SlotState>,
    /// When the cap was last reported in the log.
    reported: Option<Instant>,
}

struct SlotState {
    /// Requests in progress (the response not yet sent whole).
    busy: usize,
    /// Since when it has waited for a request; `None` while busy.
    idle_since: Option<Instant>,
    evict: CancellationToken,
}

/// How often the log says that the connection cap was reached.
const REPORT_EVERY: Duration = Duration::from_secs(10);

impl Open {
    fn new(cap: usize) -> Open {
        Open { cap, slots: Mutex::new(Slots::default()) }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: a free one, or the one that has waited
    /// longest for a request, closed to make room; `None` when all are busy.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut slots = self.slots();
        if slots.by_id.len() >= self.cap {
            let longest_idle = slots
                .by_id
                .iter()
                .filter_map(|(id, state)| state.idle_since.map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id);
            let now = Instant::now();
            let report = slots.reported.is_none_or(|at| now.duration_since(at) >= REPORT_EVERY);
            if report {
                slots.reported = Some(now);
            }
            match longest_idle.and_then(|id| slots.by_id.remove(&id)) {
                Some(evicted) => {
                    evicted.evict.cancel();
                    if report {
                        tracing::warn!(
                            cap = self.cap,
                            "connection limit reached: closing the connections that waited longest for a request"
                        );
                    }
                }
                None => {
                    if report {
                        tracing::warn!(
                            cap = self.cap,
                            "connection limit reached with every connection busy: refusing new ones with 503"
                        );
                    }
                    return None;
                }
            }
        }
        let id = slots.next;
        slots.next += 1;
        let evicted = CancellationToken::new();
        slots.by_id.insert(id, SlotState { busy: 0, idle_since: Some(Instant::now()), evict: evicted.clone() });
        Some(Slot { id, open: self.clone(), evicted })
    }
}

/// A connection's place among the open ones; given up when dropped.
struct Slot {
    id: u64,
    open: Arc<Open>,
    /// Cancelled when another connection took this one's place.
    evicted: CancellationToken,
}

impl Slot {
    /// Marks a request in progress until the returned guard drops (with the
    /// response body).
    fn begin(self: &Arc<Self>) -> Busy {
        if let Some(state) = self.open.slots().by_id.get_mut(&self.id) {
            state.busy += 1;
            state.idle_since = None;
        }
        Busy(self.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.slots().by_id.remove(&self.id);
    }
}

/// A request in progress on a connection.
struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(state) = self.0.open.slots().by_id.get_mut(&self.0.id) {
            state.busy = state.busy.saturating_sub(1);
            if state.busy == 0 {
                state.idle_since = Some(Instant::now());
            }
        }
    }
}

/// When a byte last moved on a connection, in milliseconds since it opened.
struct Progress {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress { opened: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A connection's I/O, noting every byte that moves.
struct Watched<I> {
    io: I,
    progress: Arc<Progress>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.touch();
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The request body was not whole within [`Limits::body_read`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}; send it at once")]
struct BodyTooSlow(Duration);

/// A request body that must arrive whole within a time of the request head.
struct Deadline {
    body: hyper::body::Incoming,
    expires: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Deadline {
    fn new(body: hyper::body::Incoming, limit: Duration) -> Deadline {
        Deadline { body, expires: Box::pin(tokio::time::sleep(limit)), limit }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.expires.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTooSlow(self.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted as in progress.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_house_gives_way_by_closing_the_longest_idle_and_refuses_when_all_are_busy() {
        let open = Arc::new(Open::new(2));
        let first = Arc::new(open.admit().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = Arc::new(open.admit().unwrap());
        let third = Arc::new(open.admit().expect("room is made"));
        assert!(first.evicted.is_cancelled(), "the longest idle gave way");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        let busy = (second.begin(), third.begin());
        assert!(open.admit().is_none(), "every connection busy: refused");
        drop(busy);
        let _fourth = open.admit().expect("idle again, so room is made");
        assert!(second.evicted.is_cancelled() != third.evicted.is_cancelled(), "exactly one gave way");
    }
}
