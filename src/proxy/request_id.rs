//! Request IDs: an incoming `X-Request-Id` from a trusted proxy is kept
//! (when it is short and printable), otherwise lb makes one: a client
//! cannot choose the id lb logs and its backends see. lb passes it to the backend, returns
//! it to the client and writes it in the access log.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use http::HeaderValue;
use pingora::http::RequestHeader;

/// The header's name.
pub const HEADER: &str = "x-request-id";

/// Longest client-given ID lb keeps.
const MAX_LEN: usize = 128;

/// The request's ID: the one a trusted proxy sent if acceptable, else a
/// new one.
pub fn of(req: &RequestHeader, from_trusted_proxy: bool) -> HeaderValue {
    if !from_trusted_proxy {
        // Not even looked up: most requests come from clients.
        return generate();
    }
    req.headers
        .get(HEADER)
        .filter(|v| acceptable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(generate)
}

fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// A new ID: 16 hex digits unique to this process start, then a counter.
/// Unique across restarts and processes without asking the OS each time.
fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Relaxed);
    // 16 hex digits, a dash, 12 hex digits: written by hand into a stack
    // buffer, because this runs for every request without an id.
    let mut text = [0u8; 29];
    write_hex(&mut text[..16], prefix);
    text[16] = b'-';
    write_hex(&mut text[17..], n);
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Writes the low `out.len()` hex digits of `value` into `out`.
fn write_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_good_client_id_and_replaces_a_bad_one() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(HEADER, "abc-123").unwrap();
        assert_eq!(of(&req, true), "abc-123");
        req.insert_header(HEADER, "x".repeat(300)).unwrap();
        assert_ne!(of(&req, true).len(), 300);
        let fresh = RequestHeader::build("GET", b"/", None).unwrap();
        let (a, b) = (of(&fresh, true), of(&fresh, true));
        assert_ne!(a, b, "two requests, two ids");
        assert_eq!(a.len(), 29);
        assert!(a
            .to_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-'));
    }

    #[test]
    fn an_untrusted_clients_id_is_replaced() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(HEADER, "<script>").unwrap();
        assert_ne!(of(&req, false), "<script>");
        req.insert_header(HEADER, "abc-123").unwrap();
        assert_ne!(of(&req, false), "abc-123");
    }

    #[test]
    fn an_id_must_be_printable_and_at_most_128_bytes() {
        let id_of = |value: &[u8]| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header(HEADER, HeaderValue::from_bytes(value).unwrap())
                .unwrap();
            of(&req, true)
        };
        let longest = "a".repeat(128);
        assert_eq!(id_of(longest.as_bytes()), longest.as_str());
        for bad in [&b"a".repeat(129)[..], b"", b"a b", b"a\tb", b"caf\xc3\xa9"] {
            let id = id_of(bad);
            assert_ne!(id.as_bytes(), bad, "{bad:?} was kept");
            assert_eq!(id.len(), 29, "{bad:?} got {id:?}, not a new id");
        }
    }

    #[test]
    fn new_ids_share_the_process_prefix_and_count_up() {
        let fresh = RequestHeader::build("GET", b"/", None).unwrap();
        let (a, b) = (of(&fresh, true), of(&fresh, true));
        let split = |id: &HeaderValue| {
            let (prefix, n) = id.to_str().unwrap().split_once('-').unwrap();
            (prefix.to_string(), u64::from_str_radix(n, 16).unwrap())
        };
        let ((prefix_a, n_a), (prefix_b, n_b)) = (split(&a), split(&b));
        assert_eq!(prefix_a, prefix_b);
        assert_eq!(prefix_a.len(), 16);
        // Other tests may take ids in between: later is larger, not next.
        assert!(n_b > n_a, "{a:?} then {b:?}");
    }

    #[test]
    fn hex_is_written_low_digits_last_and_cut_to_fit() {
        let mut out = [0u8; 4];
        write_hex(&mut out, 0xbeef);
        assert_eq!(&out, b"beef");
        write_hex(&mut out, 0x1_2345);
        assert_eq!(&out, b"2345");
        write_hex(&mut out, 0xa);
        assert_eq!(&out, b"000a");
    }
}
