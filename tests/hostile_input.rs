//! A corpus of malformed and ambiguous HTTP/1 requests, sent raw over TCP to
//! a running lb in front of one `be` that records every request it receives.
//!
//! Each vector states what lb must do with it ([`Expect`]):
//! - malformed requests get one 4xx response or none, and the connection is
//!   closed; never a 2xx;
//! - ambiguous but legal ones (absolute-form targets, obs-text, identical
//!   duplicate Content-Lengths, ...) get the backend's 200;
//! - a few malformed ones that Pingora repairs get the backend's 200 too: it
//!   percent-encodes illegal bytes in the target and drops chunk extensions
//!   and trailers, so what reaches the backend is well formed;
//! - Content-Length together with Transfer-Encoding is forwarded as chunked
//!   (Content-Length dropped), answered 200, and the client connection is
//!   closed afterwards: the second option RFC 9112 6.3 allows, and what
//!   Pingora does.
//!
//! Wherever a vector hides a second request (`GET /smuggled-NAME`) in a body
//! or behind it, the backend's record must never show it, and every request
//! line the backend records must be well formed. After every vector lb must
//! still be running and answer a normal GET with 200.
//!
//! Vectors are grouped, one test (and one lb) per group. Each read waits at
//! most [`TIMEOUT`]: a vector lb neither answers nor closes fails as "hung"
//! instead of blocking the test. Outcomes are classes, not timings; run with
//! `--nocapture` to see every vector's outcome.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use common::*;

/// Longest wait for lb to answer or close before a vector counts as hung.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What lb must do with a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Malformed: one 4xx response or none, then the connection closed.
    Reject,
    /// Ambiguous but legal: exactly one 200 (the request asks to close).
    Accept,
    /// Malformed, but lb repairs it and forwards a well-formed request:
    /// exactly one 200 (the request asks to close).
    Repaired,
    /// Content-Length with Transfer-Encoding: forwarded as chunked, one 200,
    /// then lb closes the connection although the client did not ask to.
    ChunkedThenClose,
}

/// What lb did with a vector.
#[derive(Debug)]
enum Outcome {
    /// Whole responses, by status, then how the connection ended.
    Responses(Vec<u16>, RawEnd),
    /// Not a byte back; the connection was closed or reset.
    Closed(RawEnd),
    /// Not a byte back, and the connection still open after [`TIMEOUT`].
    Hung,
    /// Bytes that are not whole HTTP responses.
    Garbage(String, RawEnd),
}

impl Outcome {
    fn of(reply: &RawReply) -> Outcome {
        if reply.bytes.is_empty() {
            return match reply.end {
                RawEnd::TimedOut => Outcome::Hung,
                end => Outcome::Closed(end),
            };
        }
        match split_responses(&reply.bytes) {
            (responses, 0) => {
                Outcome::Responses(responses.iter().map(|r| r.status).collect(), reply.end)
            }
            _ => Outcome::Garbage(reply.text(), reply.end),
        }
    }

    /// One line for the report.
    fn summary(&self) -> String {
        match self {
            Outcome::Responses(statuses, end) => format!("{statuses:?} then {}", end_name(*end)),
            Outcome::Closed(end) => format!("no response, {}", end_name(*end)),
            Outcome::Hung => "no response, still open (hung)".to_string(),
            Outcome::Garbage(text, end) => format!("garbage {text:.60?}, {}", end_name(*end)),
        }
    }
}

fn end_name(end: RawEnd) -> String {
    match end {
        RawEnd::Eof => "closed".to_string(),
        RawEnd::Reset => "reset".to_string(),
        RawEnd::TimedOut => "left open".to_string(),
        RawEnd::Error(kind) => format!("read error {kind:?}"),
    }
}

fn closed(end: RawEnd) -> bool {
    matches!(end, RawEnd::Eof | RawEnd::Reset)
}

impl Expect {
    /// Whether `outcome` is what this expectation allows; why not otherwise.
    fn check(self, outcome: &Outcome) -> Result<(), String> {
        let ok = match (self, outcome) {
            (Expect::Reject, Outcome::Closed(end)) => closed(*end),
            (Expect::Reject, Outcome::Responses(statuses, end)) => {
                matches!(statuses[..], [400..=499]) && closed(*end)
            }
            (
                Expect::Accept | Expect::Repaired | Expect::ChunkedThenClose,
                Outcome::Responses(statuses, end),
            ) => statuses[..] == [200] && closed(*end),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let wanted = match self {
            Expect::Reject => "one 4xx or no response, then the connection closed",
            Expect::Accept | Expect::Repaired => "exactly one 200, then the connection closed",
            Expect::ChunkedThenClose => {
                "exactly one 200, then lb closing the connection (RFC 9112 6.1/6.3)"
            }
        };
        Err(format!("wanted {wanted}; got {}", outcome.summary()))
    }
}

/// One request to throw at lb.
struct Vector {
    name: &'static str,
    expect: Expect,
    bytes: Vec<u8>,
    /// Where to split `bytes` into two sends, so lb reads them apart.
    split: Option<usize>,
}

fn vector(name: &'static str, expect: Expect, bytes: impl Into<Vec<u8>>) -> Vector {
    Vector {
        name,
        expect,
        bytes: bytes.into(),
        split: None,
    }
}

/// How long to wait between the two sends of a split vector, so that lb has
/// read the first before the second arrives.
const SPLIT_PAUSE: Duration = Duration::from_millis(200);

/// Sends `v` to lb on a new connection, in two sends if it is split, and
/// reads what comes back.
fn exchange(port: u16, v: &Vector) -> RawReply {
    let Some(split) = v.split else {
        return raw_exchange(port, &v.bytes, TIMEOUT);
    };
    let mut stream = raw_connect(port, TIMEOUT);
    let mut write_error = stream.write_all(&v.bytes[..split]).err().map(|e| e.kind());
    if write_error.is_none() {
        // Not a wait: two sends apart in time are the split under test (lb
        // shows no sign of having read the first half).
        std::thread::sleep(SPLIT_PAUSE);
        write_error = stream.write_all(&v.bytes[split..]).err().map(|e| e.kind());
    }
    let (bytes, end) = read_until_end(&mut stream);
    RawReply {
        bytes,
        end,
        write_error,
    }
}

/// A whole request for `/smuggled-NAME`, to hide in or behind another one.
fn hidden(name: &str) -> String {
    format!("GET /smuggled-{name} HTTP/1.1\r\nHost: lb\r\n\r\n")
}

/// `bytes` for a failure message: escaped, and cut short when long.
fn shown(bytes: &[u8]) -> String {
    const SHOWN: usize = 240;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
    if bytes.len() > SHOWN {
        format!("{:?}... ({} bytes)", text, bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// Starts one `be` (recording) and lb, throws every vector at lb on its own
/// connection, and fails listing each vector lb mishandled.
fn run(vectors: Vec<Vector>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("requests");
    let record_arg = record.to_str().expect("a UTF-8 path");
    let (_be, be_port) = spawn_be_on_any_port("hostile", &["--record", record_arg]);
    let mut lb = spawn_lb(&[be_port], "");
    assert_eq!(
        lb.get("/").status,
        200,
        "lb does not serve before any vector"
    );

    let mut report = String::new();
    let mut failures = Vec::new();
    for v in &vectors {
        let reply = exchange(lb.port, v);
        let outcome = Outcome::of(&reply);
        let verdict = v.expect.check(&outcome);
        let _ = writeln!(
            report,
            "{} {:<28} {:<16} {}",
            if verdict.is_ok() { "ok  " } else { "FAIL" },
            v.name,
            format!("{:?}", v.expect),
            outcome.summary()
        );
        if let Err(why) = verdict {
            failures.push(format!(
                "{}: {why}\n    sent: {}\n    got:  {}",
                v.name,
                shown(&v.bytes),
                shown(&reply.bytes)
            ));
        }
        if let Some(status) = lb.proc.exited() {
            panic!(
                "lb exited ({status}) after vector {}\n{report}\nlb log:\n{}",
                v.name,
                lb.log()
            );
        }
        let after = lb.get("/");
        if after.status != 200 {
            failures.push(format!("{}: a normal GET afterwards got {after:?}", v.name));
        }
    }

    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    for line in recorded.lines().filter(|l| !well_formed(l)) {
        failures.push(format!(
            "lb forwarded a malformed request line to the backend: {line:?}"
        ));
    }
    for line in recorded.lines().filter(|l| l.contains("/smuggled")) {
        failures.push(format!("a hidden request reached the backend: {line:?}"));
    }
    if failures.is_empty() {
        eprintln!("{report}");
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) with {} vectors:\n\n{}\n\nall outcomes:\n{report}",
        failures.len(),
        vectors.len(),
        failures.join("\n\n")
    );
}

/// Whether a line of be's record (`METHOD TARGET`) is well formed: a token
/// method and an origin-, absolute- or asterisk-form target without spaces or
/// control bytes (raw UTF-8 is let through, see `raw-utf8-in-target`).
fn well_formed(line: &str) -> bool {
    let Some((method, target)) = line.split_once(' ') else {
        return false;
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let form = target.starts_with('/')
        || target == "*"
        || target.starts_with("http://")
        || target.starts_with("https://");
    !method.is_empty()
        && method.bytes().all(token)
        && form
        && target.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80)
}

/// A POST whose body, per `te_lines` and a Content-Length covering it all,
/// is either empty (chunked) or ends with a hidden request (by length).
fn te_with_cl(name: &'static str, expect: Expect, te_lines: &str) -> Vector {
    let body = format!("0\r\n\r\n{}", hidden(name));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: lb\r\n{te_lines}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    vector(name, expect, request)
}

/// A chunked POST with `body` as its raw chunked body.
fn chunked(name: &'static str, expect: Expect, body: &str) -> Vector {
    let head =
        "POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    vector(name, expect, format!("{head}{body}"))
}

/// A chunked POST with a hidden request behind it, sent in two pieces:
/// the head and `first`, then `rest`. lb must reject it.
fn chunked_in_two(name: &'static str, first: &str, rest: &str) -> Vector {
    let head =
        "POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut v = vector(
        name,
        Expect::Reject,
        format!("{head}{first}{rest}{}", hidden(name)),
    );
    v.split = Some(head.len() + first.len());
    v
}

/// A GET with `header_lines` between Host and Connection: close.
fn get_with(name: &'static str, expect: Expect, header_lines: &[u8]) -> Vector {
    let mut bytes = b"GET / HTTP/1.1\r\nHost: lb\r\n".to_vec();
    bytes.extend_from_slice(header_lines);
    bytes.extend_from_slice(b"Connection: close\r\n\r\n");
    vector(name, expect, bytes)
}

/// A POST of `hello` with `content_length` as its Content-Length value.
fn post_with_length(name: &'static str, expect: Expect, content_length: &str) -> Vector {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\nhello"
    );
    vector(name, expect, request)
}

/// A request with `request_line` (no CRLF) and normal headers.
fn with_request_line(name: &'static str, expect: Expect, request_line: &[u8]) -> Vector {
    let mut bytes = request_line.to_vec();
    bytes.extend_from_slice(b"\r\nHost: lb\r\nConnection: close\r\n\r\n");
    vector(name, expect, bytes)
}

#[test]
fn content_length_and_transfer_encoding_together() {
    use Expect::*;
    let te_first = {
        let smuggled = hidden("te-cl");
        let body = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
        format!(
            "POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{body}"
        )
    };
    run(vec![
        // CL first, covering a last-chunk and a hidden request after it.
        te_with_cl("cl-te", ChunkedThenClose, "Transfer-Encoding: chunked\r\n"),
        // TE first; the hidden request is chunk data, CL covers 4 bytes.
        vector("te-cl", ChunkedThenClose, te_first),
        vector(
            "cl-0-te",
            ChunkedThenClose,
            "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
        vector(
            "te-cl-http10",
            Reject,
            format!(
                "POST / HTTP/1.0\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nContent-Length: 41\r\n\r\n0\r\n\r\n{}",
                hidden("te-cl-http10")
            ),
        ),
        vector(
            "te-http10",
            Reject,
            "POST / HTTP/1.0\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ]);
}

/// What `cl-te` and friends look like to the backend: chunked, with no
/// Content-Length left beside Transfer-Encoding.
#[test]
fn content_length_beside_transfer_encoding_is_dropped_before_the_backend() {
    let (_be, be_port) = spawn_be_on_any_port("hostile", &[]);
    let lb = spawn_lb(&[be_port], "");
    let reply = raw_exchange(
        lb.port,
        b"POST /headers HTTP/1.1\r\nHost: lb\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        TIMEOUT,
    );
    let (responses, left_over) = split_responses(&reply.bytes);
    assert!(
        responses.len() == 1 && left_over == 0 && closed(reply.end),
        "{reply:?}"
    );
    let forwarded = String::from_utf8_lossy(&responses[0].body).to_ascii_lowercase();
    assert_eq!(responses[0].status, 200, "{forwarded}");
    assert!(
        forwarded.contains("transfer-encoding: chunked\n") && !forwarded.contains("content-length"),
        "the backend got:\n{forwarded}"
    );
}

#[test]
fn conflicting_content_lengths() {
    use Expect::*;
    let body = format!("hello{}", hidden("cl-cl"));
    run(vec![
        vector(
            "cl-cl-differ",
            Reject,
            format!(
                "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        ),
        vector(
            "cl-cl-differ-rev",
            Reject,
            format!(
                "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\nContent-Length: 5\r\n\r\n{body}",
                body.len()
            ),
        ),
        vector(
            "cl-list-differ",
            Reject,
            format!(
                "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 5, {}\r\n\r\n{body}",
                body.len()
            ),
        ),
        // RFC 9110 8.6 lets a recipient accept identical duplicates.
        vector(
            "cl-cl-same",
            Accept,
            "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        ),
        post_with_length("cl-list-same", Accept, "5, 5"),
    ]);
}

#[test]
fn obfuscated_transfer_encoding() {
    use Expect::*;
    run(vec![
        te_with_cl("te-xchunked", Reject, "Transfer-Encoding: xchunked\r\n"),
        te_with_cl(
            "te-chunked-identity",
            Reject,
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        te_with_cl(
            "te-space-before-colon",
            Reject,
            "Transfer-Encoding : chunked\r\n",
        ),
        te_with_cl(
            "te-tab-before-colon",
            Reject,
            "Transfer-Encoding\t: chunked\r\n",
        ),
        // A tab is legal whitespace before a field value.
        te_with_cl(
            "te-tab-value",
            ChunkedThenClose,
            "Transfer-Encoding:\tchunked\r\n",
        ),
        te_with_cl(
            "te-no-space",
            ChunkedThenClose,
            "Transfer-Encoding:chunked\r\n",
        ),
        te_with_cl(
            "te-upper-case",
            ChunkedThenClose,
            "Transfer-Encoding: CHUNKED\r\n",
        ),
        te_with_cl(
            "te-name-upper",
            ChunkedThenClose,
            "TRANSFER-ENCODING: chunked\r\n",
        ),
        te_with_cl(
            "te-dup-chunked",
            ChunkedThenClose,
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        te_with_cl(
            "te-dup-chunked-identity",
            Reject,
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        // Chunked is the final coding, so the framing is clear; lb forwards
        // `Transfer-Encoding: chunked` alone, dropping the other coding.
        te_with_cl(
            "te-dup-identity-chunked",
            ChunkedThenClose,
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ),
        te_with_cl("te-quoted", Reject, "Transfer-Encoding: \"chunked\"\r\n"),
        te_with_cl(
            "te-gzip-chunked",
            ChunkedThenClose,
            "Transfer-Encoding: gzip, chunked\r\n",
        ),
        te_with_cl(
            "te-vertical-tab",
            Reject,
            "Transfer-Encoding:\x0bchunked\r\n",
        ),
        te_with_cl("te-obs-fold", Reject, "Transfer-Encoding:\r\n chunked\r\n"),
        te_with_cl(
            "te-after-bare-lf",
            ChunkedThenClose,
            "X-A: a\nTransfer-Encoding: chunked\r\n",
        ),
    ]);
}

#[test]
fn bad_chunks() {
    use Expect::*;
    run(vec![
        chunked("chunk-non-hex", Reject, "zz\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk-negative", Reject, "-5\r\nhello\r\n0\r\n\r\n"),
        chunked(
            "chunk-overflow",
            Reject,
            "ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        chunked("chunk-0x-prefix", Reject, "0x5\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk-data-too-long", Reject, "3\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk-no-crlf-after-data", Reject, "5\r\nhelloX0\r\n\r\n"),
        // lb drops chunk extensions and trailers without looking at them,
        // and forwards clean chunks.
        chunked("chunk-ext-nul", Repaired, "5;a\x00b\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk-ext-bare-cr", Reject, "5;a\rb\r\nhello\r\n0\r\n\r\n"),
        chunked(
            "chunk-ext-space-in-name",
            Repaired,
            "5;a b\r\nhello\r\n0\r\n\r\n",
        ),
        // Far over Pingora's 8 KiB limit on a chunk's size line.
        chunked(
            "chunk-ext-1mb",
            Reject,
            &format!("5;a={}\r\nhello\r\n0\r\n\r\n", "x".repeat(1024 * 1024)),
        ),
        chunked(
            "chunk-hidden-in-trailer",
            Repaired,
            &format!("5\r\nhello\r\n0\r\n{}", hidden("chunk-trailer")),
        ),
        // Framing HAProxy and nginx reject and httparse accepts (issue 10):
        // lb checks RFC 9112 7.1 itself and answers 400.
        vector(
            "chunk-empty-size-line",
            Reject,
            format!(
                "POST /a HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhi\r\n0\r\n\r\n{}",
                hidden("empty-size-line")
            ),
        ),
        vector(
            "chunk-ext-bare-lf",
            Reject,
            format!(
                "POST /c HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n\
                 2;a\nxx\r\n45\r\n0\r\n\r\n{}",
                hidden("ext-bare-lf")
            ),
        ),
        chunked("chunk-empty-first-line", Reject, "\r\nhello\r\n0\r\n\r\n"),
        chunked(
            "chunk-hex-then-garbage",
            Reject,
            "5zz\r\nhello\r\n0\r\n\r\n",
        ),
        chunked(
            "chunk-space-then-garbage",
            Reject,
            "5 z\r\nhello\r\n0\r\n\r\n",
        ),
        chunked(
            "chunk-space-before-size",
            Reject,
            " 5\r\nhello\r\n0\r\n\r\n",
        ),
        chunked(
            "chunk-17-digits",
            Reject,
            "00000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        chunked("chunk-size-bare-lf", Reject, "5\nhello\r\n0\r\n\r\n"),
        chunked("chunk-data-bare-lf", Reject, "5\r\nhello\n0\r\n\r\n"),
        chunked("chunk-last-bare-lf", Reject, "5\r\nhello\r\n0\n\r\n"),
        chunked(
            "chunk-trailer-bare-lf",
            Reject,
            "5\r\nhello\r\n0\r\nX-T: a\n\r\n",
        ),
        chunked("chunk-end-bare-cr", Reject, "5\r\nhello\r\n0\r\n\r\r\n"),
        // The bad frame in a later packet than the head: checked as it comes.
        chunked_in_two(
            "chunk-ext-bare-lf-later",
            "5\r\nhello\r\n",
            "2;a\nxx\r\n45\r\n0\r\n\r\n",
        ),
        chunked_in_two(
            "chunk-empty-size-line-later",
            "5\r\nhello\r\n",
            "\r\nhi\r\n0\r\n\r\n",
        ),
        // Legal: spaces after the size, as httparse, HAProxy and nginx take them.
        chunked("chunk-space-after-size", Accept, "5 \r\nhello\r\n0\r\n\r\n"),
        chunked(
            "chunk-16-digits",
            Accept,
            "0000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        // Legal: an extension, and a trailer field.
        chunked(
            "chunk-ext-legal",
            Accept,
            "5;name=value\r\nhello\r\n0\r\n\r\n",
        ),
        chunked(
            "chunk-trailer-legal",
            Accept,
            "5\r\nhello\r\n0\r\nX-T: a\r\n\r\n",
        ),
    ]);
}

#[test]
fn bad_field_lines() {
    use Expect::*;
    run(vec![
        get_with("value-nul", Reject, b"X-A: a\x00b\r\n"),
        get_with("value-bare-cr", Reject, b"X-A: a\rb\r\n"),
        get_with("value-lf-then-no-colon", Reject, b"X-A: a\nb\r\n"),
        get_with("value-del", Reject, b"X-A: a\x7fb\r\n"),
        get_with("obs-fold-space", Reject, b"X-A: a\r\n b\r\n"),
        get_with("obs-fold-tab", Reject, b"X-A: a\r\n\tb\r\n"),
        vector(
            "first-field-folded",
            Reject,
            "GET / HTTP/1.1\r\n Host: lb\r\nConnection: close\r\n\r\n",
        ),
        get_with("name-space", Reject, b"X A: b\r\n"),
        get_with("name-empty", Reject, b": b\r\n"),
        get_with("no-colon", Reject, b"NoColon\r\n"),
        get_with("name-del", Reject, b"X-A\x7f: b\r\n"),
        get_with("name-utf8", Reject, "X-\u{c4}: b\r\n".as_bytes()),
        // Legal: obs-text (bytes >= 0x80) in a value.
        get_with("value-obs-text", Accept, b"X-A: caf\xe9\r\n"),
        // RFC 9112 2.2: a recipient may take a bare LF as a line end.
        vector(
            "bare-lf-line-ends",
            Accept,
            "GET / HTTP/1.1\nHost: lb\nConnection: close\n\n",
        ),
    ]);
}

#[test]
fn bad_request_lines_and_versions() {
    use Expect::*;
    let client_hello = tls_client_hello();
    run(vec![
        with_request_line("version-1.2", Reject, b"GET / HTTP/1.2"),
        with_request_line("version-2.0", Reject, b"GET / HTTP/2.0"),
        with_request_line("version-1", Reject, b"GET / HTTP/1"),
        with_request_line("version-lower-case", Reject, b"GET / http/1.1"),
        with_request_line("version-missing", Reject, b"GET /"),
        vector("http-0.9", Reject, "GET /\r\n"),
        vector("h2-preface", Reject, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        vector("tls-client-hello", Reject, client_hello),
        // A PROXY header on a listener without proxy_protocol is bad input
        // (tests/proxy_protocol.rs sends malformed ones to one with it).
        vector(
            "proxy-v1-unasked",
            Reject,
            "PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: lb\r\n\r\n",
        ),
        vector(
            "proxy-v2-unasked",
            Reject,
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\x7f\x00\x00\x01\xc8\x22\x1f\x40GET / HTTP/1.1\r\nHost: lb\r\n\r\n".to_vec(),
        ),
        vector("garbage-line", Reject, "GARBAGE\r\n\r\n"),
        vector(
            "binary",
            Reject,
            b"\xff\xfe\xfd\x00\x01\x02\r\n\r\n".to_vec(),
        ),
        with_request_line("method-only", Reject, b"GET"),
        // Pingora "repairs" this one into the target `%20/`, which is not a
        // request-target at all: it must be rejected, not forwarded.
        with_request_line("double-space", Reject, b"GET  / HTTP/1.1"),
        with_request_line("space-after-version", Reject, b"GET / HTTP/1.1 "),
        with_request_line("extra-token", Reject, b"GET / HTTP/1.1 x"),
        with_request_line("method-bad-char", Reject, b"G@T / HTTP/1.1"),
        // Legal: HTTP/1.0, an extension method, a CRLF before the request.
        vector("version-1.0", Accept, "GET / HTTP/1.0\r\nHost: lb\r\n\r\n"),
        with_request_line("method-lower-case", Accept, b"get / HTTP/1.1"),
        vector(
            "leading-empty-line",
            Accept,
            "\r\nGET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        ),
        // Pingora percent-encodes a space or a control byte in the target
        // and forwards it (the backend sees `/a%20b`, `/%00`). RFC 9112 3.2
        // prefers a 400, but what reaches the backend is well formed.
        with_request_line("space-in-target", Repaired, b"GET /a b HTTP/1.1"),
        with_request_line("nul-in-target", Repaired, b"GET /\x00 HTTP/1.1"),
        // Raw UTF-8 is not valid in a target either, but commonly tolerated:
        // lb forwards the bytes as they are (as nginx does).
        with_request_line("raw-utf8-in-target", Accept, b"GET /\xc3\xa9 HTTP/1.1"),
    ]);
}

#[test]
fn bad_content_lengths() {
    use Expect::*;
    run(vec![
        post_with_length("cl-negative", Reject, "-1"),
        post_with_length("cl-huge", Reject, "99999999999999999999"),
        post_with_length("cl-non-numeric", Reject, "abc"),
        post_with_length("cl-plus", Reject, "+5"),
        post_with_length("cl-hex", Reject, "0x5"),
        post_with_length("cl-two-numbers", Reject, "5 5"),
        post_with_length("cl-empty", Reject, ""),
        // Legal: leading zeros.
        post_with_length("cl-leading-zeros", Accept, "005"),
        // A request pipelined after one that asked to close is never read.
        vector(
            "pipelined-after-close",
            Accept,
            format!(
                "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello{}",
                hidden("after-close")
            ),
        ),
    ]);
}

#[test]
fn oversized_heads() {
    use Expect::*;
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    let many_fields = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| format!("X-F{i}: v\r\n"))
            .collect::<String>()
            .into_bytes()
    };
    let big_field = |n: usize| format!("X-Big: {}\r\n", "a".repeat(n)).into_bytes();
    let long_target = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n)).into_bytes();
    run(vec![
        // Over lb's limits (limits.max_header_bytes, 64 KiB by default: 431;
        // limits.max_request_headers, 100 fields: 431; limits.max_uri_bytes,
        // 8 KiB: 414), or over Pingora's own (a 64 KiB target: 400).
        get_with("field-100kb", Reject, &big_field(100 * KIB)),
        get_with("field-2mb", Reject, &big_field(2 * MIB)),
        get_with("fields-300", Reject, &many_fields(300)),
        get_with("fields-250", Reject, &many_fields(250)),
        with_request_line("target-9kb", Reject, &long_target(9 * KIB)),
        with_request_line("target-100kb", Reject, &long_target(100 * KIB)),
        with_request_line("target-2mb", Reject, &long_target(2 * MIB)),
        // Within every limit: accepted.
        // Host, Connection and 98 more: 100 fields.
        get_with("fields-100", Accept, &many_fields(98)),
        get_with("field-32kb", Accept, &big_field(32 * KIB)),
        with_request_line("target-4kb", Accept, &long_target(4 * KIB)),
    ]);
}

#[test]
fn odd_targets_hosts_and_methods() {
    use Expect::*;
    run(vec![
        // Legal: absolute-form, asterisk-form, an empty Host.
        vector(
            "absolute-form",
            Accept,
            "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        ),
        vector(
            "asterisk-form",
            Accept,
            "OPTIONS * HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        ),
        vector(
            "host-empty",
            Accept,
            "GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        ),
        // HTTP/1.0 does not require Host.
        vector("host-missing-http10", Accept, "GET / HTTP/1.0\r\n\r\n"),
        vector(
            "absolute-form-other-host",
            Reject,
            "GET http://example.com/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        vector(
            "absolute-form-userinfo",
            Reject,
            "GET http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        ),
        vector(
            "host-duplicate",
            Reject,
            "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        ),
        vector(
            "host-userinfo",
            Reject,
            "GET / HTTP/1.1\r\nHost: user@example.com\r\nConnection: close\r\n\r\n",
        ),
        // RFC 9112 3.2: a server MUST answer 400 to HTTP/1.1 without Host.
        vector(
            "host-missing",
            Reject,
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        // Even with the authority in an absolute-form target.
        vector(
            "absolute-form-no-host",
            Reject,
            "GET http://example.com/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        // lb is not a forward proxy: CONNECT gets 405.
        vector(
            "connect",
            Reject,
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        ),
        vector(
            "connect-hidden-request",
            Reject,
            format!(
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n{}",
                hidden("connect")
            ),
        ),
    ]);
}

/// A minimal, well-formed TLS 1.2 ClientHello record, as a client that
/// mistook the plain-HTTP port for HTTPS would send.
fn tls_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03]; // client version TLS 1.2
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f]); // one cipher suite
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    hello.extend_from_slice(&[0x00, 0x00]); // no extensions
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
