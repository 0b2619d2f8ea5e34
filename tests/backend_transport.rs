//! Backends over TLS and HTTP/2 (issue 13, part 3): lb connects to real
//! backends on loopback with the configured protocol, SNI, certificate
//! checks and CA, and its health checks use the same transport.
//!
//! Backends: nginx (TLS with HTTP/1.1, TLS with h2 by ALPN, h2c with prior
//! knowledge), answering with the protocol and SNI it saw; `be` for TCP
//! checks; a Python gRPC health server for gRPC checks. Certificates are made
//! at test time with the openssl CLI. A test whose tool is missing says it
//! is skipped.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tls::{make_ca_signed_cert, text, tools_installed, SignedCert};
use common::*;

/// How long a health check may take to notice a change: many intervals.
const NOTICE: Duration = Duration::from_secs(10);

/// How an nginx backend listens.
enum Listen<'a> {
    /// TLS; `http2` offers h2 by ALPN beside HTTP/1.1.
    Tls { certs: &'a SignedCert, http2: bool },
    /// Plaintext HTTP/2 with prior knowledge only; nginx closes each
    /// connection (GOAWAY) after `requests` requests.
    H2c { requests: u32 },
}

/// Starts nginx on a free port, answering every request with the protocol
/// it was asked in and the SNI name (`HTTP/2.0 sni=backend.test`).
fn start_nginx(dir: &Path, listen: Listen<'_>) -> (Proc, u16) {
    let port = free_port();
    let d = dir.display();
    let server = match listen {
        Listen::Tls { certs, http2 } => format!(
            "listen 127.0.0.1:{port} ssl{};\n\
             ssl_certificate {};\n\
             ssl_certificate_key {};\n\
             location / {{ return 200 \"$server_protocol sni=$ssl_server_name\\n\"; }}",
            if http2 { " http2" } else { "" },
            certs.cert.display(),
            certs.key.display()
        ),
        Listen::H2c { requests } => format!(
            "listen 127.0.0.1:{port} http2;\nkeepalive_requests {requests};\n\
             location / {{ return 200 \"$server_protocol\\n\"; }}"
        ),
    };
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx-{port}.pid;\n\
         error_log {d}/nginx-{port}.log;\nevents {{}}\n\
         http {{\n access_log off;\n\
         client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         server {{\n{server}\n}}\n}}\n"
    );
    let conf_path = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let proc = Proc::spawn(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(port);
    (proc, port)
}

/// nginx over TLS (h2 offered by ALPN when `http2`) with a certificate
/// for `san` from a CA of its own, both made in `dir`: the certificates,
/// nginx and its port.
fn tls_nginx(dir: &Path, san: &str, http2: bool) -> (SignedCert, Proc, u16) {
    let certs = make_ca_signed_cert(dir, "backend", san, "01");
    let (nginx, port) = start_nginx(
        dir,
        Listen::Tls {
            certs: &certs,
            http2,
        },
    );
    (certs, nginx, port)
}

/// lb in front of `backend_port`, with `extra` YAML (the transport keys)
/// and an admin API to read the health checks from. Returns lb and the
/// admin port.
fn start_lb(backend: &str, extra: &str) -> (Lb, u16) {
    start_lb_with_check(backend, &["type: http"], extra)
}

/// [`start_lb`] with `check` added to the `health_check:` section.
fn start_lb_with_check(backend: &str, check: &[&str], extra: &str) -> (Lb, u16) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let admin_port = free_port();
    let base = base_config(dir.path(), port).replacen(
        "health_check:\n",
        &format!(
            "health_check:\n{}",
            check
                .iter()
                .map(|line| format!("  {line}\n"))
                .collect::<String>()
        ),
        1,
    );
    let config =
        format!("{base}backends: [{backend}]\nadmin: {{listen: 127.0.0.1:{admin_port}}}\n{extra}");
    let lb = spawn_lb_with_config(dir, port, &config);
    wait_for_port(admin_port);
    (lb, admin_port)
}

/// Waits until the admin API reports a health check of the (only) backend
/// that passed (`passed`) or failed; returns the API's answer.
fn wait_for_check(lb: &Lb, admin_port: u16, passed: bool) -> String {
    let mut body = String::new();
    let checked = wait_until(NOTICE, || {
        body = get(admin_port, "/api/backends").body;
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        answer[0]["last_health_check"]["passed"] == passed
    });
    assert!(
        checked,
        "no health check with passed={passed} within {NOTICE:?}: {body}\nlb log:\n{}",
        lb.log()
    );
    body
}

#[test]
fn a_tls_backend_is_reached_with_the_sni_and_checked_against_the_ca() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (certs, _nginx, be_port) = tls_nginx(dir.path(), "DNS:backend.test", false);
    let (lb, admin) = start_lb(
        &format!("127.0.0.1:{be_port}"),
        &format!(
            "backend_tls: {{sni: backend.test, ca: {}}}\n",
            certs.ca.display()
        ),
    );
    wait_for_check(&lb, admin, true);
    let response = lb.get("/");
    assert_eq!(response.status, 200, "{response:?}\n{}", lb.log());
    assert_eq!(response.body, "HTTP/1.1 sni=backend.test\n");
}

#[test]
fn a_backend_certificate_from_another_ca_fails_requests_and_health_checks() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (_certs, _nginx, be_port) = tls_nginx(dir.path(), "DNS:backend.test", false);
    let other = make_ca_signed_cert(dir.path(), "other", "DNS:backend.test", "02");
    // try_all: the request goes to the unhealthy backend anyway, so the
    // failed handshake itself is what the client sees.
    let (lb, admin) = start_lb(
        &format!("127.0.0.1:{be_port}"),
        &format!(
            "when_all_unhealthy: try_all\nbackend_tls: {{sni: backend.test, ca: {}}}\n",
            other.ca.display()
        ),
    );
    let check = wait_for_check(&lb, admin, false);
    assert!(check.contains("TLS"), "{check}");
    assert!(
        lb.wait_for_log(&format!("backend 127.0.0.1:{be_port} down"), NOTICE),
        "{}",
        lb.log()
    );
    let response = lb.get("/");
    assert_eq!(response.status, 502, "{response:?}\n{}", lb.log());
}

#[test]
fn a_certificate_for_another_name_fails_unless_verify_is_off() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (certs, _nginx, be_port) = tls_nginx(dir.path(), "DNS:backend.test", false);
    let backend = format!("127.0.0.1:{be_port}");
    let (lb, admin) = start_lb(
        &backend,
        &format!(
            "backend_tls: {{sni: elsewhere.test, ca: {}}}\n",
            certs.ca.display()
        ),
    );
    let check = wait_for_check(&lb, admin, false);
    assert!(check.contains("TLS"), "{check}");
    drop(lb);

    // verify: false takes any certificate: here one no CA given to lb signed.
    let (lb, admin) = start_lb(
        &backend,
        "backend_tls: {sni: elsewhere.test, verify: false}\n",
    );
    wait_for_check(&lb, admin, true);
    let response = lb.get("/");
    assert_eq!(response.status, 200, "{response:?}\n{}", lb.log());
    assert_eq!(response.body, "HTTP/1.1 sni=elsewhere.test\n");
    assert!(
        lb.log().contains("backend_tls.verify is false"),
        "no warning at start:\n{}",
        lb.log()
    );
}

#[test]
fn a_reload_replaces_the_ca() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (certs, _nginx, be_port) = tls_nginx(dir.path(), "DNS:backend.test", false);
    let other = make_ca_signed_cert(dir.path(), "other", "DNS:backend.test", "02");
    let (lb, admin) = start_lb(
        &format!("127.0.0.1:{be_port}"),
        &format!(
            "backend_tls: {{sni: backend.test, ca: {}}}\n",
            other.ca.display()
        ),
    );
    wait_for_check(&lb, admin, false);
    let config = std::fs::read_to_string(lb.config_path()).expect("read config");
    let fixed = config.replace(
        &other.ca.display().to_string(),
        &certs.ca.display().to_string(),
    );
    std::fs::write(lb.config_path(), fixed).expect("write config");
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    wait_for_check(&lb, admin, true);
    let response = lb.get("/");
    assert_eq!(response.status, 200, "{response:?}\n{}", lb.log());
}

#[test]
fn an_ip_address_backend_is_checked_as_a_dns_name_as_lb_warns() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (certs, _nginx, be_port) = tls_nginx(dir.path(), "IP:127.0.0.1", false);
    // Without sni, the name checked is "127.0.0.1" as a DNS name: the
    // certificate's IP SAN does not match (Pingora adds the SNI to
    // OpenSSL's host names, never to its IP addresses).
    let (lb, admin) = start_lb(
        &format!("127.0.0.1:{be_port}"),
        &format!("backend_tls: {{ca: {}}}\n", certs.ca.display()),
    );
    let check = wait_for_check(&lb, admin, false);
    assert!(check.contains("certificate verify failed"), "{check}");
    assert!(
        lb.log().contains("backend_tls.sni is not set"),
        "no warning:\n{}",
        lb.log()
    );
}

#[test]
fn h2_over_tls_reaches_the_backend_in_http2() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (certs, _nginx, be_port) = tls_nginx(dir.path(), "DNS:backend.test", true);
    let (lb, admin) = start_lb(
        &format!("127.0.0.1:{be_port}"),
        &format!(
            "backend_protocol: h2\nbackend_tls: {{sni: backend.test, ca: {}}}\n",
            certs.ca.display()
        ),
    );
    wait_for_check(&lb, admin, true);
    for _ in 0..3 {
        let response = lb.get("/");
        assert_eq!(response.status, 200, "{response:?}\n{}", lb.log());
        assert_eq!(response.body, "HTTP/2.0 sni=backend.test\n");
    }
}

#[test]
fn h2c_reaches_the_backend_in_http2_with_prior_knowledge() {
    if !tools_installed(&["nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (_nginx, be_port) = start_nginx(dir.path(), Listen::H2c { requests: 1000 });
    // The backend speaks only HTTP/2: an HTTP/1.1 health check would fail.
    let (lb, admin) = start_lb(&format!("127.0.0.1:{be_port}"), "backend_protocol: h2c\n");
    wait_for_check(&lb, admin, true);
    for _ in 0..3 {
        let response = lb.get("/");
        assert_eq!(response.status, 200, "{response:?}\n{}", lb.log());
        assert_eq!(response.body, "HTTP/2.0\n");
    }
}

#[test]
fn an_http2_backend_closing_connections_gracefully_costs_no_request() {
    if !tools_installed(&["nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // nginx sends GOAWAY after every 25th request: streams lb opened on
    // the connection meanwhile are refused unprocessed, and must be sent
    // again, not answered 502 or counted against the backend.
    let (_nginx, be_port) = start_nginx(dir.path(), Listen::H2c { requests: 25 });
    // More attempts than the default 2: under load a request can be
    // refused by two closing connections in a row.
    let (lb, admin) = start_lb(
        &format!("127.0.0.1:{be_port}"),
        "backend_protocol: h2c\nretry: {attempts: 4}\n",
    );
    wait_for_check(&lb, admin, true);
    let port = lb.port;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..40)
                    .map(|_| get(port, "/").status)
                    .filter(|status| *status != 200)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let failed: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert!(failed.is_empty(), "statuses {failed:?}\n{}", lb.log());
    assert!(!lb.log().contains("in a row"), "{}", lb.log());
}

#[test]
fn a_tcp_health_check_needs_only_a_connection() {
    let (mut be, be_port) = BeBuilder::named("tcp").start();
    // The http check would fail (be answers 200, not 204); the tcp one only connects.
    let (lb, admin) = start_lb_with_check(
        &format!("127.0.0.1:{be_port}"),
        &["type: tcp", "expected_status: [204]"],
        "",
    );
    wait_for_check(&lb, admin, true);
    assert_eq!(lb.get("/").status, 200, "{}", lb.log());
    be.kill();
    let check = wait_for_check(&lb, admin, false);
    assert!(check.contains("ConnectRefused"), "{check}");
    assert!(
        lb.wait_for_log(&format!("backend 127.0.0.1:{be_port} down"), NOTICE),
        "{}",
        lb.log()
    );
}

#[test]
fn a_tcp_health_check_over_tls_does_the_handshake() {
    if !tools_installed(&["openssl", "nginx"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (certs, _nginx, be_port) = tls_nginx(dir.path(), "DNS:backend.test", false);
    let other = make_ca_signed_cert(dir.path(), "other", "DNS:backend.test", "02");
    let backend = format!("127.0.0.1:{be_port}");
    let tls = |ca: &SignedCert| {
        format!(
            "backend_tls: {{sni: backend.test, ca: {}}}\n",
            ca.ca.display()
        )
    };
    let (lb, admin) = start_lb_with_check(&backend, &["type: tcp"], &tls(&certs));
    wait_for_check(&lb, admin, true);
    drop(lb);
    let (lb, admin) = start_lb_with_check(&backend, &["type: tcp"], &tls(&other));
    let check = wait_for_check(&lb, admin, false);
    assert!(check.contains("certificate verify failed"), "{check}");
}

/// Starts the Python gRPC health server on a free port with `status`
/// (`SERVING` or `NOT_SERVING`); `None` (and a "skipped" line) without
/// python3 and grpcio.
fn start_grpc_health(status: &str) -> Option<(Proc, u16)> {
    if !python_grpc_installed() {
        return None;
    }
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/health_server.py");
    let proc = Proc::spawn(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(status)
            .stdout(Stdio::null()),
    );
    wait_for_port(port);
    Some((proc, port))
}

#[test]
fn a_grpc_health_check_passes_only_on_serving() {
    let Some((_serving, serving_port)) = start_grpc_health("SERVING") else {
        return;
    };
    let Some((_not_serving, not_serving_port)) = start_grpc_health("NOT_SERVING") else {
        return;
    };
    let extra = "backend_protocol: h2c\n";
    let (lb, admin) =
        start_lb_with_check(&format!("127.0.0.1:{serving_port}"), &["type: grpc"], extra);
    wait_for_check(&lb, admin, true);
    drop(lb);
    let (lb, admin) = start_lb_with_check(
        &format!("127.0.0.1:{not_serving_port}"),
        &["type: grpc"],
        extra,
    );
    let check = wait_for_check(&lb, admin, false);
    assert!(check.contains("NOT_SERVING"), "{check}");
    assert!(
        lb.wait_for_log(
            &format!("backend 127.0.0.1:{not_serving_port} down: NOT_SERVING"),
            NOTICE
        ),
        "{}",
        lb.log()
    );
}

#[test]
fn a_grpc_call_goes_through_lb_to_an_h2c_backend() {
    let Some((_server, be_port)) = start_grpc_health("SERVING") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    // An h2c listener (gRPC clients speak HTTP/2 with prior knowledge), and
    // gRPC health checks (the server answers nothing else).
    let base = base_config(dir.path(), port)
        .replacen(
            &format!("- 127.0.0.1:{port}\n"),
            &format!("- address: 127.0.0.1:{port}\n  h2c: true\n"),
            1,
        )
        .replacen("health_check:\n", "health_check:\n  type: grpc\n", 1);
    let config = format!("{base}backends: [127.0.0.1:{be_port}]\nbackend_protocol: h2c\n");
    let lb = spawn_lb_with_config(dir, port, &config);
    let output = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, grpc\n\
             from grpc_health.v1 import health_pb2, health_pb2_grpc\n\
             channel = grpc.insecure_channel(sys.argv[1])\n\
             answer = health_pb2_grpc.HealthStub(channel).Check(\n\
             \x20   health_pb2.HealthCheckRequest(), timeout=10)\n\
             print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))\n",
        )
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "SERVING",
        "{stdout}{}\nlb log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        lb.log()
    );
}

#[test]
fn lb_t_shows_the_transport_and_the_health_check_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        "backends: [api.internal:443]\nbackend_protocol: h2\n\
         backend_tls: {verify: false}\nhealth_check: {type: tcp}\n",
    )
    .expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("-t")
        .arg("-c")
        .arg(&config)
        .output()
        .expect("run lb -t");
    let text = text(&output);
    for expected in [
        "h2 over TLS (SNI: each backend's host name, verify off, CA the system roots)",
        "tcp: connect and TLS handshake",
        "backend_tls.verify is false",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn a_ca_file_without_a_certificate_stops_lb_naming_key_and_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca, "hello\n").expect("write ca");
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        format!(
            "backends: [127.0.0.1:1]\nbackend_tls: {{ca: {}}}\n",
            ca.display()
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    let (status, stderr) = run_lb(&["-t", "-c", &config]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("backend_tls.ca"), "{stderr}");
    assert!(stderr.contains("not-a-ca.pem"), "{stderr}");
}
