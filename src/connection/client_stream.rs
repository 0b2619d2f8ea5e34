//! The client side of a connection as lb reads and writes it: the stream
//! Pingora's HTTP session runs on, wrapped so lb can enforce what Pingora
//! does not.
//!
//! [`ClientStream`] follows each request through its phases by the bytes
//! alone, and gives each phase its own limit:
//! ```text
//!   Head ──blank line──▶ AfterHead ──final response──▶ Head (next request)
//!                            │
//!                            └──101 Switching Protocols──▶ Tunnel
//! ```
//! - Head: the whole head within `timeouts.client_header` from its first
//!   byte (Pingora's read timeout is per read, so a byte every few seconds
//!   would keep a slowloris connection forever). A client that sent part of
//!   a head gets `408` before the close.
//! - AfterHead: the body within `timeouts.client_body` in total, and, for an
//!   upgrade request, the backend's answer within `timeouts.upstream_response`
//!   (the backend reads of an upgrade request have no per-read timeout, so an
//!   open tunnel is not cut by one). A chunked body's framing is checked as
//!   it arrives ([`ChunkedFraming`]).
//! - Tunnel: after `101`, no request heads any more; the tunnel closes when
//!   no byte crossed it, either way, for `timeouts.tunnel_idle`.
//!
//! The proxy, which parses heads, tells the stream what a request's body
//! holds ([`ClientStream::expect`]), and finds the stream again through
//! Pingora's `as_any`. Both run on the connection's one task: the atomics
//! only make the stream `Sync`, as Pingora requires.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

mod delegation;

use super::chunked::{BadChunkFraming, ChunkedFraming};
use super::head::{ends_head, RequestReads};
use crate::telemetry::metrics::metrics;

/// The limits a [`ClientStream`] enforces, as the config gave them when the
/// connection opened.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// A request head, from its first byte.
    pub header: Duration,
    /// A request body, in total.
    pub body: Duration,
    /// A tunnel with no byte either way.
    pub tunnel_idle: Duration,
    /// The backend's answer to an upgrade request.
    pub upgrade_response: Duration,
}

/// What went wrong on the client's side of a request, as the client
/// connection saw it: the proxy chooses its answer (408, 400, 504, none)
/// from it. Pingora has one channel from a failed read to the proxy's
/// hooks, the read's error; how the fault rides in it is this module's
/// business, and [`ClientFault::of`] the one way to read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientFault {
    /// The request head took longer than `timeouts.client_header`.
    #[error("request headers took longer than timeouts.client_header")]
    HeaderTimeout,
    /// The request body took longer than `timeouts.client_body`: 408.
    #[error("request body took longer than timeouts.client_body")]
    BodyTimeout,
    /// No byte crossed the tunnel for `timeouts.tunnel_idle`.
    #[error("no byte crossed the tunnel for timeouts.tunnel_idle")]
    TunnelIdle,
    /// The backend did not answer an upgrade request in time: 504.
    #[error("the backend did not answer an upgrade request within timeouts.upstream_response")]
    UpgradeResponseTimeout,
    /// The chunked body broke RFC 9112's framing: 400.
    #[error(transparent)]
    BadFraming(#[from] BadChunkFraming),
}

impl ClientFault {
    /// The client's fault behind Pingora's error `e`, if lb's client
    /// connection found one.
    pub fn of(e: &pingora::Error) -> Option<ClientFault> {
        let io = e.root_cause().downcast_ref::<io::Error>()?;
        io.get_ref()?.downcast_ref::<ClientFault>().copied()
    }

    fn into_io(self) -> io::Error {
        let kind = match self {
            ClientFault::BadFraming(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, self)
    }
}

/// What a request's head says of what follows it, for [`ClientStream::expect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFraming {
    /// The body is chunked.
    pub chunked: bool,
    /// A body follows (chunked, or a non-zero Content-Length).
    pub body: bool,
    /// The request asks to upgrade the connection (WebSocket).
    pub upgrade: bool,
}

/// Whether lb could check a chunked request's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingCheck {
    /// Nothing wrong so far; the rest is checked as it arrives.
    Sound,
    /// The bytes read with the head already break the framing.
    Bad,
    /// The head was read before the previous response was written
    /// (pipelined behind it): lb cannot tell where its body starts.
    Unplaced,
}

/// Signals between the stream and the proxy, one bit each.
mod signal {
    /// Stream: this request's head ended in a read of the stream's.
    pub const HEAD_SEEN: u8 = 1;
    /// Stream: the bytes after the head broke chunked framing.
    pub const FRAMING_BAD: u8 = 2;
    /// Proxy: the body is chunked: check its framing.
    pub const CHUNKED: u8 = 4;
    /// Proxy: a body is still to come: `client_body` runs.
    pub const BODY_PENDING: u8 = 8;
    /// Proxy: an upgrade request waits for the backend's answer.
    pub const UPGRADE_PENDING: u8 = 16;
}

/// Where a connection is in its request/response cycle, as far as the
/// bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request head.
    Head,
    /// The head is complete: the body and the response follow.
    AfterHead,
    /// `101 Switching Protocols` was sent: bytes pass both ways until one
    /// side closes.
    Tunnel,
    /// An HTTP/2 connection before the client's first bytes (its
    /// preface), which must come within `timeouts.client_header`.
    H2Preface,
    /// An HTTP/2 connection: its streams have their own limits.
    H2,
}

/// The answer to a client that sent part of a head and then too little.
const REQUEST_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\
Cache-Control: no-store\r\nConnection: close\r\n\r\n408 Request Timeout\n";

/// A client stream with lb's per-phase limits and chunked framing check.
#[derive(Debug)]
pub struct ClientStream {
    inner: Stream,
    timeouts: ClientTimeouts,
    phase: Phase,
    /// In `Head`: when the head must be complete (set by its first byte,
    /// or from the connect for the first head). In `AfterHead`: when the
    /// body or the upgrade answer must be (set by the first read that waits).
    deadline: Option<Instant>,
    /// Whether a byte of the current head arrived.
    head_started: bool,
    /// The timer behind `deadline`, armed only when a read has to wait.
    timer: Pin<Box<Sleep>>,
    /// Progress through a blank line: 0 none, 1 after `\n`, 2 after `\n\r`.
    blank_line: u8,
    /// The check of the current request's chunked framing.
    framing: ChunkedFraming,
    /// In `Tunnel`: the last byte that crossed it.
    last_activity: Instant,
    /// Bits of [`signal`].
    signals: AtomicU8,
    /// What this request's reads held, for the keep-alive loop.
    reads: Arc<RequestReads>,
    /// Set once the connection became a tunnel.
    upgraded: Option<UpgradedConnection>,
}

impl ClientStream {
    /// Wraps `inner`; the first head's deadline starts now.
    pub fn new(inner: Stream, timeouts: ClientTimeouts, reads: Arc<RequestReads>) -> Self {
        let now = Instant::now();
        let deadline = now + timeouts.header;
        ClientStream {
            inner,
            timeouts,
            phase: Phase::Head,
            deadline: Some(deadline),
            head_started: false,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            blank_line: 0,
            framing: ChunkedFraming::default(),
            last_activity: now,
            signals: AtomicU8::new(0),
            reads,
            upgraded: None,
        }
    }

    /// Wraps an HTTP/2 connection's `inner`: only its preface has a time
    /// limit, `header` from now.
    pub fn for_h2(inner: Stream, header: Duration) -> Self {
        // Only `header` applies in the HTTP/2 phases.
        let timeouts = ClientTimeouts {
            header,
            body: header,
            tunnel_idle: header,
            upgrade_response: header,
        };
        let mut stream = ClientStream::new(inner, timeouts, Arc::default());
        stream.phase = Phase::H2Preface;
        stream
    }

    /// The stream it wraps.
    pub fn into_inner(self) -> Stream {
        self.inner
    }

    /// The `ClientStream` under `stream`, when lb made it.
    pub(super) fn of(stream: &Stream) -> Option<&ClientStream> {
        let io: &dyn pingora::protocols::IO = &**stream;
        io.as_any().downcast_ref()
    }

    /// Told by the proxy once it parsed a request's head: what follows it.
    /// For a chunked body, also whether its framing could be checked.
    pub(super) fn expect(&self, framing: RequestFraming) -> FramingCheck {
        let mut bits = 0;
        if framing.chunked {
            bits |= signal::CHUNKED;
        }
        if framing.body {
            bits |= signal::BODY_PENDING;
        }
        if framing.upgrade {
            bits |= signal::UPGRADE_PENDING;
        }
        let seen = self.signals.fetch_or(bits, Relaxed);
        if !framing.chunked {
            FramingCheck::Sound
        } else if seen & signal::HEAD_SEEN == 0 {
            FramingCheck::Unplaced
        } else if seen & signal::FRAMING_BAD != 0 {
            FramingCheck::Bad
        } else {
            FramingCheck::Sound
        }
    }

    /// Told by the proxy: the request body has been received whole.
    pub(super) fn body_received(&self) {
        self.signals.fetch_and(!signal::BODY_PENDING, Relaxed);
    }

    /// A final response is being written: the next bytes read start the
    /// next head. A chunked body still arriving is checked to its end first.
    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.deadline = None;
        self.head_started = false;
        self.blank_line = 0;
        let checking =
            self.signals.load(Relaxed) & signal::CHUNKED != 0 && !self.framing.finished();
        self.signals
            .store(if checking { signal::CHUNKED } else { 0 }, Relaxed);
    }

    /// `101` is being written: the connection becomes a tunnel.
    fn start_tunnel(&mut self) {
        self.upgraded = Some(UpgradedConnection::count());
        self.phase = Phase::Tunnel;
        self.deadline = None;
        self.last_activity = Instant::now();
        self.signals.store(0, Relaxed);
    }

    /// Checks `bytes`, just read, against the current chunked body's
    /// framing while one is being checked. Returns how many of them
    /// belonged to that body.
    fn check_framing(&mut self, bytes: &[u8]) -> Result<usize, ClientFault> {
        if self.signals.load(Relaxed) & signal::CHUNKED == 0 || self.framing.finished() {
            return Ok(0);
        }
        match self.framing.feed(bytes) {
            Ok(end) => Ok(end.unwrap_or(bytes.len())),
            Err(bad) => {
                self.signals.fetch_or(signal::FRAMING_BAD, Relaxed);
                Err(bad.into())
            }
        }
    }

    /// Follows the bytes of a head; at its end, checks the bytes after it
    /// as chunked framing ahead of the proxy's parse (whether the body is
    /// chunked is not known yet). Returns where in `bytes` the head ended.
    fn follow_head(&mut self, bytes: &[u8]) -> Option<usize> {
        self.head_started = true;
        if self.deadline.is_none() {
            // The timer itself is only armed if the head is incomplete and a
            // read has to wait: most heads arrive whole, and never touch it.
            self.deadline = Some(Instant::now() + self.timeouts.header);
        }
        let end = ends_head(&mut self.blank_line, bytes)?;
        self.phase = Phase::AfterHead;
        self.deadline = None;
        self.framing = ChunkedFraming::default();
        let mut bits = signal::HEAD_SEEN;
        if end < bytes.len() && self.framing.feed(&bytes[end..]).is_err() {
            bits |= signal::FRAMING_BAD;
        }
        self.signals.fetch_or(bits, Relaxed);
        Some(end)
    }

    /// When the read now waiting must end, and why, if it must.
    fn wait_limit(&mut self) -> Option<(Instant, ClientFault)> {
        match self.phase {
            Phase::Head => Some((self.deadline?, ClientFault::HeaderTimeout)),
            Phase::AfterHead => {
                let signals = self.signals.load(Relaxed);
                let (limit, fault) = if signals & signal::UPGRADE_PENDING != 0 {
                    (
                        self.timeouts.upgrade_response,
                        ClientFault::UpgradeResponseTimeout,
                    )
                } else if signals & signal::BODY_PENDING != 0 {
                    (self.timeouts.body, ClientFault::BodyTimeout)
                } else {
                    return None;
                };
                let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + limit);
                Some((deadline, fault))
            }
            Phase::Tunnel => Some((
                self.last_activity + self.timeouts.tunnel_idle,
                ClientFault::TunnelIdle,
            )),
            Phase::H2Preface => Some((self.deadline?, ClientFault::HeaderTimeout)),
            Phase::H2 => None,
        }
    }

    /// A read has to wait: arms the timer for the phase's limit and fails
    /// the read once it passed.
    fn poll_limit(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some((deadline, fault)) = self.wait_limit() else {
                return Poll::Pending;
            };
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A tunnel's last activity may have moved since the timer was
            // armed: then wait for the new limit.
            if self.phase == Phase::Tunnel && self.wait_limit().is_some_and(|(d, _)| d > deadline) {
                continue;
            }
            if fault == ClientFault::HeaderTimeout && self.head_started {
                self.send_request_timeout(cx);
            }
            return Poll::Ready(Err(fault.into_io()));
        }
    }

    /// Sends `408` if the socket takes it at once; a client that does not
    /// read gets only the close.
    fn send_request_timeout(&mut self, cx: &mut Context<'_>) {
        let _ = Pin::new(&mut self.inner).poll_write(cx, REQUEST_TIMEOUT_RESPONSE);
    }

    /// Notes a write of `first` (the start of what is written) to the client.
    fn on_write(&mut self, first: &[u8]) {
        match self.phase {
            Phase::AfterHead if is_switching_protocols(first) => self.start_tunnel(),
            Phase::AfterHead if !is_interim_response(first) => self.start_head(),
            Phase::Tunnel => self.last_activity = Instant::now(),
            _ => {}
        }
    }
}

/// Whether `buf` starts a 1xx (interim) response, after which the request
/// body, not a new head, follows.
fn is_interim_response(buf: &[u8]) -> bool {
    buf.len() > 9 && buf.starts_with(b"HTTP/1.") && buf[9] == b'1'
}

/// Whether `buf` starts a `101 Switching Protocols` response.
fn is_switching_protocols(buf: &[u8]) -> bool {
    buf.len() > 12 && buf.starts_with(b"HTTP/1.") && &buf[8..13] == b" 101 "
}

impl AsyncRead for ClientStream {
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
                let body_bytes = match this.check_framing(filled) {
                    Ok(n) => n,
                    Err(fault) => return Poll::Ready(Err(fault.into_io())),
                };
                let mut head_end = None;
                match this.phase {
                    Phase::Head if body_bytes < filled.len() => {
                        head_end = this
                            .follow_head(&filled[body_bytes..])
                            .map(|end| end + body_bytes);
                    }
                    Phase::Tunnel => this.last_activity = Instant::now(),
                    Phase::H2Preface => this.phase = Phase::H2,
                    _ => {}
                }
                this.reads.record(filled.len(), head_end);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_limit(cx),
            other => other,
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.on_write(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.on_write(bufs.first().map_or(&[][..], |b| &b[..]));
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

/// Counts an upgraded connection in `lb_upgraded_connections` while it
/// lives.
#[derive(Debug)]
struct UpgradedConnection;

impl UpgradedConnection {
    fn count() -> Self {
        metrics().protocols.upgraded_connections.inc();
        UpgradedConnection
    }
}

impl Drop for UpgradedConnection {
    fn drop(&mut self) {
        metrics().protocols.upgraded_connections.dec();
    }
}

#[cfg(test)]
mod tests;
