//! Logging in and out, and the extractor that admits only signed-in browsers.
//!
//! The login form is protected by a double-submit token (a cookie and a
//! hidden field that must match) since there is no session yet; failed
//! attempts are counted per client address ([`super::throttle`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::password::{self, Verdict};
use super::session::{LOGIN_COOKIE, SESSION_COOKIE, SESSION_LIFETIME, Visitor, cookie, random_token, same_secret};
use super::templates::{LoginPage, page};
use super::{chrome_for_login, forbidden};
use crate::AppState;

/// How long the login form's token stays valid.
const LOGIN_FORM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60 * 60);
/// How long one password check (Argon2id) may take.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl FromRequestParts<Arc<AppState>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| state.nest.sessions.find(&id))
            .ok_or_else(|| Redirect::to("/nest/login").into_response())
    }
}

/// A signed-in visitor's form, its CSRF token matching the session's: an
/// action's only way in. Otherwise nothing is done and 403 says why.
pub(crate) struct SignedForm {
    pub visitor: Visitor,
    pub fields: Vec<(String, String)>,
}

impl SignedForm {
    /// The first value of the field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl FromRequest<Arc<AppState>> for SignedForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let Form(fields) = Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let signed = SignedForm { visitor, fields };
        if !signed.field("csrf").is_some_and(|csrf| same_secret(csrf, &signed.visitor.csrf)) {
            return Err(forbidden());
        }
        Ok(signed)
    }
}

pub(crate) async fn form(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let signed_in = cookie(&headers, SESSION_COOKIE).and_then(|id| state.nest.sessions.find(&id)).is_some();
    if signed_in {
        return Redirect::to("/nest").into_response();
    }
    login_page(&state, StatusCode::OK, None)
}

/// The login form with a fresh double-submit token.
fn login_page(state: &AppState, status: StatusCode, error: Option<String>) -> Response {
    let csrf = random_token();
    let template = LoginPage {
        chrome: chrome_for_login(state),
        csrf: csrf.clone(),
        password_set: password::is_set(&state.instance.home),
        error,
    };
    let mut response = page(status, &template);
    let cookie = super::session::set_cookie(LOGIN_COOKIE, &csrf, LOGIN_FORM_LIFETIME);
    response.headers_mut().insert(SET_COOKIE, cookie.parse().expect("cookie text is a valid header"));
    response
}

/// What a visitor is told when the password cannot be checked; the details
/// (a file path, say) go to the log only.
const CHECK_FAILED: &str = "The password could not be checked; the server log says why.";

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(login): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(&login.csrf, &expected) {
        return forbidden();
    }
    let attempt = match state.nest.throttle.attempt(peer.ip()) {
        Ok(attempt) => attempt,
        Err(wait) => {
            let seconds = wait.as_secs();
            let error = format!("Too many failed attempts; try again in {seconds} s.");
            let mut response = login_page(&state, StatusCode::TOO_MANY_REQUESTS, Some(error));
            response.headers_mut().insert(RETRY_AFTER, seconds.into());
            return response;
        }
    };
    let home = state.instance.home.clone();
    // Each check holds Argon2's memory; a few at a time, whatever arrives.
    let Ok(_permit) = state.nest.checks.acquire().await else {
        return login_page(&state, StatusCode::SERVICE_UNAVAILABLE, Some("The server is shutting down.".into()));
    };
    let checking = move || password::check(&home, &login.password);
    let verdict = roost_tasks::blocking("the password check", CHECK_WAIT, checking).await;
    match verdict {
        Ok(Ok(Verdict::Right)) => {
            state.nest.throttle.forgive(peer.ip(), attempt);
            let id = state.nest.sessions.start();
            tracing::info!(%peer, "Nest login");
            let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/nest")]).into_response();
            let headers = response.headers_mut();
            for cookie in [
                super::session::set_cookie(SESSION_COOKIE, &id, SESSION_LIFETIME),
                super::session::set_cookie(LOGIN_COOKIE, "", std::time::Duration::ZERO),
            ] {
                headers.append(SET_COOKIE, cookie.parse().expect("cookie text is a valid header"));
            }
            response
        }
        Ok(Ok(Verdict::Wrong)) => {
            tracing::warn!(%peer, "Nest login refused: wrong password");
            login_page(&state, StatusCode::UNAUTHORIZED, Some("Wrong password.".into()))
        }
        Ok(Ok(Verdict::NotSet)) => {
            state.nest.throttle.forgive(peer.ip(), attempt);
            login_page(&state, StatusCode::CONFLICT, None)
        }
        Ok(Err(reason)) => {
            tracing::error!(%reason, "cannot check the Nest password");
            login_page(&state, StatusCode::INTERNAL_SERVER_ERROR, Some(CHECK_FAILED.into()))
        }
        Err(join) => {
            tracing::error!(error = %join, "the Nest password check failed");
            login_page(&state, StatusCode::INTERNAL_SERVER_ERROR, Some(CHECK_FAILED.into()))
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    visitor: Visitor,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if !same_secret(&form.csrf, &visitor.csrf) {
        return forbidden();
    }
    state.nest.sessions.end(&visitor.id);
    let gone = super::session::set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO);
    (StatusCode::SEE_OTHER, [(LOCATION, "/nest/login".to_string()), (SET_COOKIE, gone)]).into_response()
}
