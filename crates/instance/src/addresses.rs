//! Where this machine can be reached: the gateway URLs it advertises to the
//! other machines of its chain, and the host name it goes by.
//!
//! Configured URLs (`[gateway] advertise`) win. Otherwise a gateway bound to a
//! wildcard address advertises the host name and every address of every
//! interface but loopback (the host name first: it survives a new DHCP lease);
//! one bound to one address advertises that address. A loopback address is
//! advertised only by a gateway bound to loopback, whose peers can only be on
//! the same host; receivers drop loopback URLs a machine on another host sends.

use std::net::{IpAddr, SocketAddr};

/// This host's name, as the kernel knows it.
pub fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.trim().to_string();
    (!name.is_empty() && name != "localhost" && name != "(none)").then_some(name)
}

/// The gateway URL of `ip` and `port` (IPv6 in brackets).
pub fn url_for(ip: IpAddr, port: u16) -> String {
    format!("http://{}", SocketAddr::new(ip, port))
}

/// `http://` in front of an address typed without a scheme; no trailing slash.
pub fn normalise(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") { url.to_string() } else { format!("http://{url}") }
}

/// The host and port of a gateway URL (port 80 when none is given).
pub fn host_and_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 80,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Whether a URL names a loopback address or `localhost`.
pub fn is_loopback_url(url: &str) -> bool {
    host_and_port(url).is_some_and(|(host, _)| {
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

/// The URLs a gateway bound to `bound` advertises, given the configured ones.
pub fn advertised(configured: &[String], bound: SocketAddr) -> Vec<String> {
    if !configured.is_empty() {
        return configured.iter().map(|u| normalise(u)).collect();
    }
    let port = bound.port();
    if !bound.ip().is_unspecified() {
        return vec![url_for(bound.ip(), port)];
    }
    let mut urls: Vec<String> = host_name().map(|name| format!("http://{name}:{port}")).into_iter().collect();
    let mut ips = interface_addresses();
    // IPv4 first: the addresses people read and type.
    ips.sort_by_key(|ip| ip.is_ipv6());
    urls.extend(ips.into_iter().map(|ip| url_for(ip, port)));
    urls.dedup();
    urls
}

/// Every address of every interface that another host could use: no
/// loopback, and no IPv6 link-local address (it needs an interface name).
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut ips: Vec<IpAddr> = Vec::new();
    for interface in interfaces {
        let Some(address) = interface.address else { continue };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !ip.is_loopback() && !ip.is_unspecified() && !link_local && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_port() {
        assert_eq!(host_and_port("http://home.lan:7151"), Some(("home.lan".into(), 7151)));
        assert_eq!(host_and_port("http://[fd00::1]:7151/mcp"), Some(("fd00::1".into(), 7151)));
        assert_eq!(host_and_port("10.0.0.2:80"), Some(("10.0.0.2".into(), 80)));
        assert_eq!(host_and_port("http://home.lan"), Some(("home.lan".into(), 80)));
        assert_eq!(host_and_port("http://:7151"), None);
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:7151"));
        assert!(is_loopback_url("http://[::1]:1"));
        assert!(is_loopback_url("http://LOCALHOST:7151"));
        assert!(!is_loopback_url("http://10.1.2.3:7151"));
        assert!(!is_loopback_url("http://home.lan:7151"));
    }

    #[test]
    fn a_wildcard_bind_advertises_no_loopback_and_configured_urls_win() {
        let wildcard: SocketAddr = "0.0.0.0:7151".parse().unwrap();
        assert!(advertised(&[], wildcard).iter().all(|u| !is_loopback_url(u) && u.ends_with(":7151")));
        let loopback: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(advertised(&[], loopback), vec!["http://127.0.0.1:9".to_string()]);
        assert_eq!(advertised(&["vps.example.org:7151/".into()], wildcard), vec!["http://vps.example.org:7151"]);
    }
}
