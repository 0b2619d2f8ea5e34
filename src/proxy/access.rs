//! What lb logs of each request: the access line (lb's own log or
//! `RUST_LOG`'s `lb::access` target) and, at debug level, the request as it
//! arrived.

use std::time::Duration;

use pingora::proxy::Session;
use pingora::Error;

use super::{error_page, RequestCtx};
use crate::telemetry::access_log;
use crate::telemetry::metrics::Protocol;
use crate::tls::TlsInfo;

/// The status an access line shows for a request the client gave up on
/// before its response was complete: nginx's 499 (Client Closed Request).
pub(super) const CLIENT_CLOSED: u16 = 499;

/// A finished request's status: for the metrics (0 when no response was
/// complete: none sent, or the client went away before its end), and for
/// the access line (499 when the client went away, even after a backend's
/// 200 began, so that the line agrees with what happened).
pub(super) fn final_status(session: &Session, ctx: &RequestCtx, e: Option<&Error>) -> (u16, u16) {
    if e.is_some_and(error_page::client_went_away) {
        return (0, CLIENT_CLOSED);
    }
    let status = ctx
        .own_answer
        .or_else(|| session.response_written().map(|r| r.status.as_u16()))
        .unwrap_or(0);
    (status, status)
}

/// The access log's view of a finished request.
pub(super) fn entry<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    status: u16,
    total: Duration,
    client: &'a str,
) -> access_log::Entry<'a> {
    let req = session.req_header();
    let tls = session.digest().and_then(|d| d.ssl_digest.as_deref());
    access_log::Entry {
        time: None,
        client,
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: version_name(req.version),
        tls_version: tls.map(|t| &*t.version),
        sni: tls
            .and_then(|t| t.extension.get::<TlsInfo>())
            .and_then(|info| info.sni.as_deref()),
        route: ctx
            .route
            .and_then(|id| ctx.routing.route(id))
            .map(|r| r.name.as_str()),
        upstream_name: ctx.route.and(ctx.pool()).map(|p| p.pool().name()),
        status,
        bytes_sent: session.body_bytes_sent(),
        backend: ctx.backend.as_ref().map(|b| b.0.addr),
        connect: ctx.connect_elapsed,
        upstream: ctx.upstream_elapsed,
        total,
        retries: ctx.retries,
        request_id: ctx
            .request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-"),
        trace_id: ctx.trace.as_ref().map(|trace| trace.0.trace_id()),
    }
}

/// Writes the request's access line: to lb's access log, or else through
/// `RUST_LOG`'s `lb::access` target when it is on.
pub(super) fn write_line(session: &Session, ctx: &RequestCtx, status: u16, total: Duration) {
    if let Some(log) = access_log::access_log() {
        let client = client_ip(session, ctx);
        let entry = entry(session, ctx, status, total, &client);
        log.write(entry.line(log.format()));
    } else if log::log_enabled!(target: "lb::access", log::Level::Info) {
        let client = client_ip(session, ctx);
        let line = entry(session, ctx, status, total, &client).text_without_time();
        log::info!(target: "lb::access", "{line}");
    }
}

/// Whether the client reached lb over TLS.
pub(super) fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The client's protocol, for the metrics.
pub(super) fn protocol(version: http::Version) -> Protocol {
    match version {
        http::Version::HTTP_2 => Protocol::Http2,
        http::Version::HTTP_10 | http::Version::HTTP_09 => Protocol::Http10,
        _ => Protocol::Http11,
    }
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The seed's debug view of a request: who sent it, its request line and headers.
pub(super) fn log_received_request(session: &Session) {
    let req = session.req_header();
    let client = session
        .client_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let mut text = format!(
        "Received request from {client}\n{} {} {:?}",
        req.method, req.uri, req.version
    );
    for (name, value) in req.headers.iter() {
        text.push_str(&format!(
            "\n{}: {}",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    log::debug!("{text}");
}

/// The real client address as text: the one the policies decided
/// (`policy::client`), else the connection's peer.
pub(super) fn client_ip(session: &Session, ctx: &RequestCtx) -> String {
    match ctx.client {
        Some(ip) => ip.to_string(),
        None => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or_else(|| "-".to_string(), |a| a.ip().to_string()),
    }
}
