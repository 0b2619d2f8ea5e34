//! # lb: an HTTP load balancer on Pingora
//!
//! `lb` spreads HTTP requests over a pool of backends with round robin,
//! takes unhealthy backends out of rotation and fails over without a client
//! error when a backend cannot be reached.
//!
//! # Layout
//! Three layers, each a folder, beside the command line and the assembly:
//! - the request path, in the order a request meets it:
//!   - [`tls`]: TLS listeners, their certificates (by SNI, replaced at
//!     reload) and the redirect to HTTPS;
//!   - [`connection`]: client connections around the proxy: their limit,
//!     the keep-alive loop, the time limits on heads, bodies and tunnels,
//!     chunked framing, the drain at shutdown;
//!   - [`proxy`]: the `ProxyHttp` implementation, thin hooks over the pool,
//!     with the limits, retries and budget, headers and error pages;
//!   - [`policy`]: the named policies listeners and routes apply (access,
//!     rate and connection limits, auth, CORS, header rules, compression),
//!     the real client address, rewrites and redirects;
//!   - [`pool`]: the backends, their selection, their health checks and
//!     the transport to them (TLS, SNI, HTTP/2).
//! - the control plane: [`config`] (the YAML file and its checks, plain
//!   data that imports no other layer), [`runtime`] (the one assembly
//!   path: pools, routes and certificates built whole, then put in
//!   service, by start-up and reload alike), [`reload`] (SIGHUP and the
//!   admin API's reload), [`admin`] (the admin API, the status page and
//!   its per-second samples), [`routing`] (routes resolved to pools),
//!   [`summary`] (what `lb -t` prints);
//! - telemetry: [`telemetry`] (metrics, the access log, logging);
//! - [`process`]: the pid file, the daemon's log, the user lb runs as, the
//!   free memory it returns;
//! - [`sync`]: the one policy for a poisoned lock, which every layer uses.
//!
//! [`cli`] parses the command line and [`app`] assembles Pingora's `Server`
//! from a `Config` and a [`runtime::Runtime`]. `architecture.md` draws the
//! imports between these modules. The binaries are thin: `bin/lb.rs`, and `bin/be/`, the
//! demo backend, which is not part of this library.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod connection;
pub mod policy;
pub mod pool;
pub mod process;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod summary;
pub mod sync;
pub mod telemetry;
pub mod tls;
