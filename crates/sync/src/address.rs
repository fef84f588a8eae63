//! Where to dial a peer: every gateway URL the registry holds for it,
//! resolved at each dial, so a host name (DNS, `/etc/hosts`, Tailscale
//! MagicDNS) follows the machine, and an address that moved is found again.

use std::net::SocketAddr;
use std::time::Duration;

use iroh::{EndpointAddr, PublicKey, RelayUrl};
use tokio::task::JoinSet;

use roost_instance::addresses::host_and_port;
use roost_store::InstanceEntry;

/// The longest a name lookup may take.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// Why a peer cannot be dialed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAddress {
    /// The registry holds no address for it at all.
    None,
    /// None of its addresses resolved; the reason of the last.
    Unresolved(String),
    /// Its signing key in the registry is malformed.
    BadKey,
}

impl std::fmt::Display for NoAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAddress::None => f.write_str(
                "no address known for it: it will be found when it connects, or set [gateway] advertise there",
            ),
            NoAddress::Unresolved(why) => write!(f, "none of its addresses resolves ({why})"),
            NoAddress::BadKey => f.write_str("its key in the registry is malformed"),
        }
    }
}

/// Resolves every URL at once, each bounded; IP literals need no lookup.
pub async fn resolve(urls: &[String]) -> Result<Vec<SocketAddr>, NoAddress> {
    if urls.is_empty() {
        return Err(NoAddress::None);
    }
    let mut lookups = JoinSet::new();
    for url in urls {
        let Some((host, port)) = host_and_port(url) else { continue };
        lookups.spawn(async move {
            if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            match tokio::time::timeout(LOOKUP_WAIT, tokio::net::lookup_host((host.as_str(), port))).await {
                Ok(Ok(found)) => Ok(found.collect()),
                Ok(Err(e)) => Err(format!("{host}: {e}")),
                Err(_) => Err(format!("{host}: no answer within {LOOKUP_WAIT:?}")),
            }
        });
    }
    let mut found: Vec<SocketAddr> = Vec::new();
    let mut last_error = String::from("no URL names a host");
    while let Some(done) = lookups.join_next().await {
        match done {
            Ok(Ok(addresses)) => found.extend(addresses.into_iter().filter(|a| !found.contains(a)).collect::<Vec<_>>()),
            Ok(Err(why)) => last_error = why,
            Err(e) => last_error = e.to_string(),
        }
    }
    if found.is_empty() { Err(NoAddress::Unresolved(last_error)) } else { Ok(found) }
}

/// True if dialing `socket` would reach the endpoint bound at `own`: the
/// same address, or a loopback or unspecified one at a port bound on every
/// interface. A peer's loopback URL, passed on by a third machine, names
/// this machine's own loopback; dialed, it answers with the wrong key and
/// can fail the whole connection before the peer's real address is tried.
fn reaches_itself(socket: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|bound| {
        bound.port() == socket.port()
            && (bound.ip() == socket.ip()
                || (bound.ip().is_unspecified() && (socket.ip().is_loopback() || socket.ip().is_unspecified())))
    })
}

/// The peer's endpoint id with every address it may be reached at, and
/// every relay it may be reached through: a peer whose addresses do not
/// resolve from here is still dialed through the relays. Addresses that
/// would reach this endpoint itself (bound at `own`) are left out.
pub async fn endpoint_addr(
    peer: &InstanceEntry,
    relays: &[RelayUrl],
    own: &[SocketAddr],
) -> Result<EndpointAddr, NoAddress> {
    let key = roost_core::hex::decode_array(&peer.signing_key)
        .and_then(|k| PublicKey::from_bytes(&k).ok())
        .ok_or(NoAddress::BadKey)?;
    let sockets = match resolve(&peer.addresses).await {
        Ok(sockets) => sockets.into_iter().filter(|s| !reaches_itself(s, own)).collect(),
        Err(_) if !relays.is_empty() => Vec::new(),
        Err(e) => return Err(e),
    };
    let addr = sockets.into_iter().fold(EndpointAddr::new(key), |addr, socket| addr.with_ip_addr(socket));
    Ok(relays.iter().cloned().fold(addr, |addr, relay| addr.with_relay_url(relay)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_resolve_without_lookup_and_nothing_is_an_error() {
        let urls = vec!["http://127.0.0.1:7151".to_string(), "http://[::1]:7152".to_string()];
        assert_eq!(resolve(&urls).await.unwrap().len(), 2);
        assert_eq!(resolve(&[]).await, Err(NoAddress::None));
        let nameless = vec!["http://:7151".to_string()];
        assert!(matches!(resolve(&nameless).await, Err(NoAddress::Unresolved(_))));
    }

    #[test]
    fn a_loopback_address_at_a_port_bound_everywhere_is_this_endpoint() {
        let socket = |s: &str| s.parse::<SocketAddr>().unwrap();
        let everywhere = [socket("0.0.0.0:7151"), socket("[::]:7151")];
        assert!(reaches_itself(&socket("127.0.0.1:7151"), &everywhere));
        assert!(reaches_itself(&socket("[::1]:7151"), &everywhere));
        assert!(!reaches_itself(&socket("127.0.0.1:7152"), &everywhere), "another machine on this host");
        assert!(!reaches_itself(&socket("10.0.0.2:7151"), &everywhere), "another host");
        let loopback_only = [socket("127.0.0.1:7151")];
        assert!(reaches_itself(&socket("127.0.0.1:7151"), &loopback_only));
        assert!(!reaches_itself(&socket("10.0.0.2:7151"), &loopback_only));
    }
}
