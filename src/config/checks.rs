//! The checks every section shares: a whole number in a range, a duration
//! over zero. Each failed check adds one error naming the key and the value,
//! and gives the default back, so that checking goes on and every problem is
//! reported at once.

use std::time::Duration;

/// Checks that `value` (default `default`) is a whole number from `min` to
/// `max`, pushing an error naming `key` otherwise.
pub(super) fn whole_number(
    key: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
    errors: &mut Vec<String>,
) -> i64 {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        value
    } else {
        errors.push(format!(
            "{key}: {value}: must be a whole number from {min} to {max}"
        ));
        default
    }
}

pub(super) fn positive_duration(
    key: &str,
    value: Option<Duration>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        errors.push(format!("{key}: 0s: must be more than zero"));
        return default;
    }
    value
}
