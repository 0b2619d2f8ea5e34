//! Each kind of policy as written, and its checks: CIDRs, header names and value templates, sizes
//! (`1KiB`), the forward-auth URL. Every error names its key.

use std::time::Duration;

use serde::Deserialize;

use super::checks::Problems;
use super::policies::{
    parse_nets, AccessConfig, BasicAuthConfig, CompressionConfig, CorsConfig, ForwardAuthConfig,
    HeaderRules,
};

/// The forward-auth wait when the config does not say.
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Headers a rule may not set or add: hop-by-hop ones (lb removes them
/// on each hop) and the body's framing.
const FRAMING_AND_HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The placeholders a header value may hold.
pub const HEADER_PLACEHOLDERS: [&str; 4] = ["{client_ip}", "{request_id}", "{host}", "{route}"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessFile {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderRulesFile {
    #[serde(default)]
    set: serde_yaml_ng::Mapping,
    #[serde(default)]
    add: serde_yaml_ng::Mapping,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompressionFile {
    algorithms: Option<Vec<String>>,
    min_size: Option<serde_yaml_ng::Value>,
    types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BasicAuthFile {
    realm: Option<String>,
    users_file: std::path::PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForwardAuthFile {
    url: String,
    #[serde(default)]
    copy_headers: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    on_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorsFile {
    allow_origins: Vec<String>,
    allow_methods: Option<Vec<String>>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    allow_credentials: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    max_age: Option<Duration>,
}

pub(super) fn access(key: &str, file: AccessFile, errors: &mut Problems) -> AccessConfig {
    if file.allow.is_empty() && file.deny.is_empty() {
        errors.add(key, "neither allow nor deny given");
    }
    AccessConfig {
        allow: parse_nets(&format!("{key}.allow"), &file.allow, errors),
        deny: parse_nets(&format!("{key}.deny"), &file.deny, errors),
    }
}

pub(super) fn header_rules(key: &str, file: HeaderRulesFile, errors: &mut Problems) -> HeaderRules {
    HeaderRules {
        set: header_values(&format!("{key}.set"), file.set, errors),
        add: header_values(&format!("{key}.add"), file.add, errors),
        remove: file
            .remove
            .iter()
            .enumerate()
            .filter_map(|(i, name)| header_name(&format!("{key}.remove[{i}]"), name, errors))
            .collect(),
    }
}

fn header_name(key: &str, name: &str, errors: &mut Problems) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| errors.add(key, format!("{name:?}: not a header name")))
        .ok()
}

/// The `name: value` pairs of a `set:` or `add:`, each value checked as a
/// header value with only the known placeholders.
fn header_values(
    key: &str,
    written: serde_yaml_ng::Mapping,
    errors: &mut Problems,
) -> Vec<(http::HeaderName, String)> {
    let mut pairs = Vec::with_capacity(written.len());
    for (name, value) in written {
        let (Some(name), Some(value)) = (yaml_text(&name), yaml_text(&value)) else {
            errors.add(
                key,
                format!("{name:?}: {value:?}: write name: value as text"),
            );
            continue;
        };
        let at = format!("{key}.{name}");
        let Some(header) = header_name(&at, &name, errors) else {
            continue;
        };
        if FRAMING_AND_HOP_BY_HOP.contains(&header.as_str()) {
            errors.add(
                at,
                format!("{name}: a hop-by-hop or framing header; lb sets it itself"),
            );
            continue;
        }
        match check_template(&value) {
            Ok(()) => pairs.push((header, value)),
            Err(why) => errors.add(at, why),
        }
    }
    pairs
}

/// A YAML scalar as text: strings as they are, numbers and booleans as
/// written.
fn yaml_text(value: &serde_yaml_ng::Value) -> Option<String> {
    match value {
        serde_yaml_ng::Value::String(text) => Some(text.clone()),
        serde_yaml_ng::Value::Number(number) => Some(number.to_string()),
        serde_yaml_ng::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Checks a header value template: every `{...}` is a known placeholder,
/// and the rest is a valid header value.
pub fn check_template(value: &str) -> Result<(), String> {
    let mut rest = value;
    let mut literal = String::with_capacity(value.len());
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("{value:?}: a {{ without its }}"))?;
        let placeholder = &rest[open..open + close + 1];
        if !HEADER_PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "{value:?}: unknown placeholder {placeholder}; there are: {}",
                HEADER_PLACEHOLDERS.join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    literal.push_str(rest);
    http::HeaderValue::from_str(&literal)
        .map(|_| ())
        .map_err(|_| format!("{value:?}: not a valid header value"))
}

pub(super) fn compression(
    key: &str,
    file: CompressionFile,
    errors: &mut Problems,
) -> CompressionConfig {
    let algorithms = file
        .algorithms
        .unwrap_or_else(|| vec!["zstd".into(), "br".into(), "gzip".into()]);
    for (i, name) in algorithms.iter().enumerate() {
        if !matches!(name.as_str(), "zstd" | "br" | "gzip") {
            errors.add(
                format!("{key}.algorithms[{i}]"),
                format!("{name:?}: write zstd, br or gzip"),
            );
        }
    }
    if algorithms.is_empty() {
        errors.add(format!("{key}.algorithms"), "the list is empty");
    }
    let min_size = match file.min_size.as_ref().map(parse_size) {
        None => 1024,
        Some(Ok(size)) => size,
        Some(Err(why)) => {
            errors.add(format!("{key}.min_size"), why);
            1024
        }
    };
    let types = file.types.unwrap_or_else(|| {
        [
            "text/*",
            "application/json",
            "application/javascript",
            "application/xml",
            "image/svg+xml",
        ]
        .map(String::from)
        .to_vec()
    });
    for (i, media) in types.iter().enumerate() {
        if !media.contains('/') || media.contains(char::is_whitespace) {
            errors.add(
                format!("{key}.types[{i}]"),
                format!("{media:?}: write a media type such as text/html or text/*"),
            );
        }
    }
    CompressionConfig {
        algorithms,
        min_size,
        types,
    }
}

/// Parses a size: a number of bytes, or with a unit (`1KiB`, `64KB`,
/// `1MiB`, `1MB`, `512B`).
pub fn parse_size(value: &serde_yaml_ng::Value) -> Result<u64, String> {
    let text = match value {
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::String(s) => s.trim().to_string(),
        other => return Err(format!("{other:?}: write a size such as 1024 or 1KiB")),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("{text:?}: write a size such as 1024, 1KiB or 1MB");
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1024,
        "KB" | "kB" => 1000,
        "MiB" | "M" => 1024 * 1024,
        "MB" => 1_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

pub(super) fn basic_auth(file: BasicAuthFile) -> BasicAuthConfig {
    BasicAuthConfig {
        realm: file.realm.unwrap_or_else(|| "restricted".into()),
        users_file: file.users_file,
    }
}

pub(super) fn forward_auth(
    key: &str,
    file: ForwardAuthFile,
    errors: &mut Problems,
) -> Option<ForwardAuthConfig> {
    let copy_headers = file
        .copy_headers
        .iter()
        .enumerate()
        .filter_map(|(i, n)| header_name(&format!("{key}.copy_headers[{i}]"), n, errors))
        .collect();
    let fail_open = match file.on_error.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            errors.add(
                format!("{key}.on_error"),
                format!("{other:?}: write deny (answer 503, the default) or allow"),
            );
            false
        }
    };
    let (host, path) = split_http_url(&file.url)
        .map_err(|why| errors.add(format!("{key}.url"), why))
        .ok()?;
    let addr = super::backends::resolve(&host)
        .map_err(|why| errors.add(format!("{key}.url"), format!("{:?}: {why}", file.url)))
        .ok()?;
    Some(ForwardAuthConfig {
        url: file.url,
        addr,
        host,
        path,
        copy_headers,
        timeout: file.timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT),
        fail_open,
    })
}

/// `http://host:port/path` as its `host:port` (port 80 when absent) and
/// path.
fn split_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: write an http:// URL (lb reaches its auth service over plain HTTP)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let host = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    http::uri::PathAndQuery::try_from(path)
        .map_err(|_| format!("{url:?}: {path:?} is not a valid path"))?;
    Ok((host, path.to_string()))
}

pub(super) fn cors(key: &str, file: CorsFile, errors: &mut Problems) -> CorsConfig {
    if file.allow_origins.is_empty() {
        errors.add(format!("{key}.allow_origins"), "the list is empty");
    }
    let credentials = file.allow_credentials.unwrap_or(false);
    for (i, origin) in file.allow_origins.iter().enumerate() {
        let at = format!("{key}.allow_origins[{i}]");
        if origin == "*" {
            if credentials {
                errors.add(at, "\"*\" cannot go with allow_credentials: true (the Fetch standard refuses it): list the origins");
            }
        } else if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || origin.trim_end_matches('/').matches('/').count() != 2
        {
            errors.add(
                at,
                format!("{origin:?}: write scheme://host[:port], such as https://app.example.com"),
            );
        }
    }
    CorsConfig {
        allow_origins: file.allow_origins,
        allow_methods: file
            .allow_methods
            .unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]),
        allow_headers: file.allow_headers,
        expose_headers: file.expose_headers,
        allow_credentials: credentials,
        max_age: file.max_age,
    }
}
