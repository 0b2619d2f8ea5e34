//! A strict check of a request's chunked framing (RFC 9112 section 7.1), run
//! over the raw bytes the client sends, beside Pingora's own chunk parser.
//!
//! Pingora reads chunk sizes with `httparse::parse_chunk_size`, which takes an
//! empty size line for the last chunk and lets a bare LF through inside a
//! chunk extension. HAProxy and nginx see other request boundaries in such
//! bytes, and different boundaries between two proxies are how requests are
//! smuggled. lb checks the framing itself and rejects what the RFC's grammar
//! does not allow, so every body lb forwards ends where any peer would end it.
//!
//! What is accepted, as `httparse` accepts it (so both agree on every
//! boundary of an accepted body):
//! - a size line: 1 to 16 hex digits, optional spaces or tabs, an optional
//!   extension (`;` then any bytes but CR and LF), then CRLF;
//! - chunk data of exactly that size, then CRLF;
//! - after the last (zero-size) chunk, trailer lines that end in CRLF, then
//!   an empty line.
//!
//! Everything else is bad framing: an empty size line, anything but hex
//! before the first space or `;`, more than 16 digits, a bare CR or LF
//! anywhere in the framing, data longer than its size.

/// The most hex digits of a chunk size, as `httparse` allows.
const MAX_SIZE_DIGITS: u8 = 16;

/// Where the check is in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a size line: a hex digit must come.
    SizeStart,
    /// Among the size's hex digits.
    Size,
    /// After the size, in spaces or tabs before `;` or CR.
    SizeSpace,
    /// In a chunk extension, until CR.
    Extension,
    /// After the CR that ends a size line.
    SizeLf,
    /// In chunk data; `remaining` bytes of it left.
    Data,
    /// After chunk data: CR must come.
    DataCr,
    /// After chunk data and CR: LF must come.
    DataLf,
    /// At the start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    /// In a trailer line, until CR.
    Trailer,
    /// After the CR that ends a trailer line.
    TrailerLf,
    /// After the CR of the empty line that ends the body.
    EndLf,
    /// The body ended.
    Done,
    /// The framing broke the grammar.
    Bad,
}

/// Framing that breaks RFC 9112's chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunkFraming;

impl std::fmt::Display for BadChunkFraming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad chunked framing in the request body (RFC 9112 7.1)")
    }
}

impl std::error::Error for BadChunkFraming {}

/// The check of one chunked body, fed its bytes in the pieces they arrive in.
#[derive(Debug, Clone, Copy)]
pub struct ChunkedFraming {
    state: State,
    /// The chunk size being read, then the data bytes left of the chunk.
    remaining: u64,
    /// Hex digits read of the current size.
    digits: u8,
}

impl Default for ChunkedFraming {
    fn default() -> Self {
        ChunkedFraming {
            state: State::SizeStart,
            remaining: 0,
            digits: 0,
        }
    }
}

impl ChunkedFraming {
    /// Whether the body has ended or its framing broke: no byte is checked
    /// any more.
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done | State::Bad)
    }

    /// Checks the next `bytes` of the body. Returns where in them the body
    /// ended (just after its last byte), `None` while it goes on.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunkFraming> {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Done => return Ok(Some(at)),
                State::Bad => return Err(BadChunkFraming),
                State::Data => {
                    let left = bytes.len() - at;
                    let take = usize::try_from(self.remaining).map_or(left, |r| r.min(left));
                    at += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            self.state = self.step(bytes[at]);
            at += 1;
        }
        match self.state {
            State::Done => Ok(Some(at)),
            State::Bad => Err(BadChunkFraming),
            _ => Ok(None),
        }
    }

    /// The state after one framing byte (not chunk data).
    fn step(&mut self, byte: u8) -> State {
        match (self.state, byte) {
            (State::SizeStart | State::Size, _) if byte.is_ascii_hexdigit() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return State::Bad;
                }
                self.digits += 1;
                // Sixteen digits fit in a u64: no overflow.
                self.remaining = self.remaining << 4 | u64::from(hex_value(byte));
                State::Size
            }
            (State::Size | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size | State::SizeSpace, b';') => State::Extension,
            (State::Size | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => State::Bad,
            (State::Extension, _) => State::Extension,
            (State::SizeLf, b'\n') => {
                self.digits = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::SizeStart,
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::Trailer, b'\n') => State::Bad,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            _ => State::Bad,
        }
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `body` whole, then split at every point into two pieces.
    fn check(body: &[u8]) -> Result<Option<usize>, BadChunkFraming> {
        let whole = ChunkedFraming::default().feed(body);
        for cut in 0..=body.len() {
            let mut framing = ChunkedFraming::default();
            let split = match framing.feed(&body[..cut]) {
                Ok(Some(end)) => Ok(Some(end)),
                Ok(None) => framing.feed(&body[cut..]).map(|end| end.map(|e| e + cut)),
                Err(e) => Err(e),
            };
            assert_eq!(split, whole, "{body:?} cut at {cut}");
        }
        whole
    }

    #[test]
    fn well_formed_bodies_end_where_they_end() {
        let cases: [(&[u8], usize); 6] = [
            (b"5\r\nhello\r\n0\r\n\r\n", 15),
            (b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 15),
            (b"5;name=value\r\nhello\r\n0\r\n\r\n", 26),
            (b"5 ;a\r\nhello\r\n0\r\nX-T: a\r\n\r\n", 26),
            (b"A\r\n0123456789\r\n00\r\n\r\n", 21),
            (b"0000000000000005\r\nhello\r\n0\r\n\r\n", 30),
        ];
        for (body, end) in cases {
            assert_eq!(
                check(body),
                Ok(Some(end)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(check(b"5\r\nhel"), Ok(None));
    }

    #[test]
    fn what_the_grammar_forbids_is_bad_framing() {
        let bad: [&[u8]; 14] = [
            b"\r\nhi\r\n0\r\n\r\n",                     // empty size line
            b"2;a\nxx\r\n45\r\n0\r\n\r\n",              // bare LF in an extension
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",            // bare CR in an extension
            b"5zz\r\nhello\r\n0\r\n\r\n",               // hex digits then garbage
            b"5 z\r\nhello\r\n0\r\n\r\n",               // space then garbage
            b"00000000000000005\r\nhello\r\n0\r\n\r\n", // 17 digits
            b"5\nhello\r\n0\r\n\r\n",                   // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",                   // bare LF after the data
            b"3\r\nhello\r\n0\r\n\r\n",                 // data longer than its size
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",        // space before the size
            b"5\r\nhello\r\n0\r\nX-T: a\n\r\n", // bare LF in a trailer
            b"5\r\nhello\r\n0\r\n\r\r\n",       // bare CR in the last line
        ];
        for body in bad {
            assert_eq!(
                check(body),
                Err(BadChunkFraming),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_size_line_is_hex_in_either_case() {
        // 0x1a = 26 bytes of data, written with digits of both cases.
        for size in ["1a", "1A", "001a"] {
            let body = format!("{size}\r\n{}\r\n0\r\n\r\n", "d".repeat(26));
            assert_eq!(check(body.as_bytes()), Ok(Some(body.len())), "{size}");
        }
        // "10" is 16 bytes, not ten: the CRLF after ten is taken as data.
        let decimal = format!("10\r\n{}\r\n0\r\n\r\n", "d".repeat(10));
        assert_eq!(check(decimal.as_bytes()), Err(BadChunkFraming));
        // The largest size fits: the check waits for its data.
        assert_eq!(check(b"ffffffffffffffff\r\nabc"), Ok(None));
    }

    #[test]
    fn once_ended_or_broken_the_check_stays_so() {
        let mut ended = ChunkedFraming::default();
        assert!(!ended.finished());
        assert_eq!(ended.feed(b"0\r\n\r\n"), Ok(Some(5)));
        assert!(ended.finished());
        assert_eq!(ended.feed(b"GET / HTTP/1.1\r\n"), Ok(Some(0)));
        let mut broken = ChunkedFraming::default();
        assert_eq!(broken.feed(b"g\r\n"), Err(BadChunkFraming));
        assert!(broken.finished());
        assert_eq!(broken.feed(b"0\r\n\r\n"), Err(BadChunkFraming));
    }
}
