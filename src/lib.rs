//! # lb: an HTTP load balancer on Pingora
//!
//! `lb` spreads HTTP requests over a pool of backends with round robin,
//! takes unhealthy backends out of rotation and fails over without a client
//! error when a backend cannot be reached.
//!
//! # Layout
//! - [`cli`]: the command line (Pingora's flags plus lb's overrides).
//! - [`config`]: the YAML file's format, validation, and the runtime `Config`.
//! - [`pool`]: the backends, their selection and their health checks.
//! - [`connection`]: client connections around the proxy: their limit, the
//!   time limits on heads, bodies and tunnels, chunked framing, the drain.
//! - [`proxy`]: the `ProxyHttp` implementation, thin hooks over the pool.
//! - [`hop_by_hop`]: hop-by-hop request headers, removed before a backend.
//! - [`budget`]: the retry budget shared by all requests.
//! - [`reload`]: live reload on SIGHUP or from the admin API.
//! - [`admin`]: the admin API (JSON over HTTP) on its own listener.
//! - [`app`]: assembles the Pingora `Server` from a `Config` and runs it.
//! - [`demo_backend`]: `be`, the small demo backend server.
//! - [`metrics`]: Prometheus metrics.
//! - [`access_log`]: the access log and its writer thread.
//! - [`request_id`]: `X-Request-Id` kept or made.
//! - [`stats`]: per-second samples for the status page.
//! - [`logging`]: log set-up shared by both binaries.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod budget;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo_backend;
pub mod hop_by_hop;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod request_id;
pub mod stats;
