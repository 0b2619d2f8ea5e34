//! Which pool serves a request: the routes of the config, matched by host
//! and path prefix, most specific first.
//!
//! Specificity, not file order, decides: a route for an exact host beats a
//! wildcard host (`*.example.com`, the longer suffix first), which beats a
//! route for any host; among those, the longest `path_prefix` wins. Two
//! routes that are equally specific for the same host and prefix are a
//! config error, found when the table is built. A request's host is
//! compared without its port and without regard to case.
//!
//! The table is built once per config: exact hosts in a hash map, so a
//! lookup costs one hash of the host and a few prefix comparisons, whatever
//! the number of routes.

use std::collections::HashMap;

/// One route as configured, with the pool it sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// How the route is named in errors, logs and metrics: `routes[2]`.
    pub name: String,
    /// The host it matches: `api.example.com`, `*.example.com`, or any.
    pub host: Option<String>,
    /// The path prefix it matches; any path when absent.
    pub path_prefix: Option<String>,
    /// The upstream (pool) that serves it, by index.
    pub upstream: usize,
    /// Whether the prefix is taken off the path before it goes upstream.
    pub strip_prefix: bool,
}

/// A route chosen for a request.
#[derive(Debug)]
pub struct Route {
    /// Its place in the table, for per-route counters.
    pub id: usize,
    /// Its name, `routes[N]`.
    pub name: String,
    /// The path prefix it matched on, if any.
    pub path_prefix: Option<Box<str>>,
    /// The upstream that serves it.
    pub upstream: usize,
    /// Whether to take `path_prefix` off the path.
    pub strip_prefix: bool,
}

impl Route {
    /// The path to send upstream: `path` without the prefix when the route
    /// strips it (never empty: `/v1` stripped from `/v1` is `/`).
    pub fn upstream_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        if !self.strip_prefix {
            return None;
        }
        let prefix = self.path_prefix.as_deref()?;
        match path.strip_prefix(prefix.trim_end_matches('/'))? {
            "" => Some("/"),
            rest if rest.starts_with('/') => Some(rest),
            // `/v1x` under the prefix `/v1`: no segment to take off.
            _ => None,
        }
    }
}

/// Routes of one host (or of any host), longest path prefix first.
#[derive(Debug, Default)]
struct ByPrefix(Vec<usize>);

/// Two routes that match exactly the same requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{second} matches the same host and path prefix as {first}; make one more specific or remove it")]
pub struct AmbiguousRoutes {
    pub first: String,
    pub second: String,
}

/// The routing table.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<Box<str>, ByPrefix>,
    /// Wildcard hosts by their suffix (`.example.com`), longest first.
    wildcard: Vec<(Box<str>, ByPrefix)>,
    any_host: ByPrefix,
}

impl RouteTable {
    /// Builds the table; an error for each pair of routes that tie.
    pub fn new(configs: &[RouteConfig]) -> Result<RouteTable, Vec<AmbiguousRoutes>> {
        let mut table = RouteTable::default();
        let mut keys: Vec<(Option<String>, Option<String>, String)> = Vec::new();
        let mut errors = Vec::new();
        for config in configs {
            let host = config.host.as_deref().map(normalize_host);
            let prefix = config.path_prefix.clone().filter(|p| p != "/");
            if let Some((_, _, first)) = keys.iter().find(|(h, p, _)| *h == host && *p == prefix) {
                errors.push(AmbiguousRoutes {
                    first: first.clone(),
                    second: config.name.clone(),
                });
                continue;
            }
            keys.push((host.clone(), prefix.clone(), config.name.clone()));
            let index = table.routes.len();
            table.routes.push(Route {
                id: index,
                name: config.name.clone(),
                path_prefix: prefix.map(String::into_boxed_str),
                upstream: config.upstream,
                strip_prefix: config.strip_prefix,
            });
            let group = match host {
                None => &mut table.any_host,
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => table.wildcard_group(suffix),
                    None => table.exact.entry(h.into_boxed_str()).or_default(),
                },
            };
            group.0.push(index);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        table.sort();
        Ok(table)
    }

    fn wildcard_group(&mut self, suffix: &str) -> &mut ByPrefix {
        let at = match self.wildcard.iter().position(|(s, _)| &**s == suffix) {
            Some(at) => at,
            None => {
                self.wildcard.push((suffix.into(), ByPrefix::default()));
                self.wildcard.len() - 1
            }
        };
        &mut self.wildcard[at].1
    }

    /// Orders every group longest prefix first, and wildcards longest
    /// suffix first.
    fn sort(&mut self) {
        let routes = &self.routes;
        let prefix_len = |i: &usize| routes[*i].path_prefix.as_deref().map_or(0, str::len);
        let groups = self
            .exact
            .values_mut()
            .chain(self.wildcard.iter_mut().map(|(_, g)| g))
            .chain(std::iter::once(&mut self.any_host));
        for group in groups {
            group.0.sort_by_key(|i| std::cmp::Reverse(prefix_len(i)));
        }
        self.wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    }

    /// Every route, by id.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether there are no routes (every request goes to `default`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes in the order they are matched, for `lb -t`.
    pub fn in_match_order(&self) -> Vec<&Route> {
        let mut exact: Vec<(&str, &ByPrefix)> = self.exact.iter().map(|(h, g)| (&**h, g)).collect();
        exact.sort_by_key(|(h, _)| *h);
        exact
            .into_iter()
            .map(|(_, g)| g)
            .chain(self.wildcard.iter().map(|(_, g)| g))
            .chain(std::iter::once(&self.any_host))
            .flat_map(|g| g.0.iter().map(|i| &self.routes[*i]))
            .collect()
    }

    /// The route for a request to `host` (as the client wrote it, port and
    /// case included) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let mut buf = [0u8; 256];
        let host = host.and_then(|h| lower_host(h, &mut buf));
        if let Some(host) = host {
            if let Some(route) = self.exact.get(host).and_then(|g| self.first(g, path)) {
                return Some(route);
            }
            for (suffix, group) in &self.wildcard {
                if host.len() > suffix.len() && host.ends_with(&**suffix) {
                    if let Some(route) = self.first(group, path) {
                        return Some(route);
                    }
                }
            }
        }
        self.first(&self.any_host, path)
    }

    fn first(&self, group: &ByPrefix, path: &str) -> Option<&Route> {
        group.0.iter().map(|i| &self.routes[*i]).find(|r| {
            r.path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
        })
    }
}

/// A configured host, lower case, without a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A request's host without its port, lower case, in `buf`; None when it
/// does not fit (no route has such a long name) or is not UTF-8.
fn lower_host<'a>(host: &str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let host = host_without_port(host).trim_end_matches('.');
    let out = buf.get_mut(..host.len())?;
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// `host` (a Host header) without a `:port`; IPv6 literals keep their
/// brackets.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: Option<&str>, upstream: usize) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.map(Into::into),
            upstream,
            strip_prefix: false,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("routes[0]", None, None, 0),
            route("routes[1]", Some("*.example.com"), None, 1),
            route("routes[2]", None, Some("/static/"), 2),
            route("routes[3]", Some("api.example.com"), Some("/v1/"), 3),
            route("routes[4]", Some("api.example.com"), Some("/v1/admin/"), 4),
            route("routes[5]", Some("*.eu.example.com"), None, 5),
        ])
        .unwrap()
    }

    fn upstream(host: Option<&str>, path: &str) -> Option<usize> {
        table().find(host, path).map(|r| r.upstream)
    }

    #[test]
    fn the_most_specific_route_wins_whatever_the_order() {
        assert_eq!(upstream(Some("api.example.com"), "/v1/users"), Some(3));
        assert_eq!(upstream(Some("api.example.com"), "/v1/admin/x"), Some(4));
        // Exact host without a matching prefix falls to the wildcard.
        assert_eq!(upstream(Some("api.example.com"), "/other"), Some(1));
        assert_eq!(upstream(Some("www.example.com"), "/static/a.css"), Some(1));
        assert_eq!(upstream(Some("x.eu.example.com"), "/"), Some(5));
        assert_eq!(upstream(Some("other.org"), "/static/a.css"), Some(2));
        assert_eq!(upstream(Some("other.org"), "/"), Some(0));
        assert_eq!(upstream(None, "/"), Some(0));
    }

    #[test]
    fn hosts_match_without_case_or_port() {
        assert_eq!(upstream(Some("API.Example.COM:8443"), "/v1/x"), Some(3));
        assert_eq!(upstream(Some("api.example.com."), "/v1/x"), Some(3));
        // The bare domain is not covered by its wildcard.
        assert_eq!(upstream(Some("example.com"), "/"), Some(0));
    }

    #[test]
    fn without_a_catch_all_nothing_matches() {
        let table = RouteTable::new(&[route("routes[0]", Some("a.test"), None, 0)]).unwrap();
        assert!(table.find(Some("b.test"), "/").is_none());
        assert!(table.find(None, "/").is_none());
    }

    #[test]
    fn routes_that_tie_are_an_error_naming_both() {
        let errors = RouteTable::new(&[
            route("routes[0]", Some("A.test"), Some("/x/"), 0),
            route("routes[1]", Some("a.test"), Some("/x/"), 1),
        ])
        .unwrap_err();
        assert_eq!(
            errors,
            vec![AmbiguousRoutes {
                first: "routes[0]".into(),
                second: "routes[1]".into()
            }]
        );
    }

    #[test]
    fn strip_prefix_keeps_a_path() {
        let mut config = route("routes[0]", None, Some("/v1/"), 0);
        config.strip_prefix = true;
        let table = RouteTable::new(&[config]).unwrap();
        let route = table.find(None, "/v1/users").unwrap();
        assert_eq!(route.upstream_path("/v1/users"), Some("/users"));
        assert_eq!(route.upstream_path("/v1"), Some("/"));
    }
}
