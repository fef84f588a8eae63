//! Host names as the system resolves them (getaddrinfo: `/etc/hosts`, DNS,
//! and whatever else the machine is set up with), for the endpoint's relay
//! connections and probes. iroh's own resolver asks DNS servers only, so a
//! relay named in a hosts file, or on a network without a DNS server, would
//! never become the machine's home relay, and nothing could reach it there.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::time::Duration;

use iroh::dns::{BoxIter, DnsError, Resolver, TxtRecordData};
use n0_error::{AnyError, e};

/// How long one lookup may take.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

type Lookup<T> = Pin<Box<dyn Future<Output = Result<BoxIter<T>, DnsError>> + Send + 'static>>;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup_ipv4(&self, host: String) -> Lookup<Ipv4Addr> {
        lookup(host, |ip| match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
    }

    fn lookup_ipv6(&self, host: String) -> Lookup<Ipv6Addr> {
        lookup(host, |ip| match ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        })
    }

    /// Address lookup by DNS records is off: peers are dialed at the
    /// addresses the registry holds.
    fn lookup_txt(&self, _host: String) -> Lookup<TxtRecordData> {
        Box::pin(async { Err(e!(DnsError::NoResponse)) })
    }

    fn clear_cache(&self) {}

    fn reset(&self) -> Box<dyn Resolver> {
        Box::new(SystemResolver)
    }
}

/// The addresses of `host` of one family (what `family` keeps).
fn lookup<T: Send + 'static>(host: String, family: fn(IpAddr) -> Option<T>) -> Lookup<T> {
    Box::pin(async move {
        let found = tokio::time::timeout(LOOKUP_WAIT, tokio::net::lookup_host((host.as_str(), 0)))
            .await
            .map_err(|_| e!(DnsError::Timeout))?
            .map_err(|err| e!(DnsError::Resolve, AnyError::from_std(err)))?;
        let kept: Vec<T> = found.filter_map(|a| family(a.ip())).collect();
        Ok(Box::new(kept.into_iter()) as BoxIter<T>)
    })
}
