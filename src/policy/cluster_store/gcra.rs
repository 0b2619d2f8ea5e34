//! The GCRA step run inside Redis: one Lua script per decision, so a read-modify-write of a
//! key's state is atomic across every lb replica, with Redis' own `TIME` as the one clock.
//!
//! The rule is `governor`'s, as in [`super::super::rate_limit`]: a key's state is its
//! theoretical arrival time `tat`; with `t` = `period / rate` and `tau = t * burst`, a request
//! at `now` is refused while `now < tat - tau` (wait `tat - tau - now`), else accepted with
//! `tat = max(tat, now) + t` and `remaining = (now + tau + t - tat) / t`. So the bucket holds
//! `burst + 1`, and one credit arrives every `t`.
//!
//! **Units.** Lua numbers are doubles, exact for integers up to 2^53: the script counts in
//! whole microseconds (`TIME` since the epoch is about 2^51 µs), so `t` is rounded to the
//! nearest microsecond (at least 1). Limits whose interval is not a whole number of µs (3 per
//! second: 333,333.3 µs) differ from the local limiter by under a microsecond per credit;
//! rates above 1,000,000 per second per key are capped there. The key expires (`PX`) when
//! `tat` is reached, which is when its state equals a fresh key's.
use super::super::rate_limit::RateDecision;
use redis::{Cmd, RedisWrite, ToRedisArgs, Value};
use std::io::Write;
use std::time::Duration;

/// The script. `KEYS[1]`: the key; `ARGV[1]`: `t` in µs; `ARGV[2]`: burst; `ARGV[3]`
/// (tests only): a fixed `now` in µs instead of `TIME`, and then no expiry. Returns
/// `{1, remaining}` or `{0, wait_µs}`.
pub const GCRA_LUA: &str = r#"
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local earliest = tat - tolerance
if now < earliest then
  return {0, earliest - now}
end
tat = tat + interval
local tat_text = string.format('%.0f', tat)
if ARGV[3] then
  redis.call('SET', KEYS[1], tat_text)
else
  redis.call('SET', KEYS[1], tat_text, 'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
end
return {1, math.floor((now + tolerance + interval - tat) / interval)}
"#;

/// Largest `(burst + 1) * t` in µs the script is given: far below 2^53, where doubles stop
/// being exact, and still about 8.9 years of tolerance.
const MAX_TOLERANCE_MICROS: u64 = 1 << 48;

/// The script's `t` and `burst` for a limit of `rate` per `period` plus `burst`: `t` is the
/// local limiter's `period / rate` (at least 1 ns) rounded to whole µs (at least 1), and
/// `burst` is capped so the script's arithmetic stays exact.
pub fn script_params(rate: u32, period: Duration, burst: u32) -> (u64, u32) {
    let interval_nanos = (period / rate.max(1)).as_nanos();
    let interval_micros = u64::try_from(interval_nanos.saturating_add(500) / 1000)
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TOLERANCE_MICROS);
    let burst_cap = MAX_TOLERANCE_MICROS / interval_micros - 1;
    let burst = u32::try_from(u64::from(burst).min(burst_cap)).unwrap_or(u32::MAX);
    (interval_micros, burst)
}

/// The Redis key `prefix + limit + ":" + key`, written straight into the command's buffer:
/// no intermediate `Vec`, binary-safe.
pub struct LimitKey<'a> {
    pub prefix: &'a [u8],
    pub limit: &'a [u8],
    pub key: &'a [u8],
}

impl LimitKey<'_> {
    /// Length of the key in bytes.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.limit.len() + 1 + self.key.len()
    }
}

impl ToRedisArgs for LimitKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        // The writer appends to the command's Vec: these writes cannot fail.
        for part in [self.prefix, self.limit, b":", self.key] {
            let _ = arg.write_all(part);
        }
    }
}

/// `EVALSHA <sha> 1 <key> <t> <burst> [now]`, or with `EVAL <script>` in place of the hash
/// (after `NOSCRIPT`). One buffer sized up front: the command's only data allocation.
pub fn script_command(
    verb_and_body: (&str, &str),
    key: &LimitKey<'_>,
    (interval_micros, burst): (u64, u32),
    fixed_now_micros: Option<u64>,
) -> Cmd {
    let (verb, body) = verb_and_body;
    let data_len = verb.len() + body.len() + 1 + key.len() + 20 + 10 + 20;
    let mut cmd = Cmd::with_capacity(7, data_len);
    cmd.arg(verb).arg(body).arg(1).arg(key);
    cmd.arg(interval_micros).arg(burst);
    if let Some(now) = fixed_now_micros {
        cmd.arg(now);
    }
    cmd
}

/// Reads the script's `{1, remaining}` / `{0, wait_µs}` reply; `None` if it is malformed.
pub fn parse_reply(reply: &Value) -> Option<RateDecision> {
    let Value::Array(items) = reply else {
        return None;
    };
    match items.as_slice() {
        [Value::Int(1), Value::Int(remaining)] => Some(RateDecision::Allowed {
            remaining: u32::try_from(*remaining).unwrap_or(if *remaining < 0 {
                0
            } else {
                u32::MAX
            }),
        }),
        [Value::Int(0), Value::Int(wait_micros)] => Some(RateDecision::Limited {
            retry_after: Duration::from_micros(u64::try_from(*wait_micros).unwrap_or(0)),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_to_whole_microseconds_and_absurd_limits_are_capped() {
        let second = Duration::from_secs(1);
        assert_eq!(script_params(100, second, 20), (10_000, 20));
        assert_eq!(script_params(3, second, 0), (333_333, 0));
        assert_eq!(script_params(2, Duration::from_micros(3), 0), (2, 0));
        assert_eq!(script_params(u32::MAX, second, 5), (1, 5));
        assert_eq!(script_params(0, Duration::ZERO, 1), (1, 1));
        let (interval, burst) = script_params(1, Duration::from_secs(86_400 * 365), u32::MAX);
        assert!((u64::from(burst) + 1) * interval <= MAX_TOLERANCE_MICROS);
        assert_eq!(script_params(1, Duration::MAX, 0).1, 0);
    }

    #[test]
    fn the_key_is_prefix_limit_colon_key_as_one_binary_argument() {
        let key = LimitKey {
            prefix: b"lb:",
            limit: b"api",
            key: &[10, 0, 0, 255],
        };
        let cmd = script_command(("EVALSHA", "abc"), &key, (10, 2), None);
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let expected: [&[u8]; 6] = [b"EVALSHA", b"abc", b"1", b"lb:api:\n\0\0\xff", b"10", b"2"];
        assert_eq!(args, expected.map(<[u8]>::to_vec));
    }

    #[test]
    fn replies_parse_and_malformed_ones_do_not() {
        let reply = |a, b| Value::Array(vec![Value::Int(a), Value::Int(b)]);
        let allowed = RateDecision::Allowed { remaining: 3 };
        assert_eq!(parse_reply(&reply(1, 3)), Some(allowed));
        let limited = RateDecision::Limited {
            retry_after: Duration::from_micros(1500),
        };
        assert_eq!(parse_reply(&reply(0, 1500)), Some(limited));
        assert_eq!(parse_reply(&reply(2, 0)), None);
        assert_eq!(parse_reply(&Value::Okay), None);
    }
}
