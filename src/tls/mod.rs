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
mod loading;
pub mod ocsp;
mod pre_tls;
mod redirect;

pub use certs::{Certificate, CertificateError, CertificateFiles, CertificateSet};
pub use listener::{PlainHttpOnTlsPort, TlsInfo, TlsListener};
pub use loading::ListenerCertificates;
pub use pre_tls::PreTlsChain;
pub use redirect::RedirectToHttps;

pub use crate::config::MinTlsVersion;
