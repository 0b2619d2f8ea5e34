//! The connection settings of a backend peer, built once per config from
//! [`BackendTransport`] and stamped onto each request's and each health
//! check's `HttpPeer`: TLS, SNI, ALPN, certificate checks and the CA.
//!
//! Per request this costs what `HttpPeer` itself needs: the SNI string
//! (one allocation, over TLS only; plaintext peers have an empty one) and an
//! `Arc` clone of the CA. Everything else is copied from here.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::protocols::tls::CaType;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{BackendProtocol, BackendTransport};

/// How many requests an HTTP/2 connection to a backend carries at once.
/// Pingora's default is 1, which makes every concurrent request open its
/// own connection and gives up HTTP/2's multiplexing.
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Connects to the backend at `addr` (a TCP address) within `timeout`, with
/// the error types of Pingora's own connect, which lb's retries and
/// passive health read; returns the stream and the address as an IP
/// address. For the connections lb opens itself (`PeerOptions.custom_l4`).
pub async fn connect_tcp(
    addr: &pingora::protocols::l4::socket::SocketAddr,
    timeout: std::time::Duration,
) -> pingora::Result<(tokio::net::TcpStream, SocketAddr)> {
    use pingora::{Error, ErrorType};
    let Some(inet) = addr.as_inet() else {
        return Error::e_explain(
            ErrorType::ConnectError,
            format!("backend {addr} is not a TCP address"),
        );
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(*inet)).await {
        Ok(Ok(tcp)) => Ok((tcp, *inet)),
        Ok(Err(e)) => {
            let etype = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                std::io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                    ErrorType::ConnectNoRoute
                }
                _ => ErrorType::ConnectError,
            };
            Err(Error::because(
                etype,
                format!("Fail to connect to {addr}"),
                e,
            ))
        }
        Err(_) => Error::e_explain(
            ErrorType::ConnectTimedout,
            format!("timeout {timeout:?} connecting to server {addr}"),
        ),
    }
}

/// What every peer of a pool shares.
#[derive(Clone)]
pub struct PeerTemplate {
    tls: bool,
    /// The configured SNI; `None` means each backend's host name.
    sni: Option<String>,
    alpn: ALPN,
    verify: bool,
    ca: Option<Arc<CaType>>,
    max_h2_streams: usize,
    /// Keeps pooled connections made under other settings from being
    /// reused: Pingora's connection-reuse hash covers the address, SNI and
    /// verification, but neither the CA nor the ALPN.
    group_key: u64,
    protocol: BackendProtocol,
}

impl PeerTemplate {
    /// The settings `transport` describes.
    pub fn new(transport: &BackendTransport) -> Self {
        let tls = transport.tls.as_ref();
        let alpn = match transport.protocol {
            BackendProtocol::Http1 => ALPN::H1,
            // Over TLS ALPN offers h2 only; on plaintext (h2c) Pingora takes
            // a minimum version of 2 as HTTP/2 with prior knowledge.
            BackendProtocol::H2 | BackendProtocol::H2c => ALPN::H2,
        };
        let mut hasher = DefaultHasher::new();
        transport.protocol.hash(&mut hasher);
        if let Some(tls) = tls {
            tls.sni.hash(&mut hasher);
            tls.verify.hash(&mut hasher);
            if let Some(ca) = &tls.ca {
                ca.der.hash(&mut hasher);
            }
        }
        PeerTemplate {
            tls: tls.is_some(),
            sni: tls.and_then(|t| t.sni.clone()),
            alpn,
            verify: tls.is_none_or(|t| t.verify),
            ca: tls
                .and_then(|t| t.ca.as_ref())
                .map(|ca| Arc::clone(&ca.certs)),
            max_h2_streams: if transport.protocol.is_http2() {
                H2_STREAMS_PER_CONNECTION
            } else {
                1
            },
            group_key: hasher.finish(),
            protocol: transport.protocol,
        }
    }

    /// The protocol these peers speak.
    pub fn protocol(&self) -> BackendProtocol {
        self.protocol
    }

    /// Whether these peers are reached over TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Sets how many streams one HTTP/2 connection may carry (health checks
    /// use 1, so each check makes its own connection).
    pub fn set_max_h2_streams(&mut self, streams: usize) {
        self.max_h2_streams = streams;
    }

    /// A peer for the backend at `addr`, configured as `host`. Timeouts are
    /// the caller's.
    pub fn peer(&self, addr: SocketAddr, host: &str) -> HttpPeer {
        let sni = if self.tls {
            self.sni.as_deref().unwrap_or(host).to_string()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.tls, sni);
        peer.group_key = self.group_key;
        let options = &mut peer.options;
        options.alpn = self.alpn.clone();
        options.verify_cert = self.verify;
        options.verify_hostname = self.verify;
        options.ca = self.ca.clone();
        options.max_h2_streams = self.max_h2_streams;
        peer
    }
}

/// The connectors of every probe of every pool. Each Pingora connector
/// reads the system's CA certificates when it is made, and holds its own
/// idle connections: one per pool made a thousand pools read the CA bundle
/// two thousand times. What differs between pools (TLS, SNI, CA, ALPN) is
/// in each probe's peer, not in the connector.
pub(super) struct Connectors {
    pub http: HttpConnector,
    pub transport: TransportConnector,
}

/// Idle connections the probes may keep, all pools together.
const PROBE_IDLE_CONNECTIONS: usize = 65_536;

pub(super) fn probe_connectors() -> &'static Connectors {
    static CONNECTORS: std::sync::OnceLock<Connectors> = std::sync::OnceLock::new();
    CONNECTORS.get_or_init(|| Connectors {
        // Room for a kept connection to every backend of every pool.
        http: HttpConnector::new(Some(ConnectorOptions::new(PROBE_IDLE_CONNECTIONS))),
        transport: TransportConnector::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendTls;
    use pingora::upstreams::peer::Peer;

    fn addr() -> SocketAddr {
        "127.0.0.1:8443".parse().unwrap()
    }

    #[test]
    fn plaintext_http1_is_a_bare_peer() {
        let peer = PeerTemplate::new(&BackendTransport::default()).peer(addr(), "be1");
        assert!(!peer.tls());
        assert_eq!(peer.sni, "");
        assert_eq!(peer.options.alpn, ALPN::H1);
        assert_eq!(peer.options.max_h2_streams, 1);
    }

    #[test]
    fn tls_takes_the_host_name_as_sni_unless_one_is_set() {
        let mut transport = BackendTransport {
            protocol: BackendProtocol::H2,
            tls: Some(BackendTls {
                sni: None,
                verify: true,
                ca: None,
            }),
        };
        let peer = PeerTemplate::new(&transport).peer(addr(), "api.internal");
        assert!(peer.tls());
        assert_eq!(peer.sni, "api.internal");
        assert_eq!(peer.options.alpn, ALPN::H2);
        assert!(peer.options.verify_cert && peer.options.verify_hostname);
        if let Some(tls) = transport.tls.as_mut() {
            tls.sni = Some("other.internal".into());
            tls.verify = false;
        }
        let peer = PeerTemplate::new(&transport).peer(addr(), "api.internal");
        assert_eq!(peer.sni, "other.internal");
        assert!(!peer.options.verify_cert && !peer.options.verify_hostname);
    }

    #[test]
    fn h2c_is_plaintext_with_http2_only() {
        let transport = BackendTransport {
            protocol: BackendProtocol::H2c,
            tls: None,
        };
        let peer = PeerTemplate::new(&transport).peer(addr(), "be1");
        assert!(!peer.tls());
        assert_eq!(peer.options.alpn.get_min_http_version(), 2);
        assert_eq!(peer.options.max_h2_streams, H2_STREAMS_PER_CONNECTION);
    }

    #[test]
    fn different_transports_never_share_pooled_connections() {
        let h2c = PeerTemplate::new(&BackendTransport {
            protocol: BackendProtocol::H2c,
            tls: None,
        });
        let http1 = PeerTemplate::new(&BackendTransport::default());
        assert_ne!(
            h2c.peer(addr(), "be").reuse_hash(),
            http1.peer(addr(), "be").reuse_hash()
        );
    }
}
