//! One TLS listener's handshakes: its acceptor settings, the certificate
//! each client gets, the count of handshakes by outcome, and the answer to a
//! client that speaks plain HTTP to it.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use openssl::ssl::{NameType, SslRef, SslVersion};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{PreTlsProcess, TlsAccept};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Peek;
use pingora::tls::ext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::certs::{Certificate, CertificateSet};
use super::MinTlsVersion;
use crate::telemetry::metrics::metrics;

/// What a connection's handshake left for the requests on it (in Pingora's
/// `SslDigest` extension): the name the client asked for.
#[derive(Debug)]
pub struct TlsInfo {
    /// The SNI name, when the client sent one.
    pub sni: Option<Box<str>>,
}

/// A TLS listener: its name for metrics and logs, and its certificates.
pub struct TlsListener {
    /// The address as configured, e.g. `0.0.0.0:8443`.
    name: String,
    certificates: ArcSwap<CertificateSet>,
    /// The set whose default certificate the acceptor itself holds (the
    /// first one): while it is current, a handshake that gets the default
    /// needs no certificate of its own.
    in_acceptor: Arc<CertificateSet>,
}

impl TlsListener {
    /// A listener called `name` serving `certificates`.
    pub fn new(name: String, certificates: Arc<CertificateSet>) -> Arc<TlsListener> {
        let listener = Arc::new(TlsListener {
            name,
            certificates: ArcSwap::new(Arc::clone(&certificates)),
            in_acceptor: Arc::clone(&certificates),
        });
        listener.export_expiry(&certificates);
        listener
    }

    /// Its name (the configured address).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves `certificates` from the next handshake on.
    pub fn replace(&self, certificates: Arc<CertificateSet>) {
        self.export_expiry(&certificates);
        self.certificates.store(certificates);
    }

    fn export_expiry(&self, certificates: &CertificateSet) {
        metrics().protocols.set_certificates(
            &self.name,
            certificates
                .iter()
                .flat_map(|c| c.names.iter().map(move |name| (name.clone(), c.not_after))),
        );
    }

    /// Pingora's acceptor settings for this listener: Mozilla's
    /// "intermediate" ciphers, `min_version`, ALPN h2 when `http2`, and
    /// this listener's callbacks for the certificate and the count.
    pub fn settings(
        self: &Arc<Self>,
        min_version: MinTlsVersion,
        http2: bool,
    ) -> pingora::Result<TlsSettings> {
        let mut settings = TlsSettings::with_callbacks(Box::new(Callbacks(Arc::clone(self))))?;
        let version = match min_version {
            MinTlsVersion::Tls12 => SslVersion::TLS1_2,
            MinTlsVersion::Tls13 => SslVersion::TLS1_3,
        };
        settings
            .set_min_proto_version(Some(version))
            .map_err(|e| tls_config_error("cannot set the minimum TLS version", e))?;
        // The default certificate goes into the acceptor: each connection
        // starts with it, and the callback leaves it there unless SNI or a
        // reload asks for another, instead of setting a certificate and key
        // on every connection.
        let default = self.in_acceptor.default();
        settings
            .set_certificate(&default.leaf)
            .and_then(|()| settings.set_private_key(&default.key))
            .map_err(|e| tls_config_error("cannot set the default certificate", e))?;
        for intermediate in &default.chain {
            settings
                .add_extra_chain_cert(intermediate.clone())
                .map_err(|e| tls_config_error("cannot set the certificate chain", e))?;
        }
        super::ocsp::staple(&mut settings, default.ocsp.clone())
            .map_err(|e| tls_config_error("cannot set the OCSP stapling callback", e))?;
        if http2 {
            settings.enable_h2();
        } else {
            settings.set_alpn(pingora::protocols::ALPN::H1);
        }
        Ok(settings)
    }
}

fn tls_config_error(context: &'static str, e: openssl::error::ErrorStack) -> pingora::BError {
    pingora::Error::because(pingora::ErrorType::InternalError, context, e)
}

/// Pingora's callbacks for one listener.
struct Callbacks(Arc<TlsListener>);

#[async_trait]
impl TlsAccept for Callbacks {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let certificates = self.0.certificates.load();
        let certificate = certificates.select(ssl.servername(NameType::HOST_NAME));
        let in_acceptor = Arc::ptr_eq(&certificates, &self.0.in_acceptor)
            && std::ptr::eq(certificate, certificates.default());
        if in_acceptor {
            return;
        }
        super::ocsp::remember(ssl, certificate);
        if let Err(e) = use_certificate(ssl, certificate) {
            // The handshake then fails for want of a certificate.
            log::error!(
                "listener {}: cannot use the certificate {}: {e}",
                self.0.name,
                certificate.files.cert.display()
            );
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &SslRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        metrics()
            .protocols
            .tls_handshake(&self.0.name, ssl.version_str(), "ok");
        let sni = ssl.servername(NameType::HOST_NAME).map(Box::from);
        Some(Arc::new(TlsInfo { sni }))
    }
}

/// Hands `certificate`, its chain and key to the handshake in `ssl`.
fn use_certificate(
    ssl: &mut SslRef,
    certificate: &Certificate,
) -> Result<(), openssl::error::ErrorStack> {
    ext::ssl_use_certificate(ssl, &certificate.leaf)?;
    ext::ssl_use_private_key(ssl, &certificate.key)?;
    for intermediate in &certificate.chain {
        ext::ssl_add_chain_cert(ssl, intermediate)?;
    }
    Ok(())
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on a TLS port, as nginx gives one.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 48\r\n\
Connection: close\r\n\r\nThis port speaks TLS: use https:// to reach it.\n";

/// Reads what the client sent (so that closing does not reset the
/// connection under the answer), then answers 400 and closes.
async fn answer_plain_http(stream: &mut L4Stream, limit: Duration) {
    let mut request = [0u8; 4096];
    let _ = tokio::time::timeout(limit, stream.read(&mut request)).await;
    let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// Looks at a TLS port's first byte before the handshake: a client that
/// speaks plain HTTP gets a 400 that says to use https, and anything else
/// that is not TLS is closed at once instead of waiting out Pingora's 60 s
/// handshake timeout. The first byte must come within `first_byte`.
pub struct PlainHttpOnTlsPort {
    /// The listener's name, for the count.
    pub listener: String,
    /// How long the first byte may take (`timeouts.client_header`).
    pub first_byte: Duration,
}

#[async_trait]
impl PreTlsProcess for PlainHttpOnTlsPort {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(self.first_byte, stream.try_peek(&mut first)).await;
        let not_tls = |why: &'static str| {
            metrics()
                .protocols
                .tls_handshake(&self.listener, "none", "not_tls");
            pingora::Error::explain(pingora::ErrorType::HandshakeError, why)
        };
        match peeked {
            Ok(Ok(_)) if first[0] == TLS_HANDSHAKE_RECORD => Ok(()),
            Ok(Ok(_)) if first[0].is_ascii_uppercase() => {
                answer_plain_http(stream, self.first_byte).await;
                Err(not_tls("plain HTTP sent to a TLS listener"))
            }
            Ok(Ok(_)) => Err(not_tls("a client sent something other than TLS")),
            Ok(Err(_)) => Err(pingora::Error::explain(
                pingora::ErrorType::HandshakeError,
                "the client closed before its ClientHello",
            )),
            Err(_) => Err(not_tls("no ClientHello within timeouts.client_header")),
        }
    }
}
