//! Hop-by-hop request headers, removed before a request goes to a backend
//! (RFC 9110 7.6.1), the way Pingora's standard upstream request policy
//! removes them, in a pass lb can skip.
//!
//! Pingora's standard policy removes about thirteen headers one by one and
//! parses `Connection` on every request, present or not: 3.5k of lb's 96k
//! user-space instructions per request (bench/instructions.sh, issue 11).
//! lb runs its peers with the `preserve` policy and does the same work here,
//! after one look over the header names: most requests carry none of these
//! headers, and then nothing else is done.
//!
//! What is removed, as Pingora's standard policy does:
//! - every field the `Connection` header nominates; a nomination of `Host`
//!   or an `X-Forwarded-*` field, of a pseudo-header, one that is not an
//!   HTTP token, and ten or more nominations are refused (400);
//! - `Connection`, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
//!   `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`
//!   and `HTTP2-Settings` (Pingora frames the body itself: chunked when it
//!   has no `Content-Length`);
//! - except that a WebSocket upgrade from an HTTP/1.1 client goes on as
//!   `Connection: Upgrade` and `Upgrade: websocket`.

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

/// More nominations than this in `Connection` are refused (Pingora's bound).
const MAX_NOMINATIONS: usize = 10;

const KEEP_ALIVE: &str = "keep-alive";
const PROXY_CONNECTION: &str = "proxy-connection";
const HTTP2_SETTINGS: &str = "http2-settings";

/// Whether `name` is one of the standard hop-by-hop fields.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || matches!(
            name.as_str(),
            KEEP_ALIVE | PROXY_CONNECTION | HTTP2_SETTINGS
        )
}

/// Removes the hop-by-hop fields from `req`, a request on its way to a
/// backend. `client_http11`: the client spoke HTTP/1.1 (only then is a
/// WebSocket upgrade passed on). Errors are the client's (400).
pub fn remove(req: &mut RequestHeader, client_http11: bool) -> Result<()> {
    if !req.headers.keys().any(is_hop_by_hop) {
        return Ok(());
    }
    let nominated = nominations(req)?;
    let websocket = client_http11
        && req
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    for name in nominated.iter().flatten() {
        req.remove_header(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        req.remove_header(&name);
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, HTTP2_SETTINGS] {
        req.remove_header(name);
    }
    if websocket {
        req.insert_header(header::CONNECTION, "Upgrade")?;
        req.insert_header(header::UPGRADE, "websocket")?;
    }
    Ok(())
}

/// Whether the client sent `TE: trailers` (the value HTTP/2 allows, which
/// gRPC requires).
pub fn asks_for_trailers(req: &RequestHeader) -> bool {
    req.headers
        .get_all(header::TE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

/// The fields `Connection` nominates, checked as Pingora checks them.
fn nominations(req: &RequestHeader) -> Result<[Option<HeaderName>; MAX_NOMINATIONS]> {
    let mut names: [Option<HeaderName>; MAX_NOMINATIONS] = Default::default();
    let tokens = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty());
    for (count, token) in tokens.enumerate() {
        if count + 1 >= MAX_NOMINATIONS {
            return refuse("too many Connection header nominations");
        }
        if token.starts_with(b":") || !token.iter().all(|&b| is_tchar(b)) {
            return refuse("invalid token nominated by the Connection header");
        }
        let Ok(name) = HeaderName::from_bytes(token) else {
            return refuse("invalid token nominated by the Connection header");
        };
        if matches!(
            name.as_str(),
            "host" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
        ) {
            return refuse("protected header cannot be nominated by the Connection header");
        }
        names[count] = Some(name);
    }
    Ok(names)
}

/// An HTTP token character (RFC 9110 5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn refuse<T>(why: &'static str) -> Result<T> {
    Err(Error::explain(ErrorType::InvalidHTTPHeader, why).into_down())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value)
                .expect("a header");
        }
        req
    }

    fn names(req: &RequestHeader) -> Vec<String> {
        let mut names: Vec<String> = req.headers.keys().map(|n| n.to_string()).collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn a_request_without_hop_by_hop_fields_is_left_alone() {
        let mut req = request(&[("Host", "x"), ("Accept", "*/*")]);
        remove(&mut req, true).expect("accepted");
        assert_eq!(names(&req), ["accept", "host"]);
    }

    #[test]
    fn hop_by_hop_and_nominated_fields_are_removed() {
        let mut req = request(&[
            ("Host", "x"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic eA=="),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ("X-Kept", "1"),
        ]);
        remove(&mut req, true).expect("accepted");
        assert_eq!(names(&req), ["host", "x-kept"]);
    }

    #[test]
    fn a_websocket_upgrade_goes_on_normalised() {
        let mut req = request(&[
            ("Host", "x"),
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "WebSocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        remove(&mut req, true).expect("accepted");
        assert_eq!(req.headers["connection"], "Upgrade");
        assert_eq!(req.headers["upgrade"], "websocket");
        assert!(req.headers.contains_key("sec-websocket-key"));
        let mut old = request(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        remove(&mut old, false).expect("accepted");
        assert_eq!(
            names(&old),
            Vec::<String>::new(),
            "no upgrade from HTTP/1.0"
        );
    }

    #[test]
    fn protected_malformed_and_too_many_nominations_are_refused() {
        for connection in [
            "Host",
            "x-forwarded-for",
            ":authority",
            "\"X-Forwarded-For\"",
            "a, b, c, d, e, f, g, h, i, j",
        ] {
            let mut req = request(&[("Connection", connection)]);
            let e = remove(&mut req, true).expect_err(connection);
            assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader, "{connection}");
        }
        let mut nine = request(&[("Connection", "a, b, c, d, e, f, g, h, i")]);
        remove(&mut nine, true).expect("nine nominations are accepted");
    }

    #[test]
    fn te_trailers_is_recognised_among_other_codings() {
        assert!(asks_for_trailers(&request(&[("TE", "trailers")])));
        assert!(asks_for_trailers(&request(&[("TE", "gzip, Trailers")])));
        assert!(!asks_for_trailers(&request(&[("TE", "gzip")])));
        assert!(!asks_for_trailers(&request(&[])));
    }

    #[test]
    fn nominations_in_every_connection_field_are_removed() {
        let mut req = request(&[
            ("Host", "x"),
            ("Connection", "X-One"),
            ("Connection", " , x-two ,"),
            ("X-One", "1"),
            ("X-Two", "2"),
            ("X-Three", "3"),
        ]);
        remove(&mut req, true).expect("accepted");
        assert_eq!(names(&req), ["host", "x-three"]);
    }

    #[test]
    fn an_upgrade_to_anything_but_websocket_is_not_passed_on() {
        let mut req = request(&[("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "h2c")]);
        remove(&mut req, true).expect("accepted");
        assert_eq!(names(&req), ["host"]);
    }
}
