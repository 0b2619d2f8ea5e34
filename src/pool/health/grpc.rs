//! The gRPC health-checking protocol's client side: one unary
//! `grpc.health.v1.Health/Check` call on a probe's HTTP/2 session, and the
//! answer's `ServingStatus` read from its protobuf by hand (one varint
//! field: no protobuf dependency for seven bytes).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;

/// An empty `HealthCheckRequest` (the server as a whole), framed: not
/// compressed, length 0.
const GRPC_EMPTY_REQUEST: [u8; 5] = [0, 0, 0, 0, 0];
/// The most of a gRPC health answer read; a real one is 7 bytes.
const GRPC_MAX_ANSWER: usize = 4096;
/// `ServingStatus.SERVING` in `grpc.health.v1`.
const GRPC_SERVING: u64 = 1;

/// A failed probe, in lb's words (`grpc-status 12`, `NOT_SERVING`).
pub(super) fn failed(reason: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::Custom("health check failed"), reason.into())
}

/// Calls `grpc.health.v1.Health/Check` on `session` and checks the answer.
pub(super) async fn grpc_check(
    session: HttpSession,
    request: &RequestHeader,
    timeout: Duration,
) -> Result<()> {
    let HttpSession::H2(mut h2) = session else {
        return Err(failed(
            "the backend answered in HTTP/1.1; gRPC needs HTTP/2",
        ));
    };
    h2.read_timeout = Some(timeout);
    h2.write_timeout = Some(timeout);
    h2.write_request_header(Box::new(request.clone()), false)?;
    h2.write_request_body(Bytes::from_static(&GRPC_EMPTY_REQUEST), true)
        .await?;
    h2.read_response_header().await?;
    let status = h2.response_header().map_or(0, |r| r.status.as_u16());
    if status != 200 {
        return Error::e_explain(
            ErrorType::CustomCode("unexpected status", status),
            "grpc health check",
        );
    }
    // A "trailers-only" answer (an error) puts grpc-status in the headers.
    if let Some(code) = h2
        .response_header()
        .and_then(|r| r.headers.get("grpc-status"))
    {
        return check_grpc_status(Some(code.as_bytes()));
    }
    let mut answer = BytesMut::new();
    while let Some(chunk) = h2.read_response_body().await? {
        if answer.len() + chunk.len() > GRPC_MAX_ANSWER {
            return Err(failed(format!(
                "the health answer is over {GRPC_MAX_ANSWER} bytes"
            )));
        }
        answer.extend_from_slice(&chunk);
    }
    let trailers = h2.read_trailers().await?;
    check_grpc_status(
        trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
    )?;
    match serving_status(&answer) {
        Ok(GRPC_SERVING) => Ok(()),
        Ok(status) => Err(failed(serving_status_name(status))),
        Err(why) => Err(failed(format!("malformed health answer: {why}"))),
    }
}

pub(super) fn check_grpc_status(code: Option<&[u8]>) -> Result<()> {
    match code {
        Some(b"0") => Ok(()),
        Some(code) => Err(failed(format!(
            "grpc-status {}",
            String::from_utf8_lossy(code)
        ))),
        None => Err(failed("no grpc-status in the answer")),
    }
}

/// The name of a `grpc.health.v1.HealthCheckResponse.ServingStatus`.
fn serving_status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("serving status {other}"),
    }
}

/// The `status` (field 1) of the one framed `HealthCheckResponse` in
/// `body`: 5-byte prefix (compressed flag, big-endian length), then the
/// protobuf message. An absent field is 0 (UNKNOWN), as in proto3.
pub(super) fn serving_status(body: &[u8]) -> std::result::Result<u64, String> {
    let [compressed, a, b, c, d, message @ ..] = body else {
        return Err(format!(
            "{} bytes, shorter than the 5-byte prefix",
            body.len()
        ));
    };
    if *compressed != 0 {
        return Err("the message is compressed".into());
    }
    let length = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if message.len() != length {
        return Err(format!(
            "the prefix says {length} bytes, {} followed",
            message.len()
        ));
    }
    let mut status = 0;
    let mut rest = message;
    while !rest.is_empty() {
        let (key, after) = varint(rest)?;
        rest = after;
        match key & 7 {
            0 => {
                let (value, after) = varint(rest)?;
                rest = after;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            1 => rest = rest.get(8..).ok_or("a 64-bit field is cut short")?,
            2 => {
                let (len, after) = varint(rest)?;
                let len = usize::try_from(len).map_err(|_| "a field is too long")?;
                rest = after.get(len..).ok_or("a field is cut short")?;
            }
            5 => rest = rest.get(4..).ok_or("a 32-bit field is cut short")?,
            wire => return Err(format!("unknown wire type {wire}")),
        }
    }
    Ok(status)
}

/// A protobuf varint at the start of `bytes`, and what follows it.
fn varint(bytes: &[u8]) -> std::result::Result<(u64, &[u8]), String> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err("a varint is cut short".into())
}
