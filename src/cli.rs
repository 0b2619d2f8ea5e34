//! lb's command line: Pingora's own flags (`-c`, `-t`, `-d`, `-u`) plus the
//! flags that configure lb without a file, each replacing the file's value.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pingora::server::configuration::Opt;

use crate::config::Overrides;

/// An HTTP load balancer built on Pingora.
#[derive(Debug, Parser)]
#[command(name = "lb", version, about)]
pub struct Cli {
    /// Pingora's flags: -c/--conf FILE, -t/--test, -d/--daemon, -u/--upgrade.
    #[command(flatten)]
    pub pingora: Opt,

    /// Address to accept clients on (repeatable); replaces the file's `listeners`.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Address to accept HTTPS clients on (repeatable), with the `--cert`
    /// and `--key` pairs; with `--listen`, replaces the file's `listeners`.
    #[arg(long = "tls-listen", value_name = "ADDR")]
    pub tls_listen: Vec<String>,

    /// Certificate PEM file of the `--tls-listen` listeners (repeatable;
    /// the first is the default, others are chosen by SNI).
    #[arg(long = "cert", value_name = "FILE")]
    pub cert: Vec<PathBuf>,

    /// Private key PEM file of the `--cert` at the same position.
    #[arg(long = "key", value_name = "FILE")]
    pub key: Vec<PathBuf>,

    /// Backend `host:port` or `http://host:port` (repeatable, or several
    /// separated by commas); replaces the file's `backends`.
    #[arg(
        long = "backend",
        value_name = "ADDR",
        env = "LB_BACKENDS",
        value_delimiter = ','
    )]
    pub backend: Vec<String>,

    /// Path of the health-check request, e.g. `/health`.
    #[arg(long, value_name = "PATH")]
    pub health_check_path: Option<String>,

    /// Time between health checks, e.g. `10s`, `500ms`.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub health_check_interval: Option<Duration>,

    /// Time one health check may take, e.g. `2s`.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub health_check_timeout: Option<Duration>,

    /// Address of the admin API (JSON over HTTP); replaces the file's `admin.listen`.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// The pid file, written at start in every mode (default /tmp/lb.pid);
    /// replaces `server.pid_file`. lb refuses to start while it names a
    /// running lb, except with -u. Give each instance its own.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<String>,

    /// The socket a new `lb -u` waits on for the listeners of the running
    /// one (default /tmp/lb_upgrade.sock); replaces `server.upgrade_sock`.
    #[arg(long, value_name = "PATH")]
    pub upgrade_sock: Option<String>,

    /// Do not reload when the config file or its certificates change
    /// (turns the file's `watch_config` off); SIGHUP and the admin API
    /// still reload.
    #[arg(long)]
    pub no_watch_config: bool,
}

impl Cli {
    /// The config file named with `-c`, if any, made absolute against the
    /// directory lb started in: a daemon changes to `/` after it forks,
    /// and a reload (by signal, the admin API or a change of the file)
    /// must still find the file. Symlinks are kept as they are (a
    /// ConfigMap's `lb.yaml -> ..data/lb.yaml` must be read anew each time).
    pub fn config_path(&self) -> Option<PathBuf> {
        let path = PathBuf::from(self.pingora.conf.as_ref()?);
        Some(std::path::absolute(&path).unwrap_or(path))
    }

    /// The settings given as flags, to lay over the file's.
    pub fn overrides(&self) -> Overrides {
        // Destructured in full so that a new flag does not compile until it is handled here.
        let Cli {
            pingora: _,
            listen,
            tls_listen,
            cert,
            key,
            backend,
            health_check_path,
            health_check_interval,
            health_check_timeout,
            admin_listen,
            pid_file,
            upgrade_sock,
            no_watch_config,
        } = self;
        Overrides {
            listen: listen.clone(),
            tls_listen: tls_listen.clone(),
            certs: cert.clone(),
            keys: key.clone(),
            backends: backend.clone(),
            health_check_path: health_check_path.clone(),
            health_check_interval: *health_check_interval,
            health_check_timeout: *health_check_timeout,
            admin_listen: admin_listen.clone(),
            pid_file: pid_file.clone(),
            upgrade_sock: upgrade_sock.clone(),
            no_watch_config: *no_watch_config,
        }
    }
}
