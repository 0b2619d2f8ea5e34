//! `be`'s side of the wire: reading a request head and body off a socket,
//! and writing a response. Plain tokio and `httparse`, so tests keep full
//! control of the bytes.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head `be` reads before answering 431: a little over
/// Pingora's own limit (1 MiB), so `be` accepts any head lb forwards and tests
/// see lb's limits, not `be`'s.
const MAX_HEAD_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Most header fields `be` parses in one request: Pingora's limit (256), plus
/// room for the forwarding headers lb adds.
const MAX_HEADERS: usize = 272;

/// One parsed request head.
pub(crate) struct RequestHead {
    pub(crate) method: String,
    pub(crate) path: String,
    /// `true` for HTTP/1.1.
    pub(crate) http11: bool,
    pub(crate) headers: Vec<(String, String)>,
    /// Bytes the head took in the buffer.
    pub(crate) len: usize,
}

impl RequestHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after this request.
    pub(crate) fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        match connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => self.http11,
        }
    }

    /// `GET /health`: never faulty, never recorded.
    pub(crate) fn is_health_check(&self) -> bool {
        self.method == "GET" && route(&self.path) == "/health"
    }

    /// A health check: `GET /health`, or a probe of lb's (its User-Agent),
    /// whatever its path. Logged at debug, not at info with every request.
    pub(crate) fn is_probe(&self) -> bool {
        self.is_health_check()
            || self
                .header("user-agent")
                .is_some_and(|agent| agent.starts_with(lb::pool::PROBE_USER_AGENT))
    }

    pub(crate) fn head_only(&self) -> bool {
        self.method == "HEAD"
    }
}

/// What reading a request head gave.
pub(crate) enum Head {
    Request(RequestHead),
    /// The client closed the connection between requests.
    Closed,
    /// The client sent something that is not HTTP/1.x; answer with this status.
    Bad(u16),
}

/// Reads until `buf` holds a whole request head, and parses it.
pub(crate) async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Head> {
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
pub(crate) async fn read_body(
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
    let Some(mut remaining) = parse_content_length(length) else {
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

/// A Content-Length value: one number, or a list of identical ones
/// (`5, 5`), which RFC 9110 8.6 lets a recipient accept.
pub(crate) fn parse_content_length(value: &str) -> Option<usize> {
    let mut numbers = value.split(',').map(|n| {
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse::<usize>().ok()
    });
    let first = numbers.next()??;
    numbers.all(|n| n == Some(first)).then_some(first)
}

/// Reads a chunked body through its last chunk and trailers.
pub(crate) async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
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
pub(crate) async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<String> {
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

pub(crate) async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let response = response_bytes(status, reason, body, keep_alive, head_only);
    stream.write_all(&response).await
}

/// A whole response: the head, then `body` unless answering a HEAD request.
pub(crate) fn response_bytes(
    status: u16,
    reason: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> Vec<u8> {
    let mut response = head_bytes(status, reason, body.len(), keep_alive);
    if !head_only {
        response.extend_from_slice(body);
    }
    response
}

/// A response's status line and headers.
pub(crate) fn head_bytes(
    status: u16,
    reason: &str,
    content_length: usize,
    keep_alive: bool,
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\nConnection: {connection}\r\n\r\n"
    )
    .into_bytes()
}

/// The path a request is routed by: its target without the query.
pub(crate) fn route(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::parse_content_length;

    #[test]
    fn content_length_is_a_number_or_a_list_of_the_same_number() {
        assert_eq!(parse_content_length("5"), Some(5));
        assert_eq!(parse_content_length(" 005 "), Some(5));
        assert_eq!(parse_content_length("5, 5,5"), Some(5));
        for bad in ["", "5, 6", "+5", "-1", "0x5", "5 5", "5,", "abc"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }
}
