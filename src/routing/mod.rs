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

use crate::config::RouteConfig;

/// A route chosen for a request, with `P`, the pool it sends to.
#[derive(Debug)]
pub struct Route<P> {
    /// Its place in the table, for per-route counters.
    pub id: usize,
    /// Its name, `routes[N]`.
    pub name: String,
    /// The path prefix it matched on, if any.
    pub path_prefix: Option<Box<str>>,
    /// The pool that serves it.
    pub pool: P,
    /// Whether to take `path_prefix` off the path.
    pub strip_prefix: bool,
}

impl<P> Route<P> {
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

/// Why a route cannot be in the table. The config's checks find both
/// first; the table checks again rather than route wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Two routes match exactly the same requests.
    #[error("{second} matches the same host and path prefix as {first}; make one more specific or remove it")]
    Ambiguous { first: String, second: String },
    /// The route names a pool there is none of.
    #[error("{route}: no pool named {pool:?}")]
    UnknownPool { route: String, pool: String },
}

/// The routing table, each route resolved to its pool `P`.
#[derive(Debug)]
pub struct RouteTable<P> {
    routes: Vec<Route<P>>,
    exact: HashMap<Box<str>, ByPrefix>,
    /// Wildcard hosts by their suffix (`.example.com`), longest first.
    wildcard: Vec<(Box<str>, ByPrefix)>,
    any_host: ByPrefix,
}

impl<P> Default for RouteTable<P> {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any_host: ByPrefix::default(),
        }
    }
}

impl<P> RouteTable<P> {
    /// Builds the table, each route given the pool `pool_of` finds for
    /// it; an error for each route that ties with an earlier one or whose
    /// pool is not found.
    pub fn new(
        configs: &[RouteConfig],
        mut pool_of: impl FnMut(&RouteConfig) -> Option<P>,
    ) -> Result<Self, Vec<RouteError>> {
        let mut table = RouteTable::default();
        let mut seen: HashMap<(Option<String>, Option<&str>), &str> = HashMap::new();
        let mut errors = Vec::new();
        for config in configs {
            let (host, prefix) = config.match_key();
            if let Some(first) = seen.get(&(host.clone(), prefix)) {
                errors.push(RouteError::Ambiguous {
                    first: first.to_string(),
                    second: config.name.clone(),
                });
                continue;
            }
            seen.insert((host.clone(), prefix), &config.name);
            let Some(pool) = pool_of(config) else {
                errors.push(RouteError::UnknownPool {
                    route: config.name.clone(),
                    pool: config.pool.clone().unwrap_or_default(),
                });
                continue;
            };
            let index = table.routes.len();
            table.routes.push(Route {
                id: index,
                name: config.name.clone(),
                path_prefix: prefix.map(Into::into),
                pool,
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
    pub fn routes(&self) -> &[Route<P>] {
        &self.routes
    }

    /// Whether there are no routes (every request goes to `default`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes in the order they are matched, for `lb -t`.
    pub fn in_match_order(&self) -> Vec<&Route<P>> {
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
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route<P>> {
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

    fn first(&self, group: &ByPrefix, path: &str) -> Option<&Route<P>> {
        group.0.iter().map(|i| &self.routes[*i]).find(|r| {
            r.path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
        })
    }
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

    fn route(name: &str, host: Option<&str>, prefix: Option<&str>, pool: usize) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.map(Into::into),
            pool: Some(format!("pool{pool}")),
            strip_prefix: false,
            policies: Vec::new(),
            rewrite: None,
            redirect: None,
        }
    }

    /// Pools named `pool0`, `pool1`... resolve to their number.
    fn numbered(route: &RouteConfig) -> Option<usize> {
        route.pool.as_deref()?.strip_prefix("pool")?.parse().ok()
    }

    fn table() -> RouteTable<usize> {
        RouteTable::new(
            &[
                route("routes[0]", None, None, 0),
                route("routes[1]", Some("*.example.com"), None, 1),
                route("routes[2]", None, Some("/static/"), 2),
                route("routes[3]", Some("api.example.com"), Some("/v1/"), 3),
                route("routes[4]", Some("api.example.com"), Some("/v1/admin/"), 4),
                route("routes[5]", Some("*.eu.example.com"), None, 5),
            ],
            numbered,
        )
        .unwrap()
    }

    fn upstream(host: Option<&str>, path: &str) -> Option<usize> {
        table().find(host, path).map(|r| r.pool)
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
        let table =
            RouteTable::new(&[route("routes[0]", Some("a.test"), None, 0)], numbered).unwrap();
        assert!(table.find(Some("b.test"), "/").is_none());
        assert!(table.find(None, "/").is_none());
    }

    #[test]
    fn routes_that_tie_are_an_error_naming_both() {
        let errors = RouteTable::new(
            &[
                route("routes[0]", Some("A.test"), Some("/x/"), 0),
                route("routes[1]", Some("a.test"), Some("/x/"), 1),
            ],
            numbered,
        )
        .unwrap_err();
        assert_eq!(
            errors,
            vec![RouteError::Ambiguous {
                first: "routes[0]".into(),
                second: "routes[1]".into()
            }]
        );
    }

    #[test]
    fn a_route_to_a_pool_that_is_not_there_is_an_error() {
        let errors = RouteTable::new(&[route("routes[0]", None, None, 7)], |route| {
            (route.pool.as_deref() == Some("pool0")).then_some(0)
        })
        .unwrap_err();
        assert_eq!(
            errors,
            vec![RouteError::UnknownPool {
                route: "routes[0]".into(),
                pool: "pool7".into()
            }]
        );
    }

    #[test]
    fn routes_resolve_to_their_pool_handles() {
        let pools = [std::sync::Arc::new("api"), std::sync::Arc::new("web")];
        let configs = [
            RouteConfig {
                pool: Some("api".into()),
                ..route("routes[0]", Some("api.test"), None, 0)
            },
            RouteConfig {
                pool: Some("web".into()),
                ..route("routes[1]", None, None, 0)
            },
        ];
        let table = RouteTable::new(&configs, |route| {
            pools
                .iter()
                .find(|p| Some(***p) == route.pool.as_deref())
                .cloned()
        })
        .unwrap();
        let api = table.find(Some("api.test"), "/").unwrap();
        assert!(std::sync::Arc::ptr_eq(&api.pool, &pools[0]));
        let web = table.find(Some("other.test"), "/").unwrap();
        assert!(std::sync::Arc::ptr_eq(&web.pool, &pools[1]));
    }

    #[test]
    fn strip_prefix_keeps_a_path() {
        let mut config = route("routes[0]", None, Some("/v1/"), 0);
        config.strip_prefix = true;
        let table = RouteTable::new(&[config], numbered).unwrap();
        let route = table.find(None, "/v1/users").unwrap();
        assert_eq!(route.upstream_path("/v1/users"), Some("/users"));
        assert_eq!(route.upstream_path("/v1"), Some("/"));
    }
}
