//! What lb refuses before a request reaches a backend: targets and heads
//! RFC 9112 forbids, requests over `limits`, and chunked framing the client
//! stream found bad or could not place.

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::RequestCtx;
use crate::config::LimitsConfig;
use crate::connection::{self, FramingCheck, RequestFraming};

/// The status lb answers with when a request breaks a limit, if it does.
pub(super) fn limit_exceeded(limits: &LimitsConfig, req: &RequestHeader) -> Option<u16> {
    if req.raw_path().len() > limits.max_uri_bytes {
        return Some(414);
    }
    let head_bytes = req.raw_path().len()
        + req.method.as_str().len()
        + req
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head_bytes > limits.max_header_bytes || req.headers.len() > limits.max_request_headers {
        return Some(431);
    }
    if limits.max_body_bytes > 0 {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > limits.max_body_bytes) {
            return Some(413);
        }
    }
    None
}

/// 400 for what Pingora's parser lets through but RFC 9112 forbids: a
/// request target that is neither origin-form (`/...`), asterisk-form
/// (`OPTIONS *`) nor absolute-form (`http://...`), and an HTTP/1.1 request
/// without `Host` (section 3.2).
pub(super) fn malformed(req: &RequestHeader) -> Option<u16> {
    let target = req.raw_path();
    let valid_target = target.starts_with(b"/")
        || (target == b"*" && req.method == http::Method::OPTIONS)
        || target.starts_with(b"http://")
        || target.starts_with(b"https://");
    let host_missing =
        req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST);
    (!valid_target || host_missing).then_some(400)
}

/// Tells the client stream what follows this request's head, and returns
/// the status to refuse it with when its chunked framing is bad or cannot
/// be checked.
pub(super) fn check_framing(session: &Session, ctx: &mut RequestCtx) -> Option<u16> {
    let req = session.req_header();
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let framing = RequestFraming {
        chunked,
        body: chunked
            || req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|len| len.as_bytes() != b"0"),
        upgrade: session.is_upgrade_req(),
    };
    ctx.upgrade = framing.upgrade;
    ctx.body_pending = framing.body && !framing.upgrade;
    if !(framing.body || framing.upgrade) {
        return None;
    }
    match connection::expect_after_head(session, framing) {
        FramingCheck::Sound => None,
        FramingCheck::Bad | FramingCheck::Unplaced => Some(400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_body_bytes: u64) -> LimitsConfig {
        LimitsConfig {
            max_header_bytes: 200,
            max_request_headers: 4,
            max_uri_bytes: 20,
            max_body_bytes,
            max_connections: 10,
            max_tls_handshakes: 5,
        }
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).expect("a request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value)
                .expect("a header");
        }
        req
    }

    #[test]
    fn each_limit_has_its_own_status() {
        let l = limits(100);
        let host = ("Host", "a");
        assert_eq!(limit_exceeded(&l, &request("GET", "/ok", &[host])), None);
        let long = format!("/{}", "u".repeat(20));
        assert_eq!(
            limit_exceeded(&l, &request("GET", &long, &[host])),
            Some(414)
        );
        let five = [host, ("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")];
        assert_eq!(limit_exceeded(&l, &request("GET", "/", &five)), Some(431));
        let big = "v".repeat(200);
        assert_eq!(
            limit_exceeded(&l, &request("GET", "/", &[host, ("X", &big)])),
            Some(431)
        );
        let declared = |len: &str| request("POST", "/", &[host, ("Content-Length", len)]);
        assert_eq!(limit_exceeded(&l, &declared("100")), None);
        assert_eq!(limit_exceeded(&l, &declared("101")), Some(413));
        assert_eq!(
            limit_exceeded(&limits(0), &declared("99999999")),
            None,
            "0: no body limit"
        );
    }

    #[test]
    fn targets_and_heads_rfc_9112_forbids_get_400() {
        let host = [("Host", "a")];
        for (method, target) in [
            ("GET", "/path"),
            ("OPTIONS", "*"),
            ("GET", "http://a/x"),
            ("GET", "https://a/x"),
        ] {
            assert_eq!(malformed(&request(method, target, &host)), None, "{target}");
        }
        for (method, target) in [
            ("GET", "*"),
            ("GET", "path"),
            ("GET", "?q=1"),
            ("GET", "a.example:80"),
        ] {
            assert_eq!(
                malformed(&request(method, target, &host)),
                Some(400),
                "{method} {target}"
            );
        }
        assert_eq!(malformed(&request("GET", "/", &[])), Some(400), "no Host");
        let mut old = request("GET", "/", &[]);
        old.set_version(http::Version::HTTP_10);
        assert_eq!(malformed(&old), None, "HTTP/1.0 needs no Host");
    }
}
