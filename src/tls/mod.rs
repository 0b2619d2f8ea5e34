//! TLS on client listeners: certificates chosen by SNI and replaced at
//! reload, the acceptor's settings, what each connection's handshake
//! leaves for the access log, and the listeners that redirect to HTTPS.
//!
//! lb uses Pingora's OpenSSL build (OpenSSL 3, built from the openssl-src
//! crate). Pingora pauses every handshake after the ClientHello and asks
//! [`TlsListener`] (its `TlsAccept` callbacks) for a certificate: lb picks
//! one from the listener's current [`CertificateSet`], which a reload swaps
//! whole. Open connections keep the certificate they were served; new
//! handshakes get the new one. A `.ocsp` file beside a certificate is
//! stapled ([`ocsp`]).

pub mod certs;
mod listener;
pub mod ocsp;
mod pre_tls;
mod redirect;

pub use certs::{Certificate, CertificateError, CertificateFiles, CertificateSet};
pub use listener::{PlainHttpOnTlsPort, TlsInfo, TlsListener};
pub use pre_tls::PreTlsChain;
pub use redirect::RedirectToHttps;

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinTlsVersion {
    /// TLS 1.2 and 1.3 (the default, as Mozilla's "intermediate").
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinTlsVersion {
    /// The version as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MinTlsVersion::Tls12 => "1.2",
            MinTlsVersion::Tls13 => "1.3",
        }
    }
}
