//! `health_check.on_marked_down: close`, HAProxy's `on-marked-down
//! shutdown-sessions`: when health checks mark a backend down, the
//! requests in flight to it end at once instead of waiting out
//! `timeouts.upstream_response` on a backend that went dark, and lb's retry
//! rules send the idempotent ones to another backend.
//!
//! Pingora has no hook that cancels a request waiting on its backend, so
//! lb opens those connections itself ([`TrackedConnect`], Pingora's
//! `PeerOptions.custom_l4`) and keeps a duplicate descriptor of each socket
//! in [`BackendConnections`] until Pingora drops the connection (the
//! stream's tracer). Marking the backend down `shutdown(2)`s those sockets:
//! Pingora's pending read ends, as after a reset, and the request takes the
//! error path lb already handles. The duplicate is lb's own descriptor, so
//! it can never name a socket reused by something else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::socket::Shutdown;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::upstreams::peer::{Tracer, Tracing};
use pingora::{Error, ErrorType, Result};

use super::transport::connect_tcp;
use crate::sync::lock;

/// The open connections of a pool's requests, by backend address.
#[derive(Debug, Default)]
pub struct BackendConnections {
    open: Mutex<HashMap<SocketAddr, HashMap<u64, OwnedFd>>>,
    next_id: AtomicU64,
}

impl BackendConnections {
    /// Keeps `socket` (a duplicate) until [`Registration`] says it closed.
    fn register(self: &Arc<Self>, addr: SocketAddr, socket: OwnedFd) -> Registration {
        let id = self.next_id.fetch_add(1, Relaxed);
        lock(&self.open).entry(addr).or_default().insert(id, socket);
        Registration {
            connections: Arc::clone(self),
            addr,
            id,
        }
    }

    fn unregister(&self, addr: SocketAddr, id: u64) {
        let mut open = lock(&self.open);
        if let Some(sockets) = open.get_mut(&addr) {
            sockets.remove(&id);
            if sockets.is_empty() {
                open.remove(&addr);
            }
        }
    }

    /// Shuts down every connection to `addr` (both directions); returns how
    /// many. Each goes from the set when Pingora drops it.
    pub fn shut_down(&self, addr: SocketAddr) -> usize {
        let open = lock(&self.open);
        let Some(sockets) = open.get(&addr) else {
            return 0;
        };
        sockets
            .values()
            .filter(|socket| nix::sys::socket::shutdown(socket.as_raw_fd(), Shutdown::Both).is_ok())
            .count()
    }

    /// How many connections to `addr` are open.
    pub fn open_to(&self, addr: SocketAddr) -> usize {
        lock(&self.open).get(&addr).map_or(0, HashMap::len)
    }
}

/// One registered connection; Pingora calls it when the stream is dropped.
#[derive(Debug, Clone)]
struct Registration {
    connections: Arc<BackendConnections>,
    addr: SocketAddr,
    id: u64,
}

impl Tracing for Registration {
    fn on_connected(&self) {}

    fn on_disconnected(&self) {
        self.connections.unregister(self.addr, self.id);
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

/// Connects a request's backend within `timeout`, as Pingora would, and
/// registers the connection with the pool's [`BackendConnections`].
#[derive(Debug)]
pub struct TrackedConnect {
    pub connections: Arc<BackendConnections>,
    pub timeout: Duration,
}

#[async_trait]
impl L4Connect for TrackedConnect {
    async fn connect(&self, addr: &PeerAddr) -> Result<Stream> {
        let Some(inet) = addr.as_inet() else {
            return Error::e_explain(
                ErrorType::ConnectError,
                format!("backend {addr} is not a TCP address"),
            );
        };
        let tcp = connect_tcp(addr, *inet, self.timeout).await?;
        let duplicate = nix::unistd::dup(&tcp).map_err(|e| {
            Error::because(
                ErrorType::SocketError,
                format!("cannot keep the connection to {addr} (dup)"),
                e,
            )
        })?;
        let registration = self.connections.register(*inet, duplicate);
        let mut stream: Stream = tcp.into();
        stream.tracer = Some(Tracer(Box::new(registration)));
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_shut_down_connection_ends_its_pending_read_and_leaves_the_set_when_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = TrackedConnect {
            connections: Arc::default(),
            timeout: Duration::from_secs(5),
        };
        let peer = PeerAddr::Inet(addr);
        let (stream, accepted) = tokio::join!(connect.connect(&peer), listener.accept());
        let (mut stream, (mut backend, _)) = (stream.unwrap(), accepted.unwrap());
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        backend.read_exact(&mut request).await.unwrap();
        assert_eq!(connect.connections.open_to(addr), 1);

        // The backend never answers; marking it down ends the wait.
        let mut answer = [0u8; 16];
        let (read, closed) = tokio::join!(stream.read(&mut answer), async {
            tokio::task::yield_now().await;
            connect.connections.shut_down(addr)
        });
        assert_eq!(closed, 1);
        assert_eq!(
            read.unwrap(),
            0,
            "the read ends as at the end of the stream"
        );
        drop(stream);
        assert_eq!(connect.connections.open_to(addr), 0);
        assert_eq!(connect.connections.shut_down(addr), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_connect_refused_and_registers_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let connect = TrackedConnect {
            connections: Arc::default(),
            timeout: Duration::from_secs(5),
        };
        let e = connect.connect(&PeerAddr::Inet(addr)).await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ConnectRefused);
        assert_eq!(connect.connections.open_to(addr), 0);
    }
}
