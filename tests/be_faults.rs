//! `be`'s faults and its record file, seen over raw TCP with no lb in front:
//! each fault does what `be --help` says (also when switched on by
//! SIGUSR1), `GET /health` stays healthy under every fault, and the record
//! file lists exactly the requests received.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// Read timeout for exchanges that end on their own: a hang fails the test
/// instead of blocking it.
const TIMEOUT: Duration = Duration::from_secs(5);

const GET_X: &[u8] = b"GET /x HTTP/1.1\r\nHost: be\r\n\r\n";
const GET_X_CLOSE: &[u8] = b"GET /x HTTP/1.1\r\nHost: be\r\nConnection: close\r\n\r\n";
const HELLO: &[u8] = b"Hello From Backend Server B\n";

/// Starts `be` named `B` with `args`; returns it and its port.
fn be(args: &[&str]) -> (Proc, u16) {
    spawn_be_on_any_port("B", args)
}

/// The one whole response in `reply`, which must hold nothing else.
fn only_response(reply: &RawReply) -> RawResponse {
    let (mut responses, left_over) = split_responses(&reply.bytes);
    assert!(
        responses.len() == 1 && left_over == 0,
        "expected exactly one response: {reply:?} ({:?})",
        reply.text()
    );
    responses.remove(0)
}

/// `GET /health` answers `200 ok` whatever the fault.
fn assert_health_ok(port: u16) {
    let response = get(port, "/health");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "ok\n");
}

#[test]
fn no_fault_serves_several_requests_on_one_connection() {
    let (_be, port) = be(&[]);
    let two = [GET_X, GET_X_CLOSE].concat();
    let reply = raw_exchange(port, &two, TIMEOUT);
    assert_eq!(reply.end, RawEnd::Eof, "{reply:?}");
    let (responses, left_over) = split_responses(&reply.bytes);
    assert_eq!((responses.len(), left_over), (2, 0), "{:?}", reply.text());
    for response in &responses {
        assert_eq!(response.status, 200);
        assert_eq!(response.body, HELLO);
    }
    assert_eq!(responses[0].header("connection"), Some("keep-alive"));
    assert_eq!(responses[1].header("connection"), Some("close"));
    assert_health_ok(port);
}

#[test]
fn reset_reads_the_request_and_resets_without_a_byte() {
    let (_be, port) = be(&["--fault", "reset"]);
    let with_body = b"POST /x HTTP/1.1\r\nHost: be\r\nContent-Length: 5\r\n\r\nhello";
    let reply = raw_exchange(port, with_body, TIMEOUT);
    assert!(reply.bytes.is_empty(), "got bytes: {:?}", reply.text());
    assert_eq!(reply.end, RawEnd::Reset, "{reply:?}");
    assert_health_ok(port);
}

#[test]
fn reset_mid_sends_part_of_the_response_then_resets() {
    let (_be, port) = be(&["--fault", "reset-mid"]);
    let reply = raw_exchange(port, GET_X, TIMEOUT);
    assert_eq!(reply.end, RawEnd::Reset, "{reply:?}");
    let text = reply.text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", HELLO.len())),
        "{text:?}"
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    assert!(!head.is_empty());
    assert!(
        !body.is_empty() && body.len() < HELLO.len() && HELLO.starts_with(body.as_bytes()),
        "body is not a strict prefix of the hello: {body:?}"
    );
    assert_health_ok(port);
}

#[test]
fn hang_sends_nothing_and_keeps_the_connection_open() {
    let (_be, port) = be(&["--fault", "hang"]);
    // Asserts that nothing arrives, not how fast anything happens.
    let reply = raw_exchange(port, GET_X, Duration::from_millis(300));
    assert!(reply.bytes.is_empty(), "got bytes: {:?}", reply.text());
    assert_eq!(reply.end, RawEnd::TimedOut, "{reply:?}");
    assert_health_ok(port);
}

/// Sends `GET /x` asking to close; asserts the one answer is the hello
/// and that be closed. The reply, and how long it took in all.
fn timed_hello(port: u16) -> (RawReply, Duration) {
    let started = Instant::now();
    let reply = raw_exchange(port, GET_X_CLOSE, TIMEOUT);
    let elapsed = started.elapsed();
    assert_eq!(reply.end, RawEnd::Eof, "{reply:?}");
    let response = only_response(&reply);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, HELLO);
    (reply, elapsed)
}

#[test]
fn drip_sends_the_whole_response_one_byte_at_a_time() {
    let (_be, port) = be(&["--fault", "drip", "--drip-interval", "2ms"]);
    let (reply, elapsed) = timed_hello(port);
    // A lower bound only: every gap between two bytes is at least 2 ms.
    let gaps = reply.bytes.len() as u32 - 1;
    assert!(
        elapsed >= Duration::from_millis(2) * gaps,
        "{} bytes arrived in {elapsed:?}: not dripped",
        reply.bytes.len()
    );
    assert_health_ok(port);
}

#[test]
fn delay_answers_normally_after_the_delay() {
    let (_be, port) = be(&["--fault", "delay", "--delay", "200ms"]);
    let (_, elapsed) = timed_hello(port);
    // A lower bound only.
    assert!(
        elapsed >= Duration::from_millis(200),
        "answered in {elapsed:?}"
    );
    assert_health_ok(port);
}

#[test]
fn fault_after_sigusr1_answers_normally_until_the_signal_then_on_open_connections_too() {
    let (be, port) = be(&["--fault", "status-500", "--fault-after-sigusr1"]);
    let mut stream = raw_connect(port, TIMEOUT);
    let next_status = |stream: &mut std::net::TcpStream| {
        use std::io::Read;
        stream.write_all(GET_X).expect("send a request");
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 1024];
        while split_responses(&bytes).0.is_empty() {
            let n = stream.read(&mut chunk).expect("read the response");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&chunk[..n]);
        }
        split_responses(&bytes).0[0].status
    };
    assert_eq!(next_status(&mut stream), 200);
    assert_eq!(get(port, "/x").status, 200);
    be.signal("USR1");
    assert!(
        be.wait_for_output("got SIGUSR1: fault status-500", TIMEOUT),
        "be did not take the signal"
    );
    // The connection opened before the signal gets the fault, and new ones.
    assert_eq!(next_status(&mut stream), 500);
    assert_eq!(get(port, "/x").status, 500);
    assert_health_ok(port);
}

#[test]
fn status_500_answers_500_naming_the_backend() {
    let (_be, port) = be(&["--fault", "status-500"]);
    let reply = raw_exchange(port, GET_X_CLOSE, TIMEOUT);
    assert_eq!(reply.end, RawEnd::Eof, "{reply:?}");
    let response = only_response(&reply);
    assert_eq!(response.status, 500);
    assert_eq!(response.body, b"error from B\n");
    assert_health_ok(port);
}

#[test]
fn close_early_promises_keep_alive_then_closes() {
    let (_be, port) = be(&["--fault", "close-early"]);
    let mut stream = raw_connect(port, TIMEOUT);
    stream.write_all(GET_X).expect("send the first request");
    let (bytes, end) = read_until_end(&mut stream);
    assert_eq!(end, RawEnd::Eof, "not closed after the response: {bytes:?}");
    let reply = RawReply {
        bytes,
        end,
        write_error: None,
    };
    let response = only_response(&reply);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, HELLO);
    assert_eq!(response.header("connection"), Some("keep-alive"));
    // Reusing the connection finds it dead: no second response.
    let _ = stream.write_all(GET_X);
    let (bytes, end) = read_until_end(&mut stream);
    assert!(bytes.is_empty(), "a reused connection answered");
    assert!(matches!(end, RawEnd::Eof | RawEnd::Reset), "{end:?}");
    assert_health_ok(port);
}

#[test]
fn record_lists_every_request_but_health_checks_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("requests");
    let record_arg = record.to_str().expect("a UTF-8 path");
    let (_be, port) = be(&["--record", record_arg]);
    let requests = [
        "GET /a HTTP/1.1\r\nHost: be\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: be\r\n\r\n",
        "POST /b HTTP/1.1\r\nHost: be\r\nContent-Length: 24\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n",
        "PUT /health HTTP/1.1\r\nHost: be\r\nContent-Length: 0\r\n\r\n",
        "GET /c?q=1 HTTP/1.1\r\nHost: be\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    let reply = raw_exchange(port, requests.as_bytes(), TIMEOUT);
    assert_eq!(reply.end, RawEnd::Eof, "{reply:?}");
    let (responses, _) = split_responses(&reply.bytes);
    assert_eq!(responses.len(), 5, "{:?}", reply.text());
    let recorded = std::fs::read_to_string(&record).expect("read the record file");
    assert_eq!(recorded, "GET /a\nPOST /b\nPUT /health\nGET /c?q=1\n");
}

#[test]
fn record_lists_requests_answered_with_a_fault() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("requests");
    let record_arg = record.to_str().expect("a UTF-8 path");
    let (_be, port) = be(&["--fault", "reset", "--record", record_arg]);
    let reply = raw_exchange(port, b"DELETE /gone HTTP/1.1\r\nHost: be\r\n\r\n", TIMEOUT);
    assert_eq!(reply.end, RawEnd::Reset, "{reply:?}");
    assert_health_ok(port);
    let recorded = std::fs::read_to_string(&record).expect("read the record file");
    assert_eq!(recorded, "DELETE /gone\n");
}

#[test]
fn an_unknown_fault_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_be"))
        .args(["--fault", "explode"])
        .output()
        .expect("run be");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("explode") && stderr.contains("reset-mid"),
        "{stderr}"
    );
}
