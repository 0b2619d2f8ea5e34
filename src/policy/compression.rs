//! Response compression for routes whose policy enables it (issue 25): the coding from the
//! client's `Accept-Encoding` q-values, the response checks from the route's rule.
//!
//! Pingora's `ResponseCompressionCtx` (0.9.1) is not used whole: it takes the first coding the
//! client names whatever its q-value (`gzip;q=0` still gets gzip), and once enabled it adds its
//! own floors (only `text/`, `application/`, `font/` and three `image/` types, never one
//! containing "zip" or without Content-Type, never under 20 bytes). lb decides everything here
//! and uses Pingora's public encoders (`Algorithm::compressor`) for gzip and zstd. Brotli goes
//! through the `brotli` crate Pingora builds: Pingora's brotli encoder flushes but never
//! finishes the stream (cloudflare/pingora#1013), which strict decoders (Node's `fetch`) reject.
//!
//! Hooks: `request_filter` → [`CompressionRule::choose`]; `response_filter` →
//! [`CompressionRule::start`], or [`CompressionRule::vary_only`] when `choose` gave `None`;
//! `response_body_filter` → [`ResponseCompression::body`]. A route without a rule calls none.

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, TE, TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::compression::{
    Algorithm as PingoraAlgorithm, Encode, COMPRESSION_ERROR,
};
use pingora::OrErr;
use std::io::Write;

/// gzip level (flate2, 1..=9): zlib's own default.
pub const GZIP_LEVEL: u32 = 6;
/// Brotli quality (0..=11): a fast level for on-the-fly bodies; 11 is for static files.
pub const BROTLI_QUALITY: u32 = 4;
/// Brotli window, log2 of bytes: 512 KiB per response, as Pingora's encoder uses.
pub const BROTLI_WINDOW_BITS: u32 = 19;
/// zstd level (1..=22): zstd's own default.
pub const ZSTD_LEVEL: u32 = 3;

/// A content coding lb can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Zstandard, RFC 8878.
    Zstd,
    /// Brotli, RFC 7932.
    Brotli,
    /// gzip, RFC 1952.
    Gzip,
}

impl Algorithm {
    /// The config name: `"zstd"`, `"br"`, `"gzip"` (or `"x-gzip"`), ASCII case ignored.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Self::from_token(name.as_bytes())
    }

    /// The `Content-Encoding` token: `"zstd"`, `"br"` or `"gzip"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Brotli => "br",
            Algorithm::Gzip => "gzip",
        }
    }

    /// An `Accept-Encoding` token; `x-gzip` is gzip (RFC 9110 8.4.1.3).
    fn from_token(token: &[u8]) -> Option<Algorithm> {
        [
            (&b"zstd"[..], Algorithm::Zstd),
            (b"br", Algorithm::Brotli),
            (b"gzip", Algorithm::Gzip),
            (b"x-gzip", Algorithm::Gzip),
        ]
        .into_iter()
        .find_map(|(name, algorithm)| token.eq_ignore_ascii_case(name).then_some(algorithm))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One entry of the rule's type list, lowercase, parameters dropped; `"*"` is a wildcard.
#[derive(Debug, Clone)]
struct MediaRange {
    kind: String,
    subtype: String,
}

/// A route's compression policy, built once at config load and shared read-only.
#[derive(Debug, Clone)]
pub struct CompressionRule {
    /// Server preference, first wins a tie of q-values; no duplicates.
    algorithms: Vec<Algorithm>,
    /// Smallest Content-Length compressed, in bytes; bodies without one are compressed.
    min_size: u64,
    types: Vec<MediaRange>,
}

impl CompressionRule {
    /// `algorithms` in the server's order of preference (duplicates dropped), `min_size` in
    /// bytes, `types` as `type/subtype`, `type/*` or `*/*` (parameters and case ignored; an
    /// entry without `/` matches nothing: config validation reports it).
    pub fn new(algorithms: &[Algorithm], min_size: u64, types: &[String]) -> CompressionRule {
        let mut unique = Vec::with_capacity(algorithms.len());
        for algorithm in algorithms {
            if !unique.contains(algorithm) {
                unique.push(*algorithm);
            }
        }
        let types = types
            .iter()
            .filter_map(|media| {
                let essence = media.split(';').next().unwrap_or_default().trim();
                let (kind, subtype) = essence.split_once('/')?;
                Some(MediaRange {
                    kind: kind.trim().to_ascii_lowercase(),
                    subtype: subtype.trim().to_ascii_lowercase(),
                })
            })
            .collect();
        CompressionRule {
            algorithms: unique,
            min_size,
            types,
        }
    }

    /// The coding for this request, from `Accept-Encoding` q-values (RFC 9110 12.5.3): q=0
    /// excludes, `*` weighs codings not listed, the highest q wins, a tie goes to the rule's
    /// order, and an explicit `identity` weighed above every coding means no compression. A
    /// malformed q drops its element. `None` as well for HEAD, HTTP/1.0 (no chunked framing),
    /// a request `Cache-Control: no-transform`, `TE: trailers` (gRPC: Pingora gives no hook to
    /// finish the stream before trailers), or no `Accept-Encoding`. Reads bytes, allocates nothing.
    pub fn choose(&self, req: &RequestHeader) -> Option<Algorithm> {
        if req.method == Method::HEAD
            || req.version < Version::HTTP_11
            || has_token(&req.headers, CACHE_CONTROL, b"no-transform")
            || has_token(&req.headers, TE, b"trailers")
        {
            return None;
        }
        let weights = Weights::parse(&req.headers)?;
        let mut best: Option<(Algorithm, u16)> = None;
        for &algorithm in &self.algorithms {
            let q = weights.codings[algorithm.index()]
                .or(weights.star)
                .unwrap_or(0);
            if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((algorithm, q));
            }
        }
        let (algorithm, q) = best?;
        match weights.identity {
            Some(identity) if identity > q => None,
            _ => Some(algorithm),
        }
    }

    /// Starts compressing with `algorithm` (from [`Self::choose`]) if the rule allows this
    /// response: a final status with a body (not 204/304/206, no Content-Range), no
    /// Content-Encoding but `identity`, no `Cache-Control: no-transform`, a listed type,
    /// Content-Length at least `min_size` or absent. Then adds `Vary: Accept-Encoding`, sets
    /// Content-Encoding and `Transfer-Encoding: chunked` (Pingora's HTTP/2 server drops it),
    /// removes Content-Length and Accept-Ranges, weakens a strong ETag. `end_of_stream` (no
    /// body follows) is unknown to `ProxyHttp::response_filter`: pass `false` there.
    pub fn start(
        &self,
        algorithm: Algorithm,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> Option<ResponseCompression> {
        if end_of_stream || !self.eligible(resp) {
            return None;
        }
        // Allocates the encoder's state: only for a response that is compressed.
        let encoder = match algorithm {
            Algorithm::Zstd => Encoder::Pingora(PingoraAlgorithm::Zstd.compressor(ZSTD_LEVEL)?),
            Algorithm::Gzip => Encoder::Pingora(PingoraAlgorithm::Gzip.compressor(GZIP_LEVEL)?),
            Algorithm::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096, // the writer's staging buffer, bytes
                BROTLI_QUALITY,
                BROTLI_WINDOW_BITS,
            ))),
        };
        let coding = HeaderValue::from_static(algorithm.as_str());
        // Static name and value: cannot fail; if it did, the response goes out untouched.
        resp.insert_header(&CONTENT_ENCODING, coding).ok()?;
        add_vary(resp);
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        let _ = resp.insert_header(&TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        if resp.version < Version::HTTP_11 {
            // An HTTP/1.0 backend's status line cannot carry chunked framing.
            resp.set_version(Version::HTTP_11);
        }
        weaken_etag(resp);
        Some(ResponseCompression {
            algorithm,
            encoder: Some(encoder),
        })
    }

    /// Adds `Vary: Accept-Encoding` to a response the rule would compress for some client, so
    /// a cache keeps the identity copy apart: call it when [`Self::choose`] gave `None` (nginx's
    /// `gzip_vary on`). Responses the rule never compresses do not vary and are left alone.
    pub fn vary_only(&self, resp: &mut ResponseHeader) {
        if self.eligible(resp) {
            add_vary(resp);
        }
    }

    /// The response checks, whatever the client accepts.
    fn eligible(&self, resp: &ResponseHeader) -> bool {
        let status = resp.status.as_u16();
        let headers = &resp.headers;
        let no_body = status < 200 || matches!(status, 204 | 206 | 304);
        if no_body || headers.contains_key(CONTENT_RANGE) {
            return false;
        }
        let encoded = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .flat_map(|value| tokens(value.as_bytes()))
            .any(|coding| !coding.eq_ignore_ascii_case(b"identity"));
        if encoded || has_token(headers, CACHE_CONTROL, b"no-transform") {
            return false;
        }
        let listed = headers
            .get(CONTENT_TYPE)
            .is_some_and(|value| self.type_listed(value.as_bytes()));
        match headers.get(CONTENT_LENGTH).map(content_length) {
            None => listed,
            Some(Some(length)) => listed && length > 0 && length >= self.min_size,
            Some(None) => false, // unparsable: leave the framing to Pingora
        }
    }

    /// `content_type` without its parameters, against the list, ASCII case ignored.
    fn type_listed(&self, content_type: &[u8]) -> bool {
        let end = content_type.iter().position(|b| *b == b';');
        let essence = &content_type[..end.unwrap_or(content_type.len())];
        let Some(slash) = essence.iter().position(|b| *b == b'/') else {
            return false;
        };
        let kind = essence[..slash].trim_ascii();
        let subtype = essence[slash + 1..].trim_ascii();
        self.types.iter().any(|range| {
            (range.kind == "*" || range.kind.as_bytes().eq_ignore_ascii_case(kind))
                && (range.subtype == "*" || range.subtype.as_bytes().eq_ignore_ascii_case(subtype))
        })
    }
}

/// q-values in thousandths (0..=1000) for zstd, br, gzip (by [`Algorithm::index`]), `*` and
/// `identity`; `None` where the header does not name it.
#[derive(Default)]
struct Weights {
    codings: [Option<u16>; 3],
    star: Option<u16>,
    identity: Option<u16>,
}

impl Weights {
    /// `None` without an Accept-Encoding field; every field line is read (RFC 9110 5.3).
    fn parse(headers: &HeaderMap) -> Option<Weights> {
        let mut fields = headers.get_all(ACCEPT_ENCODING).iter().peekable();
        fields.peek()?;
        let mut weights = Weights::default();
        for element in fields.flat_map(|value| tokens(value.as_bytes())) {
            let mut parts = element.split(|b| *b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let Some(q) = weight(parts) else { continue };
            let slot = if coding == b"*" {
                &mut weights.star
            } else if coding.eq_ignore_ascii_case(b"identity") {
                &mut weights.identity
            } else if let Some(algorithm) = Algorithm::from_token(coding) {
                &mut weights.codings[algorithm.index()]
            } else {
                continue;
            };
            // A coding listed twice keeps its lower weight, so an exclusion always holds.
            *slot = Some(slot.map_or(q, |old| old.min(q)));
        }
        Some(weights)
    }
}

/// The element's `q` parameter in thousandths, 1000 without one; `None` if malformed
/// (RFC 9110 12.4.2: `0[.ddd]` or `1[.000]`). Other parameters are ignored.
fn weight<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let param = param.trim_ascii();
        if param.len() < 2 || !param[..2].eq_ignore_ascii_case(b"q=") {
            continue;
        }
        let value = &param[2..];
        let (whole, fraction) = match value.split_first()? {
            (whole @ (b'0' | b'1'), [b'.', fraction @ ..]) => (*whole, fraction),
            (whole @ (b'0' | b'1'), []) => (*whole, &[][..]),
            _ => return None,
        };
        if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let thousandths = fraction
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(3)
            .fold(0u16, |sum, digit| sum * 10 + u16::from(digit - b'0'));
        q = u16::from(whole - b'0') * 1000 + thousandths;
        if q > 1000 {
            return None;
        }
    }
    Some(q)
}

/// A Content-Length value in bytes; `None` if it is not one number.
fn content_length(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.trim().parse().ok()
}

/// The non-empty, trimmed elements of a comma-separated field value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// Whether a list field names `directive` (before any `=` or `;`), ASCII case ignored.
fn has_token(headers: &HeaderMap, name: http::HeaderName, directive: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| tokens(value.as_bytes()))
        .any(|element| {
            let end = element.iter().position(|b| matches!(b, b'=' | b';'));
            element[..end.unwrap_or(element.len())]
                .trim_ascii()
                .eq_ignore_ascii_case(directive)
        })
}

/// Appends `Vary: Accept-Encoding` as one more field line (equivalent to merging it into the
/// existing list, RFC 9110 5.3, without building a new value) unless `*` or it is there.
fn add_vary(resp: &mut ResponseHeader) {
    let headers = &resp.headers;
    if !has_token(headers, VARY, b"*") && !has_token(headers, VARY, b"accept-encoding") {
        // Static name and value: cannot fail.
        let _ = resp.append_header(&VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A strong ETag becomes weak (the bytes changed, the content did not, RFC 9110 8.8.1); one
/// that is not a quoted string is dropped, as nginx and Pingora do.
fn weaken_etag(resp: &mut ResponseHeader) {
    let weak = match resp.headers.get(ETAG).map(HeaderValue::as_bytes) {
        None => return,
        Some(etag) if etag.starts_with(b"W/") => return,
        Some(etag) if etag.starts_with(b"\"") => {
            HeaderValue::from_bytes(&[b"W/", etag].concat()).ok()
        }
        Some(_) => None,
    };
    match weak {
        Some(weak) => drop(resp.insert_header(&ETAG, weak)),
        None => drop(resp.remove_header(&ETAG)),
    }
}

enum Encoder {
    /// Pingora's gzip or zstd encoder.
    Pingora(Box<dyn Encode + Send + Sync>),
    /// Boxed: the writer's state is a few KiB, kept off lb's per-request context.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    /// The compressed bytes ready so far.
    fn encode(&mut self, input: &[u8]) -> pingora::Result<Bytes> {
        match self {
            Encoder::Pingora(encoder) => encoder.encode(input, false),
            Encoder::Brotli(writer) => {
                writer
                    .write_all(input)
                    .or_err(COMPRESSION_ERROR, "while compressing brotli")?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
        }
    }

    /// The last bytes, with the end of the stream.
    fn finish(self, input: &[u8]) -> pingora::Result<Bytes> {
        match self {
            Encoder::Pingora(mut encoder) => encoder.encode(input, true),
            Encoder::Brotli(mut writer) => {
                writer
                    .write_all(input)
                    .or_err(COMPRESSION_ERROR, "while compressing brotli")?;
                // into_inner runs BROTLI_OPERATION_FINISH: the ISLAST block Pingora's omits.
                Ok(Bytes::from(writer.into_inner()))
            }
        }
    }
}

/// One response being compressed; lives in lb's per-request context from `response_filter`.
pub struct ResponseCompression {
    algorithm: Algorithm,
    /// `None` once the stream is finished.
    encoder: Option<Encoder>,
}

impl ResponseCompression {
    /// The coding this response is sent with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Replaces `body` with its compressed bytes (`None` while the encoder buffers); call it
    /// from `ProxyHttp::response_body_filter` with every chunk. `end_of_stream` must come once,
    /// with or without a last chunk: it finishes the stream; later calls yield nothing. An
    /// error means the body cannot be completed: return it to abort the response.
    pub fn body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> pingora::Result<()> {
        let input = body.as_deref().unwrap_or_default();
        let output = match (self.encoder.take(), end_of_stream) {
            (None, _) => Bytes::new(),
            (Some(encoder), true) => encoder.finish(input)?,
            (Some(mut encoder), false) => {
                let output = encoder.encode(input)?;
                self.encoder = Some(encoder);
                output
            }
        };
        *body = (!output.is_empty()).then_some(output);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
