//! What keeps a web page from acting on the admin API through the
//! operator's browser, and who may use it at all.
//!
//! A browser sends requests for any page it shows, to any address,
//! loopback included: a `<form method=POST>` (cross-site request
//! forgery), or a page whose host name the attacker re-points at
//! 127.0.0.1 (DNS rebinding, which makes the browser send that name as
//! `Host`). The checks, in the order [`check`] applies them:
//! - `Host` must be `localhost` or an address of the admin listener (any
//!   IP when it listens on all, 0.0.0.0 or `::`); the port is not checked,
//!   so an SSH tunnel (`ssh -L 9999:localhost:9000`) works. With a token
//!   configured, any `Host` is accepted: a rebinding page cannot send the
//!   token, and scrapers may name lb as they like. `GET /healthz` is never
//!   checked (probes name lb in many ways; it tells nothing).
//! - The bearer token, when one is configured (401 without it).
//! - A request that changes something (any method but `GET` and `HEAD`)
//!   must not come from another origin: `Sec-Fetch-Site` other than
//!   `same-origin` or `none` (typed by the user), or an `Origin` that is
//!   not `http://` + `Host` (`null` included), is refused. Tools such as
//!   curl send neither. Safe methods are not checked, as Go's
//!   `CrossOriginProtection` and Django do: another origin cannot read
//!   their answers, and a link to the status page keeps working.
//! - A body must be declared `Content-Type: application/json` (415), so a
//!   form or a `no-cors` fetch, which cannot set it, sends none lb reads.

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode};
use std::net::{IpAddr, SocketAddr};

/// `WWW-Authenticate` of every 401 (RFC 6750).
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"lb admin\"";

/// The admin listener's policy: its address and its token.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The address it listens on, for the `Host` check.
    pub listen: SocketAddr,
    /// The bearer token every request but `/healthz` needs, if any.
    pub token: Option<String>,
}

/// Why a request was refused: its status and what the body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl Guard {
    /// Whether a request with `headers` may go on to its endpoint.
    /// `needs_token` is false for the requests that need none (`/healthz`
    /// and the status page's files).
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        needs_token: bool,
    ) -> Result<(), Refusal> {
        let host = header(headers, HOST);
        if self.token.is_none() && !host.is_none_or(|h| self.host_allowed(h)) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {:?} is not this admin listener: use localhost or {}",
                    host.unwrap_or_default(),
                    self.listen.ip()
                ),
            ));
        }
        if needs_token && !self.authorized(headers) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            ));
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            from_same_origin(headers, host)?;
        }
        if has_body(headers) && !is_json(header(headers, CONTENT_TYPE)) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request body must be sent as Content-Type: application/json",
            ));
        }
        Ok(())
    }

    /// Whether `host` (a `Host` value, port optional) names this listener:
    /// `localhost`, or its IP address (any IP when it listens on all).
    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host);
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<IpAddr>()
            .is_ok_and(|ip| self.listen.ip().is_unspecified() || ip == self.listen.ip())
    }

    /// Whether `Authorization` carries the token (`Bearer`, in any case:
    /// RFC 9110 makes the scheme case-insensitive), or none is needed.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        header(headers, AUTHORIZATION)
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, given)| same_secret(given.trim().as_bytes(), token.as_bytes()))
    }
}

/// Refuses a request another origin's page made: by `Sec-Fetch-Site`,
/// then by `Origin` against `host`.
fn from_same_origin(headers: &HeaderMap, host: Option<&str>) -> Result<(), Refusal> {
    if let Some(site) = header(headers, "sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("refused a request from another site (Sec-Fetch-Site: {site})"),
            ));
        }
    }
    let Some(origin) = header(headers, ORIGIN) else {
        return Ok(());
    };
    let same = origin
        .strip_prefix("http://")
        .zip(host)
        .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
    if same {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("refused a request from another origin (Origin: {origin})"),
        ))
    }
}

/// The value of `name` when it is present and text.
fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a body follows the head: chunked, or a non-zero length.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes().iter().any(|b| *b != b'0'))
}

/// Whether a `Content-Type` is `application/json`, parameters allowed.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| {
        let media_type = value.split(';').next().unwrap_or_default();
        media_type.trim().eq_ignore_ascii_case("application/json")
    })
}

/// `host` without its `:port`; an IPv6 address keeps its brackets.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// Compares without stopping at the first difference, so response time
/// does not tell how much of a guessed token was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, token: Option<&str>) -> Guard {
        Guard {
            listen: listen.parse().expect("an address"),
            token: token.map(str::to_string),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("a header value"));
        }
        map
    }

    fn status(g: &Guard, method: Method, pairs: &[(&'static str, &str)]) -> Option<u16> {
        g.check(&method, &headers(pairs), true)
            .err()
            .map(|r| r.status.as_u16())
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }

    #[test]
    fn only_the_listeners_own_names_pass_the_host_check() {
        let g = guard("127.0.0.1:9000", None);
        for host in ["127.0.0.1:9000", "127.0.0.1", "localhost:9999", "LocalHost"] {
            assert_eq!(status(&g, Method::GET, &[("host", host)]), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9000",
            "127.0.0.2:9000",
            "localhost.evil",
        ] {
            assert_eq!(
                status(&g, Method::GET, &[("host", host)]),
                Some(403),
                "{host}"
            );
        }
        let any = guard("[::]:9000", None);
        for host in ["[::1]:9000", "10.1.2.3:9000", "[fe80::1]"] {
            assert_eq!(status(&any, Method::GET, &[("host", host)]), None, "{host}");
        }
        assert_eq!(
            status(&any, Method::GET, &[("host", "lb.example")]),
            Some(403)
        );
        let with_token = guard("0.0.0.0:9000", Some("t"));
        let named = [("host", "lb.example"), ("authorization", "Bearer t")];
        assert_eq!(status(&with_token, Method::GET, &named), None);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let g = guard("127.0.0.1:9000", Some("s3cret"));
        for auth in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert_eq!(
                status(&g, Method::GET, &[("authorization", auth)]),
                None,
                "{auth}"
            );
        }
        for auth in ["Bearer wrong", "Basic s3cret", "s3cret", "Bearers3cret"] {
            assert_eq!(
                status(&g, Method::GET, &[("authorization", auth)]),
                Some(401),
                "{auth}"
            );
        }
        assert_eq!(status(&g, Method::GET, &[]), Some(401));
    }

    #[test]
    fn changes_from_another_origin_are_refused() {
        let g = guard("127.0.0.1:9000", None);
        let host = ("host", "127.0.0.1:9000");
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "https://127.0.0.1:9000"),
        ] {
            assert_eq!(
                status(&g, Method::POST, &[host, (name, value)]),
                Some(403),
                "{value}"
            );
            assert_eq!(
                status(&g, Method::DELETE, &[host, (name, value)]),
                Some(403),
                "{value}"
            );
            assert_eq!(
                status(&g, Method::GET, &[host, (name, value)]),
                None,
                "{value}"
            );
        }
        for (name, value) in [
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "none"),
            ("origin", "http://127.0.0.1:9000"),
        ] {
            assert_eq!(
                status(&g, Method::POST, &[host, (name, value)]),
                None,
                "{value}"
            );
        }
        assert_eq!(
            status(&g, Method::POST, &[host]),
            None,
            "curl sends neither"
        );
    }

    #[test]
    fn a_body_must_be_json() {
        let g = guard("127.0.0.1:9000", None);
        let body = ("content-length", "2");
        for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
            let pairs = [body, ("content-type", content_type)];
            assert_eq!(status(&g, Method::POST, &pairs), None, "{content_type}");
        }
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            let pairs = [body, ("content-type", content_type)];
            assert_eq!(
                status(&g, Method::POST, &pairs),
                Some(415),
                "{content_type}"
            );
        }
        assert_eq!(status(&g, Method::POST, &[body]), Some(415));
        assert_eq!(
            status(&g, Method::POST, &[("transfer-encoding", "chunked")]),
            Some(415)
        );
        assert_eq!(status(&g, Method::POST, &[("content-length", "0")]), None);
    }

    #[test]
    fn a_request_that_needs_no_token_still_passes_the_host_check() {
        let g = guard("127.0.0.1:9000", None);
        let foreign = headers(&[("host", "rebound.example")]);
        let refused = g
            .check(&Method::GET, &foreign, false)
            .expect_err("foreign Host");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("rebound.example"), "{refused:?}");
        let with_token = guard("127.0.0.1:9000", Some("t"));
        assert_eq!(with_token.check(&Method::GET, &foreign, false), Ok(()));
        let refused = with_token.check(&Method::GET, &foreign, true);
        assert_eq!(refused.map_err(|r| r.status), Err(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn an_ipv6_listener_takes_its_own_address_with_or_without_a_port() {
        let g = guard("[::1]:9000", None);
        for host in ["[::1]", "[::1]:9000", "[::1]:1234", "localhost"] {
            assert_eq!(status(&g, Method::GET, &[("host", host)]), None, "{host}");
        }
        for host in ["[::2]:9000", "[::]:9000", "127.0.0.1:9000"] {
            assert_eq!(
                status(&g, Method::GET, &[("host", host)]),
                Some(403),
                "{host}"
            );
        }
    }
}
