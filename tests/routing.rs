//! Several pools behind one lb: routes by host (HTTP/1.1's Host, HTTP/2's
//! :authority over h2c and TLS) and path prefix, the 404 when none matches,
//! prefix stripping, the requests each route counted, each pool resolving
//! its own host names, config errors that name their key, and the
//! two-choice balances against a slow backend (least_request beside round
//! robin, peak_ewma with a backend that turns slow).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

/// The base config with `rest` (upstreams, routes) instead of `backends:`.
fn spawn_lb_with(rest: &str) -> Lb {
    LbBuilder::default().rest(rest).start()
}

/// `GET path` with `Host: host` through lb.
fn get_host(port: u16, host: &str, path: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// The routes the routing tests share, matched by specificity whatever
/// their order: `*.example.com` to web, `/static/` to static, and
/// api.example.com under `/v1/` to api with the prefix stripped; no
/// catch-all.
const ROUTES: &str = "routes:\n  - match: {host: \"*.example.com\"}\n    upstream: web\n\
    \x20 - match: {path_prefix: /static/}\n    upstream: static\n\
    \x20 - match: {host: api.example.com, path_prefix: /v1/}\n    upstream: api\n    strip_prefix: true\n";

/// The route and the pool that serve a request; None: no route, 404.
type Served = Option<(&'static str, &'static str)>;

/// Requests through [`ROUTES`]: the host as the client writes it, the
/// path, and what serves them.
const ROUTED: [(&str, &str, Served); 6] = [
    // Exact host with its prefix beats the wildcard written before it,
    // whatever the case and port.
    (
        "api.example.com",
        "/v1/users?page=2",
        Some(("routes[2]", "api")),
    ),
    ("API.Example.com:8080", "/v1/x", Some(("routes[2]", "api"))),
    // The same exact host without the prefix falls to the wildcard.
    ("api.example.com", "/other", Some(("routes[0]", "web"))),
    // A wildcard host beats a route for any host, whatever the prefix.
    (
        "www.example.com",
        "/static/a.css",
        Some(("routes[0]", "web")),
    ),
    ("other.org", "/static/a.css", Some(("routes[1]", "static"))),
    // No route and no catch-all.
    ("other.org", "/", None),
];

/// One `be` for each pool of [`ROUTES`], named after it; api records the
/// requests that reach it.
struct ThreePools {
    _backends: [Proc; 3],
    _dir: tempfile::TempDir,
    api_record: std::path::PathBuf,
    /// `upstreams:` and [`ROUTES`].
    yaml: String,
}

impl ThreePools {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let api_record = dir.path().join("api-requests");
        let record = api_record.to_str().expect("a UTF-8 path");
        let (api, api_port) = spawn_be_on_any_port("api", &["--record", record]);
        let (files, files_port) = spawn_be_on_any_port("static", &[]);
        let (web, web_port) = spawn_be_on_any_port("web", &[]);
        let yaml = format!(
            "upstreams:\n  api:\n    backends: [127.0.0.1:{api_port}]\n  static:\n    backends: [127.0.0.1:{files_port}]\n\
             \x20 web:\n    backends: [127.0.0.1:{web_port}]\n{ROUTES}"
        );
        ThreePools {
            _backends: [api, files, web],
            _dir: dir,
            api_record,
            yaml,
        }
    }

    /// Sends every request of [`ROUTED`] with `fetch` (host, path: status
    /// and body) and asserts who answered: the pool's `be`, or lb's 404 in
    /// one line. Then that api saw its paths without the `/v1` prefix.
    fn assert_routed(&self, protocol: &str, mut fetch: impl FnMut(&str, &str) -> (u16, String)) {
        for (host, path, routed) in ROUTED {
            let (status, body) = fetch(host, path);
            match routed {
                Some((_, pool)) => assert_eq!(
                    (status, body.as_str()),
                    (200, format!("Hello From Backend Server {pool}\n").as_str()),
                    "{protocol}: {host} {path}"
                ),
                None => {
                    assert_eq!(status, 404, "{protocol}: {host} {path}: {body}");
                    assert_eq!(body.trim_end().lines().count(), 1, "{protocol}: {body:?}");
                }
            }
        }
        let recorded = std::fs::read_to_string(&self.api_record).unwrap_or_default();
        assert_eq!(
            recorded, "GET /users?page=2\nGET /x\n",
            "{protocol}: the api backend saw other paths"
        );
    }
}

#[test]
fn requests_go_to_the_most_specific_route_and_unmatched_ones_get_404() {
    let pools = ThreePools::start();
    let lb = spawn_lb_with(&pools.yaml);
    pools.assert_routed("HTTP/1.1", |host, path| {
        let response = get_host(lb.port, host, path);
        (response.status, response.body)
    });
    // The access log names the route and the pool.
    let logged = lb.wait_for_log_line("\"GET /v1/users?page=2 HTTP/1.1\" 200");
    assert!(logged.ends_with("route=routes[2] upstream=api"), "{logged}");
}

#[test]
fn over_h2c_routes_match_the_authority_as_they_match_the_host_header() {
    use common::h2c::{connect_h2, exchange, spawn_lb_h2c};
    let pools = ThreePools::start();
    let lb = spawn_lb_h2c(&pools.yaml);
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let client = rt.block_on(connect_h2(lb.port));
    // The h2 client puts the URI's authority in `:authority` and sends no
    // Host header.
    pools.assert_routed("h2c", |host, path| {
        let request = http::Request::get(format!("http://{host}{path}"))
            .body(())
            .expect("a valid request");
        let (status, body) = rt.block_on(exchange(&client, request, None));
        (status.as_u16(), body)
    });
}

#[test]
fn over_tls_http2_routes_match_the_authority_too() {
    use common::tls::{curl, make_cert, text, tools_installed};
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let pools = ThreePools::start();
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = make_cert(certs.path(), "lb.test", &["lb.test"]);
    let cert = common::tls::path(&cert);
    let port = free_port();
    let listener = format!(
        "{{address: 127.0.0.1:{port}, tls: {{certificates: [{{cert: {cert}, key: {}}}]}}}}",
        common::tls::path(&key)
    );
    let _lb = spawn_lb_listening(&[(port, listener)], &pools.yaml);
    let resolve = format!("lb.test:{port}:127.0.0.1");
    // The connection is to lb.test (SNI and certificate); over HTTP/2 curl
    // sends the Host header it is given as `:authority`.
    pools.assert_routed("TLS h2", |host, target| {
        let output = curl(&[
            "--http2",
            "--cacert",
            cert,
            "--resolve",
            &resolve,
            "-H",
            &format!("Host: {host}"),
            "-w",
            "\n@@%{http_code} %{http_version}",
            &format!("https://lb.test:{port}{target}"),
        ]);
        assert!(output.status.success(), "curl failed: {}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, written) = stdout
            .rsplit_once("\n@@")
            .unwrap_or_else(|| panic!("no status after the body: {stdout:?}"));
        let (status, version) = written.split_once(' ').expect("status and version");
        assert_eq!(version, "2", "{host} {target}: not HTTP/2");
        (status.parse().expect("a status"), body.to_string())
    });
}

#[test]
fn each_route_counts_its_requests_and_the_unmatched_count_as_none() {
    let pools = ThreePools::start();
    let admin_port = free_port();
    let lb = spawn_lb_with(&format!(
        "{}admin: {{listen: 127.0.0.1:{admin_port}}}\n",
        pools.yaml
    ));
    wait_for_port(admin_port);
    let series = |text: &str, route: &str| {
        metric_samples(text, "lb_route_requests_total", &[("route", route)])
    };
    // Every route's series is there from the start, at 0.
    let before = scrape(admin_port);
    for route in ["routes[0]", "routes[1]", "routes[2]", "none"] {
        assert_eq!(series(&before, route), [0.0], "{before}");
    }
    for _ in 0..3 {
        for (host, path, _) in ROUTED {
            get_host(lb.port, host, path);
        }
    }
    // Each round of ROUTED: two requests for routes[0] (the wildcard), one
    // for routes[1] (/static/), two for routes[2] (api.example.com/v1/)
    // and one 404.
    let after = scrape(admin_port);
    for (route, count) in [
        ("routes[0]", 6.0),
        ("routes[1]", 3.0),
        ("routes[2]", 6.0),
        ("none", 3.0),
    ] {
        assert_eq!(series(&after, route), [count], "{route}:\n{after}");
    }
}

#[test]
fn a_catch_all_route_takes_what_no_other_matches_and_the_default_pool_stays() {
    let (_default_be, default_port) = spawn_be_on_any_port("default", &[]);
    let (_api_be, api_port) = spawn_be_on_any_port("api", &[]);
    let lb = spawn_lb_with(&format!(
        "backends: [127.0.0.1:{default_port}]\n\
         upstreams:\n  api:\n    backends: [127.0.0.1:{api_port}]\n\
         routes:\n  - match: {{path_prefix: /api/}}\n    upstream: api\n  - upstream: default\n"
    ));
    assert_eq!(served_by(&get_host(lb.port, "x", "/api/a")), "api");
    assert_eq!(served_by(&get_host(lb.port, "x", "/")), "default");
}

#[test]
fn each_pool_resolves_its_own_host_names_and_follows_their_records() {
    use common::dns::FakeDns;
    use std::net::Ipv4Addr;
    let ip = |n| Ipv4Addr::new(127, 0, 0, n);
    // Four backends on one port, as records give only addresses.
    let (_api_a, port) = BeBuilder::named("api-a").bind(ip(2)).start();
    let _web_a = BeBuilder::named("web-a").bind(ip(3)).start_on(port);
    let _api_b = BeBuilder::named("api-b").bind(ip(4)).start_on(port);
    let _web_b = BeBuilder::named("web-b").bind(ip(5)).start_on(port);
    let dns = FakeDns::start();
    dns.set("api.test", &[ip(2)]);
    dns.set("web.test", &[ip(3)]);
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  api:\n    backends: [api.test:{port}]\n  web:\n    backends: [web.test:{port}]\n\
         routes:\n  - {{match: {{path_prefix: /api/}}, upstream: api}}\n  - upstream: web\n\
         discovery: {{interval: 200ms, resolver: 127.0.0.1:{}}}\n",
        dns.port
    ));
    let served = |path: &str| -> Vec<String> {
        let mut names: Vec<String> = (0..8).map(|_| served_by(&get(lb.port, path))).collect();
        names.sort();
        names.dedup();
        names
    };
    // Resolved before lb serves: each pool's own name, and only that.
    assert_eq!(served("/api/x"), ["api-a"]);
    assert_eq!(served("/"), ["web-a"]);

    // api.test moves to another address: api follows, web stays.
    dns.set("api.test", &[ip(4)]);
    let limit = Duration::from_secs(10);
    assert!(
        wait_until_served_by(lb.port, "/api/x", "api-b", limit),
        "{}",
        lb.log()
    );
    let removed = format!("backend 127.0.0.2:{port} removed from the pool");
    assert!(lb.wait_for_log(&removed, limit), "{}", lb.log());
    assert_eq!(served("/api/x"), ["api-b"]);
    assert_eq!(served("/"), ["web-a"]);

    // web.test gets a second address: web serves from both, api is as it was.
    dns.set("web.test", &[ip(3), ip(5)]);
    assert!(
        wait_until_served_by(lb.port, "/", "web-b", limit),
        "{}",
        lb.log()
    );
    assert_eq!(served("/"), ["web-a", "web-b"]);
    assert_eq!(served("/api/x"), ["api-b"]);
}

#[test]
fn routing_mistakes_are_config_errors_naming_the_key() {
    let cases = [
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1]}\nroutes:\n  - upstream: apii\n",
            "routes[0].upstream: no upstream named \"apii\"",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1]}\nroutes:\n  - {match: {host: a.test}, upstream: api}\n  - {match: {host: A.test}, upstream: api}\n",
            "routes[1]: routes[1] matches the same host and path prefix as routes[0]",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1], balance: fastest}\nroutes:\n  - upstream: api\n",
            "upstreams.api.balance: \"fastest\"",
        ),
        (
            "upstreams:\n  api: {backends: [nowhere]}\nroutes:\n  - upstream: api\n",
            "upstreams.api.backends[0].address: \"nowhere\"",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1]}\nroutes:\n  - {upstream: api, strip_prefix: true}\n",
            "routes[0].strip_prefix",
        ),
        (
            "upstreams:\n  a: {backends: [127.0.0.1:1]}\n  b: {backends: [127.0.0.1:2]}\n",
            "routes: none given",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1]}\n  api: {backends: [127.0.0.1:2]}\nroutes:\n  - upstream: api\n",
            "upstreams: duplicate entry with key \"api\"",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1], slow_start: soon}\nroutes:\n  - upstream: api\n",
            "upstreams.api.slow_start: invalid value: string \"soon\", expected a duration",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1]}\nroutes:\n  - upstream: api\nbalance: random\n",
            "backends: none, yet balance",
        ),
        (
            "backends: [127.0.0.1:1]\nhash_key: path\n",
            "hash_key: \"path\": only consistent_hash hashes a key",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1], sticky: {cookie: \"a b\"}}\nroutes:\n  - upstream: api\n",
            "upstreams.api.sticky.cookie: \"a b\": not a cookie name",
        ),
        (
            "upstreams:\n  api: {backends: [127.0.0.1:1], balance: peak_ewma, ewma_decay: 0s}\nroutes:\n  - upstream: api\n",
            "upstreams.api.ewma_decay: 0s: must be more than zero",
        ),
        (
            "backends: [127.0.0.1:1]\newma_decay: 5s\n",
            "ewma_decay: only peak_ewma decays; this pool's balance is round_robin",
        ),
    ];
    for (yaml, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lb.yaml");
        std::fs::write(&path, yaml).expect("write the config");
        let (status, output) = run_lb(&["-t", "-c", path.to_str().unwrap()]);
        assert!(!status.success(), "accepted:\n{yaml}");
        assert!(output.contains(expected), "{expected:?} not in:\n{output}");
        // A pool in error is one error, not one more for each route to it.
        if expected.starts_with("upstreams.api.") {
            assert!(!output.contains("no upstream named"), "{output}");
        }
    }
}

#[test]
fn lb_t_prints_the_routes_in_match_order_and_each_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.yaml");
    std::fs::write(
        &path,
        "upstreams:\n  api: {backends: [127.0.0.1:1], balance: least_request}\n  web: {backends: [127.0.0.1:2]}\n\
         routes:\n  - upstream: web\n  - {match: {host: api.test}, upstream: api}\n",
    )
    .expect("write the config");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .expect("run lb -t");
    let output = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{output}");
    let api = output.find("routes[1]: host api.test").expect(&output);
    let web = output.find("routes[0]: host *").expect(&output);
    assert!(api < web, "the exact host is matched first:\n{output}");
    assert!(
        output.contains("api: least_request, 127.0.0.1:1 weight 1"),
        "{output}"
    );
}

/// One request of a [`load`]: which backend answered and how long the
/// client waited for the whole response.
struct Answered {
    backend: String,
    waited: Duration,
}

/// Sends `per_client` requests for `path`, one after another, from each of
/// `clients` threads at once.
fn load(port: u16, path: &str, clients: usize, per_client: usize) -> Vec<Answered> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|_| {
                        let sent = Instant::now();
                        let response = get(port, &path);
                        let waited = sent.elapsed();
                        Answered {
                            backend: served_by(&response),
                            waited,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("a client thread"))
        .collect()
}

/// How many of `answers` each backend gave.
fn counts(answers: &[Answered]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        *counts.entry(answer.backend.clone()).or_insert(0) += 1;
    }
    counts
}

/// How many requests each backend answered when `clients` threads at once
/// send `per_client` requests each.
fn spread(port: u16, clients: usize, per_client: usize) -> HashMap<String, usize> {
    counts(&load(port, "/", clients, per_client))
}

/// The wait that a share `q` of `answers` did not exceed (0.9: p90),
/// by nearest rank.
fn quantile(answers: &[Answered], q: f64) -> Duration {
    let mut waits: Vec<Duration> = answers.iter().map(|a| a.waited).collect();
    waits.sort();
    let rank = (waits.len() as f64 * q).ceil() as usize;
    waits[rank.clamp(1, waits.len()) - 1]
}

/// Backends `fast1`, `fast2` and `slow` (answering `slow_delay` late) in
/// two pools of lb over the same three: `round_robin` serves
/// `/round_robin/`, and a pool balanced by `balance` serves `/{balance}/`.
fn against_round_robin(balance: &str, slow_delay: &str) -> (Vec<Proc>, Lb) {
    let (fast1_be, fast1) = spawn_be_on_any_port("fast1", &[]);
    let (fast2_be, fast2) = spawn_be_on_any_port("fast2", &[]);
    let (slow_be, slow) =
        spawn_be_on_any_port("slow", &["--fault", "delay", "--delay", slow_delay]);
    let backends = format!("[127.0.0.1:{fast1}, 127.0.0.1:{fast2}, 127.0.0.1:{slow}]");
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  round_robin:\n    backends: {backends}\n\
         \x20 {balance}:\n    balance: {balance}\n    backends: {backends}\n\
         routes:\n  - {{match: {{path_prefix: /round_robin/}}, upstream: round_robin}}\n\
         \x20 - {{match: {{path_prefix: /{balance}/}}, upstream: {balance}}}\n"
    ));
    (vec![fast1_be, fast2_be, slow_be], lb)
}

#[test]
fn least_request_sends_little_to_a_slow_backend_and_its_clients_wait_less_than_under_round_robin() {
    // Every answer of the slow one comes half a second late.
    let (_backends, lb) = against_round_robin("least_request", "500ms");
    let round_robin = load(lb.port, "/round_robin/", 32, 15);
    let least_request = load(lb.port, "/least_request/", 32, 15);
    let (by_rr, by_lr) = (counts(&round_robin), counts(&least_request));
    let slow_rr = by_rr.get("slow").copied().unwrap_or(0);
    let slow_lr = by_lr.get("slow").copied().unwrap_or(0);
    assert!(
        slow_lr * 3 <= slow_rr,
        "least_request sent the slow backend {slow_lr} requests, round robin {slow_rr}: {by_lr:?} {by_rr:?}"
    );
    assert!(by_lr.get("fast1").copied().unwrap_or(0) > 0, "{by_lr:?}");
    assert!(by_lr.get("fast2").copied().unwrap_or(0) > 0, "{by_lr:?}");
    // The 90th percentile, not the 99th: least_request evens out the
    // requests in flight, so with 32 clients always waiting the slow
    // backend holds about a third of them and still answers 3 to 6% of
    // the requests. The 99th percentile is then a slow answer under either
    // balance, and came out higher under least_request in 2 of 6 trial
    // runs; the 90th is a slow answer under round robin (a third are) and
    // a fast one under least_request.
    let (p90_rr, p90_lr) = (quantile(&round_robin, 0.9), quantile(&least_request, 0.9));
    assert!(
        p90_lr < p90_rr,
        "p90 {p90_lr:?} under least_request, {p90_rr:?} under round robin"
    );
}

#[test]
fn peak_ewma_keeps_a_slow_backend_out_of_the_clients_p99() {
    let (_backends, lb) = against_round_robin("peak_ewma", "2s");
    // Round robin sends a third to the slow backend: its p99 is a slow one.
    let round_robin = load(lb.port, "/round_robin/", 32, 5);
    // A cold start splits the first burst evenly: nothing is measured
    // yet. One client's few requests first measure the fast backends.
    load(lb.port, "/peak_ewma/", 1, 6);
    let ewma = load(lb.port, "/peak_ewma/", 32, 30);
    // Latency times load: once the slow backend has answered one request,
    // it costs more than a fast one even with all 32 clients waiting on
    // the fast ones, unless they take over 100 ms each. It gets its first
    // requests (no sample yet, then one at a time until it answers), fewer
    // than the 1% of 960 that would reach the p99.
    let slow_ewma = counts(&ewma).get("slow").copied().unwrap_or(0);
    assert!(
        slow_ewma <= 9,
        "peak_ewma sent the slow backend {slow_ewma} of 960"
    );
    let (p99_rr, p99_ewma) = (quantile(&round_robin, 0.99), quantile(&ewma, 0.99));
    assert!(
        p99_ewma < p99_rr,
        "p99 {p99_ewma:?} under peak_ewma, {p99_rr:?} under round robin"
    );
}

#[test]
fn peak_ewma_tries_a_slow_backend_again_as_its_estimate_fades() {
    let (_fast1, fast1) = spawn_be_on_any_port("fast1", &[]);
    let (_fast2, fast2) = spawn_be_on_any_port("fast2", &[]);
    let (_slow, slow) = spawn_be_on_any_port("slow", &["--fault", "delay", "--delay", "200ms"]);
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  app:\n    balance: peak_ewma\n    ewma_decay: 300ms\n\
         \x20   backends: [127.0.0.1:{fast1}, 127.0.0.1:{fast2}, 127.0.0.1:{slow}]\n\
         routes:\n  - upstream: app\n"
    ));
    // Four clients for three seconds (at most 3,000 requests each). The
    // slow backend's first answer makes it the costliest; the fast ones
    // keep theirs fresh. Without samples its estimate fades by e every
    // 300 ms, so within about a second it is tried again, and again after
    // each slow answer: it is never shut out for good.
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let port = lb.port;
            std::thread::spawn(move || {
                let mut late_slow = 0;
                for _ in 0..3000 {
                    if start.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                    let backend = served_by(&get(port, "/"));
                    if backend == "slow" && start.elapsed() > Duration::from_secs(1) {
                        late_slow += 1;
                    }
                }
                late_slow
            })
        })
        .collect();
    let late_slow: usize = clients
        .into_iter()
        .map(|c| c.join().expect("a client thread"))
        .sum();
    assert!(
        late_slow >= 2,
        "after its first second, the slow backend was tried {late_slow} times"
    );
}

#[test]
fn a_reload_adds_changes_and_removes_pools_and_routes_under_load_without_an_error() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::Arc;

    let (_web_be, web) = spawn_be_on_any_port("web", &[]);
    let (_api_be, api) = spawn_be_on_any_port("api", &[]);
    let before = format!("backends: [127.0.0.1:{web}]\n");
    let lb = spawn_lb_with(&before);
    // KeepAliveClient sends `GET /` to the default pool throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::keepalive::keep_alive_load(lb.port, 8, Arc::clone(&stop));
    load.wait_for_answers(200);

    let config = std::fs::read_to_string(lb.config_path()).expect("read the config");
    let after = config.replace(
        &before,
        &format!(
            "{before}upstreams:\n  api:\n    backends: [127.0.0.1:{api}]\n\
             routes:\n  - {{match: {{path_prefix: /api/}}, upstream: api}}\n  - upstream: default\n"
        ),
    );
    std::fs::write(lb.config_path(), after).expect("write the new config");
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    assert!(
        lb.wait_for_log("pool api added", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    // Served at once, by the new pool.
    assert_eq!(served_by(&get_host(lb.port, "x", "/api/users")), "api");
    assert_eq!(served_by(&get_host(lb.port, "x", "/")), "web");
    load.wait_for_answers(200);

    // Then the pool and its routes go, and the default pool changes its
    // balance to one on another ring.
    let config = std::fs::read_to_string(lb.config_path()).expect("read the config");
    let start = config.find("upstreams:").expect("the pools just added");
    let rebuilt = format!(
        "{}balance: consistent_hash\nhash_key: path\n",
        &config[..start]
    );
    std::fs::write(lb.config_path(), rebuilt).expect("write the config");
    lb.wait_until_sighup_is_handled();
    lb.proc.signal("HUP");
    assert!(
        lb.wait_for_log("pool api removed", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    assert!(lb.log().contains("pool default rebuilt"), "{}", lb.log());
    assert_eq!(served_by(&get_host(lb.port, "x", "/api/users")), "web");
    load.wait_for_answers(200);
    stop.store(true, Relaxed);
    let (ok, errors) = load.join().expect("the load");
    assert!(ok > 0, "no request went through");
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// The backend serving `GET /k{key}` for each key.
fn placement(port: u16, keys: std::ops::Range<usize>) -> Vec<String> {
    keys.map(|k| served_by(&get(port, &format!("/k{k}"))))
        .collect()
}

#[test]
fn consistent_hash_keeps_keys_in_place_and_moves_only_a_lost_backends() {
    let (ports, mut backends) = backends_named_after_their_ports(4);
    let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  cache:\n    balance: consistent_hash\n    hash_key: path\n    backends: [{}]\n\
         routes:\n  - upstream: cache\n",
        list.join(", ")
    ));
    let first = placement(lb.port, 0..1000);
    assert_eq!(
        first,
        placement(lb.port, 0..1000),
        "keys moved between rounds"
    );
    for port in &ports {
        assert!(
            first.iter().any(|b| *b == port.to_string()),
            "backend {port} got no key"
        );
    }
    // One of four backends goes away: its keys move, the others' stay.
    let lost = ports[1].to_string();
    backends[1].kill();
    // Before the health check marks it down, a failed connect retries on
    // the next backend of the ring; after, the ring skips it: either way
    // its keys land on the next backend, and no client sees an error.
    let after = placement(lb.port, 0..1000);
    let moved_elsewhere = first
        .iter()
        .zip(&after)
        .filter(|(before, now)| **before != lost && before != now)
        .count();
    assert!(
        moved_elsewhere <= 50,
        "{moved_elsewhere} of the keys on the remaining backends moved"
    );
    assert!(after.iter().all(|b| *b != lost));
}

#[test]
fn hash_key_without_consistent_hash_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.yaml");
    std::fs::write(
        &path,
        "upstreams:\n  api: {backends: [127.0.0.1:1], hash_key: path}\nroutes:\n  - upstream: api\n",
    )
    .expect("write the config");
    let (status, output) = run_lb(&["-t", "-c", path.to_str().unwrap()]);
    assert!(!status.success());
    assert!(
        output.contains("upstreams.api.hash_key: \"path\": only consistent_hash hashes a key"),
        "{output}"
    );
}

/// `GET /` with `cookie` (if any); the backend and the sticky cookie set.
fn get_with_cookie(port: u16, cookie: Option<&str>) -> (String, Option<String>) {
    let cookie_line = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let raw = raw_exchange(
        port,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{cookie_line}Connection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    let (responses, _) = split_responses(&raw.bytes);
    let response = responses.first().expect("a response");
    assert_eq!(response.status, 200, "{}", raw.text());
    let body = String::from_utf8_lossy(&response.body).into_owned();
    let backend = body
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let set = response
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_string);
    (backend, set)
}

#[test]
fn a_sticky_client_stays_on_its_backend_and_moves_when_it_dies() {
    let (ports, mut backends) = backends_named_after_their_ports(3);
    let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  app:\n    sticky: {{cookie: lb_app, max_age: 1h}}\n    backends: [{}]\n\
         routes:\n  - upstream: app\n",
        list.join(", ")
    ));
    let (first, cookie) = get_with_cookie(lb.port, None);
    let cookie = cookie.expect("the first response sets the sticky cookie");
    assert!(cookie.starts_with("lb_app="), "{cookie}");
    for _ in 0..100 {
        let (backend, set) = get_with_cookie(lb.port, Some(&cookie));
        assert_eq!(backend, first, "a sticky client moved");
        assert_eq!(set, None, "the cookie was set again while it held");
    }
    // Its backend dies: the next request goes elsewhere, with no error,
    // and carries a new cookie naming the new backend.
    let index = ports
        .iter()
        .position(|p| p.to_string() == first)
        .expect("a known backend");
    backends[index].kill();
    let (moved, new_cookie) = get_with_cookie(lb.port, Some(&cookie));
    assert_ne!(moved, first);
    let new_cookie = new_cookie.expect("a new cookie for the new backend");
    assert_ne!(new_cookie, cookie);
    for _ in 0..20 {
        assert_eq!(get_with_cookie(lb.port, Some(&new_cookie)).0, moved);
    }
}

#[test]
fn peak_ewma_sends_little_to_a_slow_backend_and_notices_one_turning_slow() {
    // Two fast backends of four: with two random choices, a request whose
    // two picks are both slow goes to a slow one, so with one fast backend
    // of three a third of the traffic would be the least the slow ones
    // could get. (With three backends and the earlier choice of two
    // neighbours in the ring, the one that turned slow got 91 to 95 of 480
    // that way, against a bound of 96: the failure seen once in a full run.)
    let drip = ["--fault", "drip", "--drip-interval", "4ms"];
    let (_fast1, fast1) = spawn_be_on_any_port("fast1", &[]);
    let (_fast2, fast2) = spawn_be_on_any_port("fast2", &[]);
    // Turns slow on SIGUSR1: same process, same port, same connections.
    let (turning, turning_port) =
        spawn_be_on_any_port("turning", &[&drip[..], &["--fault-after-sigusr1"]].concat());
    let (_slow, slow) = spawn_be_on_any_port("slow", &drip);
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  app:\n    balance: peak_ewma\n    ewma_decay: 2s\n\
         \x20   backends: [127.0.0.1:{fast1}, 127.0.0.1:{fast2}, 127.0.0.1:{turning_port}, 127.0.0.1:{slow}]\n\
         routes:\n  - upstream: app\n"
    ));
    // Until its first answer it has no latency and costs nothing: each
    // client may meet it once.
    let counts = spread(lb.port, 32, 20);
    let total: usize = counts.values().sum();
    let slow_share = counts.get("slow").copied().unwrap_or(0);
    // Round robin would give it a quarter; peak_ewma at most a third of that.
    assert!(
        slow_share * 12 <= total,
        "the slow backend got {slow_share} of {total}: {counts:?}"
    );
    turning.signal("USR1");
    assert!(
        turning.wait_for_output("got SIGUSR1", Duration::from_secs(10)),
        "be did not turn slow"
    );
    let counts = spread(lb.port, 32, 20);
    let total: usize = counts.values().sum();
    let turned = counts.get("turning").copied().unwrap_or(0);
    // Round robin would give it a quarter. Both slow ones are drawn for one
    // request in six and it wins about half of those, with what it took
    // before its first slow answer: 58 to 72 of 640 seen; at most a fifth.
    assert!(
        turned * 5 <= total,
        "the backend that turned slow still got {turned} of {total}: {counts:?}"
    );
    let fast =
        counts.get("fast1").copied().unwrap_or(0) + counts.get("fast2").copied().unwrap_or(0);
    assert!(fast * 2 > total, "{counts:?}");
}

/// How many of `count` requests, sent one after another, `name` answered.
fn share_of(port: u16, name: &str, count: usize) -> usize {
    (0..count)
        .filter(|_| served_by(&get(port, "/")) == name)
        .count()
}

/// The ramp of the slow-start test: long enough that its first and last
/// thirds hold many requests even on a loaded machine.
const RAMP: Duration = Duration::from_secs(6);

/// Asserts that `name`, whose slow start began after `before` and before
/// `noticed`, takes a smaller share of the requests sent in the first third
/// of its ramp than of those sent in its last third, and its full
/// round-robin third once the ramp is over. Requests are timed as they are
/// sent, so a slow machine only gives each window fewer requests, never
/// requests from another window; four clients send at once so that each
/// window holds many.
fn assert_ramps_up(lb: &Lb, name: &str, before: Instant, noticed: Instant) {
    let over = noticed + RAMP;
    let sent: Vec<(Instant, bool)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    // Bounded by time and by count.
                    while Instant::now() < over && seen.len() < 5_000 {
                        let at = Instant::now();
                        seen.push((at, served_by(&get(lb.port, "/")) == name));
                    }
                    seen
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("client thread"))
            .collect()
    });
    let share = |from: Instant, to: Instant| {
        let window: Vec<bool> = sent
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, by_it)| *by_it)
            .collect();
        let hits = window.iter().filter(|by_it| **by_it).count();
        (hits, window.len())
    };
    // At most a third of the way up, and at least two thirds.
    let (early, early_of) = share(before, before + RAMP / 3);
    let (late, late_of) = share(noticed + RAMP * 2 / 3, over);
    assert!(
        early_of >= 30 && late_of >= 30,
        "too few requests to judge: {early_of} in the first third, {late_of} in the last"
    );
    assert!(
        early * late_of < late * early_of,
        "{name} got {early} of {early_of} early in its ramp and {late} of {late_of} late: \
         not a rising share\n{}",
        lb.log()
    );
    // The ramp began before `noticed`, so it is over now.
    let full = share_of(lb.port, name, 90);
    assert_eq!(full, 30, "after its ramp, round robin gives it a third");
}

#[test]
fn slow_start_ramps_up_a_backend_that_is_added_or_comes_back() {
    let (ports, backends) = backends_named_after_their_ports(3);
    let [a, b, c] = [ports[0], ports[1], ports[2]];
    let pool = |list: &str| {
        format!(
            "upstreams:\n  app:\n    slow_start: {}s\n    health_check: {{unhealthy_threshold: 1, healthy_threshold: 1}}\n\
             \x20   backends: [{list}]\nroutes:\n  - upstream: app\n",
            RAMP.as_secs()
        )
    };
    let two = pool(&format!("127.0.0.1:{a}, 127.0.0.1:{b}"));
    let lb = spawn_lb_with(&two);
    // Backends there at start take their full share at once.
    assert_eq!(share_of(lb.port, &a.to_string(), 90), 45);

    // Added by a reload.
    let config = std::fs::read_to_string(lb.config_path()).expect("read the config");
    let three = pool(&format!("127.0.0.1:{a}, 127.0.0.1:{b}, 127.0.0.1:{c}"));
    std::fs::write(lb.config_path(), config.replace(&two, &three)).expect("write the config");
    lb.wait_until_sighup_is_handled();
    let before = Instant::now();
    lb.proc.signal("HUP");
    let added = format!("backend 127.0.0.1:{c} added to the pool");
    assert!(
        lb.wait_for_log(&added, Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    assert_ramps_up(&lb, &c.to_string(), before, Instant::now());

    // Frozen, its health checks time out; thawed, it comes back.
    backends[2].signal("STOP");
    let down = format!("backend 127.0.0.1:{c} down");
    assert!(
        lb.wait_for_log(&down, Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    let before = Instant::now();
    backends[2].signal("CONT");
    let up = format!("backend 127.0.0.1:{c} up");
    assert!(
        lb.wait_for_log(&up, Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    assert_ramps_up(&lb, &c.to_string(), before, Instant::now());
}

#[test]
fn random_balance_spreads_requests_over_every_backend_by_weight() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  app:\n    balance: random\n    backends: [127.0.0.1:{}, 127.0.0.1:{}, {{address: 127.0.0.1:{}, weight: 3}}]\n\
         routes:\n  - upstream: app\n",
        ports[0], ports[1], ports[2]
    ));
    let counts = spread(lb.port, 4, 150);
    let of = |p: u16| counts.get(&p.to_string()).copied().unwrap_or(0);
    // Expected 120, 120 and 360 of 600; a random draw strays, not by half.
    assert!(of(ports[0]) > 60 && of(ports[1]) > 60, "{counts:?}");
    assert!(of(ports[2]) > 240, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 600, "{counts:?}");
}

#[test]
fn a_random_pool_with_one_healthy_backend_left_always_finds_it() {
    // Nothing listens on ports 1 and 2. A random walk of the ring (12
    // steps here) misses the one healthy backend about once in 130 picks;
    // lb then looks at every backend, so none of 1,000 requests fails.
    let (_be, port) = spawn_be_on_any_port("alive", &[]);
    let lb = spawn_lb_with(&format!(
        "upstreams:\n  app:\n    balance: least_request\n\
         \x20   backends: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:{port}]\n\
         routes:\n  - upstream: app\n"
    ));
    for down in ["127.0.0.1:1 down", "127.0.0.1:2 down"] {
        assert!(
            lb.wait_for_log(down, Duration::from_secs(10)),
            "{}",
            lb.log()
        );
    }
    let failed: Vec<u16> = (0..1000)
        .map(|_| get(lb.port, "/").status)
        .filter(|status| *status != 200)
        .collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
}

#[test]
fn the_top_level_backends_take_the_same_balancing_keys_as_a_pool() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let lb = spawn_lb(
        &ports,
        "balance: consistent_hash\nhash_key: path\nslow_start: 10s\n",
    );
    let first = placement(lb.port, 0..60);
    assert_eq!(placement(lb.port, 0..60), first, "a key moved");
    let used: std::collections::HashSet<&String> = first.iter().collect();
    assert_eq!(used.len(), 3, "60 keys on fewer than 3 backends: {first:?}");

    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-t", "-c", lb.config_path().to_str().unwrap()])
        .output()
        .expect("run lb -t");
    let output = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{output}");
    assert!(
        output.contains("consistent_hash of path, slow start 10s"),
        "{output}"
    );
}
