//! When a failed request may go to another backend.

use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use super::RequestCtx;

/// Whether a request that failed after reaching `ctx.backend` may go to
/// another backend: nothing of the response reached the client, the
/// method is idempotent, its body can be replayed, an attempt is left
/// and, for a connection opened for this request, the budget allows it.
///
/// A kept-alive connection found dead (`reused`) is retried outside the
/// budget and `retry.attempts` (0 still turns retries off), as every HTTP
/// client does (RFC 9110 9.2.2), on every backend not yet tried: it says
/// the backend went away, not that it is overloaded; a killed backend
/// takes all its pooled connections with it at once, more than the budget
/// admits at 16 clients, and a scale-down can take several backends at
/// once, more than `attempts`.
pub(super) fn may_retry(
    session: &Session,
    e: &Error,
    ctx: &mut RequestCtx,
    reused: bool,
    attempts: usize,
) -> bool {
    let safe = e.esource() == &ErrorSource::Upstream
        && !matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        )
        && session.response_written().is_none()
        && session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated();
    safe && attempts > 0 && (reused || (ctx.retries < attempts && ctx.ticket.try_retry()))
}

/// Whether an HTTP/2 backend refused the request before processing any of
/// it: a GOAWAY without error (a graceful close, such as nginx's after
/// `keepalive_requests`) that left this stream out, or a `REFUSED_STREAM`
/// reset. RFC 9113 (6.8, 8.7) says such a request is safe to send again,
/// whatever its method, and it says nothing against the backend's health.
/// Pingora marks the same errors retryable (`handle_read_header_error`).
pub(super) fn refused_unprocessed(e: &Error) -> bool {
    e.root_cause()
        .downcast_ref::<h2::Error>()
        .is_some_and(|h2| {
            h2.is_remote()
                && ((h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                    || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)))
        })
}

/// Whether a request an HTTP/2 backend refused unprocessed may be sent
/// again: nothing went back to the client, its body can be replayed and
/// an attempt is left. Outside the budget, like a dead kept-alive
/// connection: it is a closing connection, not an overloaded backend.
pub(super) fn may_resend_refused(session: &Session, ctx: &RequestCtx, attempts: usize) -> bool {
    session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
        && ctx.retries < attempts
}
