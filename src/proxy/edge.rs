//! The proxy's side of the policies: who the client is, which policies a
//! request meets (its listener's, then its route's), lb's own answers
//! (refusals, redirects), and the policies' work on the request to the
//! backend and on the response. A request on a listener and route with
//! no policy allocates nothing here.

use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{access, RequestCtx, Routing};
use crate::policy::{self, client, Admitted, Answer, Chain, Facts};

/// What a request's policies carry from one hook to the next.
#[derive(Default)]
pub struct EdgeState {
    /// The listener's chain, when it has one.
    listener: Option<Chain>,
    /// What the policies admitted the request with.
    admitted: Admitted,
    /// The response's compression, once it started.
    compression: Option<policy::compression::ResponseCompression>,
    /// The request's `Origin` and `Host`, for the response's CORS headers
    /// and `{host}`: kept here so that the `response_filter` hook need
    /// not reach for the session (capturing it grew that hook's boxed
    /// future into an allocation size the allocator served from a fresh
    /// page nearly every request: 1k instructions, bench/instructions.sh).
    origin: Option<http::HeaderValue>,
    host: Option<http::HeaderValue>,
}

/// Decides the real client address of the request (`ctx.client`), and
/// finds its listener's policies.
pub(super) fn find_client(session: &Session, ctx: &mut RequestCtx) {
    let Some(peer) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| client::canonical(a.ip()))
    else {
        return;
    };
    ctx.client = Some(peer);
    if !ctx.routing.has_listener_policies() {
        return;
    }
    let routing = Arc::clone(&ctx.routing);
    let Some(listener) = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .and_then(|local| routing.listener(*local))
    else {
        return;
    };
    let (real, trusted) =
        client::real_client(peer, &session.req_header().headers, &listener.trusted);
    ctx.client = Some(real);
    ctx.trusted_peer = trusted;
    if let Some(chain) = &listener.policies {
        ctx.edge = Some(Box::new(EdgeState {
            listener: Some(Arc::clone(chain)),
            ..EdgeState::default()
        }));
    }
}

/// The chains of a request: its listener's and its route's.
fn chains<'a>(ctx: &'a RequestCtx, routing: &'a Routing) -> [&'a [Arc<policy::Policy>]; 2] {
    let listener = ctx
        .edge
        .as_ref()
        .and_then(|e| e.listener.as_deref())
        .unwrap_or(&[]);
    let route = ctx
        .route
        .and_then(|id| routing.route(id))
        .and_then(|r| r.pool.policies.as_deref())
        .unwrap_or(&[]);
    [listener, route]
}

/// Whether the request has a redirect to answer or policies to walk.
pub(super) fn applies(ctx: &RequestCtx) -> bool {
    let route = ctx.route.and_then(|id| ctx.routing.route(id));
    ctx.edge.is_some()
        || route.is_some_and(|r| r.pool.redirect.is_some() || r.pool.policies.is_some())
}

/// Answers a redirect route, or walks the request's policies; true when
/// lb answered and the request goes no further.
pub(super) async fn admit(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let routing = Arc::clone(&ctx.routing);
    let route = ctx.route.and_then(|id| routing.route(id));
    if let Some(redirect) = route.and_then(|r| r.pool.redirect.as_ref()) {
        let answer = redirect.answer(session.req_header(), access::is_tls(session));
        respond(session, ctx, answer).await?;
        return Ok(true);
    }
    let chains = chains(ctx, &routing);
    if chains.iter().all(|c| c.is_empty()) {
        return Ok(false);
    }
    let mut admitted = Admitted::default();
    let facts = facts(session, ctx, route.map(|r| r.name.as_str()));
    let answer = policy::admit(&chains, &facts, &mut admitted).await;
    if let Some(answer) = answer {
        respond(session, ctx, answer).await?;
        return Ok(true);
    }
    // Only what the response rules will read is kept.
    let policies = || chains.iter().flat_map(|chain| chain.iter());
    let (reads_origin, reads_host) = (
        policies().any(|p| p.reads_origin()),
        policies().any(|p| p.reads_host()),
    );
    let req = session.req_header();
    let origin = reads_origin
        .then(|| req.headers.get(http::header::ORIGIN).cloned())
        .flatten();
    let host = reads_host.then(|| host_of(req)).flatten();
    let edge = ctx.edge.get_or_insert_with(Box::default);
    edge.admitted = admitted;
    edge.origin = origin;
    edge.host = host;
    Ok(false)
}

/// The request's host: its Host header, else its target's authority.
fn host_of(req: &RequestHeader) -> Option<http::HeaderValue> {
    req.headers.get(http::header::HOST).cloned().or_else(|| {
        req.uri
            .host()
            .and_then(|h| http::HeaderValue::from_str(h).ok())
    })
}

/// Applies the policies' request headers to the request to the backend,
/// and the route's rewrite.
pub(super) fn on_upstream_request(
    session: &Session,
    ctx: &RequestCtx,
    upstream_request: &mut RequestHeader,
) {
    let routing = &ctx.routing;
    let route = ctx.route.and_then(|id| routing.route(id));
    if let Some(rewrite) = route.and_then(|r| r.pool.rewrite.as_ref()) {
        if let Some(uri) = rewrite.apply(&upstream_request.uri) {
            upstream_request.set_uri(uri);
        }
    }
    let Some(edge) = &ctx.edge else {
        return;
    };
    let chains = chains(ctx, routing);
    let admitted = Some(&edge.admitted);
    let facts = facts(session, ctx, route.map(|r| r.name.as_str()));
    policy::on_upstream_request(&chains, &facts, admitted, upstream_request);
}

/// Applies the policies' response rules to the response to the client.
pub(super) fn on_response(ctx: &mut RequestCtx, response: &mut ResponseHeader) {
    // Only a request the policies admitted has state: the rest, most
    // requests, return here without touching the routing's count.
    let Some(edge) = &ctx.edge else {
        return;
    };
    let routing = Arc::clone(&ctx.routing);
    let chains = chains(ctx, &routing);
    let route = ctx.route.and_then(|id| routing.route(id));
    let vars = policy::Vars {
        client_ip: ctx.client.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        request_id: ctx.request_id.as_ref(),
        host: policy::Host::Known(edge.host.as_ref().and_then(|h| h.to_str().ok())),
        route: route.map(|r| r.name.as_str()),
    };
    let compression = policy::on_response(
        &chains,
        &vars,
        edge.origin.as_ref(),
        Some(&edge.admitted),
        response,
    );
    if let (Some(edge), Some(compression)) = (ctx.edge.as_mut(), compression) {
        edge.compression = Some(compression);
    }
}

/// Compresses a response body chunk, when the response is compressed.
pub(super) fn on_response_body(
    ctx: &mut RequestCtx,
    body: &mut Option<bytes::Bytes>,
    end_of_stream: bool,
) -> Result<()> {
    match ctx.edge.as_mut().and_then(|e| e.compression.as_mut()) {
        Some(compression) => compression.body(body, end_of_stream),
        None => Ok(()),
    }
}

fn facts<'a>(session: &'a Session, ctx: &'a RequestCtx, route: Option<&'a str>) -> Facts<'a> {
    Facts {
        client: ctx.client.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        req: session.req_header(),
        route,
        tls: access::is_tls(session),
        request_id: ctx.request_id.as_ref(),
    }
}

/// Sends lb's own answer. The connection stays open for the next request
/// unless the request has a body lb did not read.
async fn respond(session: &mut Session, ctx: &mut RequestCtx, answer: Answer) -> Result<()> {
    ctx.own_answer = Some(answer.status);
    let mut resp = ResponseHeader::build(answer.status, Some(answer.headers.len() + 3))?;
    for (name, value) in answer.headers {
        resp.append_header(name, value)?;
    }
    if !resp.headers.contains_key(http::header::CONTENT_TYPE) && !answer.body.is_empty() {
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    let downstream = session.as_downstream_mut();
    if answer.close || !downstream.is_body_empty() {
        downstream.set_keepalive(None);
    }
    downstream.write_response_header(Box::new(resp)).await?;
    let head = downstream.req_header().method == http::Method::HEAD;
    if head || answer.body.is_empty() {
        downstream.finish_body().await?;
    } else {
        downstream.write_response_body(answer.body, true).await?;
    }
    Ok(())
}
