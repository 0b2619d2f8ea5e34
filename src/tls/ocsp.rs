//! OCSP stapling: a certificate `site.pem` with a DER OCSP response beside
//! it as `site.pem.ocsp` (HAProxy's convention) has that response stapled
//! to the handshakes of clients that ask (`status_request`), so they need
//! not ask the CA's responder. The response is read with its certificate,
//! at start and at each reload; renewing it is the job of whatever renews
//! it for HAProxy (a cron job with `openssl ocsp`, say), then a `SIGHUP`.
//!
//! OpenSSL asks for the response in a status callback set on the acceptor,
//! after lb's certificate callback chose the certificate. That callback
//! notes the chosen certificate's response on the connection ([`remember`]);
//! a connection it left with the acceptor's default certificate gets the
//! default's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use openssl::ex_data::Index;
use openssl::ocsp::{OcspResponse, OcspResponseStatus};
use openssl::ssl::{Ssl, SslRef};
use pingora::listeners::tls::TlsSettings;

use super::certs::{Certificate, CertificateError};

/// A DER OCSP response, shared by every handshake that staples it.
pub type Staple = Arc<[u8]>;

/// The response beside the certificate file `cert` (`cert` + `.ocsp`), when
/// there is one; an error naming the file when it cannot be read or is not
/// a successful OCSP response.
pub fn read_beside(cert: &Path) -> Result<Option<Staple>, CertificateError> {
    let mut path = cert.as_os_str().to_owned();
    path.push(".ocsp");
    let path = PathBuf::from(path);
    let der = match std::fs::read(&path) {
        Ok(der) => der,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CertificateError::Unreadable { path, source }),
    };
    let status = OcspResponse::from_der(&der).map(|r| r.status());
    match status {
        Ok(OcspResponseStatus::SUCCESSFUL) => Ok(Some(der.into())),
        Ok(status) => Err(CertificateError::Malformed {
            path,
            what: format!("the OCSP response's status is {status:?}, not successful"),
        }),
        Err(e) => Err(CertificateError::Malformed {
            path,
            what: format!("not a DER OCSP response: {e}"),
        }),
    }
}

/// The `Ssl` slot that holds the response of the certificate chosen for a
/// connection (`None`: it has none).
fn staple_index() -> Option<Index<Ssl, Option<Staple>>> {
    static INDEX: OnceLock<Option<Index<Ssl, Option<Staple>>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// Notes on `ssl` that `certificate` was chosen for it, with its response.
pub fn remember(ssl: &mut SslRef, certificate: &Certificate) {
    if let Some(index) = staple_index() {
        ssl.set_ex_data(index, certificate.ocsp.clone());
    }
}

/// Sets the status callback on `settings`: it staples the response noted
/// by [`remember`], else `default` (the acceptor's certificate's).
pub fn staple(
    settings: &mut TlsSettings,
    default: Option<Staple>,
) -> Result<(), openssl::error::ErrorStack> {
    settings.set_status_callback(move |ssl| {
        let noted = staple_index().and_then(|index| ssl.ex_data(index)).cloned();
        match noted.unwrap_or_else(|| default.clone()) {
            Some(response) => ssl.set_ocsp_status(&response).map(|()| true),
            None => Ok(false),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `site.pem` in a new directory, with `ocsp` beside it when given.
    fn site_with(ocsp: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cert = dir.path().join("site.pem");
        if let Some(der) = ocsp {
            std::fs::write(dir.path().join("site.pem.ocsp"), der).expect("write the response");
        }
        (dir, cert)
    }

    #[test]
    fn no_file_beside_the_certificate_means_nothing_to_staple() {
        let (_dir, cert) = site_with(None);
        assert!(matches!(read_beside(&cert), Ok(None)));
    }

    #[test]
    fn a_file_that_is_not_der_is_an_error_naming_it() {
        let (_dir, cert) = site_with(Some(b"not DER"));
        let error = read_beside(&cert).expect_err("an error").to_string();
        assert!(
            error.contains("site.pem.ocsp: not a DER OCSP response"),
            "{error}"
        );
    }

    #[test]
    fn an_unsuccessful_response_is_refused_with_its_status() {
        let response = OcspResponse::create(OcspResponseStatus::TRY_LATER, None)
            .and_then(|r| r.to_der())
            .expect("a TRY_LATER response");
        let (_dir, cert) = site_with(Some(&response));
        let error = read_beside(&cert).expect_err("an error").to_string();
        assert!(error.contains("site.pem.ocsp"), "{error}");
        assert!(error.contains("not successful"), "{error}");
    }
}
