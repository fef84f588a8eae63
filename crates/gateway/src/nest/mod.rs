//! The Nest: a small server-rendered dashboard under `/nest`, for a person
//! with a browser rather than a machine with a token. It shows the chain's
//! instances and their sync state, resolves conflicts, searches memories,
//! and shows and moves where the pool runs each conversation.
//!
//! It sits outside the token-protected routes and has its own login: one
//! password ([`password`]), in-memory sessions with a CSRF token each
//! ([`session`]), and a per-address limit on failed logins ([`throttle`]).
//! Pages are askama templates; the one stylesheet and one script are
//! embedded and served from `/nest/static`, and every response forbids
//! anything but same-origin content.
//!
//! The gateway speaks plain HTTP, so the Nest answers only this machine
//! (loopback, or a TLS reverse proxy on it) unless `roost serve
//! --insecure-http` lets its password and cookie cross a network in clear.

mod assets;
mod login;
mod machines;
mod pages;
pub mod password;
mod pool;
mod session;
mod templates;
mod throttle;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HOST, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use password::{MIN_PASSWORD, PASSWORD_FILE, set_password};

use crate::AppState;
use crate::api::ApiError;
use session::{Sessions, Visitor};
use templates::{Chrome, ErrorPage, page};
use throttle::Throttle;

/// The Nest's in-memory state: sessions, failed-login counts, and the
/// password checks allowed to run at once.
pub(crate) struct NestState {
    sessions: Sessions,
    throttle: Throttle,
    checks: tokio::sync::Semaphore,
}

/// Password checks running at once; each holds Argon2's memory (~19 MiB).
const CONCURRENT_CHECKS: usize = 2;

impl Default for NestState {
    fn default() -> Self {
        NestState {
            sessions: Sessions::default(),
            throttle: Throttle::default(),
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        }
    }
}

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/nest", get(pages::instances))
        .route("/nest/panel", get(pages::panel))
        .route("/nest/login", get(login::form).post(login::submit))
        .route("/nest/logout", post(login::logout))
        .route("/nest/machines", get(machines::list))
        .route("/nest/machines/pair", post(machines::pair))
        .route("/nest/machines/register", post(machines::register))
        .route("/nest/machines/rename", post(machines::rename))
        .route("/nest/machines/{id}/revoke", post(machines::revoke))
        .route("/nest/conflicts", get(pages::conflicts))
        .route("/nest/conflicts/{id}", get(pages::conflict))
        .route("/nest/conflicts/{id}/resolve", post(pages::resolve))
        .route("/nest/memories", get(pages::memories))
        .route("/nest/memories/{id}", get(pages::memory))
        .route("/nest/agent", get(pages::agent))
        .route("/nest/agent/topics/{topic}", get(pages::agent_topic))
        .route("/nest/pool", get(pool::show))
        .route("/nest/pool/move", post(pool::move_topic))
        .route("/nest/pool/nickname", post(pool::nickname))
        .route("/nest/static/{file}", get(assets::file))
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_other_sites))
        .layer(axum::middleware::map_response(protective_headers))
        .with_state(state)
}

/// Answers only a browser on this machine (unless plain HTTP to others is
/// allowed) that names this machine (a page that rebinds its own domain to
/// this address names that domain), and refuses a form another site sent,
/// before any page or login check runs.
async fn refuse_other_sites(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let over_socket = request.extensions().get::<crate::auth::OverSocket>().is_some();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if !over_socket && !state.nest_insecure_http && !peer.is_some_and(|p| p.ip().is_loopback()) {
        tracing::warn!(?peer, "refused a Nest request from another machine over plain HTTP");
        let message = "The Nest answers only this machine: this gateway speaks plain HTTP, which would carry \
                       the password in clear. Reach it through a TLS reverse proxy or an SSH tunnel \
                       (ssh -L 7151:localhost:7151 this-machine), or start roost serve with --insecure-http.";
        return PageError(StatusCode::FORBIDDEN, message.into()).into_response();
    }
    let host = request.headers().get(HOST).map(|h| h.to_str().unwrap_or("(not text)")).unwrap_or("");
    if !crate::guard::nest_host_allowed(host, &state.nest_hosts) {
        tracing::warn!(%host, "refused a Nest request naming another host");
        let message = format!(
            "This gateway does not answer to the name {host:?}. Open the Nest at this machine's address or \
             localhost, or add the name to [gateway] advertise in config.toml."
        );
        return PageError(StatusCode::FORBIDDEN, message).into_response();
    }
    if let Some((status, reason)) = crate::guard::cross_site(request.method(), request.uri().path(), request.headers())
    {
        tracing::warn!(path = %request.uri().path(), %reason, "refused a Nest request");
        return PageError(status, format!("{reason}; nothing was done.")).into_response();
    }
    next.run(request).await
}

/// Same-origin content only, no framing, no sniffing; pages are not cached.
async fn protective_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The page frame for a signed-in visitor, with any flash message left for them.
fn chrome(state: &AppState, visitor: &Visitor, active: &'static str) -> Chrome {
    Chrome {
        instance_name: state.instance.config.name.clone(),
        csrf: Some(visitor.csrf.clone()),
        active,
        flash: state.nest.sessions.take_flash(&visitor.id),
    }
}

fn chrome_for_login(state: &AppState) -> Chrome {
    Chrome { instance_name: state.instance.config.name.clone(), csrf: None, active: "login", flash: None }
}

/// The answer to a form without the right CSRF token: nothing was done.
fn forbidden() -> Response {
    let message = "This form is missing its security token, or the token does not match your session, \
                   so nothing was done. Reload the page and try again.";
    PageError(StatusCode::FORBIDDEN, message.into()).into_response()
}

/// A page that could not be shown: a status and one line saying why.
pub(crate) struct PageError(StatusCode, String);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e.0, e.1)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let chrome = Chrome { instance_name: String::new(), csrf: None, active: "error", flash: None };
        page(self.0, &ErrorPage { chrome, status: self.0.as_u16(), message: self.1 })
    }
}
