//! gRPC through lb (issue 13, section 5): real gRPC clients and servers
//! (Python `grpcio`, the fixtures in `tests/grpc/`) on loopback, with lb
//! between them.
//!
//! - Over an `h2c: true` listener to `backend_protocol: h2c` backends, with
//!   `health_check.type: grpc`: unary calls reach both backends; a server
//!   stream delivers every message; a bidirectional stream echoes every
//!   message, also in lock step (each message sent only after the answer to
//!   the one before, so neither direction may be held back); a 1 MiB message
//!   comes back whole; 20 calls at once on one connection spread over both
//!   backends; a failed call's `grpc-status` and `grpc-message` trailers reach
//!   the client; a call's deadline (`grpc-timeout`) reaches the backend, a
//!   call past it ends `DEADLINE_EXCEEDED`, and a slow call within it is
//!   answered, even past `timeouts.upstream_response`; a call the client
//!   cancels is cancelled at the backend too.
//! - The gRPC health check keeps a backend whose health service says
//!   `NOT_SERVING` out of rotation.
//! - Over a TLS listener with HTTP/2 (ALPN h2) to the same h2c backends, and
//!   over h2c to backends that speak TLS (`backend_protocol: h2`).
//!
//! Two first tests check the fixtures without lb, so that a failure through
//! lb is lb's. Certificates are made at test time with the `openssl` CLI
//! (`common::tls::make_cert`). Without `python3` and its `grpcio` and
//! `grpcio-health-checking` packages (or the `openssl` CLI, for the TLS
//! tests) a test says it is skipped and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use common::*;

/// How long lb may take before it routes calls to its backends.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Tools and fixtures

/// The directory of `server.py` and `client.py`.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc")
}

/// A self-signed ECDSA P-256 certificate for `localhost` (SAN DNS:localhost),
/// made in its own temporary directory.
struct Cert {
    dir: tempfile::TempDir,
}

impl Cert {
    fn localhost() -> Cert {
        let dir = tempfile::tempdir().expect("temp dir");
        tls::make_cert(dir.path(), "localhost", &["localhost"]);
        Cert { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("localhost.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("localhost.key")
    }
}

/// A running `server.py`: service `lbtest.Echo` answering as `name`.
struct GrpcBackend {
    _proc: Proc,
    /// Holds `stdout`, what it printed.
    dir: tempfile::TempDir,
    port: u16,
    name: String,
}

/// How to start a `server.py`.
struct GrpcBackendBuilder {
    name: String,
    args: Vec<String>,
}

impl GrpcBackendBuilder {
    fn named(name: &str) -> Self {
        GrpcBackendBuilder {
            name: name.to_string(),
            args: Vec::new(),
        }
    }

    /// Its health service says NOT_SERVING.
    fn not_serving(mut self) -> Self {
        self.args.extend(["--health".into(), "NOT_SERVING".into()]);
        self
    }

    /// It serves TLS with `cert` instead of h2c.
    fn tls(mut self, cert: &Cert) -> Self {
        for (flag, path) in [("--cert", cert.cert()), ("--key", cert.key())] {
            self.args.push(flag.into());
            self.args.push(path.display().to_string());
        }
        self
    }

    /// Starts it on a port the kernel picks, read from the `ready PORT` line
    /// it writes to a file in its own directory.
    fn start(self) -> GrpcBackend {
        let dir = tempfile::tempdir().expect("temp dir");
        let out_path = dir.path().join("stdout");
        let out = std::fs::File::create(&out_path).expect("create server.py's stdout");
        let mut proc = Proc::spawn(
            Command::new("python3")
                .arg(fixtures().join("server.py"))
                .args(["--port", "0", "--name", &self.name])
                .args(&self.args)
                .stdout(out)
                .stderr(Stdio::inherit()),
        );
        let port = poll(START_TIMEOUT, || {
            let said = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(port) = ready_port(&said) {
                return Some(port);
            }
            if let Some(status) = proc.exited() {
                panic!("server.py {} exited ({status}) before ready", self.name);
            }
            None
        })
        .unwrap_or_else(|| {
            panic!(
                "server.py {} was not ready within {START_TIMEOUT:?}",
                self.name
            )
        });
        GrpcBackend {
            _proc: proc,
            dir,
            port,
            name: self.name,
        }
    }
}

impl GrpcBackend {
    /// Waits until the backend has printed `text` on stdout; false if it
    /// does not within `limit`.
    fn wait_for_output(&self, text: &str, limit: Duration) -> bool {
        let path = self.dir.path().join("stdout");
        wait_until(limit, || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains(text)
        })
    }
}

/// The port in a whole `ready PORT` line.
fn ready_port(stdout: &str) -> Option<u16> {
    let line = stdout.lines().next().filter(|_| stdout.contains('\n'))?;
    line.strip_prefix("ready ")?.trim().parse().ok()
}

/// Two h2c backends named `a` and `b`.
fn two_backends() -> Vec<GrpcBackend> {
    ["a", "b"]
        .iter()
        .map(|name| GrpcBackendBuilder::named(name).start())
        .collect()
}

// ---------------------------------------------------------------------------
// The client

/// What `client.py` printed for one call.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    /// The status code's name: "OK", "INVALID_ARGUMENT", ...
    code: String,
    details: String,
    messages: Vec<String>,
}

/// Where and how `client.py` connects.
enum Target<'a> {
    /// h2c to 127.0.0.1:port.
    Plain(u16),
    /// TLS to 127.0.0.1:port, trusting `cert`, verifying the name localhost.
    Tls(u16, &'a Cert),
}

/// Runs `client.py` with `args` (a subcommand and its arguments) against
/// `target`. The client's own deadline (10 s unless `--timeout`) bounds the
/// call, and `timeout` (30 s) the process.
fn call(target: &Target, args: &[&str]) -> Outcome {
    let client = fixtures().join("client.py");
    let mut command = vec![tls::path(&client).to_string()];
    match target {
        Target::Plain(port) => command.push(format!("127.0.0.1:{port}")),
        Target::Tls(port, cert) => {
            command.push(format!("127.0.0.1:{port}"));
            command.extend(["--tls", "--server-name", "localhost", "--ca"].map(String::from));
            command.push(tls::path(&cert.cert()).to_string());
        }
    }
    command.extend(args.iter().map(|a| a.to_string()));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let output = tls::run("python3", &command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client.py {args:?} printed no result ({e}): {stdout:?}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let text = |key: &str| json[key].as_str().unwrap_or_default().to_string();
    let outcome = Outcome {
        ok: json["ok"].as_bool() == Some(true),
        code: text("code"),
        details: text("details"),
        messages: json["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| m.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default(),
    };
    assert_eq!(
        outcome.ok,
        output.status.success(),
        "client.py's exit status disagrees with its result: {outcome:?}"
    );
    outcome
}

/// Makes a unary call that must succeed; returns the backend that answered.
fn unary_backend(target: &Target) -> String {
    let outcome = call(target, &["unary", "ping"]);
    assert!(outcome.ok, "unary call failed: {outcome:?}");
    let reply = &outcome.messages[0];
    let (name, echoed) = reply
        .split_once(':')
        .unwrap_or_else(|| panic!("not an echo: {reply:?}"));
    assert_eq!(echoed, "ping", "the request bytes came back changed");
    name.to_string()
}

/// Makes unary calls until every one of `names` has answered one (within
/// [`ROUTE_TIMEOUT`]); returns every backend that answered, in order. Also
/// waits out lb's first health checks.
fn until_all_answer(target: &Target, names: &[&str], lb: &Lb) -> Vec<String> {
    let mut answered = Vec::new();
    let mut last_failure = None;
    let all = wait_until(ROUTE_TIMEOUT, || {
        let outcome = call(target, &["unary", "ping"]);
        if outcome.ok {
            answered.push(unary_backend_of(&outcome));
        } else {
            last_failure = Some(outcome);
        }
        names.iter().all(|name| answered.iter().any(|a| a == name))
    });
    assert!(
        all,
        "not every backend of {names:?} answered within {ROUTE_TIMEOUT:?}: \
         answers {answered:?}, last failure {last_failure:?}\nlb's log:\n{}",
        lb.log()
    );
    answered
}

/// The backend name in a successful unary outcome.
fn unary_backend_of(outcome: &Outcome) -> String {
    outcome.messages[0]
        .split_once(':')
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| panic!("not an echo: {outcome:?}"))
}

// ---------------------------------------------------------------------------
// lb

/// lb's config: the base config (server and health-check sections) with
/// `listener` as its one listener, `backends` as its backends, the gRPC
/// health check, and the keys of `extra` (YAML) merged over it.
fn lb_config(dir: &Path, listener: Value, backends: &[&GrpcBackend], extra: &str) -> String {
    let base = serde_yaml_ng::to_value(BaseConfig::new(dir, 0)).expect("base config");
    let Value::Mapping(mut config) = base else {
        panic!("the base config is not a mapping")
    };
    config.insert("listeners".into(), Value::Sequence(vec![listener]));
    let addresses = backends
        .iter()
        .map(|be| Value::from(format!("127.0.0.1:{}", be.port)))
        .collect();
    config.insert("backends".into(), Value::Sequence(addresses));
    // A generous probe timeout: Python servers on a loaded CI machine can be
    // slow to answer, and a flapping backend would make the checks flaky.
    merge(
        &mut config,
        "health_check:\n  type: grpc\n  interval: 300ms\n  timeout: 2s\n",
    );
    merge(&mut config, extra);
    serde_yaml_ng::to_string(&config).expect("serialize lb's config")
}

/// Merges the keys of `yaml` into `config`, one level deep into mappings.
fn merge(config: &mut Mapping, yaml: &str) {
    let Ok(Value::Mapping(extra)) = serde_yaml_ng::from_str::<Value>(yaml) else {
        return;
    };
    for (key, value) in extra {
        match (config.get_mut(&key), value) {
            (Some(Value::Mapping(inner)), Value::Mapping(value)) => inner.extend(value),
            (_, value) => {
                config.insert(key, value);
            }
        }
    }
}

/// An h2c listener on 127.0.0.1:`port`.
fn h2c_listener(port: u16) -> Value {
    serde_yaml_ng::from_str(&format!("address: 127.0.0.1:{port}\nh2c: true\n")).unwrap()
}

/// A TLS listener with HTTP/2 on 127.0.0.1:`port` serving `cert`.
fn tls_listener(port: u16, cert: &Cert) -> Value {
    serde_yaml_ng::from_str(&format!(
        "address: 127.0.0.1:{port}\n\
         tls:\n  certificates:\n    - cert: {}\n      key: {}\n\
         http2: true\n",
        cert.cert().display(),
        cert.key().display()
    ))
    .unwrap()
}

/// Starts lb with `listener(port)` in front of `backends`, with `extra` YAML.
fn start_lb(listener: impl FnOnce(u16) -> Value, backends: &[&GrpcBackend], extra: &str) -> Lb {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = lb_config(dir.path(), listener(port), backends, extra);
    spawn_lb_with_config(dir, port, &config)
}

/// Two h2c backends `a` and `b` behind an lb with an h2c listener, with
/// `extra` YAML.
fn h2c_lb(extra: &str) -> (Vec<GrpcBackend>, Lb) {
    let backends = two_backends();
    let lb = start_lb(
        h2c_listener,
        &backends.iter().collect::<Vec<_>>(),
        &format!("backend_protocol: h2c\n{extra}"),
    );
    (backends, lb)
}

// ---------------------------------------------------------------------------
// The checks every transport gets

/// Unary calls: over 6 calls after both answered, both answer again, and
/// each echoes the request.
fn check_unary_reaches_both(target: &Target) {
    let mut names: Vec<String> = (0..6).map(|_| unary_backend(target)).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["a", "b"], "round robin should use both backends");
}

/// A server stream of 50 messages arrives whole and in order.
fn check_server_stream(target: &Target) {
    let outcome = call(target, &["server-stream", "50"]);
    assert!(outcome.ok, "server stream failed: {outcome:?}");
    assert_eq!(outcome.messages.len(), 50, "{outcome:?}");
    let name = unary_backend_of(&outcome);
    let expected: Vec<String> = (0..50).map(|i| format!("{name}:{i}")).collect();
    assert_eq!(outcome.messages, expected);
}

/// A bidirectional stream of 20 messages is echoed whole and in order.
fn check_bidi(target: &Target) {
    let outcome = call(target, &["bidi", "20"]);
    assert!(outcome.ok, "bidi stream failed: {outcome:?}");
    let name = unary_backend_of(&outcome);
    let expected: Vec<String> = (0..20).map(|i| format!("{name}:m{i}")).collect();
    assert_eq!(outcome.messages, expected);
}

/// A bidirectional stream in lock step: each message goes out only once the
/// answer to the one before came back, which stalls until the deadline if lb
/// holds back either direction until its stream ends.
fn check_pingpong(target: &Target) {
    let outcome = call(target, &["pingpong", "10", "--timeout", "10"]);
    assert!(outcome.ok, "ping-pong stream failed: {outcome:?}");
    let name = unary_backend_of(&outcome);
    let expected: Vec<String> = (0..10).map(|i| format!("{name}:m{i}")).collect();
    assert_eq!(outcome.messages, expected);
}

/// A 1 MiB request comes back whole and unchanged (HTTP/2 flow control both
/// ways through lb).
fn check_big_message(target: &Target) {
    let outcome = call(target, &["big", "1048576"]);
    assert!(outcome.ok, "a 1 MiB call failed: {outcome:?}");
    assert_eq!(outcome.messages[1..], ["1048576", "intact"], "{outcome:?}");
}

/// 20 calls at once on one client connection all succeed, each with its own
/// answer, and lb spreads them over both backends (balancing is per call,
/// not per connection).
fn check_concurrent_calls(target: &Target) {
    let outcome = call(target, &["concurrent", "20"]);
    assert!(outcome.ok, "concurrent calls failed: {outcome:?}");
    assert_eq!(outcome.messages.len(), 20, "{outcome:?}");
    let mut names = Vec::new();
    for (i, reply) in outcome.messages.iter().enumerate() {
        let (name, echoed) = reply.split_once(':').expect("an echo");
        assert_eq!(echoed, format!("c{i}"), "answers crossed: {outcome:?}");
        names.push(name.to_string());
    }
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        ["a", "b"],
        "one connection's calls should use both backends"
    );
}

/// The backend's INVALID_ARGUMENT "bad input" reaches the client as sent
/// (the grpc-status and grpc-message trailers pass through lb).
fn check_fail_status(target: &Target) {
    let outcome = call(target, &["fail"]);
    assert!(!outcome.ok, "Fail succeeded: {outcome:?}");
    assert_eq!(outcome.code, "INVALID_ARGUMENT", "{outcome:?}");
    assert_eq!(outcome.details, "bad input", "{outcome:?}");
}

/// Every check above through lb on `target`, once both backends `a` and
/// `b` answer: what each transport gets.
fn check_every_kind_of_call(target: &Target, lb: &Lb) {
    until_all_answer(target, &["a", "b"], lb);
    check_unary_reaches_both(target);
    check_server_stream(target);
    check_bidi(target);
    check_pingpong(target);
    check_big_message(target);
    check_concurrent_calls(target);
    check_fail_status(target);
    // lb passed the failure on and stays usable.
    unary_backend(target);
}

// ---------------------------------------------------------------------------
// Without lb: the fixtures themselves, so a failure through lb is lb's

#[test]
fn the_fixtures_work_without_lb() {
    if !python_grpc_installed() {
        return;
    }
    let be = GrpcBackendBuilder::named("a").start();
    let target = Target::Plain(be.port);
    assert_eq!(unary_backend(&target), "a");
    check_server_stream(&target);
    check_bidi(&target);
    check_pingpong(&target);
    check_big_message(&target);
    check_fail_status(&target);
    let late = call(&target, &["slow", "3000", "--timeout", "0.3"]);
    assert_eq!(late.code, "DEADLINE_EXCEEDED", "{late:?}");
    let health = call(&target, &["health"]);
    assert_eq!(health.messages, ["SERVING"], "{health:?}");
    let sick = GrpcBackendBuilder::named("sick").not_serving().start();
    let health = call(&Target::Plain(sick.port), &["health"]);
    assert_eq!(health.messages, ["NOT_SERVING"], "{health:?}");
}

#[test]
fn the_tls_fixtures_work_without_lb() {
    if !python_grpc_installed() || !tls::tools_installed(&["openssl"]) {
        return;
    }
    let cert = Cert::localhost();
    let be = GrpcBackendBuilder::named("t").tls(&cert).start();
    let target = Target::Tls(be.port, &cert);
    assert_eq!(unary_backend(&target), "t");
    check_bidi(&target);
}

// ---------------------------------------------------------------------------
// Over h2c

#[test]
fn every_kind_of_call_goes_over_h2c_to_h2c_backends() {
    if !python_grpc_installed() {
        return;
    }
    let (_backends, lb) = h2c_lb("");
    check_every_kind_of_call(&Target::Plain(lb.port), &lb);
}

#[test]
fn lbs_own_errors_reach_a_grpc_client_as_grpc_statuses_with_lbs_reason() {
    if !python_grpc_installed() {
        return;
    }
    // Nothing listens on port 1: the pool has no healthy backend. Calls to
    // the test service go to it; any other path matches no route.
    let lb = start_lb(
        h2c_listener,
        &[],
        "backend_protocol: h2c\nbackends: [127.0.0.1:1]\n\
         routes:\n  - {match: {path_prefix: /lbtest.Echo/}, upstream: default}\n",
    );
    assert!(
        lb.wait_for_log("backend 127.0.0.1:1 down", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    let target = Target::Plain(lb.port);
    // A bare HTTP 503 would reach the client as UNAVAILABLE "Received http2
    // header with status: 503"; lb's own status names its reason.
    let none_healthy = call(&target, &["unary", "x"]);
    assert_eq!(none_healthy.code, "UNAVAILABLE", "{none_healthy:?}");
    assert_eq!(
        none_healthy.details, "503 Service Unavailable: no healthy backend",
        "{none_healthy:?}"
    );
    // The access log still says what lb answered.
    assert!(
        lb.wait_for_log("HTTP/2\" 503", Duration::from_secs(5)),
        "{}",
        lb.log()
    );
    let no_route = call(&target, &["health"]);
    assert_eq!(no_route.code, "UNIMPLEMENTED", "{no_route:?}");
    assert_eq!(no_route.details, "404 Not Found", "{no_route:?}");
}

#[test]
fn a_call_past_its_deadline_ends_deadline_exceeded() {
    if !python_grpc_installed() {
        return;
    }
    let (_backends, lb) = h2c_lb("");
    let target = Target::Plain(lb.port);
    until_all_answer(&target, &["a", "b"], &lb);
    // The call's grpc-timeout reaches the backend: it sees a deadline
    // within the client's 5 s.
    let deadline = call(&target, &["deadline", "--timeout", "5"]);
    assert!(deadline.ok, "Deadline failed: {deadline:?}");
    let left: f64 = deadline.messages[0]
        .split_once(':')
        .and_then(|(_, left)| left.parse().ok())
        .unwrap_or_else(|| panic!("the backend saw no deadline: {deadline:?}"));
    assert!(left > 0.0 && left <= 5.0, "{deadline:?}");
    // The backend sleeps 3 s; the call's grpc-timeout is 300 ms.
    let late = call(&target, &["slow", "3000", "--timeout", "0.3"]);
    assert!(!late.ok, "a call past its deadline succeeded: {late:?}");
    assert_eq!(late.code, "DEADLINE_EXCEEDED", "{late:?}");
    // A slow call within its deadline is answered, not cut by lb.
    let in_time = call(&target, &["slow", "1500", "--timeout", "10"]);
    assert!(
        in_time.ok,
        "a slow call within its deadline failed: {in_time:?}"
    );
    assert!(in_time.messages[0].ends_with(":slept"), "{in_time:?}");
}

#[test]
fn a_call_may_outwait_upstream_response_within_its_grpc_timeout() {
    if !python_grpc_installed() {
        return;
    }
    let (_backends, lb) = h2c_lb("timeouts:\n  upstream_response: 1s\n");
    let target = Target::Plain(lb.port);
    until_all_answer(&target, &["a", "b"], &lb);
    // The backend answers after 2.5 s, past upstream_response (1 s) but
    // within the call's own deadline (grpc-timeout 10 s), which lb follows.
    let outcome = call(&target, &["slow", "2500", "--timeout", "10"]);
    assert!(
        outcome.ok,
        "a call within its grpc-timeout was cut: {outcome:?}\nlb's log:\n{}",
        lb.log()
    );
}

#[test]
fn a_call_the_client_cancels_is_cancelled_at_the_backend() {
    if !python_grpc_installed() {
        return;
    }
    let be = GrpcBackendBuilder::named("a").start();
    let lb = start_lb(h2c_listener, &[&be], "backend_protocol: h2c\n");
    let target = Target::Plain(lb.port);
    until_all_answer(&target, &["a"], &lb);
    // No deadline: the backend learns of the cancel only from lb (a reset
    // stream or a closed connection).
    let outcome = call(&target, &["cancel", "2000"]);
    assert_eq!(outcome.code, "CANCELLED", "{outcome:?}");
    assert!(
        be.wait_for_output("cancelled Slow 2000", Duration::from_secs(10)),
        "lb did not pass the client's cancel on to the backend\nlb's log:\n{}",
        lb.log()
    );
}

#[test]
fn the_grpc_health_check_keeps_a_not_serving_backend_out() {
    if !python_grpc_installed() {
        return;
    }
    let serving = two_backends();
    let sick = GrpcBackendBuilder::named("sick").not_serving().start();
    let lb = start_lb(
        h2c_listener,
        &[&serving[0], &serving[1], &sick],
        "backend_protocol: h2c\n",
    );
    let down = format!("backend 127.0.0.1:{} down", sick.port);
    assert!(
        lb.wait_for_log(&down, ROUTE_TIMEOUT),
        "lb did not mark the NOT_SERVING backend down:\n{}",
        lb.log()
    );
    let target = Target::Plain(lb.port);
    until_all_answer(&target, &["a", "b"], &lb);
    let names: Vec<String> = (0..9).map(|_| unary_backend(&target)).collect();
    assert!(
        !names.iter().any(|name| name == &sick.name),
        "the NOT_SERVING backend got calls: {names:?}"
    );
}

// ---------------------------------------------------------------------------
// Over TLS

#[test]
fn grpc_over_a_tls_listener_with_http2_to_h2c_backends() {
    if !python_grpc_installed() || !tls::tools_installed(&["openssl"]) {
        return;
    }
    let cert = Cert::localhost();
    let backends = two_backends();
    let lb = start_lb(
        |port| tls_listener(port, &cert),
        &backends.iter().collect::<Vec<_>>(),
        "backend_protocol: h2c\n",
    );
    check_every_kind_of_call(&Target::Tls(lb.port, &cert), &lb);
}

#[test]
fn grpc_over_h2c_to_tls_backends_over_h2() {
    if !python_grpc_installed() || !tls::tools_installed(&["openssl"]) {
        return;
    }
    let cert = Cert::localhost();
    let backends: Vec<GrpcBackend> = ["a", "b"]
        .iter()
        .map(|name| GrpcBackendBuilder::named(name).tls(&cert).start())
        .collect();
    let extra = format!(
        "backend_protocol: h2\nbackend_tls:\n  sni: localhost\n  ca: {}\n",
        cert.cert().display()
    );
    let lb = start_lb(h2c_listener, &backends.iter().collect::<Vec<_>>(), &extra);
    check_every_kind_of_call(&Target::Plain(lb.port), &lb);
}
