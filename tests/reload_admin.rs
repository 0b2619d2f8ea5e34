//! Changing the pool while traffic flows: SIGHUP reloads, DNS discovery with
//! a resolver the test controls, and the admin API with and without its
//! token.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dns::FakeDns;
use common::keepalive::keep_alive_load;
use common::*;

#[test]
fn sighup_adds_and_removes_backends_under_load_without_an_error() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let lb = spawn_lb(&ports[..2], "");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = keep_alive_load(lb.port, 8, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    // Add the third backend, remove the first.
    let config = format!(
        "{}{}",
        base_config(lb.dir.path(), lb.port),
        backends_yaml(&[ports[2], ports[1]])
    );
    std::fs::write(lb.config_path(), config).unwrap();
    lb.proc.signal("HUP");
    assert!(
        wait_until_served_by(lb.port, "/", &ports[2].to_string(), Duration::from_secs(5)),
        "the added backend got no traffic:\n{}",
        lb.log()
    );
    std::thread::sleep(Duration::from_millis(300));
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

#[test]
fn dns_discovery_follows_the_records() {
    let (two_ip, three_ip) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    // Both on one port, as the records give only addresses.
    let (_two, port) = BeBuilder::named("two").bind(two_ip).start();
    let _three = BeBuilder::named("three").bind(three_ip).start_on(port);
    let dns = FakeDns::start();
    dns.set("app.test", &[two_ip]);

    let dir = tempfile::tempdir().unwrap();
    let lb_port = free_port();
    let config = format!(
        "{}backends:\n  - app.test:{port}\ndiscovery: {{interval: 200ms, resolver: 127.0.0.1:{}}}\n",
        base_config(dir.path(), lb_port),
        dns.port
    );
    let lb = spawn_lb_with_config(dir, lb_port, &config);
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
}

/// Sends an admin request and returns its status and body.
fn admin(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> Response {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    request(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin(admin_port, "GET", "/api/backends", None, "")
        .body
        .contains(&first)
    {
        assert!(
            Instant::now() < deadline,
            "the deleted backend is still listed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
