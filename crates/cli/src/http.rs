//! Bounded HTTP calls from the command line to a gateway.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// No CLI command waits longer than this on one request.
pub const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

async fn answer(response: reqwest::Response, url: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.with_context(|| format!("{url} did not answer with JSON"))?;
    if !status.is_success() {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        bail!("{url} answered {}: {reason}", status.as_u16());
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

/// The base URL of a gateway as a person may type it.
pub fn base(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") { url.to_string() } else { format!("http://{url}") }
}
