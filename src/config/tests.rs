//! Unit tests of the config: parsing, checks and the errors that name their key.

use super::backends::parse_backend_address;
use super::*;

fn load_str(yaml: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = serde_yaml_ng::from_str(yaml).map_err(|e| ConfigError::Parse {
        path: "test.yaml".into(),
        message: e.to_string(),
    })?;
    Config::from_file(file, &Overrides::default(), &NO_ENVIRONMENT)
}

/// A test's environment: no `LB_ADMIN_TOKEN`, whatever the shell has.
const NO_ENVIRONMENT: Environment = Environment { admin_token: None };

fn error_text(yaml: &str) -> String {
    load_str(yaml)
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn full_example_parses() {
    let config = load_str(
        "server: {threads: 2, grace_period_seconds: 5}\n\
         listeners: [127.0.0.1:8000]\n\
         backends: [127.0.0.1:8080, {address: 'http://127.0.0.1:8081', weight: 2}]\n\
         health_check: {path: /health, interval: 500ms, timeout: 2s, expected_status: [200, 204], healthy_threshold: 2}\n",
    )
    .unwrap();
    assert_eq!(config.server.threads, 2);
    assert_eq!(config.backends.len(), 2);
    assert_eq!(config.backends[1].weight.get(), 2);
    assert_eq!(config.backends[1].port, 8081);
    assert_eq!(config.health_check.interval, Duration::from_millis(500));
    assert_eq!(config.health_check.healthy_threshold.get(), 2);
    assert_eq!(config.health_check.unhealthy_threshold.get(), 1);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = error_text(
        "server: {threds: 2}\n\
         listeners: [nowhere]\n\
         backends: [127.0.0.1, {address: 127.0.0.1:1, weight: 0}, {adress: x}]\n\
         health_check: {path: health, healthy_threshold: 0}\n",
    );
    for expected in [
        "server.threds",
        "listeners[0]: \"nowhere\"",
        "backends[0].address: \"127.0.0.1\": missing port",
        "backends[1].weight: 0",
        "backends[2]: unknown field `adress`",
        "health_check.path: \"health\"",
        "health_check.healthy_threshold: 0",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn unknown_top_level_key_is_named() {
    let text = error_text("backends: [127.0.0.1:1]\nhelth_check: {path: /}\n");
    assert!(text.contains("helth_check"), "{text}");
}

#[test]
fn bad_duration_is_named() {
    let text = error_text("backends: [127.0.0.1:1]\nhealth_check: {interval: 10 parsecs}\n");
    assert!(text.contains("health_check.interval"), "{text}");
}

#[test]
fn overrides_replace_file_values() {
    let file: FileConfig =
        serde_yaml_ng::from_str("backends: [127.0.0.1:1, 127.0.0.1:2]\nlisteners: [127.0.0.1:3]\n")
            .unwrap();
    let overrides = Overrides {
        listen: vec!["127.0.0.1:9".into()],
        backends: vec!["http://127.0.0.1:7".into()],
        health_check_interval: Some(Duration::from_secs(1)),
        ..Overrides::default()
    };
    let config = Config::from_file(file, &overrides, &NO_ENVIRONMENT).unwrap();
    let addrs: Vec<SocketAddr> = config.listeners.iter().map(|l| l.addr).collect();
    assert_eq!(addrs, vec!["127.0.0.1:9".parse().unwrap()]);
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.backends[0].port, 7);
    assert_eq!(config.health_check.interval, Duration::from_secs(1));
}

#[test]
fn backend_transport_defaults_to_plaintext_http1() {
    let config = load_str("backends: [127.0.0.1:1]\n").unwrap();
    assert_eq!(config.backend_transport.protocol, BackendProtocol::Http1);
    assert!(config.backend_transport.tls.is_none());
    assert_eq!(config.health_check.kind, HealthCheckKind::Http);
}

#[test]
fn backend_tls_defaults_to_verify_and_the_host_name() {
    let config = load_str("backends: [be1:443]\nbackend_protocol: h2\nbackend_tls: {}\n").unwrap();
    assert_eq!(config.backend_transport.protocol, BackendProtocol::H2);
    let tls = config.backend_transport.tls.expect("tls");
    assert!(tls.verify);
    assert!(tls.sni.is_none() && tls.ca.is_none());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn h2_without_tls_and_h2c_with_tls_are_errors() {
    let text = error_text("backends: [127.0.0.1:1]\nbackend_protocol: h2\n");
    assert!(
        text.contains("backend_protocol: \"h2\" is HTTP/2 over TLS"),
        "{text}"
    );
    let text = error_text("backends: [127.0.0.1:1]\nbackend_protocol: h2c\nbackend_tls: {}\n");
    assert!(text.contains("backend_protocol: \"h2c\""), "{text}");
    let text = error_text("backends: [127.0.0.1:1]\nbackend_protocol: h3\n");
    assert!(
        text.contains("backend_protocol: \"h3\": must be http1, h2 or h2c"),
        "{text}"
    );
}

#[test]
fn verify_false_is_a_warning() {
    let config =
        load_str("backends: [127.0.0.1:1]\nbackend_tls: {verify: false, sni: api.internal}\n")
            .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("backend_tls.verify is false")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn an_ip_backend_without_sni_is_warned_about() {
    let config = load_str("backends: [127.0.0.1:1]\nbackend_tls: {}\n").unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("backend_tls.sni is not set")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let text = error_text(&format!(
        "backends: [127.0.0.1:1]\nbackend_tls: {{ca: {}}}\n",
        missing.display()
    ));
    assert!(text.contains("backend_tls.ca"), "{text}");
    assert!(text.contains("missing.pem"), "{text}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let text = error_text(&format!(
        "backends: [127.0.0.1:1]\nbackend_tls: {{ca: {}}}\n",
        empty.display()
    ));
    assert!(text.contains("backend_tls.ca"), "{text}");
    assert!(text.contains("empty.pem"), "{text}");
    assert!(text.contains("no PEM certificate"), "{text}");
}

#[test]
fn an_empty_sni_is_an_error() {
    let text = error_text("backends: [127.0.0.1:1]\nbackend_tls: {sni: ''}\n");
    assert!(text.contains("backend_tls.sni: \"\""), "{text}");
}

#[test]
fn health_check_type_is_checked() {
    let config =
        load_str("backends: [127.0.0.1:1]\nbackend_protocol: h2c\nhealth_check: {type: grpc}\n")
            .unwrap();
    assert_eq!(config.health_check.kind, HealthCheckKind::Grpc);
    let config = load_str("backends: [127.0.0.1:1]\nhealth_check: {type: tcp}\n").unwrap();
    assert_eq!(config.health_check.kind, HealthCheckKind::Tcp);
    let text = error_text("backends: [127.0.0.1:1]\nhealth_check: {type: icmp}\n");
    assert!(
        text.contains("health_check.type: \"icmp\": must be http, tcp or grpc"),
        "{text}"
    );
    let text = error_text("backends: [127.0.0.1:1]\nhealth_check: {type: grpc}\n");
    assert!(
        text.contains("health_check.type: \"grpc\": gRPC needs HTTP/2"),
        "{text}"
    );
}

#[test]
fn backend_address_forms() {
    assert!(parse_backend_address("127.0.0.1:80").is_ok());
    assert!(parse_backend_address("http://127.0.0.1:80/").is_ok());
    assert!(parse_backend_address("localhost:80").is_ok());
    assert!(parse_backend_address("https://127.0.0.1:80").is_err());
    assert!(parse_backend_address("127.0.0.1:80/x").is_err());
    assert!(parse_backend_address("127.0.0.1:99999").is_err());
    assert!(parse_backend_address("bad host!:80").is_err());
    assert_eq!(
        parse_backend_address("[::1]:80"),
        Ok(("::1".to_string(), 80))
    );
}

/// Two named pools, `api` and `web`, and `rest` of the file.
fn two_pools(rest: &str) -> String {
    format!(
        "upstreams:\n  api: {{backends: [127.0.0.1:9001]}}\n  web: {{backends: [127.0.0.1:9002]}}\n{rest}"
    )
}

#[test]
fn routes_name_their_pools_and_pools_keep_the_order_written() {
    let config = load_str(&two_pools(
        "routes:\n  - {match: {path_prefix: /api/}, upstream: api, strip_prefix: true}\n  \
         - {match: {host: '*.example.com'}, upstream: web}\n",
    ))
    .expect("routes to both pools");
    let names: Vec<&str> = config.pools.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        ["api", "web"],
        "no top-level backends: no default pool"
    );
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.routes[0].name, "routes[0]");
    assert_eq!(config.routes[0].pool.as_deref(), Some("api"));
    assert!(config.routes[0].strip_prefix);
    assert_eq!(config.routes[1].pool.as_deref(), Some("web"));
    assert_eq!(config.routes[1].host.as_deref(), Some("*.example.com"));
}

#[test]
fn the_top_level_backends_are_the_default_pool_first() {
    let config = load_str(
        "backends: [127.0.0.1:9000]\nupstreams:\n  api: {backends: [127.0.0.1:9001]}\n\
         routes:\n  - {match: {path_prefix: /api/}, upstream: api}\n  - upstream: default\n",
    )
    .expect("a default pool and a named one");
    let names: Vec<&str> = config.pools.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, [DEFAULT_POOL, "api"]);
    assert_eq!(config.routes[0].pool.as_deref(), Some("api"));
    assert_eq!(config.routes[1].pool.as_deref(), Some(DEFAULT_POOL));
}

#[test]
fn several_pools_need_routes() {
    let text = error_text(&two_pools(""));
    assert!(text.contains("routes: none given"), "{text}");
}

#[test]
fn a_route_to_an_unknown_pool_names_the_pools_there_are() {
    let text = error_text(&two_pools("routes:\n  - upstream: db\n"));
    assert!(
        text.contains("routes[0].upstream: no upstream named \"db\" (there are: api, web)"),
        "{text}"
    );
}

#[test]
fn a_route_to_a_pool_that_did_not_parse_is_not_a_second_error() {
    let text = error_text(
        "upstreams:\n  api: {backends: [nowhere]}\n  web: {backends: [127.0.0.1:9002]}\n\
         routes:\n  - {match: {path_prefix: /api/}, upstream: api}\n  - upstream: web\n",
    );
    assert!(text.contains("upstreams.api.backends[0]"), "{text}");
    assert!(!text.contains("routes[0]"), "{text}");
}

#[test]
fn route_matches_are_checked() {
    let text = error_text(&two_pools(
        "routes:\n  - {match: {path_prefix: api}, upstream: api}\n  \
         - {upstream: web, strip_prefix: true}\n  - {match: {host: 'a b'}, upstream: web}\n",
    ));
    assert!(
        text.contains("routes[0].match.path_prefix: \"api\": must start with /"),
        "{text}"
    );
    assert!(
        text.contains("routes[1].strip_prefix: true without match.path_prefix"),
        "{text}"
    );
    assert!(text.contains("routes[2].match.host: \"a b\""), "{text}");
}

#[test]
fn top_level_balancing_without_top_level_backends_is_an_error() {
    let text = error_text(&two_pools(
        "balance: least_request\nroutes:\n  - {match: {path_prefix: /api/}, upstream: api}\n  \
         - upstream: web\n",
    ));
    assert!(
        text.contains("backends: none, yet balance, hash_key, ewma_decay, sticky or slow_start"),
        "{text}"
    );
}

#[test]
fn resilience_sections_default_when_absent() {
    let config = load_str("backends: [127.0.0.1:9000]\n").expect("minimal config");
    let defaults = load_str("backends: [127.0.0.1:9000]\nretry: {}\ntimeouts: {}\nlimits: {}\n")
        .expect("empty sections");
    assert_eq!(config.retry.attempts, defaults.retry.attempts);
    assert_eq!(config.timeouts.client_idle, defaults.timeouts.client_idle);
    assert_eq!(
        config.limits.max_connections,
        defaults.limits.max_connections
    );
    assert!(config.routes.is_empty());
    assert_eq!(config.pools.len(), 1);
}

#[test]
fn the_idle_connection_pool_is_sized_by_the_backends_unless_written() {
    let backends: Vec<String> = (0..300)
        .map(|i| format!("127.0.0.1:{}", 9000 + i))
        .collect();
    let yaml = format!("backends: [{}]\n", backends.join(", "));
    let config = load_str(&yaml).expect("300 backends");
    assert_eq!(config.server.upstream_keepalive_pool_size, 600);
    let written = load_str(&format!(
        "{yaml}server: {{upstream_keepalive_pool_size: 50}}\n"
    ))
    .expect("a written size");
    assert_eq!(written.server.upstream_keepalive_pool_size, 50);
    let few = load_str("backends: [127.0.0.1:9000]\n").expect("one backend");
    assert_eq!(few.server.upstream_keepalive_pool_size, 128);
}

#[test]
fn on_marked_down_is_keep_by_default_and_a_pool_may_close() {
    let config = load_str(
        "backends: [127.0.0.1:8080]\n\
         upstreams:\n  api: {backends: [127.0.0.1:8081], health_check: {on_marked_down: close}}\n\
         routes: [{match: {path_prefix: /api/}, upstream: api}, {upstream: default}]\n\
         discovery: {hold_missing: 0s}\n",
    )
    .unwrap();
    assert_eq!(config.health_check.on_marked_down, OnMarkedDown::Keep);
    let api = config.pools.iter().find(|p| p.name == "api").unwrap();
    assert_eq!(api.health_check.on_marked_down, OnMarkedDown::Close);
    assert_eq!(config.descriptors_per_connection(), 3);
    assert_eq!(config.discovery.hold_missing, Duration::ZERO);
    let default = load_str("backends: [127.0.0.1:8080]\n").unwrap();
    assert_eq!(default.descriptors_per_connection(), 2);
    assert_eq!(default.discovery.hold_missing, Duration::from_secs(30));
}

#[test]
fn an_unknown_on_marked_down_names_its_key_and_value() {
    let text = error_text("backends: [127.0.0.1:8080]\nhealth_check: {on_marked_down: shutdown}\n");
    assert!(
        text.contains("on_marked_down") && text.contains("shutdown"),
        "{text}"
    );
}
