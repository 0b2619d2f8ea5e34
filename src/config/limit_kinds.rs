//! The limit kinds of a policy as written (`rate_limit:`,
//! `connection_limit:`) and their checks: rates (`100/s`), limit keys, a
//! rate limit's scope (`local`, or `cluster`: shared by every replica
//! through the `cluster:` section's Redis) and its fallback share. Every
//! error names its key.

use std::time::Duration;

use serde::Deserialize;

use super::checks::Problems;
use super::policies::{ConnectionLimitConfig, LimitKey, LimitScope, RateLimitConfig};

/// Most keys a rate limit remembers when the config does not say.
const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitFile {
    rate: String,
    burst: Option<i64>,
    key: Option<String>,
    max_keys: Option<i64>,
    /// `local` (the default) or `cluster`.
    scope: Option<String>,
    /// The part of the limit one replica allows alone when the cluster's
    /// store does not answer: more than 0, at most 1.
    fallback_share: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionLimitFile {
    max: i64,
    key: Option<String>,
}

pub(super) fn rate_limit(key: &str, file: RateLimitFile, errors: &mut Problems) -> RateLimitConfig {
    let (rate, period) = parse_rate(&file.rate).unwrap_or_else(|why| {
        errors.add(format!("{key}.rate"), why);
        (1, Duration::from_secs(1))
    });
    let burst = super::checks::whole_number(
        &format!("{key}.burst"),
        file.burst,
        i64::from(rate),
        0,
        i64::from(u32::MAX / 2),
        errors,
    );
    let max_keys = super::checks::whole_number(
        &format!("{key}.max_keys"),
        file.max_keys,
        DEFAULT_MAX_KEYS as i64,
        1,
        100_000_000,
        errors,
    );
    RateLimitConfig {
        rate,
        period,
        burst: burst as u32,
        key: limit_key(&format!("{key}.key"), file.key.as_deref(), errors),
        max_keys: max_keys as usize,
        scope: scope(&format!("{key}.scope"), file.scope.as_deref(), errors),
        fallback_share: file
            .fallback_share
            .and_then(|share| fallback_share(&format!("{key}.fallback_share"), share, errors)),
    }
}

pub(super) fn connection_limit(
    key: &str,
    file: ConnectionLimitFile,
    errors: &mut Problems,
) -> ConnectionLimitConfig {
    let max = super::checks::whole_number(
        &format!("{key}.max"),
        Some(file.max),
        1,
        1,
        10_000_000,
        errors,
    );
    ConnectionLimitConfig {
        max: max as u32,
        key: limit_key(&format!("{key}.key"), file.key.as_deref(), errors),
    }
}

/// Parses `100/s`, `6000/m`, `5/h` or `50/10s`: requests, then the period.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad =
        || format!("{text:?}: write requests per period, such as 100/s, 6000/m, 5/h or 50/10s");
    let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period = match period.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if count == 0 || period.is_zero() {
        return Err(format!("{text:?}: the rate must be more than zero"));
    }
    Ok((count, period))
}

fn limit_key(key: &str, written: Option<&str>, errors: &mut Problems) -> LimitKey {
    let text = written.unwrap_or("client_ip").trim();
    let parsed = match text {
        "client_ip" => Some(LimitKey::ClientIp),
        "route" => Some(LimitKey::Route),
        _ => {
            if let Some(name) = text.strip_prefix("header:") {
                http::HeaderName::from_bytes(name.trim().as_bytes())
                    .ok()
                    .map(LimitKey::Header)
            } else {
                text.strip_prefix("cookie:")
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| LimitKey::Cookie(n.to_string()))
            }
        }
    };
    parsed.unwrap_or_else(|| {
        errors.add(
            key,
            format!("{text:?}: write client_ip, header:NAME, cookie:NAME or route"),
        );
        LimitKey::ClientIp
    })
}

/// `local` or `cluster`.
fn scope(key: &str, written: Option<&str>, errors: &mut Problems) -> LimitScope {
    match written.map(str::trim) {
        None | Some("local") => LimitScope::Local,
        Some("cluster") => LimitScope::Cluster,
        Some(other) => {
            errors.add(key, format!("{other:?}: write local or cluster"));
            LimitScope::Local
        }
    }
}

/// A share in (0, 1], kept in millionths so the config stays comparable.
fn fallback_share(key: &str, share: f64, errors: &mut Problems) -> Option<u32> {
    if share.is_finite() && share > 0.0 && share <= 1.0 {
        // In range: the product is at most 1e6 and rounds into u32.
        return Some(((share * 1e6).round() as u32).max(1));
    }
    errors.add(
        key,
        format!("{share}: write the part of the limit one replica allows alone, more than 0 and at most 1 (0.5 for half)"),
    );
    None
}
