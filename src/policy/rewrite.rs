//! A route's `rewrite:` (a regex over the path, with captures; the query
//! is kept) and `redirect:` (lb answers with a Location made from
//! `{scheme}`, `{host}`, `{path}` and `{query}`). Both compiled once, when
//! the config is built.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;
use regex::Regex;

use super::template;
use super::Answer;
use crate::config::{RedirectConfig, RewriteConfig};
use crate::telemetry::metrics::metrics;
use crate::telemetry::policies::{Outcome, PolicyCounters};

/// A compiled path rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    path: Regex,
    to: String,
}

impl Rewrite {
    /// Compiles `config`; None when the regex does not compile (the config
    /// checked it, so only a regex-crate change could make it fail).
    pub fn new(config: &RewriteConfig) -> Option<Rewrite> {
        Some(Rewrite {
            path: Regex::new(&config.path).ok()?,
            to: config.to.clone(),
        })
    }

    /// The request target with its path rewritten, the query kept; None
    /// when the path does not match.
    pub fn apply(&self, uri: &http::Uri) -> Option<http::Uri> {
        let captures = self.path.captures(uri.path())?;
        let mut target = String::with_capacity(uri.path().len() + self.to.len());
        captures.expand(&self.to, &mut target);
        if let Some(query) = uri.query() {
            target.push('?');
            target.push_str(query);
        }
        target.parse().ok()
    }
}

/// A placeholder of a redirect's target.
#[derive(Debug, Clone, Copy)]
enum Var {
    Scheme,
    Host,
    Path,
    Query,
}

type Part = template::Part<Var>;

/// A compiled redirect.
#[derive(Debug, Clone)]
pub struct Redirect {
    parts: Vec<Part>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// `lb_policy_decisions_total{policy="redirect:<route>"}`.
    counters: PolicyCounters,
}

/// The request parts a redirect may use.
pub struct Target<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    /// The redirect of the route `route`.
    pub fn new(config: &RedirectConfig, route: &str) -> Redirect {
        let parts = template::parse(&config.to, |name| match name {
            "{scheme}" => Some(Var::Scheme),
            "{host}" => Some(Var::Host),
            "{path}" => Some(Var::Path),
            "{query}" => Some(Var::Query),
            _ => None,
        });
        Redirect {
            parts,
            status: config.status,
            counters: metrics().policies.counters(&format!("redirect:{route}")),
        }
    }

    /// lb's answer to `req`, counted.
    pub fn answer(&self, req: &RequestHeader, tls: bool) -> Answer {
        self.counters.count(Outcome::Redirected);
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or("");
        let location = self.location(&Target {
            scheme: if tls { "https" } else { "http" },
            host,
            path: req.uri.path(),
            query: req.uri.query(),
        });
        let headers = HeaderValue::from_str(&location)
            .map(|value| vec![(http::header::LOCATION, value)])
            .unwrap_or_default();
        Answer {
            status: self.status,
            headers,
            body: Bytes::new(),
            close: false,
        }
    }

    /// The Location for a request. `{query}` is the query without its `?`;
    /// a template that ends in `{path}` with no `{query}` anywhere keeps
    /// the request's query after the path, as nginx's `return` with
    /// `$request_uri` does.
    pub fn location(&self, request: &Target<'_>) -> String {
        let mut location = String::with_capacity(64);
        let mut used_query = false;
        for part in &self.parts {
            match part {
                Part::Text(text) => location.push_str(text),
                Part::Var(Var::Scheme) => location.push_str(request.scheme),
                Part::Var(Var::Host) => location.push_str(request.host),
                Part::Var(Var::Path) => location.push_str(request.path),
                Part::Var(Var::Query) => {
                    used_query = true;
                    location.push_str(request.query.unwrap_or(""));
                }
            }
        }
        if let (false, Some(Part::Var(Var::Path)), Some(query)) =
            (used_query, self.parts.last(), request.query)
        {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_uses_its_captures_and_keeps_the_query() {
        let rewrite = Rewrite::new(&RewriteConfig {
            path: "^/api/v1/(.*)$".into(),
            to: "/v2/$1".into(),
        })
        .unwrap();
        let uri: http::Uri = "/api/v1/users/7?full=1".parse().unwrap();
        assert_eq!(rewrite.apply(&uri).unwrap(), "/v2/users/7?full=1");
        let other: http::Uri = "/api/v3/users".parse().unwrap();
        assert!(rewrite.apply(&other).is_none());
    }

    #[test]
    fn named_captures_are_expanded() {
        let rewrite = Rewrite::new(&RewriteConfig {
            path: "^/u/(?P<id>[0-9]+)/(?P<rest>.*)$".into(),
            to: "/users/${id}/${rest}".into(),
        })
        .unwrap();
        let uri: http::Uri = "/u/42/photos".parse().unwrap();
        assert_eq!(rewrite.apply(&uri).unwrap(), "/users/42/photos");
    }

    #[test]
    fn a_redirect_fills_its_placeholders() {
        let target = Target {
            scheme: "http",
            host: "old.example.com",
            path: "/old/page",
            query: Some("a=1"),
        };
        let to = |t: &str| {
            Redirect::new(
                &RedirectConfig {
                    to: t.into(),
                    status: 301,
                },
                "routes[0]",
            )
            .location(&target)
        };
        assert_eq!(
            to("https://new.example.com{path}"),
            "https://new.example.com/old/page?a=1"
        );
        assert_eq!(
            to("{scheme}://{host}/new?{query}"),
            "http://old.example.com/new?a=1"
        );
        assert_eq!(to("https://example.org/"), "https://example.org/");
    }
}
