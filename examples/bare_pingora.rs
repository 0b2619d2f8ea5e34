//! A bare Pingora round-robin proxy, for `bench/run.sh` only: the floor
//! that lb's own features (limits, retries, passive health, metrics,
//! request ids, the header deadline) add to. One worker thread, HTTP
//! health checks every 2 s, nothing else.
//!
//!     bare_pingora [--threads N] [--no-steal] [--keepalive N] [--check-reuse] LISTEN BACKEND...
//!
//! `--keepalive N`: Pingora's idle upstream connection pool size (default 128).
//! `--check-reuse`: health checks keep their connection for the next
//! (`HttpHealthCheck::reuse_connection`; default: a new one each).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::Server;
use pingora::services::background::background_service;

struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "no backend"))?;
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut check_reuse = false;
    let mut conf = pingora::server::configuration::ServerConf {
        // A benchmark's SIGTERM ends it at once (Pingora waits 300 s by default).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..Default::default()
    };
    while let Some(flag) = args.next_if(|a| a.starts_with("--")) {
        match flag.as_str() {
            "--threads" => {
                conf.threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--threads takes a number")
            }
            "--no-steal" => conf.work_stealing = false,
            "--check-reuse" => check_reuse = true,
            "--keepalive" => {
                conf.upstream_keepalive_pool_size = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--keepalive takes a number")
            }
            _ => panic!("unknown flag {flag}"),
        }
    }
    let listen = args
        .next()
        .expect("usage: bare_pingora [--threads N] [--no-steal] [--keepalive N] [--check-reuse] LISTEN BACKEND...");
    let backends: Vec<String> = args.collect();
    let opt = pingora::server::configuration::Opt::default();
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let mut balancer = LoadBalancer::try_from_iter(backends).expect("backend addresses");
    let mut check = HttpHealthCheck::new("localhost", false);
    check.reuse_connection = check_reuse;
    balancer.set_health_check(Box::new(check));
    balancer.health_check_frequency = Some(Duration::from_secs(2));
    let health = background_service("health check", balancer);
    let mut proxy = http_proxy_service(&server.configuration, Bare(health.task()));
    proxy.add_tcp(&listen);
    server.add_service(health);
    server.add_service(proxy);
    server.run_forever();
}
