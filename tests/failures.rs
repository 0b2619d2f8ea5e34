//! Failures the client never sees, with real misbehaving backends (`be
//! --fault`): retries after a reset, no retry of a POST that reached a
//! backend, dead keep-alive connections, hung backends, passive health,
//! `when_all_unhealthy`, limits, slow request heads, the connection limit and
//! a backend killed and restarted under keep-alive load.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::keepalive::{keep_alive_load, KeepAliveClient};
use common::*;

fn recorded(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts `be` instances: one per entry, each with the given `--fault` and a
/// record file in `dir`. Returns their ports, processes and record paths.
fn backends(dir: &Path, faults: &[&str]) -> (Vec<u16>, Vec<Proc>, Vec<std::path::PathBuf>) {
    let mut ports = Vec::new();
    let mut procs = Vec::new();
    let mut records = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let record = dir.join(format!("be{i}.log"));
        let record_arg = record.to_str().expect("utf-8 path").to_string();
        let (proc, port) = BeBuilder::named(&format!("{fault}{i}"))
            .args(&[
                "--fault",
                fault,
                "--drip-interval",
                "5ms",
                "--record",
                &record_arg,
            ])
            .start();
        procs.push(proc);
        ports.push(port);
        records.push(record);
    }
    (ports, procs, records)
}

#[test]
fn a_reset_before_any_response_byte_is_retried_on_another_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, records) = backends(dir.path(), &["none", "reset", "none"]);
    // No ejection, so the resetting backend keeps getting first tries.
    let lb = spawn_lb(&ports, "passive_health: {consecutive_failures: 0}\n");
    for i in 0..30 {
        let response = lb.get(&format!("/r{i}"));
        assert_eq!(
            response.status,
            200,
            "request {i}: {response:?}\n{}",
            lb.log()
        );
        assert!(!served_by(&response).starts_with("reset"), "{response:?}");
    }
    let reset_saw = recorded(&records[1]).len();
    assert!(
        reset_saw >= 5,
        "the resetting backend got only {reset_saw} requests: no retry was tested"
    );
}

#[test]
fn an_empty_retry_budget_refuses_retries_on_fresh_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["none", "reset", "none"]);
    let lb = spawn_lb(
        &ports,
        "passive_health: {consecutive_failures: 0}\nretry: {budget_percent: 0, budget_min_retries: 0}\n",
    );
    // be resets and closes each connection, so every try on it is a fresh
    // connection: budgeted, and the budget is zero.
    let statuses: Vec<u16> = (0..9).map(|i| lb.get(&format!("/b{i}")).status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        6,
        "{statuses:?}"
    );
}

#[test]
fn a_post_that_reached_a_backend_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, records) = backends(dir.path(), &["none", "reset"]);
    let lb = spawn_lb(&ports, "passive_health: {consecutive_failures: 0}\n");
    let mut failed = 0;
    for i in 0..6 {
        let response = request(
            lb.port,
            &format!("POST /p{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
        );
        match response.status {
            200 => {}
            502 => failed += 1,
            other => panic!("unexpected status {other}: {response:?}"),
        }
    }
    let reset_saw = recorded(&records[1]);
    let healthy_saw = recorded(&records[0]);
    assert_eq!(
        failed,
        reset_saw.len(),
        "each failed POST reached the resetting backend once"
    );
    assert_eq!(
        healthy_saw.len(),
        6 - failed,
        "a failed POST was sent again: {healthy_saw:?}"
    );
    assert!(failed > 0, "no POST went to the resetting backend");
}

#[test]
fn a_backend_closing_kept_alive_connections_costs_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["close-early", "close-early"]);
    let lb = spawn_lb(&ports, "");
    for i in 0..40 {
        let response = lb.get(&format!("/k{i}"));
        assert_eq!(
            response.status,
            200,
            "request {i}: {response:?}\n{}",
            lb.log()
        );
    }
}

#[test]
fn a_hung_backend_gives_504_and_the_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["none", "hang", "none"]);
    let lb = spawn_lb(
        &ports,
        "timeouts: {upstream_response: 300ms}\npassive_health: {consecutive_failures: 2, ejection_time: 1m}\n",
    );
    // Clients in parallel: those sent to the hung backend wait, the others don't wait on them.
    let port = lb.port;
    let clients: Vec<_> = (0..12)
        .map(|i| std::thread::spawn(move || get(port, &format!("/h{i}"))))
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .map(|c| c.join().unwrap().status)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 504),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&504),
        "no request reached the hung backend: {statuses:?}"
    );
    assert!(
        lb.wait_for_log("ejected", Duration::from_secs(10)),
        "the hung backend was not ejected:\n{}",
        lb.log()
    );
    for i in 0..10 {
        assert_eq!(lb.get(&format!("/after{i}")).status, 200, "after ejection");
    }
}

/// A backend that goes dark (its process stopped: connections hang, they
/// are not reset) with requests in flight: with `on_marked_down: close`
/// they end when health checks mark it down and go to the other backend,
/// long before `upstream_response` (60 s, beyond the client's 10 s).
#[test]
fn on_marked_down_close_sends_the_requests_of_a_backend_gone_dark_elsewhere() {
    let (ports, procs) = backends_named_after_their_ports(2);
    let lb = spawn_lb_edited(
        &ports,
        |base| base.health_check.on_marked_down = Some("close".into()),
        "timeouts: {upstream_response: 60s}\n",
    );
    // Both serve, and lb keeps a connection to each.
    let warm: Vec<String> = (0..4).map(|_| served_by(&lb.get("/"))).collect();
    assert!(warm.contains(&ports[1].to_string()), "{warm:?}");

    procs[1].signal("STOP");
    let port = lb.port;
    let clients: Vec<_> = (0..6)
        .map(|i| std::thread::spawn(move || get(port, &format!("/dark{i}"))))
        .collect();
    let served: Vec<String> = clients
        .into_iter()
        .map(|c| served_by(&c.join().expect("a client thread")))
        .collect();
    procs[1].signal("CONT");
    assert!(
        served.iter().all(|s| *s == ports[0].to_string()),
        "{served:?}\n{}",
        lb.log()
    );
    let down = lb.wait_for_log_line(&format!(":{} down: ", ports[1]));
    assert!(down.contains("shut down (on_marked_down: close)"), "{down}");
}

#[test]
fn passive_health_ejects_a_backend_answering_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, records) = backends(dir.path(), &["none", "status-500", "none"]);
    let lb = spawn_lb(
        &ports,
        "passive_health: {consecutive_failures: 2, ejection_time: 1m, count_5xx: true}\n",
    );
    let statuses: Vec<u16> = (0..12).map(|i| lb.get(&format!("/s{i}")).status).collect();
    assert!(lb.log().contains("ejected for 1m"), "{}", lb.log());
    assert_eq!(
        recorded(&records[1]).len(),
        2,
        "requests after the ejection reached the failing backend"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        2,
        "{statuses:?}"
    );
}

#[test]
fn when_all_unhealthy_try_all_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["none", "none"]);
    // be answers 200, so checks that expect 204 fail every backend.
    let lb = spawn_lb_edited(&ports, expect_204, "when_all_unhealthy: try_all\n");
    for p in &ports {
        assert!(lb.wait_for_log(
            &format!("backend 127.0.0.1:{p} down"),
            Duration::from_secs(10)
        ));
    }
    for i in 0..4 {
        assert_eq!(lb.get(&format!("/t{i}")).status, 200);
    }
}

#[test]
fn a_reset_mid_response_is_not_retried_and_the_client_sees_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, records) = backends(dir.path(), &["reset-mid"]);
    let lb = spawn_lb(&ports, "");
    // Status and headers reached the client before the reset: no retry may
    // send a second response, and the client must not see a whole one.
    let mut stream = TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /cut HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let complete = text.contains("Hello From Backend Server reset-mid0\n");
    assert!(
        !complete,
        "a cut response reached the client whole: {text:?}"
    );
    assert_eq!(recorded(&records[0]).len(), 1, "the request was sent again");
    let mut lb = lb;
    assert!(lb.proc.exited().is_none(), "lb died");
}

#[test]
fn a_dripping_response_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["drip"]);
    let lb = spawn_lb(&ports, "");
    let response = lb.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello From Backend Server drip0\n");
}

#[test]
fn limits_answer_414_431_and_413() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, records) = backends(dir.path(), &["none"]);
    let lb = spawn_lb(
        &ports,
        "limits: {max_uri_bytes: 1024, max_header_bytes: 4096, max_body_bytes: 100}\n",
    );
    let long_uri = format!("/{}", "a".repeat(2000));
    assert_eq!(lb.get(&long_uri).status, 414);
    let big_header = request(
        lb.port,
        &format!(
            "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(5000)
        ),
    );
    assert_eq!(big_header.status, 431);
    let big_body = request(
        lb.port,
        "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(big_body.status, 413, "answered before the body was sent");
    let chunk = "c".repeat(150);
    let chunked = request(
        lb.port,
        &format!(
            "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    );
    assert_eq!(chunked.status, 413, "{chunked:?}");
    let small = request(
        lb.port,
        "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(small.status, 200);
    let seen = recorded(&records[0]);
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("/big") || l.contains("/body") || l.contains("/aaa")),
        "{seen:?}"
    );
}

#[test]
fn a_client_trickling_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["none"]);
    let lb = spawn_lb(&ports, "timeouts: {client_header: 1s}\n");
    let mut slow = TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut closed = false;
    // Bounded: at most 100 header lines, 200 ms apart (20 s), far beyond the 1 s limit.
    for i in 0..100 {
        if slow
            .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .is_err()
        {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match slow.read(&mut byte) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // an answer (408) before the head was complete
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "a trickling client kept its connection for {:?}",
        started.elapsed()
    );
    assert_eq!(lb.get("/").status, 200, "lb stopped serving");
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["none"]);
    let lb = spawn_lb(&ports, "limits: {max_connections: 2}\n");
    // Two kept-alive connections, each proven open by a request on it.
    let held: Vec<KeepAliveClient> = (0..2)
        .map(|_| {
            let mut client = KeepAliveClient::new(lb.port);
            assert_eq!(client.get(), Ok(200));
            client
        })
        .collect();
    let mut third = TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut bytes = Vec::new();
    let _ = third.read_to_end(&mut bytes);
    assert!(
        bytes.is_empty(),
        "the third connection was served: {}",
        String::from_utf8_lossy(&bytes)
    );
    drop(held);
    let status = poll(Duration::from_secs(10), || {
        let reply = raw_exchange(
            lb.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        split_responses(&reply.bytes).0.first().map(|r| r.status)
    });
    assert_eq!(
        status,
        Some(200),
        "lb did not serve again after the connections closed"
    );
}

#[test]
fn killing_and_restarting_a_backend_under_keep_alive_load_costs_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut procs, _records) = backends(dir.path(), &["none", "none", "none"]);
    let lb = spawn_lb(&ports, "");
    let port = lb.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = keep_alive_load(port, 16, stop.clone());
    load.wait_for_answers(300);
    let victim = procs[1].pid();
    std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    procs[1].kill();
    // The load runs on while the backend is gone, until lb's checks see it.
    assert!(lb.wait_for_log(
        &format!("backend 127.0.0.1:{} down", ports[1]),
        Duration::from_secs(10)
    ));
    load.wait_for_answers(300);
    procs[1] = spawn_be(ports[1], "back");
    assert!(lb.wait_for_log(
        &format!("backend 127.0.0.1:{} up", ports[1]),
        Duration::from_secs(10)
    ));
    load.wait_for_answers(300);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (total, all_errors) = load.join().unwrap();
    eprintln!("{total} requests succeeded, {} failed", all_errors.len());
    assert!(total > 100, "too little load to test anything: {total}");
    assert!(
        all_errors.is_empty(),
        "{} client-visible errors: {:?}\nlb log (without access lines):\n{}",
        all_errors.len(),
        &all_errors[..all_errors.len().min(10)],
        lb.log()
            .lines()
            .filter(|l| !l.contains("lb::access") || !l.contains("\" 200 "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A scale-down stopping three of four backends at once, more than
/// `retry.attempts` (1): the requests on their kept-alive connections and
/// the connects that find them gone go on to the one left, as nginx's
/// `proxy_next_upstream` does.
#[test]
fn three_backends_killed_at_once_cost_no_request_with_one_retry_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut procs, _records) = backends(dir.path(), &["none", "none", "none", "none"]);
    let lb = spawn_lb(&ports, "retry: {attempts: 1}\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = keep_alive_load(lb.port, 16, stop.clone());
    load.wait_for_answers(300);
    for proc in &mut procs[1..] {
        proc.kill();
    }
    for port in &ports[1..] {
        lb.wait_for_log_line(&format!("backend 127.0.0.1:{port} down"));
    }
    load.wait_for_answers(300);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (total, errors) = load.join().unwrap();
    assert!(total > 600, "too little load to test anything: {total}");
    assert!(
        errors.is_empty(),
        "{} client-visible errors: {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        lb.log()
            .lines()
            .filter(|l| !l.contains("lb::access") || !l.contains("\" 200 "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Reads from `stream` until lb closes it; false if `limit` passes first.
fn closed_by_lb_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    // Bounded by `limit`: one read every 100 ms at most.
    while started.elapsed() < limit {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn idle_client_connections_are_closed_after_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _procs, _records) = backends(dir.path(), &["none"]);
    let lb = spawn_lb(&ports, "timeouts: {client_idle: 1s, client_header: 1s}\n");
    // A kept-alive connection after one answered request: `client_idle`.
    let mut kept = TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // A connection that never sends a byte: `client_header`.
    let mut silent = TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    // Far beyond both 1 s limits, yet bounded.
    assert!(
        closed_by_lb_within(&mut kept, Duration::from_secs(20)),
        "an idle kept-alive connection stayed open"
    );
    assert!(
        closed_by_lb_within(&mut silent, Duration::from_secs(20)),
        "a silent new connection stayed open"
    );
}
