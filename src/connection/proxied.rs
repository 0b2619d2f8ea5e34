//! A `proxy_protocol` listener's first step on each connection: read the
//! PROXY header ([`proxy_protocol`](super::proxy_protocol)) within
//! `timeouts.client_header`, put back the bytes read past it, and make its
//! client the connection's peer, so that everything after (the listener's
//! access rules, the real client address, the access log, `X-Forwarded-For`)
//! sees the client, not the balancer in front. Then the listener's gate
//! judges that client.
//!
//! The client goes where Pingora keeps the peer: a new socket digest for
//! the connection, whose peer address is the header's. A header that names
//! no client (LOCAL, UNKNOWN) keeps the TCP peer. A missing, malformed,
//! oversized or slow header closes the connection, counted in
//! `lb_proxy_protocol_errors_total{listener,reason}`.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};

use super::proxy_protocol::{read_proxy_header, ProxiedAddress};
use super::ClientGate;
use crate::telemetry::metrics::metrics;

/// What a `proxy_protocol` listener needs for each connection.
#[derive(Clone)]
pub struct ProxyHeaderStep {
    /// The listener's name, for the metric.
    pub listener: Arc<str>,
    /// How long the header may take to arrive whole.
    pub deadline: Duration,
    /// Who may go on once the client is known.
    pub gate: Arc<dyn ClientGate>,
}

impl ProxyHeaderStep {
    /// Reads the header on `stream` and makes its client the peer; false
    /// when the connection must close (no good header, or a client the
    /// gate refuses).
    pub async fn take(&self, stream: &mut L4Stream) -> bool {
        let (client, rest) = match read_proxy_header(stream, self.deadline).await {
            Ok(read) => read,
            Err(e) => {
                metrics()
                    .policies
                    .proxy_protocol_error(&self.listener, e.label());
                log::debug!(
                    "listener {}: closed for its PROXY header: {e}",
                    self.listener
                );
                return false;
            }
        };
        if !rest.is_empty() {
            stream.rewind(&rest);
        }
        let peer = match client {
            ProxiedAddress::Client(addr) => {
                let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                let _ = digest.peer_addr.set(Some(SocketAddr::Inet(addr)));
                stream.set_socket_digest(digest);
                Some(addr.ip())
            }
            ProxiedAddress::Unknown => stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
        };
        peer.is_none_or(|ip| self.gate.admits(ip))
    }
}

/// Before TLS, on a TLS listener: the header comes before the ClientHello.
#[async_trait::async_trait]
impl pingora::listeners::PreTlsProcess for ProxyHeaderStep {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if self.take(stream).await {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::HandshakeError,
                "closed for its PROXY header, or its client is refused",
            )
        }
    }
}

/// On a plain listener: the header comes before HTTP. None when the
/// connection must close.
pub(super) async fn take_before_http(
    step: &ProxyHeaderStep,
    stream: pingora::protocols::Stream,
) -> Option<pingora::protocols::Stream> {
    let mut tcp = stream.into_any().downcast::<L4Stream>().ok()?;
    step.take(&mut tcp).await.then_some(tcp)
}
