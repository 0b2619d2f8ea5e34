//! The core behaviour, seen from a client: round robin, failover when a
//! backend dies, its return, concurrency, the 502 when nothing is left, the
//! forwarding headers, and HTTP/1.0 backends.

mod common;

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn six_requests_go_round_robin_a_b_c_a_b_c() {
    let (ports, _backends) = three_backends();
    let lb = spawn_lb(&ports, "");
    let order: Vec<String> = (0..6).map(|_| served_by(&lb.get("/"))).collect();
    let first_three = &order[..3];
    assert!(
        first_three[0] != first_three[1]
            && first_three[1] != first_three[2]
            && first_three[0] != first_three[2],
        "first three requests did not reach three backends: {order:?}"
    );
    assert_eq!(&order[3..], first_three, "not A B C A B C: {order:?}");
}

#[test]
fn a_killed_backend_costs_no_request_and_comes_back() {
    let (ports, mut backends) = three_backends();
    let lb = spawn_lb(&ports, "");
    let victim = ports[1].to_string();
    for _ in 0..6 {
        served_by(&lb.get("/"));
    }

    backends[1].kill();
    // Sent before any health check can notice: each must still succeed.
    for i in 0..30 {
        let who = served_by(&lb.get("/"));
        assert_ne!(who, victim, "request {i} went to the killed backend");
    }
    assert!(
        lb.wait_for_log(
            &format!("backend 127.0.0.1:{victim} down"),
            Duration::from_secs(10)
        ),
        "no 'down' log line for the killed backend:\n{}",
        lb.log()
    );
    for i in 0..30 {
        let who = served_by(&lb.get("/"));
        assert_ne!(
            who, victim,
            "request {i} after the health check went to the dead backend"
        );
    }

    backends[1] = spawn_be(ports[1], &victim);
    assert!(
        lb.wait_for_log(
            &format!("backend 127.0.0.1:{victim} up"),
            Duration::from_secs(10)
        ),
        "no 'up' log line for the restarted backend:\n{}",
        lb.log()
    );
    let served: Vec<String> = (0..6).map(|_| served_by(&lb.get("/"))).collect();
    assert!(
        served.contains(&victim),
        "the restarted backend got no traffic: {served:?}"
    );
}

#[test]
fn a_hundred_concurrent_requests_all_succeed() {
    let (ports, _backends) = three_backends();
    let lb = spawn_lb(&ports, "");
    let port = lb.port;
    let clients: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || get(port, "/")))
        .collect();
    let mut served = std::collections::HashSet::new();
    for client in clients {
        let response = client.join().expect("client thread");
        served.insert(served_by(&response));
    }
    assert_eq!(served.len(), 3, "not every backend served: {served:?}");
}

/// A pool of 200 backends of which two answer: once the health checks
/// have found the others down, every request is served by the two, in
/// turn, whatever the balance, and none waits on a down one.
#[test]
fn a_large_pool_mostly_down_serves_every_request_from_the_healthy_ones() {
    let (ports, _backends) = backends_named_after_their_ports(2);
    let healthy: Vec<String> = ports.iter().map(u16::to_string).collect();
    // 198 addresses that refuse: port 9 (below the ephemeral range, so
    // no process of the run can be given it, nor a connection to it be
    // its own source) on loopback addresses no test listens on.
    let down: String = (2..200).map(|i| format!("  - 127.0.0.{i}:9\n")).collect();
    for balance in ["round_robin", "least_request", "consistent_hash"] {
        let lb = spawn_lb(&ports, &format!("{down}balance: {balance}\n"));
        // Until the first round of checks has found every refusing one.
        assert!(
            wait_until(Duration::from_secs(20), || {
                lb.log().matches(":9 down: ").count() >= 198
            }),
            "{balance}: the down backends were never taken out:\n{}",
            lb.log()
        );
        let served: Vec<String> = (0..100)
            .map(|_| {
                let response = lb.get("/");
                assert_eq!(
                    response.status,
                    200,
                    "{balance}: {response:?}\n{}",
                    lb.log()
                );
                served_by(&response)
            })
            .collect();
        assert!(
            served.iter().all(|s| healthy.contains(s)),
            "{balance}: {served:?}"
        );
        if balance == "round_robin" {
            assert!(healthy.iter().all(|h| served.contains(h)), "{served:?}");
        }
    }
}

/// A backend that answers every request `200 ok` on kept-alive
/// connections, counting the connections it accepted and the requests.
fn counting_backend() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("its address").port();
    let (accepted, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (accepts, answers) = (Arc::clone(&accepted), Arc::clone(&answered));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            accepts.fetch_add(1, SeqCst);
            let answers = Arc::clone(&answers);
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        answers.fetch_add(1, SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if (&stream).write_all(ok).is_err() {
                            return;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
    (port, accepted, answered)
}

/// `reuse_connection` (the default) makes every check of a backend after
/// the first go over the first one's connection; off, each connects.
#[test]
fn http_health_checks_reuse_their_connection_unless_told_not_to() {
    for reuse in [true, false] {
        let (port, accepted, answered) = counting_backend();
        let _lb = spawn_lb_edited(
            &[port],
            move |base| {
                base.health_check.interval = "100ms".into();
                base.health_check.reuse_connection = Some(reuse);
            },
            "",
        );
        assert!(
            wait_until(Duration::from_secs(10), || answered.load(SeqCst) >= 5),
            "reuse {reuse}: fewer than 5 checks"
        );
        let (connections, checks) = (accepted.load(SeqCst), answered.load(SeqCst));
        if reuse {
            assert_eq!(connections, 1, "{checks} checks");
        } else {
            assert!(
                connections >= checks,
                "{connections} connections, {checks} checks"
            );
        }
    }
}

/// Starts lb in front of `ports` with health checks too rare to notice
/// anything during a test: every backend stays "healthy" to lb.
fn spawn_lb_without_timely_checks(ports: &[u16]) -> Lb {
    spawn_lb_edited(ports, |base| base.health_check.interval = "1h".into(), "")
}

#[test]
fn every_backend_refusing_gives_a_quick_502_with_a_body() {
    let (ports, mut backends) = three_backends();
    let lb = spawn_lb_without_timely_checks(&ports);
    served_by(&lb.get("/"));
    for backend in &mut backends {
        backend.kill();
    }
    // lb still thinks them healthy: each connect is refused, then 502.
    let response = lb.get("/");
    assert_eq!(response.status, 502, "{response:?}");
    assert!(response.body.contains("no backend"), "{response:?}");
}

#[test]
fn every_backend_down_gives_a_quick_503_with_a_body() {
    let (ports, mut backends) = three_backends();
    let lb = spawn_lb(&ports, "");
    served_by(&lb.get("/"));
    for backend in &mut backends {
        backend.kill();
    }
    for port in &ports {
        assert!(lb.wait_for_log(
            &format!("backend 127.0.0.1:{port} down"),
            Duration::from_secs(10)
        ));
    }
    let response = lb.get("/");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.body.contains("no healthy backend"), "{response:?}");
}

#[test]
fn a_probe_status_outside_expected_status_takes_the_backend_out() {
    let (ports, _backends) = three_backends();
    // be answers 200, so a check that only accepts 204 fails every backend.
    let lb = spawn_lb_edited(&ports[..1], expect_204, "");
    assert!(
        lb.wait_for_log(
            &format!("backend 127.0.0.1:{} down: status 200", ports[0]),
            Duration::from_secs(10)
        ),
        "{}",
        lb.log()
    );
    assert_eq!(lb.get("/").status, 503);
}

#[test]
fn forwarding_headers_are_added_and_host_kept() {
    let (ports, _backends) = three_backends();
    let lb = spawn_lb(&ports, "");
    let response = request(
        lb.port,
        "GET /headers HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 203.0.113.7\r\n\
         X-Real-IP: 203.0.113.8\r\nTrue-Client-IP: 203.0.113.9\r\nX-Forwarded-Port: 1\r\n\
         Forwarded: for=203.0.113.10\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{response:?}");
    let headers = response.body.to_ascii_lowercase();
    // The client is no trusted proxy: nothing it claims about forwarding
    // reaches the backend as if lb had said it.
    assert!(!headers.contains("203.0.113"), "{}", response.body);
    for expected in [
        "host: example.test\n",
        "x-forwarded-for: 127.0.0.1\n",
        "forwarded: for=127.0.0.1;proto=http\n",
        "x-forwarded-proto: http\n",
        "x-forwarded-host: example.test\n",
    ] {
        assert!(
            headers.contains(expected),
            "{expected:?} missing from:\n{}",
            response.body
        );
    }
}

#[test]
fn hop_by_hop_fields_stop_at_lb() {
    let (ports, _backends) = three_backends();
    let lb = spawn_lb(&ports, "");
    let response = request(
        lb.port,
        "GET /headers HTTP/1.1\r\nHost: example.test\r\nConnection: close, X-Secret\r\n\
         X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic eA==\r\nTE: trailers\r\nTrailer: X-T\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Kept: 1\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{response:?}");
    let received = response.body.to_ascii_lowercase();
    assert!(received.contains("x-kept: 1\n"), "{received}");
    for removed in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te:",
        "trailer",
        "upgrade",
        "http2-settings",
    ] {
        assert!(
            !received.contains(removed),
            "{removed} reached the backend:\n{received}"
        );
    }
    let refused = request(
        lb.port,
        "GET /headers HTTP/1.1\r\nHost: example.test\r\nConnection: close, Host\r\n\r\n",
    );
    assert_eq!(refused.status, 400, "{refused:?}");
}

#[test]
fn headers_off_forwards_the_request_as_the_client_sent_it() {
    let (ports, _backends) = three_backends();
    let lb = spawn_lb(&ports, "headers: {forwarded: false, request_id: false}\n");
    let reply = raw_exchange(
        lb.port,
        b"GET /headers HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let (responses, _) = split_responses(&reply.bytes);
    let [response] = &responses[..] else {
        panic!("not one response: {}", reply.text());
    };
    assert_eq!(response.status, 200, "{}", reply.text());
    assert_eq!(response.header("x-request-id"), None, "{}", reply.text());
    let received = reply.text().to_ascii_lowercase();
    assert!(received.contains("host: example.test\n"), "{received}");
    for added in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ] {
        assert!(
            !received.contains(added),
            "{added} reached the backend:\n{received}"
        );
    }
}

#[test]
fn command_line_flags_work_without_a_file() {
    let (ports, _backends) = three_backends();
    let port = free_port();
    let _lb = Proc::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--backend", &format!("127.0.0.1:{}", ports[0])])
            .args(["--backend", &format!("http://127.0.0.1:{}", ports[1])])
            .args([
                "--health-check-path",
                "/health",
                "--health-check-interval",
                "200ms",
            ])
            .args(["--health-check-timeout", "500ms"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for_port(port);
    let mut served: Vec<String> = (0..4).map(|_| served_by(&get(port, "/"))).collect();
    served.sort();
    let mut expected = vec![
        ports[0].to_string(),
        ports[0].to_string(),
        ports[1].to_string(),
        ports[1].to_string(),
    ];
    expected.sort();
    assert_eq!(served, expected);
}

/// `LB_BACKENDS` (what a container is given) replaces the file's backends,
/// as `--backend` does, in lb and in `lb -t`.
#[test]
fn the_lb_backends_variable_replaces_the_files_backends() {
    let (ports, _backends) = three_backends();
    let given = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let lb = LbBuilder::default()
        .backends(&ports[2..])
        .env("LB_BACKENDS", &given)
        .start();
    let mut served: Vec<String> = (0..4).map(|_| served_by(&lb.get("/"))).collect();
    served.sort();
    served.dedup();
    let mut given_ports = vec![ports[0].to_string(), ports[1].to_string()];
    given_ports.sort();
    assert_eq!(served, given_ports);
    let summary = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-t", "-c", &lb.config_path().display().to_string()])
        .env("LB_BACKENDS", &given)
        .output()
        .expect("run lb -t");
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(text.contains(&format!("127.0.0.1:{}", ports[1])), "{text}");
    assert!(!text.contains(&format!("127.0.0.1:{}", ports[2])), "{text}");
}

#[test]
fn http_1_0_backends_such_as_python_http_server_work() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_without("python3 is not installed");
        return;
    }
    let port = free_port();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "python backend\n").unwrap();
    let _python = Proc::spawn(
        std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(site.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for_port(port);
    let lb = spawn_lb_edited(&[port], |base| base.health_check.path = "/".into(), "");
    for _ in 0..5 {
        let response = lb.get("/");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, "python backend\n");
    }
}

/// A backend on a thread of the test: it answers each request on a
/// keep-alive connection with the length and a checksum of the body it
/// received (`len=N sum=S`), bodies framed by Content-Length.
fn spawn_body_counter() -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let sum = body
                        .iter()
                        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
                    let text = format!("len={length} sum={sum}\n");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn large_bodies_and_pipelined_requests_arrive_whole() {
    use std::io::Write;
    let backend = spawn_body_counter();
    let lb = spawn_lb_edited(&[backend], |base| base.health_check.path = "/".into(), "");
    // 3 MiB that is not one byte repeated, so a lost or reordered chunk shows.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sum = body
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
    let mut bytes = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    // Two more requests in the same write: pipelined behind the upload.
    bytes.extend_from_slice(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    bytes.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut stream = raw_connect(lb.port, Duration::from_secs(10));
    stream.write_all(&bytes).expect("send the requests");
    let (reply, _) = read_until_end(&mut stream);
    let (responses, _) = split_responses(&reply);
    let bodies: Vec<String> = responses
        .iter()
        .map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
        .collect();
    let hello_sum = b"hello"
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
    assert_eq!(
        bodies,
        [
            format!("200 len={} sum={sum}\n", body.len()),
            format!("200 len=5 sum={hello_sum}\n"),
            "200 len=0 sum=0\n".to_string(),
        ]
    );
}
