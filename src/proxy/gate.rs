//! A listener's access rules at the connection: Pingora's connection
//! filter asks [`ListenerGate`] about each accepted peer before any TLS
//! work, and a listener that takes the PROXY protocol asks it about the
//! header's client right after the header (`connection::ClientGate`).
//! The rules are read from the routing in service, so a reload changes
//! them for the next connection.
//!
//! A peer that is one of the listener's trusted proxies passes: its
//! clients are judged per request, by their `X-Forwarded-For`. Every
//! request is judged again in `request_filter` (a 403) with the real
//! client address, so this is the early, cheap refusal, not the only one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;

use super::Routing;
use crate::connection::ClientGate;
use crate::policy::client;

/// The access rules of the listener on `listener`.
pub struct ListenerGate {
    routing: Arc<ArcSwap<Routing>>,
    /// The listener's address as configured.
    listener: SocketAddr,
    /// Its connections start with a PROXY header: the peer is a balancer,
    /// and the client is known only after the header.
    proxy_protocol: bool,
}

impl std::fmt::Debug for ListenerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListenerGate({})", self.listener)
    }
}

impl ListenerGate {
    pub fn new(routing: Arc<ArcSwap<Routing>>, listener: SocketAddr, proxy_protocol: bool) -> Self {
        ListenerGate {
            routing,
            listener,
            proxy_protocol,
        }
    }
}

impl ClientGate for ListenerGate {
    /// Whether `client` may open a connection: a trusted proxy may; anyone
    /// else when every access rule of the listener's chain lets it in.
    fn admits(&self, client: IpAddr) -> bool {
        let routing = self.routing.load();
        let Some(listener) = routing.listener_at(self.listener) else {
            return true;
        };
        if client::is_in(&listener.trusted, client) {
            return true;
        }
        let client = client::canonical(client);
        listener
            .policies
            .iter()
            .flat_map(|chain| chain.iter())
            .all(|policy| policy.admits_connection(client))
    }
}

#[async_trait]
impl ConnectionFilter for ListenerGate {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        match addr {
            Some(peer) if !self.proxy_protocol => self.admits(peer.ip()),
            _ => true,
        }
    }
}
