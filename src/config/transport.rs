//! How lb talks to backends: `backend_protocol` (HTTP/1.1, HTTP/2 over TLS,
//! HTTP/2 with prior knowledge) and `backend_tls` (SNI, certificate checks,
//! the CA), checked and resolved into a [`BackendTransport`].
//!
//! The keys sit beside `backends:` today; the routing issue puts the same
//! keys inside each named pool, so the parser takes the key prefix it
//! reports problems under. The CA file is read here, once per load: requests
//! and health checks share the parsed certificates through an `Arc`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use pingora::tls::x509::X509;

use super::checks::Problems;
use super::file::BackendTlsFile;
use super::BackendConfig;

/// The protocol lb speaks to backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1, plaintext or over TLS.
    #[default]
    Http1,
    /// HTTP/2 over TLS, negotiated by ALPN (a backend that picks HTTP/1.1
    /// is spoken to in HTTP/1.1).
    H2,
    /// HTTP/2 with prior knowledge on a plaintext connection.
    H2c,
}

impl BackendProtocol {
    /// The name the config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendProtocol::Http1 => "http1",
            BackendProtocol::H2 => "h2",
            BackendProtocol::H2c => "h2c",
        }
    }

    /// Whether this protocol is HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, BackendProtocol::H2 | BackendProtocol::H2c)
    }
}

/// The CA certificates of `backend_tls.ca`, parsed once.
#[derive(Clone)]
pub struct CaCertificates {
    /// The file they were read from, as written.
    pub path: PathBuf,
    /// The certificates, in the form Pingora's peer options take.
    pub certs: Arc<Box<[X509]>>,
    /// The DER bytes of every certificate, in order: what tells two CA
    /// files apart when deciding whether pooled connections may be reused.
    pub der: Arc<[Vec<u8>]>,
}

impl fmt::Debug for CaCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CaCertificates({}, {} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// TLS to backends.
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// The name sent as SNI and checked against the certificate; `None`
    /// means each backend's own host name (or IP address) as configured.
    pub sni: Option<String>,
    /// Whether the backend's certificate chain and name are checked.
    pub verify: bool,
    /// The CA to check against; `None` means the system roots.
    pub ca: Option<CaCertificates>,
}

/// How lb connects to the backends of a pool: the protocol, and TLS when
/// `backend_tls` is present.
#[derive(Debug, Clone, Default)]
pub struct BackendTransport {
    pub protocol: BackendProtocol,
    pub tls: Option<BackendTls>,
}

impl BackendTransport {
    /// A short description for `lb -t` and log lines:
    /// `h2 over TLS (SNI: each backend's host name, verify on, CA /etc/ca.pem)`.
    pub fn describe(&self) -> String {
        let Some(tls) = &self.tls else {
            return format!("{}, plaintext", self.protocol.as_str());
        };
        format!(
            "{} over TLS (SNI: {}, verify {}, CA {})",
            self.protocol.as_str(),
            tls.sni.as_deref().unwrap_or("each backend's host name"),
            if tls.verify { "on" } else { "off" },
            tls.ca.as_ref().map_or_else(
                || "the system roots".to_string(),
                |ca| format!("{} ({} certificate(s))", ca.path.display(), ca.certs.len())
            )
        )
    }
}

/// Checks `backend_protocol` and `backend_tls`, written under `prefix`
/// (empty at the top level, `pools.NAME.` inside a pool). Problems go to
/// `errors`, things worth a warning to `warnings`.
pub(super) fn parse_transport(
    prefix: &str,
    protocol: Option<String>,
    tls: Option<BackendTlsFile>,
    errors: &mut Problems,
    warnings: &mut Vec<String>,
) -> BackendTransport {
    let protocol = match protocol.as_deref() {
        None | Some("http1") => BackendProtocol::Http1,
        Some("h2") => BackendProtocol::H2,
        Some("h2c") => BackendProtocol::H2c,
        Some(other) => {
            errors.add(
                format!("{prefix}backend_protocol"),
                format!("{other:?}: must be http1, h2 or h2c"),
            );
            BackendProtocol::Http1
        }
    };
    let tls = tls.map(|written| parse_tls(prefix, written, errors, warnings));
    match (protocol, &tls) {
        (BackendProtocol::H2, None) => errors.add(
            format!("{prefix}backend_protocol"),
            format!(
                "\"h2\" is HTTP/2 over TLS and needs {prefix}backend_tls \
                 (write `{prefix}backend_tls: {{}}` for the defaults); \
                 for HTTP/2 over plaintext use h2c"
            ),
        ),
        (BackendProtocol::H2c, Some(_)) => errors.add(
            format!("{prefix}backend_protocol"),
            format!(
                "\"h2c\" is HTTP/2 over plaintext, but {prefix}backend_tls is set; \
                 for HTTP/2 over TLS use h2"
            ),
        ),
        _ => {}
    }
    BackendTransport { protocol, tls }
}

fn parse_tls(
    prefix: &str,
    written: BackendTlsFile,
    errors: &mut Problems,
    warnings: &mut Vec<String>,
) -> BackendTls {
    let BackendTlsFile { sni, verify, ca } = written;
    let sni = sni.filter(|name| {
        // Pingora turns every certificate check off when the SNI is empty.
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
        if !valid {
            errors.add(
                format!("{prefix}backend_tls.sni"),
                format!("{name:?}: must be a host name such as api.internal"),
            );
        }
        valid
    });
    let verify = verify.unwrap_or(true);
    if !verify {
        warnings.push(format!(
            "{prefix}backend_tls.verify is false: backend certificates are not checked, \
             so anyone on the path to a backend can pose as it"
        ));
    }
    let ca = ca.and_then(|path| {
        read_ca(&path)
            .map_err(|why| {
                errors.add(
                    format!("{prefix}backend_tls.ca"),
                    format!("{:?}: {why}", path.display().to_string()),
                )
            })
            .ok()
    });
    BackendTls { sni, verify, ca }
}

/// Reads the PEM certificates of a CA file.
fn read_ca(path: &std::path::Path) -> Result<CaCertificates, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let certs =
        X509::stack_from_pem(&pem).map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let der = certs
        .iter()
        .map(|c| c.to_der())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a certificate cannot be encoded: {e}"))?;
    Ok(CaCertificates {
        path: path.to_path_buf(),
        certs: Arc::new(certs.into_boxed_slice()),
        der: der.into(),
    })
}

/// A warning for each IP-address backend whose certificate would be checked
/// against its IP address: Pingora checks the SNI as a DNS name, so a
/// certificate that names the address only as an IP SAN fails.
pub(super) fn ip_backend_warnings(
    transport: &BackendTransport,
    backends: &[BackendConfig],
) -> Vec<String> {
    let Some(tls) = &transport.tls else {
        return Vec::new();
    };
    if !tls.verify || tls.sni.is_some() {
        return Vec::new();
    }
    backends
        .iter()
        .filter(|b| b.host.parse::<std::net::IpAddr>().is_ok())
        .map(|b| {
            format!(
                "backend_tls.sni is not set and backend {}:{} is an IP address: its certificate \
                 must name {:?} as a DNS name (an IP SAN does not match); set backend_tls.sni \
                 to the name in the certificate",
                b.host, b.port, b.host
            )
        })
        .collect()
}

/// What a health check sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// An HTTP request; the status decides.
    #[default]
    Http,
    /// A connection (and the TLS handshake, with `backend_tls`).
    Tcp,
    /// `grpc.health.v1.Health/Check`; the answer must be SERVING.
    Grpc,
}

impl HealthCheckKind {
    /// The name the config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckKind::Http => "http",
            HealthCheckKind::Tcp => "tcp",
            HealthCheckKind::Grpc => "grpc",
        }
    }
}

/// Checks `health_check.type`.
pub(super) fn parse_health_check_kind(
    written: Option<String>,
    errors: &mut Problems,
) -> HealthCheckKind {
    match written.as_deref() {
        None | Some("http") => HealthCheckKind::Http,
        Some("tcp") => HealthCheckKind::Tcp,
        Some("grpc") => HealthCheckKind::Grpc,
        Some(other) => {
            errors.add(
                "health_check.type",
                format!("{other:?}: must be http, tcp or grpc"),
            );
            HealthCheckKind::Http
        }
    }
}

/// gRPC runs over HTTP/2 only.
pub(super) fn check_kind_fits(
    kind: HealthCheckKind,
    transport: &BackendTransport,
    errors: &mut Problems,
) {
    if kind == HealthCheckKind::Grpc && !transport.protocol.is_http2() {
        errors.add(
            "health_check.type",
            format!(
                "\"grpc\": gRPC needs HTTP/2, but backend_protocol is {}; set it to h2 or h2c",
                transport.protocol.as_str()
            ),
        );
    }
}
