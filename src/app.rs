//! Starting lb: from the parsed command line to a running Pingora `Server`
//! with the proxy service on every listener and the health-check service.

use std::sync::Arc;

use std::net::SocketAddr;

use pingora::proxy::HttpProxy;
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::listening::Service;
use pingora::services::ServiceHandle;

use crate::admin;
use crate::admin::stats::{Sampler, Stats};
use crate::cli::Cli;
use crate::config::Config;
use crate::connection::LbApp;
use crate::pool::{PoolTasks, PoolsService};
use crate::proxy::{Proxy, ProxyControl};
use crate::reload::{ReloadOnHangup, Reloader};
use crate::runtime::{BuildError, Runtime};
use crate::tls::{ListenerCertificates, TlsListener};
use pingora::services::background::background_service;
use services::{proxy_services, redirect_services};

mod services;

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
    /// A TLS listener's settings could not be made.
    #[error("listeners: cannot set up TLS on {addr}")]
    Tls {
        addr: std::net::SocketAddr,
        #[source]
        source: pingora::BError,
    },
    /// The pools, routes or certificates could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Loads the configuration the command line names and checks it.
pub fn load_config(cli: &Cli) -> Result<Config, StartError> {
    Ok(Config::load(
        cli.config_path().as_deref(),
        &cli.overrides(),
    )?)
}

/// What `lb -t` checks beyond the file: the certificates and the users
/// files it names, read as start-up would read them.
pub fn check(config: &Config) -> Result<ListenerCertificates, StartError> {
    let invalid = |problems| StartError::Config(crate::config::ConfigError::Invalid(problems));
    let none = crate::policy::Policies::default();
    crate::policy::Policies::build(&config.policies, config.cluster.as_ref(), &none)
        .map_err(invalid)?;
    ListenerCertificates::load(&config.listeners).map_err(invalid)
}

/// Runs lb with `config` until it is told to stop. Returns only on a start
/// error; a normal stop exits the process.
pub fn run(cli: Cli, mut config: Config) -> Result<(), StartError> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let privileges = prepare_process(&cli, &mut config)?;
    if !cli.pingora.upgrade {
        // Pingora panics on a listener it cannot bind; find out first and say so
        // plainly. An upgrading process inherits the sockets, so it skips this.
        check_listeners(&config)?;
    }
    let runtime = Runtime::build(&config, &[], &crate::policy::Policies::default())?;
    for warning in &runtime.warnings {
        log::warn!("{warning}");
    }
    let pools = runtime.pools().to_vec();
    let tls_listeners = tls_listeners(&config, &runtime);
    let proxy_logic = Proxy::new(runtime.routing, &config);
    // The admin API and the status page read the pools requests use now,
    // and its connections have the proxy's time limits.
    let control = proxy_logic.control();
    let pool_tasks = Arc::new(PoolTasks::default());
    let reloader = Arc::new(Reloader::new(
        cli.config_path(),
        cli.overrides(),
        &config,
        pools.clone(),
        Arc::clone(&pool_tasks),
        proxy_logic.control(),
        tls_listeners.iter().map(|(_, l)| Arc::clone(l)).collect(),
    ));
    let opt = Opt {
        conf: None, // the file is already read; Pingora would warn that it is ignored
        ..cli.pingora
    };
    // Pingora's Server owns the server section from here: read
    // `server.configuration`, not `config.server`.
    let mut server = Server::new_with_opt_and_conf(opt, std::mem::take(&mut config.server));
    server.bootstrap();
    // After bootstrap, which may fork (daemon mode).
    catch_hangup_early();
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

    let proxies = proxy_services(&server, proxy_logic, &config, &tls_listeners)?;
    let pools_service = PoolsService::new(&pools, pool_tasks);
    add_background_services(&mut server, pools_service, &reloader);
    if let (true, Some(path)) = (config.watch_config, cli.config_path()) {
        server.add_service(background_service(
            "reload on a change of the config",
            crate::reload::ReloadOnChange::new(Arc::clone(&reloader), path, config.files_named()),
        ));
    }
    crate::telemetry::metrics::metrics().config_running(&config.hash);
    let listening = Listening {
        proxies,
        control: &control,
        reloader: &reloader,
    };
    add_listening(&mut server, privileges, &config, listening);
    log_start(&config);
    server.run_forever()
}

/// The services that run beside the listeners: the pools' health checks
/// and discovery (one service, one thread, for every pool), the reload on
/// SIGHUP, the return of free memory and the sweep of rate limits' idle
/// keys.
fn add_background_services(server: &mut Server, pools: PoolsService, reloader: &Arc<Reloader>) {
    server.add_service(background_service("backend pools", pools));
    server.add_service(background_service(
        "reload on SIGHUP",
        ReloadOnHangup(Arc::clone(reloader)),
    ));
    server.add_service(background_service(
        "return free memory",
        crate::process::memory::ReturnFreeMemory,
    ));
    server.add_service(background_service(
        "sweep rate limits",
        crate::policy::limits::SweepRateLimits,
    ));
}

/// What the pid file, the daemon's log and `server.user` need before
/// Pingora's `Server` exists ([`crate::process`]): refuses a pid file that
/// names a running lb (not when upgrading), sets the daemon's log, and
/// takes the user to switch to once the listeners are bound.
fn prepare_process(
    cli: &Cli,
    config: &mut Config,
) -> Result<Option<crate::process::privileges::Target>, StartError> {
    if !cli.pingora.upgrade {
        crate::process::pid_file::refuse_if_taken(&config.server.pid_file)?;
    }
    crate::process::daemon_log(&mut config.server, cli.pingora.daemon);
    Ok(crate::process::privileges::take(&mut config.server)?)
}

/// The listening services' parts that [`run`] built.
struct Listening<'a> {
    proxies: Vec<Service<LbApp<HttpProxy<Proxy>>>>,
    control: &'a ProxyControl,
    reloader: &'a Arc<Reloader>,
}

/// Adds the admin, proxy and redirect services; with a user to switch to,
/// after the service that binds their listeners and switches
/// ([`crate::process::privileges`]), which they wait for.
fn add_listening(
    server: &mut Server,
    privileges: Option<crate::process::privileges::Target>,
    config: &Config,
    listening: Listening<'_>,
) {
    let privileges = privileges.map(|target| {
        server.add_service(crate::process::privileges::DropPrivileges {
            target,
            addrs: listen_addrs(config),
        })
    });
    if let Some(admin) = &config.admin {
        let admin = add_admin(server, config, admin, listening.control, listening.reloader);
        after_privileges(&privileges, &admin);
    }
    for proxy in listening.proxies {
        after_privileges(&privileges, &server.add_service(proxy));
    }
    for redirect in redirect_services(config) {
        after_privileges(&privileges, &server.add_service(redirect));
    }
}

/// Logs the start-up line: the listeners and the backends of every pool.
fn log_start(config: &Config) {
    log::info!(
        "lb listening on {} with {}",
        config
            .listeners
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        backends_by_pool(config)
    );
}

/// `3 backend(s) in 2 pool(s) (api: 2, web: 1)`, for the start-up line:
/// the top-level `backends:` alone said "0 backend(s)" when only named
/// pools had any.
fn backends_by_pool(config: &Config) -> String {
    let total: usize = config.pools.iter().map(|u| u.backends.len()).sum();
    let pools: Vec<String> = config
        .pools
        .iter()
        .map(|u| format!("{}: {}", u.name, u.backends.len()))
        .collect();
    format!(
        "{total} backend(s) in {} pool(s) ({})",
        pools.len(),
        pools.join(", ")
    )
}

/// Each TLS listener's certificates and callbacks, by address.
fn tls_listeners(config: &Config, runtime: &Runtime) -> Vec<(SocketAddr, Arc<TlsListener>)> {
    config
        .listeners
        .iter()
        .filter_map(|l| Some((l.addr, runtime.tls_listener(l.addr)?)))
        .collect()
}

/// The admin API and the sampler behind its status page, both showing the
/// pools of the proxy (`control`) as a reload leaves them.
fn add_admin(
    server: &mut Server,
    config: &Config,
    admin: &crate::config::AdminConfig,
    control: &ProxyControl,
    reloader: &Arc<Reloader>,
) -> ServiceHandle {
    let routing = &control.routing();
    let stats = Arc::new(Stats::default());
    let sampler = Sampler {
        routing: Arc::clone(routing),
        stats: Arc::clone(&stats),
    };
    server.add_service(background_service("status page sampler", sampler));
    let handle = server.add_service(admin::service(
        admin,
        Arc::clone(routing),
        Arc::clone(reloader),
        stats,
        control.clone(),
        config.timeouts.client_header,
    ));
    log::info!("admin API on http://{}", admin.listen);
    handle
}

/// Every address a listening service binds, as the service writes it.
fn listen_addrs(config: &Config) -> Vec<String> {
    let admin = config.admin.as_ref().map(|a| a.listen);
    config
        .listeners
        .iter()
        .map(|l| l.addr)
        .chain(admin)
        .map(|addr| addr.to_string())
        .collect()
}

/// Makes `service` start only once lb runs as `server.user`, when one is
/// set: after its listeners were bound ([`crate::process::privileges`]).
fn after_privileges(privileges: &Option<ServiceHandle>, service: &ServiceHandle) {
    if let Some(privileges) = privileges {
        service.add_dependency(privileges);
    }
}

/// Takes SIGHUP away from its default action (ending the process) now:
/// the service that reloads on it starts after the listeners, and a SIGHUP
/// that came between, from a script that saw the port open, would kill lb.
/// The handler stays installed once made; the reload service listens to it.
fn catch_hangup_early() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(async {
            if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                log::warn!("cannot catch SIGHUP yet: {e}");
            }
        }),
        Err(e) => log::warn!("cannot catch SIGHUP yet: {e}"),
    }
}

fn write_pid_file(path: &str) {
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        log::warn!("cannot write the pid file {path}: {e}");
    }
}

fn check_listeners(config: &Config) -> Result<(), StartError> {
    let admin = config.admin.as_ref().map(|a| a.listen);
    let listeners = config.listeners.iter().map(|l| l.addr);
    for addr in listeners.chain(admin) {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    Ok(())
}
