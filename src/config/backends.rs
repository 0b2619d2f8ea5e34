//! Backends: addresses as written (`host:port`, `http://host:port`,
//! `{address, weight}`), checked and, for IP addresses, resolved.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;

use super::checks::Problems;
use super::file::BackendFile;
use super::sections::describe;
use super::BackendConfig;

pub(super) fn parse_backends(
    entries: &[serde_yaml_ng::Value],
    errors: &mut Problems,
) -> Vec<BackendConfig> {
    if entries.is_empty() {
        errors.add(
            "backends",
            "the list is empty; give at least one backend (in the file or with --backend)",
        );
    }
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match parse_backend(entry) {
            Ok(backend)
                if backends
                    .iter()
                    .any(|b| b.host == backend.host && b.port == backend.port) =>
            {
                errors.add(
                    format!("backends[{i}]"),
                    format!("{}:{} is listed twice", backend.host, backend.port),
                )
            }
            Ok(backend) => backends.push(backend),
            Err(EntryProblem { sub_key, message }) => {
                errors.add(format!("backends[{i}]{sub_key}"), message)
            }
        }
    }
    backends
}

/// What is wrong with one backend entry.
#[derive(Debug)]
pub(super) struct EntryProblem {
    /// The part of the entry: `.address`, `.weight`, or empty for the whole.
    sub_key: &'static str,
    message: String,
}

impl EntryProblem {
    fn whole(message: String) -> Self {
        EntryProblem {
            sub_key: "",
            message,
        }
    }
}

/// Parses one `backends:` entry.
pub(super) fn parse_backend(entry: &serde_yaml_ng::Value) -> Result<BackendConfig, EntryProblem> {
    let written: BackendFile = match entry {
        serde_yaml_ng::Value::String(address) => BackendFile {
            address: address.clone(),
            weight: None,
        },
        serde_yaml_ng::Value::Mapping(_) => serde_yaml_ng::from_value(entry.clone())
            .map_err(|e| EntryProblem::whole(e.to_string()))?,
        other => {
            return Err(EntryProblem::whole(format!(
                "expected \"host:port\" or {{address: host:port, weight: N}}, found {}",
                describe(other)
            )))
        }
    };
    written.check()
}

impl BackendFile {
    /// The backend this entry describes, or what is wrong with it.
    fn check(&self) -> Result<BackendConfig, EntryProblem> {
        let (host, port) = parse_backend_address(&self.address).map_err(|why| EntryProblem {
            sub_key: ".address",
            message: format!("{:?}: {why}", self.address),
        })?;
        let weight = match self.weight {
            None => NonZeroUsize::MIN,
            Some(w) => usize::try_from(w)
                .ok()
                .and_then(NonZeroUsize::new)
                .filter(|w| w.get() <= MAX_WEIGHT)
                .ok_or_else(|| EntryProblem {
                    sub_key: ".weight",
                    message: format!("{w}: must be a whole number from 1 to {MAX_WEIGHT}"),
                })?,
        };
        Ok(BackendConfig { host, port, weight })
    }
}

impl BackendConfig {
    /// A backend given at run time (the admin API): `host:port` or
    /// `http://host:port`, weight 1 to 1000.
    pub fn parse(address: &str, weight: Option<i64>) -> Result<BackendConfig, String> {
        let entry = BackendFile {
            address: address.to_string(),
            weight,
        };
        entry
            .check()
            .map_err(|p| format!("backend{}: {}", p.sub_key, p.message))
    }
}

/// Weights repeat a backend in the selection ring, so they are kept small.
const MAX_WEIGHT: usize = 1000;

/// Accepts `host:port`, `http://host:port` and `http://host:port/`, where
/// host is an IP address (IPv6 in brackets) or a DNS name. Names are not
/// resolved here: discovery resolves them, again every interval.
pub(super) fn parse_backend_address(text: &str) -> Result<(String, u16), String> {
    let trimmed = text.trim();
    let without_scheme = match trimmed.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "scheme {scheme}:// is not supported; use http:// or none"
            ))
        }
        None => trimmed,
    };
    let authority = without_scheme.strip_suffix('/').unwrap_or(without_scheme);
    if authority.contains('/') {
        return Err("a backend is host:port, without a path".into());
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err("missing port: write host:port".into());
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err("missing host: write host:port".into());
    }
    let valid_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid_name {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok((host.to_string(), port))
}

/// Turns `host:port` into one socket address, resolving a host name once.
pub(super) fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("missing port: write host:port".into());
    };
    if host.is_empty() {
        return Err("missing host: write host:port".into());
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} has no address"))
}
