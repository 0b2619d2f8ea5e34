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
//!
//! A backend can also leave the pool before health checks find it dark: a
//! partitioned container's name stops resolving to it within one discovery
//! interval, and health checks stop with it. Its requests in flight drain,
//! as they should from a backend scaled down; so that they do not wait on
//! a backend that will never answer, [`watch_departed`] goes on checking it
//! (the pool's own health check, every interval) while it has connections
//! open, and shuts them down after `unhealthy_threshold` failures, as the
//! health checks would have marked it down.

use std::collections::{HashMap, HashSet};
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

/// Tells a tracked connection apart in Pingora's connection pool, so that a
/// request that must be cut off at mark-down never reuses one made before
/// `close` was turned on, which lb does not hold.
pub const GROUP_KEY_SALT: u64 = 0x6375_746f_6666_0001;

/// The open connections of a pool's requests, by backend address.
#[derive(Debug, Default)]
pub struct BackendConnections {
    open: Mutex<HashMap<SocketAddr, HashMap<u64, OwnedFd>>>,
    next_id: AtomicU64,
    /// Backends that left the pool with connections open, being watched.
    watched: Mutex<HashSet<SocketAddr>>,
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

    /// The backends with connections open.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        lock(&self.open).keys().copied().collect()
    }
}

/// How often a backend that left the pool is checked, and how many failed
/// checks in a row end its connections: the pool's health-check interval
/// and unhealthy threshold.
#[derive(Debug, Clone, Copy)]
pub struct DepartedWatch {
    pub interval: Duration,
    pub unhealthy_threshold: usize,
}

/// Checks `addr` (`check` says whether it passed), which left the pool with
/// connections open, until they are all closed or it is back in the pool
/// (`in_pool`); after `unhealthy_threshold` failed checks in a row, shuts
/// them down. One watch per address at a time.
pub async fn watch_departed<F: std::future::Future<Output = bool>>(
    connections: Arc<BackendConnections>,
    addr: SocketAddr,
    watch: DepartedWatch,
    in_pool: impl Fn() -> bool,
    check: impl Fn() -> F,
) {
    if !lock(&connections.watched).insert(addr) {
        return;
    }
    let mut failures = 0;
    loop {
        tokio::time::sleep(watch.interval).await;
        if connections.open_to(addr) == 0 || in_pool() {
            break;
        }
        failures = if check().await { 0 } else { failures + 1 };
        if failures >= watch.unhealthy_threshold {
            let closed = connections.shut_down(addr);
            log::warn!(
                "backend {addr}, which left the pool, does not answer: {closed} connection(s) \
                 of requests in flight to it shut down (on_marked_down: close)"
            );
            break;
        }
    }
    lock(&connections.watched).remove(&addr);
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
        let (tcp, inet) = connect_tcp(addr, self.timeout).await?;
        let duplicate = nix::unistd::dup(&tcp).map_err(|e| {
            Error::because(
                ErrorType::SocketError,
                format!("cannot keep the connection to {addr} (dup)"),
                e,
            )
        })?;
        let registration = self.connections.register(inet, duplicate);
        let mut stream: Stream = tcp.into();
        stream.tracer = Some(Tracer(Box::new(registration)));
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A tracked connection to a listener of the test's, and its other end.
    async fn tracked() -> (TrackedConnect, TcpListener, Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TrackedConnect {
            connections: Arc::default(),
            timeout: Duration::from_secs(5),
        };
        let peer = PeerAddr::Inet(listener.local_addr().unwrap());
        let (stream, accepted) = tokio::join!(connect.connect(&peer), listener.accept());
        (connect, listener, stream.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn a_shut_down_connection_ends_its_pending_read_and_leaves_the_set_when_dropped() {
        let (connect, listener, mut stream, mut backend) = tracked().await;
        let addr = listener.local_addr().unwrap();
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
    async fn a_departed_backend_that_does_not_answer_has_its_connections_shut_down() {
        let (connect, listener, mut stream, _backend) = tracked().await;
        let addr = listener.local_addr().unwrap();
        // It stops answering: each check fails.
        drop(listener);
        let watch = DepartedWatch {
            interval: Duration::from_millis(10),
            unhealthy_threshold: 2,
        };
        let connections = Arc::clone(&connect.connections);
        watch_departed(connections, addr, watch, || false, || async { false }).await;
        let mut answer = [0u8; 16];
        assert_eq!(stream.read(&mut answer).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_departed_backend_back_in_the_pool_is_left_alone() {
        let (connect, listener, stream, _backend) = tracked().await;
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let watch = DepartedWatch {
            interval: Duration::from_millis(10),
            unhealthy_threshold: 1,
        };
        let connections = Arc::clone(&connect.connections);
        watch_departed(connections, addr, watch, || true, || async { false }).await;
        assert_eq!(connect.connections.open_to(addr), 1);
        drop(stream);
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
