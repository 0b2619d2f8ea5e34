//! The PROXY protocol (HAProxy's spec, v1 and v2) on lb's listeners, with
//! headers crafted here: the client it names is the client everything
//! sees, before HTTP on a plain listener and before the handshake on a TLS
//! one; a missing, malformed, oversized or slow header closes the
//! connection and is counted; a header sent to a listener without the
//! option is a bad request.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::tls::make_cert;
use common::*;

/// 203.0.113.7:51234 -> 127.0.0.1:8000.
const PROXY_V1: &[u8] = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000\r\n";
/// The same in v2: signature, PROXY over TCP4, 12 address bytes.
const PROXY_V2: &[u8] =
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\x7f\x00\x00\x01\xc8\x22\x1f\x40";
/// v2 for 2001:db8::9 port 1000 -> ::1 port 8000, with a 4-byte TLV
/// (type 0x04, NOOP) lb skips.
fn proxy_v2_ipv6() -> Vec<u8> {
    let mut header = b"\r\n\r\n\x00\r\nQUIT\n\x21\x21".to_vec();
    let mut body = Vec::new();
    body.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&1000u16.to_be_bytes());
    body.extend_from_slice(&8000u16.to_be_bytes());
    body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

const GET_HEADERS: &[u8] = b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn lb_with_proxy_protocol(be_port: u16, listener_extra: &str, rest: &str) -> Lb {
    let port = free_port();
    LbBuilder::default()
        .backends(&[be_port])
        .listeners(&[(
            port,
            format!("{{address: 127.0.0.1:{port}, proxy_protocol: true{listener_extra}}}"),
        )])
        .rest(rest)
        .start()
}

/// Sends `header` then `request` on one connection; what came back.
fn through(port: u16, header: &[u8], request: &[u8]) -> RawReply {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(request);
    raw_exchange(port, &bytes, Duration::from_secs(5))
}

#[test]
fn v1_and_v2_headers_make_their_client_the_one_lb_forwards_and_logs() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with_proxy_protocol(be_port, "", "");
    for (name, header) in [
        ("v1", PROXY_V1.to_vec()),
        ("v2", PROXY_V2.to_vec()),
        ("v2 ipv6", proxy_v2_ipv6()),
    ] {
        let reply = through(lb.port, &header, GET_HEADERS);
        let text = reply.text().to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{name}: {text}");
        let client = if name == "v2 ipv6" {
            "2001:db8::9"
        } else {
            "203.0.113.7"
        };
        assert!(
            text.contains(&format!("x-forwarded-for: {client}\n")),
            "{name}: {text}"
        );
        assert!(
            lb.wait_for_log(&format!("{client} \"GET /headers"), Duration::from_secs(5)),
            "{name}: the access line does not name {client}:\n{}",
            lb.log()
        );
    }
    // A LOCAL v2 header (a balancer's own health check) names no client:
    // the peer stays the client.
    let local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00";
    let text = through(lb.port, local, GET_HEADERS)
        .text()
        .to_ascii_lowercase();
    assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
}

#[test]
fn a_tls_listener_reads_the_header_before_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "site", &["DNS:localhost"]);
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let port = free_port();
    let lb = LbBuilder::default()
        .backends(&[be_port])
        .listeners(&[(
            port,
            format!(
                "{{address: 127.0.0.1:{port}, proxy_protocol: true, \
                 tls: {{certificates: [{{cert: {}, key: {}}}]}}}}",
                cert.display(),
                key.display()
            ),
        )])
        .start();
    let mut tcp = TcpStream::connect(("127.0.0.1", lb.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(PROXY_V2).unwrap();
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let mut tls = connector
        .build()
        .connect("localhost", tcp)
        .expect("TLS handshake after the PROXY header");
    tls.write_all(GET_HEADERS).unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("x-forwarded-for: 203.0.113.7\n"), "{text}");
    assert!(text.contains("x-forwarded-proto: https\n"), "{text}");
}

/// A connection that slips its header in one byte at a time, slower than
/// `timeouts.client_header` allows.
fn slow_header(port: u16) -> RawReply {
    let mut stream = raw_connect(port, Duration::from_secs(5));
    for byte in PROXY_V1.iter().take(10) {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        // The drip under test: a byte every 200 ms against a 1 s limit.
        std::thread::sleep(Duration::from_millis(200));
    }
    let (bytes, end) = read_until_end(&mut stream);
    RawReply {
        bytes,
        end,
        write_error: None,
    }
}

/// `lb_proxy_protocol_errors_total` of the listener on `port`, by reason.
fn errors_by_reason(admin_port: u16, port: u16) -> std::collections::HashMap<String, i64> {
    let metrics = raw_exchange(
        admin_port,
        format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{admin_port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .text();
    let prefix = format!("lb_proxy_protocol_errors_total{{listener=\"127.0.0.1:{port}\",reason=\"");
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn a_bad_header_closes_the_connection_unanswered_and_is_counted() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let admin_port = free_port();
    let lb = lb_with_proxy_protocol(
        be_port,
        "",
        &format!("admin: {{listen: 127.0.0.1:{admin_port}}}\ntimeouts: {{client_header: 1s}}\n"),
    );
    wait_for_port(admin_port);
    // lb's start-up probes (one connect to see lb accept, one to see the
    // listener accept) close without a header: wait until both are
    // counted, then count from there.
    let before = poll(Duration::from_secs(10), || {
        let counts = errors_by_reason(admin_port, lb.port);
        (counts.get("closed") == Some(&2)).then_some(counts)
    })
    .expect("the two start-up probes counted as closed");
    let mut too_long = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    too_long.extend_from_slice(&[0u8; 64]);
    let vectors: Vec<(&str, &str, Vec<u8>, bool)> = vec![
        ("no header", "missing", GET_HEADERS.to_vec(), false),
        (
            "a TLS record",
            "missing",
            vec![0x16, 0x03, 0x01, 0x00, 0x05],
            false,
        ),
        (
            "wrong v2 signature",
            "missing",
            b"\r\n\r\n\x00\r\nQUIT\r\x21\x11\x00\x0c".to_vec(),
            false,
        ),
        (
            "bad address",
            "malformed",
            b"PROXY TCP4 203.0.113.999 127.0.0.1 1 2\r\n".to_vec(),
            false,
        ),
        (
            "v1 with no end",
            "too_long",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
            false,
        ),
        ("v2 past the cap", "too_long", too_long, false),
        ("truncated", "closed", PROXY_V1[..20].to_vec(), true),
    ];
    for (name, _, bytes, then_close) in &vectors {
        let mut stream = raw_connect(lb.port, Duration::from_secs(5));
        stream.write_all(bytes).unwrap();
        if *then_close {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let (reply, end) = read_until_end(&mut stream);
        assert!(
            reply.is_empty(),
            "{name}: lb answered {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            matches!(end, RawEnd::Eof | RawEnd::Reset),
            "{name}: {end:?}"
        );
    }
    let slow = slow_header(lb.port);
    assert!(
        slow.bytes.is_empty() && matches!(slow.end, RawEnd::Eof | RawEnd::Reset),
        "{slow:?}"
    );
    let after = errors_by_reason(admin_port, lb.port);
    for (reason, count) in [
        ("missing", 3),
        ("malformed", 1),
        ("too_long", 2),
        ("closed", 1),
        ("timeout", 1),
    ] {
        let grew =
            after.get(reason).copied().unwrap_or(0) - before.get(reason).copied().unwrap_or(0);
        assert_eq!(grew, count, "{reason}: before {before:?}, after {after:?}");
    }
    // lb serves on.
    assert!(through(lb.port, PROXY_V1, GET_HEADERS)
        .text()
        .starts_with("HTTP/1.1 200"));
}

#[test]
fn a_header_on_a_listener_without_the_option_is_a_bad_request() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = spawn_lb(&[be_port], "");
    for header in [PROXY_V1, PROXY_V2] {
        let reply = through(lb.port, header, GET_HEADERS);
        let text = reply.text();
        let status = text.split_whitespace().nth(1).unwrap_or("none");
        assert!(
            text.is_empty() || status.starts_with('4'),
            "{}: {text:?}",
            String::from_utf8_lossy(header)
        );
        assert!(!text.contains("200 OK"), "{text:?}");
    }
    assert_eq!(lb.get("/").status, 200);
}

#[test]
fn a_listener_access_rule_judges_the_headers_client_right_after_it() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let lb = lb_with_proxy_protocol(
        be_port,
        ", policies: [no_seven]",
        "policies:\n  no_seven:\n    access: {deny: [203.0.113.7/32]}\n",
    );
    let refused = through(lb.port, PROXY_V1, GET_HEADERS);
    assert!(refused.bytes.is_empty(), "{:?}", refused.text());
    let other = b"PROXY TCP4 203.0.113.8 127.0.0.1 51234 8000\r\n";
    assert!(through(lb.port, other, GET_HEADERS)
        .text()
        .starts_with("HTTP/1.1 200"));
}
