//! Starting lb: from the parsed command line to a running Pingora `Server`
//! with the proxy service on every listener and the health-check service.

use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin;
use crate::admin::stats::{Sampler, Stats};
use crate::cli::Cli;
use crate::config::Config;
use crate::connection::LbApp;
use crate::pool::{Pool, PoolService};
use crate::proxy::Proxy;
use crate::reload::{ReloadOnHangup, Reloader};
use pingora::services::background::background_service;

/// Why lb could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener's address cannot be bound.
    #[error("listeners: cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The access log file cannot be opened.
    #[error("access_log.path: cannot open the access log")]
    AccessLog(#[source] std::io::Error),
    /// Building the backend pool failed.
    #[error("cannot build the backend pool")]
    Pool(#[source] pingora::BError),
}

/// Loads the configuration the command line names and checks it.
pub fn load_config(cli: &Cli) -> Result<Config, StartError> {
    Ok(Config::load(
        cli.config_path().as_deref(),
        &cli.overrides(),
    )?)
}

/// Runs lb with `config` until it is told to stop. Returns only on a start
/// error; a normal stop exits the process.
pub fn run(cli: Cli, mut config: Config) -> Result<(), StartError> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    if !cli.pingora.upgrade {
        // Pingora panics on a listener it cannot bind; find out first and say so
        // plainly. An upgrading process inherits the sockets, so it skips this.
        check_listeners(&config)?;
    }
    let pool = Pool::new(&config).map_err(StartError::Pool)?;
    let proxy_logic = Proxy::new(Arc::clone(&pool), &config);
    let reloader = Arc::new(Reloader::new(
        cli.config_path(),
        cli.overrides(),
        &config,
        Arc::clone(&pool),
        proxy_logic.control(),
    ));
    let opt = Opt {
        conf: None, // the file is already read; Pingora would warn that it is ignored
        ..cli.pingora
    };
    // Pingora's Server owns the server section from here: read
    // `server.configuration`, not `config.server`.
    let mut server = Server::new_with_opt_and_conf(opt, std::mem::take(&mut config.server));
    server.bootstrap();
    // After bootstrap: in daemon mode it forks, and a thread started before would not survive.
    if let Some(access_log) = &config.access_log {
        crate::telemetry::access_log::start(access_log).map_err(StartError::AccessLog)?;
        server.add_service(background_service(
            "access log reopen on SIGUSR1",
            crate::telemetry::access_log::ReopenOnUsr1,
        ));
    }
    if !server.configuration.daemon {
        // Pingora writes the pid file only in daemon mode; lb-upgrade and
        // operators need it either way.
        write_pid_file(&server.configuration.pid_file);
    }

    let proxy = proxy_service(&server, proxy_logic, &config);
    server.add_service(background_service(
        "backend pool",
        PoolService(Arc::clone(&pool)),
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        ReloadOnHangup(Arc::clone(&reloader)),
    ));
    if let Some(admin) = &config.admin {
        add_admin(&mut server, admin, &pool, &reloader);
    }
    server.add_service(proxy);
    log::info!(
        "lb listening on {} with {} backend(s)",
        config
            .listeners
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        config.backends.len()
    );
    server.run_forever()
}

/// The proxy service: lb's `ProxyHttp` inside Pingora's `HttpProxy`, inside
/// [`LbApp`], on every listener.
fn proxy_service(
    server: &Server,
    proxy_logic: Proxy,
    config: &Config,
) -> Service<LbApp<HttpProxy<Proxy>>> {
    let proxy_control = proxy_logic.control();
    let mut proxy_app = HttpProxy::new(proxy_logic, Arc::clone(&server.configuration));
    proxy_app.handle_init_modules();
    let app = LbApp::new(
        proxy_app,
        proxy_control,
        config.limits.max_connections,
        config.timeouts.client_header,
        crate::config::drain_window(&server.configuration),
    );
    let mut proxy = Service::new("lb proxy".to_string(), app);
    for addr in &config.listeners {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(client_buffers()));
    }
    proxy
}

/// The admin API and the sampler behind its status page.
fn add_admin(
    server: &mut Server,
    admin: &crate::config::AdminConfig,
    pool: &Arc<Pool>,
    reloader: &Arc<Reloader>,
) {
    let stats = Arc::new(Stats::default());
    let sampler = Sampler {
        pool: Arc::clone(pool),
        stats: Arc::clone(&stats),
    };
    server.add_service(background_service("status page sampler", sampler));
    server.add_service(admin::service(
        admin,
        Arc::clone(pool),
        Arc::clone(reloader),
        stats,
    ));
    log::info!("admin API on http://{}", admin.listen);
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

fn write_pid_file(path: &str) {
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        log::warn!("cannot write the pid file {path}: {e}");
    }
}

fn check_listeners(config: &Config) -> Result<(), StartError> {
    let admin = config.admin.as_ref().map(|a| a.listen);
    for &addr in config.listeners.iter().chain(admin.iter()) {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    Ok(())
}
