//! Operations that must not cost a request: a graceful upgrade under
//! keep-alive load from clients that do not retry, and a graceful stop.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::upgrade::upgrade_under_load;
use common::*;

/// Starts lb with a grace period long enough to drain, in front of three `be`.
fn lb_with_grace(ports: &[u16]) -> Lb {
    spawn_lb_edited(ports, |base| base.server.grace_period_seconds = 3, "")
}

#[test]
fn a_graceful_upgrade_under_keep_alive_load_loses_no_request() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let mut old = lb_with_grace(&ports);
    let upgrade = upgrade_under_load(&mut old, Duration::from_secs(5));
    upgrade.assert_no_client_error(&old.log());
    assert!(
        old.log().contains("all client connections drained"),
        "{}",
        old.log()
    );
    assert_eq!(get(old.port, "/").status, 200, "the new lb does not serve");
}

/// The drain takes the grace period less a margin: at 1 s (the shortest
/// valid) a drain of 16 busy keep-alive clients still loses nothing
/// (issue 10: 12-16 errors when the drain took the grace period less 1 s).
#[test]
fn an_upgrade_with_a_one_second_grace_period_loses_no_request() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    // grace_period_seconds stays 1; the drain may take up to 5 s.
    let mut old = spawn_lb_edited(
        &ports,
        |base| base.server.graceful_shutdown_timeout_seconds = 5,
        "",
    );
    let upgrade = upgrade_under_load(&mut old, Duration::from_secs(10));
    upgrade.assert_no_client_error(&old.log());
    assert_eq!(get(old.port, "/").status, 200, "the new lb does not serve");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let (_slow, port) = BeBuilder::named("slow")
        .args(&["--fault", "drip", "--drip-interval", "20ms"])
        .start();
    let mut lb = lb_with_grace(&[port]);
    let mut client = raw_connect(lb.port, Duration::from_secs(30));
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    // The dripping response is under way: its first byte reached the client.
    let mut first = [0u8; 1];
    assert_eq!(client.read(&mut first).expect("read the first byte"), 1);
    lb.proc.signal("TERM");
    let (rest, end) = read_until_end(&mut client);
    assert_eq!(end, RawEnd::Eof, "{:?}", String::from_utf8_lossy(&rest));
    let response = parse_response(&String::from_utf8_lossy(&[&first[..], &rest].concat()));
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello From Backend Server slow\n");
    let status = lb.proc.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "lb did not exit after SIGTERM");
}

/// Sends one keep-alive request on a new connection to `port`, reads its
/// answer, and returns the connection, idle.
fn idle_connection_after_one_request(port: u16) -> std::net::TcpStream {
    let mut stream = raw_connect(port, Duration::from_secs(15));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
        .expect("send a request");
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).expect("read the answer");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    stream
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_client_idle() {
    let (ports, _backends) = backends_named_after_their_ports(1);
    let lb = spawn_lb(&ports, "timeouts: {client_idle: 1s}\n");
    let mut idle = idle_connection_after_one_request(lb.port);
    let (bytes, end) = read_until_end(&mut idle);
    assert!(
        bytes.is_empty() && matches!(end, RawEnd::Eof | RawEnd::Reset),
        "an idle connection got {:?} and ended {end:?} (client_idle: 1s, waited 15 s)",
        String::from_utf8_lossy(&bytes)
    );
}

#[test]
fn a_graceful_stop_closes_idle_keep_alive_connections_at_the_drain_end() {
    let (ports, _backends) = backends_named_after_their_ports(1);
    let mut lb = spawn_lb(&ports, "timeouts: {client_idle: 60s}\n");
    let mut idle = idle_connection_after_one_request(lb.port);
    lb.proc.signal("TERM");
    let (bytes, end) = read_until_end(&mut idle);
    assert!(
        bytes.is_empty() && matches!(end, RawEnd::Eof | RawEnd::Reset),
        "an idle connection got {:?} and ended {end:?} after SIGTERM",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        lb.wait_for_log(
            "closing 1 idle client connection(s) after the drain limit",
            Duration::from_secs(10)
        ),
        "{}",
        lb.log()
    );
    assert!(
        lb.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "lb did not exit"
    );
}
