//! The policies of issue 25 over real sockets, driven by curl (a client
//! nobody here wrote): client addresses bound to 127.0.0.2 and .3, access
//! rules, trusted proxies, header rules, rewrites and redirects,
//! compression, basic and forward auth, CORS and rate limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// What curl saw: the status, the headers (lower-case names) and the body.
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl with `args` against `url`, showing the response's head.
fn curl(url: &str, args: &[&str]) -> Seen {
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no response from curl {args:?} {url}: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A `be` that records every request it gets in a file: its directory,
/// the file, the process and its port.
fn recording_backend() -> (tempfile::TempDir, std::path::PathBuf, Proc, u16) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("requests");
    let record_arg = record.to_str().unwrap().to_string();
    let (be, port) = spawn_be_on_any_port("one", &["--record", &record_arg]);
    (dir, record, be, port)
}

fn lb_with(ports: &[u16], listener: Option<&str>, rest: &str) -> Lb {
    let builder = LbBuilder::default().backends(ports).rest(rest);
    match listener {
        Some(entry) => {
            let port = free_port();
            let entry = entry.replace("PORT", &port.to_string());
            builder.listeners(&[(port, entry)]).start()
        }
        None => builder.start(),
    }
}

#[test]
fn a_route_allows_and_denies_clients_by_address() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  internal_only:\n    access: {allow: [127.0.0.0/8, \"::1/128\"], deny: [127.0.0.3/32]}\n\
         routes:\n  - {match: {path_prefix: /admin/}, upstream: default, policies: [internal_only]}\n  \
         - {upstream: default}\n",
    );
    let url = format!("http://127.0.0.1:{}/admin/x", lb.port);
    assert_eq!(curl(&url, &["--interface", "127.0.0.2"]).status, 200);
    let denied = curl(&url, &["--interface", "127.0.0.3"]);
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "403 Forbidden\n");
    let other = format!("http://127.0.0.1:{}/public", lb.port);
    assert_eq!(curl(&other, &["--interface", "127.0.0.3"]).status, 200);
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_the_one_rules_see() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        Some("{address: 127.0.0.1:PORT, trusted_proxies: [127.0.0.2/32]}"),
        "policies:\n  no_three:\n    access: {deny: [127.0.0.3/32]}\n\
         routes:\n  - {upstream: default, policies: [no_three]}\n",
    );
    let url = format!("http://127.0.0.1:{}/headers", lb.port);
    let xff = "X-Forwarded-For: 127.0.0.3";
    // From the trusted proxy, its X-Forwarded-For names the client.
    let proxied = curl(&url, &["--interface", "127.0.0.2", "-H", xff]);
    assert_eq!(proxied.status, 403, "{}", proxied.body);
    let kept = curl(
        &url,
        &[
            "--interface",
            "127.0.0.2",
            "-H",
            "X-Forwarded-For: 198.51.100.7",
            "-H",
            "X-Request-Id: from-the-proxy",
        ],
    );
    assert_eq!(kept.status, 200);
    let body = kept.body.to_ascii_lowercase();
    assert!(
        body.contains("x-forwarded-for: 198.51.100.7, 127.0.0.2\n"),
        "{body}"
    );
    assert!(body.contains("x-request-id: from-the-proxy\n"), "{body}");
    // From anyone else, it is not believed, and not passed on.
    let spoofed = curl(&url, &["--interface", "127.0.0.4", "-H", xff]);
    assert_eq!(spoofed.status, 200);
    let body = spoofed.body.to_ascii_lowercase();
    assert!(body.contains("x-forwarded-for: 127.0.0.4\n"), "{body}");
}

#[test]
fn header_rules_reach_the_backend_and_the_client() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  secure_headers:\n    request_headers: {set: {X-Env: prod, X-Client: \"{client_ip} on {route}\"}, \
         add: {X-Tag: b}, remove: [X-Debug]}\n    \
         response_headers: {set: {Strict-Transport-Security: \"max-age=63072000\", X-Host: \"{host}\"}, \
         remove: [Content-Type]}\n\
         routes:\n  - {upstream: default, policies: [secure_headers]}\n",
    );
    let url = format!("http://127.0.0.1:{}/headers", lb.port);
    let seen = curl(
        &url,
        &["-H", "X-Debug: 1", "-H", "X-Env: dev", "-H", "X-Tag: a"],
    );
    assert_eq!(seen.status, 200);
    let body = seen.body.to_ascii_lowercase();
    assert!(!body.contains("x-debug"), "{body}");
    assert!(
        body.contains("x-env: prod\n") && !body.contains("x-env: dev"),
        "{body}"
    );
    assert!(
        body.contains("x-client: 127.0.0.1 on routes[0]\n"),
        "{body}"
    );
    assert!(
        body.contains("x-tag: a\n") && body.contains("x-tag: b\n"),
        "{body}"
    );
    assert_eq!(
        seen.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(seen.header("content-type"), None);
    let host = format!("127.0.0.1:{}", lb.port);
    assert_eq!(seen.header("x-host"), Some(host.as_str()));
}

#[test]
fn a_rewrite_keeps_the_query_and_a_redirect_needs_no_backend() {
    let (_dir, record, _be, be_port) = recording_backend();
    let lb = lb_with(
        &[be_port],
        None,
        "routes:\n  - match: {path_prefix: /api/}\n    upstream: default\n    \
         rewrite: {path: \"^/api/v1/(.*)$\", to: \"/v2/$1\"}\n  \
         - match: {path_prefix: /old/}\n    redirect: {to: \"https://new.example.com{path}\", status: 308}\n  \
         - {upstream: default}\n",
    );
    let rewritten = curl(
        &format!("http://127.0.0.1:{}/api/v1/users?id=7", lb.port),
        &[],
    );
    assert_eq!(rewritten.status, 200);
    let recorded = poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&record).ok()?;
        text.contains("/v2/users?id=7").then_some(text)
    });
    assert!(recorded.is_some(), "the backend never saw /v2/users?id=7");
    let before = std::fs::read_to_string(&record).unwrap_or_default();
    let moved = curl(&format!("http://127.0.0.1:{}/old/page?a=1", lb.port), &[]);
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some("https://new.example.com/old/page?a=1")
    );
    assert_eq!(
        std::fs::read_to_string(&record).unwrap_or_default(),
        before,
        "a redirect reached the backend"
    );
}

#[test]
fn compression_follows_accept_encoding_and_the_rules() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  compress:\n    compression: {algorithms: [zstd, br, gzip], min_size: 16, types: [text/*]}\n\
         routes:\n  - {upstream: default, policies: [compress]}\n",
    );
    let url = format!("http://127.0.0.1:{}/", lb.port);
    for (accept, coding) in [
        ("gzip", Some("gzip")),
        ("br", Some("br")),
        ("zstd", Some("zstd")),
        ("gzip;q=0.5, br;q=0.8", Some("br")),
        ("gzip, br, zstd", Some("zstd")),
        ("gzip;q=0", None),
        ("identity", None),
    ] {
        let seen = curl(
            &url,
            &["--compressed", "-H", &format!("Accept-Encoding: {accept}")],
        );
        assert_eq!(seen.status, 200, "{accept}");
        assert_eq!(seen.header("content-encoding"), coding, "{accept}");
        assert_eq!(seen.body, "Hello From Backend Server one\n", "{accept}");
        assert!(
            seen.header("vary")
                .is_some_and(|v| v.contains("Accept-Encoding")),
            "{accept}: {:?}",
            seen.headers
        );
    }
    let head = curl(&url, &["-I", "-H", "Accept-Encoding: gzip"]);
    assert_eq!(head.header("content-encoding"), None);
}

#[test]
fn basic_auth_asks_for_credentials_and_admits_the_right_ones() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    let made = Command::new("htpasswd")
        .args(["-cbB", "-C", "5"])
        .arg(&users)
        .args(["admin", "s3cret"])
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        return skip_without("htpasswd (apache2-utils)");
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        &format!(
            "policies:\n  admins:\n    basic_auth: {{realm: admin, users_file: {}}}\n\
             routes:\n  - {{upstream: default, policies: [admins]}}\n",
            users.display()
        ),
    );
    let url = format!("http://127.0.0.1:{}/", lb.port);
    let asked = curl(&url, &[]);
    assert_eq!(asked.status, 401);
    assert_eq!(
        asked.header("www-authenticate"),
        Some("Basic realm=\"admin\", charset=\"UTF-8\"")
    );
    assert_eq!(curl(&url, &["-u", "admin:wrong"]).status, 401);
    assert_eq!(curl(&url, &["-u", "nobody:s3cret"]).status, 401);
    for _ in 0..3 {
        assert_eq!(curl(&url, &["-u", "admin:s3cret"]).status, 200);
    }
    assert!(!lb.log().contains("s3cret"), "a password reached the log");
}

/// Reads one request head (no body) from `stream`; None when it closed
/// first.
fn read_head(stream: &mut std::net::TcpStream) -> Option<String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&request).to_string())
}

/// A small auth service: 200 with `X-User: alice` for `Authorization:
/// Bearer good`, else 401 with its own challenge and body. Serves
/// `count` connections, one request each.
fn auth_service(count: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let text = read_head(&mut stream).unwrap_or_default();
            let answer: &[u8] = if text
                .to_ascii_lowercase()
                .contains("authorization: bearer good")
            {
                b"HTTP/1.1 200 OK\r\nX-User: alice\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 7\r\nConnection: close\r\n\r\nlog in\n"
            };
            let _ = stream.write_all(answer);
            seen.push(text);
        }
        seen
    });
    (port, handle)
}

#[test]
fn forward_auth_lets_through_what_the_auth_service_allows() {
    let (auth_port, auth) = auth_service(2);
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        &format!(
            "policies:\n  sso:\n    forward_auth: {{url: \"http://127.0.0.1:{auth_port}/verify\", \
             copy_headers: [X-User], timeout: 2s}}\n\
             routes:\n  - {{upstream: default, policies: [sso]}}\n"
        ),
    );
    let url = format!("http://127.0.0.1:{}/headers?x=1", lb.port);
    let allowed = curl(&url, &["-H", "Authorization: Bearer good"]);
    assert_eq!(allowed.status, 200);
    assert!(
        allowed
            .body
            .to_ascii_lowercase()
            .contains("x-user: alice\n"),
        "{}",
        allowed.body
    );
    let refused = curl(&url, &["-H", "Authorization: Bearer bad"]);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert_eq!(refused.body, "log in\n");
    let seen = auth.join().unwrap();
    let first = seen[0].to_ascii_lowercase();
    assert!(first.starts_with("get /verify http/1.1\r\n"), "{first}");
    assert!(
        first.contains("x-forwarded-uri: /headers?x=1\r\n"),
        "{first}"
    );
    assert!(first.contains("x-forwarded-method: get\r\n"), "{first}");
    // The auth service is gone: fail closed.
    let down = curl(&url, &["-H", "Authorization: Bearer good"]);
    assert_eq!(down.status, 503);
}

#[test]
fn cors_preflights_are_answered_by_lb_for_listed_origins_only() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  browser_api:\n    cors: {allow_origins: [\"https://app.example.com\"], \
         allow_methods: [GET, POST], max_age: 10m}\n\
         routes:\n  - {upstream: default, policies: [browser_api]}\n",
    );
    let url = format!("http://127.0.0.1:{}/", lb.port);
    let preflight = |origin: &str| {
        curl(
            &url,
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: POST",
            ],
        )
    };
    let listed = preflight("https://app.example.com");
    assert_eq!(listed.status, 204);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        listed.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(listed.header("access-control-max-age"), Some("600"));
    let other = preflight("https://evil.example");
    assert_eq!(other.header("access-control-allow-origin"), None);
    let real = curl(&url, &["-H", "Origin: https://app.example.com"]);
    assert_eq!(real.status, 200);
    assert_eq!(
        real.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let stranger = curl(&url, &["-H", "Origin: https://evil.example"]);
    assert_eq!(stranger.header("access-control-allow-origin"), None);
}

/// Sends requests on one kept-alive connection at `per_second` for
/// `seconds`, and counts the statuses; also how long the sending took, in
/// seconds (more than `seconds` when a loaded machine made it lag).
fn paced_load(port: u16, path: &str, per_second: u32, seconds: u32) -> (u32, u32, String, f64) {
    let mut stream = raw_connect(port, Duration::from_secs(10));
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let start = Instant::now();
    let (mut accepted, mut limited, mut last_429) = (0, 0, String::new());
    for i in 0..per_second * seconds {
        let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(per_second));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream.write_all(request.as_bytes()).unwrap();
        let response = read_one_response(&mut stream);
        match response.split_whitespace().nth(1) {
            Some("200") => accepted += 1,
            Some("429") => {
                limited += 1;
                last_429 = response;
            }
            other => panic!("unexpected answer {other:?}: {response}"),
        }
    }
    // The last request went out one interval before the window's end.
    let took = start.elapsed().as_secs_f64() + 1.0 / f64::from(per_second);
    (accepted, limited, last_429, took)
}

/// Reads one response with a Content-Length body from `stream`.
fn read_one_response(stream: &mut std::net::TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1];
    loop {
        let text = String::from_utf8_lossy(&bytes).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(1) => bytes.push(buf[0]),
            _ => panic!("connection ended: {text:?}"),
        }
    }
}

#[test]
fn a_rate_limit_at_twice_its_rate_accepts_rate_times_seconds_plus_burst() {
    let (_dir, record, _be, be_port) = recording_backend();
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  api_limit:\n    rate_limit: {rate: 20/s, burst: 10, key: client_ip}\n\
         routes:\n  - {match: {path_prefix: /api/}, upstream: default, policies: [api_limit]}\n  \
         - {upstream: default}\n",
    );
    let (accepted, limited, last_429, took) = paced_load(lb.port, "/api/x", 40, 10);
    // rate x time + burst: 210 over the 10 s, more if sending lagged.
    let expected = 20.0 * took.max(10.0) + 10.0;
    let off = (f64::from(accepted) - expected).abs() / expected;
    assert!(
        off <= 0.05,
        "accepted {accepted}, limited {limited}: {off:.3} off {expected}"
    );
    let lower = last_429.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{last_429}");
    assert!(
        lower.contains("ratelimit-policy: \"api_limit\";q=20;w=1"),
        "{last_429}"
    );
    assert!(
        lower.contains("ratelimit: \"api_limit\";r=0;t=1\r\n"),
        "{last_429}"
    );
    // The backend saw exactly the accepted requests.
    let served = poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&record).ok()?;
        let n = text.lines().filter(|l| l.contains("/api/x")).count();
        (n as u32 == accepted).then_some(n)
    });
    assert!(
        served.is_some(),
        "the backend did not see {accepted} requests"
    );
}

#[test]
fn bad_policy_config_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        "listeners: [{address: 127.0.0.1:0, policies: [nope]}]\nbackends: [127.0.0.1:1]\n\
         policies:\n  a: {access: {allow: [10.0.0.0/33]}}\n  b: {rate_limit: {rate: 100/x}}\n  \
         c: {basic_auth: {users_file: /nonexistent/htpasswd}}\n  \
         d: {request_headers: {set: {X-A: \"{nope}\", Connection: close}}}\n\
         routes:\n  - {upstream: default, redirect: {to: /x}}\n  \
         - {match: {path_prefix: /r/}, upstream: default, rewrite: {path: \"(\", to: /x}}\n  \
         - {match: {path_prefix: /c/}, upstream: default, policies: [c]}\n",
    )
    .unwrap();
    let (status, stderr) = run_lb(&["-t", "-c", config.to_str().unwrap()]);
    assert!(!status.success(), "{stderr}");
    for expected in [
        "listeners[0].policies[0]: no policy named \"nope\"",
        "policies.a.access.allow[0]: \"10.0.0.0/33\"",
        "policies.b.rate_limit.rate: \"100/x\"",
        "policies.d.request_headers.set.X-A: \"{nope}\": unknown placeholder {nope}",
        "policies.d.request_headers.set.Connection: Connection: a hop-by-hop or framing header",
        "routes[0].redirect: a route with redirect answers itself",
        "routes[1].rewrite.path: \"(\"",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    // A users file is read once the rest is right, as start-up reads it.
    std::fs::write(
        &config,
        "listeners: [127.0.0.1:0]\nbackends: [127.0.0.1:1]\n\
         policies:\n  c: {basic_auth: {users_file: /nonexistent/htpasswd}}\n\
         routes:\n  - {upstream: default, policies: [c]}\n",
    )
    .unwrap();
    let (status, stderr) = run_lb(&["-t", "-c", config.to_str().unwrap()]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("policies.c.basic_auth.users_file: /nonexistent/htpasswd"),
        "{stderr}"
    );
}

#[test]
fn trace_context_is_passed_on_or_started_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        &format!(
            "headers: {{trace_context: true}}\naccess_log: {{format: json, path: {}}}\n",
            log.display()
        ),
    );
    let url = format!("http://127.0.0.1:{}/headers", lb.port);
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let passed = curl(&url, &["-H", &format!("traceparent: {given}")]);
    assert!(
        passed.body.contains(&format!("traceparent: {given}\n")),
        "{}",
        passed.body
    );
    let started = curl(
        &url,
        &[
            "-H",
            "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ],
    );
    let made = started
        .body
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .expect("lb starts a trace")
        .to_string();
    let parts: Vec<&str> = made.split('-').collect();
    assert_eq!(parts.len(), 4, "{made}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{made}"
    );
    assert!(parts[1]
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let lines = poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.lines().count() >= 2).then_some(text)
    })
    .expect("two access lines");
    assert!(
        lines.contains("\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("\"trace_id\":\"{}\"", parts[1])),
        "{lines}"
    );
}

#[test]
fn a_listener_closes_a_denied_peer_at_accept_and_judges_forwarded_clients_per_request() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        Some("{address: 127.0.0.1:PORT, trusted_proxies: [127.0.0.2/32], policies: [no_three]}"),
        "policies:\n  no_three:\n    access: {deny: [127.0.0.3/32]}\n",
    );
    let url = format!("http://127.0.0.1:{}/", lb.port);
    assert_eq!(curl(&url, &["--interface", "127.0.0.4"]).status, 200);
    // Closed before any byte is answered: curl gets no response at all.
    let refused = Command::new("curl")
        .args(["-s", "--max-time", "5", "--interface", "127.0.0.3", &url])
        .output()
        .expect("run curl");
    assert!(
        refused.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&refused.stdout)
    );
    assert!(
        matches!(refused.status.code(), Some(52 | 56)),
        "curl exit {:?}: the connection was not closed at once",
        refused.status.code()
    );
    // A trusted proxy's client is judged on its request.
    let forwarded = curl(
        &url,
        &[
            "--interface",
            "127.0.0.2",
            "-H",
            "X-Forwarded-For: 127.0.0.3",
        ],
    );
    assert_eq!(forwarded.status, 403);
    assert_eq!(
        curl(
            &url,
            &[
                "--interface",
                "127.0.0.2",
                "-H",
                "X-Forwarded-For: 127.0.0.5"
            ]
        )
        .status,
        200
    );
}

#[test]
fn policies_reload_without_a_restart_and_an_unchanged_limit_keeps_its_count() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let admin_port = free_port();
    let policies = |env: &str| {
        format!(
            "admin: {{listen: 127.0.0.1:{admin_port}}}\n\
             policies:\n  once:\n    rate_limit: {{rate: 1/h, burst: 0}}\n  \
             env:\n    response_headers: {{set: {{X-Env: {env}}}}}\n\
             routes:\n  - {{match: {{path_prefix: /limited/}}, upstream: default, policies: [once]}}\n  \
             - {{upstream: default, policies: [env]}}\n"
        )
    };
    let lb = lb_with(&[be_port], None, &policies("blue"));
    wait_for_port(admin_port);
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", lb.port);
    assert_eq!(curl(&url("/"), &[]).header("x-env"), Some("blue"));
    assert_eq!(curl(&url("/limited/a"), &[]).status, 200);
    assert_eq!(curl(&url("/limited/a"), &[]).status, 429);

    let base = std::fs::read_to_string(lb.config_path()).unwrap();
    std::fs::write(
        lb.config_path(),
        base.replace("X-Env: blue", "X-Env: green"),
    )
    .unwrap();
    let reload = format!("http://127.0.0.1:{admin_port}/api/reload");
    assert_eq!(curl(&reload, &["-X", "POST"]).status, 200);
    assert_eq!(curl(&url("/"), &[]).header("x-env"), Some("green"));
    // The limit's settings did not change: its count survived the reload.
    assert_eq!(curl(&url("/limited/a"), &[]).status, 429);

    let stats = curl(&format!("http://127.0.0.1:{admin_port}/api/stats"), &[]);
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    let once = stats["policies"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == "once"))
        .unwrap_or_else(|| panic!("no policy once in {stats}"));
    assert_eq!(
        (&once["allowed"], &once["limited"]),
        (&1.into(), &2.into()),
        "{once}"
    );
    let metrics = curl(&format!("http://127.0.0.1:{admin_port}/metrics"), &[]);
    assert!(
        metrics
            .body
            .contains("lb_policy_decisions_total{outcome=\"limited\",policy=\"once\"} 2"),
        "{}",
        metrics.body
    );
}

#[test]
fn turning_the_proxy_protocol_on_at_reload_says_it_needs_a_restart() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let admin_port = free_port();
    let lb = lb_with(
        &[be_port],
        Some("{address: 127.0.0.1:PORT}"),
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"),
    );
    wait_for_port(admin_port);
    let base = std::fs::read_to_string(lb.config_path()).unwrap();
    let entry = format!("{{address: 127.0.0.1:{}}}", lb.port);
    let changed = format!("{{address: 127.0.0.1:{}, proxy_protocol: true}}", lb.port);
    assert!(base.contains(&entry), "{base}");
    std::fs::write(lb.config_path(), base.replace(&entry, &changed)).unwrap();
    let reload = curl(
        &format!("http://127.0.0.1:{admin_port}/api/reload"),
        &["-X", "POST"],
    );
    assert_eq!(reload.status, 200);
    assert!(reload.body.contains("listeners"), "{}", reload.body);
    // Still plain HTTP, as started.
    assert_eq!(
        curl(&format!("http://127.0.0.1:{}/", lb.port), &[]).status,
        200
    );
}

/// Starts nginx on a free port with `server` as its one server block's
/// body (`listen` added); None, with the test reported skipped, without
/// nginx.
fn nginx_with(dir: &std::path::Path, server: &str) -> Option<(Proc, u16)> {
    if Command::new("nginx").arg("-v").output().is_err() {
        skip_without("nginx");
        return None;
    }
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.log;\n\
         events {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         server {{\n listen 127.0.0.1:{port};\n{server}\n}}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let proc = Proc::spawn(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for_port(port);
    Some((proc, port))
}

/// The client address lb decides, beside nginx's realip module with
/// `real_ip_recursive on`, for the same X-Forwarded-For from a trusted and
/// an untrusted peer.
#[test]
fn the_client_behind_trusted_proxies_is_the_one_nginx_realip_finds() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nginx, nginx_port)) = nginx_with(
        dir.path(),
        "set_real_ip_from 127.0.0.2; set_real_ip_from 10.0.0.0/8;\n\
         real_ip_header X-Forwarded-For; real_ip_recursive on;\n\
         location / { add_header X-Client $remote_addr; return 200 \"ok\\n\"; }",
    ) else {
        return;
    };
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        Some("{address: 127.0.0.1:PORT, trusted_proxies: [127.0.0.2/32, 10.0.0.0/8]}"),
        "policies:\n  show:\n    response_headers: {set: {X-Client: \"{client_ip}\"}}\n\
         routes:\n  - {upstream: default, policies: [show]}\n",
    );
    for from in ["127.0.0.2", "127.0.0.4"] {
        for xff in [
            "198.51.100.7",
            "6.6.6.6, 198.51.100.7, 10.1.1.1",
            "10.9.9.9, 10.1.1.1",
            "198.51.100.7, 10.1.1.1, 10.2.2.2",
            "2001:db8::7",
        ] {
            let ask = |port: u16| {
                let seen = curl(
                    &format!("http://127.0.0.1:{port}/"),
                    &[
                        "--interface",
                        from,
                        "-H",
                        &format!("X-Forwarded-For: {xff}"),
                    ],
                );
                seen.header("x-client").unwrap_or("-").to_string()
            };
            assert_eq!(
                ask(lb.port),
                ask(nginx_port),
                "from {from}, X-Forwarded-For: {xff}"
            );
        }
    }
}

/// Which Accept-Encoding values get gzip, from lb and from nginx's gzip
/// module on the same response. They agree except on `*`, where lb
/// follows RFC 9110 12.5.3 (`*` matches any coding not listed) and nginx
/// looks for the word gzip only.
#[test]
fn gzip_by_accept_encoding_agrees_with_nginx_but_for_the_wildcard() {
    let dir = tempfile::tempdir().unwrap();
    let body = "Hello From Backend Server one\n";
    let Some((_nginx, nginx_port)) = nginx_with(
        dir.path(),
        &format!(
            "gzip on; gzip_min_length 16; gzip_types text/plain; gzip_vary on;\n\
             location / {{ default_type text/plain; return 200 \"{}\"; }}",
            body.escape_default()
        ),
    ) else {
        return;
    };
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  compress:\n    compression: {algorithms: [gzip], min_size: 16, types: [text/plain]}\n\
         routes:\n  - {upstream: default, policies: [compress]}\n",
    );
    for (accept, nginx_gzips, lb_gzips) in [
        ("gzip", true, true),
        ("GZIP", true, true),
        ("gzip;q=0", false, false),
        ("gzip;q=0.5", true, true),
        ("deflate, gzip;q=1.0", true, true),
        ("identity", false, false),
        ("br", false, false),
        ("*", false, true),
    ] {
        let coding = |port: u16| {
            let seen = curl(
                &format!("http://127.0.0.1:{port}/"),
                &["--compressed", "-H", &format!("Accept-Encoding: {accept}")],
            );
            assert_eq!(seen.body, body, "{accept} from port {port}");
            seen.header("content-encoding") == Some("gzip")
        };
        assert_eq!(coding(nginx_port), nginx_gzips, "nginx, {accept}");
        assert_eq!(coding(lb.port), lb_gzips, "lb, {accept}");
    }
}

/// A backend that answers `/health` at once and holds every other request
/// until `release` receives; `held` receives each held request's path.
fn holding_backend() -> (
    u16,
    std::sync::mpsc::Receiver<String>,
    std::sync::mpsc::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let (held_tx, release_rx) = (held_tx.clone(), std::sync::Arc::clone(&release_rx));
            std::thread::spawn(move || loop {
                let Some(text) = read_head(&mut stream) else {
                    return;
                };
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                if path != "/health" {
                    let _ = held_tx.send(path);
                    let _ = release_rx
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                }
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .is_err()
                {
                    return;
                }
            });
        }
    });
    (port, held, release)
}

#[test]
fn a_connection_limit_refuses_a_clients_request_beyond_its_open_ones() {
    let (be_port, held, release) = holding_backend();
    let lb = lb_with(
        &[be_port],
        None,
        "policies:\n  one_each:\n    connection_limit: {max: 1, key: client_ip}\n\
         routes:\n  - {upstream: default, policies: [one_each]}\n",
    );
    let url = format!("http://127.0.0.1:{}/", lb.port);
    let first = {
        let url = format!("{url}hold");
        std::thread::spawn(move || curl(&url, &[]).status)
    };
    assert_eq!(held.recv_timeout(Duration::from_secs(10)).unwrap(), "/hold");
    let refused = curl(&format!("{url}second"), &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.header("connection"), Some("close"));
    // Another client is not counted with the first.
    let other = {
        let url = format!("{url}other");
        std::thread::spawn(move || curl(&url, &["--interface", "127.0.0.2"]).status)
    };
    assert_eq!(
        held.recv_timeout(Duration::from_secs(10)).unwrap(),
        "/other"
    );
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(other.join().unwrap(), 200);
    // The place was given back.
    let again = {
        let url = format!("{url}again");
        std::thread::spawn(move || curl(&url, &[]).status)
    };
    assert_eq!(
        held.recv_timeout(Duration::from_secs(10)).unwrap(),
        "/again"
    );
    release.send(()).unwrap();
    assert_eq!(again.join().unwrap(), 200);
}
