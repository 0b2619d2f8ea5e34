//! The backend connection of an upgrade request (WebSocket): lb connects it
//! itself so that Pingora takes the request's own end before the backend's
//! `101`.
//!
//! Pingora 0.9.1 (`pingora-proxy/src/proxy_h1.rs`, `proxy_handle_upstream`)
//! mistakes the end of an upgrade request's empty body for the end of the
//! tunnel when it reads the `101` first (cloudflare/pingora#946): the
//! downstream half queues that end (`Body(None, true)`) before the
//! bidirectional loop starts; the upstream half's `select!` picks at random
//! between the backend's answer and that queued end. If the `101` is already
//! there and wins, reading it resets `request_done`, the queued end then sets
//! it again while the session is upgraded, the branch "an upgraded request is
//! terminated when either side is done" sets `response_done`, and the tunnel
//! closes right after the `101`: the client gets EOF, its first message is
//! never forwarded. A fast backend and a busy lb make that order likely.
//!
//! [`TunnelConnect`] hands Pingora a TCP stream whose first read after each
//! write returns `Pending` once (waking the task at once). Pingora polls the
//! downstream half first, so the end is queued before the upstream half's
//! first `select!`; there, a read of the `101` that comes first yields, and
//! the same `select!` takes the queued end before the `101`, the order
//! Pingora handles. Later reads lose one task wake-up per write, no more.
//!
//! This leans on Pingora's order of polling (`tokio::try_join!` polls
//! `proxy_handle_downstream` first, and lb's `request_body_filter` does not
//! wait), and gives up what Pingora's own TCP connect adds that lb does not
//! use (bind address, TCP keep-alive and socket tweaks). Drop it once Pingora
//! fixes #946.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::Result;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::pool::transport::connect_tcp;

/// Tells an upgrade request's peer apart in Pingora's connection pool, so
/// that it neither takes a plain connection (which does not yield) nor
/// leaves its own to other requests.
pub(super) const GROUP_KEY_SALT: u64 = 0x7475_6e6e_656c_0001;

/// Connects an upgrade request's backend within `timeout`, as Pingora would,
/// to a [`YieldAfterWrite`] stream.
#[derive(Debug)]
pub(super) struct TunnelConnect {
    pub(super) timeout: Duration,
}

#[async_trait]
impl L4Connect for TunnelConnect {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let (tcp, _) = connect_tcp(addr, self.timeout).await?;
        let socket = YieldAfterWrite {
            tcp,
            yield_next_read: false,
        };
        Ok(VirtualSocketStream::new(Box::new(socket)).into())
    }
}

/// A TCP stream whose first read after a write returns `Pending` once.
#[derive(Debug)]
struct YieldAfterWrite {
    tcp: TcpStream,
    yield_next_read: bool,
}

impl VirtualSocket for YieldAfterWrite {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.tcp.set_nodelay(true),
            // lb sets no TCP keep-alive (nor anything else) on its peers.
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "lb sets no such option on an upgrade request's backend connection",
            )),
        }
    }
}

impl AsyncRead for YieldAfterWrite {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.yield_next_read {
            self.yield_next_read = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for YieldAfterWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.yield_next_read = true;
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.yield_next_read = true;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_first_read_after_a_write_yields_once_then_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut backend, _) = accepted.unwrap();
        let mut socket = YieldAfterWrite {
            tcp: tcp.unwrap(),
            yield_next_read: false,
        };
        socket.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        backend.read_exact(&mut request).await.unwrap();
        backend.write_all(b"HTTP/1.1 101").await.unwrap();
        // Let the answer arrive: it is there, and still the read yields once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut answer = [0u8; 12];
        assert!(socket.read(&mut answer).now_or_never().is_none());
        assert_eq!(
            socket.read(&mut answer).now_or_never().unwrap().unwrap(),
            12
        );
        assert_eq!(&answer, b"HTTP/1.1 101");
    }

    #[tokio::test]
    async fn a_refused_connection_is_connect_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let connect = TunnelConnect {
            timeout: Duration::from_secs(5),
        };
        let e = connect.connect(&SocketAddr::Inet(addr)).await.unwrap_err();
        assert_eq!(e.etype(), &pingora::ErrorType::ConnectRefused);
    }
}
