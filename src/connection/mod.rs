//! Client connections around Pingora's HTTP handling: the limit on open
//! connections, the per-phase limits on what clients send, the drain at
//! shutdown, and the keep-alive loop.
//!
//! [`LbApp`] is a Pingora `ServerApp` around the proxy's own app. It counts
//! open connections and closes new ones beyond `limits.max_connections`
//! (TLS connections are counted earlier, before their handshake: see
//! [`Admission`], `admission.rs`, and `descriptors.rs` for the open-file
//! headroom), and wraps each stream in a [`ClientStream`], which enforces the time limits
//! on request heads, bodies and tunnels and checks chunked framing
//! (`client_stream.rs`, `chunked.rs`).
//!
//! It also drains kept-alive connections at shutdown and upgrade. Pingora's
//! proxy drops a connection waiting for its next request as soon as its app
//! is cleaned up, and a request arriving just then is lost. `LbApp` delays
//! that clean-up until its connections are gone (or `drain_limit` passed):
//! meanwhile a request on an open connection is answered with
//! `Connection: close` (Pingora does so once shutdown has begun), and the
//! client's next connection reaches the new process. HAProxy calls this
//! `idle-close-on-response`.
//!
//! And it runs each connection's keep-alive loop itself, instead of
//! Pingora's: between requests it waits for the next request's first bytes
//! before it builds the next HTTP session, and hands them to it. Pingora's
//! loop waits inside the session, holding the request's whole future (about
//! 9 KB) and a 4 KiB head buffer for every idle connection. Waiting on the
//! socket is only safe when no byte of the next request was read already
//! (pipelined, or past a body, and kept by Pingora where lb cannot see it):
//! [`ClientStream`] records what each request's reads held, and a
//! connection that read past a head once keeps Pingora's way of waiting
//! from then on.

mod admission;
mod chunked;
mod client_stream;
pub mod descriptors;
mod head;
mod proxied;
mod proxy_protocol;

pub use admission::{handshake_done, Admission, OpenTicket, Refusal, TlsHandshake};
pub use chunked::BadChunkFraming;
pub use client_stream::{ClientFault, ClientStream, ClientTimeouts, FramingCheck, RequestFraming};
pub use head::{HeadLimits, RequestReads};
pub use proxied::ProxyHeaderStep;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use head::read_whole_head;

/// The client limits a reload can change, read as each connection or
/// request starts. The proxy keeps them (`proxy::ProxyControl`) and gives
/// them to [`LbApp`] at construction: the connection layer does not know
/// the proxy.
pub trait ClientLimits: Send + Sync {
    /// `timeouts.client_idle`: how long a connection may wait for its next
    /// request.
    fn client_idle(&self) -> Duration;
    /// The time limits a new connection gets, with `header` (which needs a
    /// restart to change).
    fn client_timeouts(&self, header: Duration) -> ClientTimeouts;
    /// What a request head is checked against before Pingora reads it.
    fn head_limits(&self) -> HeadLimits;
}

/// Who may open a connection on a listener, asked with the client's
/// address once it is known: the peer's at accept, or the PROXY header's
/// client. The proxy's listener access rules implement it; the
/// connection layer does not know them.
pub trait ClientGate: Send + Sync {
    /// Whether `client` may go on; false closes the connection.
    fn admits(&self, client: std::net::IpAddr) -> bool;
}

/// A `ServerApp` that limits connections and header time, then hands each
/// connection to `inner` (the proxy). One per listener kind: every copy
/// (made with [`LbApp::with_h2c`]) shares the proxy, the connection count
/// and the drain.
pub struct LbApp<A> {
    shared: Arc<Shared<A>>,
    /// Whether this listener also takes HTTP/2 with prior knowledge.
    h2c: bool,
    /// A plain listener's PROXY header step, when it takes the protocol.
    proxy_header: Option<ProxyHeaderStep>,
}

/// What every listener's `LbApp` shares.
struct Shared<A> {
    inner: Arc<A>,
    /// The connection counts and limits, shared with the TLS listeners'
    /// pre-TLS steps.
    admission: Arc<Admission>,
    client_header: Duration,
    /// Longest wait at shutdown for open connections to finish.
    drain_limit: Duration,
    /// The limits a reload can change, as they are now: `timeouts.client_idle`
    /// for the wait between requests, the head and body limits.
    limits: Arc<dyn ClientLimits>,
    /// Turns true once the drain is over: connections waiting for their
    /// next request close.
    closing_idle: watch::Sender<bool>,
}

impl<A> LbApp<A> {
    /// Wraps `inner` with the given limits.
    pub fn new(
        inner: A,
        limits: Arc<dyn ClientLimits>,
        admission: Arc<Admission>,
        client_header: Duration,
        drain_limit: Duration,
    ) -> Self {
        LbApp {
            shared: Arc::new(Shared {
                inner: Arc::new(inner),
                admission,
                client_header,
                drain_limit,
                limits,
                closing_idle: watch::Sender::new(false),
            }),
            h2c: false,
            proxy_header: None,
        }
    }

    /// The same app for another listener: taking HTTP/2 with prior
    /// knowledge (h2c) or not, reading a PROXY header first or not (a
    /// TLS listener reads it before its handshake instead).
    pub fn for_listener(&self, h2c: bool, proxy_header: Option<ProxyHeaderStep>) -> Self {
        LbApp {
            shared: Arc::clone(&self.shared),
            h2c,
            proxy_header,
        }
    }
}

impl<A> Shared<A> {
    /// Waits until no client connection is open, or `drain_limit` passed.
    async fn drain(&self) {
        let deadline = Instant::now() + self.drain_limit;
        let mut open = self.admission.open();
        log::info!("draining {open} client connection(s)");
        while open > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            open = self.admission.open();
        }
        if open > 0 {
            log::info!("closing {open} idle client connection(s) after the drain limit");
        } else {
            log::info!("all client connections drained");
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LbApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let shared = &*self.shared;
        // A TLS connection was counted before its handshake; a plain one is
        // counted now, right after its accept.
        let tls = handshake_done(&stream);
        let _counted = if tls {
            None
        } else {
            Some(shared.admission.admit().ok()?)
        };
        let stream = match &self.proxy_header {
            Some(step) if !tls => proxied::take_before_http(step, stream).await?,
            _ => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let stream = ClientStream::for_h2(stream, shared.client_header);
            return shared.serve_h2(Box::new(stream), shutdown).await;
        }
        let reads = Arc::new(RequestReads::default());
        let timeouts = shared.limits.client_timeouts(shared.client_header);
        let stream: Stream = Box::new(ClientStream::new(stream, timeouts, Arc::clone(&reads)));
        self.serve_http1(stream, &reads, shutdown).await;
        None
    }

    /// Called once the listeners stopped: drain, then let the proxy drop
    /// the connections still waiting for a request.
    async fn cleanup(&self) {
        let shared = &*self.shared;
        shared.drain().await;
        shared.closing_idle.send_replace(true);
        shared.inner.http_cleanup().await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Shared<A> {
    /// Serves an HTTP/2 connection: Pingora's own loop, which spawns a
    /// task per stream and sends GOAWAY at shutdown.
    async fn serve_h2(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        ServerApp::process_new(&self.inner, stream, shutdown).await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> LbApp<A> {
    /// Serves HTTP/1 requests on `stream` until it closes: Pingora's
    /// keep-alive loop (`ServerApp for HttpServerApp`, HTTP/1 part), with a
    /// wait on the socket between requests. lb turns on neither h2c nor
    /// custom protocols, the only other paths of Pingora's loop.
    async fn serve_http1(
        &self,
        mut stream: Stream,
        reads: &RequestReads,
        shutdown: &ShutdownWatch,
    ) {
        // The wait for the drain's end and the idle timer are made once a
        // connection and reused (the timer reset) for each wait between
        // requests. The two cost 1.6k instructions a request when made anew
        // for each (bench/instructions.sh: 92,902 with them, 91,275 without
        // either); made once, they cost 0.5k less (92,381).
        let shared = &*self.shared;
        let mut closing_idle = shared.closing_idle.subscribe();
        let drain_over = closing_idle.wait_for(|closing| *closing);
        let idle_timer = tokio::time::sleep(shared.client_header);
        tokio::pin!(drain_over, idle_timer);
        // The first head has `timeouts.client_header` from the connect.
        let Some(mut first_bytes) =
            read_next_request(&mut stream, idle_timer.as_mut(), drain_over.as_mut()).await
        else {
            return;
        };
        if self.h2c {
            match read_preface(&mut stream, &mut first_bytes, idle_timer.as_mut()).await {
                Preface::Http2 => {
                    if let Some(stream) = unread(stream, &first_bytes) {
                        shared.serve_h2(stream, shutdown).await;
                    }
                    return;
                }
                Preface::Invalid => return refuse_preface(&mut stream).await,
                Preface::Http1 => {}
            }
        }
        let head_limits = shared.limits.head_limits();
        if !read_whole_head(&mut stream, &mut first_bytes, head_limits).await {
            return;
        }
        let mut session = new_session(stream, None, Some(first_bytes));
        // As Pingora does: no keep-alive once shutdown has begun. The proxy
        // sets the configured idle timeout on every request.
        session.set_keepalive((!*shutdown.borrow()).then_some(PINGORA_KEEPALIVE_SECS));
        session.set_keepalive_reuses_remaining(
            shared
                .inner
                .server_options()
                .and_then(|options| options.keepalive_request_limit),
        );
        // Whether every byte read so far belonged to a finished request's
        // head: then nothing waits in Pingora's buffers, and the socket can
        // be waited on.
        let mut nothing_read_ahead = true;
        loop {
            let Some(reused) = shared.inner.process_new_http(session, shutdown).await else {
                return;
            };
            let (mut stream, settings) = reused.consume();
            nothing_read_ahead &= reads.only_a_head();
            reads.start_request();
            // lb checks the heads it reads itself; one Pingora reads (after
            // bytes were read ahead) only Pingora checks.
            let first_bytes = if nothing_read_ahead {
                let idle = shared.limits.client_idle();
                idle_timer.as_mut().reset(Instant::now() + idle);
                let next =
                    read_next_request(&mut stream, idle_timer.as_mut(), drain_over.as_mut()).await;
                let Some(mut bytes) = next else { return };
                if !read_whole_head(&mut stream, &mut bytes, head_limits).await {
                    return;
                }
                Some(bytes)
            } else {
                None
            };
            session = new_session(stream, settings, first_bytes);
        }
    }
}

/// The start of every HTTP/2 connection with prior knowledge (RFC 9113,
/// 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The preface's first line: no HTTP/1 request starts so (HTTP/1 has no
/// version 2.0), so a client that sent it speaks HTTP/2.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";

/// What a client on an h2c listener opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preface {
    /// HTTP/2's preface, whole.
    Http2,
    /// HTTP/2's first line, then something else: an invalid preface.
    Invalid,
    /// Anything else: HTTP/1 (well formed or not).
    Http1,
}

/// What the client on an h2c listener opens with: reads on while what
/// came so far could still be HTTP/2's preface. `PRI` is no HTTP/1
/// method, so a client that sent the preface whole means HTTP/2.
async fn read_preface(
    stream: &mut Stream,
    bytes: &mut BytesMut,
    mut timer: Pin<&mut Sleep>,
) -> Preface {
    while bytes.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(bytes) {
        let before = bytes.len();
        tokio::select! {
            read = stream.read_buf(bytes) => {
                if read.is_err() || bytes.len() == before {
                    break;
                }
            }
            _ = timer.as_mut() => break,
        }
    }
    if bytes.starts_with(H2_PREFACE) {
        Preface::Http2
    } else if bytes.starts_with(H2_PREFACE_LINE) {
        Preface::Invalid
    } else {
        Preface::Http1
    }
}

/// The answer to an invalid HTTP/2 preface, a connection error of type
/// PROTOCOL_ERROR (RFC 9113, 3.4 and 5.4.1): the server's preface (an
/// empty SETTINGS frame), then GOAWAY with last stream 0 and error code 1.
const PREFACE_REFUSAL: &[u8] = &[
    0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, no parameter
    0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, 0, 0, 0, 1, // last stream 0, PROTOCOL_ERROR
];

/// Answers an invalid HTTP/2 preface and closes the connection.
async fn refuse_preface(stream: &mut Stream) {
    if stream.write_all(PREFACE_REFUSAL).await.is_ok() {
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

/// The plain TCP stream under lb's `stream` with `bytes` put back in front
/// of what is still to read, for Pingora's HTTP/2 to read again.
fn unread(stream: Stream, bytes: &[u8]) -> Option<Stream> {
    let client = stream.into_any().downcast::<ClientStream>().ok()?;
    let mut tcp = client
        .into_inner()
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
        .ok()?;
    tcp.rewind(bytes);
    Some(tcp)
}

/// A client's next HTTP/1 session on `stream`, with the settings the last
/// one left and the first bytes lb already read, which Pingora parses first
/// (as it does bytes a pipelining client sent early).
///
/// Pipelining is on: requests a client sends before reading the answers to
/// earlier ones are served in order, as nginx and HAProxy do. Pingora's
/// default answers the first, closes and drops the rest.
fn new_session(
    stream: Stream,
    settings: Option<HttpPersistentSettings>,
    first_bytes: Option<BytesMut>,
) -> ServerSession {
    let mut session = ServerSession::new_http1(stream);
    session.set_pipelining_enabled(true);
    if let Some(settings) = settings {
        settings.apply_to_session(&mut session);
    }
    if let Some(bytes) = first_bytes {
        session.set_pipelined_prefix(bytes);
    }
    session
}

/// The keep-alive timeout a new session starts with, Pingora's own
/// (`HttpServerApp::process_new`); `request_filter` replaces it with
/// `timeouts.client_idle`.
const PINGORA_KEEPALIVE_SECS: u64 = 60;

/// The first read of a request: as much as Pingora's own first read.
const FIRST_READ: usize = 4096;

/// Waits for the next request on `stream` until `idle_timer` fires, holding
/// no buffer while it waits, and returns its first bytes: None when the
/// client closed, the timer fired, or the drain ended first (`drain_over`).
async fn read_next_request<D: Future>(
    stream: &mut Stream,
    idle_timer: Pin<&mut Sleep>,
    drain_over: Pin<&mut D>,
) -> Option<BytesMut> {
    // The buffer is made on each poll and dropped when the read has to wait
    // (an idle socket costs no syscall then): an idle connection holds none.
    let first_read = std::future::poll_fn(|cx| {
        let mut buf = BytesMut::with_capacity(FIRST_READ);
        let read = std::pin::pin!(stream.read_buf(&mut buf));
        read.poll(cx).map_ok(|_| buf)
    });
    tokio::select! {
        read = first_read => read.ok().filter(|bytes| !bytes.is_empty()),
        _ = idle_timer => None,
        _ = drain_over => None,
    }
}

/// Tells the client connection of `session` what follows the request's
/// head it just parsed; for a chunked body, whether its framing could be
/// checked. `Sound` when the session is not over one of lb's client
/// connections (HTTP/2 streams: h2 frames their bodies).
pub fn expect_after_head(session: &ServerSession, framing: RequestFraming) -> FramingCheck {
    match session.stream().and_then(ClientStream::of) {
        Some(stream) => stream.expect(framing),
        None => FramingCheck::Sound,
    }
}

/// Tells the client connection of `session` that the request's body has
/// been received whole: its time limit no longer applies.
pub fn body_received(session: &ServerSession) {
    if let Some(stream) = session.stream().and_then(ClientStream::of) {
        stream.body_received();
    }
}
