//! W3C Trace Context (level 1) `traceparent`: a valid one from the client
//! is passed on unchanged; when it is absent or invalid lb starts a new
//! trace. lb exports no spans: it only carries the context so backends'
//! traces join up, and writes the trace id in the access log.
//!
//! Format: `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, lowercase
//! hex; all-zero trace or parent ids and version `ff` are invalid. A future
//! version (`01`..`fe`) is accepted when its first 55 characters parse as
//! version 00 and are followed by the end or a `-` (the spec's forward
//! compatibility rule), and is passed on as it came: lb does not record a
//! span, so it has no parent-id of its own to put in.

use http::HeaderValue;
use pingora::http::RequestHeader;
use rand::Rng;

/// The request header's name.
pub const HEADER: &str = "traceparent";
/// The vendor state that goes with it; dropped when lb restarts a trace.
const TRACESTATE: &str = "tracestate";
/// Length of a version-00 value, and the least of any version.
const LEN: usize = 55;
/// Flags of a trace lb starts: `00`, not sampled, since lb records nothing
/// (W3C: the bit says the caller may have recorded). A backend whose
/// sampler follows its parent then records no lb-started trace; `01` here
/// would make it record every one.
const NEW_FLAGS: &[u8; 2] = b"00";

/// The trace context a request carries on to the backend.
/// Invariant: `value` is a valid `traceparent` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    value: HeaderValue,
}

impl TraceParent {
    /// The request's context: its `traceparent` when there is exactly one
    /// and it is valid (returned with `false`), else a new trace started
    /// here (`true`). Valid case: one check and a reference-counted clone.
    pub fn of(req: &RequestHeader) -> (TraceParent, bool) {
        let mut values = req.headers.get_all(HEADER).iter();
        match (values.next(), values.next()) {
            (Some(value), None) if is_valid(value.as_bytes()) => (
                TraceParent {
                    value: value.clone(),
                },
                false,
            ),
            _ => (TraceParent::start(), true),
        }
    }

    /// A new trace: random non-zero trace and parent ids from the thread's
    /// RNG, written into a stack buffer (this runs per request: no
    /// formatting; the `HeaderValue` is the one allocation).
    pub fn start() -> TraceParent {
        let mut rng = rand::thread_rng();
        // max(1): an all-zero id is invalid; the chance is 2^-128 (2^-64).
        let trace_id = rng.gen::<u128>().max(1);
        let parent_id = rng.gen::<u64>().max(1);
        let mut text = [b'-'; LEN];
        text[..2].copy_from_slice(b"00");
        write_hex(&mut text[3..35], trace_id);
        write_hex(&mut text[36..52], u128::from(parent_id));
        text[53..].copy_from_slice(NEW_FLAGS);
        // Cannot fail (hex digits and dashes); the fallback keeps the
        // invariant without an unwrap.
        let value = HeaderValue::from_bytes(&text).unwrap_or_else(|_| {
            HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-00")
        });
        TraceParent { value }
    }

    /// The 32 lowercase hex digits of the trace id, for the access log.
    pub fn trace_id(&self) -> &str {
        let digits = self.value.as_bytes().get(3..35).unwrap_or_default();
        std::str::from_utf8(digits).unwrap_or_default()
    }

    /// The whole `traceparent` value.
    pub fn header(&self) -> &HeaderValue {
        &self.value
    }

    /// Puts the context on the request to the backend. A passed-on one is
    /// already there, unchanged, so this does nothing then; a trace
    /// started here replaces every `traceparent` and drops `tracestate`,
    /// which belonged to the trace that was not continued (W3C).
    pub fn apply_to(&self, upstream: &mut RequestHeader, started_here: bool) {
        if started_here {
            // Cannot fail: a valid static name and a ready value.
            let _ = upstream.insert_header(HEADER, self.value.clone());
            upstream.remove_header(TRACESTATE);
        }
    }
}

/// Whether `value` is a `traceparent` lb passes on (see the module doc).
fn is_valid(value: &[u8]) -> bool {
    if value.len() < LEN {
        return false;
    }
    let version = &value[..2];
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    let hex = [version, trace_id, parent_id, flags]
        .iter()
        .all(|f| is_lower_hex(f));
    let ids_set = !all_zeros(trace_id) && !all_zeros(parent_id);
    let tail_ok = match version {
        b"00" => value.len() == LEN,
        b"ff" => false,
        _ => value.len() == LEN || value[LEN] == b'-',
    };
    dashes && hex && ids_set && tail_ok
}

fn is_lower_hex(field: &[u8]) -> bool {
    field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn all_zeros(field: &[u8]) -> bool {
    field.iter().all(|b| *b == b'0')
}

/// Writes the low `out.len()` hex digits of `value` into `out`, lowercase.
fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request_with(values: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for value in values {
            req.append_header(HEADER, *value).unwrap();
        }
        req
    }

    #[test]
    fn a_valid_traceparent_is_passed_on_unchanged() {
        let (trace, started) = TraceParent::of(&request_with(&[VALID]));
        assert!(!started);
        assert_eq!(trace.header(), VALID);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut upstream = request_with(&[VALID]);
        upstream.insert_header(TRACESTATE, "vendor=1").unwrap();
        trace.apply_to(&mut upstream, started);
        assert_eq!(upstream.headers.get(HEADER).unwrap(), VALID);
        assert_eq!(upstream.headers.get(TRACESTATE).unwrap(), "vendor=1");
    }

    #[test]
    fn a_future_version_with_extra_fields_is_passed_on() {
        for value in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        ] {
            let (trace, started) = TraceParent::of(&request_with(&[value]));
            assert!(!started, "{value}");
            assert_eq!(trace.header(), value);
        }
    }

    #[test]
    fn each_invalid_form_is_replaced_by_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let (trace, started) = TraceParent::of(&request_with(&[bad]));
            assert!(started, "{bad:?} was kept");
            assert!(is_valid(trace.header().as_bytes()));
        }
        let (_, started) = TraceParent::of(&request_with(&[VALID, VALID]));
        assert!(started, "two traceparent headers are invalid");
    }

    #[test]
    fn a_missing_traceparent_starts_a_new_valid_trace_each_time() {
        let (first, started) = TraceParent::of(&request_with(&[]));
        let (second, _) = TraceParent::of(&request_with(&[]));
        assert!(started);
        for trace in [&first, &second] {
            let text = trace.header().to_str().unwrap();
            assert!(is_valid(text.as_bytes()), "{text}");
            assert!(text.starts_with("00-") && text.ends_with("-00"), "{text}");
            assert_eq!(trace.trace_id(), &text[3..35]);
        }
        assert_ne!(first.trace_id(), second.trace_id());
        assert_ne!(
            first.header().as_bytes()[36..52],
            second.header().as_bytes()[36..52]
        );
    }

    #[test]
    fn a_trace_started_here_replaces_the_old_context_upstream() {
        let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let mut upstream = request_with(&[bad, VALID]);
        upstream.insert_header(TRACESTATE, "vendor=1").unwrap();
        let (trace, started) = TraceParent::of(&upstream);
        trace.apply_to(&mut upstream, started);
        let values: Vec<_> = upstream.headers.get_all(HEADER).iter().collect();
        assert_eq!(values, [trace.header()]);
        assert!(upstream.headers.get(TRACESTATE).is_none());
    }

    #[test]
    fn write_hex_pads_with_zeros() {
        let mut out = [0u8; 16];
        write_hex(&mut out, 0xab);
        assert_eq!(&out, b"00000000000000ab");
    }
}
