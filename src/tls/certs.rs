//! Certificates of a TLS listener: read from PEM files, checked, and chosen
//! by the name a client asks for (SNI).
//!
//! A [`CertificateSet`] is built whole at start and at each reload, and
//! swapped in at once: a handshake sees either the old set or the new one,
//! never half of each. Selection follows nginx and HAProxy: an exact name
//! among a certificate's DNS names, then a wildcard (`*.example.com`
//! covers one label), then the first certificate as the default, which is
//! also what a client without SNI gets.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

pub use crate::config::CertificateFiles;

/// Why a certificate could not be loaded. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM of the expected kind.
    #[error("{}: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
    /// The key is not the certificate's.
    #[error("{}: this key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// One certificate with its chain and key, ready to serve.
pub struct Certificate {
    /// Where it was read from.
    pub files: CertificateFiles,
    /// The leaf certificate.
    pub leaf: X509,
    /// The intermediates sent after the leaf.
    pub chain: Vec<X509>,
    /// Its private key.
    pub key: PKey<Private>,
    /// The DNS names it serves (subject alternative names, or the common
    /// name when it has none), lower case.
    pub names: Vec<String>,
    /// When it expires.
    pub not_after: SystemTime,
    /// The OCSP response stapled with it: `CERT.ocsp` beside its file.
    pub ocsp: Option<super::ocsp::Staple>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Certificate")
            .field("files", &self.files)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("ocsp", &self.ocsp.is_some())
            .finish()
    }
}

impl Certificate {
    /// Reads and checks the certificate and key in `files`.
    pub fn load(files: &CertificateFiles) -> Result<Certificate, CertificateError> {
        let cert_pem = read(&files.cert)?;
        let mut certs = X509::stack_from_pem(&cert_pem).map_err(|e| malformed(&files.cert, e))?;
        if certs.is_empty() {
            return Err(CertificateError::Malformed {
                path: files.cert.clone(),
                what: "no PEM certificate in it".into(),
            });
        }
        let leaf = certs.remove(0);
        let key_pem = read(&files.key)?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| malformed(&files.key, e))?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CertificateError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        let not_after = expiry(&leaf).ok_or_else(|| CertificateError::Malformed {
            path: files.cert.clone(),
            what: "its notAfter date cannot be read".into(),
        })?;
        let ocsp = super::ocsp::read_beside(&files.cert)?;
        Ok(Certificate {
            ocsp,
            files: files.clone(),
            names: dns_names(&leaf),
            leaf,
            chain: certs,
            key,
            not_after,
        })
    }

    /// Time left until it expires; zero once expired.
    pub fn time_left(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    /// Whether it has expired.
    pub fn expired(&self) -> bool {
        self.not_after <= SystemTime::now()
    }

    /// Its expiry as a date, for people.
    pub fn expiry_text(&self) -> String {
        humantime::format_rfc3339_seconds(self.not_after).to_string()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

fn malformed(path: &Path, e: openssl::error::ErrorStack) -> CertificateError {
    CertificateError::Malformed {
        path: path.to_path_buf(),
        what: format!("not valid PEM: {e}"),
    }
}

/// The certificate's DNS names: its SANs, or its common name without any.
fn dns_names(cert: &X509) -> Vec<String> {
    let sans: Vec<String> = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
        .collect()
}

/// The certificate's notAfter as a system time.
fn expiry(cert: &X509) -> Option<SystemTime> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    let seconds = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// The certificates of one listener, the first being the default, with
/// the names they serve in maps: choosing among 10,000 costs what choosing
/// among one does.
#[derive(Debug)]
pub struct CertificateSet {
    certificates: Vec<Certificate>,
    /// Each DNS name to the first certificate that has it.
    exact: HashMap<String, usize>,
    /// The parent of each wildcard name (`b.test` for `*.b.test`) to the
    /// first certificate that has it.
    wildcard: HashMap<String, usize>,
}

impl CertificateSet {
    /// Loads every certificate of `files`, in order; the errors of all
    /// that failed, each naming its index in `files`.
    pub fn load(
        files: &[CertificateFiles],
    ) -> Result<CertificateSet, Vec<(usize, CertificateError)>> {
        let mut certificates = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        for (i, f) in files.iter().enumerate() {
            match Certificate::load(f) {
                Ok(c) => certificates.push(c),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() && !certificates.is_empty() {
            Ok(CertificateSet::of(certificates))
        } else {
            Err(errors)
        }
    }

    fn of(certificates: Vec<Certificate>) -> CertificateSet {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, certificate) in certificates.iter().enumerate() {
            for name in &certificate.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        CertificateSet {
            certificates,
            exact,
            wildcard,
        }
    }

    /// The certificate for a client asking for `sni`: exact name, then
    /// wildcard, then the default.
    pub fn select(&self, sni: Option<&str>) -> &Certificate {
        let default = self.default();
        let Some(sni) = sni else {
            return default;
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        let parent = || name.split_once('.').map(|(_, parent)| parent);
        self.exact
            .get(&name)
            .or_else(|| self.wildcard.get(parent()?))
            .map_or(default, |&i| &self.certificates[i])
    }

    /// The default certificate: the first.
    pub fn default(&self) -> &Certificate {
        &self.certificates[0]
    }

    /// Every certificate, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.iter()
    }
}
