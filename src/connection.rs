//! Client connections before Pingora's HTTP handling sees them: the limit on
//! open connections, and the deadline on receiving a request's headers.
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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::metrics;

/// A `ServerApp` that limits connections and header time, then hands each
/// connection to `inner` (the proxy).
pub struct LbApp<A> {
    inner: Arc<A>,
    open: AtomicUsize,
    max_connections: usize,
    client_header: Duration,
    /// Longest wait at shutdown for open connections to finish.
    drain_limit: Duration,
}

impl<A> LbApp<A> {
    /// Wraps `inner` with the given limits.
    pub fn new(
        inner: A,
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
impl<A: ServerApp + Send + Sync + 'static> ServerApp for LbApp<A> {
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
        let stream = HeaderDeadline::new(stream, self.client_header);
        self.inner.process_new(Box::new(stream), shutdown).await
    }

    /// Called once the listeners stopped: drain, then let the proxy drop
    /// the connections still waiting for a request.
    async fn cleanup(&self) {
        self.drain().await;
        self.inner.cleanup().await
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
}

impl HeaderDeadline {
    /// Wraps `inner`; the first head's deadline starts now.
    pub fn new(inner: Stream, limit: Duration) -> Self {
        let deadline = Instant::now() + limit;
        HeaderDeadline {
            inner,
            limit,
            phase: Phase::Head,
            deadline: Some(deadline),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            blank_line: 0,
        }
    }

    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.deadline = None;
        self.blank_line = 0;
    }
}

/// Follows `bytes` through a blank line; `progress` carries the state from
/// one read to the next. Returns whether the bytes end the head.
///
/// Only the line feeds are visited (found with `memchr`): this runs on every
/// read of every request head.
fn ends_head(progress: &mut u8, bytes: &[u8]) -> bool {
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
            return true;
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
    false
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
                if this.phase == Phase::Head {
                    let filled = &buf.filled()[before..];
                    if this.deadline.is_none() && !filled.is_empty() {
                        // The timer itself is only armed if the head is
                        // incomplete and a read has to wait (below): most
                        // heads arrive whole, and never touch it.
                        this.deadline = Some(Instant::now() + this.limit);
                    }
                    if ends_head(&mut this.blank_line, filled) {
                        this.phase = Phase::AfterHead;
                        this.deadline = None;
                    }
                }
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
        assert!(!ends_head(&mut progress, b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!ends_head(&mut progress, b"\n\r"));
        assert!(ends_head(&mut progress, b"\n"));
        let mut progress = 0;
        assert!(ends_head(&mut progress, b"GET / HTTP/1.0\n\n"));
        let mut progress = 0;
        assert!(!ends_head(&mut progress, b"GET / HTTP/1.1\r\nA: b\r\n"));
    }

    /// The byte-at-a-time state machine `ends_head` replaced: the reference.
    fn ends_head_bytewise(progress: &mut u8, bytes: &[u8]) -> bool {
        for &b in bytes {
            *progress = match (*progress, b) {
                (1 | 2, b'\n') => {
                    *progress = 0;
                    return true;
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        false
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
                        if ended {
                            break;
                        }
                        assert_eq!(fast, slow, "{head:?} read as {reads:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn interim_responses_are_recognised() {
        assert!(is_interim_response(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!is_interim_response(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_interim_response(b"hello"));
    }
}
