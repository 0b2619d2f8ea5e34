//! Changing the pool while traffic flows: SIGHUP reloads, DNS discovery with
//! a resolver the test controls, and the admin API with and without its
//! token, on the default pool and on each named pool, before and after a
//! reload changes the pools; and the admin listener as an attacker meets
//! it: other origins, rebound host names, its connection cap and limits.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::dns::FakeDns;
use common::keepalive::keep_alive_load;
use common::*;

#[test]
fn sighup_adds_and_removes_backends_under_load_without_an_error() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let lb = spawn_lb(&ports[..2], "");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = keep_alive_load(lb.port, 8, stop.clone());
    traffic.wait_for_answers(200);

    // Add the third backend, remove the first.
    let config = format!(
        "{}{}",
        base_config(lb.dir.path(), lb.port),
        backends_yaml(&[ports[2], ports[1]])
    );
    std::fs::write(lb.config_path(), config).unwrap();
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    assert!(
        wait_until_served_by(lb.port, "/", &ports[2].to_string(), Duration::from_secs(5)),
        "the added backend got no traffic:\n{}",
        lb.log()
    );
    traffic.wait_for_answers(200);
    stop.store(true, Relaxed);
    let (ok, errors) = traffic.join().unwrap();
    assert!(ok > 50, "too little load: {ok}");
    assert!(
        errors.is_empty(),
        "{} errors during the reload: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    let served: Vec<String> = (0..6).map(|_| served_by(&lb.get("/"))).collect();
    assert!(
        !served.contains(&ports[0].to_string()),
        "the removed backend still gets requests: {served:?}"
    );
}

#[test]
fn an_invalid_file_on_sighup_keeps_the_running_config() {
    let (ports, _backends) = backends_named_after_their_ports(2);
    let lb = spawn_lb(&ports, "");
    let good = std::fs::read_to_string(lb.config_path()).unwrap();
    std::fs::write(
        lb.config_path(),
        format!("{good}helth_check: {{path: /}}\n"),
    )
    .unwrap();
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    assert!(
        lb.wait_for_log("reload rejected", Duration::from_secs(10)),
        "no rejection logged:\n{}",
        lb.log()
    );
    assert!(
        lb.log().contains("helth_check"),
        "the error does not name the key:\n{}",
        lb.log()
    );
    let mut served: Vec<String> = (0..4).map(|_| served_by(&lb.get("/"))).collect();
    served.sort();
    served.dedup();
    assert_eq!(served.len(), 2, "the pool changed: {served:?}");
}

/// The last step of a reload's build is reading the certificates; one that
/// cannot be read must leave everything the earlier steps built unused:
/// the old backends serve on, the TLS listener keeps its certificate, and
/// the pool the reload would have added leaves no series in `/metrics`.
#[test]
fn a_reload_that_fails_at_its_last_step_keeps_the_running_config() {
    let (ports, _backends) = backends_named_after_their_ports(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = common::tls::make_cert(dir.path(), "a.test", &["a.test"]);
    let (plain, tls, admin_port) = (free_port(), free_port(), free_port());
    let tls_entry = format!(
        "{{address: 127.0.0.1:{tls}, tls: {{certificates: [{{cert: {}, key: {}}}]}}}}",
        cert.display(),
        key.display()
    );
    let lb = LbBuilder::default()
        .in_dir(dir)
        .listeners(&[(plain, format!("127.0.0.1:{plain}")), (tls, tls_entry)])
        .backends(&ports[..1])
        .rest(&format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"))
        .start();
    assert_eq!(served_by(&lb.get("/")), ports[0].to_string());
    let running = std::fs::read_to_string(lb.config_path()).unwrap();
    let with_a_new_pool = format!(
        "{running}upstreams:\n  extra: {{backends: [127.0.0.1:{}]}}\n\
         routes: [{{match: {{path_prefix: /x/}}, upstream: extra}}, {{upstream: default}}]\n",
        ports[1]
    );
    let broken = with_a_new_pool
        .replace(
            &format!("127.0.0.1:{}", ports[0]),
            &format!("127.0.0.1:{}", ports[1]),
        )
        .replace(&cert.display().to_string(), "/nonexistent/a.test.pem");
    assert_ne!(broken, running);
    std::fs::write(lb.config_path(), broken).unwrap();
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    assert!(
        lb.wait_for_log(
            "reload failed, the running config stays",
            Duration::from_secs(10)
        ),
        "no failure logged:\n{}",
        lb.log()
    );
    assert!(
        lb.log().contains("listeners[1].tls.certificates[0]")
            && lb.log().contains("/nonexistent/a.test.pem"),
        "the error does not name the key and the file:\n{}",
        lb.log()
    );
    for _ in 0..4 {
        assert_eq!(served_by(&lb.get("/")), ports[0].to_string());
    }
    let handshake = std::net::TcpStream::connect(("127.0.0.1", tls));
    assert!(handshake.is_ok(), "the TLS listener is gone");
    let metrics = scrape(admin_port);
    assert!(!metrics.contains("upstream=\"extra\""), "{metrics}");
}

#[test]
fn dns_discovery_follows_the_records() {
    let (two_ip, three_ip) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    // Both on one port, as the records give only addresses.
    let (_two, port) = BeBuilder::named("two").bind(two_ip).start();
    let _three = BeBuilder::named("three").bind(three_ip).start_on(port);
    let dns = FakeDns::start();
    dns.set("app.test", &[two_ip]);

    let admin_port = free_port();
    let lb = lb_resolving_app_test(port, &dns, "interval: 200ms")
        .rest(&format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"))
        .start();
    let lb_port = lb.port;
    assert!(
        wait_until_served_by(lb_port, "/", "two", Duration::from_secs(10)),
        "{}",
        lb.log()
    );

    // A second record: both serve. Then only the second: the first drains.
    dns.set("app.test", &[two_ip, three_ip]);
    assert!(
        wait_until_served_by(lb_port, "/", "three", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    dns.set("app.test", &[three_ip]);
    assert!(
        lb.wait_for_log("backend 127.0.0.2", Duration::from_secs(10))
            && lb.wait_for_log("removed", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    let served: Vec<String> = (0..6).map(|_| served_by(&lb.get("/"))).collect();
    assert!(served.iter().all(|s| s == "three"), "{served:?}");
    // The address DNS no longer gives leaves /metrics.
    wait_until_no_series(admin_port, &format!("127.0.0.2:{port}"));
}

/// A name that stops existing keeps its last address for
/// `discovery.hold_missing`, then loses it; a resolver that does not answer
/// changes nothing. Each change is logged once.
#[test]
fn a_missing_name_keeps_its_address_for_the_hold_and_an_unanswered_one_for_ever() {
    let two_ip = Ipv4Addr::new(127, 0, 0, 2);
    let (_two, port) = BeBuilder::named("two").bind(two_ip).start();
    let dns = FakeDns::start();
    dns.set("app.test", &[two_ip]);
    let lb = lb_resolving_app_test(port, &dns, "interval: 100ms, hold_missing: 5s").start();
    let lb_port = lb.port;
    assert!(
        wait_until_served_by(lb_port, "/", "two", Duration::from_secs(10)),
        "{}",
        lb.log()
    );

    dns.go_silent(true);
    assert!(
        lb.wait_for_log("cannot resolve", Duration::from_secs(30)),
        "{}",
        lb.log()
    );
    let answer = lb.get("/");
    assert_eq!(answer.status, 200, "{}", lb.log());
    assert_eq!(served_by(&answer), "two");
    dns.go_silent(false);
    assert!(
        lb.wait_for_log("resolves again", Duration::from_secs(30)),
        "{}",
        lb.log()
    );

    dns.remove("app.test");
    assert!(
        lb.wait_for_log(
            "1 last address(es) stay in the pool",
            Duration::from_secs(10)
        ),
        "{}",
        lb.log()
    );
    assert_eq!(
        served_by(&lb.get("/")),
        "two",
        "within the hold: {}",
        lb.log()
    );
    assert!(
        lb.wait_for_log("leave the pool", Duration::from_secs(20)),
        "{}",
        lb.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || lb.get("/").status == 503),
        "{}",
        lb.log()
    );
    let log = lb.log();
    assert_eq!(log.matches("cannot resolve").count(), 1, "{log}");
    assert_eq!(log.matches("stay in the pool").count(), 1, "{log}");

    dns.set("app.test", &[two_ip]);
    let back = wait_until(Duration::from_secs(10), || lb.get("/").status == 200);
    assert!(back, "{}", lb.log());
    assert_eq!(
        lb.log().matches("resolves again").count(),
        2,
        "{}",
        lb.log()
    );
}

/// With `on_marked_down: close`, a backend that leaves the pool (its DNS
/// record gone, as a partitioned container's) while requests wait on it
/// and that does not answer its checks any more (stopped) has them shut
/// down and retried elsewhere, not left to wait out `upstream_response`.
#[test]
fn requests_to_a_backend_gone_dark_and_out_of_dns_are_retried_with_on_marked_down_close() {
    let (two_ip, three_ip) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let (_two, port) = BeBuilder::named("two").bind(two_ip).start();
    let three = BeBuilder::named("three").bind(three_ip).start_on(port);
    let dns = FakeDns::start();
    dns.set("app.test", &[two_ip, three_ip]);
    let lb = lb_resolving_app_test(port, &dns, "interval: 100ms")
        .edit(|base| {
            base.health_check.on_marked_down = Some("close".into());
            base.health_check.unhealthy_threshold = Some(3);
        })
        .rest("timeouts: {upstream_response: 60s}\n")
        .start();
    let lb_port = lb.port;
    assert!(
        wait_until_served_by(lb_port, "/", "three", Duration::from_secs(10)),
        "{}",
        lb.log()
    );

    three.signal("STOP");
    let clients: Vec<_> = (0..6)
        .map(|i| std::thread::spawn(move || get(lb_port, &format!("/gone{i}"))))
        .collect();
    dns.set("app.test", &[two_ip]);
    let served: Vec<String> = clients
        .into_iter()
        .map(|c| served_by(&c.join().expect("a client thread")))
        .collect();
    three.signal("CONT");
    assert!(
        served.iter().all(|s| s == "two"),
        "{served:?}\n{}",
        lb.log()
    );
    let left = lb.wait_for_log_line("which left the pool, does not answer");
    assert!(left.contains("127.0.0.3"), "{left}");
}

/// An lb whose one backend is `app.test:{port}`, resolved by `dns` with the
/// `discovery` keys given (flow style, without the resolver).
fn lb_resolving_app_test(port: u16, dns: &FakeDns, discovery: &str) -> LbBuilder {
    LbBuilder::default().rest(&format!(
        "backends:\n  - app.test:{port}\ndiscovery: {{{discovery}, resolver: 127.0.0.1:{}}}\n",
        dns.port
    ))
}

/// The series of `/metrics` on `admin_port` labelled with `backend`.
fn series_of(admin_port: u16, backend: &str) -> Vec<String> {
    let label = format!("backend=\"{backend}\"");
    scrape(admin_port)
        .lines()
        .filter(|line| line.contains(&label))
        .map(str::to_string)
        .collect()
}

/// Waits up to 10 s until `/metrics` on `admin_port` has no series of
/// `backend`; fails the test with those left.
fn wait_until_no_series(admin_port: u16, backend: &str) {
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(10), || {
        left = series_of(admin_port, backend);
        left.is_empty()
    });
    assert!(gone, "series of {backend} left:\n{}", left.join("\n"));
}

/// Sends an admin request as curl would (a body as JSON) and returns its
/// status and body.
fn admin(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> Response {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let json = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    request(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}{json}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn admin_api_lists_adds_drains_enables_and_removes_backends() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let admin_port = free_port();
    let lb = spawn_lb(
        &ports[..2],
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"),
    );
    wait_for_port(admin_port);

    assert_eq!(admin(admin_port, "GET", "/healthz", None, "").status, 200);
    let list = admin(admin_port, "GET", "/api/backends", None, "");
    assert_eq!(list.status, 200);
    let backends: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    assert_eq!(backends.as_array().map(Vec::len), Some(2), "{}", list.body);
    for field in [
        "address",
        "weight",
        "healthy",
        "ejected",
        "draining",
        "in_flight",
        "requests",
        "errors",
        "last_health_check",
    ] {
        assert!(
            backends[0].get(field).is_some(),
            "no {field} in {}",
            list.body
        );
    }

    // Add the third: it gets traffic.
    let added = admin(
        admin_port,
        "POST",
        "/api/backends",
        None,
        &format!("{{\"address\": \"127.0.0.1:{}\"}}", ports[2]),
    );
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!(
        admin(
            admin_port,
            "POST",
            "/api/backends",
            None,
            &format!("{{\"address\": \"127.0.0.1:{}\"}}", ports[2])
        )
        .status,
        409
    );
    assert_eq!(
        admin(
            admin_port,
            "POST",
            "/api/backends",
            None,
            "{\"address\": \"nowhere\"}"
        )
        .status,
        400
    );
    assert!(wait_until_served_by(
        lb.port,
        "/",
        &ports[2].to_string(),
        Duration::from_secs(5)
    ));

    // Drain the first: no more requests; enable: back.
    let first = format!("127.0.0.1:{}", ports[0]);
    let drained = admin(
        admin_port,
        "POST",
        &format!("/api/backends/{first}/drain"),
        None,
        "",
    );
    assert_eq!(drained.status, 200, "{drained:?}");
    assert!(
        drained.body.contains("\"draining\": true"),
        "{}",
        drained.body
    );
    let served: Vec<String> = (0..9).map(|_| served_by(&lb.get("/"))).collect();
    assert!(
        !served.contains(&ports[0].to_string()),
        "a drained backend got requests: {served:?}"
    );
    assert_eq!(
        admin(
            admin_port,
            "POST",
            &format!("/api/backends/{first}/enable"),
            None,
            ""
        )
        .status,
        200
    );
    assert!(wait_until_served_by(
        lb.port,
        "/",
        &ports[0].to_string(),
        Duration::from_secs(5)
    ));

    // Delete it: gone from the list and from rotation.
    assert_eq!(
        admin(
            admin_port,
            "DELETE",
            &format!("/api/backends/{first}"),
            None,
            ""
        )
        .status,
        200
    );
    assert_eq!(
        admin(
            admin_port,
            "DELETE",
            &format!("/api/backends/{first}"),
            None,
            ""
        )
        .status,
        404
    );
    assert!(
        wait_until(Duration::from_secs(5), || !admin(
            admin_port,
            "GET",
            "/api/backends",
            None,
            ""
        )
        .body
        .contains(&first)),
        "the deleted backend is still listed"
    );
    let served: Vec<String> = (0..9).map(|_| served_by(&lb.get("/"))).collect();
    assert!(!served.contains(&ports[0].to_string()), "{served:?}");

    // Reload: runtime changes end, the file's pool is back.
    let reloaded = admin(admin_port, "POST", "/api/reload", None, "");
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    assert!(wait_until_served_by(
        lb.port,
        "/",
        &ports[0].to_string(),
        Duration::from_secs(5)
    ));
    assert_eq!(admin(admin_port, "GET", "/nope", None, "").status, 404);
}

/// `GET path` through lb: which `be` answered.
fn served_at(port: u16, path: &str) -> String {
    served_by(&get(port, path))
}

/// Polls until a request to `path` is served by `name`; false after 5 s.
fn wait_until_path_served_by(port: u16, path: &str, name: &str) -> bool {
    wait_until_served_by(port, path, name, Duration::from_secs(5))
}

/// An admin GET that must answer 200 with JSON.
fn admin_json(port: u16, path: &str) -> serde_json::Value {
    let response = admin(port, "GET", path, None, "");
    assert_eq!(response.status, 200, "GET {path}: {response:?}");
    serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", response.body))
}

/// The `address` of each backend in a JSON list of backends, sorted.
fn addresses(backends: &serde_json::Value) -> Vec<String> {
    sorted(
        backends
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {backends}"))
            .iter()
            .map(|b| b["address"].as_str().unwrap_or_default())
            .collect(),
    )
}

/// `addresses` as owned strings, sorted.
fn sorted(addresses: Vec<&str>) -> Vec<String> {
    let mut addresses: Vec<String> = addresses.into_iter().map(str::to_string).collect();
    addresses.sort();
    addresses
}

/// The `name` of each pool in a JSON list of pools.
fn names(upstreams: &serde_json::Value) -> Vec<String> {
    upstreams
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {upstreams}"))
        .iter()
        .map(|u| u["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn admin_api_acts_on_each_upstream_by_name_and_the_old_paths_on_default() {
    let (ports, _backends) = backends_named_after_their_ports(4);
    let [default, api1, api2, api3] = [0, 1, 2, 3].map(|i| format!("127.0.0.1:{}", ports[i]));
    let admin_port = free_port();
    let lb = spawn_lb(
        &ports[..1],
        &format!(
            "upstreams:\n  api:\n    backends: [{api1}, {api2}]\n    balance: least_request\n\
             routes:\n  - {{match: {{path_prefix: /api/}}, upstream: api}}\n  - upstream: default\n\
             admin: {{listen: 127.0.0.1:{admin_port}}}\n"
        ),
    );
    wait_for_port(admin_port);

    // Every pool, with its name, balance and backends.
    let upstreams = admin_json(admin_port, "/api/upstreams");
    assert_eq!(names(&upstreams), ["default", "api"], "{upstreams}");
    assert_eq!(upstreams[0]["balance"], "round_robin");
    assert_eq!(upstreams[1]["balance"], "least_request");
    assert_eq!(addresses(&upstreams[0]["backends"]), sorted(vec![&default]));
    assert_eq!(
        addresses(&upstreams[1]["backends"]),
        sorted(vec![&api1, &api2])
    );
    assert!(upstreams[1]["backends"][0]
        .get("last_health_check")
        .is_some());
    let api = admin_json(admin_port, "/api/upstreams/api");
    assert_eq!(api["name"], "api");
    assert_eq!(addresses(&api["backends"]), sorted(vec![&api1, &api2]));
    let listed = admin_json(admin_port, "/api/upstreams/api/backends");
    assert_eq!(addresses(&listed), sorted(vec![&api1, &api2]));

    // An unknown pool is a 404 that names it, whatever is asked of it.
    for (method, path) in [
        ("GET", "/api/upstreams/nope"),
        ("GET", "/api/upstreams/nope/backends"),
        ("POST", "/api/upstreams/nope/backends"),
        (
            "POST",
            &format!("/api/upstreams/nope/backends/{api1}/drain"),
        ),
        ("DELETE", &format!("/api/upstreams/nope/backends/{api1}")),
    ] {
        let response = admin(
            admin_port,
            method,
            path,
            None,
            "{\"address\": \"127.0.0.1:1\"}",
        );
        assert_eq!(response.status, 404, "{method} {path}: {response:?}");
        assert!(
            response.body.contains("nope"),
            "{method} {path}: {response:?}"
        );
    }
    assert_eq!(
        admin(admin_port, "PUT", "/api/upstreams", None, "").status,
        405
    );

    // Add to api: it serves /api/ and only there.
    let body = format!("{{\"address\": \"{api3}\"}}");
    let added = admin(
        admin_port,
        "POST",
        "/api/upstreams/api/backends",
        None,
        &body,
    );
    assert_eq!(added.status, 201, "{added:?}");
    let again = admin(
        admin_port,
        "POST",
        "/api/upstreams/api/backends",
        None,
        &body,
    );
    assert_eq!(again.status, 409, "{again:?}");
    assert!(wait_until_path_served_by(
        lb.port,
        "/api/x",
        &ports[3].to_string()
    ));
    assert_eq!(
        addresses(&admin_json(admin_port, "/api/backends")),
        sorted(vec![&default])
    );

    // Drain and enable, by the percent-encoded address the status page sends.
    let encoded = api1.replace(':', "%3A");
    let drained = admin(
        admin_port,
        "POST",
        &format!("/api/upstreams/api/backends/{encoded}/drain"),
        None,
        "",
    );
    assert_eq!(drained.status, 200, "{drained:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&drained.body).unwrap()["draining"],
        true
    );
    let served: Vec<String> = (0..9).map(|_| served_at(lb.port, "/api/x")).collect();
    assert!(
        !served.contains(&ports[1].to_string()),
        "a drained backend got requests: {served:?}"
    );
    let enabled = admin(
        admin_port,
        "POST",
        &format!("/api/upstreams/api/backends/{api1}/enable"),
        None,
        "",
    );
    assert_eq!(enabled.status, 200, "{enabled:?}");
    assert!(wait_until_path_served_by(
        lb.port,
        "/api/x",
        &ports[1].to_string()
    ));

    // Remove from api: gone from its list, and a second time is a 404.
    let path = format!("/api/upstreams/api/backends/{api3}");
    assert_eq!(admin(admin_port, "DELETE", &path, None, "").status, 200);
    assert_eq!(admin(admin_port, "DELETE", &path, None, "").status, 404);
    assert!(
        wait_until(Duration::from_secs(5), || !addresses(&admin_json(
            admin_port,
            "/api/upstreams/api/backends"
        ))
        .contains(&api3)),
        "the deleted backend is still listed"
    );

    // The old paths act on default: draining its one backend leaves / with
    // nothing to serve it, and api untouched.
    let drained = admin(
        admin_port,
        "POST",
        &format!("/api/backends/{default}/drain"),
        None,
        "",
    );
    assert_eq!(drained.status, 200, "{drained:?}");
    let pools = admin_json(admin_port, "/api/upstreams");
    assert_eq!(pools[0]["backends"][0]["draining"], true, "{pools}");
    assert!(
        pools[1]["backends"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["draining"] == false)),
        "{pools}"
    );
    assert_eq!(get(lb.port, "/").status, 503);
    assert_eq!(
        served_at(lb.port, "/api/x").len(),
        ports[1].to_string().len()
    );
    assert_eq!(
        admin(
            admin_port,
            "POST",
            &format!("/api/backends/{api1}/drain"),
            None,
            ""
        )
        .status,
        404,
        "an api backend is not in default"
    );

    // /api/stats: each pool's backends, and default's under the old key.
    let stats = admin_json(admin_port, "/api/stats");
    assert_eq!(names(&stats["upstreams"]), ["default", "api"], "{stats}");
    assert_eq!(stats["upstreams"][1]["balance"], "least_request");
    assert_eq!(
        addresses(&stats["upstreams"][1]["backends"]),
        sorted(vec![&api1, &api2])
    );
    assert_eq!(addresses(&stats["backends"]), sorted(vec![&default]));
    assert_eq!(stats["backends"], stats["upstreams"][0]["backends"]);
    for field in ["rps", "error_rate", "history", "health_since", "draining"] {
        assert!(
            stats["backends"][0].get(field).is_some(),
            "no {field} in {stats}"
        );
    }
}

#[test]
fn a_pool_a_reload_adds_shows_in_the_admin_api_and_metrics_and_a_removed_one_goes() {
    let (ports, _backends) = backends_named_after_their_ports(2);
    let [old, new] = [0, 1].map(|i| format!("127.0.0.1:{}", ports[i]));
    let admin_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let lb_port = free_port();
    let base = base_config(dir.path(), lb_port);
    let config = |pool: &str, backend: &str| {
        format!(
            "{base}upstreams:\n  {pool}: {{backends: [{backend}]}}\nroutes: [{{upstream: {pool}}}]\n\
             admin: {{listen: 127.0.0.1:{admin_port}}}\n"
        )
    };
    let lb = spawn_lb_with_config(dir, lb_port, &config("first", &old));
    wait_for_port(admin_port);
    // No pool named default: the old paths act on the first pool.
    assert_eq!(
        addresses(&admin_json(admin_port, "/api/backends")),
        sorted(vec![&old])
    );
    assert_eq!(served_at(lb.port, "/"), ports[0].to_string());
    let first = [("upstream", "first"), ("backend", old.as_str())];
    let text = get(admin_port, "/metrics").body;
    assert_eq!(
        metric_samples(&text, "lb_backend_healthy", &first),
        [1.0],
        "{text}"
    );

    std::fs::write(lb.config_path(), config("second", &new)).unwrap();
    let reloaded = admin(admin_port, "POST", "/api/reload", None, "");
    assert_eq!(reloaded.status, 200, "{reloaded:?}");

    let upstreams = admin_json(admin_port, "/api/upstreams");
    assert_eq!(names(&upstreams), ["second"], "{upstreams}");
    assert_eq!(addresses(&upstreams[0]["backends"]), sorted(vec![&new]));
    assert_eq!(
        addresses(&admin_json(admin_port, "/api/backends")),
        sorted(vec![&new])
    );
    assert_eq!(
        admin(admin_port, "GET", "/api/upstreams/first", None, "").status,
        404
    );
    assert_eq!(served_at(lb.port, "/"), ports[1].to_string());

    // Its backend's series appear (the check counter once a check ran);
    // the removed pool's gauges are gone.
    let second = [("upstream", "second"), ("backend", new.as_str())];
    let text = poll(Duration::from_secs(10), || {
        let text = get(admin_port, "/metrics").body;
        (metric_sum(&text, "lb_health_checks_total", &second) > 0.0).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "no health check counted:\n{}",
            get(admin_port, "/metrics").body
        )
    });
    assert_eq!(
        metric_samples(&text, "lb_backend_healthy", &second),
        [1.0],
        "{text}"
    );
    let served = [
        ("upstream", "second"),
        ("backend", new.as_str()),
        ("class", "2xx"),
    ];
    assert_eq!(
        metric_sum(&text, "lb_requests_total", &served),
        1.0,
        "{text}"
    );
    for gauge in [
        "lb_backend_healthy",
        "lb_backend_in_flight",
        "lb_backend_draining",
    ] {
        assert!(
            metric_samples(&text, gauge, &[("upstream", "first")]).is_empty(),
            "{gauge} of the removed pool:\n{text}"
        );
    }
    let stats = admin_json(admin_port, "/api/stats");
    assert_eq!(names(&stats["upstreams"]), ["second"], "{stats}");
    // The removed pool's backend had counted a request and health checks:
    // none of its series is left.
    wait_until_no_series(admin_port, &old);
}

#[test]
fn admin_api_requires_its_token() {
    let (_backend, port) = BeBuilder::named("only").start();
    let admin_port = free_port();
    let lb = spawn_lb(
        &[port],
        &format!("admin: {{listen: 0.0.0.0:{admin_port}, token: s3cret}}\n"),
    );
    wait_for_port(admin_port);
    assert_eq!(
        admin(admin_port, "GET", "/api/backends", None, "").status,
        401
    );
    assert_eq!(
        admin(admin_port, "GET", "/api/backends", Some("wrong"), "").status,
        401
    );
    assert_eq!(
        admin(admin_port, "POST", "/api/reload", None, "").status,
        401
    );
    assert_eq!(
        admin(admin_port, "GET", "/api/backends", Some("s3cret"), "").status,
        200
    );
    assert_eq!(
        admin(admin_port, "GET", "/healthz", None, "").status,
        200,
        "probes need no token"
    );
    drop(lb);

    // Beyond loopback without a token: refused at start.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.yaml");
    std::fs::write(
        &path,
        format!("backends: [127.0.0.1:{port}]\nadmin: {{listen: 0.0.0.0:{admin_port}}}\n"),
    )
    .unwrap();
    let (status, stderr) = run_lb(&["-t", "-c", path.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("admin.token"), "{stderr}");
}

/// Sends raw request `head` (with `body`) to the admin listener on a new
/// connection and returns the one response.
fn admin_raw(port: u16, head: &str, body: &str) -> RawResponse {
    let raw = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let reply = raw_exchange(port, raw.as_bytes(), Duration::from_secs(10));
    let (mut responses, _) = split_responses(&reply.bytes);
    assert_eq!(responses.len(), 1, "{}", reply.text());
    responses.remove(0)
}

#[test]
fn pages_of_other_origins_and_rebound_names_cannot_change_lb() {
    let (ports, _backends) = backends_named_after_their_ports(1);
    let admin_port = free_port();
    let _lb = spawn_lb(
        &ports,
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"),
    );
    wait_for_port(admin_port);
    let backend = format!("127.0.0.1:{}", ports[0]);
    let drain = format!("POST /api/backends/{backend}/drain HTTP/1.1\r\n");
    let add = "POST /api/backends HTTP/1.1\r\n";
    let own = format!("Host: 127.0.0.1:{admin_port}\r\n");
    let new_backend = "{\"address\": \"127.0.0.1:1\"}";
    for (head, body, status) in [
        // DNS rebinding: the browser names the attacker's host.
        (
            format!("{drain}Host: evil.example:{admin_port}\r\n"),
            "",
            403,
        ),
        // A form on another origin (and a browser that sends no Origin).
        (
            format!("{drain}{own}Origin: http://evil.example\r\n"),
            "",
            403,
        ),
        (
            format!("{drain}{own}Sec-Fetch-Site: cross-site\r\n"),
            "",
            403,
        ),
        (
            format!("{drain}{own}Content-Type: application/x-www-form-urlencoded\r\n"),
            "a=b",
            415,
        ),
        // fetch(..., {mode: "no-cors"}) can only send text/plain.
        (
            format!("{add}{own}Content-Type: text/plain\r\n"),
            new_backend,
            415,
        ),
        (
            format!("{add}{own}Origin: null\r\nContent-Type: application/json\r\n"),
            new_backend,
            403,
        ),
    ] {
        let response = admin_raw(admin_port, &head, body);
        assert_eq!(response.status, status, "{head}");
    }
    let list = admin_json(admin_port, "/api/backends");
    assert_eq!(addresses(&list), [backend], "{list}");
    assert_eq!(list[0]["draining"], false, "{list}");

    // The status page's own requests, and curl's, still act.
    let same_origin =
        format!("{own}Origin: http://127.0.0.1:{admin_port}\r\nSec-Fetch-Site: same-origin\r\n");
    let drained = admin_raw(admin_port, &format!("{drain}{same_origin}"), "");
    assert_eq!(drained.status, 200);
    let added = admin_raw(
        admin_port,
        &format!("{add}Host: localhost:{admin_port}\r\nContent-Type: application/json; charset=utf-8\r\n"),
        new_backend,
    );
    assert_eq!(added.status, 201);

    // Nothing lb serves may be framed or sniffed; the page runs only its own script.
    for path in ["/", "/status.js", "/status.css", "/api/backends", "/nope"] {
        let response = admin_raw(admin_port, &format!("GET {path} HTTP/1.1\r\n{own}"), "");
        assert_eq!(response.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        let csp = response
            .header("content-security-policy")
            .unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
    }
    let page = admin_raw(admin_port, &format!("GET / HTTP/1.1\r\n{own}"), "");
    let page = String::from_utf8_lossy(&page.body).into_owned();
    assert!(
        page.contains("<script src=\"/status.js\"></script>"),
        "{page}"
    );
    assert!(
        !page.contains("<script>") && !page.contains("<style>"),
        "inline code: {page}"
    );
    let script = admin_raw(admin_port, &format!("GET /status.js HTTP/1.1\r\n{own}"), "");
    assert_eq!(script.status, 200);
    assert!(String::from_utf8_lossy(&script.body).contains("/api/stats"));
}

#[test]
fn a_401_names_the_bearer_scheme_in_any_case_and_head_is_get() {
    let (_backend, port) = BeBuilder::named("only").start();
    let admin_port = free_port();
    let _lb = spawn_lb(
        &[port],
        &format!("admin: {{listen: 127.0.0.1:{admin_port}, token: s3cret}}\n"),
    );
    wait_for_port(admin_port);
    let own = format!("Host: 127.0.0.1:{admin_port}\r\n");
    let refused = admin_raw(
        admin_port,
        &format!("GET /api/backends HTTP/1.1\r\n{own}"),
        "",
    );
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"lb admin\"")
    );
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("Authorization: {scheme} s3cret\r\n");
        let response = admin_raw(
            admin_port,
            &format!("GET /api/backends HTTP/1.1\r\n{own}{auth}"),
            "",
        );
        assert_eq!(response.status, 200, "{scheme}");
    }

    // HEAD: GET's status and length, no body; the connection goes on with
    // the next request.
    let get = admin_raw(admin_port, &format!("GET /healthz HTTP/1.1\r\n{own}"), "");
    let length = get.header("content-length").unwrap_or_default().to_string();
    let mut stream = raw_connect(admin_port, Duration::from_secs(10));
    let mut text = String::new();
    for i in 1..=2 {
        let head = format!("HEAD /healthz HTTP/1.1\r\n{own}\r\n");
        std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
        let mut byte = [0u8; 1];
        while text.matches("\r\n\r\n").count() < i {
            let n = std::io::Read::read(&mut stream, &mut byte).unwrap();
            assert_eq!(n, 1, "closed after {text}");
            text.push(char::from(byte[0]));
        }
    }
    let last = format!("GET /healthz HTTP/1.1\r\n{own}Connection: close\r\n\r\n");
    std::io::Write::write_all(&mut stream, last.as_bytes()).unwrap();
    let (bytes, _) = read_until_end(&mut stream);
    text.push_str(&String::from_utf8_lossy(&bytes));
    let lower = text.to_ascii_lowercase();
    assert_eq!(lower.matches("http/1.1 200").count(), 3, "{text}");
    assert_eq!(
        lower
            .matches(&format!("content-length: {length}\r\n"))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(
        text.matches("\"status\"").count(),
        1,
        "one body, GET's: {text}"
    );
}

#[test]
fn admin_connections_have_the_proxys_time_limits() {
    let (_backend, port) = BeBuilder::named("only").start();
    let admin_port = free_port();
    let _lb = spawn_lb(
        &[port],
        &format!(
            "timeouts: {{client_header: 1s, client_body: 1s, client_idle: 1s}}\n\
             admin: {{listen: 127.0.0.1:{admin_port}}}\n"
        ),
    );
    wait_for_port(admin_port);
    let own = format!("Host: 127.0.0.1:{admin_port}\r\n");
    // Each is read until lb closes it, or 15 s pass: before, lb waited 60 s
    // for each read.
    let limit = Duration::from_secs(15);
    let idle = raw_exchange(admin_port, b"", limit);
    assert_eq!(
        (idle.bytes.len(), &idle.end),
        (0, &RawEnd::Eof),
        "nothing sent"
    );
    let half_head = raw_exchange(
        admin_port,
        format!("GET /api/backends HTTP/1.1\r\n{own}").as_bytes(),
        limit,
    );
    assert!(
        half_head.text().starts_with("HTTP/1.1 408"),
        "{}",
        half_head.text()
    );
    assert_eq!(half_head.end, RawEnd::Eof);
    let half_body = format!(
        "POST /api/backends HTTP/1.1\r\n{own}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"addr"
    );
    let half_body = raw_exchange(admin_port, half_body.as_bytes(), limit);
    assert!(
        half_body.text().starts_with("HTTP/1.1 408"),
        "{}",
        half_body.text()
    );
    assert_eq!(half_body.end, RawEnd::Eof);
    let kept_alive = raw_exchange(
        admin_port,
        format!("GET /healthz HTTP/1.1\r\n{own}\r\n").as_bytes(),
        limit,
    );
    assert!(
        kept_alive.text().starts_with("HTTP/1.1 200"),
        "{}",
        kept_alive.text()
    );
    assert_eq!(kept_alive.end, RawEnd::Eof, "closed after client_idle");
}

#[test]
fn admin_connections_beyond_the_cap_are_closed_at_once() {
    let (_backend, port) = BeBuilder::named("only").start();
    let admin_port = free_port();
    let lb = spawn_lb(
        &[port],
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"),
    );
    wait_for_port(admin_port);
    let own = format!("Host: 127.0.0.1:{admin_port}\r\n");
    let healthz = format!("GET /healthz HTTP/1.1\r\n{own}\r\n");
    // 64 connections, each answered once (so lb has counted it), then kept open.
    let mut open: Vec<_> = (0..64)
        .map(|_| {
            let mut stream = raw_connect(admin_port, Duration::from_secs(10));
            std::io::Write::write_all(&mut stream, healthz.as_bytes()).unwrap();
            let mut reply = [0u8; 12];
            std::io::Read::read_exact(&mut stream, &mut reply).unwrap();
            assert_eq!(&reply, b"HTTP/1.1 200");
            stream
        })
        .collect();
    let over = raw_exchange(admin_port, healthz.as_bytes(), Duration::from_secs(10));
    assert!(over.bytes.is_empty(), "{}", over.text());
    assert!(
        matches!(over.end, RawEnd::Eof | RawEnd::Reset),
        "{:?}",
        over.end
    );
    assert!(lb.wait_for_log(
        "admin API: closing a new connection: 64 are open",
        Duration::from_secs(5)
    ));
    // The proxy serves meanwhile, and a closed admin connection frees a place.
    assert_eq!(lb.get("/").status, 200);
    open.truncate(63);
    let connection_close = format!("GET /healthz HTTP/1.1\r\n{own}Connection: close\r\n\r\n");
    let freed = wait_until(Duration::from_secs(10), || {
        raw_exchange(
            admin_port,
            connection_close.as_bytes(),
            Duration::from_secs(10),
        )
        .text()
        .starts_with("HTTP/1.1 200")
    });
    assert!(freed, "no place freed");
}

#[test]
fn a_backend_removed_through_the_api_leaves_no_series() {
    let (ports, _backends) = backends_named_after_their_ports(2);
    let admin_port = free_port();
    let lb = spawn_lb(
        &ports[..1],
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\n"),
    );
    wait_for_port(admin_port);
    let added = format!("127.0.0.1:{}", ports[1]);
    for _ in 0..3 {
        let body = format!("{{\"address\": \"{added}\"}}");
        assert_eq!(
            admin(admin_port, "POST", "/api/backends", None, &body).status,
            201
        );
        assert!(wait_until_path_served_by(
            lb.port,
            "/",
            &ports[1].to_string()
        ));
        let series = series_of(admin_port, &added);
        for name in [
            "lb_requests_total",
            "lb_request_duration_seconds_count",
            "lb_health_checks_total",
        ] {
            assert!(
                series.iter().any(|s| s.starts_with(name)),
                "no {name}:\n{}",
                series.join("\n")
            );
        }
        let removed = admin(
            admin_port,
            "DELETE",
            &format!("/api/backends/{added}"),
            None,
            "",
        );
        assert_eq!(removed.status, 200, "{removed:?}");
        wait_until_no_series(admin_port, &added);
    }
}
