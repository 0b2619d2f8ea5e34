//! Cross-origin resource sharing (CORS) answered by lb: preflights
//! (OPTIONS with `Origin` and `Access-Control-Request-Method`) get their
//! answer from lb, real responses get the `Access-Control-*` headers, for
//! the listed origins only; an origin not listed gets none, and the
//! browser keeps the response from the page. lb owns these headers on a
//! route with `cors`: a backend's are replaced, or removed for an origin
//! not listed (two `Access-Control-Allow-Origin` values fail any origin).
//!
//! Choices, as nginx and Traefik users expect them:
//! - Origins match exactly (scheme, host, port), ignoring case;
//!   `https://a.example:443` is `https://a.example`, as browsers send it.
//!   `*` allows any origin (answered `*`), but not with credentials.
//! - `allow_headers` defaults to none (browsers then allow only the
//!   CORS-safelisted headers); lb does not echo what the preflight asked,
//!   which would allow any header. `*` covers all but `Authorization`,
//!   which must be named (Fetch standard).
//! - A preflight gets the configured lists whatever it asked for: the
//!   browser compares and names what is missing in its console.
//! - A preflight from an origin not listed gets 204 without CORS headers
//!   (as rs/cors does; Traefik also just omits the origin): browsers fail
//!   it on the missing header whatever the status; a 403 would only add
//!   errors to lb's metrics.
//! - `Vary: Origin` is merged in whenever the answer depends on the origin
//!   (unless `*`), so caches keep origins apart.

use std::time::Duration;

use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY};
use http::{HeaderValue, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};

const ALLOW_ORIGIN: &str = "Access-Control-Allow-Origin";
const ALLOW_CREDENTIALS: &str = "Access-Control-Allow-Credentials";
const ALLOW_METHODS: &str = "Access-Control-Allow-Methods";
const ALLOW_HEADERS: &str = "Access-Control-Allow-Headers";
const EXPOSE_HEADERS: &str = "Access-Control-Expose-Headers";
const MAX_AGE: &str = "Access-Control-Max-Age";
static TRUE: HeaderValue = HeaderValue::from_static("true");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// One route's CORS policy, its header values built once at config load.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Listed origins, lowercase without a default port, as header values.
    origins: Vec<HeaderValue>,
    /// `*` was listed (and credentials are off): every origin gets `*`.
    any_origin: bool,
    credentials: bool,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    /// Whole seconds.
    max_age: Option<HeaderValue>,
}

/// What lb does with a request, from [`Cors::preflight`].
#[derive(Debug)]
pub enum Preflight {
    /// Not a CORS preflight: proxy it, then call [`Cors::on_response`].
    NotPreflight,
    /// A preflight from a listed origin: send this 204 (with the
    /// `Access-Control-*` headers, no body) and do not proxy.
    Allowed(ResponseHeader),
    /// A preflight from an origin not listed: send this 204 without CORS
    /// headers (the browser then refuses the request) and do not proxy.
    Refused(ResponseHeader),
}

/// Checks a `cors` section: origins are `*` or `scheme://host[:port]`
/// with no path (not even `/`) and not `null`; methods are tokens; header
/// names are valid; with `allow_credentials`, no `*` anywhere (browsers
/// take it literally then). [`Cors::new`] drops what this refuses.
pub fn check_config(
    origins: &[String],
    methods: &[String],
    headers: &[String],
    expose: &[String],
    credentials: bool,
) -> Result<(), String> {
    if origins.is_empty() {
        return Err("allow_origins is empty".into());
    }
    for origin in origins {
        if let Some(problem) = origin_problem(origin) {
            return Err(format!("allow_origins: {origin:?}: {problem}"));
        }
    }
    for (key, list, valid) in [
        ("allow_methods", methods, is_method as fn(&str) -> bool),
        ("allow_headers", headers, is_header_name),
        ("expose_headers", expose, is_header_name),
    ] {
        if let Some(bad) = list.iter().find(|item| *item != "*" && !valid(item)) {
            return Err(format!("{key}: {bad:?} is not a valid name"));
        }
    }
    let lists = [origins, methods, headers, expose];
    if credentials && lists.iter().any(|list| list.iter().any(|i| i == "*")) {
        return Err("allow_credentials: true cannot go with \"*\": name them all".into());
    }
    Ok(())
}

fn is_method(item: &str) -> bool {
    Method::from_bytes(item.as_bytes()).is_ok()
}

fn is_header_name(item: &str) -> bool {
    http::HeaderName::from_bytes(item.as_bytes()).is_ok()
}

/// Why `origin` is not `*` or `scheme://host[:port]`, if it is not.
fn origin_problem(origin: &str) -> Option<&'static str> {
    const FORM: &str = "expected scheme://host[:port], like https://app.example.com";
    if origin == "*" {
        return None;
    }
    if origin.eq_ignore_ascii_case("null") {
        return Some("\"null\" is sent by sandboxed and file pages; it cannot be allowed");
    }
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return Some(FORM);
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Some(FORM);
    };
    if origin.len() != scheme.len() + "://".len() + authority.as_str().len() {
        return Some("an origin has no path, not even a trailing /");
    }
    let port = authority.as_str().strip_prefix(authority.host());
    if authority.as_str().contains('@') || port.is_none() {
        return Some("an origin has no user information");
    }
    let bad_port = port.is_some_and(|p| !p.is_empty()) && authority.port_u16().is_none();
    bad_port.then_some("the port is not a number from 0 to 65535")
}

/// Lowercase, without the scheme's default port: the form browsers send.
fn normalized_origin(origin: &str) -> String {
    let lower = origin.to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if lower.starts_with(scheme) && lower.ends_with(port) {
            return lower[..lower.len() - port.len()].to_string();
        }
    }
    lower
}

/// The items `keep` accepts as one `a, b, c` value; `None` if none.
fn joined(items: &[String], keep: impl Fn(&str) -> bool) -> Option<HeaderValue> {
    let kept: Vec<String> = items.iter().filter(|i| keep(i)).cloned().collect();
    let value = HeaderValue::from_str(&kept.join(", ")).ok();
    value.filter(|v| !v.is_empty())
}

impl Cors {
    /// Builds the policy from the config's lists (origins `*` or
    /// `scheme://host[:port]`; methods and header names as written;
    /// `max_age` sent in whole seconds). Call [`check_config`] first: items
    /// it refuses are dropped here, and `*` origins are dropped when
    /// `credentials` is on. Empty lists send no header: browsers then allow
    /// only the CORS-safelisted methods and headers.
    pub fn new(
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        credentials: bool,
        max_age: Option<Duration>,
    ) -> Cors {
        let usable = |o: &&String| o.as_str() != "*" && origin_problem(o).is_none();
        let named = |valid: fn(&str) -> bool| {
            move |item: &str| (item == "*" && !credentials) || valid(item)
        };
        Cors {
            origins: origins
                .iter()
                .filter(usable)
                .filter_map(|o| HeaderValue::from_str(&normalized_origin(o)).ok())
                .collect(),
            any_origin: !credentials && origins.iter().any(|o| o == "*"),
            credentials,
            methods: joined(methods, named(is_method)),
            headers: joined(headers, named(is_header_name)),
            expose: joined(expose, named(is_header_name)),
            max_age: max_age.map(|age| HeaderValue::from(age.as_secs())),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`,
    /// or `None` when that origin is not allowed. A linear scan with
    /// `eq_ignore_ascii_case`: lists are short, and it needs no lowercase
    /// copy of the request's origin.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<&HeaderValue> {
        static ANY: HeaderValue = HeaderValue::from_static("*");
        if self.any_origin {
            return Some(&ANY);
        }
        let origin = origin?.as_bytes();
        self.origins
            .iter()
            .find(|listed| listed.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// Answers a CORS preflight (OPTIONS with `Origin` and
    /// `Access-Control-Request-Method`); any other request is
    /// [`Preflight::NotPreflight`]. The 204 keeps no header case map (names
    /// are lowercase on HTTP/1); one allocation per preflight.
    pub fn preflight(&self, req: &RequestHeader) -> Preflight {
        let origin = req.headers.get(ORIGIN);
        let asks = req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        let (Some(origin), true, true) = (origin, asks, req.method == Method::OPTIONS) else {
            return Preflight::NotPreflight;
        };
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = StatusCode::NO_CONTENT;
        let mut resp = ResponseHeader::from(parts);
        if !self.any_origin {
            set(&mut resp, "Vary", Some(&VARY_ORIGIN));
        }
        let Some(allow) = self.allow_origin(Some(origin)) else {
            return Preflight::Refused(resp);
        };
        set(&mut resp, ALLOW_ORIGIN, Some(allow));
        set(
            &mut resp,
            ALLOW_CREDENTIALS,
            self.credentials.then_some(&TRUE),
        );
        set(&mut resp, ALLOW_METHODS, self.methods.as_ref());
        set(&mut resp, ALLOW_HEADERS, self.headers.as_ref());
        set(&mut resp, MAX_AGE, self.max_age.as_ref());
        Preflight::Allowed(resp)
    }

    /// Sets the CORS headers of a real response (call from the response
    /// filter with the request's `Origin`): `Access-Control-Allow-Origin`
    /// (the origin when listed, `*` when `*` is configured), credentials
    /// and expose headers; removes the backend's for an origin not listed;
    /// merges `Vary: Origin`. No allocation unless the backend sent a
    /// `Vary` without `Origin`.
    pub fn on_response(&self, req_origin: Option<&HeaderValue>, resp: &mut ResponseHeader) {
        let allow = self.allow_origin(req_origin);
        let credentials = (self.credentials && allow.is_some()).then_some(&TRUE);
        set(resp, ALLOW_ORIGIN, allow);
        set(resp, ALLOW_CREDENTIALS, credentials);
        set(resp, EXPOSE_HEADERS, allow.and(self.expose.as_ref()));
        if !self.any_origin {
            add_vary_origin(resp);
        }
    }
}

/// Sets `name` to `value`, or removes it for `None`. `insert_header`
/// cannot fail with a valid static name and a ready value: its `Result` is
/// dropped.
fn set(resp: &mut ResponseHeader, name: &'static str, value: Option<&HeaderValue>) {
    match value {
        Some(value) => drop(resp.insert_header(name, value.clone())),
        None => drop(resp.remove_header(name)),
    }
}

/// Adds `Origin` to the response's `Vary` unless it (or `*`) is there;
/// several `Vary` lines are merged into one.
fn add_vary_origin(resp: &mut ResponseHeader) {
    let lists_origin = |value: &HeaderValue| {
        value.as_bytes().split(|b| *b == b',').any(|token| {
            let token = token.trim_ascii();
            token == b"*" || token.eq_ignore_ascii_case(b"origin")
        })
    };
    let existing = resp.headers.get_all(VARY);
    if existing.iter().any(lists_origin) {
        return;
    }
    let mut merged = Vec::new();
    for value in existing.iter() {
        merged.extend_from_slice(value.as_bytes());
        merged.extend_from_slice(b", ");
    }
    if merged.is_empty() {
        return set(resp, "Vary", Some(&VARY_ORIGIN)); // no allocation
    }
    merged.extend_from_slice(b"Origin");
    // Cannot fail: valid values joined with ", ".
    let value = HeaderValue::from_bytes(&merged).unwrap_or_else(|_| VARY_ORIGIN.clone());
    set(resp, "Vary", Some(&value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &str) -> Vec<String> {
        items.split_whitespace().map(String::from).collect()
    }

    fn app_cors(credentials: bool) -> Cors {
        let origins = strings("https://app.example.com:443 http://localhost:3000");
        let (methods, headers) = (strings("GET POST"), strings("Content-Type Authorization"));
        let (expose, age) = (strings("X-Request-Id"), Some(Duration::from_secs(600)));
        Cors::new(&origins, &methods, &headers, &expose, credentials, age)
    }

    fn preflight_from(origin: &str) -> RequestHeader {
        let mut req = RequestHeader::build("OPTIONS", b"/api", None).unwrap();
        for (name, value) in [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
        ] {
            req.insert_header(name, value).unwrap();
        }
        req
    }

    fn header<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        resp.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn cors_headers(resp: &ResponseHeader) -> usize {
        let cors = |name: &&http::HeaderName| name.as_str().starts_with("access-control-");
        resp.headers.keys().filter(cors).count()
    }

    #[test]
    fn a_preflight_from_a_listed_origin_gets_204_with_the_lists() {
        let outcome = app_cors(true).preflight(&preflight_from("https://app.example.com"));
        let Preflight::Allowed(resp) = outcome else {
            panic!("not allowed: {outcome:?}")
        };
        assert_eq!(resp.status, StatusCode::NO_CONTENT);
        let (origin, headers) = ("https://app.example.com", "Content-Type, Authorization");
        assert_eq!(header(&resp, ALLOW_ORIGIN), Some(origin));
        assert_eq!(header(&resp, ALLOW_METHODS), Some("GET, POST"));
        assert_eq!(header(&resp, ALLOW_HEADERS), Some(headers));
        assert_eq!(header(&resp, ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(header(&resp, MAX_AGE), Some("600"));
        assert_eq!(header(&resp, "vary"), Some("Origin"));
        assert_eq!(header(&resp, EXPOSE_HEADERS), None, "preflight");
    }

    #[test]
    fn origins_match_on_scheme_host_and_port_ignoring_case() {
        let cors = app_cors(false);
        for origin in strings("HTTPS://App.Example.COM http://localhost:3000") {
            let outcome = cors.preflight(&preflight_from(&origin));
            assert!(matches!(outcome, Preflight::Allowed(_)), "{origin}");
        }
        let others = "http://app.example.com https://app.example.com:8443 \
            https://evil.app.example.com https://app.example.com.evil null";
        for origin in strings(others) {
            let Preflight::Refused(resp) = cors.preflight(&preflight_from(&origin)) else {
                panic!("{origin} not refused")
            };
            assert_eq!(resp.status, StatusCode::NO_CONTENT);
            assert_eq!(cors_headers(&resp), 0, "{origin}");
            assert_eq!(header(&resp, "vary"), Some("Origin"));
        }
    }

    #[test]
    fn requests_that_are_not_preflights_are_left_to_the_backend() {
        let cors = app_cors(false);
        let mut no_method = preflight_from("https://app.example.com");
        no_method.remove_header("Access-Control-Request-Method");
        let mut no_origin = preflight_from("https://app.example.com");
        no_origin.remove_header("Origin");
        let mut get = preflight_from("https://app.example.com");
        get.set_method(Method::GET);
        for req in [no_method, no_origin, get] {
            assert!(matches!(cors.preflight(&req), Preflight::NotPreflight));
        }
    }

    #[test]
    fn a_real_response_to_a_listed_origin_gets_the_cors_headers_and_a_merged_vary() {
        let cors = app_cors(true);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Vary", "Accept-Encoding").unwrap();
        resp.append_header("Vary", "Accept-Language").unwrap();
        resp.insert_header(ALLOW_ORIGIN, "*").unwrap();
        let origin = HeaderValue::from_static("https://app.example.com");
        for _ in 0..2 {
            cors.on_response(Some(&origin), &mut resp);
            let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
            assert_eq!(vary, ["Accept-Encoding, Accept-Language, Origin"]);
        }
        assert_eq!(header(&resp, ALLOW_ORIGIN), Some("https://app.example.com"));
        assert_eq!(resp.headers.get_all(ALLOW_ORIGIN).iter().count(), 1);
        assert_eq!(header(&resp, ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(header(&resp, EXPOSE_HEADERS), Some("X-Request-Id"));
        assert_eq!(header(&resp, ALLOW_METHODS), None, "preflight only");
    }

    #[test]
    fn an_origin_not_listed_gets_no_cors_headers_even_from_the_backend() {
        let cors = app_cors(true);
        for origin in [Some(HeaderValue::from_static("https://evil.example")), None] {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header(ALLOW_ORIGIN, "https://x").unwrap();
            resp.insert_header(ALLOW_CREDENTIALS, "true").unwrap();
            resp.insert_header("Vary", "*").unwrap();
            cors.on_response(origin.as_ref(), &mut resp);
            assert_eq!(cors_headers(&resp), 0);
            assert_eq!(header(&resp, "vary"), Some("*"));
        }
    }

    #[test]
    fn a_star_origin_answers_star_without_vary() {
        let cors = Cors::new(&strings("*"), &[], &[], &[], false, None);
        let Preflight::Allowed(pre) = cors.preflight(&preflight_from("https://x.example")) else {
            panic!("not allowed")
        };
        assert_eq!(header(&pre, ALLOW_ORIGIN), Some("*"));
        assert_eq!(cors_headers(&pre), 1, "only the origin");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        cors.on_response(None, &mut resp);
        assert_eq!(header(&resp, ALLOW_ORIGIN), Some("*"));
        assert_eq!((header(&pre, "vary"), header(&resp, "vary")), (None, None));
        let with_credentials = Cors::new(&strings("*"), &[], &[], &[], true, None);
        let refused = with_credentials.preflight(&preflight_from("https://x.example"));
        assert!(matches!(refused, Preflight::Refused(_)), "* dropped");
    }

    #[test]
    fn check_config_refuses_star_with_credentials_and_malformed_items() {
        let ok = strings("https://app.example.com http://[::1]:8080");
        assert_eq!(check_config(&ok, &strings("GET"), &[], &[], true), Ok(()));
        let star = strings("*");
        assert!(check_config(&star, &[], &[], &[], false).is_ok());
        assert!(check_config(&star, &[], &[], &[], true).is_err());
        assert!(check_config(&ok, &[], &star, &[], true).is_err());
        assert!(check_config(&[], &[], &[], &[], false).is_err());
        let bad = "https://app.example.com/ app.example.com null https://u@app.example.com \
            https://app.example.com:99999 https:// ftp:/x";
        for origin in strings(bad) {
            let err =
                check_config(std::slice::from_ref(&origin), &[], &[], &[], false).unwrap_err();
            assert!(err.contains(&origin), "{err}");
        }
        let bad_method = check_config(&ok, &strings("GE,T"), &[], &[], false);
        assert!(bad_method.unwrap_err().contains("allow_methods"));
        let bad_header = check_config(&ok, &[], &[], &strings("X:Y"), false);
        assert!(bad_header.unwrap_err().contains("expose_headers"));
    }
}
