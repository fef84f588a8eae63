//! MCP sessions, capped per caller and in total.
//!
//! A session costs tens of KiB and rmcp keeps an idle one for 5 minutes, so
//! a client that opens sessions in a loop would otherwise grow the process
//! without bound. [`CappedSessions`] wraps rmcp's session manager and, when
//! a new session would pass [`MAX_SESSIONS_PER_CALLER`] for its caller or
//! [`MAX_SESSIONS`] in all, ends the caller's (or anyone's) session that has
//! been idle longest — one with no request or stream open, else simply the
//! least recently used — and logs it. The evicted client's next request
//! gets 404, the specification's answer for an unknown session, and it
//! initialises again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId, SessionManager};
use roost_mcp::Caller;

/// The most sessions open at once.
pub const MAX_SESSIONS: usize = 1024;
/// The most sessions one caller (this machine's clients, or one other
/// machine) may hold at once.
pub const MAX_SESSIONS_PER_CALLER: usize = 256;

/// A session manager holding `inner`'s sessions to the caps.
pub struct CappedSessions<M> {
    inner: M,
    total: usize,
    per_caller: usize,
    sessions: Mutex<HashMap<SessionId, Use>>,
}

/// What is known of one session's use.
struct Use {
    /// Who opened it, once its `initialize` arrived.
    caller: Option<String>,
    last_used: Instant,
    /// Requests and streams open on it now.
    open: Arc<AtomicUsize>,
}

impl<M: SessionManager> CappedSessions<M> {
    pub fn new(inner: M, total: usize, per_caller: usize) -> Self {
        CappedSessions { inner, total, per_caller, sessions: Mutex::new(HashMap::new()) }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Use>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a use of the session; returns its count of open streams.
    fn touch(&self, id: &SessionId) -> Option<Arc<AtomicUsize>> {
        let mut sessions = self.sessions();
        let session = sessions.get_mut(id)?;
        session.last_used = Instant::now();
        Some(session.open.clone())
    }

    /// Keeps `stream` counted as open on the session until it is dropped.
    fn counted<S>(&self, id: &SessionId, stream: S) -> Counted<S> {
        let open = self.touch(id);
        if let Some(open) = &open {
            open.fetch_add(1, Ordering::Relaxed);
        }
        Counted { stream: Box::pin(stream), open }
    }

    /// The sessions to end so that `id`, just opened by `caller`, fits the
    /// caps: the caller's own first, then anyone's.
    fn over_caps(&self, id: &SessionId, caller: &str) -> Vec<(SessionId, String, f64)> {
        let mut sessions = self.sessions();
        if let Some(session) = sessions.get_mut(id) {
            session.caller = Some(caller.to_string());
        }
        let mut victims = Vec::new();
        let pick = |sessions: &mut HashMap<SessionId, Use>, of_caller: bool| {
            let victim = sessions
                .iter()
                .filter(|(other, s)| *other != id && (!of_caller || s.caller.as_deref() == Some(caller)))
                .min_by_key(|(_, s)| (s.open.load(Ordering::Relaxed) > 0, s.last_used))
                .map(|(other, _)| other.clone())?;
            let gone = sessions.remove(&victim)?;
            Some((victim, gone.caller.unwrap_or_else(|| "unknown".into()), gone.last_used.elapsed().as_secs_f64()))
        };
        while sessions.values().filter(|s| s.caller.as_deref() == Some(caller)).count() > self.per_caller {
            match pick(&mut sessions, true) {
                Some(victim) => victims.push(victim),
                None => break,
            }
        }
        while sessions.len() > self.total {
            match pick(&mut sessions, false) {
                Some(victim) => victims.push(victim),
                None => break,
            }
        }
        victims
    }
}

/// Who opened a session, from the HTTP request the gateway marked.
fn caller_of(message: &ClientJsonRpcMessage) -> String {
    let parts = match message {
        ClientJsonRpcMessage::Request(request) => request.request.extensions().get::<axum::http::request::Parts>(),
        _ => None,
    };
    match parts.and_then(|p| p.extensions.get::<Caller>()) {
        Some(Caller::Local) => "this machine".into(),
        Some(Caller::Machine { id }) => format!("machine {id}"),
        None => "unidentified".into(),
    }
}

impl<M: SessionManager> SessionManager for CappedSessions<M> {
    type Error = M::Error;
    type Transport = M::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.inner.create_session().await?;
        let session = Use { caller: None, last_used: Instant::now(), open: Arc::new(AtomicUsize::new(0)) };
        self.sessions().insert(id.clone(), session);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let caller = caller_of(&message);
        for (victim, owner, idle) in self.over_caps(id, &caller) {
            tracing::warn!(
                session = %victim, caller = %owner, idle_seconds = idle,
                "ended an MCP session to stay within the session caps ({} per caller, {} in all); its client will get 404 and initialise again",
                self.per_caller, self.total
            );
            if let Err(e) = self.inner.close_session(&victim).await {
                tracing::warn!(session = %victim, error = %e, "cannot end an evicted MCP session");
            }
        }
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        if !self.sessions().contains_key(id) {
            return Ok(false);
        }
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.sessions().remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.create_stream(id, message).await?;
        Ok(self.counted(id, stream))
    }

    async fn accept_message(&self, id: &SessionId, message: ClientJsonRpcMessage) -> Result<(), Self::Error> {
        self.touch(id);
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.create_standalone_stream(id).await?;
        Ok(self.counted(id, stream))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.resume(id, last_event_id).await?;
        Ok(self.counted(id, stream))
    }
}

/// A session's stream, counted as open until dropped.
struct Counted<S> {
    stream: Pin<Box<S>>,
    open: Option<Arc<AtomicUsize>>,
}

impl<S: Stream> Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

    use super::*;

    fn session(capped: &CappedSessions<LocalSessionManager>, id: &str, caller: Option<&str>, idle_secs: u64) {
        let last_used = Instant::now().checked_sub(Duration::from_secs(idle_secs)).unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        capped.sessions().insert(id.into(), Use { caller: caller.map(String::from), last_used, open });
    }

    fn ids(victims: Vec<(SessionId, String, f64)>) -> Vec<String> {
        victims.into_iter().map(|(id, _, _)| id.to_string()).collect()
    }

    #[test]
    fn the_callers_longest_idle_session_goes_first_then_anyones() {
        let capped = CappedSessions::new(LocalSessionManager::default(), 3, 2);
        session(&capped, "a", Some("x"), 30);
        session(&capped, "b", Some("y"), 20);
        session(&capped, "c", Some("x"), 40);
        capped.sessions()["c"].open.fetch_add(1, Ordering::Relaxed);
        session(&capped, "d", None, 0);
        assert_eq!(ids(capped.over_caps(&"d".into(), "x")), ["a"], "x's idle one, though c is older but streaming");
        session(&capped, "e", None, 0);
        assert_eq!(ids(capped.over_caps(&"e".into(), "z")), ["b"], "the longest idle of anyone's");
        assert_eq!(capped.sessions().len(), 3);
        assert!(capped.over_caps(&"e".into(), "z").is_empty());
    }
}
