//! Following request heads in the raw bytes a client sends: where a head
//! ends (a blank line), and what each request's reads held, for the
//! keep-alive loop; and checking a head before Pingora parses it, so that
//! a malformed head or one with too many fields gets lb's own answer
//! (Pingora's is a bare 400 with `Server: Pingora`).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::LazyLock;

use bytes::BytesMut;
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};
use pingora::protocols::Stream;
use regex::bytes::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one request's reads from the client held, shared between a
/// connection's [`ClientStream`] and its keep-alive loop.
#[derive(Debug, Default)]
pub struct RequestReads(AtomicU8);

impl RequestReads {
    /// The request's head has been read.
    const HEAD: u8 = 1;
    /// Bytes past that head were read: a body, or a pipelined request.
    const PAST_HEAD: u8 = 2;

    pub(super) fn start_request(&self) {
        self.0.store(0, Relaxed);
    }

    /// Whether the request's reads held its head and nothing more.
    pub(super) fn only_a_head(&self) -> bool {
        self.0.load(Relaxed) == Self::HEAD
    }

    /// Records a read of `len` bytes; `head_end`, where in them a head
    /// ended, if one did.
    pub(super) fn record(&self, len: usize, head_end: Option<usize>) {
        let seen = self.0.load(Relaxed);
        let now = if seen & Self::HEAD != 0 {
            seen | Self::PAST_HEAD
        } else {
            match head_end {
                Some(end) if end < len => Self::HEAD | Self::PAST_HEAD,
                Some(_) => Self::HEAD,
                None => seen,
            }
        };
        if now != seen {
            self.0.store(now, Relaxed);
        }
    }
}

/// Follows `bytes` through a blank line; `progress` carries the state from
/// one read to the next. Returns where in `bytes` the head ends (just after
/// its blank line), if it does.
///
/// Only the line feeds are visited (found with `memchr`): this runs on every
/// read of every request head.
pub(super) fn ends_head(progress: &mut u8, bytes: &[u8]) -> Option<usize> {
    // Where the current line starts, and what came before it: a line feed
    // in these bytes, or the state the last read left.
    let mut line_start = 0;
    let mut after_lf = *progress == 1;
    let mut after_lf_cr = *progress == 2;
    for lf in memchr::memchr_iter(b'\n', bytes) {
        let empty_line = match &bytes[line_start..lf] {
            [] => after_lf || after_lf_cr,
            [b'\r'] => after_lf,
            _ => false,
        };
        if empty_line {
            *progress = 0;
            return Some(lf + 1);
        }
        line_start = lf + 1;
        after_lf = true;
        after_lf_cr = false;
    }
    *progress = match &bytes[line_start..] {
        [] if line_start > 0 => 1,
        [] => *progress,
        [b'\r'] if after_lf => 2,
        _ => 0,
    };
    None
}

/// The limits a request head is checked against before Pingora reads it.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Most header fields (`limits.max_request_headers`): 431 beyond. At
    /// most Pingora's own limit, which sizes the parse's array.
    max_headers: usize,
    /// Most bytes of a head still without its end: 431 beyond.
    max_bytes: usize,
}

impl HeadLimits {
    /// The limits for `limits.max_request_headers` and
    /// `limits.max_header_bytes`. A raw head is a little longer than what
    /// `max_header_bytes` counts (the version, the line ends): 1 KiB of
    /// room keeps a head under that limit from being cut here.
    pub fn new(max_request_headers: usize, max_header_bytes: usize) -> Self {
        HeadLimits {
            max_headers: max_request_headers.min(PINGORA_MAX_HEADERS),
            max_bytes: max_header_bytes + 1024,
        }
    }
}

/// What lb makes of the bytes that start a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadCheck {
    /// A whole head, which Pingora's parser takes.
    Sound,
    /// No whole head yet.
    Partial,
    /// A head to refuse with this status: 400 (malformed), 405 (CONNECT:
    /// lb is no forward proxy, and Pingora refuses it too) or 431.
    Refuse(u16),
}

/// Most header fields Pingora's HTTP/1 parser takes (its `MAX_HEADERS`).
const PINGORA_MAX_HEADERS: usize = 256;

/// Checks the head at the start of `bytes` as Pingora's HTTP/1 parser
/// will read it (httparse with its default settings, and Pingora's escape
/// of a request line with illegal bytes in its target), against `limits`.
///
/// One more parse of each head that lb reads itself: its cost is that of
/// httparse on the head, 290 to 410 ns for a 184-byte head of six fields
/// (release build, this project's shared 2-core machine at load 6, so an
/// upper bound); the header array is on the stack and left uninitialised.
pub(super) fn check_head(bytes: &[u8], limits: HeadLimits) -> HeadCheck {
    match parse(bytes, limits) {
        Err(httparse::Error::Token | httparse::Error::Version) => {
            // Pingora escapes the target and parses again; so does lb.
            match escape_request_line(bytes) {
                Some(escaped) => match parse(&escaped, limits) {
                    Err(httparse::Error::Token | httparse::Error::Version) => {
                        HeadCheck::Refuse(400)
                    }
                    other => judge(other, bytes.len(), limits),
                },
                None => HeadCheck::Refuse(400),
            }
        }
        other => judge(other, bytes.len(), limits),
    }
}

/// What a parse's `outcome` of `len` bytes means.
fn judge(outcome: httparse::Result<Method>, len: usize, limits: HeadLimits) -> HeadCheck {
    match outcome {
        Ok(httparse::Status::Complete(Method::Connect)) => HeadCheck::Refuse(405),
        Ok(httparse::Status::Complete(Method::Other)) => HeadCheck::Sound,
        Ok(httparse::Status::Partial) if len > limits.max_bytes => HeadCheck::Refuse(431),
        Ok(httparse::Status::Partial) => HeadCheck::Partial,
        Err(httparse::Error::TooManyHeaders) => HeadCheck::Refuse(431),
        Err(_) => HeadCheck::Refuse(400),
    }
}

/// The method of a whole head, as far as lb cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Connect,
    Other,
}

/// Parses the head at the start of `bytes` with room for
/// `limits.max_headers` fields.
fn parse(bytes: &[u8], limits: HeadLimits) -> httparse::Result<Method> {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); PINGORA_MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = request.parse_with_uninit_headers(bytes, &mut headers[..limits.max_headers])?;
    Ok(match parsed {
        httparse::Status::Complete(_) if request.method == Some("CONNECT") => {
            httparse::Status::Complete(Method::Connect)
        }
        httparse::Status::Complete(_) => httparse::Status::Complete(Method::Other),
        httparse::Status::Partial => httparse::Status::Partial,
    })
}

/// Pingora's pattern for a request line whose target has illegal bytes
/// (`escape_illegal_request_line` in pingora-core's `v1/server.rs`).
static REQUEST_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\w+ (?P<uri>.+) HTTP/\d(?:\.\d)?").expect("a valid constant pattern")
});

/// The bytes Pingora percent-encodes in such a target.
const URI_ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'<').add(b'>').add(b'"');

/// `bytes` with the request line's target escaped as Pingora escapes it;
/// None when there is nothing to escape (Pingora then answers 400).
fn escape_request_line(bytes: &[u8]) -> Option<Vec<u8>> {
    let uri = REQUEST_LINE.captures(bytes)?.name("uri")?;
    let mut escaped = Vec::with_capacity(bytes.len() + 32);
    escaped.extend_from_slice(&bytes[..uri.start()]);
    for part in percent_encode(uri.as_bytes(), URI_ESCAPED) {
        escaped.extend_from_slice(part.as_bytes());
    }
    if escaped.len() == uri.end() {
        return None;
    }
    escaped.extend_from_slice(&bytes[uri.end()..]);
    Some(escaped)
}

/// lb's answer to a malformed head, in the form of its other error pages.
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n\
Cache-Control: no-store\r\nConnection: close\r\n\r\n400 Bad Request\n";

/// lb's answer to CONNECT.
const NOT_ALLOWED: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\
Cache-Control: no-store\r\nConnection: close\r\n\r\n405 Method Not Allowed\n";

/// lb's answer to a head with too many fields or bytes.
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 36\r\n\
Cache-Control: no-store\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large\n";

/// Reads on until `bytes` hold a whole request head and checks it (see
/// [`check_head`]). Returns whether Pingora is to parse it: false when the
/// client closed, was too slow (the stream answered 408), or lb refused
/// its head and answered it, closing the connection.
pub(super) async fn read_whole_head(
    stream: &mut Stream,
    bytes: &mut BytesMut,
    limits: HeadLimits,
) -> bool {
    loop {
        match check_head(bytes, limits) {
            HeadCheck::Sound => return true,
            HeadCheck::Partial => {}
            HeadCheck::Refuse(status) => {
                log::debug!("refused a request head with {status}");
                let page = match status {
                    405 => NOT_ALLOWED,
                    431 => TOO_LARGE,
                    _ => BAD_REQUEST,
                };
                if stream.write_all(page).await.is_ok() {
                    let _ = stream.flush().await;
                    let _ = stream.shutdown().await;
                }
                return false;
            }
        }
        bytes.reserve(READ_SIZE);
        let before = bytes.len();
        match stream.read_buf(bytes).await {
            Ok(_) if bytes.len() > before => {}
            _ => return false,
        }
    }
}

/// Room made for each further read of a head.
const READ_SIZE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_headers: 100,
        max_bytes: 2048,
    };

    fn with_fields(n: usize) -> String {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 1..n {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        head + "\r\n"
    }

    #[test]
    fn heads_are_judged_as_pingora_parses_them() {
        let check = |head: &str| check_head(head.as_bytes(), LIMITS);
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"),
            HeadCheck::Sound
        );
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n"), HeadCheck::Partial);
        assert_eq!(check("GET / HTTP/9.9 foo\r\n\r\n"), HeadCheck::Refuse(400));
        assert_eq!(
            check("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            HeadCheck::Refuse(400)
        );
        // Pingora escapes a space in the target and takes the request.
        assert_eq!(
            check("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadCheck::Sound
        );
        assert_eq!(
            check("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            HeadCheck::Refuse(405)
        );
        assert_eq!(check(&with_fields(100)), HeadCheck::Sound);
        assert_eq!(check(&with_fields(101)), HeadCheck::Refuse(431));
        assert_eq!(
            check(&format!("GET / HTTP/1.1\r\nA: {}", "x".repeat(3000))),
            HeadCheck::Refuse(431)
        );
    }

    #[test]
    fn the_escape_is_pingoras() {
        assert_eq!(
            escape_request_line(b"GET /a b HTTP/1.1\r\n").as_deref(),
            Some(&b"GET /a%20b HTTP/1.1\r\n"[..])
        );
        assert_eq!(escape_request_line(b"GET / HTTP/9.9 foo\r\n"), None);
    }

    #[test]
    fn a_blank_line_ends_the_head_across_reads() {
        let mut progress = 0;
        assert_eq!(
            ends_head(&mut progress, b"GET / HTTP/1.1\r\nHost: x\r"),
            None
        );
        assert_eq!(ends_head(&mut progress, b"\n\r"), None);
        assert_eq!(ends_head(&mut progress, b"\nnext"), Some(1));
        let mut progress = 0;
        assert_eq!(ends_head(&mut progress, b"GET / HTTP/1.0\n\n"), Some(16));
        let mut progress = 0;
        assert_eq!(
            ends_head(&mut progress, b"GET / HTTP/1.1\r\nA: b\r\n"),
            None
        );
    }

    /// The byte-at-a-time state machine `ends_head` replaced: the reference.
    fn ends_head_bytewise(progress: &mut u8, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            *progress = match (*progress, b) {
                (1 | 2, b'\n') => {
                    *progress = 0;
                    return Some(i + 1);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }

    #[test]
    fn ends_head_agrees_with_the_bytewise_machine_at_every_split() {
        let heads: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody",
            b"GET / HTTP/1.0\n\n",
            b"GET / HTTP/1.1\r\nA: b\r\n",
            b"\r\n\r\n",
            b"a\n\r\r\nb\n\r\n",
            b"x\r\r\n\r\r\n",
            b"\n\r",
            b"GET /\r\nA: \n\r\n",
        ];
        for head in heads {
            for cut in 0..=head.len() {
                for second_cut in cut..=head.len() {
                    let reads = [&head[..cut], &head[cut..second_cut], &head[second_cut..]];
                    let (mut fast, mut slow) = (0u8, 0u8);
                    for read in reads {
                        let ended = ends_head(&mut fast, read);
                        assert_eq!(
                            ended,
                            ends_head_bytewise(&mut slow, read),
                            "{head:?} read as {reads:?}"
                        );
                        if ended.is_some() {
                            break;
                        }
                        assert_eq!(fast, slow, "{head:?} read as {reads:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn reads_past_a_head_are_told_apart_from_a_lone_head() {
        let reads = RequestReads::default();
        reads.record(10, None);
        assert!(!reads.only_a_head(), "no head yet");
        reads.record(8, Some(8));
        assert!(reads.only_a_head());
        reads.record(4, None);
        assert!(!reads.only_a_head(), "a body or the next request");
        reads.start_request();
        reads.record(20, Some(12));
        assert!(
            !reads.only_a_head(),
            "bytes after the head in the same read"
        );
    }

    #[test]
    fn configured_limits_are_capped_at_pingoras_and_given_a_kib_of_room() {
        // 1000 fields configured: Pingora takes 256 at most, so 257 get 431.
        let limits = HeadLimits::new(1000, 100);
        assert_eq!(
            check_head(with_fields(256).as_bytes(), limits),
            HeadCheck::Sound
        );
        assert_eq!(
            check_head(with_fields(257).as_bytes(), limits),
            HeadCheck::Refuse(431)
        );
        // 100 bytes configured: an unfinished head is waited for up to 1124.
        let unfinished = |len: usize| {
            let start = "GET / HTTP/1.1\r\nA: ";
            format!("{start}{}", "x".repeat(len - start.len()))
        };
        assert_eq!(
            check_head(unfinished(1124).as_bytes(), limits),
            HeadCheck::Partial
        );
        assert_eq!(
            check_head(unfinished(1125).as_bytes(), limits),
            HeadCheck::Refuse(431)
        );
    }
}
