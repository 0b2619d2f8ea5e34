//! Reading the certificates the config names: every TLS listener's files,
//! loaded and checked in one step of the assembly ([`crate::runtime`]), at
//! start, in `lb -t` and at reload alike. A bad file is a
//! [`Problem`](crate::config::Problem) naming its config key, as a config
//! error would be; nothing is served from a set that failed.

use std::net::SocketAddr;
use std::sync::Arc;

use super::CertificateSet;
use crate::config::{ListenerConfig, ListenerKind, Problem};

/// The certificates of every TLS listener, by address, in the order of
/// the config's listeners.
#[derive(Debug, Default)]
pub struct ListenerCertificates(Vec<(SocketAddr, Arc<CertificateSet>)>);

impl ListenerCertificates {
    /// Reads every TLS listener's certificates; a problem for each file
    /// that fails, named `listeners[i].tls.certificates[j]`.
    pub fn load(listeners: &[ListenerConfig]) -> Result<Self, Vec<Problem>> {
        let mut loaded = Vec::new();
        let mut problems = Vec::new();
        for (i, listener) in listeners.iter().enumerate() {
            let ListenerKind::Tls(tls) = &listener.kind else {
                continue;
            };
            match CertificateSet::load(&tls.files) {
                Ok(set) => loaded.push((listener.addr, Arc::new(set))),
                Err(errors) => problems.extend(errors.into_iter().map(|(j, e)| Problem {
                    key: format!("listeners[{i}].tls.certificates[{j}]"),
                    message: e.to_string(),
                })),
            }
        }
        if problems.is_empty() {
            Ok(ListenerCertificates(loaded))
        } else {
            Err(problems)
        }
    }

    /// The certificates of the listener on `addr`.
    pub fn of(&self, addr: SocketAddr) -> Option<&Arc<CertificateSet>> {
        self.0.iter().find(|(a, _)| *a == addr).map(|(_, set)| set)
    }

    /// Every TLS listener's address and certificates.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &Arc<CertificateSet>)> {
        self.0.iter().map(|(addr, set)| (*addr, set))
    }

    /// A warning for each certificate that has expired.
    pub fn expired(&self) -> Vec<String> {
        self.iter()
            .flat_map(|(addr, set)| {
                set.iter().filter(|c| c.expired()).map(move |c| {
                    format!(
                        "listener {addr}: certificate {} expired on {}",
                        c.files.cert.display(),
                        c.expiry_text()
                    )
                })
            })
            .collect()
    }
}
