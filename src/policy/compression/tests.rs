//! Tests of the compression policy: the q-value choice, each response check, and round trips
//! through the real decoders (flate2, brotli, zstd: the versions Pingora builds).

use super::*;
use std::io::Read;

fn rule() -> CompressionRule {
    let types = ["text/*", "application/json", "image/svg+xml"].map(String::from);
    let order = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];
    CompressionRule::new(&order, 1024, &types)
}

fn request(accept_encoding: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("accept-encoding", accept_encoding)
        .unwrap();
    req
}

/// A 10 KiB JSON response with a Content-Length, which `edit` then changes.
fn response(edit: impl FnOnce(&mut ResponseHeader)) -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("content-type", "application/json")
        .unwrap();
    resp.insert_header("content-length", "10240").unwrap();
    edit(&mut resp);
    resp
}

fn values(resp: &ResponseHeader, name: &str) -> Vec<String> {
    let all = resp.headers.get_all(name).iter();
    all.map(|v| v.to_str().unwrap().to_owned()).collect()
}

#[test]
fn algorithm_names_parse_as_in_the_config() {
    assert_eq!(Algorithm::parse("zstd"), Some(Algorithm::Zstd));
    assert_eq!(Algorithm::parse("br"), Some(Algorithm::Brotli));
    assert_eq!(Algorithm::parse("GZIP"), Some(Algorithm::Gzip));
    assert_eq!(Algorithm::parse("deflate"), None);
    assert_eq!(Algorithm::parse(""), None);
    assert_eq!(Algorithm::Brotli.as_str(), "br");
}

#[test]
fn choose_follows_q_values_and_breaks_ties_by_the_rule_order() {
    use Algorithm::{Brotli, Gzip, Zstd};
    let table: &[(&str, Option<Algorithm>)] = &[
        ("gzip", Some(Gzip)),
        ("x-gzip", Some(Gzip)),
        ("GZIP", Some(Gzip)),
        ("gzip;q=0", None),
        ("gzip;q=0, br", Some(Brotli)),
        ("gzip, gzip;q=0", None),
        ("*", Some(Zstd)),
        ("*;q=0", None),
        ("*;q=0, gzip", Some(Gzip)),
        ("gzip, *;q=0.1", Some(Gzip)),
        ("br;q=0.2, *;q=0.5", Some(Zstd)),
        ("identity", None),
        ("identity;q=0.5, gzip", Some(Gzip)),
        ("identity, gzip;q=0.5", None),
        ("identity;q=0, *;q=0", None),
        ("gzip, br", Some(Brotli)),
        ("gzip, br, zstd", Some(Zstd)),
        ("gzip;q=0.5, br;q=0.8", Some(Brotli)),
        ("gzip;q=0.9, br;q=0.8", Some(Gzip)),
        (" gzip ; q=0.5 ,  br ; Q=0.8 ,", Some(Brotli)),
        ("gzip;q=1.000", Some(Gzip)),
        ("gzip;q=0.001", Some(Gzip)),
        ("gzip;q=0.000", None),
        ("gzip;level=9;q=0.3", Some(Gzip)),
        ("gzip;q=1.001", None),
        ("gzip;q=2, br", Some(Brotli)),
        ("gzip;q=0.1234", None),
        ("gzip;q=abc", None),
        ("gzip;q=", None),
        ("gzip;q=.5", None),
        ("gzip;q = 0.5", Some(Gzip)), // not a q parameter: ignored, weight 1
        ("deflate, compress", None),
        ("", None),
    ];
    for (accept_encoding, expected) in table {
        let chosen = rule().choose(&request(accept_encoding));
        assert_eq!(chosen, *expected, "Accept-Encoding: {accept_encoding:?}");
    }
}

#[test]
fn choose_reads_every_accept_encoding_line() {
    let mut req = request("gzip;q=0");
    req.append_header("accept-encoding", "br;q=0.5").unwrap();
    assert_eq!(rule().choose(&req), Some(Algorithm::Brotli));
    let gzip_only = CompressionRule::new(&[Algorithm::Gzip], 0, &["text/*".into()]);
    assert_eq!(
        gzip_only.choose(&request("br, gzip;q=0.1")),
        Some(Algorithm::Gzip)
    );
}

#[test]
fn choose_refuses_head_http_1_0_no_transform_trailers_and_no_header() {
    let mut head = request("gzip");
    head.set_method(Method::HEAD);
    let mut http10 = request("gzip");
    http10.set_version(Version::HTTP_10);
    let mut no_transform = request("gzip");
    no_transform
        .insert_header("cache-control", "max-age=0, No-Transform")
        .unwrap();
    let mut grpc = request("gzip");
    grpc.insert_header("te", "trailers").unwrap();
    let absent = RequestHeader::build("GET", b"/", None).unwrap();
    for req in [head, http10, no_transform, grpc, absent] {
        assert_eq!(rule().choose(&req), None, "{req:?}");
    }
    let mut http2 = request("gzip");
    http2.set_version(Version::HTTP_2);
    assert_eq!(rule().choose(&http2), Some(Algorithm::Gzip));
}

#[test]
fn start_skips_each_excluded_response_and_adds_no_vary() {
    type Edit = fn(&mut ResponseHeader);
    let cases: &[(&str, Edit)] = &[
        ("101", |r| r.set_status(101).unwrap()),
        ("204", |r| r.set_status(204).unwrap()),
        ("304", |r| r.set_status(304).unwrap()),
        ("206", |r| r.set_status(206).unwrap()),
        ("range", |r| {
            r.insert_header("content-range", "bytes 0-9/10").unwrap()
        }),
        ("encoded", |r| {
            r.insert_header("content-encoding", "gzip").unwrap()
        }),
        ("listed", |r| {
            r.insert_header("content-encoding", "identity, br").unwrap()
        }),
        ("no-transform", |r| {
            r.insert_header("cache-control", "public, no-transform")
                .unwrap()
        }),
        ("png", |r| {
            r.insert_header("content-type", "image/png").unwrap()
        }),
        ("textual", |r| {
            r.insert_header("content-type", "texts/html").unwrap()
        }),
        ("no type", |r| drop(r.remove_header("content-type"))),
        ("small", |r| {
            r.insert_header("content-length", "1023").unwrap()
        }),
        ("empty", |r| r.insert_header("content-length", "0").unwrap()),
        ("bad length", |r| {
            r.insert_header("content-length", "ten").unwrap()
        }),
    ];
    for (name, edit) in cases {
        let mut resp = response(edit);
        let before = format!("{resp:?}");
        assert!(
            rule().start(Algorithm::Gzip, &mut resp, false).is_none(),
            "{name}"
        );
        rule().vary_only(&mut resp);
        assert_eq!(format!("{resp:?}"), before, "{name}: headers changed");
    }
    let mut whole = response(|_| {});
    assert!(rule().start(Algorithm::Gzip, &mut whole, true).is_none());
    assert!(whole.headers.get("content-encoding").is_none());
}

#[test]
fn start_rewrites_the_headers_for_a_compressed_body() {
    let mut resp = response(|r| {
        r.set_version(Version::HTTP_10);
        r.insert_header("content-type", "Text/HTML; charset=utf-8")
            .unwrap();
        r.insert_header("content-encoding", "identity").unwrap();
        r.insert_header("accept-ranges", "bytes").unwrap();
        r.insert_header("etag", "\"v1\"").unwrap();
        r.insert_header("vary", "Origin").unwrap();
    });
    let compression = rule().start(Algorithm::Brotli, &mut resp, false).unwrap();
    assert_eq!(compression.algorithm(), Algorithm::Brotli);
    assert_eq!(values(&resp, "content-encoding"), ["br"]);
    assert_eq!(values(&resp, "transfer-encoding"), ["chunked"]);
    assert_eq!(values(&resp, "etag"), ["W/\"v1\""]);
    assert_eq!(values(&resp, "vary"), ["Origin", "Accept-Encoding"]);
    assert!(resp.headers.get("content-length").is_none());
    assert!(resp.headers.get("accept-ranges").is_none());
    assert_eq!(resp.version, Version::HTTP_11);

    let mut chunked = response(|r| {
        r.remove_header("content-length");
        r.insert_header("vary", "origin, ACCEPT-ENCODING").unwrap();
        r.insert_header("etag", "unquoted").unwrap();
    });
    assert!(rule().start(Algorithm::Zstd, &mut chunked, false).is_some());
    assert_eq!(values(&chunked, "vary"), ["origin, ACCEPT-ENCODING"]);
    assert!(chunked.headers.get("etag").is_none());
    assert_eq!(values(&chunked, "content-encoding"), ["zstd"]);
}

#[test]
fn vary_only_marks_a_response_the_rule_would_compress() {
    let mut eligible = response(|_| {});
    rule().vary_only(&mut eligible);
    rule().vary_only(&mut eligible);
    assert_eq!(values(&eligible, "vary"), ["Accept-Encoding"]);
    assert!(eligible.headers.get("content-encoding").is_none());
    let mut star = response(|r| r.insert_header("vary", "*").unwrap());
    rule().vary_only(&mut star);
    assert_eq!(values(&star, "vary"), ["*"]);
}

/// At least 10 KiB of JSON.
fn json_body() -> Vec<u8> {
    let mut body = String::from("[");
    for i in 0.. {
        body.push_str(&format!(
            r#"{{"id":{i},"name":"item {i}","tags":["a","b"]}},"#
        ));
        if body.len() >= 10 * 1024 {
            break;
        }
    }
    body.push_str("{}]");
    body.into_bytes()
}

/// Runs `body` through start() and body() in 4000-byte chunks, the last one with the end.
fn compress(algorithm: Algorithm, body: &[u8]) -> Vec<u8> {
    let length = body.len().to_string();
    let mut resp = response(|r| r.insert_header("content-length", length).unwrap());
    let mut compression = rule().start(algorithm, &mut resp, false).unwrap();
    let mut wire = Vec::new();
    let chunks: Vec<&[u8]> = body.chunks(4000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut data = Some(Bytes::copy_from_slice(chunk));
        compression.body(&mut data, i + 1 == chunks.len()).unwrap();
        wire.extend_from_slice(&data.unwrap_or_default());
    }
    let mut after_end = Some(Bytes::from_static(b"late"));
    compression.body(&mut after_end, true).unwrap();
    assert_eq!(after_end, None, "nothing after the end");
    wire
}

#[test]
fn a_json_body_round_trips_through_each_algorithm() {
    let body = json_body();
    let mut decoded = Vec::new();
    let gzip = compress(Algorithm::Gzip, &body);
    flate2::read::GzDecoder::new(&gzip[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, body);
    assert!(gzip.len() < body.len() / 4, "gzip: {} bytes", gzip.len());

    let zstd = compress(Algorithm::Zstd, &body);
    assert_eq!(zstd::stream::decode_all(&zstd[..]).unwrap(), body);

    let br = compress(Algorithm::Brotli, &body);
    assert!(brotli_finished(&br), "brotli stream has no end");
    decoded.clear();
    brotli::Decompressor::new(&br[..], 4096)
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, body);
}

/// Whether a brotli stream decodes to its end (ISLAST seen), as strict decoders require.
fn brotli_finished(stream: &[u8]) -> bool {
    let mut state = brotli::BrotliState::new(
        brotli::HeapAlloc::<u8>::new(0),
        brotli::HeapAlloc::<u32>::new(0),
        brotli::HeapAlloc::<brotli::HuffmanCode>::new(Default::default()),
    );
    let mut output = vec![0; 64 * 1024];
    let (mut available_in, mut input_offset) = (stream.len(), 0);
    let (mut available_out, mut output_offset, mut written) = (output.len(), 0, 0);
    let result = brotli::BrotliDecompressStream(
        &mut available_in,
        &mut input_offset,
        stream,
        &mut available_out,
        &mut output_offset,
        &mut output,
        &mut written,
        &mut state,
    );
    matches!(result, brotli::BrotliResult::ResultSuccess)
}

#[test]
fn pingoras_own_brotli_stream_has_no_end_which_is_why_lb_drives_brotli() {
    let mut encoder = PingoraAlgorithm::Brotli.compressor(BROTLI_QUALITY).unwrap();
    let unfinished = encoder.encode(&json_body(), true).unwrap();
    assert!(!brotli_finished(&unfinished));
}

#[test]
fn a_body_under_min_size_is_left_alone() {
    let small = br#"{"ok":true}"#;
    let length = small.len().to_string();
    let mut resp = response(|r| r.insert_header("content-length", length).unwrap());
    let before = format!("{resp:?}");
    assert!(rule().start(Algorithm::Gzip, &mut resp, false).is_none());
    assert_eq!(format!("{resp:?}"), before);
}
