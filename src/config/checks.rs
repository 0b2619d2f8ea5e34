//! The checks every section shares: a whole number in a range, a duration
//! over zero. Each failed check adds one error naming the key and the value,
//! and gives the default back, so that checking goes on and every problem is
//! reported at once.

use std::fmt;
use std::time::Duration;

/// One problem found in a config: the key it is about (`backends[2].weight`)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the config: a dotted path, list entries by index.
    pub key: String,
    /// What is wrong, usually starting with the value as written.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Deserializes a section kept as raw YAML (an `upstreams:` entry, a
/// listener mapping). On error: the key inside it where it went wrong
/// (`.slow_start`, `.tls.min_version`; empty for the section itself) and
/// what is wrong, so the error names its key as the file's do.
pub fn from_section<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let sub_key = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        (sub_key, e.into_inner().to_string())
    })
}

/// The problems found so far: checking goes on after one, so that every
/// problem in a file is reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Notes a problem with `key`.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order they were found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Checks that `value` (default `default`) is a whole number from `min` to
/// `max`, pushing an error naming `key` otherwise.
pub(super) fn whole_number(
    key: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
    errors: &mut Problems,
) -> i64 {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        value
    } else {
        errors.add(
            key,
            format!("{value}: must be a whole number from {min} to {max}"),
        );
        default
    }
}

pub(super) fn positive_duration(
    key: &str,
    value: Option<Duration>,
    default: Duration,
    errors: &mut Problems,
) -> Duration {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        errors.add(key, "0s: must be more than zero");
        return default;
    }
    value
}
