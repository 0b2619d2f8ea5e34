//! The listening services of the proxy: one per listener that proxies,
//! each with its access gate at accept, its PROXY header step and its
//! protocols; the services that redirect to HTTPS; and the connection
//! counts every listener shares.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{ListenerConfig, Listeners};
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::HttpProxy;
use pingora::server::Server;
use pingora::services::listening::Service;

use super::StartError;
use crate::config::{Config, ListenerKind};
use crate::connection::{descriptors, Admission, LbApp, ProxyHeaderStep};
use crate::proxy::{ListenerGate, Proxy};
use crate::tls::{PlainHttpOnTlsPort, PreTlsChain, RedirectToHttps, TlsListener};

/// The proxy services: lb's `ProxyHttp` inside Pingora's `HttpProxy`,
/// inside [`LbApp`], one service per listener that proxies (each listener
/// has its own protocols; they share the proxy and the connection count).
pub(super) fn proxy_services(
    server: &Server,
    proxy_logic: Proxy,
    config: &Config,
    tls_listeners: &[(SocketAddr, Arc<TlsListener>)],
) -> Result<Vec<Service<LbApp<HttpProxy<Proxy>>>>, StartError> {
    let proxy_control = proxy_logic.control();
    let routing = proxy_control.routing();
    let mut proxy_app = HttpProxy::new(proxy_logic, Arc::clone(&server.configuration));
    proxy_app.handle_init_modules();
    // HTTP/2 reaches the proxy only from listeners that speak it: ALPN on
    // TLS, or an h2c listener (LbApp checks for the preface first).
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    options.h2_idle_timeout = Some(config.timeouts.client_idle);
    proxy_app.server_options = Some(options);
    let admission = admission(config);
    let app = LbApp::new(
        proxy_app,
        Arc::new(proxy_control),
        Arc::clone(&admission),
        config.timeouts.client_header,
        crate::config::drain_window(&server.configuration),
    );
    let mut services = Vec::new();
    for listener in &config.listeners {
        let listening = ListenerServices {
            config,
            routing: &routing,
            admission: &admission,
            tls_listeners,
        };
        if let Some(service) = listening.service(listener, &app)? {
            services.push(service);
        }
    }
    Ok(services)
}

/// What every listener's service is made with.
struct ListenerServices<'a> {
    config: &'a Config,
    routing: &'a Arc<arc_swap::ArcSwap<crate::proxy::Routing>>,
    admission: &'a Arc<Admission>,
    tls_listeners: &'a [(SocketAddr, Arc<TlsListener>)],
}

impl ListenerServices<'_> {
    /// The service of one listener: its access gate at accept, its PROXY
    /// header step (before TLS on a TLS listener), and what it speaks. None
    /// for a listener another service serves (`redirect_https`).
    fn service(
        &self,
        listener: &crate::config::ListenerConfig,
        app: &LbApp<HttpProxy<Proxy>>,
    ) -> Result<Option<Service<LbApp<HttpProxy<Proxy>>>>, StartError> {
        let config = self.config;
        let mut listeners = Listeners::new();
        let endpoint = ListenerConfig::tcp(listener.addr.to_string()).l4_buffer(client_buffers());
        let gate = Arc::new(ListenerGate::new(
            Arc::clone(self.routing),
            listener.addr,
            listener.edge.proxy_protocol,
        ));
        listeners.set_connection_filter(gate.clone());
        let proxy_header = listener.edge.proxy_protocol.then(|| ProxyHeaderStep {
            listener: Arc::from(listener.addr.to_string()),
            deadline: config.timeouts.client_header,
            gate,
        });
        let (h2c, plain_proxy_header) = match &listener.kind {
            ListenerKind::Http { h2c } => {
                listeners.add_listener(endpoint);
                (*h2c, proxy_header)
            }
            ListenerKind::Tls(tls) => {
                let Some((_, callbacks)) =
                    self.tls_listeners.iter().find(|(a, _)| *a == listener.addr)
                else {
                    return Ok(None);
                };
                let settings =
                    callbacks
                        .settings(tls.min_version, tls.http2)
                        .map_err(|source| StartError::Tls {
                            addr: listener.addr,
                            source,
                        })?;
                listeners.add_listener(endpoint.tls(settings));
                listeners.set_pre_tls_callback(self.pre_tls(listener, proxy_header));
                (false, None)
            }
            ListenerKind::RedirectHttps { .. } => return Ok(None),
        };
        let name = format!("lb proxy {}", listener.addr);
        let app = app.for_listener(h2c, plain_proxy_header);
        Ok(Some(Service::with_listeners(name, listeners, app)))
    }

    /// A TLS listener's steps before its handshake: admission, then the
    /// PROXY header when it takes one, then the answer to plain HTTP.
    fn pre_tls(
        &self,
        listener: &crate::config::ListenerConfig,
        proxy_header: Option<ProxyHeaderStep>,
    ) -> Arc<PreTlsChain> {
        let mut steps: Vec<Arc<dyn pingora::listeners::PreTlsProcess>> = Vec::new();
        if let Some(step) = proxy_header {
            steps.push(Arc::new(step));
        }
        steps.push(Arc::new(PlainHttpOnTlsPort {
            listener: listener.addr.to_string(),
            first_byte: self.config.timeouts.client_header,
        }));
        Arc::new(PreTlsChain {
            admission: Arc::clone(self.admission),
            listener: Arc::from(listener.addr.to_string()),
            handshake_deadline: self.config.timeouts.tls_handshake,
            steps,
        })
    }
}

/// The connection counts of every listener, with `limits.max_connections`
/// lowered to fit the open-file limit (raised to its hard limit first), and
/// the handshake cap lowered with it.
fn admission(config: &Config) -> Arc<Admission> {
    let limits = &config.limits;
    let budget =
        descriptors::raise_and_fit(limits.max_connections, config.descriptors_per_connection());
    if let Some(warning) = &budget.lowered {
        log::warn!("{warning}");
    }
    let max_tls_handshakes =
        limits.max_tls_handshakes * budget.max_connections / limits.max_connections.max(1);
    Admission::new(budget.max_connections, max_tls_handshakes.max(1))
}

/// A service for each `redirect_https` listener.
pub(super) fn redirect_services(config: &Config) -> Vec<Service<HttpServer<RedirectToHttps>>> {
    config
        .listeners
        .iter()
        .filter_map(|l| match l.kind {
            ListenerKind::RedirectHttps { port } => {
                let mut service = Service::new(
                    format!("lb redirect {}", l.addr),
                    HttpServer::new_app(RedirectToHttps { port }),
                );
                service.add_tcp(&l.addr.to_string());
                Some(service)
            }
            _ => None,
        })
        .collect()
}

/// Read and write buffers of each client connection. Pingora's default read
/// buffer is 64 KiB a connection, held while it idles: 9,500 idle keep-alive
/// connections took 850 MB (bench/RESULTS.md). lb keeps none: request heads
/// are read straight into the HTTP session's own buffer (4 KiB, growing) and
/// bodies into the body reader's, so a socket buffer in front of them only
/// adds a copy. Measured: 4.1 KiB less per idle connection than a 4 KiB
/// buffer, and 1% fewer instructions per request.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::new(0, 1460)
}
