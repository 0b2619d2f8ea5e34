//! The answers lb gives itself when a request fails: which status (the
//! backend's fault, the client's, or lb's own), and the one-line plain-text
//! page that carries it.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use super::ctx::RequestCtx;
use crate::connection::ClientFault;

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
        _ if ClientFault::of(e) == Some(ClientFault::UpgradeResponseTimeout) => 504,
        _ if client_went_away(e) => 0,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 400,
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Whether `e` says the client went away mid-request (closed, reset, a
/// failed read or write on its side, or an HTTP/2 stream it reset, which
/// Pingora reports as `H2Error` "Client closed H2"): routine, not an error
/// of lb's.
pub(super) fn client_went_away(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed
                | ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::H2Error
        )
}

/// Answers with `code`, lb's own answer: a one-line plain-text page, or
/// for a gRPC call a gRPC status with that line as its message (as Envoy
/// does), which the client shows instead of a bare HTTP status. `ctx`
/// keeps `code` for the access log and metrics either way.
pub(super) async fn respond_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    code: u16,
) -> Result<()> {
    // Too late to answer once a final response has begun (a 101 is one, a
    // 100 Continue is not, as Pingora's own error response decides): the
    // access log keeps the backend's status.
    let final_begun = session
        .response_written()
        .is_some_and(|r| !r.status.is_informational() || r.status == 101);
    if final_begun {
        return Ok(());
    }
    ctx.own_answer = Some(code);
    if is_grpc(session) {
        respond_grpc_error(session, code).await
    } else {
        respond_plain_error(session, code).await
    }
}

/// Whether the request is a gRPC call: HTTP/2 with a gRPC content type.
fn is_grpc(session: &Session) -> bool {
    session.is_http2()
        && session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for an HTTP status lb answers with, by gRPC's own table
/// (doc/http-grpc-status-mapping.md): 502, 503 and 504 are UNAVAILABLE,
/// which a client may retry.
fn grpc_status(code: u16) -> u16 {
    match code {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// Answers a gRPC call with HTTP 200, no message, and trailers carrying
/// `grpc-status` and `grpc-message`.
async fn respond_grpc_error(session: &mut Session, code: u16) -> Result<()> {
    let downstream = session.as_downstream_mut();
    let mut resp = ResponseHeader::build(200, Some(2))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    downstream.write_response_header(Box::new(resp)).await?;
    let mut trailers = http::HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", http::HeaderValue::from(grpc_status(code)));
    // ASCII without control characters: no percent-encoding needed.
    if let Ok(message) = http::HeaderValue::from_str(error_body(code).trim_end()) {
        trailers.insert("grpc-message", message);
    }
    downstream.write_response_trailers(trailers).await
}

/// Answers with `code` and a one-line plain-text body naming it.
async fn respond_plain_error(session: &mut Session, code: u16) -> Result<()> {
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
    match ClientFault::of(e) {
        Some(ClientFault::BodyTimeout) => return Some(408),
        Some(ClientFault::BadFraming(_)) => return Some(400),
        Some(ClientFault::UpgradeResponseTimeout) => return None,
        Some(ClientFault::HeaderTimeout | ClientFault::TunnelIdle) => return Some(0),
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
