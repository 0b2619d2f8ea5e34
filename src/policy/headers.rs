//! `request_headers:` and `response_headers:`: set, add and remove, with
//! values that may hold `{client_ip}`, `{request_id}`, `{host}` and
//! `{route}`. Compiled once: a value without placeholders is a ready
//! `HeaderValue`, so applying it costs an insert.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use super::template;
use crate::config::HeaderRules;

/// What the placeholders stand for, for one request.
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    pub request_id: Option<&'a HeaderValue>,
    pub host: Host<'a>,
    pub route: Option<&'a str>,
}

/// Where `{host}` comes from: the request, looked up only by a value that
/// uses it, or a value kept from the request (for the response).
pub enum Host<'a> {
    Of(&'a RequestHeader),
    Known(Option<&'a str>),
}

impl Vars<'_> {
    fn host(&self) -> &str {
        match self.host {
            Host::Of(request) => request
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri.host())
                .unwrap_or(""),
            Host::Known(host) => host.unwrap_or(""),
        }
    }
}

/// A placeholder of a header value.
#[derive(Debug, Clone, Copy)]
enum Var {
    ClientIp,
    RequestId,
    Host,
    Route,
}

type Part = template::Part<Var>;

/// A header value: ready, or made per request from its parts.
#[derive(Debug, Clone)]
enum Value {
    Ready(HeaderValue),
    Template(Vec<Part>),
}

/// Compiled header rules.
#[derive(Debug, Clone)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
    remove: Vec<HeaderName>,
}

/// What both request and response headers offer (Pingora keeps the case
/// of names it was given, so edits go through its methods).
pub trait EditableHeaders {
    fn set(&mut self, name: HeaderName, value: HeaderValue);
    fn add(&mut self, name: HeaderName, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

/// Both header types edit through Pingora's own methods.
macro_rules! editable {
    ($($header:ty),*) => {$(
        impl EditableHeaders for $header {
            fn set(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.insert_header(name, value);
            }
            fn add(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.append_header(name, value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    )*};
}

editable!(RequestHeader, ResponseHeader);

impl HeaderEdits {
    /// Compiles `rules`; the config checked every template.
    pub fn new(rules: &HeaderRules) -> HeaderEdits {
        let compile = |pairs: &[(HeaderName, String)]| {
            pairs
                .iter()
                .map(|(name, text)| (name.clone(), Value::of(text)))
                .collect()
        };
        HeaderEdits {
            set: compile(&rules.set),
            add: compile(&rules.add),
            remove: rules.remove.clone(),
        }
    }

    /// Whether a value uses `{host}`.
    pub fn uses_host(&self) -> bool {
        self.set
            .iter()
            .chain(&self.add)
            .any(|(_, value)| match value {
                Value::Ready(_) => false,
                Value::Template(parts) => parts.iter().any(|p| matches!(p, Part::Var(Var::Host))),
            })
    }

    /// Applies the rules: removes first, then sets, then adds.
    pub fn apply(&self, headers: &mut impl EditableHeaders, vars: &Vars<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            if let Some(value) = value.render(vars) {
                headers.set(name.clone(), value);
            }
        }
        for (name, value) in &self.add {
            if let Some(value) = value.render(vars) {
                headers.add(name.clone(), value);
            }
        }
    }
}

impl Value {
    fn of(text: &str) -> Value {
        let parts = parse(text);
        match parts.as_slice() {
            [] => Value::Ready(HeaderValue::from_static("")),
            [Part::Text(text)] => HeaderValue::from_str(text)
                .map_or_else(|_| Value::Template(parts.clone()), Value::Ready),
            _ => Value::Template(parts),
        }
    }

    /// The value for this request; None when it would not be a valid
    /// header value (a Host with bytes a header cannot hold).
    fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        let parts = match self {
            Value::Ready(value) => return Some(value.clone()),
            Value::Template(parts) => parts,
        };
        let mut text = String::with_capacity(64);
        for part in parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Var(Var::ClientIp) => {
                    use std::fmt::Write;
                    let _ = write!(text, "{}", vars.client_ip);
                }
                Part::Var(Var::RequestId) => {
                    text.push_str(vars.request_id.and_then(|v| v.to_str().ok()).unwrap_or(""))
                }
                Part::Var(Var::Host) => text.push_str(vars.host()),
                Part::Var(Var::Route) => text.push_str(vars.route.unwrap_or("")),
            }
        }
        HeaderValue::from_str(&text).ok()
    }
}

/// Splits a checked template into its parts.
fn parse(text: &str) -> Vec<Part> {
    template::parse(text, |name| match name {
        "{client_ip}" => Some(Var::ClientIp),
        "{request_id}" => Some(Var::RequestId),
        "{host}" => Some(Var::Host),
        "{route}" => Some(Var::Route),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderEdits {
        let pairs = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), v.to_string()))
                .collect()
        };
        HeaderEdits::new(&HeaderRules {
            set: pairs(set),
            add: pairs(add),
            remove: remove
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect(),
        })
    }

    #[test]
    fn set_add_and_remove_with_placeholders() {
        let edits = rules(
            &[("X-Env", "prod"), ("X-Client", "{client_ip} via {route}")],
            &[("X-Tag", "{host}/{request_id}")],
            &["X-Debug"],
        );
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Debug", "1").unwrap();
        req.insert_header("X-Env", "dev").unwrap();
        req.insert_header("X-Tag", "first").unwrap();
        let id = HeaderValue::from_static("abc");
        req.insert_header("Host", "example.com").unwrap();
        let original = req.clone();
        let vars = Vars {
            client_ip: "10.1.2.3".parse().unwrap(),
            request_id: Some(&id),
            host: Host::Of(&original),
            route: Some("routes[0]"),
        };
        edits.apply(&mut req, &vars);
        assert!(req.headers.get("x-debug").is_none());
        assert_eq!(req.headers.get("x-env").unwrap(), "prod");
        assert_eq!(
            req.headers.get("x-client").unwrap(),
            "10.1.2.3 via routes[0]"
        );
        let tags: Vec<_> = req.headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["first", "example.com/abc"]);
    }

    #[test]
    fn a_response_loses_its_server_header() {
        let edits = rules(
            &[("Strict-Transport-Security", "max-age=63072000")],
            &[],
            &["Server"],
        );
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Server", "be/1").unwrap();
        let vars = Vars {
            client_ip: "::1".parse().unwrap(),
            request_id: None,
            host: Host::Known(None),
            route: None,
        };
        edits.apply(&mut resp, &vars);
        assert!(resp.headers.get("server").is_none());
        assert_eq!(
            resp.headers.get("strict-transport-security").unwrap(),
            "max-age=63072000"
        );
    }
}
