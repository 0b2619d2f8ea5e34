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
/// budget, as every HTTP client does (RFC 9110 9.2.2): it says the
/// backend went away, not that it is overloaded, and a killed backend
/// takes all its pooled connections with it at once, more than the budget
/// admits at 16 clients.
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
    safe && ctx.retries < attempts && (reused || ctx.ticket.try_retry())
}
