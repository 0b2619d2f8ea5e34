//! Client connections around Pingora's HTTP handling: the limit on open
//! connections, the deadline on receiving a request's headers, the drain at
//! shutdown, and the keep-alive loop.
//!
//! [`LbApp`] is a Pingora `ServerApp` around the proxy's own app. It counts
//! open connections and closes new ones beyond `limits.max_connections`, and
//! wraps each stream in a [`HeaderDeadline`] so a client that trickles its
//! headers (slowloris) is cut off after `timeouts.client_header` in total.
//! Pingora's own read timeout applies per read, so a byte every few seconds
//! would otherwise keep a connection forever.
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
//! [`HeaderDeadline`] records what each request's reads held, and a
//! connection that read past a head once keeps Pingora's way of waiting
//! from then on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::metrics::metrics;
use crate::proxy::ProxyControl;

/// A `ServerApp` that limits connections and header time, then hands each
/// connection to `inner` (the proxy).
pub struct LbApp<A> {
    inner: Arc<A>,
    open: AtomicUsize,
    max_connections: usize,
    client_header: Duration,
    /// Longest wait at shutdown for open connections to finish.
    drain_limit: Duration,
    /// The proxy's live settings: `timeouts.client_idle` for the wait
    /// between requests.
    proxy: ProxyControl,
    /// Turns true once the drain is over: connections waiting for their
    /// next request close.
    closing_idle: watch::Sender<bool>,
}

impl<A> LbApp<A> {
    /// Wraps `inner` with the given limits.
    pub fn new(
        inner: A,
        proxy: ProxyControl,
        max_connections: usize,
        client_header: Duration,
        drain_limit: Duration,
    ) -> Self {
        LbApp {
            inner: Arc::new(inner),
            open: AtomicUsize::new(0),
            max_connections,
            client_header,
            drain_limit,
            proxy,
            closing_idle: watch::Sender::new(false),
        }
    }

    /// Waits until no client connection is open, or `drain_limit` passed.
    async fn drain(&self) {
        let deadline = Instant::now() + self.drain_limit;
        let mut open = self.open.load(Relaxed);
        log::info!("draining {open} client connection(s)");
        while open > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            open = self.open.load(Relaxed);
        }
        if open > 0 {
            log::info!("closing {open} idle client connection(s) after the drain limit");
        } else {
            log::info!("all client connections drained");
        }
    }
}

/// Decrements the open-connection count when the connection ends.
struct OpenConnection<'a>(&'a AtomicUsize);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
        metrics().client_connections.dec();
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LbApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self.open.fetch_add(1, Relaxed) + 1;
        metrics().client_connections.inc();
        let _counted = OpenConnection(&self.open);
        if open > self.max_connections {
            log::warn!(
                "closing a new client connection: {} are open (limits.max_connections)",
                self.max_connections
            );
            return None;
        }
        let reads = Arc::new(RequestReads::default());
        let stream: Stream = Box::new(HeaderDeadline::new(
            stream,
            self.client_header,
            Arc::clone(&reads),
        ));
        self.serve_http1(stream, &reads, shutdown).await;
        None
    }

    /// Called once the listeners stopped: drain, then let the proxy drop
    /// the connections still waiting for a request.
    async fn cleanup(&self) {
        self.drain().await;
        self.closing_idle.send_replace(true);
        self.inner.http_cleanup().await
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
        let mut closing_idle = self.closing_idle.subscribe();
        // The first head has `timeouts.client_header` from the connect.
        let Some(first_bytes) =
            read_next_request(&mut stream, self.client_header, &mut closing_idle).await
        else {
            return;
        };
        let mut session = new_session(stream, None, Some(first_bytes));
        // As Pingora does: no keep-alive once shutdown has begun. The proxy
        // sets the idle timeout on every request.
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        session.set_keepalive_reuses_remaining(
            self.inner
                .server_options()
                .and_then(|options| options.keepalive_request_limit),
        );
        // Whether every byte read so far belonged to a finished request's
        // head: then nothing waits in Pingora's buffers, and the socket can
        // be waited on.
        let mut nothing_read_ahead = true;
        loop {
            let Some(reused) = self.inner.process_new_http(session, shutdown).await else {
                return;
            };
            let (mut stream, settings) = reused.consume();
            nothing_read_ahead &= reads.only_a_head();
            reads.start_request();
            let first_bytes = if nothing_read_ahead {
                let idle = self.proxy.client_idle();
                match read_next_request(&mut stream, idle, &mut closing_idle).await {
                    Some(bytes) => Some(bytes),
                    None => return,
                }
            } else {
                None
            };
            session = new_session(stream, settings, first_bytes);
        }
    }
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

/// The first read of a request: as much as Pingora's own first read.
const FIRST_READ: usize = 4096;

/// Waits for the next request on `stream` for at most `limit`, holding no
/// buffer while it waits, and returns its first bytes: None when the client
/// closed, the limit passed, or the drain ended first.
async fn read_next_request(
    stream: &mut Stream,
    limit: Duration,
    closing_idle: &mut watch::Receiver<bool>,
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
        _ = tokio::time::sleep(limit) => None,
        _ = closing_idle.wait_for(|closing| *closing) => None,
    }
}

/// What one request's reads from the client held, shared between a
/// connection's [`HeaderDeadline`] and its keep-alive loop.
#[derive(Debug, Default)]
pub struct RequestReads(AtomicU8);

impl RequestReads {
    /// The request's head has been read.
    const HEAD: u8 = 1;
    /// Bytes past that head were read: a body, or a pipelined request.
    const PAST_HEAD: u8 = 2;

    fn start_request(&self) {
        self.0.store(0, Relaxed);
    }

    /// Whether the request's reads held its head and nothing more.
    fn only_a_head(&self) -> bool {
        self.0.load(Relaxed) == Self::HEAD
    }

    /// Records a read of `len` bytes; `head_end`, where in them a head
    /// ended, if one did.
    fn record(&self, len: usize, head_end: Option<usize>) {
        let seen = self.0.load(Relaxed);
        let now = if seen & Self::HEAD != 0 {
            seen | Self::PAST_HEAD
        } else {
            match head_end {
                Some(end) if end < len => Self::HEAD | Self::PAST_HEAD,
                Some(_) => Self::HEAD,
                None => seen,
            }
        };
        if now != seen {
            self.0.store(now, Relaxed);
        }
    }
}

/// Where a connection is in its request/response cycle, as far as the
/// bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request head; the deadline runs once its first byte came.
    Head,
    /// The head is complete: the body and the response follow, no deadline.
    AfterHead,
}

/// A client stream that fails reads once a request head has taken longer
/// than its limit.
///
/// The end of a head is a blank line (`\n\n` or `\n\r\n`). The next head is
/// expected once lb starts writing a final (non-1xx) response.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    /// Set while a head is being received.
    deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Progress through a blank line: 0 none, 1 after `\n`, 2 after `\n\r`.
    blank_line: u8,
    /// What this request's reads held, for the keep-alive loop.
    reads: Arc<RequestReads>,
}

impl HeaderDeadline {
    /// Wraps `inner`; the first head's deadline starts now.
    pub fn new(inner: Stream, limit: Duration, reads: Arc<RequestReads>) -> Self {
        let deadline = Instant::now() + limit;
        HeaderDeadline {
            inner,
            limit,
            phase: Phase::Head,
            deadline: Some(deadline),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            blank_line: 0,
            reads,
        }
    }

    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.deadline = None;
        self.blank_line = 0;
    }
}

/// Follows `bytes` through a blank line; `progress` carries the state from
/// one read to the next. Returns where in `bytes` the head ends (just after
/// its blank line), if it does.
///
/// Only the line feeds are visited (found with `memchr`): this runs on every
/// read of every request head.
fn ends_head(progress: &mut u8, bytes: &[u8]) -> Option<usize> {
    // Where the current line starts, and what came before it: a line feed
    // in these bytes, or the state the last read left.
    let mut line_start = 0;
    let mut after_lf = *progress == 1;
    let mut after_lf_cr = *progress == 2;
    for lf in memchr::memchr_iter(b'\n', bytes) {
        let empty_line = match &bytes[line_start..lf] {
            [] => after_lf || after_lf_cr,
            [b'\r'] => after_lf,
            _ => false,
        };
        if empty_line {
            *progress = 0;
            return Some(lf + 1);
        }
        line_start = lf + 1;
        after_lf = true;
        after_lf_cr = false;
    }
    *progress = match &bytes[line_start..] {
        [] if line_start > 0 => 1,
        [] => *progress,
        [b'\r'] if after_lf => 2,
        _ => 0,
    };
    None
}

/// Whether `buf` starts a 1xx (interim) response, after which the request
/// body, not a new head, follows.
fn is_interim_response(buf: &[u8]) -> bool {
    buf.len() > 9 && buf.starts_with(b"HTTP/1.") && buf[9] == b'1'
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = &buf.filled()[before..];
                if filled.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let mut head_end = None;
                if this.phase == Phase::Head {
                    if this.deadline.is_none() {
                        // The timer itself is only armed if the head is
                        // incomplete and a read has to wait (below): most
                        // heads arrive whole, and never touch it.
                        this.deadline = Some(Instant::now() + this.limit);
                    }
                    head_end = ends_head(&mut this.blank_line, filled);
                    if head_end.is_some() {
                        this.phase = Phase::AfterHead;
                        this.deadline = None;
                    }
                }
                this.reads.record(filled.len(), head_end);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(deadline) = this.deadline.filter(|_| this.phase == Phase::Head) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request headers took longer than timeouts.client_header",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::AfterHead && !is_interim_response(buf) {
            self.start_head();
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::AfterHead && !bufs.first().is_some_and(|b| is_interim_response(b)) {
            self.start_head();
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_line_ends_the_head_across_reads() {
        let mut progress = 0;
        assert_eq!(
            ends_head(&mut progress, b"GET / HTTP/1.1\r\nHost: x\r"),
            None
        );
        assert_eq!(ends_head(&mut progress, b"\n\r"), None);
        assert_eq!(ends_head(&mut progress, b"\nnext"), Some(1));
        let mut progress = 0;
        assert_eq!(ends_head(&mut progress, b"GET / HTTP/1.0\n\n"), Some(16));
        let mut progress = 0;
        assert_eq!(
            ends_head(&mut progress, b"GET / HTTP/1.1\r\nA: b\r\n"),
            None
        );
    }

    /// The byte-at-a-time state machine `ends_head` replaced: the reference.
    fn ends_head_bytewise(progress: &mut u8, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            *progress = match (*progress, b) {
                (1 | 2, b'\n') => {
                    *progress = 0;
                    return Some(i + 1);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }

    #[test]
    fn ends_head_agrees_with_the_bytewise_machine_at_every_split() {
        let heads: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody",
            b"GET / HTTP/1.0\n\n",
            b"GET / HTTP/1.1\r\nA: b\r\n",
            b"\r\n\r\n",
            b"a\n\r\r\nb\n\r\n",
            b"x\r\r\n\r\r\n",
            b"\n\r",
            b"GET /\r\nA: \n\r\n",
        ];
        for head in heads {
            for cut in 0..=head.len() {
                for second_cut in cut..=head.len() {
                    let reads = [&head[..cut], &head[cut..second_cut], &head[second_cut..]];
                    let (mut fast, mut slow) = (0u8, 0u8);
                    for read in reads {
                        let ended = ends_head(&mut fast, read);
                        assert_eq!(
                            ended,
                            ends_head_bytewise(&mut slow, read),
                            "{head:?} read as {reads:?}"
                        );
                        if ended.is_some() {
                            break;
                        }
                        assert_eq!(fast, slow, "{head:?} read as {reads:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn reads_past_a_head_are_told_apart_from_a_lone_head() {
        let reads = RequestReads::default();
        reads.record(10, None);
        assert!(!reads.only_a_head(), "no head yet");
        reads.record(8, Some(8));
        assert!(reads.only_a_head());
        reads.record(4, None);
        assert!(!reads.only_a_head(), "a body or the next request");
        reads.start_request();
        reads.record(20, Some(12));
        assert!(
            !reads.only_a_head(),
            "bytes after the head in the same read"
        );
    }

    #[test]
    fn interim_responses_are_recognised() {
        assert!(is_interim_response(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!is_interim_response(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_interim_response(b"hello"));
    }
}
