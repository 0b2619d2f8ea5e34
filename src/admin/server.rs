//! The admin listener's connections: at most [`MAX_CONNECTIONS`] open, each
//! with the proxy's time limits, and every answer with the headers that
//! keep browsers from framing or sniffing it.
//!
//! A connection is wrapped in the proxy's [`ClientStream`], so a request
//! head must arrive whole within `timeouts.client_header` (408 when part
//! came) and a body within `timeouts.client_body`; between requests a
//! connection waits at most `timeouts.client_idle`. Without these, 1,100
//! idle admin connections took the process's 1,024 file descriptors and
//! the proxy failed with it. The body and idle limits are read at each
//! connection, so a reload changes them as it does the proxy's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::ServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::AdminApp;
use crate::connection::{ClientLimits, ClientStream, FramingCheck, RequestFraming};
use crate::proxy::ProxyControl;

/// Admin connections open at once; a new one beyond is closed at once. A
/// status page takes one or two, a scraper one: 64 leaves room for many
/// operators and tools, and keeps the listener's share of file descriptors
/// small beside the proxy's `limits.max_connections`.
pub const MAX_CONNECTIONS: usize = 64;

/// Headers of every admin answer: no page of another origin may frame it
/// (clickjacking of the status page's buttons), no content is sniffed,
/// and the status page may load only its own script, style and data.
const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
];

/// The admin API's Pingora app: the connection cap and limits around
/// [`AdminApp`].
pub struct AdminServer {
    pub(super) app: AdminApp,
    /// The proxy's live settings: `timeouts.client_body` and `client_idle`.
    pub(super) proxy: ProxyControl,
    /// `timeouts.client_header`, which needs a restart to change.
    pub(super) client_header: Duration,
    pub(super) open: AtomicUsize,
    /// Connections closed for the cap so far.
    pub(super) refused: AtomicU64,
}

/// Counts an open connection until it ends.
struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[async_trait]
impl ServerApp for AdminServer {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self.open.fetch_add(1, Relaxed) + 1;
        let _open = Open(&self.open);
        if open > MAX_CONNECTIONS {
            // Logged at 1, 2, 4, 8... refusals: a flood does not flood the log.
            let refused = self.refused.fetch_add(1, Relaxed) + 1;
            if refused.is_power_of_two() {
                log::warn!(
                    "admin API: closing a new connection: {MAX_CONNECTIONS} are open \
                     ({refused} closed so far)"
                );
            }
            return None;
        }
        let timeouts = self.proxy.client_timeouts(self.client_header);
        let stream: Stream = Box::new(ClientStream::new(stream, timeouts, Arc::default()));
        let mut session = ServerSession::new_http1(stream);
        loop {
            // Pingora's wait for a request's first byte; the head's and
            // body's limits are the stream's.
            let idle = self.proxy.client_idle().as_secs();
            session.set_keepalive((!*shutdown.borrow()).then_some(idle));
            let reusable = self.serve(session).await?;
            let (stream, _) = reusable.into_parts();
            session = ServerSession::new_http1(stream);
        }
    }
}

impl AdminServer {
    /// Answers one request; the connection back when it can take another.
    async fn serve(
        &self,
        mut session: ServerSession,
    ) -> Option<pingora::protocols::http::server::ReusableHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                log::debug!("admin API: reading a request: {e}");
                return None;
            }
        }
        let response = match expect_body(&session) {
            FramingCheck::Sound => self.app.response(&mut session).await,
            FramingCheck::Bad | FramingCheck::Unplaced => {
                session.set_keepalive(None);
                super::error(http::StatusCode::BAD_REQUEST, "bad chunked framing")
            }
        };
        let head = session.req_header().method == Method::HEAD;
        let (header, body) = response_parts(response);
        if let Err(e) = session.write_response_header(header).await {
            log::debug!("admin API: writing a response: {e}");
            return None;
        }
        // HEAD is answered as GET, without the body.
        if !head && !body.is_empty() {
            if let Err(e) = session.write_response_body(body.into(), true).await {
                log::debug!("admin API: writing a response: {e}");
                return None;
            }
        }
        session.finish().await.ok().flatten()
    }
}

/// Tells the stream whether a body follows the head, so that
/// `timeouts.client_body` limits reading it, and whether its chunked
/// framing is sound so far.
fn expect_body(session: &ServerSession) -> FramingCheck {
    let headers = &session.req_header().headers;
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    let body = chunked
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0");
    let framing = RequestFraming {
        chunked,
        body,
        upgrade: false,
    };
    if !body {
        return FramingCheck::Sound;
    }
    crate::connection::expect_after_head(session, framing)
}

/// `response`'s head, with [`SECURITY_HEADERS`], and its body.
fn response_parts(response: Response<Vec<u8>>) -> (Box<ResponseHeader>, Vec<u8>) {
    let (parts, body) = response.into_parts();
    let mut header = ResponseHeader::from(parts);
    for (name, value) in SECURITY_HEADERS {
        // Fixed names and values: inserting cannot fail.
        let _ = header.insert_header(name, value);
    }
    (Box::new(header), body)
}
