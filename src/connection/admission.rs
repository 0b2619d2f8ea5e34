//! Which client connections lb takes: one count of the connections open on
//! every listener, from `accept` on, TLS or not, and a separate cap on those
//! still in their TLS handshake.
//!
//! A plain connection is counted when `LbApp` first sees it, which is right
//! after `accept`. A TLS connection is counted before its handshake, by the
//! pre-TLS step of its listener ([`Admission::admit_tls`]): Pingora gives the
//! app a TLS connection only once its handshake is over, and a flood of idle
//! TCP connections to a TLS port would otherwise be held uncounted (600 with
//! a limit of 200, measured). Its count rides on the connection itself, in
//! the Pingora `Tracer` slot of the TCP stream, whose `on_disconnected` runs
//! when the connection is dropped, whatever ends it.
//!
//! A global limit alone turns a handshake flood into a full outage (HAProxy
//! with `maxconn 200` and 600 idle connections on its TLS port stops
//! answering its plain port too). So connections still in their handshake
//! have their own cap (`limits.max_tls_handshakes`): past it a new TLS
//! connection is closed at once, while established clients and the other
//! listeners are served. And each handshake has a deadline
//! (`timeouts.tls_handshake`): lb shuts the socket down when it passes.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::SslStream;
use pingora::protocols::Stream;
use pingora::upstreams::peer::{Tracer, Tracing};
use tokio::sync::Notify;

use crate::telemetry::metrics::metrics;
use crate::telemetry::throttled::Throttled;

/// The connection counts every listener shares, and their limits.
#[derive(Debug)]
pub struct Admission {
    open: AtomicUsize,
    handshaking: AtomicUsize,
    /// Most client connections open at once (`limits.max_connections`,
    /// lowered to fit the open-file limit).
    max_connections: usize,
    /// Most of them still in their TLS handshake (`limits.max_tls_handshakes`).
    max_tls_handshakes: usize,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` connections are open.
    MaxConnections,
    /// `limits.max_tls_handshakes` connections are in their handshake.
    MaxTlsHandshakes,
}

impl Refusal {
    /// The limit's key, as the log and the metric's `reason` write it.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxTlsHandshakes => "max_tls_handshakes",
        }
    }
}

/// Whether a new connection fits, given how many are open and in their
/// handshake with it counted.
fn verdict(
    open: usize,
    max_connections: usize,
    handshaking: Option<(usize, usize)>,
) -> Result<(), Refusal> {
    if open > max_connections {
        return Err(Refusal::MaxConnections);
    }
    match handshaking {
        Some((now, max)) if now > max => Err(Refusal::MaxTlsHandshakes),
        _ => Ok(()),
    }
}

impl Admission {
    /// Counts with the given limits.
    pub fn new(max_connections: usize, max_tls_handshakes: usize) -> Arc<Admission> {
        Arc::new(Admission {
            open: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            max_connections,
            max_tls_handshakes,
        })
    }

    /// Client connections open now, TLS handshakes included.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Client connections in their TLS handshake now.
    pub fn handshaking(&self) -> usize {
        self.handshaking.load(Relaxed)
    }

    /// Counts a new plain connection: its ticket, which uncounts it when
    /// dropped, or why it must be closed.
    pub fn admit(self: &Arc<Self>) -> Result<OpenTicket, Refusal> {
        let ticket = OpenTicket::new(self);
        match verdict(ticket.open_now, self.max_connections, None) {
            Ok(()) => Ok(ticket),
            Err(refusal) => Err(refused(refusal)),
        }
    }

    /// Counts a new TLS connection on `listener` before its handshake and
    /// hangs its count on `stream`; the handshake is shut down when it is
    /// not over within `deadline`. Err: close it at once.
    pub fn admit_tls(
        self: &Arc<Self>,
        stream: &mut L4Stream,
        listener: &Arc<str>,
        deadline: Duration,
    ) -> Result<TlsHandshake, Refusal> {
        let ticket = OpenTicket::new(self);
        let handshaking = self.handshaking.fetch_add(1, Relaxed) + 1;
        metrics().connections.handshaking.inc();
        let handshake = HandshakeTicket(Arc::clone(self));
        let fits = verdict(
            ticket.open_now,
            self.max_connections,
            Some((handshaking, self.max_tls_handshakes)),
        );
        if let Err(refusal) = fits {
            metrics()
                .protocols
                .tls_handshake(listener, "none", "refused");
            return Err(refused(refusal));
        }
        let connection = Arc::new(TlsConnection {
            listener: Arc::clone(listener),
            phase: Mutex::new(Phase::Handshake {
                fd: std::os::fd::AsRawFd::as_raw_fd(stream),
                _ticket: handshake,
            }),
            _open: ticket,
            ended: Notify::new(),
        });
        stream.tracer = Some(Tracer(Box::new(TlsTrace(Arc::clone(&connection)))));
        tokio::spawn(shut_down_after(Arc::clone(&connection), deadline));
        Ok(TlsHandshake(connection))
    }
}

/// Counts a refused connection and warns about it, once per interval.
fn refused(refusal: Refusal) -> Refusal {
    static WARNINGS: [Throttled; 2] = [Throttled::new(), Throttled::new()];
    metrics().connections.refused(refusal.key());
    let (warning, limit) = match refusal {
        Refusal::MaxConnections => (&WARNINGS[0], "max_connections"),
        Refusal::MaxTlsHandshakes => (&WARNINGS[1], "max_tls_handshakes"),
    };
    warning.warn(|count| {
        format!("closed {count} new client connection(s) at once: limits.{limit} reached")
    });
    refusal
}

/// One open connection's place in the count; given back when dropped.
#[derive(Debug)]
pub struct OpenTicket {
    admission: Arc<Admission>,
    /// The count with this connection in it.
    open_now: usize,
}

impl OpenTicket {
    fn new(admission: &Arc<Admission>) -> OpenTicket {
        let open_now = admission.open.fetch_add(1, Relaxed) + 1;
        metrics().connections.open.inc();
        OpenTicket {
            admission: Arc::clone(admission),
            open_now,
        }
    }
}

impl Drop for OpenTicket {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Relaxed);
        metrics().connections.open.dec();
    }
}

/// One connection's place among those in their handshake.
#[derive(Debug)]
struct HandshakeTicket(Arc<Admission>);

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Relaxed);
        metrics().connections.handshaking.dec();
    }
}

/// A TLS connection counted before its handshake.
#[derive(Debug)]
struct TlsConnection {
    listener: Arc<str>,
    phase: Mutex<Phase>,
    /// Its place in the open count, given back when the connection is
    /// dropped (the tracer is dropped with it) and the deadline's task ends.
    _open: OpenTicket,
    /// Wakes the deadline's task when the handshake ended either way.
    ended: Notify,
}

/// Where a counted TLS connection is.
#[derive(Debug)]
enum Phase {
    /// In its handshake, on the socket `fd`.
    Handshake { fd: RawFd, _ticket: HandshakeTicket },
    /// Cut short by its deadline; it is dropped once Pingora sees the end.
    TimedOut,
    /// Its handshake is over, or was already counted (not TLS, refused).
    Done,
}

impl TlsConnection {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The handshake is over: it leaves the handshake count.
    fn established(&self) {
        *self.phase() = Phase::Done;
        self.ended.notify_one();
    }

    /// The connection is dropped: a handshake still going failed.
    fn closed(&self) {
        let mut phase = self.phase();
        if matches!(*phase, Phase::Handshake { .. }) {
            metrics()
                .protocols
                .tls_handshake(&self.listener, "unknown", "failed");
        }
        // The socket is still open here (the tracer runs before the stream
        // closes it): under the lock, the deadline cannot shut down a
        // descriptor number another connection reuses.
        *phase = Phase::Done;
        drop(phase);
        self.ended.notify_one();
    }

    /// The deadline passed: a handshake still going is shut down, which
    /// makes Pingora's handshake read fail and drop the connection.
    fn expire(&self) {
        let mut phase = self.phase();
        if let Phase::Handshake { fd, .. } = *phase {
            // Shut down, not closed: the descriptor stays Pingora's to close.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
            metrics()
                .protocols
                .tls_handshake(&self.listener, "none", "timeout");
            *phase = Phase::TimedOut;
        }
    }
}

/// Waits for the handshake of `connection` to end, or `deadline` to pass.
async fn shut_down_after(connection: Arc<TlsConnection>, deadline: Duration) {
    if tokio::time::timeout(deadline, connection.ended.notified())
        .await
        .is_err()
    {
        connection.expire();
    }
}

/// A TLS connection admitted before its handshake, as the pre-TLS step
/// holds it while the listener's other steps run.
#[derive(Debug)]
pub struct TlsHandshake(Arc<TlsConnection>);

impl TlsHandshake {
    /// A later pre-TLS step closed it and counted why (not TLS, say): the
    /// handshake is not counted as failed.
    pub fn settled(self) {
        self.0.established();
    }
}

/// The handle in the stream's `Tracer` slot.
#[derive(Debug)]
struct TlsTrace(Arc<TlsConnection>);

impl Tracing for TlsTrace {
    /// lb's own signal, from [`handshake_done`]: the handshake is over.
    fn on_connected(&self) {
        self.0.established();
    }

    fn on_disconnected(&self) {
        self.0.closed();
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(TlsTrace(Arc::clone(&self.0)))
    }
}

/// Tells the count that the TLS connection `stream` finished its
/// handshake; false when it is not a TLS connection lb counted.
pub fn handshake_done(stream: &Stream) -> bool {
    let tls = stream.as_any().downcast_ref::<SslStream<L4Stream>>();
    match tls.and_then(|tls| tls.get_ref().tracer.as_ref()) {
        Some(tracer) => {
            tracer.0.on_connected();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_over_the_limit_is_refused() {
        assert_eq!(verdict(200, 200, None), Ok(()));
        assert_eq!(verdict(201, 200, None), Err(Refusal::MaxConnections));
    }

    #[test]
    fn a_handshake_over_its_own_cap_is_refused_below_the_global_limit() {
        assert_eq!(verdict(150, 200, Some((100, 100))), Ok(()));
        assert_eq!(
            verdict(150, 200, Some((101, 100))),
            Err(Refusal::MaxTlsHandshakes)
        );
        assert_eq!(
            verdict(201, 200, Some((50, 100))),
            Err(Refusal::MaxConnections)
        );
    }

    #[test]
    fn tickets_give_their_place_back() {
        let admission = Admission::new(2, 1);
        let first = admission.admit().expect("first fits");
        let second = admission.admit().expect("second fits");
        assert_eq!(admission.admit().err(), Some(Refusal::MaxConnections));
        assert_eq!(admission.open(), 2);
        drop((first, second));
        assert_eq!(admission.open(), 0);
    }
}
