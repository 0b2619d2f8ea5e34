//! What an operator sees: exact Prometheus counters, the access log in both
//! formats with request IDs, log reopening on SIGUSR1, the live status page
//! in a real browser, and `lb -t`'s table; per-backend series and the page
//! by pool.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn request_counters_rise_by_exactly_the_requests_sent() {
    let (ports, _backends) = three_backends();
    let admin_port = free_port();
    let lb = spawn_lb(
        &ports,
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"),
    );
    wait_for_port(admin_port);
    let before = scrape(admin_port);
    for i in 0..37 {
        assert_eq!(lb.get(&format!("/n{i}")).status, 200);
    }
    // lb's own answers count too: a 414 no backend served.
    assert_eq!(lb.get(&format!("/{}", "u".repeat(9000))).status, 414);
    let after = scrape(admin_port);
    let rise = |labels: &[(&str, &str)]| {
        metric_sum(&after, "lb_requests_total", labels)
            - metric_sum(&before, "lb_requests_total", labels)
    };
    assert_eq!(rise(&[]), 38.0, "{after}");
    let routed_2xx: f64 = ports
        .iter()
        .map(|p| {
            let backend = format!("127.0.0.1:{p}");
            rise(&[
                ("upstream", "default"),
                ("backend", &backend),
                ("class", "2xx"),
            ])
        })
        .sum();
    assert_eq!(routed_2xx, 37.0, "{after}");
    assert_eq!(
        rise(&[("upstream", "none"), ("backend", "none"), ("class", "4xx")]),
        1.0,
        "{after}"
    );
    for name in [
        "lb_request_duration_seconds_bucket",
        "lb_upstream_duration_seconds_bucket",
        "lb_backend_healthy",
        "lb_backend_in_flight",
        "lb_health_checks_total",
        "lb_client_connections",
        "lb_upstream_connections_total",
    ] {
        assert!(after.contains(name), "{name} missing:\n{after}");
    }
    for p in &ports {
        let backend = format!("127.0.0.1:{p}");
        let labels = [("upstream", "default"), ("backend", backend.as_str())];
        assert_eq!(
            metric_sum(&after, "lb_backend_healthy", &labels),
            1.0,
            "{after}"
        );
    }
    // The first round of checks runs beside the requests: wait for it
    // rather than race it.
    let checked = wait_until(Duration::from_secs(10), || {
        metric_sum(&scrape(admin_port), "lb_health_checks_total", &[]) > 0.0
    });
    assert!(checked, "no health check counted:\n{}", scrape(admin_port));
}

/// `GET path` with `Host: host` through lb.
fn get_path(port: u16, path: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n"),
    )
}

/// Scrapes until `ready` holds for the text (at most 10 s), and returns it.
fn scrape_until(admin_port: u16, ready: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let done = wait_until(Duration::from_secs(10), || {
        text = scrape(admin_port);
        ready(&text)
    });
    assert!(done, "never ready:\n{text}");
    text
}

#[test]
fn per_backend_series_name_their_upstream_and_one_address_in_two_pools_is_two_series() {
    let (ports, _backends) = three_backends();
    let [shared, only_a, default] =
        [ports[0], ports[1], ports[2]].map(|p| format!("127.0.0.1:{p}"));
    let admin_port = free_port();
    // Nothing listens there: the pool `dead` has no healthy backend.
    // Port 1 (tcpmux): no test process can take it, as a free port could be.
    let nowhere = "127.0.0.1:1".to_string();
    let lb = spawn_lb(
        &[ports[2]],
        &format!(
            "upstreams:\n  a: {{backends: [{shared}, {only_a}]}}\n  b: {{backends: [{shared}]}}\n\
             \x20 dead: {{backends: [{nowhere}]}}\n\
             routes:\n  - {{match: {{path_prefix: /a/}}, upstream: a}}\n  - {{match: {{path_prefix: /b/}}, upstream: b}}\n\
             \x20 - {{match: {{path_prefix: /dead/}}, upstream: dead}}\n\
             \x20 - upstream: default\nadmin: {{listen: 127.0.0.1:{admin_port}}}\n"
        ),
    );
    wait_for_port(admin_port);
    // Both pools have checked the shared backend, each under its own name.
    let checked = |text: &str, pool: &str| {
        metric_sum(
            text,
            "lb_health_checks_total",
            &[
                ("upstream", pool),
                ("backend", &shared),
                ("outcome", "pass"),
            ],
        ) > 0.0
    };
    let dead_is_down = |text: &str| {
        metric_samples(
            text,
            "lb_backend_healthy",
            &[("upstream", "dead"), ("backend", &nowhere)],
        ) == [0.0]
    };
    let before = scrape_until(admin_port, |t| {
        checked(t, "a") && checked(t, "b") && dead_is_down(t)
    });
    for i in 0..4 {
        assert_eq!(get_path(lb.port, &format!("/a/{i}")).status, 200);
    }
    for i in 0..3 {
        assert_eq!(get_path(lb.port, &format!("/b/{i}")).status, 200);
    }
    for i in 0..2 {
        assert_eq!(get_path(lb.port, &format!("/{i}")).status, 200);
    }
    assert_eq!(
        get_path(lb.port, &format!("/{}", "u".repeat(9000))).status,
        414
    );
    assert_eq!(get_path(lb.port, "/dead/x").status, 503);
    let after = scrape(admin_port);
    let rise = |name: &str, labels: &[(&str, &str)]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    let requests = |pool: &str, backend: &str| {
        rise(
            "lb_requests_total",
            &[("upstream", pool), ("backend", backend), ("class", "2xx")],
        )
    };
    assert_eq!(requests("b", &shared), 3.0, "{after}");
    assert_eq!(
        requests("a", &shared) + requests("a", &only_a),
        4.0,
        "{after}"
    );
    assert_eq!(requests("default", &default), 2.0, "{after}");
    assert_eq!(
        rise(
            "lb_requests_total",
            &[("upstream", "none"), ("backend", "none"), ("class", "4xx")]
        ),
        1.0,
        "{after}"
    );
    // lb's own 503 for a pool with no healthy backend counts on that pool.
    assert_eq!(
        rise(
            "lb_requests_total",
            &[("upstream", "dead"), ("backend", "none"), ("class", "5xx")]
        ),
        1.0,
        "{after}"
    );
    for histogram in [
        "lb_request_duration_seconds_count",
        "lb_upstream_duration_seconds_count",
    ] {
        let b = [("upstream", "b"), ("backend", shared.as_str())];
        assert_eq!(rise(histogram, &b), 3.0, "{histogram}:\n{after}");
    }
    for (pool, backend) in [
        ("a", &shared),
        ("b", &shared),
        ("a", &only_a),
        ("default", &default),
    ] {
        let labels = [("upstream", pool), ("backend", backend.as_str())];
        assert_eq!(
            metric_samples(&after, "lb_backend_healthy", &labels),
            [1.0],
            "{pool} {backend}:\n{after}"
        );
        for gauge in [
            "lb_backend_ejected",
            "lb_backend_draining",
            "lb_backend_in_flight",
        ] {
            assert_eq!(
                metric_samples(&after, gauge, &labels),
                [0.0],
                "{gauge} {pool} {backend}:\n{after}"
            );
        }
    }
    assert!(
        metric_samples(
            &after,
            "lb_backend_healthy",
            &[("upstream", "b"), ("backend", &only_a)]
        )
        .is_empty(),
        "a backend of a only shows in b:\n{after}"
    );

    // Draining the shared backend in b leaves it serving in a.
    let drained = request(
        admin_port,
        &format!("POST /api/upstreams/b/backends/{shared}/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(drained.status, 200, "{drained:?}");
    let text = scrape(admin_port);
    let draining = |pool| {
        metric_sum(
            &text,
            "lb_backend_draining",
            &[("upstream", pool), ("backend", &shared)],
        )
    };
    assert_eq!((draining("a"), draining("b")), (0.0, 1.0), "{text}");
}

#[test]
fn retries_reloads_and_connection_reuse_are_counted() {
    let (_good, good_port) = BeBuilder::named("good").start();
    let (_bad, bad_port) = BeBuilder::named("bad").args(&["--fault", "reset"]).start();
    let ports = [good_port, bad_port];
    let admin_port = free_port();
    let lb = spawn_lb(
        &ports,
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\npassive_health: {{consecutive_failures: 0}}\n"),
    );
    wait_for_port(admin_port);
    // Sequential keep-alive requests reuse upstream connections to the good backend.
    let mut client = common::keepalive::KeepAliveClient::new(lb.port);
    for _ in 0..20 {
        assert_eq!(client.get(), Ok(200));
    }
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    assert!(
        lb.wait_for_log("reloaded", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    let text = scrape(admin_port);
    assert!(
        metric_sum(
            &text,
            "lb_retries_total",
            &[("reason", "reset_before_response")]
        ) >= 5.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "lb_config_reloads_total", &[("outcome", "success")]),
        1.0,
        "{text}"
    );
    assert!(
        metric_sum(
            &text,
            "lb_upstream_connections_total",
            &[("reused", "true")]
        ) > 0.0,
        "{text}"
    );
    assert!(
        metric_sum(&text, "lb_client_connections", &[]) >= 1.0,
        "{text}"
    );
}

fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() >= n
    });
    lines
}

#[test]
fn json_access_log_has_every_field_and_request_ids_travel() {
    let (ports, _backends) = three_backends();
    let log_dir = tempfile::tempdir().unwrap();
    let path = log_dir.path().join("access.log");
    let lb = spawn_lb(
        &ports,
        &format!("access_log: {{format: json, path: {}}}\n", path.display()),
    );

    let given = request(
        lb.port,
        "GET /headers?x=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: test-id-42\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(given.status, 200);
    // The client is no trusted proxy: its id is replaced by lb's own.
    let given_id = given
        .body
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-request-id: ")
                .map(str::to_string)
        })
        .expect("lb passes a request id on");
    assert_ne!(given_id, "test-id-42", "{}", given.body);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let made = raw
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-request-id: ")
                .map(str::to_string)
        })
        .expect("lb returns a request id");
    assert!(
        raw.to_ascii_lowercase()
            .contains(&format!("x-request-id: {made}")),
        "the backend saw another id"
    );

    let lines = wait_for_lines(&path, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for field in [
        "time",
        "client",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_sent",
        "backend",
        "upstream_connect_ms",
        "upstream_response_ms",
        "total_ms",
        "retries",
        "request_id",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    assert_eq!(first["request_id"].as_str(), Some(given_id.as_str()));
    assert_eq!(first["path"], "/headers?x=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["client"], "127.0.0.1");
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["request_id"].as_str(), Some(made.as_str()));
}

#[test]
fn text_access_log_reopens_on_sigusr1() {
    let (ports, _backends) = three_backends();
    let log_dir = tempfile::tempdir().unwrap();
    let path = log_dir.path().join("access.log");
    let rotated = log_dir.path().join("access.log.1");
    let lb = spawn_lb(
        &ports,
        &format!("access_log: {{format: text, path: {}}}\n", path.display()),
    );
    assert_eq!(lb.get("/before").status, 200);
    assert_eq!(wait_for_lines(&path, 1).len(), 1);
    std::fs::rename(&path, &rotated).unwrap();
    lb.proc.signal("USR1");
    assert!(
        lb.wait_for_log("reopened", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    assert_eq!(lb.get("/after").status, 200);
    let new_lines = wait_for_lines(&path, 1);
    assert_eq!(new_lines.len(), 1, "{new_lines:?}");
    assert!(
        new_lines[0].contains("\"GET /after HTTP/1.1\" 200"),
        "{}",
        new_lines[0]
    );
    assert!(new_lines[0].contains("request_id="), "{}", new_lines[0]);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");
}

#[test]
fn a_quote_in_a_path_cannot_forge_text_access_log_fields() {
    let (ports, _backends) = backends_named_after_their_ports(1);
    let log_dir = tempfile::tempdir().unwrap();
    let path = log_dir.path().join("access.log");
    let lb = spawn_lb(
        &ports,
        &format!("access_log: {{format: text, path: {}}}\n", path.display()),
    );
    let forged = "/x\"_200_0_backend=evil\\";
    let response = request(
        lb.port,
        &format!("GET {forged} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(response.status, 200);
    let lines = wait_for_lines(&path, 1);
    assert!(
        lines[0].contains("\"GET /x\\x22_200_0_backend=evil\\x5C HTTP/1.1\" 200 "),
        "{}",
        lines[0]
    );
    assert_eq!(lines[0].matches('"').count(), 2, "{}", lines[0]);
}

/// Chromium's command with the flags that work on a closed network as root.
fn chromium(profile: &Path) -> Option<Command> {
    let binary = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let mut command = Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    Some(command)
}

#[test]
fn the_status_page_shows_every_backend_of_every_pool_in_a_real_browser() {
    let profile = tempfile::tempdir().unwrap();
    let Some(mut dump) = chromium(&profile.path().join("dump")) else {
        skip_without("chromium is not installed (apt-get install chromium)");
        return;
    };
    let (ports, _backends) = three_backends();
    // Nothing listens on port 1 (tcpmux), and no other test can take it as
    // it could a free port: its health check fails.
    let down = 1;
    let admin_port = free_port();
    let mut all = ports.clone();
    all.push(down);
    // A second pool that shares the first backend, and has its own balance.
    let lb = spawn_lb(
        &all,
        &format!(
            "upstreams:\n  other: {{backends: [127.0.0.1:{}], balance: least_request}}\n\
             routes: [{{match: {{path_prefix: /other/}}, upstream: other}}, {{upstream: default}}]\n\
             admin: {{listen: 127.0.0.1:{admin_port}}}\n",
            ports[0]
        ),
    );
    wait_for_port(admin_port);
    assert!(
        lb.wait_for_log(
            &format!("backend 127.0.0.1:{down} down"),
            Duration::from_secs(10)
        ),
        "{}",
        lb.log()
    );
    let drained = format!("127.0.0.1:{}", ports[2]);
    let response = request(
        admin_port,
        &format!("POST /api/backends/{drained}/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(response.status, 200);
    for i in 0..20 {
        lb.get(&format!("/{i}"));
    }

    let url = format!("http://127.0.0.1:{admin_port}/");
    let output = dump
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    // Each pool is a section headed by its name and balance, default first.
    let (default_section, other_section) = dom
        .split_once("<section data-upstream=\"other\">")
        .unwrap_or_else(|| panic!("no section for pool other:\n{dom}"));
    assert!(
        default_section.contains(
            "<section data-upstream=\"default\"><h2>default <span class=\"balance\">round_robin</span></h2>"
        ),
        "no heading for pool default:\n{dom}"
    );
    assert!(
        other_section.starts_with("<h2>other <span class=\"balance\">least_request</span></h2>"),
        "no heading for pool other:\n{dom}"
    );
    let shared = format!(
        "data-backend=\"127.0.0.1:{}\" data-state=\"healthy\"",
        ports[0]
    );
    assert!(
        other_section.contains(&shared),
        "{shared} not in pool other:\n{dom}"
    );
    assert_eq!(
        other_section.matches("data-backend=").count(),
        1,
        "pool other shows another pool's backends:\n{dom}"
    );
    let expect = [
        (format!("127.0.0.1:{}", ports[0]), "healthy"),
        (format!("127.0.0.1:{}", ports[1]), "healthy"),
        (drained.clone(), "draining"),
        (format!("127.0.0.1:{down}"), "down"),
    ];
    for (address, state) in &expect {
        let row = format!("data-backend=\"{address}\" data-state=\"{state}\"");
        assert!(
            default_section.contains(&row),
            "{row} not in pool default:\n{dom}"
        );
    }
    assert!(dom.contains("<svg class=\"chart\""), "no chart:\n{dom}");
    assert!(
        dom.contains(">Enable<"),
        "no enable button for the drained backend"
    );

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let shot = chromium(&profile.path().join("shot"))
        .expect("chromium")
        .arg("--window-size=1200,500")
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000),
        "no screenshot"
    );
    eprintln!("status page screenshot: {}", screenshot.display());
}

#[test]
fn test_mode_prints_the_configuration_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.yaml");
    std::fs::write(
        &path,
        "listeners: [127.0.0.1:8000]\nbackends: [127.0.0.1:8080, {address: 127.0.0.1:8081, weight: 3}]\n\
         admin: {listen: 127.0.0.1:9000}\nretry: {attempts: 1}\ntimeouts: {connect: 1s}\n\
         health_check: {on_marked_down: close}\ndiscovery: {hold_missing: 1m}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "listeners           127.0.0.1:8000",
        "backend             127.0.0.1:8081 weight 3",
        "health check        http: GET /",
        "timeouts            connect 1s",
        "retry               1 attempt(s)",
        "requests in flight to a backend marked down are cut off and retried",
        "a missing name is held 1m",
        "admin               http://127.0.0.1:9000",
    ] {
        assert!(table.contains(expected), "{expected:?} not in:\n{table}");
    }
}
