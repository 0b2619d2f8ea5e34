//! What lb says on the wire and in its log when clients misbehave: its own
//! error pages rather than Pingora's, one documented limit on request
//! headers, HTTP/2's answer to a bad preface, and no ERROR line that a
//! client can cause.

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::h2c::{connect_h2, exchange};
use common::tls::{make_cert, path};
use common::*;
use http::{Request, StatusCode};

/// Longest wait for lb to answer or close.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts lb with `config` (listeners, backends and the rest after the
/// base `server:` and `health_check:` sections) and `RUST_LOG` set to
/// `rust_log`; waits until `port` accepts.
fn spawn_lb_logging(rust_log: &str, port: u16, rest: &str) -> Lb {
    LbBuilder::default()
        .port(port)
        .own_listeners()
        .rest(rest)
        .rust_log(rust_log)
        .start()
}

/// Waits until lb's log holds `count` lines with `text`, and returns the
/// log; fails the test if it does not within [`TIMEOUT`].
fn wait_for_lines(lb: &Lb, text: &str, count: usize) -> String {
    poll(TIMEOUT, || {
        let log = lb.log();
        (log.matches(text).count() >= count).then_some(log)
    })
    .unwrap_or_else(|| panic!("not {count} lines with {text:?}:\n{}", lb.log()))
}

/// The lines of `log` at ERROR.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" ERROR ")).collect()
}

#[test]
fn tls_handshakes_clients_break_are_logged_at_debug_not_error() {
    // openssl is required (.ci/run installs it): without it this fails, never passes.
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = make_cert(certs.path(), "a.test", &["a.test"]);
    let port = free_port();
    let lb = spawn_lb_logging(
        "info,pingora_core::services::listening=debug",
        port,
        &format!(
            "listeners:\n  - {{address: 127.0.0.1:{port}, tls: {{certificates: [{{cert: {}, key: {}}}]}}}}\n{}",
            path(&cert),
            path(&key),
            backends_yaml(&[be_port])
        ),
    );

    // Plain HTTP, then garbage, on the TLS port: each a failed handshake.
    let plain = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", TIMEOUT);
    assert!(
        plain.text().starts_with("HTTP/1.1 400"),
        "{:?}",
        plain.text()
    );
    raw_exchange(port, b"\x00\x01 not TLS\r\n\r\n", TIMEOUT);

    let lowered = "DEBUG pingora_core::services::listening] Downstream handshake error from";
    let log = wait_for_lines(&lb, lowered, 2);
    assert!(error_lines(&log).is_empty(), "{log}");
}

#[test]
fn malformed_heads_get_lbs_own_400_not_pingoras() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = spawn_lb(&[be_port], "");
    for head in [
        &b"GET / HTTP/9.9 foo\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ] {
        let reply = raw_exchange(lb.port, head, TIMEOUT);
        let (responses, rest) = split_responses(&reply.bytes);
        assert_eq!((responses.len(), rest), (1, 0), "{:?}", reply.text());
        let response = &responses[0];
        assert_eq!(response.status, 400, "{:?}", reply.text());
        assert_eq!(response.header("server"), None, "{:?}", reply.text());
        assert_eq!(
            String::from_utf8_lossy(&response.body),
            "400 Bad Request\n",
            "{:?}",
            reply.text()
        );
        assert!(matches!(reply.end, RawEnd::Eof | RawEnd::Reset));
    }
    // lb is no forward proxy: CONNECT gets lb's 405 (Pingora's had no body).
    let connect = raw_exchange(
        lb.port,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        TIMEOUT,
    );
    let (responses, _) = split_responses(&connect.bytes);
    assert_eq!(responses.len(), 1, "{:?}", connect.text());
    assert_eq!(responses[0].status, 405, "{:?}", connect.text());
    assert_eq!(responses[0].header("server"), None, "{:?}", connect.text());
    // A space in the target is still escaped and forwarded, as Pingora does.
    let repaired = request(
        lb.port,
        "GET /a b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(repaired.status, 200, "{}", repaired.body);
    assert!(error_lines(&lb.log()).is_empty(), "{}", lb.log());
}

/// A GET with `fields` header fields (Host and `fields - 1` others).
fn get_with_fields(fields: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 2..fields {
        head.push_str(&format!("X-F{i}: v\r\n"));
    }
    (head + "\r\n").into_bytes()
}

/// The status and body of lb's answer to `head`, which asks to close.
fn answer(port: u16, head: &[u8]) -> (u16, String) {
    let reply = raw_exchange(port, head, TIMEOUT);
    let (responses, _) = split_responses(&reply.bytes);
    let response = responses
        .first()
        .unwrap_or_else(|| panic!("no response: {:?}", reply.text()));
    assert_eq!(response.header("server"), None, "{:?}", reply.text());
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

const TOO_MANY: &str = "431 Request Header Fields Too Large\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_max_request_headers_get_431_on_http1_and_http2() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = common::h2c::spawn_lb_h2c(&backends_yaml(&[be_port]));
    let port = lb.port;
    let http1 = tokio::task::spawn_blocking(move || {
        [100, 101, 300].map(|n| (n, answer(port, &get_with_fields(n))))
    })
    .await
    .expect("the HTTP/1 client");
    assert_eq!(http1[0].1 .0, 200, "100 fields are the default limit");
    assert_eq!(http1[1].1, (431, TOO_MANY.to_string()), "101 fields");
    assert_eq!(http1[2].1, (431, TOO_MANY.to_string()), "300 fields");

    let client = connect_h2(lb.port).await;
    for (fields, status) in [
        (100, StatusCode::OK),
        (101, StatusCode::from_u16(431).expect("431")),
    ] {
        let mut request = Request::builder().uri("http://lb.test/");
        // Pseudo-header fields (`:authority`...) are not counted.
        for i in 0..fields {
            request = request.header(format!("x-f{i}"), "v");
        }
        let request = request.body(()).expect("a valid request");
        let (got, body) = exchange(&client, request, None::<Bytes>).await;
        assert_eq!(got, status, "{fields} fields over HTTP/2: {body}");
        if fields > 100 {
            assert_eq!(body, TOO_MANY);
        }
    }
}

#[test]
fn max_request_headers_is_configured_and_checked() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = spawn_lb(&[be_port], "limits: {max_request_headers: 3}\n");
    assert_eq!(answer(lb.port, &get_with_fields(3)).0, 200);
    assert_eq!(answer(lb.port, &get_with_fields(4)).0, 431);

    for bad in ["0", "257", "lots"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("lb.yaml");
        std::fs::write(
            &file,
            format!("backends: [127.0.0.1:9]\nlimits: {{max_request_headers: {bad}}}\n"),
        )
        .expect("write config");
        let (status, stderr) = run_lb(&["-t", "-c", path(&file)]);
        assert!(!status.success(), "{bad}: {stderr}");
        assert!(
            stderr.contains("limits.max_request_headers") && stderr.contains(bad),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn an_invalid_h2c_preface_gets_goaway_not_an_http1_answer() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = common::h2c::spawn_lb_h2c(&backends_yaml(&[be_port]));
    for preface in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ",
    ] {
        let reply = raw_exchange(lb.port, preface, TIMEOUT);
        assert!(
            matches!(reply.end, RawEnd::Eof | RawEnd::Reset),
            "{reply:?}"
        );
        // SETTINGS (the server's preface), then GOAWAY, PROTOCOL_ERROR.
        let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(
            reply.bytes.windows(goaway.len()).any(|w| w == goaway),
            "no GOAWAY(PROTOCOL_ERROR) in {:?}",
            reply.bytes
        );
        assert!(!reply.text().contains("HTTP/1.1"), "{:?}", reply.text());
    }
    // HTTP/1.1 on the same listener is still served.
    assert_eq!(lb.get("/").status, 200);
}

/// Sends requests to lb until its log holds `text`; fails the test if it
/// does not within [`TIMEOUT`].
fn request_until_logged(lb: &Lb, text: &str) {
    let logged = wait_until(TIMEOUT, || {
        if lb.log().contains(text) {
            return true;
        }
        raw_exchange(
            lb.port,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            TIMEOUT,
        );
        false
    });
    assert!(logged, "no {text:?} in lb's log:\n{}", lb.log());
}

#[test]
fn a_backend_ejected_then_down_is_announced_back_once() {
    let (_good, good_port) = spawn_be_on_any_port("good", &[]);
    let bad_port = free_port();
    // Its health checks pass (GET /health), its requests fail: ejected.
    let mut bad = spawn_be_with(bad_port, "bad", &["--fault", "reset"]);
    let port = free_port();
    let lb = spawn_lb_logging(
        "info,lb::pool::outlier=debug",
        port,
        &format!(
            "listeners: [127.0.0.1:{port}]\n{}\
             passive_health: {{consecutive_failures: 1, ejection_time: 1s}}\n",
            backends_yaml(&[good_port, bad_port])
        ),
    );
    let bad_addr = format!("backend 127.0.0.1:{bad_port}");
    request_until_logged(&lb, &format!("{bad_addr} ejected"));
    // Then it dies: its health check fails too, and its ejection ends
    // while it is down.
    bad.kill();
    assert!(lb.wait_for_log(&format!("{bad_addr} down"), TIMEOUT));
    request_until_logged(
        &lb,
        &format!("{bad_addr}: its ejection ended while its health check fails"),
    );
    // It comes back: one line says so.
    let _back = spawn_be(bad_port, "bad");
    assert!(lb.wait_for_log(&format!("{bad_addr} up"), TIMEOUT));
    let log = lb.log();
    let returns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&bad_addr) && (l.contains(" up") || l.contains("returns")))
        .collect();
    assert_eq!(returns.len(), 1, "{log}");
}

/// The records of an env_logger log: each line that starts with `[` and
/// the indented lines of the same message after it.
fn log_records(log: &str) -> Vec<String> {
    let mut records: Vec<String> = Vec::new();
    for line in log.lines() {
        match records.last_mut() {
            Some(record) if !line.starts_with('[') => {
                record.push('\n');
                record.push_str(line);
            }
            _ => records.push(line.to_string()),
        }
    }
    records
}

#[test]
fn be_logs_lbs_health_probes_at_debug_and_requests_at_info() {
    let dir = tempfile::tempdir().expect("temp dir");
    let be_port = free_port();
    let be_log = dir.path().join("be.log");
    let _be = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_be"))
            .args(["--bind", "127.0.0.1", "--name", "one", "--port"])
            .arg(be_port.to_string())
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&be_log).expect("create be's log")),
    );
    wait_for_port(be_port);
    let lb = spawn_lb_edited(
        &[be_port],
        |base| base.health_check.path = "/probed".into(),
        "",
    );
    let read_log = || std::fs::read_to_string(&be_log).unwrap_or_default();
    assert!(
        wait_until(TIMEOUT, || read_log().contains("GET /probed")),
        "no probe:\n{}",
        read_log()
    );
    assert_eq!(lb.get("/asked").status, 200);

    let log = read_log();
    let records = log_records(&log);
    let of = |path: &str| -> Vec<&String> {
        records
            .iter()
            .filter(|r| r.contains("Received request") && r.contains(path))
            .collect()
    };
    let probes = of("GET /probed");
    assert!(
        probes
            .iter()
            .all(|r| r.contains(" DEBUG ") && r.contains("lb-health-check")),
        "{log}"
    );
    let asked = of("GET /asked");
    assert!(asked.len() == 1 && asked[0].contains(" INFO "), "{log}");
}

#[test]
fn a_normal_upgrade_writes_no_error_line() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let mut old = spawn_lb(&[be_port], "");
    let (_new, report) = common::upgrade::run_lb_upgrade(&mut old, Duration::from_secs(20));
    let new_log = std::fs::read_to_string(old.dir.path().join("new.log")).unwrap_or_default();
    assert!(error_lines(&new_log).is_empty(), "{report}\n{new_log}");
    assert!(error_lines(&old.log()).is_empty(), "{}", old.log());
}
