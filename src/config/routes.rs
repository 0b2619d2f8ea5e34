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
    /// The name of the pool that serves it; None for a redirect.
    pub pool: Option<String>,
    /// Whether the prefix is taken off the path before it goes upstream.
    pub strip_prefix: bool,
    /// Names of the policies its requests go through, after the
    /// listener's, in order.
    pub policies: Vec<String>,
    /// A regex rewrite of the path sent upstream.
    pub rewrite: Option<RewriteConfig>,
    /// lb answers with a redirect; no pool.
    pub redirect: Option<RedirectConfig>,
}

/// `rewrite: {path: REGEX, to: TEMPLATE}`: the path (not the query) is
/// matched against `path` and, when it matches, replaced by `to`, where
/// `$1`, `${name}` are its captures. The query is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteConfig {
    pub path: String,
    pub to: String,
}

/// `redirect: {to: TEMPLATE, status: 301}`: `{scheme}`, `{host}`,
/// `{path}` and `{query}` are the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    pub to: String,
    pub status: u16,
}

/// The placeholders a redirect's `to` may hold.
pub const REDIRECT_PLACEHOLDERS: [&str; 4] = ["{scheme}", "{host}", "{path}", "{query}"];

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
    upstream: Option<String>,
    strip_prefix: Option<bool>,
    #[serde(default)]
    policies: Vec<String>,
    rewrite: Option<RewriteFile>,
    redirect: Option<RedirectFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewriteFile {
    path: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectFile {
    to: String,
    status: Option<u16>,
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
    for (i, route) in written.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let Some(pool) = route_pool(&key, &route, upstreams, written_pools, errors) else {
            continue;
        };
        let matches = route.matches.unwrap_or_default();
        check_match(&key, &matches, errors);
        let strip_prefix = route.strip_prefix.unwrap_or(false);
        if strip_prefix && matches.path_prefix.is_none() {
            errors.add(
                format!("{key}.strip_prefix"),
                "true without match.path_prefix: there is no prefix to strip",
            );
        }
        routes.push(RouteConfig {
            name: key.clone(),
            host: matches.host,
            path_prefix: matches.path_prefix,
            pool,
            strip_prefix,
            policies: route.policies,
            rewrite: route.rewrite.and_then(|r| parse_rewrite(&key, r, errors)),
            redirect: route.redirect.and_then(|r| parse_redirect(&key, r, errors)),
        });
    }
    check_ties(&routes, errors);
    routes
}

/// The pool a route sends to: None inside Some for a redirect, None when
/// the route is dropped (its pool is unknown, or failed to parse: that
/// pool's own error says what is wrong).
fn route_pool(
    key: &str,
    route: &RouteFile,
    upstreams: &[PoolConfig],
    written_pools: &[String],
    errors: &mut Problems,
) -> Option<Option<String>> {
    match (&route.upstream, &route.redirect) {
        (Some(_), Some(_)) => {
            errors.add(
                format!("{key}.redirect"),
                "a route with redirect answers itself: remove its upstream",
            );
            None
        }
        (None, Some(_)) => {
            if route.rewrite.is_some() || route.strip_prefix == Some(true) {
                errors.add(
                    format!("{key}.redirect"),
                    "a redirect sends nothing upstream: remove rewrite and strip_prefix",
                );
            }
            Some(None)
        }
        (None, None) => {
            errors.add(
                format!("{key}.upstream"),
                "missing: give an upstream or a redirect",
            );
            None
        }
        (Some(upstream), None) => {
            if upstreams.iter().any(|u| &u.name == upstream) {
                return Some(Some(upstream.clone()));
            }
            if !written_pools.contains(upstream) {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                errors.add(
                    format!("{key}.upstream"),
                    format!(
                        "no upstream named {upstream:?} (there are: {})",
                        known.join(", ")
                    ),
                );
            }
            None
        }
    }
}

fn check_match(key: &str, matches: &MatchFile, errors: &mut Problems) {
    if let Some(prefix) = &matches.path_prefix {
        if !prefix.starts_with('/') {
            errors.add(
                format!("{key}.match.path_prefix"),
                format!("{prefix:?}: must start with /"),
            );
        }
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
}

fn parse_rewrite(key: &str, written: RewriteFile, errors: &mut Problems) -> Option<RewriteConfig> {
    let regex = match regex::Regex::new(&written.path) {
        Ok(regex) => regex,
        Err(e) => {
            errors.add(
                format!("{key}.rewrite.path"),
                format!("{:?}: {e}", written.path),
            );
            return None;
        }
    };
    if !written.to.starts_with('/') {
        errors.add(
            format!("{key}.rewrite.to"),
            format!("{:?}: must start with /", written.to),
        );
        return None;
    }
    if let Err(why) = check_captures(&regex, &written.to) {
        errors.add(format!("{key}.rewrite.to"), why);
        return None;
    }
    Some(RewriteConfig {
        path: written.path,
        to: written.to,
    })
}

/// Checks that every `$N` / `${name}` of `to` is a capture of `regex`.
fn check_captures(regex: &regex::Regex, to: &str) -> Result<(), String> {
    let reference = regex::Regex::new(r"\$(\{([^}]*)\}|([0-9]+|[A-Za-z_][A-Za-z0-9_]*))")
        .map_err(|e| e.to_string())?;
    for found in reference.captures_iter(to) {
        let name = found
            .get(2)
            .or_else(|| found.get(3))
            .map_or("", |m| m.as_str());
        let known = match name.parse::<usize>() {
            Ok(n) => n < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|c| c == name),
        };
        if !known {
            return Err(format!(
                "{to:?}: ${name} is not a capture of the path's regex (it has {})",
                regex.captures_len() - 1
            ));
        }
    }
    Ok(())
}

fn parse_redirect(
    key: &str,
    written: RedirectFile,
    errors: &mut Problems,
) -> Option<RedirectConfig> {
    let status = written.status.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        errors.add(
            format!("{key}.redirect.status"),
            format!("{status}: write 301, 302, 303, 307 or 308"),
        );
        return None;
    }
    let mut rest = written.to.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            errors.add(
                format!("{key}.redirect.to"),
                format!("{:?}: a {{ without its }}", written.to),
            );
            return None;
        };
        let placeholder = &rest[open..open + close + 1];
        if !REDIRECT_PLACEHOLDERS.contains(&placeholder) {
            errors.add(
                format!("{key}.redirect.to"),
                format!(
                    "{:?}: unknown placeholder {placeholder}; there are: {}",
                    written.to,
                    REDIRECT_PLACEHOLDERS.join(", ")
                ),
            );
            return None;
        }
        rest = &rest[open + close + 1..];
    }
    Some(RedirectConfig {
        to: written.to,
        status,
    })
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
