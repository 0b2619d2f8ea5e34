//! `forward_auth:` (nginx `auth_request`, Traefik ForwardAuth): before a
//! request goes on, lb asks an auth service. The subrequest carries the
//! original method and headers (no body), with `X-Forwarded-Method`,
//! `-Proto`, `-Host`, `-Uri` and `-For` saying what the client asked for.
//! A 2xx lets the request on, with `copy_headers` of the answer copied
//! onto it; any other status goes back to the client as the auth service
//! gave it (a 401 with its `WWW-Authenticate`, a 302 to a login page); no
//! answer within `timeout` is a 503, or lets the request on with
//! `on_error: allow`.
//!
//! The subrequest goes through a Pingora HTTP connector of its own, which
//! keeps connections to the auth service alive between requests.

use std::net::IpAddr;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use super::Answer;
use crate::config::ForwardAuthConfig;

/// Most bytes of an auth service's refusal lb passes on to the client.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Request headers the subrequest does not carry: hop-by-hop ones, and
/// those of a body it does not send.
const NOT_FORWARDED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "trailer",
];

/// A compiled forward-auth policy.
pub struct ForwardAuth {
    config: ForwardAuthConfig,
    host: HeaderValue,
}

/// What the auth service said.
pub enum Verdict {
    /// Go on, with these headers added to the request to the backend.
    Allowed(Vec<(HeaderName, HeaderValue)>),
    /// Answer the client with the auth service's own answer.
    Refused(Answer),
    /// No usable answer (refused connection, timeout, broken reply).
    Failed(String),
}

fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

impl ForwardAuth {
    pub fn new(config: &ForwardAuthConfig) -> ForwardAuth {
        ForwardAuth {
            host: HeaderValue::from_str(&config.host)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            config: config.clone(),
        }
    }

    /// Whether a failure lets the request on.
    pub fn fails_open(&self) -> bool {
        self.config.fail_open
    }

    /// Asks the auth service about `req`, from `client`.
    pub async fn check(&self, req: &RequestHeader, client: IpAddr, tls: bool) -> Verdict {
        let subrequest = match self.subrequest(req, client, tls) {
            Ok(subrequest) => subrequest,
            Err(e) => return Verdict::Failed(e.to_string()),
        };
        match tokio::time::timeout(self.config.timeout, self.exchange(subrequest)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => Verdict::Failed(e.to_string()),
            Err(_) => Verdict::Failed(format!(
                "no answer within {}",
                humantime::format_duration(self.config.timeout)
            )),
        }
    }

    fn subrequest(
        &self,
        req: &RequestHeader,
        client: IpAddr,
        tls: bool,
    ) -> pingora::Result<RequestHeader> {
        let mut sub = RequestHeader::build(req.method.clone(), self.config.path.as_bytes(), None)?;
        for (name, value) in req.headers.iter() {
            if !NOT_FORWARDED.contains(&name.as_str()) {
                sub.append_header(name.clone(), value.clone())?;
            }
        }
        let original_host = req
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| req.uri.host().and_then(|h| HeaderValue::from_str(h).ok()));
        sub.insert_header(http::header::HOST, self.host.clone())?;
        sub.insert_header("X-Forwarded-Method", req.method.as_str())?;
        sub.insert_header("X-Forwarded-Proto", if tls { "https" } else { "http" })?;
        if let Some(host) = original_host {
            sub.insert_header("X-Forwarded-Host", host)?;
        }
        let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
        sub.insert_header("X-Forwarded-Uri", uri)?;
        sub.insert_header("X-Forwarded-For", client.to_string())?;
        Ok(sub)
    }

    async fn exchange(&self, subrequest: RequestHeader) -> pingora::Result<Verdict> {
        let mut peer = HttpPeer::new(self.config.addr, false, String::new());
        peer.options.connection_timeout = Some(self.config.timeout);
        peer.options.read_timeout = Some(self.config.timeout);
        peer.options.write_timeout = Some(self.config.timeout);
        let (mut session, _) = connector().get_http_session(&peer).await?;
        session.write_request_header(Box::new(subrequest)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let Some(answer) = session.response_header().cloned() else {
            return pingora::Error::e_explain(pingora::ErrorType::InvalidHTTPHeader, "no answer");
        };
        if answer.status.is_success() {
            while session.read_response_body().await?.is_some() {}
            connector().release_http_session(session, &peer, None).await;
            let copied = self
                .config
                .copy_headers
                .iter()
                .flat_map(|name| {
                    answer
                        .headers
                        .get_all(name)
                        .iter()
                        .map(move |value| (name.clone(), value.clone()))
                })
                .collect();
            return Ok(Verdict::Allowed(copied));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await? {
            if body.len() + chunk.len() > MAX_ANSWER_BODY {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Verdict::Refused(refusal(&answer, body.freeze())))
    }
}

/// The client's copy of the auth service's refusal: its status, its
/// end-to-end headers and its body.
fn refusal(answer: &pingora::http::ResponseHeader, body: Bytes) -> Answer {
    let headers = answer
        .headers
        .iter()
        .filter(|(name, _)| {
            !NOT_FORWARDED.contains(&name.as_str()) && name.as_str() != "content-length"
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Answer {
        status: answer.status.as_u16(),
        headers,
        body,
        close: false,
    }
}
