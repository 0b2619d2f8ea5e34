//! Unit tests of the assembly: what a build changes (nothing), what
//! putting it in service changes, and what a reload says needs a restart.
//! No sockets: the pools' backends are IP addresses nothing listens on.

use super::*;
use crate::config::Overrides;
use crate::proxy::Proxy;

/// The config of `yaml`, checked as `lb` would check its file.
fn config(yaml: &str) -> Config {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary config file");
    std::io::Write::write_all(&mut file, yaml.as_bytes()).expect("write the config");
    Config::load(Some(file.path()), &Overrides::default()).expect("a valid config")
}

/// The backends pool `pool` is configured with, as `host:port`.
fn backends_of(pool: &Pool) -> Vec<String> {
    pool.members()
        .entries()
        .iter()
        .map(|e| format!("{}:{}", e.backend.host, e.backend.port))
        .collect()
}

const TWO_POOLS: &str = "upstreams:\n  api: {backends: [127.0.0.1:9001]}\n  \
    web: {backends: [127.0.0.1:9002]}\nroutes:\n  - {match: {host: api.test}, upstream: api}\n  \
    - upstream: web\n";

#[test]
fn a_build_that_fails_at_its_last_step_changes_nothing() {
    let first = config("backends: [127.0.0.1:9001]\n");
    let running = Runtime::build(&first, &[], &Policies::default())
        .expect("the first runtime")
        .pools;
    // New backends, and a TLS listener whose certificate cannot be read:
    // the pools are built before the certificates, the last step.
    let second = config(
        "backends: [127.0.0.1:9002]\nlisteners:\n  - address: 127.0.0.1:8443\n    \
         tls: {certificates: [{cert: /nonexistent/lb.pem, key: /nonexistent/lb.key}]}\n",
    );
    let error = Runtime::build(&second, &running, &Policies::default())
        .err()
        .expect("an unreadable certificate fails the build");
    let text = error.to_string();
    assert!(
        text.contains("listeners[0].tls.certificates[0]") && text.contains("/nonexistent/lb.pem"),
        "the error names the key and the file: {text}"
    );
    assert_eq!(backends_of(&running[0]), ["127.0.0.1:9001"]);
    assert!(running[0]
        .members()
        .state(&"127.0.0.1:9001".parse().unwrap())
        .is_some());
}

#[test]
fn a_pool_whose_ring_fits_is_kept_and_one_that_does_not_is_made_anew() {
    let first = config("backends: [127.0.0.1:9001]\n");
    let running = Runtime::build(&first, &[], &Policies::default())
        .expect("the first runtime")
        .pools;
    let kept = Runtime::build(
        &config("backends: [127.0.0.1:9002]\n"),
        &running,
        &Policies::default(),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&kept.pools()[0], &running[0]));
    assert_eq!(kept.added.len(), 0);
    assert_eq!(kept.updates.len(), 1);
    // A prepared update is not applied: the running pool still has 9001.
    assert_eq!(backends_of(&running[0]), ["127.0.0.1:9001"]);
    let hashed = config("backends: [127.0.0.1:9001]\nbalance: consistent_hash\n");
    let rebuilt = Runtime::build(&hashed, &running, &Policies::default()).unwrap();
    assert!(!Arc::ptr_eq(&rebuilt.pools()[0], &running[0]));
    assert_eq!(rebuilt.added.len(), 1);
}

#[test]
fn put_in_service_applies_the_updates_and_swaps_the_routing_whole() {
    let first = config(TWO_POOLS);
    let runtime = Runtime::build(&first, &[], &Policies::default()).expect("the first runtime");
    let mut running = runtime.pools.clone();
    let control = Proxy::new(runtime.routing, &first).control();
    let second = config("upstreams:\n  api: {backends: [127.0.0.1:9003]}\n");
    let next = Runtime::build(&second, &running, &Policies::default()).expect("the second runtime");
    let api = Arc::clone(&running[0]);
    let started = std::cell::Cell::new(0);
    next.put_in_service(&second, &mut running, &control, &[], |_| {
        started.set(started.get() + 1)
    });
    assert_eq!(started.get(), 0, "no pool was added");
    assert_eq!(running.len(), 1);
    assert!(
        Arc::ptr_eq(&running[0], &api),
        "api is kept, with its state"
    );
    assert_eq!(backends_of(&api), ["127.0.0.1:9003"]);
    let routing = control.routing().load_full();
    let names: Vec<&str> = routing.pools().map(|p| p.name()).collect();
    assert_eq!(names, ["api"]);
    assert!(!routing.has_routes());
}

#[test]
fn a_pool_added_by_a_reload_is_started_once() {
    let first = config("upstreams:\n  api: {backends: [127.0.0.1:9001]}\n");
    let runtime = Runtime::build(&first, &[], &Policies::default()).expect("the first runtime");
    let mut running = runtime.pools.clone();
    let control = Proxy::new(runtime.routing, &first).control();
    let second = config(TWO_POOLS);
    let next = Runtime::build(&second, &running, &Policies::default()).expect("the second runtime");
    let started = std::cell::RefCell::new(Vec::new());
    next.put_in_service(&second, &mut running, &control, &[], |pool| {
        started.borrow_mut().push(pool.name().to_string())
    });
    assert_eq!(*started.borrow(), ["web"]);
    let routing = control.routing().load_full();
    let route = routing.find(Some("api.test"), "/").expect("the api route");
    assert_eq!(route.pool.handle.as_ref().unwrap().pool().name(), "api");
    let route = routing.find(Some("www.test"), "/").expect("the catch-all");
    assert_eq!(route.pool.handle.as_ref().unwrap().pool().name(), "web");
}

#[test]
fn restart_only_names_each_key_that_changed() {
    let first = config("listeners: [127.0.0.1:8000]\nbackends: [127.0.0.1:9001]\n");
    let same = config("listeners: [127.0.0.1:8000]\nbackends: [127.0.0.1:9009]\n");
    assert_eq!(
        RestartOnly::of(&first).changed(&RestartOnly::of(&same)),
        Vec::<&str>::new(),
        "backends change at reload"
    );
    let moved = config(
        "listeners: [127.0.0.1:8001]\nbackends: [127.0.0.1:9001]\n\
         limits: {max_connections: 100}\nserver: {threads: 3}\n",
    );
    assert_eq!(
        RestartOnly::of(&first).changed(&RestartOnly::of(&moved)),
        ["server", "listeners", "limits.max_connections"]
    );
}

#[test]
fn new_certificate_files_are_not_a_listener_change() {
    let listener = |cert: &str| ListenerConfig {
        addr: "127.0.0.1:8443".parse().unwrap(),
        kind: crate::config::ListenerKind::Tls(crate::config::TlsListenerConfig {
            files: vec![crate::config::CertificateFiles {
                cert: cert.into(),
                key: "k.pem".into(),
            }],
            min_version: crate::config::MinTlsVersion::Tls12,
            http2: true,
        }),
        edge: Default::default(),
    };
    assert_eq!(listener("a.pem").shape(), listener("b.pem").shape());
    let mut h1 = listener("a.pem");
    if let crate::config::ListenerKind::Tls(tls) = &mut h1.kind {
        tls.http2 = false;
    }
    assert_ne!(h1.shape(), listener("a.pem").shape());
}

#[test]
fn the_server_section_is_copied_whole() {
    let config =
        config("backends: [127.0.0.1:9001]\nserver: {threads: 3, grace_period_seconds: 7}\n");
    let copy = copy_of(&config.server);
    assert_eq!(copy, config.server);
    assert_eq!(copy.threads, 3);
}
