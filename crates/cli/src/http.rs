//! Bounded HTTP calls from the command line: to this machine's own gateway
//! over the instance's Unix socket, and to other gateways over TCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// No CLI command waits longer than this on one request.
pub const WAIT: Duration = Duration::from_secs(10);

/// The file name of the gateway's Unix socket in the instance home.
pub use roost_instance::SOCKET;

/// This machine's gateway is not running (its socket is absent or refuses).
#[derive(Debug, thiserror::Error)]
#[error("roost serve is not running for {0} (start it with `roost serve`)")]
pub struct NotRunning(pub PathBuf);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

async fn answer(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.with_context(|| format!("{what} did not answer with JSON"))?;
    if !status.is_success() {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        bail!("{what} answered {}: {reason}", status.as_u16());
    }
    Ok(body)
}

/// GET `url` and parse the JSON answer; non-2xx is an error carrying the
/// server's reason.
pub fn get(url: &str, wait: Duration) -> anyhow::Result<Value> {
    runtime()?.block_on(async {
        let client = reqwest::Client::builder().timeout(wait).build()?;
        let response = client.get(url).send().await.with_context(|| format!("cannot reach {url}"))?;
        answer(response, url).await
    })
}

/// POST `body` as JSON to `url` and parse the JSON answer.
pub fn post(url: &str, body: &Value) -> anyhow::Result<Value> {
    runtime()?.block_on(async {
        let client = reqwest::Client::builder().timeout(WAIT).build()?;
        let response = client.post(url).json(body).send().await.with_context(|| format!("cannot reach {url}"))?;
        answer(response, url).await
    })
}

/// A request to this machine's own gateway, over the socket in `home`:
/// GET when `body` is `None`, else POST it as JSON. [`NotRunning`] when no
/// gateway listens there.
pub fn local(home: &Path, path: &str, body: Option<&Value>, wait: Duration) -> anyhow::Result<Value> {
    let method = if body.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
    local_request(home, method, path, body, wait)
}

/// [`local`] with the method given.
pub fn local_request(
    home: &Path,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    wait: Duration,
) -> anyhow::Result<Value> {
    let socket = home.join(SOCKET);
    if !socket.exists() {
        return Err(NotRunning(home.to_path_buf()).into());
    }
    runtime()?.block_on(async {
        let client = reqwest::Client::builder().unix_socket(socket.as_path()).timeout(wait).build()?;
        let url = format!("http://localhost{path}");
        let request = client.request(method, &url);
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Err(NotRunning(home.to_path_buf()).into()),
            Err(e) => return Err(e).with_context(|| format!("this machine's gateway did not answer {path}")),
        };
        answer(response, &format!("this machine's gateway ({path})")).await
    })
}

/// Whether an error says this machine's gateway is not running.
pub fn not_running(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NotRunning>().is_some()
}

/// The base URL of a gateway as a person may type it.
pub fn base(url: &str) -> String {
    roost_instance::addresses::normalise(url)
}
