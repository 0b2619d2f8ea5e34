//! The `listeners:` list: each entry a plain `host:port` (HTTP/1.1, as
//! before) or a mapping that adds TLS, HTTP/2 or a redirect to HTTPS.
//! Plain data: the certificate files are named here and read by the TLS
//! layer (`tls::ListenerCertificates`), whose errors name these
//! keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::backends::resolve;
use super::checks::Problems;
use super::sections::describe;

/// One listener as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// What it speaks.
    pub kind: ListenerKind,
    /// What it believes of its clients and the policies it applies.
    pub edge: ListenerEdge,
}

/// A listener's client address rules and policy chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerEdge {
    /// Each connection starts with a PROXY protocol header (v1 or v2),
    /// required; it gives the client's address. Needs a restart to change.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` (and PROXY header) is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Names of the policies every request on it goes through, before
    /// routing, in order.
    pub policies: Vec<String>,
}

/// What a listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain HTTP/1.1; with `h2c`, also HTTP/2 with prior knowledge.
    Http { h2c: bool },
    /// HTTPS: HTTP/1.1, and HTTP/2 by ALPN when `http2`.
    Tls(TlsListenerConfig),
    /// Answers every request with a 308 to the same URL over https, on
    /// `port`.
    RedirectHttps { port: u16 },
}

/// A TLS listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenerConfig {
    /// The certificate files, as configured; the first is the default.
    pub files: Vec<CertificateFiles>,
    /// The lowest version accepted.
    pub min_version: MinTlsVersion,
    /// Whether h2 is offered by ALPN.
    pub http2: bool,
}

/// The files of one certificate, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM file: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM file: the certificate's private key.
    pub key: PathBuf,
}

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

impl ListenerConfig {
    /// A plain HTTP/1.1 listener on `addr`.
    pub fn http(addr: SocketAddr) -> Self {
        ListenerConfig {
            addr,
            kind: ListenerKind::Http { h2c: false },
            edge: ListenerEdge::default(),
        }
    }

    /// Whether its clients reach lb over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, ListenerKind::Tls(_))
    }

    /// What a reload cannot change: the address, the protocols and the
    /// PROXY protocol; not the certificate files (a reload reads those
    /// again), the trusted proxies or the policies.
    pub fn shape(&self) -> ListenerConfig {
        let mut shape = self.clone();
        if let ListenerKind::Tls(tls) = &mut shape.kind {
            tls.files.clear();
        }
        shape.edge.trusted_proxies.clear();
        shape.edge.policies.clear();
        shape
    }
}

impl std::fmt::Display for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ListenerKind::Http { h2c: false } => write!(f, "{}", self.addr),
            ListenerKind::Http { h2c: true } => write!(f, "{} (h2c)", self.addr),
            ListenerKind::Tls(tls) => write!(
                f,
                "{} (TLS {}+{})",
                self.addr,
                tls.min_version.as_str(),
                if tls.http2 { ", h2" } else { "" }
            ),
            ListenerKind::RedirectHttps { port } => {
                write!(f, "{} (redirect to https port {port})", self.addr)
            }
        }
    }
}

/// One `listeners:` entry written as a mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    address: String,
    tls: Option<TlsFile>,
    http2: Option<bool>,
    h2c: Option<bool>,
    redirect_https: Option<u16>,
    proxy_protocol: Option<bool>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
}

/// A listener's `tls:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    certificates: Vec<CertificateFile>,
    /// "1.2" or "1.3"; kept raw because YAML reads an unquoted 1.3 as a number.
    min_version: Option<serde_yaml_ng::Value>,
}

/// One `certificates:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFile {
    cert: PathBuf,
    key: PathBuf,
}

/// The TLS listeners given with `--tls-listen`, and the certificates of
/// `--cert`/`--key`, as config entries.
pub(super) fn tls_flag_entries(
    addresses: &[String],
    certs: &[PathBuf],
    keys: &[PathBuf],
    errors: &mut Problems,
) -> Vec<serde_yaml_ng::Value> {
    if certs.len() != keys.len() {
        errors.add(
            "--cert/--key",
            format!(
                "{} --cert and {} --key: give them in pairs",
                certs.len(),
                keys.len()
            ),
        );
    }
    let certificates: Vec<serde_yaml_ng::Value> = certs
        .iter()
        .zip(keys)
        .map(|(cert, key)| {
            let mut entry = serde_yaml_ng::Mapping::new();
            entry.insert("cert".into(), cert.display().to_string().into());
            entry.insert("key".into(), key.display().to_string().into());
            entry.into()
        })
        .collect();
    addresses
        .iter()
        .map(|address| {
            let mut tls = serde_yaml_ng::Mapping::new();
            tls.insert("certificates".into(), certificates.clone().into());
            let mut entry = serde_yaml_ng::Mapping::new();
            entry.insert("address".into(), address.clone().into());
            entry.insert("tls".into(), tls.into());
            entry.into()
        })
        .collect()
}

/// Checks every entry; one error per problem,
/// named by the entry's index.
pub(super) fn parse_listeners(
    entries: &[serde_yaml_ng::Value],
    errors: &mut Problems,
) -> Vec<ListenerConfig> {
    if entries.is_empty() {
        errors.add(
            "listeners",
            "the list is empty; give at least one address such as 0.0.0.0:8000",
        );
    }
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("listeners[{i}]");
        let Some(listener) = parse_listener(&key, entry, errors) else {
            continue;
        };
        if listeners.iter().any(|l| l.addr == listener.addr) {
            errors.add(key, format!("{} is listed twice", listener.addr));
            continue;
        }
        listeners.push(listener);
    }
    listeners
}

fn parse_listener(
    key: &str,
    entry: &serde_yaml_ng::Value,
    errors: &mut Problems,
) -> Option<ListenerConfig> {
    let written: ListenerFile = match entry {
        serde_yaml_ng::Value::String(address) => ListenerFile {
            address: address.clone(),
            tls: None,
            http2: None,
            h2c: None,
            redirect_https: None,
            proxy_protocol: None,
            trusted_proxies: Vec::new(),
            policies: Vec::new(),
        },
        serde_yaml_ng::Value::Mapping(_) => match super::checks::from_section(entry.clone()) {
            Ok(written) => written,
            Err((sub_key, message)) => {
                errors.add(format!("{key}{sub_key}"), message);
                return None;
            }
        },
        other => {
            errors.add(
                key,
                format!(
                    "expected \"host:port\" or {{address: host:port, tls: ...}}, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    let addr = match resolve(&written.address) {
        Ok(addr) => addr,
        Err(why) => {
            let key = if entry.is_string() {
                key.to_string()
            } else {
                format!("{key}.address")
            };
            errors.add(key, format!("{:?}: {why}", written.address));
            return None;
        }
    };
    let edge = ListenerEdge {
        proxy_protocol: written.proxy_protocol.unwrap_or(false),
        trusted_proxies: super::policies::parse_nets(
            &format!("{key}.trusted_proxies"),
            &written.trusted_proxies,
            errors,
        ),
        policies: written.policies.clone(),
    };
    let kind = listener_kind(key, written, errors)?;
    if edge.proxy_protocol && matches!(kind, ListenerKind::RedirectHttps { .. }) {
        errors.add(
            format!("{key}.proxy_protocol"),
            "not on a redirect_https listener: put it on the listeners that serve",
        );
    }
    Some(ListenerConfig { addr, kind, edge })
}

/// What the entry's keys make of the listener; the keys that exclude one
/// another are errors.
fn listener_kind(key: &str, written: ListenerFile, errors: &mut Problems) -> Option<ListenerKind> {
    let ListenerFile {
        address: _,
        tls,
        http2,
        h2c,
        redirect_https,
        ..
    } = written;
    match (tls, redirect_https) {
        (Some(_), Some(_)) => {
            errors.add(
                format!("{key}.redirect_https"),
                "a TLS listener cannot redirect to HTTPS: it is HTTPS",
            );
            None
        }
        (Some(tls), None) => {
            if h2c.is_some() {
                errors.add(
                    format!("{key}.h2c"),
                    "h2c is HTTP/2 without TLS; on a TLS listener, http2 offers h2",
                );
            }
            parse_tls(key, tls, http2.unwrap_or(true), errors).map(ListenerKind::Tls)
        }
        (None, redirect) => {
            if http2.is_some() {
                errors.add(
                    format!("{key}.http2"),
                    "http2 needs tls (ALPN); for HTTP/2 without TLS, write h2c: true",
                );
            }
            match redirect {
                Some(0) => {
                    errors.add(format!("{key}.redirect_https"), "0: not a port");
                    None
                }
                Some(port) => Some(ListenerKind::RedirectHttps { port }),
                None => Some(ListenerKind::Http {
                    h2c: h2c.unwrap_or(false),
                }),
            }
        }
    }
}

fn parse_tls(
    key: &str,
    written: TlsFile,
    http2: bool,
    errors: &mut Problems,
) -> Option<TlsListenerConfig> {
    let version = written.min_version.map(|v| match v {
        serde_yaml_ng::Value::String(text) => text,
        serde_yaml_ng::Value::Number(number) => number.to_string(),
        other => format!("{other:?}"),
    });
    let min_version = match version.as_deref() {
        None | Some("1.2") => MinTlsVersion::Tls12,
        Some("1.3") => MinTlsVersion::Tls13,
        Some(other) => {
            errors.add(
                format!("{key}.tls.min_version"),
                format!("{other:?}: write \"1.2\" or \"1.3\""),
            );
            MinTlsVersion::Tls12
        }
    };
    if written.certificates.is_empty() {
        errors.add(
            format!("{key}.tls.certificates"),
            "the list is empty; give at least one {cert, key} pair",
        );
        return None;
    }
    let files = written
        .certificates
        .into_iter()
        .map(|c| CertificateFiles {
            cert: c.cert,
            key: c.key,
        })
        .collect();
    Some(TlsListenerConfig {
        files,
        min_version,
        http2,
    })
}

/// Each TLS listener's address and TLS settings.
fn tls_of(listeners: &[ListenerConfig]) -> impl Iterator<Item = (SocketAddr, &TlsListenerConfig)> {
    listeners.iter().filter_map(|l| match &l.kind {
        ListenerKind::Tls(tls) => Some((l.addr, tls)),
        _ => None,
    })
}

/// A warning for each TLS private key file that group or others may read
/// (as OpenSSH refuses such keys): `chmod 600` it.
pub(super) fn exposed_keys(listeners: &[ListenerConfig]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    tls_of(listeners)
        .flat_map(|(addr, tls)| {
            tls.files.iter().filter_map(move |files| {
                let mode = std::fs::metadata(&files.key).ok()?.permissions().mode();
                let readers = match (mode & 0o040 != 0, mode & 0o004 != 0) {
                    (true, true) => "group and others",
                    (true, false) => "its group",
                    (false, true) => "others",
                    (false, false) => return None,
                };
                Some(format!(
                    "listener {addr}: private key {} is readable by {readers} (mode {:04o}); \
                     chmod 600 it",
                    files.key.display(),
                    mode & 0o7777
                ))
            })
        })
        .collect()
}
