//! Clients that try to exhaust lb: a flood of idle TLS connections must stay
//! inside the connection limit, leave the plain port and established
//! clients served and the backends healthy; a handshake that never ends is
//! shut down; a storm of slow uploads, closed all at once, leaves lb
//! serving; the open-file limit is raised, and a limit too small for
//! `max_connections` lowers it with a warning.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::tls::{make_cert, path};
use common::*;

/// lb with a plain listener, a TLS listener and an admin listener in front
/// of one backend, with `extra` YAML at the end. Returns lb, the directory
/// of its certificate (kept while lb runs) and the three ports.
fn lb_with_tls(backend: u16, extra: &str) -> (Lb, tempfile::TempDir, [u16; 3]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = make_cert(dir.path(), "site", &["localhost"]);
    let [plain, tls, admin] = [free_port(), free_port(), free_port()];
    let tls_entry = format!(
        "{{address: 127.0.0.1:{tls}, tls: {{certificates: [{{cert: {}, key: {}}}]}}}}",
        path(&cert),
        path(&key)
    );
    let lb = spawn_lb_listening(
        &[(plain, format!("127.0.0.1:{plain}")), (tls, tls_entry)],
        &format!(
            "{}admin: {{listen: 127.0.0.1:{admin}}}\n{extra}",
            backends_yaml(&[backend])
        ),
    );
    wait_for_port(admin);
    (lb, dir, [plain, tls, admin])
}

/// The value of the first metric line that starts with `name` and holds
/// every one of `labels`; None when there is none.
fn metric(admin: u16, name: &str, labels: &[&str]) -> Option<f64> {
    let scraped = get(admin, "/metrics").body;
    scraped
        .lines()
        .filter(|line| line.starts_with(name))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Waits up to 20 s for a metric to reach `at_least`; its last value.
fn wait_for_metric(admin: u16, name: &str, labels: &[&str], at_least: f64) -> f64 {
    let mut value = 0.0;
    wait_until(Duration::from_secs(20), || {
        value = metric(admin, name, labels).unwrap_or(0.0);
        value >= at_least
    });
    value
}

/// The sockets process `pid` holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read lb's descriptors")
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A TLS client that finished its handshake with lb on `port`.
fn tls_client(port: u16) -> openssl::ssl::SslStream<TcpStream> {
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).expect("connector");
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to the TLS port");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    connector
        .build()
        .connect("localhost", tcp)
        .expect("TLS handshake with lb")
}

/// The status of one `GET /` sent on `client` with `Connection: close`.
fn status_over(client: &mut impl ReadWrite) -> u16 {
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut bytes = Vec::new();
    let _ = client.read_to_end(&mut bytes);
    parse_response(&String::from_utf8_lossy(&bytes)).status
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn an_idle_tls_flood_stays_inside_the_connection_limit() {
    let (_be, backend) = spawn_be_on_any_port("one", &[]);
    let (lb, _certs, [plain, tls, admin]) =
        lb_with_tls(backend, "limits: {max_connections: 200}\n");
    // A client that finished its handshake before the flood.
    let mut established = tls_client(tls);

    // 600 connections that never send a byte. The default handshake cap is
    // half the limit: 100 are held, the other 500 are closed at once.
    let flood: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(("127.0.0.1", tls)).expect("connect"))
        .collect();
    let refused = wait_for_metric(
        admin,
        "lb_client_connections_refused_total",
        &["max_tls_handshakes"],
        500.0,
    );
    assert_eq!(refused, 500.0, "{}", lb.log());

    // Held: the 100 handshakes and the established client, and lb's own
    // sockets (three listeners, health checks, the admin scrape, the
    // backend's keep-alive connections).
    let held = sockets_of(lb.proc.pid());
    assert!(held <= 200 + 20, "lb holds {held} sockets");
    assert_eq!(
        metric(admin, "lb_tls_handshakes_in_progress", &[]),
        Some(100.0)
    );
    assert_eq!(metric(admin, "lb_client_connections", &[]), Some(101.0));
    let stats: serde_json::Value =
        serde_json::from_str(&get(admin, "/api/stats").body).expect("/api/stats is JSON");
    assert_eq!(
        stats["connections"],
        serde_json::json!({"open": 101, "tls_handshakes": 100})
    );

    // The plain port, the established client and the backend's health.
    assert_eq!(
        get(plain, "/").status,
        200,
        "the plain port stopped answering"
    );
    assert_eq!(status_over(&mut established), 200);
    assert_eq!(
        metric(admin, "lb_backend_healthy", &[&format!(":{backend}\"")]),
        Some(1.0)
    );
    assert!(!lb.log().contains(" down"), "{}", lb.log());
    drop(flood);
}

/// Waits up to 20 s for a metric to fall to `at_most`; its last value.
fn wait_for_metric_down(admin: u16, name: &str, at_most: f64) -> f64 {
    let mut value = f64::MAX;
    wait_until(Duration::from_secs(20), || {
        value = metric(admin, name, &[]).unwrap_or(f64::MAX);
        value <= at_most
    });
    value
}

#[test]
fn lb_serves_on_after_a_storm_of_slow_uploads() {
    let (_be, backend) = spawn_be_on_any_port("one", &[]);
    let (lb, _certs, [plain, _, admin]) = lb_with_tls(backend, "");
    // 300 uploads that announce 10 MB and send 16 bytes of it: each holds a
    // body buffer in lb and a backend connection (bench/storm.sh is the
    // same with 1,500 held for 20 s, and measures memory).
    let head = b"POST /upload HTTP/1.1\r\nHost: storm\r\nContent-Length: 10000000\r\n\r\n";
    let storm: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut upload = TcpStream::connect(("127.0.0.1", plain)).expect("connect");
            upload.write_all(head).expect("send the head");
            upload.write_all(&[b'x'; 16]).expect("send some body");
            upload
        })
        .collect();
    let open = wait_for_metric(admin, "lb_client_connections", &[], 300.0);
    assert!(
        open >= 300.0,
        "lb holds {open} of the uploads\n{}",
        lb.log()
    );

    // All close at once, mid-body.
    drop(storm);
    let open = wait_for_metric_down(admin, "lb_client_connections", 0.0);
    assert_eq!(open, 0.0, "{}", lb.log());
    for _ in 0..3 {
        assert_eq!(get(plain, "/").status, 200, "{}", lb.log());
    }
    assert!(!lb.log().contains("panicked"), "{}", lb.log());
}

#[test]
fn a_tls_handshake_that_does_not_end_in_time_is_shut_down() {
    let (_be, backend) = spawn_be_on_any_port("one", &[]);
    let (lb, _certs, [_, tls, admin]) = lb_with_tls(backend, "timeouts: {tls_handshake: 1s}\n");
    let mut idle = TcpStream::connect(("127.0.0.1", tls)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("set timeout");
    let mut byte = [0u8; 1];
    // A closed connection reads 0 bytes (or is reset); a timeout would be
    // an error of kind WouldBlock or TimedOut.
    match idle.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the idle handshake was not shut down: {other:?}"),
    }
    let timeouts = wait_for_metric(
        admin,
        "lb_tls_handshakes_total",
        &["outcome=\"timeout\""],
        1.0,
    );
    assert_eq!(timeouts, 1.0, "{}", lb.log());
    // A handshake that ends in time is served.
    assert_eq!(status_over(&mut tls_client(tls)), 200);
}

/// Runs `lb ARGS` from `sh` with the open-file limit `ulimit` applied first.
fn lb_under_ulimit(ulimit: &str, args: &str) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "ulimit {ulimit} && exec {} {args}",
        env!("CARGO_BIN_EXE_lb")
    ));
    command
}

#[test]
fn lb_raises_its_open_file_limit_and_fits_the_connection_limit_under_it() {
    let (_be, backend) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            base_config(dir.path(), port),
            backends_yaml(&[backend])
        ),
    )
    .expect("write the config");
    let config = path(&config);

    // `lb -t` judges the shell's hard limit: 10,000 connections need 20,256.
    let checked = lb_under_ulimit("-n 1024", &format!("-t -c {config}"))
        .output()
        .expect("run lb -t");
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}");
    assert!(
        said.contains("warning: in this shell, limits.max_connections: 10000 needs 20256")
            && said.contains("at most 384"),
        "{said}"
    );

    // Started with a soft limit of 512 under a hard one of 1,024: lb raises
    // the soft limit, lowers its connection limit to fit, and serves.
    let log = std::fs::File::create(dir.path().join("lb.log")).expect("create log");
    let lb = Proc::spawn(
        lb_under_ulimit("-S -n 512 && ulimit -H -n 1024", &format!("-c {config}"))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log),
    );
    wait_for_port(port);
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", lb.pid())).expect("read limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(open_files[3..5], ["1024", "1024"], "{limits}");
    let logged = std::fs::read_to_string(dir.path().join("lb.log")).unwrap_or_default();
    assert!(
        logged.contains("lb takes at most 384 connections"),
        "{logged}"
    );
    assert_eq!(get(port, "/").status, 200);
}
