//! HTTP/2 clients on an h2c listener, driven by the `h2` crate (the HTTP/2
//! implementation Pingora itself uses, here on the client side): many
//! streams on one connection, a stream the client resets, request bodies,
//! and HTTP/1.1 still served on the same listener.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::h2c::{connect_h2, get, send};
use common::*;
use http::{Method, Request, StatusCode};

/// Starts lb with one h2c listener in front of the backends on `ports`.
fn spawn_lb_h2c(ports: &[u16], extra: &str) -> Lb {
    common::h2c::spawn_lb_h2c(&format!("{}{extra}", backends_yaml(ports)))
}

#[test]
fn many_streams_on_one_connection_reach_every_backend() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let lb = spawn_lb_h2c(&ports, "");
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let bodies = rt.block_on(async {
        let client = connect_h2(lb.port).await;
        let streams: Vec<_> = (0..60)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { get(&client, &format!("/stream/{i}")).await })
            })
            .collect();
        let mut bodies = Vec::new();
        for stream in streams {
            let (status, body) = stream.await.expect("the stream's task");
            assert_eq!(status, StatusCode::OK, "{body}");
            bodies.push(body);
        }
        bodies
    });
    for port in &ports {
        let served = bodies
            .iter()
            .filter(|b| b.contains(&port.to_string()))
            .count();
        assert!(
            served >= 15,
            "backend {port} served {served} of 60 streams (round robin gives 20)"
        );
    }
}

#[test]
fn a_stream_reset_by_the_client_leaves_the_others_alone() {
    // The backend answers byte by byte, so every stream is still open when
    // the client resets one of them.
    let (_slow, slow_port) =
        spawn_be_on_any_port("slow", &["--fault", "drip", "--drip-interval", "10ms"]);
    let lb = spawn_lb_h2c(&[slow_port], "");
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let client = connect_h2(lb.port).await;
        // Open streams until one reaches the slow backend, then reset it.
        let mut ready = client.clone().ready().await.expect("lb takes a stream");
        let request = Request::get("http://lb.test/to-reset").body(()).unwrap();
        let (response, _) = ready.send_request(request, true).expect("send");
        let siblings: Vec<_> = (0..8)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { get(&client, &format!("/sibling/{i}")).await })
            })
            .collect();
        let response = response.await.expect("headers of the stream to reset");
        // Dropping the response body resets the stream (RST_STREAM CANCEL).
        drop(response);
        for sibling in siblings {
            let (status, body) = sibling.await.expect("the sibling's task");
            assert_eq!(status, StatusCode::OK, "a sibling failed: {body}");
            assert!(body.contains("Hello From Backend Server"), "{body:?}");
        }
        // The connection itself still takes new streams.
        let (status, _) = get(&client, "/after-the-reset").await;
        assert_eq!(status, StatusCode::OK);
    });
    // The reset stream was cut before its body ended: lb logs it as the
    // client's abort (499, as nginx), with less than the backend's whole
    // body sent, and writes no ERROR line for it.
    let line = "\"GET /to-reset HTTP/2\" 499 ";
    let logged = lb.wait_for_log_line(line);
    let sent: usize = logged
        .split(line)
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(sent < "Hello From Backend Server slow".len(), "{logged}");
    let log = lb.log();
    assert!(!log.contains(" ERROR "), "{log}");
}

#[test]
fn a_request_body_reaches_the_backend_over_http2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("requests");
    let (_be, port) = spawn_be_on_any_port("recorder", &["--record", record.to_str().unwrap()]);
    let lb = spawn_lb_h2c(&[port], "");
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let client = connect_h2(lb.port).await;
        let body = Bytes::from(vec![b'x'; 100_000]);
        let (status, answer) = send(&client, Method::POST, "/upload", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    });
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        recorded.contains("POST /upload"),
        "be recorded: {recorded:?}"
    );
}

#[test]
fn an_h2c_listener_still_serves_http1() {
    let (ports, _backends) = backends_named_after_their_ports(1);
    let lb = spawn_lb_h2c(&ports, "");
    assert_eq!(lb.get("/http1").status, 200);
    // A request shorter than HTTP/2's 24-byte preface is not mistaken for
    // the start of one.
    let reply = raw_exchange(lb.port, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(5));
    assert!(
        reply.text().starts_with("HTTP/1.0 200") || reply.text().starts_with("HTTP/1.1 200"),
        "{}",
        reply.text()
    );
}
