//! A plain HTTP listener that sends every client to HTTPS: `308 Permanent
//! Redirect` to the same host, path and query on the TLS port. 308, not
//! 301, so that a POST stays a POST (RFC 9110, 15.4.9).

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::routing::host_without_port;

/// The app of a `redirect_https` listener.
pub struct RedirectToHttps {
    /// The HTTPS port; left out of the URL when it is 443.
    pub port: u16,
}

#[async_trait]
impl ServeHttp for RedirectToHttps {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let host = request
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri.host())
            .map(host_without_port)
            .filter(|h| !h.is_empty());
        let Some(host) = host else {
            return answer(StatusCode::BAD_REQUEST, None, "a Host header is needed\n");
        };
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = if self.port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{}{path}", self.port)
        };
        answer(
            StatusCode::PERMANENT_REDIRECT,
            Some(location),
            "This site is served over HTTPS.\n",
        )
    }
}

fn answer(status: StatusCode, location: Option<String>, body: &str) -> Response<Vec<u8>> {
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(location) = location {
        response = response.header(header::LOCATION, location);
    }
    response.body(body.as_bytes().to_vec()).unwrap_or_else(|_| {
        let mut refused = Response::new(Vec::new());
        *refused.status_mut() = StatusCode::BAD_REQUEST;
        refused
    })
}

#[cfg(test)]
mod tests {
    use crate::routing::host_without_port;

    #[test]
    fn ports_are_taken_off_hosts() {
        assert_eq!(host_without_port("example.com:80"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
