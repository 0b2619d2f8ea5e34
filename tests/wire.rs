//! What lb says on the wire and in its log when clients misbehave: its own
//! error pages rather than Pingora's, one documented limit on request
//! headers, HTTP/2's answer to a bad preface, and no ERROR line that a
//! client can cause.

mod common;

use std::process::Command;
use std::time::Duration;

use common::tls::{make_cert, path, tools_installed};
use common::*;

/// Longest wait for lb to answer or close.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts lb with `config` (listeners, backends and the rest after the
/// base `server:` and `health_check:` sections) and `RUST_LOG` set to
/// `rust_log`; waits until `port` accepts.
fn spawn_lb_logging(rust_log: &str, port: u16, rest: &str) -> Lb {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut base = BaseConfig::new(dir.path(), port);
    base.listeners.clear();
    let config = format!("{}{rest}", base.yaml().replace("listeners: []\n", ""));
    let config_path = dir.path().join("lb.yaml");
    std::fs::write(&config_path, &config).expect("write config");
    let log = std::fs::File::create(dir.path().join("lb.log")).expect("create log");
    let proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_lb"))
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", rust_log)
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log),
    );
    wait_for_port(port);
    Lb { proc, port, dir }
}

/// Waits until lb's log holds `count` lines with `text`, and returns the
/// log; fails the test if it does not within [`TIMEOUT`].
fn wait_for_lines(lb: &Lb, text: &str, count: usize) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let log = lb.log();
        if log.matches(text).count() >= count {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not {count} lines with {text:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `log` at ERROR.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" ERROR ")).collect()
}

#[test]
fn tls_handshakes_clients_break_are_logged_at_debug_not_error() {
    if !tools_installed(&["openssl"]) {
        return;
    }
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

