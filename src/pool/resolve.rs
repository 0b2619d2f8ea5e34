//! Turning backend host names into addresses, again every discovery
//! interval: the system resolver (getaddrinfo: `/etc/hosts`, Docker's and
//! Kubernetes' DNS), or a DNS server named in `discovery.resolver`.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::TokioAsyncResolver;

/// Where host names are looked up.
pub enum Resolver {
    /// The operating system's resolver.
    System,
    /// A DNS server of the user's choice, asked over UDP.
    Dns(Box<TokioAsyncResolver>),
}

impl Resolver {
    /// The system resolver, or a DNS client asking `server` when given.
    pub fn new(server: Option<SocketAddr>) -> Resolver {
        match server {
            None => Resolver::System,
            Some(server) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                let config = ResolverConfig::from_parts(None, vec![], servers);
                let mut opts = ResolverOpts::default();
                // Discovery asks again every interval; a cache would hide changes.
                opts.cache_size = 0;
                opts.attempts = 1;
                Resolver::Dns(Box::new(TokioAsyncResolver::tokio(config, opts)))
            }
        }
    }

    /// Every address of `host` (A and AAAA records), with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match self {
            Resolver::System => tokio::net::lookup_host((host, port))
                .await
                .map(|addrs| addrs.collect())
                .map_err(|e| e.to_string()),
            Resolver::Dns(resolver) => resolver
                .lookup_ip(host)
                .await
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(ip, port)).collect())
                .map_err(|e| e.to_string()),
        }
    }
}
