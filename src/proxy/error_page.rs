//! The answers lb gives itself when a request fails: which status (the
//! backend's fault, the client's, or lb's own), and the one-line plain-text
//! page that carries it.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use crate::connection::StreamFault;

/// The status lb answers an error with: the error's own HTTP status, 502 for
/// a backend's fault, 400 for a client's, 0 when the client is gone.
pub(super) fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ if StreamFault::of(e) == Some(StreamFault::UpgradeResponseTimeout) => 504,
        _ if client_went_away(e) => 0,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 400,
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Whether `e` says the client went away mid-request (closed, reset, or a
/// failed read or write on its side): routine, not an error of lb's.
pub(super) fn client_went_away(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

/// Answers with `code` and a one-line plain-text body naming it.
pub(super) async fn respond_plain_error(session: &mut Session, code: u16) -> Result<()> {
    let body = Bytes::from(error_body(code));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .as_downstream_mut()
        .write_error_response(resp, body)
        .await
}

/// The short body of an error lb answers itself.
fn error_body(code: u16) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    match code {
        502 => format!("{code} {reason}: no backend could serve this request\n"),
        503 => format!("{code} {reason}: no healthy backend\n"),
        504 => format!("{code} {reason}: the backend did not answer in time\n"),
        _ => format!("{code} {reason}\n"),
    }
}

/// The status to answer with when a request failed through the client's
/// fault rather than the backend's: a body that stopped arriving, so the
/// backend waited for it and timed out (408), or that broke its framing or
/// its time limit in the client stream.
pub(super) fn client_fault(session: &mut Session, e: &Error) -> Option<u16> {
    match StreamFault::of(e) {
        Some(StreamFault::BodyTimeout) => return Some(408),
        Some(StreamFault::BadFraming(_)) => return Some(400),
        Some(StreamFault::UpgradeResponseTimeout) => return None,
        Some(StreamFault::HeaderTimeout | StreamFault::TunnelIdle) => return Some(0),
        None => {}
    }
    let backend_timed_out = e.esource() == &ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
    (backend_timed_out && !session.was_upgraded() && !session.is_body_done()).then_some(408)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_names_the_status() {
        assert_eq!(
            error_body(502),
            "502 Bad Gateway: no backend could serve this request\n"
        );
        assert_eq!(error_body(400), "400 Bad Request\n");
    }

    #[test]
    fn upstream_errors_become_502() {
        let e = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(error_status(&e), 502);
        let e = Error::new(ErrorType::HTTPStatus(504));
        assert_eq!(error_status(&e), 504);
    }
}
