//! The `routes:` section: each route's match, its pool and its prefix
//! stripping, checked against the pools' names; no two routes may tie.

use serde::Deserialize;

use super::checks::Problems;
use super::file::HealthCheckFile;
use super::upstreams::{parse_upstreams, UpstreamConfig};
use crate::routing::{RouteConfig, RouteTable};

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
    default: Option<UpstreamConfig>,
    written: Option<serde_yaml_ng::Mapping>,
    routes: Option<Vec<RouteFile>>,
    top_health: &HealthCheckFile,
    errors: &mut Problems,
    warnings: &mut Vec<String>,
) -> (Vec<UpstreamConfig>, Vec<RouteConfig>) {
    // A route to a pool that failed to parse is not an error of its own.
    let written_pools: Vec<String> = written
        .iter()
        .flat_map(|pools| pools.keys())
        .filter_map(|name| name.as_str().map(str::to_string))
        .collect();
    let named = parse_upstreams(written.unwrap_or_default(), top_health, errors, warnings);
    let upstreams: Vec<UpstreamConfig> = default.into_iter().chain(named).collect();
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
    upstreams: &[UpstreamConfig],
    written_pools: &[String],
    errors: &mut Problems,
) -> Vec<RouteConfig> {
    let mut routes = Vec::with_capacity(written.len());
    for (i, route) in written.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let matches = route.matches.unwrap_or_default();
        let Some(upstream) = upstreams.iter().position(|u| u.name == route.upstream) else {
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
        };
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
            upstream,
            strip_prefix,
        });
    }
    if let Err(ties) = RouteTable::new(&routes) {
        for tie in ties {
            errors.add(tie.second.clone(), tie.to_string());
        }
    }
    routes
}
