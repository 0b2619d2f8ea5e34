//! What a TLS listener does with a connection before its handshake, as one
//! chain in Pingora's single pre-TLS slot: first the connection is counted
//! and given its handshake deadline ([`Admission::admit_tls`]), then each
//! further step runs in order (today the answer to plain HTTP; the PROXY
//! protocol header will come before it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;

use crate::connection::{Admission, Refusal};

/// The pre-TLS chain of one TLS listener.
pub struct PreTlsChain {
    /// The connection counts every listener shares.
    pub admission: Arc<Admission>,
    /// The listener's name, for the counts.
    pub listener: Arc<str>,
    /// Longest time from accept to the end of the handshake
    /// (`timeouts.tls_handshake`).
    pub handshake_deadline: Duration,
    /// The steps after admission, in order; the first error closes the
    /// connection.
    pub steps: Vec<Arc<dyn PreTlsProcess>>,
}

#[async_trait]
impl PreTlsProcess for PreTlsChain {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let handshake = self
            .admission
            .admit_tls(stream, &self.listener, self.handshake_deadline)
            .map_err(|refusal| {
                pingora::Error::explain(
                    pingora::ErrorType::HandshakeError,
                    match refusal {
                        Refusal::MaxTlsHandshakes => "closed at once: limits.max_tls_handshakes",
                        Refusal::MaxConnections => "closed at once: limits.max_connections",
                    },
                )
            })?;
        for step in &self.steps {
            if let Err(e) = step.process(stream).await {
                // The step counted why; the handshake did not fail.
                handshake.settled();
                return Err(e);
            }
        }
        Ok(())
    }
}
