//! HTTP/2 with prior knowledge (h2c) to lb: a listener config that takes
//! it, and a client driven by the `h2` crate (the HTTP/2 implementation
//! Pingora itself uses, here on the client side) that sets `:authority`
//! exactly as a test writes it and sends no `Host` header.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use tokio::net::TcpStream;

use super::{free_port, spawn_lb_listening, Lb};

/// Starts lb whose one listener also takes h2c, with `rest` (backends or
/// upstreams and routes, and anything else) after the base sections.
pub fn spawn_lb_h2c(rest: &str) -> Lb {
    let port = free_port();
    let listener = format!("{{address: 127.0.0.1:{port}, h2c: true}}");
    spawn_lb_listening(&[(port, listener)], rest)
}

/// An HTTP/2 connection with prior knowledge to lb on `port`.
pub async fn connect_h2(port: u16) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to lb");
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .expect("HTTP/2 handshake with lb");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Sends `GET path` to `lb.test` on `client`; the status and the whole body.
pub async fn get(client: &SendRequest<Bytes>, path: &str) -> (StatusCode, String) {
    send(client, Method::GET, path, None).await
}

/// Sends `method path` to `lb.test`, with `body` if any, on `client`; the
/// status and the whole body.
pub async fn send(
    client: &SendRequest<Bytes>,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://lb.test{path}"))
        .body(())
        .expect("a valid request");
    exchange(client, request, body).await
}

/// Sends `request` (its URI's authority becomes `:authority`), with `body`
/// if any, on `client`; the status and the whole body.
pub async fn exchange(
    client: &SendRequest<Bytes>,
    request: Request<()>,
    body: Option<Bytes>,
) -> (StatusCode, String) {
    let mut client = client.clone().ready().await.expect("lb takes a stream");
    let (response, mut stream) = client
        .send_request(request, body.is_none())
        .expect("send the request");
    if let Some(body) = body {
        stream.send_data(body, true).expect("send the body");
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("response headers within 10 s")
        .expect("a response");
    let status = response.status();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the response body");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}
