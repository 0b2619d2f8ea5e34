//! The `routes:` section: each route's match, its pool and its prefix
//! stripping, checked against the pools' names; no two routes may tie.

use std::collections::HashMap;

use serde::Deserialize;

use super::checks::Problems;
use super::file::HealthCheckFile;
use super::pools::{parse_pools, PoolConfig};

/// One route as configured: what it matches and the pool it sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// How the route is named in errors, logs and metrics: `routes[2]`.
    pub name: String,
    /// The host it matches: `api.example.com`, `*.example.com`, or any.
    pub host: Option<String>,
    /// The path prefix it matches; any path when absent.
    pub path_prefix: Option<String>,
    /// The name of the pool that serves it.
    pub pool: String,
    /// Whether the prefix is taken off the path before it goes upstream.
    pub strip_prefix: bool,
}

impl RouteConfig {
    /// What the route matches, as two routes are compared: the host lower
    /// case without a trailing dot, and the path prefix (`/` is none).
    pub fn match_key(&self) -> (Option<String>, Option<&str>) {
        let host = self
            .host
            .as_deref()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let prefix = self.path_prefix.as_deref().filter(|p| *p != "/");
        (host, prefix)
    }
}

/// A `routes:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    #[serde(rename = "match")]
    matches: Option<MatchFile>,
    upstream: String,
    strip_prefix: Option<bool>,
}

/// A route's `match:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    host: Option<String>,
    path_prefix: Option<String>,
}

/// Every pool, `default` (the top-level backends) first when there is
/// one, then the named ones written in `upstreams:`, and the routes to them.
pub(super) fn parse_pools_and_routes(
    default: Option<PoolConfig>,
    written: Option<serde_yaml_ng::Mapping>,
    routes: Option<Vec<RouteFile>>,
    top_health: &HealthCheckFile,
    errors: &mut Problems,
    warnings: &mut Vec<String>,
) -> (Vec<PoolConfig>, Vec<RouteConfig>) {
    // A route to a pool that failed to parse is not an error of its own.
    let written_pools: Vec<String> = written
        .iter()
        .flat_map(|pools| pools.keys())
        .filter_map(|name| name.as_str().map(str::to_string))
        .collect();
    let named = parse_pools(written.unwrap_or_default(), top_health, errors, warnings);
    let upstreams: Vec<PoolConfig> = default.into_iter().chain(named).collect();
    let routes = parse_routes(
        routes.unwrap_or_default(),
        &upstreams,
        &written_pools,
        errors,
    );
    if upstreams.len() > 1 && routes.is_empty() {
        errors.add(
            "routes",
            "none given: with several upstreams, routes say which serves what",
        );
    }
    (upstreams, routes)
}

/// Parses the routes against the pools' names; checks that no two tie. A
/// route to one of `written_pools` that did not parse is dropped
/// quietly: that pool's own error says what is wrong.
fn parse_routes(
    written: Vec<RouteFile>,
    upstreams: &[PoolConfig],
    written_pools: &[String],
    errors: &mut Problems,
) -> Vec<RouteConfig> {
    let mut routes = Vec::with_capacity(written.len());
    let names: std::collections::HashSet<&str> =
        upstreams.iter().map(|u| u.name.as_str()).collect();
    for (i, route) in written.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let matches = route.matches.unwrap_or_default();
        if !names.contains(route.upstream.as_str()) {
            if written_pools.contains(&route.upstream) {
                continue;
            }
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            errors.add(
                format!("{key}.upstream"),
                format!(
                    "no upstream named {:?} (there are: {})",
                    route.upstream,
                    known.join(", ")
                ),
            );
            continue;
        }
        if let Some(prefix) = &matches.path_prefix {
            if !prefix.starts_with('/') {
                errors.add(
                    format!("{key}.match.path_prefix"),
                    format!("{prefix:?}: must start with /"),
                );
            }
        }
        let strip_prefix = route.strip_prefix.unwrap_or(false);
        if strip_prefix && matches.path_prefix.is_none() {
            errors.add(
                format!("{key}.strip_prefix"),
                "true without match.path_prefix: there is no prefix to strip",
            );
        }
        if let Some(host) = &matches.host {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if name.is_empty() || name.contains(['/', ' ', '*', ':']) {
                errors.add(
                    format!("{key}.match.host"),
                    format!("{host:?}: write a host name, or *.domain for its subdomains"),
                );
            }
        }
        routes.push(RouteConfig {
            name: key,
            host: matches.host,
            path_prefix: matches.path_prefix,
            pool: route.upstream,
            strip_prefix,
        });
    }
    check_ties(&routes, errors);
    routes
}

/// An error for each route that matches exactly what an earlier one does.
fn check_ties(routes: &[RouteConfig], errors: &mut Problems) {
    let mut seen: HashMap<_, &str> = HashMap::with_capacity(routes.len());
    for route in routes {
        let first = *seen.entry(route.match_key()).or_insert(&route.name);
        if first != route.name {
            errors.add(
                route.name.clone(),
                format!(
                    "{} matches the same host and path prefix as {first}; \
                     make one more specific or remove it",
                    route.name
                ),
            );
        }
    }
}
