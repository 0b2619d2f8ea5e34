//! Helpers for the integration tests: start real `lb` and `be` processes on
//! free loopback ports, wait until they accept, talk HTTP to them, and kill
//! them when the test ends.
#![allow(dead_code)] // each test binary uses its own part of these helpers

pub mod dns;
pub mod h2c;
pub mod keepalive;
pub mod tls;
pub mod upgrade;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to start accepting connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`poll`] waits between two looks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The tests' one polling loop: calls `ready` until it gives a value, every
/// 20 ms for at most `limit` (at least once, and once more at the deadline),
/// and returns that value; None when it gave none in time. Every wait on a
/// condition (a port, a log line, a metric, a file) goes through it, so a
/// test never sleeps for a guessed time.
pub fn poll<T>(limit: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`poll`] for a condition: true as soon as `cond` holds, false when it
/// did not within `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(limit, || cond().then_some(())).is_some()
}

/// [`poll`] for async code (a server or client on a tokio runtime): awaits
/// `ready()` every 20 ms for at most `limit`, without blocking the runtime.
pub async fn poll_async<T, F>(limit: Duration, mut ready: impl FnMut() -> F) -> Option<T>
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A child process killed when dropped.
pub struct Proc {
    child: Child,
    /// What it wrote to stderr, when the test reads it (see [`BeBuilder::start`]).
    output: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd.spawn().expect("start the process");
        Proc {
            child,
            output: Arc::default(),
        }
    }

    /// Waits until its collected stderr contains `text`; false if it does
    /// not within `limit`.
    pub fn wait_for_output(&self, text: &str, limit: Duration) -> bool {
        wait_until(limit, || {
            self.output.lock().expect("the output lock").contains(text)
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "KILL", "INT", "TERM", "HUP").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        if signal == "STOP" {
            // The signal is delivered after kill returns: wait until the
            // kernel shows the process stopped, so that no request sent
            // from now on is served.
            let stat = format!("/proc/{}/stat", self.pid());
            let stopped = wait_until(Duration::from_secs(10), || {
                std::fs::read_to_string(&stat)
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                    .unwrap_or(false)
            });
            assert!(stopped, "process {} did not stop", self.pid());
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        poll(limit, || self.child.try_wait().expect("try_wait"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now, and that no other test process
/// of this run was given.
///
/// The kernel may give the same free port to two test processes that ask
/// at once (nextest runs each test in its own process); Pingora binds its
/// listeners with `SO_REUSEPORT`, so two lb processes on one port would
/// split its connections between them without an error. Each port handed
/// out is claimed with a file named after it holding the claiming
/// process's pid; a claim whose process has exited is free again.
pub fn free_port() -> u16 {
    let claims = std::env::temp_dir().join("lb-test-ports");
    std::fs::create_dir_all(&claims).expect("create the port claims directory");
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if claim(&claims.join(port.to_string())) {
            return port;
        }
    }
}

/// Claims `path` for this process: made anew, or taken over from a process
/// that has exited.
fn claim(path: &Path) -> bool {
    let pid = std::process::id().to_string();
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    match made {
        Ok(mut file) => file.write_all(pid.as_bytes()).is_ok(),
        Err(_) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let alive = holder == pid || Path::new("/proc").join(holder.trim()).exists();
            if alive || holder.trim().is_empty() {
                return false;
            }
            // Its process has exited: take it over, unless another process
            // took it over first.
            std::fs::remove_file(path).is_ok() && claim(path)
        }
    }
}

/// Waits until `port` on 127.0.0.1 accepts a connection.
pub fn wait_for_port(port: u16) {
    wait_for_addr(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
}

/// Waits until `ip`:`port` accepts a connection.
pub fn wait_for_addr(ip: IpAddr, port: u16) {
    assert!(
        wait_until(START_TIMEOUT, || TcpStream::connect((ip, port)).is_ok()),
        "nothing accepted connections on {ip}:{port} within {START_TIMEOUT:?}"
    );
}

/// How to start a `be`: its name and extra arguments. The one place `be`
/// is started from; [`spawn_be`], [`spawn_be_with`] and
/// [`spawn_be_on_any_port`] are its short forms.
pub struct BeBuilder {
    /// None: `be` names itself after its port.
    name: Option<String>,
    /// The loopback address it listens on; 127.0.0.1 unless told.
    bind: IpAddr,
    args: Vec<String>,
}

impl BeBuilder {
    /// A `be` answering `Hello From Backend Server NAME`.
    pub fn named(name: &str) -> Self {
        BeBuilder {
            name: Some(name.to_string()),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            args: Vec::new(),
        }
    }

    /// A `be` named after the port it listens on.
    pub fn named_after_its_port() -> Self {
        BeBuilder {
            name: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            args: Vec::new(),
        }
    }

    /// Adds command-line arguments (e.g. `["--fault", "reset"]`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Listens on `ip` (another loopback address, such as 127.0.0.2: for a
    /// name that resolves to several addresses, or a round-robin order
    /// fixed by address).
    pub fn bind(mut self, ip: Ipv4Addr) -> Self {
        self.bind = IpAddr::V4(ip);
        self
    }

    fn command(&self, port: u16) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_be"));
        command
            .arg("--bind")
            .arg(self.bind.to_string())
            .args(["--quiet", "--port"])
            .arg(port.to_string())
            .args(&self.args)
            .stdout(Stdio::null());
        if let Some(name) = &self.name {
            command.args(["--name", name]);
        }
        command
    }

    /// Starts it on `port` and waits until it accepts: for a test that
    /// stops a backend and starts it again on the same address.
    pub fn start_on(self, port: u16) -> Proc {
        let proc = Proc::spawn(self.command(port).stderr(Stdio::null()));
        wait_for_addr(self.bind, port);
        proc
    }

    /// Starts it on a port the kernel picks (`--port 0`) and returns it
    /// with that port, read from its start-up log line: no other test's
    /// process can take the port between a probe and the bind. What it
    /// logs after that is kept for [`Proc::wait_for_output`].
    pub fn start(self) -> (Proc, u16) {
        use std::io::BufRead;
        let mut proc = Proc::spawn(
            self.command(0)
                .env("RUST_LOG", "info")
                .stderr(Stdio::piped()),
        );
        let stderr = proc.child.stderr.take().expect("be's stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let listening = format!("listening on {}:", self.bind);
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let after = line.split(&listening).nth(1)?;
                after
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "be {:?} {:?} did not say where it listens",
                    self.name, self.args
                )
            });
        // Keep draining its log so be never blocks on a full pipe.
        let output = Arc::clone(&proc.output);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut output = output.lock().expect("the output lock");
                output.push_str(&line);
                output.push('\n');
            }
        });
        (proc, port)
    }
}

/// Starts `be` on `port` named `name`, and waits until it accepts.
pub fn spawn_be(port: u16, name: &str) -> Proc {
    BeBuilder::named(name).start_on(port)
}

/// A running `lb` with its own directory for config, pid file and log.
pub struct Lb {
    pub proc: Proc,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Lb {
    /// The config file this lb was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("lb.yaml")
    }

    /// Everything lb logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lb.log")).unwrap_or_default()
    }

    /// Waits until lb's log contains `text`; false if it does not within `limit`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log().contains(text))
    }

    /// Waits up to 10 s for a line of lb's log that contains `text` (an
    /// access line, say) and returns it; fails the test with the log if
    /// none comes.
    pub fn wait_for_log_line(&self, text: &str) -> String {
        assert!(
            self.wait_for_log(text, Duration::from_secs(10)),
            "no line with {text:?} in lb's log:\n{}",
            self.log()
        );
        let log = self.log();
        log.lines()
            .find(|line| line.contains(text))
            .unwrap_or_default()
            .to_string()
    }

    pub fn get(&self, path: &str) -> Response {
        get(self.port, path)
    }

    /// Waits until lb has started its SIGHUP service. lb installs its
    /// SIGHUP handler in a background service started after the listeners,
    /// so a SIGHUP sent as soon as the port accepts can still find the
    /// default action and kill lb (seen 1 in 20 starts on an idle machine):
    /// a defect the reload tests step around, since they test the reload,
    /// not the start.
    pub fn wait_until_sighup_is_handled(&self) {
        assert!(
            self.wait_for_log(
                "Starting service: BG reload on SIGHUP",
                Duration::from_secs(10)
            ),
            "{}",
            self.log()
        );
    }
}

/// The `server:`, `listeners:` and `health_check:` sections tests start
/// from, as a typed value: a test changes a field and the YAML is written by
/// serde. Short health-check intervals, per-test pid and socket paths.
#[derive(Debug, serde::Serialize)]
pub struct BaseConfig {
    pub server: ServerSection,
    pub listeners: Vec<String>,
    pub health_check: HealthCheckSection,
}

/// The `server:` section of [`BaseConfig`].
#[derive(Debug, serde::Serialize)]
pub struct ServerSection {
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
}

/// The `health_check:` section of [`BaseConfig`].
#[derive(Debug, serde::Serialize)]
pub struct HealthCheckSection {
    pub path: String,
    pub interval: String,
    pub timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse_connection: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_marked_down: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<usize>,
}

impl BaseConfig {
    /// The base for an lb on `port` keeping its files in `dir`.
    pub fn new(dir: &Path, port: u16) -> Self {
        let dir = dir.display();
        BaseConfig {
            server: ServerSection {
                threads: 2,
                pid_file: format!("{dir}/lb.pid"),
                upgrade_sock: format!("{dir}/upgrade.sock"),
                grace_period_seconds: 1,
                graceful_shutdown_timeout_seconds: 1,
            },
            listeners: vec![format!("127.0.0.1:{port}")],
            health_check: HealthCheckSection {
                path: "/health".into(),
                interval: "200ms".into(),
                timeout: "500ms".into(),
                expected_status: None,
                reuse_connection: None,
                on_marked_down: None,
                unhealthy_threshold: None,
            },
        }
    }

    /// The YAML of these sections.
    pub fn yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("serialize the test config")
    }
}

/// [`BaseConfig`] as YAML; `backends` is added by the caller.
pub fn base_config(dir: &Path, port: u16) -> String {
    BaseConfig::new(dir, port).yaml()
}

/// The YAML list of backends on these ports.
pub fn backends_yaml(ports: &[u16]) -> String {
    let mut yaml = String::from("backends:\n");
    for port in ports {
        yaml.push_str(&format!("  - 127.0.0.1:{port}\n"));
    }
    yaml
}

/// A change to the base sections, made before they are written.
type ConfigEdit = Box<dyn FnOnce(&mut BaseConfig)>;

/// How to start an lb: the one place lb is started from; [`spawn_lb`],
/// [`spawn_lb_edited`], [`spawn_lb_listening`] and [`spawn_lb_with_config`]
/// are its short forms. By default: [`BaseConfig`] on a free port, no
/// backends, `RUST_LOG=info`, files and log in a new temporary directory.
pub struct LbBuilder {
    dir: Option<tempfile::TempDir>,
    port: Option<u16>,
    edits: Vec<ConfigEdit>,
    /// (port, flow-style entry); when given, they replace the base listener.
    listeners: Vec<(u16, String)>,
    /// The YAML after the base sections names the listeners itself.
    own_listeners: bool,
    backends: Vec<u16>,
    rest: String,
    rust_log: String,
    env: Vec<(String, String)>,
    /// The whole file, instead of the base sections and the rest.
    config: Option<String>,
}

impl Default for LbBuilder {
    fn default() -> Self {
        LbBuilder {
            dir: None,
            port: None,
            edits: Vec::new(),
            listeners: Vec::new(),
            own_listeners: false,
            backends: Vec::new(),
            rest: String::new(),
            rust_log: "info".into(),
            env: Vec::new(),
            config: None,
        }
    }
}

impl LbBuilder {
    /// Keeps lb's files (config, log, pid) in `dir`, which may hold
    /// certificates the config names.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The port lb is waited on (and the base listener's).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Changes the base sections before they are written.
    pub fn edit(mut self, edit: impl FnOnce(&mut BaseConfig) + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Listeners given as (port, YAML entry in flow style, such as
    /// `{address: 127.0.0.1:8001, h2c: true}`); lb's port is the first's,
    /// and start waits until every one accepts.
    pub fn listeners(mut self, listeners: &[(u16, String)]) -> Self {
        self.listeners = listeners.to_vec();
        self
    }

    /// The rest of the YAML writes `listeners:` itself; lb's port is
    /// [`LbBuilder::port`].
    pub fn own_listeners(mut self) -> Self {
        self.own_listeners = true;
        self
    }

    /// The top-level backends: `be` on these ports.
    pub fn backends(mut self, ports: &[u16]) -> Self {
        self.backends = ports.to_vec();
        self
    }

    /// YAML appended after the base sections and the backends (each call
    /// appends to the last).
    pub fn rest(mut self, rest: &str) -> Self {
        self.rest.push_str(rest);
        self
    }

    /// `RUST_LOG` of the lb process.
    pub fn rust_log(mut self, rust_log: &str) -> Self {
        self.rust_log = rust_log.to_string();
        self
    }

    /// One more environment variable of the lb process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The whole config file, written as given.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_string());
        self
    }

    /// Writes the config, starts lb, and waits until its listeners accept;
    /// an lb that exits first fails the test with its log.
    pub fn start(mut self) -> Lb {
        let dir = self
            .dir
            .take()
            .unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        let port = self
            .listeners
            .first()
            .map(|(port, _)| *port)
            .or(self.port)
            .unwrap_or_else(free_port);
        let config = match self.config.take() {
            Some(config) => config,
            None => self.compose(dir.path(), port),
        };
        let config_path = dir.path().join("lb.yaml");
        std::fs::write(&config_path, &config).expect("write config");
        let log = std::fs::File::create(dir.path().join("lb.log")).expect("create log");
        let proc = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_lb"))
                .arg("-c")
                .arg(&config_path)
                .env("RUST_LOG", &self.rust_log)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log),
        );
        let mut lb = Lb { proc, port, dir };
        lb.wait_until_accepting(&config);
        for (port, _) in &self.listeners {
            wait_for_port(*port);
        }
        lb
    }

    /// The base sections (edited, listeners in place), the backends and
    /// the rest.
    fn compose(&mut self, dir: &Path, port: u16) -> String {
        let mut base = BaseConfig::new(dir, port);
        for edit in self.edits.drain(..) {
            edit(&mut base);
        }
        let mut config = if self.listeners.is_empty() && !self.own_listeners {
            base.yaml()
        } else {
            base.listeners.clear();
            base.yaml().replace("listeners: []\n", "")
        };
        if !self.listeners.is_empty() {
            config.push_str("listeners:\n");
            for (_, entry) in &self.listeners {
                config.push_str(&format!("  - {entry}\n"));
            }
        }
        if !self.backends.is_empty() {
            config.push_str(&backends_yaml(&self.backends));
        }
        config.push_str(&self.rest);
        config
    }
}

/// Starts lb in front of the backends on `ports`, with `extra` YAML appended.
pub fn spawn_lb(ports: &[u16], extra: &str) -> Lb {
    LbBuilder::default().backends(ports).rest(extra).start()
}

/// Starts lb like [`spawn_lb`], with `edit` applied to the base config first
/// (to change a default, such as the health-check interval).
pub fn spawn_lb_edited(
    ports: &[u16],
    edit: impl FnOnce(&mut BaseConfig) + 'static,
    extra: &str,
) -> Lb {
    LbBuilder::default()
        .edit(edit)
        .backends(ports)
        .rest(extra)
        .start()
}

/// Makes every health check fail: `be` answers 200, the checks expect 204.
pub fn expect_204(base: &mut BaseConfig) {
    base.health_check.expected_status = Some(vec![204]);
}

/// Starts lb with the base sections but `listeners`, given as (port, YAML
/// entry in flow style, such as `{address: 127.0.0.1:8001, h2c: true}`), then
/// `rest`; waits until every listener accepts. Its `port` is the first's.
pub fn spawn_lb_listening(listeners: &[(u16, String)], rest: &str) -> Lb {
    LbBuilder::default().listeners(listeners).rest(rest).start()
}

/// Starts lb with `config` written to `dir/lb.yaml`; its log goes to `dir/lb.log`.
pub fn spawn_lb_with_config(dir: tempfile::TempDir, port: u16, config: &str) -> Lb {
    LbBuilder::default()
        .in_dir(dir)
        .port(port)
        .config(config)
        .start()
}

impl Lb {
    /// Waits until lb accepts on its port; an lb that exits first (a config
    /// it rejects) fails the test with its own error rather than a port
    /// that never opens.
    fn wait_until_accepting(&mut self, config: &str) {
        let port = self.port;
        let accepted = wait_until(START_TIMEOUT, || {
            if let Some(status) = self.proc.exited() {
                panic!(
                    "lb exited ({status}) before accepting:\n{}\nconfig:\n{config}",
                    self.log()
                );
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            accepted,
            "lb did not accept connections on port {port} within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Sends `GET path` to 127.0.0.1:`port` on a new connection.
pub fn get(port: u16, path: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends raw request bytes on a new connection and reads the whole response
/// (the request must ask for `Connection: close`, or the server must close).
pub fn request(port: u16, raw: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to lb");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    stream.write_all(raw.as_bytes()).expect("send request");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read response");
    parse_response(&String::from_utf8_lossy(&bytes))
}

/// Splits a whole HTTP/1.1 response into status and body.
pub fn parse_response(text: &str) -> Response {
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Response { status, body }
}

/// Runs `lb` with `args` to completion (at most 20 s) and returns its exit
/// status and stderr.
pub fn run_lb(args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let err_path = dir.path().join("stderr");
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).expect("create stderr file")),
    );
    let status = proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("lb {args:?} did not exit"));
    (
        status,
        std::fs::read_to_string(err_path).unwrap_or_default(),
    )
}

/// Starts `be` like [`spawn_be`], with `extra_args` added to its command line
/// (e.g. `["--fault", "reset"]` or `["--record", path]`).
pub fn spawn_be_with(port: u16, name: &str, extra_args: &[&str]) -> Proc {
    BeBuilder::named(name).args(extra_args).start_on(port)
}

/// How the server ended a raw exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEnd {
    /// It closed the connection (FIN).
    Eof,
    /// It reset the connection (RST).
    Reset,
    /// Nothing new arrived within the read timeout; the connection is open.
    TimedOut,
    /// Reading failed some other way.
    Error(std::io::ErrorKind),
}

/// Everything a server sent back on one connection, and how that ended.
#[derive(Debug)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    pub end: RawEnd,
    /// Set when sending the request failed (the server stopped reading).
    pub write_error: Option<std::io::ErrorKind>,
}

impl RawReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Connects to 127.0.0.1:`port` with read and write timeouts of `timeout`.
pub fn raw_connect(port: u16, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(timeout))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(timeout))
        .expect("set write timeout");
    stream
}

/// Sends `bytes` on a new connection to 127.0.0.1:`port`, then reads until
/// the server closes or resets it, or `timeout` passes with nothing new. A
/// failed send is noted, and whatever the server sent is still read.
pub fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> RawReply {
    let mut stream = raw_connect(port, timeout);
    let write_error = stream.write_all(bytes).err().map(|e| e.kind());
    let (bytes, end) = read_until_end(&mut stream);
    RawReply {
        bytes,
        end,
        write_error,
    }
}

/// Reads from `stream` until EOF, an error, or its read timeout passes with
/// nothing new.
pub fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, RawEnd) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (bytes, RawEnd::Eof),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let end = match e.kind() {
                    std::io::ErrorKind::ConnectionReset => RawEnd::Reset,
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        RawEnd::TimedOut
                    }
                    std::io::ErrorKind::Interrupted => continue,
                    kind => RawEnd::Error(kind),
                };
                return (bytes, end);
            }
        }
    }
}

/// One response read off the wire by [`split_responses`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `bytes` into the whole HTTP/1.x responses it holds, in order, and
/// the number of bytes left over after them (a partial or non-HTTP reply).
/// Bodies are framed by Content-Length, by chunked coding (ended by the last
/// chunk), or by the end of the bytes.
pub fn split_responses(bytes: &[u8]) -> (Vec<RawResponse>, usize) {
    let mut responses = Vec::new();
    let mut rest = bytes;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = parsed.parse(rest) else {
            return (responses, rest.len());
        };
        let status = parsed.code.unwrap_or(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let after_head = &rest[head_len..];
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let body_len = if let Some(length) = find("content-length") {
            match length.parse::<usize>() {
                Ok(n) if n <= after_head.len() => n,
                _ => return (responses, rest.len()),
            }
        } else if find("transfer-encoding").as_deref() == Some("chunked") {
            match after_head.windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(end) => end + 5,
                None => return (responses, rest.len()),
            }
        } else {
            after_head.len()
        };
        responses.push(RawResponse {
            status,
            headers,
            body: after_head[..body_len].to_vec(),
        });
        rest = &after_head[body_len..];
        if rest.is_empty() {
            return (responses, 0);
        }
    }
}

/// Starts `be` on a port the kernel picks with `extra_args`, and returns it
/// with that port ([`BeBuilder::start`]).
pub fn spawn_be_on_any_port(name: &str, extra_args: &[&str]) -> (Proc, u16) {
    BeBuilder::named(name).args(extra_args).start()
}

impl Proc {
    /// The exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

/// What lb's admin listener on `admin_port` serves at `/metrics`.
pub fn scrape(admin_port: u16) -> String {
    let response = get(admin_port, "/metrics");
    assert_eq!(response.status, 200);
    response.body
}

/// Which `be` answered: the name at the end of its hello message.
pub fn served_by(response: &Response) -> String {
    assert_eq!(response.status, 200, "unexpected response: {response:?}");
    response
        .body
        .trim()
        .strip_prefix("Hello From Backend Server ")
        .unwrap_or_else(|| panic!("not a be hello: {:?}", response.body))
        .to_string()
}

/// Polls lb on `port` with `GET path` until `name` serves one; false after
/// `limit`.
pub fn wait_until_served_by(port: u16, path: &str, name: &str, limit: Duration) -> bool {
    wait_until(limit, || served_by(&get(port, path)) == name)
}

/// `n` `be` named after their ports, on ports the kernel picks.
pub fn backends_named_after_their_ports(n: usize) -> (Vec<u16>, Vec<Proc>) {
    (0..n)
        .map(|_| {
            let (proc, port) = BeBuilder::named_after_its_port().start();
            (port, proc)
        })
        .unzip()
}

/// Three `be` named after their ports, on ports the kernel picks.
pub fn three_backends() -> (Vec<u16>, Vec<Proc>) {
    backends_named_after_their_ports(3)
}

/// The values of every sample of metric `name` in Prometheus `text` whose
/// labels include each `(label, value)` of `labels`, whatever the order
/// of the labels.
pub fn metric_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, written) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let has = |(label, value): &(&str, &str)| {
                written
                    .split(',')
                    .any(|pair| pair == format!("{label}=\"{value}\""))
            };
            (metric == name && labels.iter().all(has)).then(|| value.parse().ok())?
        })
        .collect()
}

/// The sum of [`metric_samples`]: 0 when no sample matches.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_samples(text, name, labels).iter().sum()
}

/// Says a test cannot run here because `what` (a tool, root) is missing,
/// for the test to return early. Under `LB_REQUIRE_TOOLS` (set by
/// `.ci/run`, which installs every tool) it fails the test instead: a test
/// that did not run is never reported there as passed.
pub fn skip_without(what: &str) {
    assert!(
        std::env::var_os("LB_REQUIRE_TOOLS").is_none(),
        "cannot run: {what} (LB_REQUIRE_TOOLS is set: .ci/run installs every tool)"
    );
    eprintln!("skipped: {what}");
}

/// True when python3 can import grpcio and its health service (for the gRPC
/// fixtures in `tests/grpc/`); otherwise says the test is skipped.
pub fn python_grpc_installed() -> bool {
    let imports = Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if imports.is_ok_and(|status| status.success()) {
        return true;
    }
    skip_without(
        "python3 with grpcio is not installed \
         (pip install grpcio grpcio-health-checking protobuf)",
    );
    false
}
