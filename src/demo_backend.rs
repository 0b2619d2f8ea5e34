//! `be`: a small async HTTP/1.1 backend for demos and tests.
//!
//! It answers every request with `200 Hello From Backend Server NAME`,
//! `GET /health` with `200 ok`, and `GET /headers` with the request's own
//! headers (so tests can see what lb forwarded). It logs each request the way
//! the original challenge shows. Requests are parsed with `httparse`; the
//! socket handling is plain tokio so tests keep full control of the wire.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head `be` reads before answering 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields `be` parses in one request.
const MAX_HEADERS: usize = 100;

/// How to run `be`.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// Name in the hello message; the port when `None`.
    pub name: Option<String>,
    /// Skip the per-request log lines (for load tests).
    pub quiet: bool,
}

/// Shared, read-only state of a running `be`.
struct Backend {
    hello: String,
    quiet: bool,
}

/// Listens and serves until the process is stopped.
pub async fn serve(options: BackendOptions) -> io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(options.bind, options.port)).await?;
    let name = options.name.unwrap_or_else(|| options.port.to_string());
    let backend = Arc::new(Backend {
        hello: format!("Hello From Backend Server {name}\n"),
        quiet: options.quiet,
    });
    log::info!("be {name} listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            if let Err(e) = backend.serve_connection(stream, peer).await {
                log::debug!("connection from {peer} ended: {e}");
            }
        });
    }
}

/// One parsed request head.
struct RequestHead {
    method: String,
    path: String,
    /// `true` for HTTP/1.1.
    http11: bool,
    headers: Vec<(String, String)>,
    /// Bytes the head took in the buffer.
    len: usize,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after this request.
    fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        match connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => self.http11,
        }
    }
}

/// What reading a request head gave.
enum Head {
    Request(RequestHead),
    /// The client closed the connection between requests.
    Closed,
    /// The client sent something that is not HTTP/1.x; answer with this status.
    Bad(u16),
}

impl Backend {
    async fn serve_connection(&self, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let head = match read_head(&mut stream, &mut buf).await? {
                Head::Request(head) => head,
                Head::Closed => return Ok(()),
                Head::Bad(status) => {
                    let reason = if status == 431 {
                        "Request Header Fields Too Large"
                    } else {
                        "Bad Request"
                    };
                    respond(&mut stream, status, reason, b"", false, false).await?;
                    return Ok(());
                }
            };
            buf.advance(head.len);
            if !read_body(&mut stream, &mut buf, &head).await? {
                respond(&mut stream, 400, "Bad Request", b"", false, false).await?;
                return Ok(());
            }
            if !self.quiet {
                log_request(peer, &head);
            }
            let keep_alive = head.keep_alive();
            let head_only = head.method == "HEAD";
            match head.path.as_str() {
                "/health" => {
                    respond(&mut stream, 200, "OK", b"ok\n", keep_alive, head_only).await?
                }
                "/headers" => {
                    let body: String = head
                        .headers
                        .iter()
                        .map(|(n, v)| format!("{n}: {v}\n"))
                        .collect();
                    respond(
                        &mut stream,
                        200,
                        "OK",
                        body.as_bytes(),
                        keep_alive,
                        head_only,
                    )
                    .await?
                }
                _ => {
                    respond(
                        &mut stream,
                        200,
                        "OK",
                        self.hello.as_bytes(),
                        keep_alive,
                        head_only,
                    )
                    .await?
                }
            }
            if !self.quiet {
                log::info!("Replied with a hello message");
            }
            if !keep_alive {
                return Ok(());
            }
        }
    }
}

/// Reads until `buf` holds a whole request head, and parses it.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Head> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Ok(Head::Request(RequestHead {
                        method: req.method.unwrap_or_default().to_string(),
                        path: req.path.unwrap_or_default().to_string(),
                        http11: req.version == Some(1),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        len,
                    }))
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                    return Ok(Head::Bad(431))
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Ok(Head::Bad(431)),
                Err(_) => return Ok(Head::Bad(400)),
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(Head::Closed)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// Reads and discards the request body. `false` when its framing is invalid.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &RequestHead,
) -> io::Result<bool> {
    if let Some(te) = head.header("transfer-encoding") {
        if !te.eq_ignore_ascii_case("chunked") {
            return Ok(false);
        }
        return read_chunked(stream, buf).await;
    }
    let Some(length) = head.header("content-length") else {
        return Ok(true);
    };
    let Ok(mut remaining) = length.trim().parse::<usize>() else {
        return Ok(false);
    };
    loop {
        let take = remaining.min(buf.len());
        buf.advance(take);
        remaining -= take;
        if remaining == 0 {
            return Ok(true);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads a chunked body through its last chunk and trailers.
async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Ok(false);
        };
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(true);
        }
        while buf.len() < size + 2 {
            if stream.read_buf(buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Ok(false);
        }
        buf.advance(size + 2);
    }
}

/// Reads one CRLF-terminated line, without its CRLF.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body);
    }
    stream.write_all(&response).await
}

/// The challenge's view of a request: who sent it, the request line, the headers.
fn log_request(peer: SocketAddr, head: &RequestHead) {
    let version = if head.http11 { "HTTP/1.1" } else { "HTTP/1.0" };
    let mut text = format!(
        "Received request from {}\n{} {} {version}",
        peer.ip(),
        head.method,
        head.path
    );
    for (name, value) in &head.headers {
        text.push_str(&format!("\n{name}: {value}"));
    }
    log::info!("{text}");
}
