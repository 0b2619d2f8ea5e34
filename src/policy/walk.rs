//! The walk over a request's policies: the listener's chain, then the
//! route's, each policy's kinds in their fixed order. [`admit`] runs in
//! `request_filter` and may answer; [`on_upstream_request`] and
//! [`on_response`] apply what the admitted request carries on.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use super::basic_auth::AuthOutcome;
use super::compression::{Algorithm, ResponseCompression};
use super::connection_limit::ConcurrencyGuard;
use super::cors::Preflight;
use super::forward_auth::Verdict;
use super::headers::{Host, Vars};
use super::{Answer, Policy};
use crate::telemetry::policies::Outcome;

/// What the policies know of a request.
pub struct Facts<'a> {
    /// The real client address.
    pub client: IpAddr,
    pub req: &'a RequestHeader,
    /// The route's name, when one matched.
    pub route: Option<&'a str>,
    /// Whether the client reached lb over TLS.
    pub tls: bool,
    /// The request's id, when lb keeps one.
    pub request_id: Option<&'a HeaderValue>,
}

impl Facts<'_> {
    fn vars(&self) -> Vars<'_> {
        Vars {
            client_ip: self.client,
            request_id: self.request_id,
            host: Host::Of(self.req),
            route: self.route,
        }
    }
}

/// What the policies let a request carry on with.
#[derive(Default)]
pub struct Admitted {
    /// Headers forward auth copied, for the request to the backend.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// The request's places under connection limits, given back when it
    /// ends.
    pub guards: Vec<ConcurrencyGuard>,
    /// The coding the client accepts best among the first compression
    /// policy's, when one applies.
    pub coding: Option<Algorithm>,
}

/// Runs the request-time kinds of every policy of `chains`, in order: the
/// first that refuses answers. None: the request goes on.
pub async fn admit(
    chains: &[&[std::sync::Arc<Policy>]],
    facts: &Facts<'_>,
    admitted: &mut Admitted,
) -> Option<Answer> {
    for policy in chains.iter().flat_map(|chain| chain.iter()) {
        match policy.admit(facts, admitted).await {
            None => policy.counters.count(Outcome::Allowed),
            Some((outcome, answer)) => {
                policy.counters.count(outcome);
                return Some(answer);
            }
        }
    }
    None
}

impl Policy {
    async fn admit(&self, facts: &Facts<'_>, admitted: &mut Admitted) -> Option<(Outcome, Answer)> {
        if let Some(access) = &self.access {
            if !access.allows(facts.client) {
                return Some((Outcome::Denied, Answer::plain(403, "403 Forbidden\n")));
            }
        }
        if let Some(limit) = &self.connection_limit {
            match limit.acquire(facts) {
                Ok(guard) => admitted.guards.push(guard),
                Err(answer) => return Some((Outcome::Limited, answer)),
            }
        }
        if let Some(limit) = &self.rate_limit {
            // Boxed: a shared limit's wait on Redis would otherwise grow
            // every walk's future.
            let refused = if limit.is_shared() {
                Box::pin(limit.check_shared(facts)).await
            } else {
                limit.check(facts)
            };
            if let Some(answer) = refused {
                return Some((Outcome::Limited, answer));
            }
        }
        if let Some(cors) = &self.cors {
            match cors.preflight(facts.req) {
                Preflight::NotPreflight => {}
                Preflight::Allowed(resp) | Preflight::Refused(resp) => {
                    return Some((Outcome::Allowed, Answer::of(&resp)));
                }
            }
        }
        if let Some(auth) = &self.basic_auth {
            let authorization = facts.req.headers.get(http::header::AUTHORIZATION);
            // Boxed, like forward auth's below: rare and large, they would
            // otherwise grow every walk's future.
            if Box::pin(auth.check(authorization)).await != AuthOutcome::Allowed {
                let mut answer = Answer::plain(401, "401 Unauthorized\n");
                answer
                    .headers
                    .push((http::header::WWW_AUTHENTICATE, auth.challenge()));
                return Some((Outcome::Unauthorized, answer));
            }
        }
        if let Some(auth) = &self.forward_auth {
            match Box::pin(auth.check(facts.req, facts.client, facts.tls)).await {
                Verdict::Allowed(headers) => admitted.upstream_headers.extend(headers),
                Verdict::Refused(answer) => return Some((Outcome::Unauthorized, answer)),
                Verdict::Failed(why) if auth.fails_open() => {
                    log::warn!("policy {}: forward auth failed ({why}); on_error: allow lets the request on", self.name);
                }
                Verdict::Failed(why) => {
                    log::warn!(
                        "policy {}: forward auth failed ({why}); answering 503",
                        self.name
                    );
                    return Some((
                        Outcome::Unauthorized,
                        Answer::plain(
                            503,
                            "503 Service Unavailable: the auth service did not answer\n",
                        ),
                    ));
                }
            }
        }
        if let (Some(rule), None) = (&self.compression, admitted.coding) {
            admitted.coding = rule.choose(facts.req);
        }
        None
    }
}

/// Applies the request header rules of `chains` and what forward auth
/// copied, to the request lb sends to the backend (after lb's own
/// headers).
pub fn on_upstream_request(
    chains: &[&[std::sync::Arc<Policy>]],
    facts: &Facts<'_>,
    admitted: Option<&Admitted>,
    upstream: &mut RequestHeader,
) {
    let vars = facts.vars();
    for policy in chains.iter().flat_map(|chain| chain.iter()) {
        if let Some(edits) = &policy.request_headers {
            edits.apply(upstream, &vars);
        }
    }
    for (name, value) in admitted.iter().flat_map(|a| &a.upstream_headers) {
        let _ = upstream.insert_header(name.clone(), value.clone());
    }
}

/// Applies the response-time kinds of `chains` to the response lb sends
/// to the client: CORS headers (for the request's `origin`), header rules,
/// and the first compression rule, whose state for the body it returns
/// when it compresses.
pub fn on_response(
    chains: &[&[std::sync::Arc<Policy>]],
    vars: &Vars<'_>,
    origin: Option<&HeaderValue>,
    admitted: Option<&Admitted>,
    response: &mut ResponseHeader,
) -> Option<ResponseCompression> {
    let mut compression = None;
    let mut compressing = false;
    for policy in chains.iter().flat_map(|chain| chain.iter()) {
        if let Some(cors) = &policy.cors {
            cors.on_response(origin, response);
        }
        if let Some(edits) = &policy.response_headers {
            edits.apply(response, vars);
        }
        if let (Some(rule), false) = (&policy.compression, compressing) {
            compressing = true;
            compression = match admitted.and_then(|a| a.coding) {
                Some(coding) => rule.start(coding, response, false),
                None => {
                    rule.vary_only(response);
                    None
                }
            };
        }
    }
    compression
}
