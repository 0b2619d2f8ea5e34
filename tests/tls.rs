//! TLS and HTTP/2 towards clients (issue 13), as real clients see them:
//! `openssl s_client` for the certificate chosen by SNI and the protocol
//! versions, `curl` for HTTPS over HTTP/1.1 and HTTP/2 and for h2c, `h2load`
//! for many streams, under a certificate reload and across a graceful
//! upgrade. Certificates are made at test time with the `openssl` CLI in the
//! lb's own temporary directory. A test whose tool is missing prints
//! `skipped: ...` and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::*;
use common::upgrade::run_lb_upgrade;
use common::*;

/// A certificate's files.
type CertFiles = (PathBuf, PathBuf);

/// A `listeners:` entry for a TLS listener on `port` with `certs` (the
/// first the default), in YAML flow style; `more` is added to its `tls:`
/// section (e.g. `min_version: "1.3"`).
fn tls_listener(port: u16, certs: &[&CertFiles], more: &str) -> String {
    let certificates = certs
        .iter()
        .map(|(cert, key)| format!("{{cert: {}, key: {}}}", path(cert), path(key)))
        .collect::<Vec<_>>()
        .join(", ");
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(", {more}")
    };
    format!("{{address: 127.0.0.1:{port}, tls: {{certificates: [{certificates}]{more}}}}}")
}

/// A `listeners:` entry for a plain listener on `port` that also takes
/// HTTP/2 with prior knowledge.
fn h2c_listener(port: u16) -> String {
    format!("{{address: 127.0.0.1:{port}, h2c: true}}")
}

/// A `listeners:` entry that redirects every request on `port` to HTTPS on
/// `https_port`.
fn redirect_listener(port: u16, https_port: u16) -> String {
    format!("{{address: 127.0.0.1:{port}, redirect_https: {https_port}}}")
}

/// The port of a listener entry made by the functions above.
fn port_of(entry: &str) -> u16 {
    entry
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {entry}"))
}

/// The test config: [`BaseConfig`] (edited by `edit`) whose plain listener
/// is followed by `entries`, then the backends on `backends`, then `extra`.
fn config_with_listeners(
    dir: &Path,
    port: u16,
    edit: impl FnOnce(&mut BaseConfig),
    entries: &[String],
    backends: &[u16],
    extra: &str,
) -> String {
    let mut base = BaseConfig::new(dir, port);
    edit(&mut base);
    let yaml = base.yaml();
    let plain = format!("- 127.0.0.1:{port}\n");
    assert!(yaml.contains(&plain), "no plain listener line in {yaml}");
    let listed: String = entries.iter().map(|e| format!("- {e}\n")).collect();
    format!(
        "{}{}{extra}",
        yaml.replacen(&plain, &format!("{plain}{listed}"), 1),
        backends_yaml(backends)
    )
}

/// Starts lb in `dir` (where the certificates are) with its plain listener,
/// `entries` and the backends on `backends`, and waits until every listener
/// accepts.
fn spawn_lb_with_listeners(
    dir: tempfile::TempDir,
    edit: impl FnOnce(&mut BaseConfig),
    entries: &[String],
    backends: &[u16],
    extra: &str,
) -> Lb {
    let port = free_port();
    let config = config_with_listeners(dir.path(), port, edit, entries, backends, extra);
    let lb = spawn_lb_with_config(dir, port, &config);
    for entry in entries {
        wait_for_port(port_of(entry));
    }
    lb
}

/// A temporary directory with the certificates most tests use: `a.test`
/// (names a.test and localhost; the default) and `b.test` (`*.b.test`).
fn dir_with_two_certs() -> (tempfile::TempDir, CertFiles, CertFiles) {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = make_cert(dir.path(), "a.test", &["a.test", "localhost"]);
    let b = make_cert(dir.path(), "b.test", &["*.b.test"]);
    (dir, a, b)
}

/// `curl` to `https://a.test:PORT{path_and_args}` trusting `ca`, with a.test
/// resolved to 127.0.0.1; `args` go before the URL.
fn curl_a_test(port: u16, ca: &Path, args: &[&str], path: &str) -> Output {
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}{path}");
    let mut all = vec!["--cacert", common::tls::path(ca), "--resolve", &resolve];
    all.extend_from_slice(args);
    all.push(&url);
    curl(&all)
}

/// The body and the `%{http_version}` of a curl run whose `-w` wrote
/// `\n@@VERSION` after the body (which ends with its own newline).
fn body_and_version(output: &Output) -> (String, String) {
    assert!(output.status.success(), "curl failed: {}", text(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (body, version) = stdout
        .rsplit_once("\n@@")
        .unwrap_or_else(|| panic!("no version after the body: {stdout:?}"));
    (body.to_string(), version.to_string())
}

const HELLO_ONE: &str = "Hello From Backend Server one\n";

/// The subject `CN=cn` as `openssl x509 -subject` writes it.
fn subject(cn: &str) -> Option<String> {
    Some(format!("subject=CN = {cn}"))
}

// 1. Certificates by SNI.

#[test]
fn sni_picks_the_certificate_by_name_and_others_get_the_first() {
    if !tools_installed(&["openssl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, b) = dir_with_two_certs();
    let tls_port = free_port();
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&a, &b], "")],
        &[be_port],
        "",
    );

    for (sni, cn) in [
        (Some("x.b.test"), "b.test"),
        (Some("X.B.TEST"), "b.test"),
        (Some("a.test"), "a.test"),
        (Some("localhost"), "a.test"),
        (Some("unknown.test"), "a.test"),
        // A wildcard covers one label, not the parent name.
        (Some("b.test"), "a.test"),
        (Some("y.x.b.test"), "a.test"),
        (None, "a.test"),
    ] {
        let args: Vec<&str> = sni.map_or(vec![], |name| vec!["-servername", name]);
        let handshake = s_client(tls_port, &args);
        assert!(handshake.ok, "SNI {sni:?}: {}", handshake.output);
        assert_eq!(
            handshake.subject,
            subject(cn),
            "SNI {sni:?} got the wrong certificate:\n{}",
            handshake.output
        );
    }
}

// 2. TLS versions.

#[test]
fn min_version_1_3_refuses_tls_1_2_and_the_default_takes_1_2_but_not_1_1() {
    if !tools_installed(&["openssl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, _b) = dir_with_two_certs();
    let (only_13, default) = (free_port(), free_port());
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[
            tls_listener(only_13, &[&a], "min_version: \"1.3\""),
            tls_listener(default, &[&a], ""),
        ],
        &[be_port],
        "",
    );

    let refused = s_client(only_13, &["-tls1_2"]);
    assert!(
        !refused.ok && refused.protocol.is_none(),
        "min_version 1.3 accepted TLS 1.2:\n{}",
        refused.output
    );
    let tls13 = s_client(only_13, &["-tls1_3"]);
    assert!(tls13.ok, "{}", tls13.output);
    assert_eq!(
        tls13.protocol.as_deref(),
        Some("TLSv1.3"),
        "{}",
        tls13.output
    );

    let tls12 = s_client(default, &["-tls1_2"]);
    assert!(tls12.ok, "{}", tls12.output);
    assert_eq!(
        tls12.protocol.as_deref(),
        Some("TLSv1.2"),
        "{}",
        tls12.output
    );
    let tls13 = s_client(default, &[]);
    assert_eq!(
        tls13.protocol.as_deref(),
        Some("TLSv1.3"),
        "{}",
        tls13.output
    );

    // The client's OpenSSL refuses TLS 1.1 itself at its default security
    // level; level 0 makes it send a TLS 1.1 ClientHello, which lb must
    // refuse.
    for old in ["-tls1_1", "-tls1"] {
        let refused = s_client(default, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(
            !refused.output.contains("no protocols available"),
            "the client did not try {old}:\n{}",
            refused.output
        );
        assert!(
            !refused.ok && refused.protocol.is_none(),
            "the default listener accepted {old}:\n{}",
            refused.output
        );
    }
}

#[test]
fn the_tls_listen_flags_serve_https_without_a_config_file() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, b) = dir_with_two_certs();
    let tls_port = free_port();
    let backend = format!("127.0.0.1:{be_port}");
    let listen = format!("127.0.0.1:{tls_port}");
    let _lb = Proc::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["--tls-listen", &listen, "--backend", &backend])
            .args(["--cert", path(&a.0), "--key", path(&a.1)])
            .args(["--cert", path(&b.0), "--key", path(&b.1)])
            .env("RUST_LOG", "warn")
            .current_dir(dir.path()),
    );
    wait_for_port(tls_port);
    let answer = curl_a_test(tls_port, &a.0, &[], "/");
    assert_eq!(String::from_utf8_lossy(&answer.stdout), HELLO_ONE);
    // The second pair is chosen by SNI, as from a config file.
    assert_eq!(
        s_client(tls_port, &["-servername", "x.b.test"]).subject,
        subject("b.test")
    );
}

// 3. HTTPS through lb.

#[test]
fn curl_gets_http_1_1_and_http_2_over_tls_and_the_backend_sees_https() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, _b) = dir_with_two_certs();
    let tls_port = free_port();
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&a], "")],
        &[be_port],
        "",
    );
    let ca = &a.0;
    let version = ["-w", "\n@@%{http_version}"];

    for (flag, expected) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let args = [&[flag][..], &version[..]].concat();
        let (body, got) = body_and_version(&curl_a_test(tls_port, ca, &args, "/"));
        assert_eq!(body, HELLO_ONE, "{flag}");
        assert_eq!(got, expected, "{flag} negotiated HTTP/{got}");

        let (headers, _) = body_and_version(&curl_a_test(tls_port, ca, &args, "/headers"));
        let headers = headers.to_ascii_lowercase();
        assert!(
            headers.contains("x-forwarded-proto: https\n"),
            "{flag}: the backend saw:\n{headers}"
        );
    }
}

// 4. h2c.

#[test]
fn an_h2c_listener_serves_http_2_with_prior_knowledge_and_still_http_1() {
    if !tools_installed(&["curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let h2c = free_port();
    let _lb = spawn_lb_with_listeners(dir, |_| {}, &[h2c_listener(h2c)], &[be_port], "");
    let url = format!("http://127.0.0.1:{h2c}/");
    let version = "\n@@%{http_version}";

    let (body, got) = body_and_version(&curl(&["--http2-prior-knowledge", "-w", version, &url]));
    assert_eq!((body.as_str(), got.as_str()), (HELLO_ONE, "2"));
    let (headers, _) = body_and_version(&curl(&[
        "--http2-prior-knowledge",
        "-w",
        version,
        &format!("{url}headers"),
    ]));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-forwarded-proto: http\n"),
        "h2c is not TLS; the backend saw:\n{headers}"
    );

    let (body, got) = body_and_version(&curl(&["--http1.1", "-w", version, &url]));
    assert_eq!((body.as_str(), got.as_str()), (HELLO_ONE, "1.1"));

    let reply = raw_exchange(h2c, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(10));
    let (responses, _) = split_responses(&reply.bytes);
    assert_eq!(responses.len(), 1, "{:?}", reply.text());
    assert_eq!(responses[0].status, 200, "{:?}", reply.text());
    assert_eq!(String::from_utf8_lossy(&responses[0].body), HELLO_ONE);
}

// 5. Many streams.

#[test]
fn h2load_streams_all_succeed_over_tls_and_h2c() {
    if !tools_installed(&["openssl", "h2load"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, _b) = dir_with_two_certs();
    let (tls_port, h2c) = (free_port(), free_port());
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&a], ""), h2c_listener(h2c)],
        &[be_port],
        "",
    );

    for (url, alpn) in [
        (format!("https://127.0.0.1:{tls_port}/"), "h2"),
        (format!("http://127.0.0.1:{h2c}/"), "h2c"),
    ] {
        let report = h2load(&["-n", "2000", "-c", "4", "-m", "16", &url]);
        assert!(
            report
                .output
                .contains(&format!("Application protocol: {alpn}\n")),
            "{url}: not {alpn}:\n{}",
            report.output
        );
        report.assert_clean(Some(2000));
    }
}

// 6. What is not TLS on a TLS port.

#[test]
fn plain_http_to_a_tls_port_gets_a_400_and_garbage_a_close() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, _b) = dir_with_two_certs();
    let tls_port = free_port();
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&a], "")],
        &[be_port],
        "",
    );

    let plain = raw_exchange(
        tls_port,
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Duration::from_secs(10),
    );
    let (responses, _) = split_responses(&plain.bytes);
    assert_eq!(responses.len(), 1, "{:?} {:?}", plain.text(), plain.end);
    assert_eq!(responses[0].status, 400, "{:?}", plain.text());
    assert!(
        String::from_utf8_lossy(&responses[0].body).contains("https"),
        "{:?}",
        plain.text()
    );
    assert_eq!(plain.end, RawEnd::Eof, "{:?}", plain.text());

    for garbage in [&b"\x00\x01\x02 not TLS at all\r\n\r\n"[..], &[0xff; 64][..]] {
        let reply = raw_exchange(tls_port, garbage, Duration::from_secs(10));
        assert!(
            reply.bytes.is_empty() && matches!(reply.end, RawEnd::Eof | RawEnd::Reset),
            "garbage got {:?}, ended {:?}",
            reply.text(),
            reply.end
        );
    }

    let (body, version) = body_and_version(&curl_a_test(
        tls_port,
        &a.0,
        &["--http2", "-w", "\n@@%{http_version}"],
        "/",
    ));
    assert_eq!((body.as_str(), version.as_str()), (HELLO_ONE, "2"));
}

// 7. Redirect to HTTPS.

#[test]
fn a_redirect_https_listener_answers_308_to_the_same_url() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, _b) = dir_with_two_certs();
    let (tls_port, to_tls, to_443) = (free_port(), free_port(), free_port());
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[
            tls_listener(tls_port, &[&a], ""),
            redirect_listener(to_tls, tls_port),
            redirect_listener(to_443, 443),
        ],
        &[be_port],
        "",
    );

    let ask = |port: u16, raw: &str| {
        let reply = raw_exchange(port, raw.as_bytes(), Duration::from_secs(10));
        let (mut responses, _) = split_responses(&reply.bytes);
        assert_eq!(responses.len(), 1, "{:?}", reply.text());
        responses.remove(0)
    };
    let get = "GET /x?y=1 HTTP/1.1\r\nHost: a.test:80\r\nConnection: close\r\n\r\n";
    let post = "POST /x?y=1 HTTP/1.1\r\nHost: a.test:80\r\nContent-Length: 3\r\n\
                Connection: close\r\n\r\nabc";
    for (port, location) in [
        (to_tls, format!("https://a.test:{tls_port}/x?y=1")),
        (to_443, "https://a.test/x?y=1".to_string()),
    ] {
        for raw in [get, post] {
            let response = ask(port, raw);
            assert_eq!(response.status, 308, "{raw:?}: {response:?}");
            assert_eq!(
                response.header("location"),
                Some(location.as_str()),
                "{raw:?}"
            );
        }
    }

    // A browser-like client follows it to the TLS listener.
    let resolve_http = format!("a.test:{to_tls}:127.0.0.1");
    let resolve_https = format!("a.test:{tls_port}:127.0.0.1");
    let output = curl(&[
        "-L",
        "--cacert",
        path(&a.0),
        "--resolve",
        &resolve_http,
        "--resolve",
        &resolve_https,
        &format!("http://a.test:{to_tls}/"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), HELLO_ONE);
}

// 8. and 9. Certificate reload.

/// Arguments for h2load: the HTTP/2 load run across a reload or an
/// upgrade. 16 connections of at most 4 streams, `n` requests at 50 per
/// second per connection, so `n` / 800 seconds however fast the machine
/// (`-n`, not `-D`: see [`h2load`]).
fn h2_load(url: &str, n: u64) -> Vec<String> {
    let n = n.to_string();
    ["-n", &n, "-c", "16", "-m", "4", "--rps", "50", "--", url]
        .map(String::from)
        .to_vec()
}

/// Overwrites the live certificate files with `with`'s, in place.
fn overwrite(live: &CertFiles, with: &CertFiles) {
    std::fs::copy(&with.0, &live.0).expect("overwrite the certificate");
    std::fs::copy(&with.1, &live.1).expect("overwrite the key");
}

/// Waits until lb's log holds `n` access lines of `GET /` answered 200 over
/// HTTP/2: a load is under way.
fn wait_for_http2_answers(lb: &Lb, n: usize) {
    let answered = || lb.log().matches("\"GET / HTTP/2\" 200").count();
    assert!(
        wait_until(Duration::from_secs(10), || answered() >= n),
        "{} of {n} HTTP/2 requests answered:\n{}",
        answered(),
        lb.log()
    );
}

/// Makes `live.pem`/`live.key` in `dir` for a.test, and a second
/// certificate `next` for the same names with another serial.
fn live_and_next(dir: &Path) -> (CertFiles, CertFiles) {
    let first = make_cert(dir, "a.test", &["a.test", "localhost"]);
    let live = (dir.join("live.pem"), dir.join("live.key"));
    overwrite(&live, &first);
    let next = make_cert(dir, "next", &["a.test", "localhost"]);
    assert_ne!(serial_of_file(&first.0), serial_of_file(&next.0));
    (live, next)
}

#[test]
fn certificates_reload_under_http_2_load_without_an_error() {
    if !tools_installed(&["openssl", "h2load"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (live, next) = live_and_next(dir.path());
    let old_serial = serial_of_file(&live.0);
    let new_serial = serial_of_file(&next.0);
    let tls_port = free_port();
    let lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&live], "")],
        &[be_port],
        "",
    );
    assert_eq!(s_client(tls_port, &[]).serial, Some(old_serial.clone()));
    lb.wait_until_sighup_is_handled();

    // 16 HTTP/2 clients, 50 requests/s each for 6 s, and new handshakes
    // one after another.
    let url = format!("https://127.0.0.1:{tls_port}/");
    let mut load = h2load_in_background(lb.dir.path(), &h2_load(&url, 4800));
    let stop = Arc::new(AtomicBool::new(false));
    let shaken = Arc::new(AtomicUsize::new(0));
    let handshakes = {
        let (stop, shaken) = (Arc::clone(&stop), Arc::clone(&shaken));
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Relaxed) && seen.len() < 200 && Instant::now() < deadline {
                seen.push(s_client(tls_port, &["-servername", "a.test"]));
                shaken.fetch_add(1, Relaxed);
            }
            seen
        })
    };
    // Both are under way: h2load's requests are answered, a handshake done.
    wait_for_http2_answers(&lb, 32);
    assert!(
        wait_until(Duration::from_secs(10), || shaken.load(Relaxed) > 0),
        "no handshake before the reload"
    );

    overwrite(&live, &next);
    lb.proc.signal("HUP");
    assert!(
        lb.wait_for_log("certificates of 1 TLS listener(s)", Duration::from_secs(10)),
        "no reload in the log:\n{}",
        lb.log()
    );
    assert!(
        load.running(),
        "h2load finished before the reload: the test tested nothing"
    );
    let after = s_client(tls_port, &["-servername", "a.test"]);
    assert!(after.ok, "{}", after.output);
    assert_eq!(
        after.serial,
        Some(new_serial.clone()),
        "a handshake after the reload got the old certificate"
    );

    let report = load.finish(Duration::from_secs(30));
    stop.store(true, Relaxed);
    let seen = handshakes.join().expect("the handshake thread");
    eprintln!(
        "{} handshakes during the reload; h2load: {} succeeded",
        seen.len(),
        report.succeeded
    );
    for handshake in &seen {
        assert!(
            handshake.ok
                && [Some(&old_serial), Some(&new_serial)].contains(&handshake.serial.as_ref()),
            "a handshake during the reload failed or got neither certificate:\n{}",
            handshake.output
        );
    }
    report.assert_every_started_request_succeeded();
    report.assert_clean(Some(4800));
}

#[test]
fn a_key_that_does_not_match_at_reload_is_named_and_the_old_certificate_stays() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (live, _next) = live_and_next(dir.path());
    let old_serial = serial_of_file(&live.0);
    let stranger = make_key(dir.path(), "stranger");
    let tls_port = free_port();
    let lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&live], "")],
        &[be_port],
        "",
    );

    let before = s_client(tls_port, &["-servername", "a.test"]);
    assert_eq!(before.serial, Some(old_serial.clone()), "{}", before.output);
    lb.wait_until_sighup_is_handled();

    std::fs::copy(&stranger, &live.1).expect("overwrite the key");
    lb.proc.signal("HUP");
    let key = path(&live.1);
    assert!(
        lb.wait_for_log(
            &format!("{key}: this key does not match"),
            Duration::from_secs(10)
        ),
        "the log does not name {key}:\n{}",
        lb.log()
    );
    assert!(
        !lb.log().contains("certificates of 1 TLS listener(s)"),
        "{}",
        lb.log()
    );

    let handshake = s_client(tls_port, &["-servername", "a.test"]);
    assert!(handshake.ok, "{}", handshake.output);
    assert_eq!(handshake.serial, Some(old_serial), "{}", handshake.output);
    let (body, _) = body_and_version(&curl_a_test(
        tls_port,
        &live.0,
        &["--http2", "-w", "\n@@%{http_version}"],
        "/",
    ));
    assert_eq!(body, HELLO_ONE);
}

/// Runs `lb -t` on `config` written to `dir/check.yaml`; returns its
/// output.
fn lb_t(dir: &Path, config: &str) -> Output {
    let file = dir.join("check.yaml");
    std::fs::write(&file, config).expect("write the config");
    run(env!("CARGO_BIN_EXE_lb"), &["-t", "-c", path(&file)])
}

#[test]
fn lb_t_names_a_bad_certificate_and_its_file_and_warns_of_an_expired_one() {
    if !tools_installed(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (a, b) = (
        make_cert(d, "a.test", &["a.test"]),
        make_cert(d, "b.test", &["*.b.test"]),
    );
    let stranger = make_key(d, "stranger");
    let malformed = d.join("malformed.pem");
    std::fs::write(&malformed, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let missing = d.join("missing.pem");
    let (tls0, tls1) = (free_port(), free_port());

    let cases: [(CertFiles, &Path, &str); 3] = [
        ((b.0.clone(), stranger.clone()), &stranger, "does not match"),
        ((malformed.clone(), b.1.clone()), &malformed, ""),
        ((missing.clone(), b.1.clone()), &missing, "cannot read"),
    ];
    for (bad, file, why) in cases {
        // The bad pair is listeners[2] (after the plain one and a good TLS
        // one), certificates[1] (after a good one).
        let config = config_with_listeners(
            d,
            free_port(),
            |_| {},
            &[
                tls_listener(tls0, &[&a], ""),
                tls_listener(tls1, &[&a, &bad], ""),
            ],
            &[9],
            "",
        );
        let output = lb_t(d, &config);
        let said = text(&output);
        assert!(!output.status.success(), "lb -t accepted {bad:?}:\n{said}");
        assert!(
            said.contains("listeners[2].tls.certificates[1]"),
            "the key is not named:\n{said}"
        );
        assert!(
            said.contains(path(file)) && said.contains(why),
            "{} ({why}) is not named:\n{said}",
            file.display()
        );
        assert!(!said.contains("panicked"), "{said}");
    }

    let expired = make_expired_cert(d, "old.test");
    let config = config_with_listeners(
        d,
        free_port(),
        |_| {},
        &[tls_listener(tls0, &[&a, &expired], "")],
        &[9],
        "",
    );
    let output = lb_t(d, &config);
    let said = text(&output);
    assert!(
        output.status.success(),
        "an expired certificate is a warning, not an error:\n{said}"
    );
    let warning = said
        .lines()
        .find(|l| l.starts_with("warning") && l.contains(path(&expired.0)))
        .unwrap_or_else(|| panic!("no warning naming {}:\n{said}", expired.0.display()));
    assert!(warning.contains("expired"), "{warning}");
}

// 10. Graceful upgrade with HTTP/2 clients.

/// `log` without its access lines (thousands under load).
fn without_access_lines(log: &str) -> String {
    log.lines()
        .filter(|l| !l.contains("lb::access"))
        .map(|l| format!("{l}\n"))
        .collect()
}

// h2load is not used across an upgrade: after a GOAWAY it sends nothing
// more on that connection and never opens another (nghttp2's
// `try_again_or_fail`), so every request it had left counts as failed
// although lb never saw it. Clients that reconnect, as RFC 9113 6.8 asks,
// are below.

/// Clients that do what RFC 9113 (6.8) asks after a GOAWAY: 4 curl
/// processes, each sending 600 HTTP/2 requests over TLS one after another
/// at 50 per second (12 s), opening a new connection when the old one is
/// going away. Every request must be answered 200 over HTTP/2.
#[test]
fn a_graceful_upgrade_loses_no_request_of_http_2_clients_that_reconnect() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (ports, _backends) = backends_named_after_their_ports(3);
    let (dir, a, _b) = dir_with_two_certs();
    let tls_port = free_port();
    let mut old = spawn_lb_with_listeners(
        dir,
        |base| base.server.grace_period_seconds = 3,
        &[tls_listener(tls_port, &[&a], "")],
        &ports,
        "",
    );
    let per_client = 600;
    let urls = old.dir.path().join("urls");
    std::fs::write(
        &urls,
        format!("url = \"https://a.test:{tls_port}/\"\noutput = \"/dev/null\"\n")
            .repeat(per_client),
    )
    .expect("write the URL list");
    let resolve = format!("a.test:{tls_port}:127.0.0.1");
    let clients: Vec<Background> = (0..4)
        .map(|i| {
            in_background(
                old.dir.path(),
                &format!("curl{i}"),
                "curl",
                &[
                    "-sS",
                    "--http2",
                    "--rate",
                    "50/s",
                    "--max-time",
                    "10",
                    "--cacert",
                    path(&a.0),
                    "--resolve",
                    &resolve,
                    "-w",
                    "%{http_code} HTTP/%{http_version}\n",
                    "-K",
                    path(&urls),
                ],
            )
        })
        .collect();
    // The clients are under way on the old lb.
    wait_for_http2_answers(&old, 20);
    let _new = run_lb_upgrade(&mut old, Duration::from_secs(10)).0;

    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for client in clients {
        let (status, output) = client.wait(Duration::from_secs(60));
        for line in output.lines() {
            *answers.entry(line.to_string()).or_default() += 1;
        }
        if !status.success() {
            failures.push(format!("curl exited {status}"));
        }
    }
    eprintln!("answers: {answers:?}");
    let new_log = std::fs::read_to_string(old.dir.path().join("new.log")).unwrap_or_default();
    assert!(
        new_log.contains("\"GET / HTTP/2\" 200"),
        "no request reached the new lb: the load did not span the upgrade:\n{new_log}"
    );
    assert!(
        failures.is_empty() && answers.get("200 HTTP/2") == Some(&(4 * per_client)),
        "{failures:?}, answers: {answers:?}\nold lb log:\n{}",
        without_access_lines(&old.log())
    );
}

// 11. Metrics and the access log.

/// The value of the first line of `text` for `metric` whose labels
/// include every one of `labels` (e.g. `outcome="ok"`).
fn metric(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_and_the_access_log_show_tls_versions_names_and_protocols() {
    if !tools_installed(&["openssl", "curl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let (dir, a, b) = dir_with_two_certs();
    let access = dir.path().join("access.log");
    let (tls_port, admin_port) = (free_port(), free_port());
    let _lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&a, &b], "")],
        &[be_port],
        &format!(
            "admin: {{listen: 127.0.0.1:{admin_port}}}\naccess_log: {{path: {}, format: json}}\n",
            path(&access)
        ),
    );
    wait_for_port(admin_port);

    let version = ["-w", "\n@@%{http_version}"];
    for flag in ["--http2", "--http1.1"] {
        let args = [&[flag][..], &version[..]].concat();
        let (body, _) = body_and_version(&curl_a_test(tls_port, &a.0, &args, "/"));
        assert_eq!(body, HELLO_ONE);
    }

    let scraped = get(admin_port, "/metrics");
    assert_eq!(scraped.status, 200);
    let text = scraped.body;
    let listener = format!("listener=\"127.0.0.1:{tls_port}\"");
    let ok = metric(
        &text,
        "lb_tls_handshakes_total",
        &[&listener, "outcome=\"ok\"", "version=\"TLSv1.3\""],
    );
    assert!(ok.is_some_and(|n| n >= 2.0), "handshakes {ok:?}:\n{text}");
    for name in ["a.test", "localhost", "*.b.test"] {
        let left = metric(
            &text,
            "lb_tls_certificate_expiry_seconds",
            &[&listener, &format!("name=\"{name}\"")],
        );
        // Made valid for 30 days.
        assert!(
            left.is_some_and(|s| s > 29.0 * 86_400.0 && s <= 30.0 * 86_400.0),
            "expiry of {name}: {left:?}:\n{text}"
        );
    }
    let h2 = metric(
        &text,
        "lb_requests_by_protocol_total",
        &["protocol=\"HTTP/2\""],
    );
    assert!(
        h2.is_some_and(|n| n >= 1.0),
        "HTTP/2 requests {h2:?}:\n{text}"
    );

    let mut lines: Vec<serde_json::Value> = Vec::new();
    wait_until(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON access line"))
            .collect();
        lines.len() >= 2
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, protocol) in lines.iter().zip(["HTTP/2", "HTTP/1.1"]) {
        assert_eq!(line["protocol"], protocol, "{line}");
        assert_eq!(line["tls_version"], "TLSv1.3", "{line}");
        assert_eq!(line["sni"], "a.test", "{line}");
        assert_eq!(line["status"], 200, "{line}");
    }
}

/// Lays `cert` out as Kubernetes mounts a TLS Secret in `dir`:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`; called again,
/// swaps `..data` to a new version atomically, as kubelet does.
fn publish_secret(dir: &Path, version: u32, cert: &CertFiles) -> CertFiles {
    let versioned = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&versioned).expect("version dir");
    std::fs::copy(&cert.0, versioned.join("tls.crt")).expect("copy cert");
    std::fs::copy(&cert.1, versioned.join("tls.key")).expect("copy key");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let files = (dir.join("tls.crt"), dir.join("tls.key"));
    if version == 1 {
        std::os::unix::fs::symlink("..data/tls.crt", &files.0).expect("symlink cert");
        std::os::unix::fs::symlink("..data/tls.key", &files.1).expect("symlink key");
    } else {
        std::fs::remove_dir_all(dir.join(format!("..v{}", version - 1))).expect("old version");
    }
    files
}

#[test]
fn a_certificate_renewed_in_a_secret_mount_is_served_without_a_signal() {
    if !tools_installed(&["openssl"]) {
        return;
    }
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, next) = live_and_next(dir.path());
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).expect("secret dir");
    let mounted = publish_secret(&secret, 1, &first);
    let tls_port = free_port();
    let lb = spawn_lb_with_listeners(
        dir,
        |_| {},
        &[tls_listener(tls_port, &[&mounted], "")],
        &[be_port],
        "",
    );
    assert!(
        lb.wait_for_log("watching 3 file(s)", Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    assert_eq!(
        s_client(tls_port, &[]).serial,
        Some(serial_of_file(&first.0))
    );

    publish_secret(&secret, 2, &next);
    let new_serial = Some(serial_of_file(&next.0));
    let renewed = wait_until(Duration::from_secs(10), || {
        s_client(tls_port, &[]).serial == new_serial
    });
    assert!(
        renewed,
        "the renewed certificate was not served:\n{}",
        lb.log()
    );
    assert!(
        lb.log().contains("certificates of 1 TLS listener(s)"),
        "{}",
        lb.log()
    );
}
