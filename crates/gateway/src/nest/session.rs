//! Browser sessions: random ids held in memory with an expiry, each with its
//! own CSRF token and a one-shot flash message, plus the cookie helpers.
//! Sessions end when the gateway restarts; that only means logging in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "roost_nest";
/// The cookie carrying the login form's double-submit token, before any session.
pub(crate) const LOGIN_COOKIE: &str = "roost_nest_login";
/// How long a session lasts after login.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// A fresh unguessable token: 32 random bytes, base64url.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Compares two secrets in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request, if sent.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` value scoped to the Nest, unreadable by scripts, never
/// sent by other sites; `max_age` zero deletes it.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/nest; Max-Age={}", max_age.as_secs())
}

struct Session {
    csrf: String,
    expires: Instant,
    flash: Option<String>,
}

/// A logged-in browser, as handlers see it.
pub(crate) struct Visitor {
    pub id: String,
    pub csrf: String,
}

#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session; returns its id.
    pub(crate) fn start(&self) -> String {
        let id = random_token();
        let mut map = self.map();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), Session { csrf: random_token(), expires: now + SESSION_LIFETIME, flash: None });
        id
    }

    /// The live session with this id.
    pub(crate) fn find(&self, id: &str) -> Option<Visitor> {
        let map = self.map();
        let session = map.get(id).filter(|s| s.expires > Instant::now())?;
        Some(Visitor { id: id.to_string(), csrf: session.csrf.clone() })
    }

    pub(crate) fn end(&self, id: &str) {
        self.map().remove(id);
    }

    /// Leaves a message for the session's next page.
    pub(crate) fn flash(&self, id: &str, message: String) {
        if let Some(session) = self.map().get_mut(id) {
            session.flash = Some(message);
        }
    }

    pub(crate) fn take_flash(&self, id: &str) -> Option<String> {
        self.map().get_mut(id).and_then(|s| s.flash.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_cookies() {
        let sessions = Sessions::default();
        let id = sessions.start();
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), 32);
        let visitor = sessions.find(&id).unwrap();
        assert!(same_secret(&visitor.csrf, &sessions.find(&id).unwrap().csrf));
        assert!(!same_secret(&visitor.csrf, &random_token()));
        sessions.flash(&id, "done".into());
        assert_eq!(sessions.take_flash(&id).as_deref(), Some("done"));
        assert_eq!(sessions.take_flash(&id), None);
        sessions.end(&id);
        assert!(sessions.find(&id).is_none());

        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; roost_nest=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }
}
