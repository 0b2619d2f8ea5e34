//! Reads a PROXY protocol header (HAProxy's spec, v1 text and v2 binary) from a freshly
//! accepted connection, before TLS on TLS listeners and before HTTP on plain ones, so lb
//! learns the real client address when it sits behind another load balancer (issue 25).
//!
//! `ppp` parses; this module adds small bounded reads, one deadline for the whole header, a
//! size cap, and tells "need more bytes" from "invalid". Bytes read past the header are
//! handed back for Pingora's `Stream::rewind`. Two `ppp` 2.3 flaws on v1 are worked around:
//! - a partial line ending in the space after the source port (`"PROXY TCP4 a b 51234 "`)
//!   is called invalid (`InvalidDestinationPort`), so a header split there would be refused:
//!   partial lines are checked with trailing spaces trimmed, and only a line with its `\n`
//!   is parsed for good.
//! - `PROXY UNKNOWN` with five or more fields is called incomplete even with its CRLF in,
//!   so it would wait for the deadline: `is_v1_unknown` accepts it, as the spec says.

use bytes::{Buf, BufMut, BytesMut};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most bytes a header may take, v2 fixed part plus payload (addresses and TLVs).
/// 4,096: real v2 payloads (AF_UNIX addresses, 216 bytes, plus HAProxy's SSL/CN, authority,
/// unique-id or a cloud's endpoint-id TLVs) stay well under 1 KiB; this leaves room for new
/// TLVs while bounding what an unvetted connection makes lb buffer (the most it ever does).
pub const MAX_HEADER_BYTES: usize = 4096;
/// The longest v1 line, CRLF included (from the spec).
const V1_MAX_BYTES: usize = 107;
/// What starts every v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// What starts a v1 `UNKNOWN` line; the spec has the receiver ignore the rest of it.
const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN";
/// Bytes in a v2 header before its payload: signature, version/command, family, length.
const V2_FIXED_BYTES: usize = 16;
/// The most bytes asked of the stream per read: a v1 line or a usual v2 header in one go.
const READ_CHUNK_BYTES: usize = 256;

/// The client address a PROXY header carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxiedAddress {
    /// The original client's address and port (the header's source).
    Client(SocketAddr),
    /// A header that names no client: v2 `LOCAL`, v1 `UNKNOWN`, or a v2 family or transport
    /// other than TCP over IPv4/IPv6 (UNSPEC, UNIX, DGRAM). The caller keeps the TCP peer.
    Unknown,
}

/// Why no header could be read. Each kind has a stable metric label, see [`Self::label`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The first bytes are not a PROXY signature (e.g. an HTTP request or a TLS ClientHello).
    #[error("connection did not start with a PROXY protocol header")]
    Missing,
    /// The bytes are a PROXY header's start but cannot be a valid header; says what is wrong.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// A v2 header longer than [`MAX_HEADER_BYTES`], or a v1 line with no CRLF within 107 bytes.
    #[error("PROXY protocol header longer than lb accepts")]
    TooLong,
    /// The whole header did not arrive within the deadline.
    #[error("PROXY protocol header not received within the deadline")]
    Timeout,
    /// The client closed the connection before a whole header arrived.
    #[error("connection closed before a whole PROXY protocol header arrived")]
    Closed,
    /// Reading from the connection failed.
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyHeaderError {
    /// The kind as a fixed, lower-case metric label (`missing`, `malformed`, `too_long`,
    /// `timeout`, `closed`, `io`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::TooLong => "too_long",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Io(_) => "io",
        }
    }
}

/// Reads one PROXY header (v1 or v2) from `stream`, which must not have been read from yet.
///
/// Returns the address it carries and the bytes read past it (possibly empty), which the
/// caller must put back in front of the stream (Pingora's `Stream::rewind`). `deadline`
/// bounds the whole header, however slowly it drips in; the spec suggests at least 3 s.
/// Fails as soon as the bytes in cannot start a header, without waiting for more; never
/// buffers more than [`MAX_HEADER_BYTES`]. Allocates one buffer per call (it is returned).
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Duration,
) -> Result<(ProxiedAddress, BytesMut), ProxyHeaderError> {
    let outcome = tokio::time::timeout(deadline, read_until_header(stream)).await;
    // Formats only when debug logging is on.
    outcome
        .unwrap_or(Err(ProxyHeaderError::Timeout))
        .inspect_err(|error| log::debug!("PROXY protocol header refused: {error}"))
}

/// Whether the bytes buffered so far hold a whole header.
enum Progress {
    /// They can still start a valid header: read more.
    NeedMore,
    /// A whole header of this many bytes is in.
    Done(ProxiedAddress, usize),
}

/// Reads in chunks of at most [`READ_CHUNK_BYTES`] until `parse_buffered` decides.
async fn read_until_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(ProxiedAddress, BytesMut), ProxyHeaderError> {
    let mut buffered = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        let room = MAX_HEADER_BYTES - buffered.len();
        if room == 0 {
            return Err(ProxyHeaderError::TooLong);
        }
        let wanted = room.min(READ_CHUNK_BYTES);
        buffered.reserve(wanted);
        if stream.read_buf(&mut (&mut buffered).limit(wanted)).await? == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        if let Progress::Done(address, header_bytes) = parse_buffered(&buffered)? {
            buffered.advance(header_bytes);
            return Ok((address, buffered));
        }
    }
}

/// Decides on the bytes buffered so far: the first byte picks v1 (`P`) or v2 (`\r`).
fn parse_buffered(buffered: &[u8]) -> Result<Progress, ProxyHeaderError> {
    match buffered.first() {
        None => Ok(Progress::NeedMore),
        Some(b'P') => parse_v1(buffered),
        Some(b'\r') => parse_v2(buffered),
        Some(_) => Err(ProxyHeaderError::Missing),
    }
}

/// v1: `PROXY <TCP4|TCP6|UNKNOWN> ...\r\n`, at most [`V1_MAX_BYTES`].
fn parse_v1(buffered: &[u8]) -> Result<Progress, ProxyHeaderError> {
    let prefix_seen = buffered.len().min(V1_PREFIX.len());
    if buffered[..prefix_seen] != V1_PREFIX[..prefix_seen] {
        return Err(ProxyHeaderError::Missing);
    }
    if prefix_seen < V1_PREFIX.len() {
        return Ok(Progress::NeedMore);
    }
    let window = &buffered[..buffered.len().min(V1_MAX_BYTES)];
    match window.iter().position(|&byte| byte == b'\n') {
        Some(newline) => {
            let line = &window[..=newline];
            parse_v1_line(line).map(|address| Progress::Done(address, line.len()))
        }
        None if buffered.len() >= V1_MAX_BYTES => Err(ProxyHeaderError::TooLong),
        None => check_v1_partial(window),
    }
}

/// A whole v1 line, ending in its first `\n`: any error now is final.
fn parse_v1_line(line: &[u8]) -> Result<ProxiedAddress, ProxyHeaderError> {
    if is_v1_unknown(line) {
        return Ok(ProxiedAddress::Unknown);
    }
    use ppp::v1::Addresses;
    let header = ppp::v1::Header::try_from(line).map_err(|error| v1_error(&error))?;
    let (ip, port): (IpAddr, u16) = match header.addresses {
        Addresses::Tcp4(a) => (a.source_address.into(), a.source_port),
        Addresses::Tcp6(a) => (a.source_address.into(), a.source_port),
        Addresses::Unknown => return Ok(ProxiedAddress::Unknown),
    };
    Ok(ProxiedAddress::Client(SocketAddr::new(ip, port)))
}

/// A whole line of `PROXY UNKNOWN`, then a space or the CRLF, ending in CRLF: hand-rolled
/// because `ppp` mis-parses it (see top). Any other line goes to `ppp`.
fn is_v1_unknown(line: &[u8]) -> bool {
    let separated = matches!(line.get(V1_UNKNOWN.len()), Some(b' ' | b'\r'));
    line.starts_with(V1_UNKNOWN) && separated && line.ends_with(b"\r\n")
}

/// A v1 line without its `\n` yet: refuse it now if no more bytes can make it valid.
fn check_v1_partial(partial: &[u8]) -> Result<Progress, ProxyHeaderError> {
    use ppp::PartialResult;
    // Trailing spaces trimmed: ppp calls "... 51234 " invalid, not incomplete (see top).
    let trailing_spaces = partial.iter().rev().take_while(|b| **b == b' ').count();
    match ppp::v1::Header::try_from(&partial[..partial.len() - trailing_spaces]) {
        Err(error) if !error.is_incomplete() => Err(v1_error(&error)),
        _ => Ok(Progress::NeedMore),
    }
}

/// Maps a final `ppp` v1 error to ours, without formatting.
fn v1_error(error: &ppp::v1::BinaryParseError) -> ProxyHeaderError {
    use ppp::v1::{BinaryParseError as Binary, ParseError as Text};
    let text = match error {
        Binary::Parse(Text::HeaderTooLong) => return ProxyHeaderError::TooLong,
        Binary::InvalidUtf8(_) => return ProxyHeaderError::Malformed("v1 header is not ASCII"),
        Binary::Parse(text) => text,
    };
    ProxyHeaderError::Malformed(match text {
        Text::InvalidPrefix | Text::InvalidProtocol => "v1 protocol is not TCP4, TCP6, UNKNOWN",
        Text::InvalidSourceAddress(_) | Text::InvalidDestinationAddress(_) => "v1 bad address",
        Text::InvalidSourcePort(_) | Text::InvalidDestinationPort(_) => "v1 bad port",
        Text::InvalidSuffix => "v1 line has extra fields or no CRLF",
        _ => "v1 line is missing fields",
    })
}

/// v2: 12-byte signature, version/command, family/transport, big-endian payload length.
fn parse_v2(buffered: &[u8]) -> Result<Progress, ProxyHeaderError> {
    use ppp::v2::ParseError;
    let malformed = |reason| Err(ProxyHeaderError::Malformed(reason));
    match ppp::v2::Header::try_from(buffered) {
        Ok(header) => Ok(Progress::Done(v2_address(&header), header.len())),
        Err(ParseError::Prefix) => Err(ProxyHeaderError::Missing),
        Err(ParseError::Incomplete(_)) => Ok(Progress::NeedMore),
        // Refused on the length field alone: the payload is never read.
        Err(ParseError::Partial(_, payload)) if V2_FIXED_BYTES + payload > MAX_HEADER_BYTES => {
            Err(ProxyHeaderError::TooLong)
        }
        Err(ParseError::Partial(..)) => Ok(Progress::NeedMore),
        Err(ParseError::Version(_)) => malformed("v2 version is not 2"),
        Err(ParseError::Command(_)) => malformed("v2 command is not LOCAL or PROXY"),
        Err(ParseError::AddressFamily(_)) => malformed("v2 address family is unknown"),
        Err(ParseError::Protocol(_)) => malformed("v2 transport is unknown"),
        Err(_) => malformed("v2 length is too short for its addresses"),
    }
}

/// PROXY over TCP (STREAM) on IPv4/IPv6 names the client; everything else keeps the TCP peer,
/// as HAProxy does. TLVs are skipped.
fn v2_address(header: &ppp::v2::Header<'_>) -> ProxiedAddress {
    use ppp::v2::{Addresses, Command, Protocol};
    if header.command != Command::Proxy || header.protocol != Protocol::Stream {
        return ProxiedAddress::Unknown;
    }
    match header.addresses {
        Addresses::IPv4(a) => ProxiedAddress::Client((a.source_address, a.source_port).into()),
        Addresses::IPv6(a) => ProxiedAddress::Client((a.source_address, a.source_port).into()),
        Addresses::Unspecified | Addresses::Unix(_) => ProxiedAddress::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncWriteExt};

    const V1_TCP4: &[u8] = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::7 ::1 51234 8000\r\n";
    const V1_UNKNOWN_LONGEST: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    const V1_UNKNOWN_SIX_FIELDS: &[u8] = b"PROXY UNKNOWN a b c d e f\r\n";
    const HTTP_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n";
    const TLS_RECORD_START: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0];
    const V4_CLIENT: &str = "203.0.113.7:51234";
    const V6_CLIENT: &str = "[2001:db8::7]:51234";
    const DEADLINE: Duration = Duration::from_secs(5);
    /// IPv4 payload 203.0.113.7:51234 -> 127.0.0.1:8000, then a NOOP and an AUTHORITY TLV.
    const V4_PAYLOAD_WITH_TLVS: &[u8] = b"\xcb\x00\x71\x07\x7f\x00\x00\x01\xc8\x22\x1f\x40\
        \x04\x00\x03abc\x02\x00\x02lb";
    /// IPv6 payload [2001:db8::7]:51234 -> [::1]:8000, then a NOOP TLV.
    const V6_PAYLOAD_WITH_TLV: &[u8] = b"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07\
        \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\xc8\x22\x1f\x40\x04\x00\x01\x00";

    fn client(address: &str) -> ProxiedAddress {
        ProxiedAddress::Client(address.parse().unwrap())
    }

    /// A v2 header with this version/command byte, family/transport byte and payload.
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let [length_high, length_low] = u16::try_from(payload.len()).unwrap().to_be_bytes();
        let fixed_tail = [command, family, length_high, length_low];
        [ppp::v2::PROTOCOL_PREFIX, &fixed_tail, payload].concat()
    }

    /// Sends `bytes`, keeping the connection open while reading (so waiting would end in a
    /// timeout), and reads a header from the other end. On success, also gives the bytes
    /// after the header: those returned followed by those left in the stream.
    async fn read_sent(bytes: &[u8]) -> Result<(ProxiedAddress, Vec<u8>), ProxyHeaderError> {
        let (mut sender, mut receiver) = duplex(64 * 1024);
        sender.write_all(bytes).await.unwrap();
        let (address, rest) = read_proxy_header(&mut receiver, DEADLINE).await?;
        drop(sender);
        let mut after = rest.to_vec();
        receiver.read_to_end(&mut after).await.unwrap();
        Ok((address, after))
    }

    async fn assert_all_refused_as(label: &str, starts: &[&[u8]]) {
        for start in starts {
            let refused_as = read_sent(start).await.err().map(|error| error.label());
            assert_eq!(refused_as, Some(label), "{start:?}");
        }
    }

    async fn assert_read_as(header: &[u8], address: ProxiedAddress) {
        for after in [HTTP_REQUEST, TLS_RECORD_START, b""] {
            let read = read_sent(&[header, after].concat()).await.unwrap();
            assert_eq!(read, (address, after.to_vec()), "{header:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn v1_headers_name_the_client_or_keep_the_tcp_peer_and_keep_what_follows() {
        assert_read_as(V1_TCP4, client(V4_CLIENT)).await;
        assert_read_as(V1_TCP6, client(V6_CLIENT)).await;
        assert_read_as(b"PROXY UNKNOWN\r\n", ProxiedAddress::Unknown).await;
        assert_read_as(V1_UNKNOWN_LONGEST, ProxiedAddress::Unknown).await;
        assert_read_as(V1_UNKNOWN_SIX_FIELDS, ProxiedAddress::Unknown).await;
    }

    #[tokio::test(start_paused = true)]
    async fn v2_proxy_headers_over_tcp_with_tlvs_name_the_client_and_keep_what_follows() {
        assert_read_as(&v2(0x21, 0x11, V4_PAYLOAD_WITH_TLVS), client(V4_CLIENT)).await;
        assert_read_as(&v2(0x21, 0x21, V6_PAYLOAD_WITH_TLV), client(V6_CLIENT)).await;
        let mut largest = V4_PAYLOAD_WITH_TLVS[..12].to_vec();
        let noop_length = (MAX_HEADER_BYTES - V2_FIXED_BYTES - 12 - 3) as u16;
        largest.extend([&[0x04][..], &noop_length.to_be_bytes()].concat());
        largest.resize(MAX_HEADER_BYTES - V2_FIXED_BYTES, 0);
        assert_read_as(&v2(0x21, 0x11, &largest), client(V4_CLIENT)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn v2_local_unspec_unix_or_udp_headers_keep_the_tcp_peer() {
        let (unknown, v4) = (ProxiedAddress::Unknown, V4_PAYLOAD_WITH_TLVS);
        assert_read_as(&v2(0x20, 0x00, b""), unknown).await;
        assert_read_as(&v2(0x20, 0x11, v4), unknown).await;
        assert_read_as(&v2(0x21, 0x00, b""), unknown).await;
        assert_read_as(&v2(0x21, 0x31, &[0; 216]), unknown).await;
        assert_read_as(&v2(0x21, 0x12, v4), unknown).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_arriving_one_byte_per_read_is_read_whole_and_what_follows_is_kept() {
        for header in [V1_TCP4.to_vec(), v2(0x21, 0x11, V4_PAYLOAD_WITH_TLVS)] {
            let (mut sender, mut receiver) = duplex(1);
            let sent = [&header, HTTP_REQUEST].concat();
            let writer = tokio::spawn(async move { sender.write_all(&sent).await });
            let (address, rest) = read_proxy_header(&mut receiver, DEADLINE).await.unwrap();
            let mut after = rest.to_vec();
            receiver.read_to_end(&mut after).await.unwrap();
            writer.await.unwrap().unwrap();
            assert_eq!((address, &after[..]), (client(V4_CLIENT), HTTP_REQUEST));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_closed_before_a_whole_header_is_closed() {
        let v2_tcp4 = v2(0x21, 0x11, V4_PAYLOAD_WITH_TLVS);
        for sent in [&V1_TCP4[..20], &v2_tcp4[..10], &v2_tcp4[..20], b""] {
            let (mut sender, mut receiver) = duplex(1024);
            sender.write_all(sent).await.unwrap();
            drop(sender);
            let result = read_proxy_header(&mut receiver, DEADLINE).await;
            assert_eq!(result.unwrap_err().label(), "closed");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_starting_with_other_bytes_is_missing_at_once() {
        let wrong_v2_signature = b"\r\n\r\n\0\r\nQUIT\r\x21\x11";
        let other_requests = [HTTP_REQUEST, b"POST / HTTP/1.1\r\n", b"PRI * HTTP/2.0"];
        assert_all_refused_as("missing", &other_requests).await;
        let other_starts = [TLS_RECORD_START, wrong_v2_signature, b"PROXY\r\n"];
        assert_all_refused_as("missing", &other_starts).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_v2_length_past_the_cap_or_a_v1_line_past_107_bytes_is_too_long_at_once() {
        let just_past_the_cap = u16::try_from(MAX_HEADER_BYTES - V2_FIXED_BYTES + 1).unwrap();
        for length in [u16::MAX, just_past_the_cap] {
            let fixed_part = [&v2(0x21, 0x11, b"")[..14], &length.to_be_bytes()].concat();
            assert_all_refused_as("too_long", &[&fixed_part]).await;
        }
        let v1_unterminated = [&b"PROXY UNKNOWN "[..], &[b'a'; 120]].concat();
        let v1_of_108_bytes = [&b"PROXY UNKNOWN "[..], &[b'a'; 92], b"\r\n"].concat();
        assert_all_refused_as("too_long", &[&v1_unterminated, &v1_of_108_bytes]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_in_a_header_is_malformed_as_soon_as_it_arrives() {
        let v1_lines: [&[u8]; 12] = [
            b"PROXY TCP4 203.0.113.999 127.0.0.1 51234 8000\r\n",
            b"PROXY TCP4 2001:db8::7 127.0.0.1 51234 8000\r\n",
            b"PROXY TCP6 203.0.113.7 ::1 51234 8000\r\n",
            b"PROXY TCP4 203.0.113.7 127.0.0.1 65536 8000\r\n",
            b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 08000\r\n",
            b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000 9\r\n",
            b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000\n",
            b"PROXY TCP4 203.0.113.\xc3\xa9 127.0.0.1 51234 8000\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY UNKNOWN a\n",
            b"PROXY TCP5 ",
            b"PROXY TCP4 203.0.113.x 127.0.0.1 51234 8",
        ];
        assert_all_refused_as("malformed", &v1_lines).await;
        let address = &V4_PAYLOAD_WITH_TLVS[..12];
        let (bad_version, bad_command) = (v2(0x11, 0x11, address), v2(0x22, 0x11, address));
        let (bad_family, too_short) = (v2(0x21, 0x41, address), v2(0x21, 0x11, &address[..4]));
        let v2_headers = [&bad_version[..], &bad_command, &bad_family, &too_short];
        assert_all_refused_as("malformed", &v2_headers).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_drip_past_the_deadline_times_out() {
        let (mut sender, mut receiver) = duplex(1024);
        let writer = tokio::spawn(async move {
            for byte in V1_TCP4 {
                let _ = sender.write_all(&[*byte]).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let result = read_proxy_header(&mut receiver, DEADLINE).await;
        assert_eq!(result.unwrap_err().label(), "timeout");
        writer.abort();
    }

    #[test]
    fn every_prefix_of_a_valid_header_asks_for_more_bytes() {
        let v2_tcp4 = v2(0x21, 0x11, V4_PAYLOAD_WITH_TLVS);
        let v1_headers = [V1_TCP4, V1_TCP6, V1_UNKNOWN_LONGEST, V1_UNKNOWN_SIX_FIELDS];
        for header in v1_headers.into_iter().chain([&v2_tcp4[..]]) {
            for end in 0..header.len() {
                let asks_for_more =
                    matches!(parse_buffered(&header[..end]), Ok(Progress::NeedMore));
                assert!(asks_for_more, "{:?}", &header[..end]);
            }
            let whole = parse_buffered(header);
            assert!(matches!(whole, Ok(Progress::Done(_, length)) if length == header.len()));
        }
    }

    #[test]
    fn every_kind_has_its_own_label() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        use ProxyHeaderError::{Closed, Io, Malformed, Missing, Timeout, TooLong};
        let kinds = [Missing, Malformed("bad"), TooLong, Timeout, Closed, Io(io)];
        let labels: std::collections::HashSet<_> = kinds.iter().map(|kind| kind.label()).collect();
        assert_eq!(labels.len(), kinds.len());
    }
}
