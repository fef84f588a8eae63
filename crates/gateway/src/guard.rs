//! What a request must show before any route sees it, against web pages
//! that aim a browser at the gateway.
//!
//! Any page, in any tab, can make the browser send a "simple" cross-site
//! POST (a form, or a `fetch` that needs no preflight) to a gateway on
//! loopback or the LAN, and a page that rebinds its own domain to the
//! gateway's address can even read the answers. So:
//! - a request to `/mcp`, and any request that changes state (anything but
//!   GET, HEAD and OPTIONS), is refused with 403 when it carries an `Origin`
//!   other than the gateway's own (the host and port its `Host` names), or
//!   `Sec-Fetch-Site` other than `same-origin` or `none` (typed by the user).
//!   Requests without them — the CLI, other machines, MCP clients — pass;
//! - a state-changing request to `/api/` must send its body as JSON, with
//!   `Content-Type: application/json` (415 otherwise): a page cannot send that
//!   cross-site without a CORS preflight, which the gateway never grants;
//! - the Nest answers only a `Host` that is an IP address, a loopback name,
//!   or a name this machine advertises (a rebinding page names its own
//!   domain). `/mcp` checks `Host` in rmcp, against the same names.

use axum::Json;
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Refuses, as JSON, the API's and `/mcp`'s requests a web page sent.
pub(crate) async fn api(request: Request, next: Next) -> Response {
    match cross_site(request.method(), request.uri().path(), request.headers()) {
        Some((status, reason)) => {
            tracing::warn!(path = %request.uri().path(), %reason, "refused a request");
            (status, Json(json!({"error": reason}))).into_response()
        }
        None => next.run(request).await,
    }
}

/// Whether a request changes state: anything but GET, HEAD and OPTIONS.
pub(crate) fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request must be refused as a web page's, if it must.
pub(crate) fn cross_site(method: &Method, path: &str, headers: &HeaderMap) -> Option<(StatusCode, String)> {
    let mcp = path == "/mcp" || path.starts_with("/mcp/");
    if !mcp && !changes_state(method) {
        return None;
    }
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    if let Some(origin) = text(ORIGIN.as_str()) {
        let host = text(HOST.as_str()).unwrap_or("");
        if !same_origin(origin, host) {
            return Some((
                StatusCode::FORBIDDEN,
                format!("cross-site request refused: Origin {origin} is not this gateway ({host})"),
            ));
        }
    }
    if let Some(site) = text(SEC_FETCH_SITE)
        && !matches!(site, "same-origin" | "none")
    {
        return Some((StatusCode::FORBIDDEN, format!("cross-site request refused: Sec-Fetch-Site is {site}")));
    }
    if path.starts_with("/api/") && changes_state(method) && !is_json(headers) {
        return Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as JSON, with Content-Type: application/json".into(),
        ));
    }
    None
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    })
}

/// Whether `origin` is the origin of the gateway a browser reached as `host`:
/// the same host and port (a port left out is the scheme's default).
fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(origin) = origin.parse::<Uri>() else { return false };
    let (Some(scheme), Some(named)) = (origin.scheme_str(), origin.authority()) else { return false };
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Ok(host) = host.parse::<Authority>() else { return false };
    named.host().eq_ignore_ascii_case(host.host())
        && named.port_u16().unwrap_or(default) == host.port_u16().unwrap_or(default)
}

/// Whether the Nest answers to `host` (a `Host` header): an IP address, or
/// one of `names` (loopback names and the names this machine advertises).
pub(crate) fn nest_host_allowed(host: &str, names: &[String]) -> bool {
    let Ok(authority) = host.parse::<Authority>() else { return false };
    let name = authority.host().trim_start_matches('[').trim_end_matches(']');
    name.parse::<std::net::IpAddr>().is_ok() || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:7151", "127.0.0.1:7151"));
        assert!(same_origin("http://LOCALHOST:7151", "localhost:7151"));
        assert!(same_origin("https://nest.example", "nest.example"));
        assert!(same_origin("http://[::1]:7151", "[::1]:7151"));
        assert!(!same_origin("http://localhost:3000", "localhost:7151"), "another port is another origin");
        assert!(!same_origin("http://evil.example", "127.0.0.1:7151"));
        assert!(!same_origin("null", "127.0.0.1:7151"), "file:// pages and sandboxes send null");
        assert!(!same_origin("file://", "127.0.0.1:7151"));
        assert!(!same_origin("http://127.0.0.1:7151", ""));
    }

    #[test]
    fn what_is_refused() {
        let post = Method::POST;
        let json = ("content-type", "application/json");
        let path = "/api/v1/conflicts/x/resolve";
        assert!(cross_site(&post, path, &headers(&[json])).is_none(), "the CLI and other machines");
        let foreign = headers(&[json, ("origin", "http://evil.example"), ("host", "127.0.0.1:7151")]);
        assert_eq!(cross_site(&post, path, &foreign).unwrap().0, StatusCode::FORBIDDEN);
        let own = headers(&[json, ("origin", "http://127.0.0.1:7151"), ("host", "127.0.0.1:7151")]);
        assert!(cross_site(&post, path, &own).is_none());
        let site = headers(&[json, ("sec-fetch-site", "cross-site")]);
        assert_eq!(cross_site(&post, path, &site).unwrap().0, StatusCode::FORBIDDEN);
        let same_site = headers(&[json, ("sec-fetch-site", "same-site")]);
        assert_eq!(cross_site(&post, path, &same_site).unwrap().0, StatusCode::FORBIDDEN, "another port");
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(cross_site(&post, path, &form).unwrap().0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(cross_site(&post, path, &HeaderMap::new()).unwrap().0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(cross_site(&post, "/nest/logout", &form).is_none(), "the Nest's forms carry CSRF tokens");
        let evil_get = headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:7151")]);
        assert!(cross_site(&Method::GET, "/api/v1/instance", &evil_get).is_none(), "reads are CORS-protected");
        assert_eq!(cross_site(&Method::GET, "/mcp", &evil_get).unwrap().0, StatusCode::FORBIDDEN);
        assert_eq!(cross_site(&Method::DELETE, "/mcp", &evil_get).unwrap().0, StatusCode::FORBIDDEN);
    }

    #[test]
    fn nest_hosts() {
        let names = vec!["localhost".to_string(), "laptop".to_string()];
        for host in ["127.0.0.1:7151", "localhost:7151", "LAPTOP:7151", "[::1]:7151", "192.168.1.9:7151", "laptop"] {
            assert!(nest_host_allowed(host, &names), "{host}");
        }
        for host in ["evil.example:7151", "", "laptop.evil.example", "127.0.0.1.nip.io:7151"] {
            assert!(!nest_host_allowed(host, &names), "{host}");
        }
    }
}
