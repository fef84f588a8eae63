//! Whether this machine could do the agent's work now: it reaches every
//! endpoint the agent sends to (the webhook, Telegram's Bot API). Every
//! machine checks, standbys above all, and tells the lease, which carries it
//! in heartbeats: a holder that cannot work hands the role to a standby that
//! says it can. Reaching is opening a TCP connection to the endpoint's host
//! and port, which proves the network path, not the receiver's goodwill.

use std::sync::Arc;
use std::time::Duration;

use super::Context;

/// How often the endpoints are tried.
const EVERY: Duration = Duration::from_secs(3);
/// One try of one endpoint (its name lookup included) is bounded by this.
const WAIT: Duration = Duration::from_secs(2);

/// The host and port of each URL the agent sends to; a URL that does not
/// parse is left out (the config check refused it already).
pub(super) fn endpoints<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<(String, u16)> {
    urls.into_iter()
        .filter_map(|url| {
            let url = reqwest::Url::parse(url).ok()?;
            Some((url.host_str()?.trim_matches(['[', ']']).to_string(), url.port_or_known_default()?))
        })
        .collect()
}

/// Tries `endpoints` every [`EVERY`] for as long as the agent runs, and
/// tells the lease and the status whenever the answer changes.
pub(super) async fn watch(context: Arc<Context>, endpoints: Vec<(String, u16)>) {
    let mut told = None;
    loop {
        let mut able = true;
        for (host, port) in &endpoints {
            let reached = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect((host.as_str(), *port))).await;
            if !matches!(reached, Ok(Ok(_))) {
                able = false;
                break;
            }
        }
        if told != Some(able) {
            told = Some(able);
            if !able {
                tracing::warn!("the agent's channels are out of reach from here; a holder will not hand the role here");
            }
            context.shared.status.lock().expect("agent status poisoned").reaches_channels = Some(able);
            context.awake.set_able(able).await;
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port_with_the_scheme_default() {
        let found = endpoints(["https://example.org/hook", "http://10.0.0.7:8080/x", "http://[::1]:9/", "not a url"]);
        assert_eq!(found, [("example.org".to_string(), 443), ("10.0.0.7".to_string(), 8080), ("::1".to_string(), 9)]);
    }
}
