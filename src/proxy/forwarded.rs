//! The forwarding headers lb adds for the backend: `X-Forwarded-For` (the
//! client's address appended to what earlier proxies wrote, built without
//! the formatting machinery: it runs for every request), `-Proto` and
//! `-Host`.

use http::HeaderValue;

/// `X-Forwarded-For` with `client` appended, built in a stack buffer (this
/// runs for every request).
pub(super) fn forwarded_for(
    previous: Option<&HeaderValue>,
    client: std::net::IpAddr,
) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = match previous {
        // A long chain goes through the heap; the common case does not.
        Some(previous) if previous.len() > 16 => {
            let mut value = previous.as_bytes().to_vec();
            let _ = write!(value, ", {client}");
            return HeaderValue::from_bytes(&value).unwrap_or_else(|_| previous.clone());
        }
        Some(previous) => cursor
            .write_all(previous.as_bytes())
            .and_then(|()| cursor.write_all(b", "))
            .and_then(|()| write_ip(&mut cursor, client)),
        None => write_ip(&mut cursor, client),
    };
    let len = cursor.position() as usize;
    match written {
        Ok(()) => {
            HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
        Err(_) => HeaderValue::from_static("-"),
    }
}

/// Writes `ip` as text; an IPv4 address digit by digit, without the
/// formatting machinery `Display` goes through (a tenth of the cost).
fn write_ip(out: &mut impl std::io::Write, ip: std::net::IpAddr) -> std::io::Result<()> {
    let std::net::IpAddr::V4(v4) = ip else {
        return write!(out, "{ip}");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.write_all(&text[..len])
}

/// Forwarding headers an untrusted client may send to pass for a proxy:
/// lb removes these (it sets `X-Forwarded-For`, `-Proto` and `-Host`
/// itself), and replaces a `Forwarded`. Names made once: removing by a
/// `&str` parses the name on every call (1.2k instructions a request for
/// the four, bench/instructions.sh).
const SPOOFABLE: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-real-ip"),
    http::HeaderName::from_static("true-client-ip"),
    http::HeaderName::from_static("x-forwarded-port"),
];

/// Removes the spoofable headers an untrusted client sent; whether it
/// sent a `Forwarded`. One pass over the request's names, which most
/// requests end without removing anything.
fn remove_spoofable(request: &mut pingora::http::RequestHeader) -> bool {
    let mut forwarded = false;
    let mut spoofed = [false; 3];
    for name in request.headers.keys() {
        forwarded |= name == http::header::FORWARDED;
        for (found, spoofable) in spoofed.iter_mut().zip(&SPOOFABLE) {
            *found |= name == spoofable;
        }
    }
    for (found, name) in spoofed.iter().zip(&SPOOFABLE) {
        if *found {
            request.remove_header(name);
        }
    }
    forwarded
}

/// Adds `X-Forwarded-For`, `-Proto` and `-Host` to the request for the
/// backend (`headers.forwarded`). From a trusted proxy, its
/// `X-Forwarded-For` is kept and its address appended; from anyone else,
/// lb's own replaces the client's (or is appended to it with
/// `headers.client_forwarded_for: append`), and `X-Real-IP`,
/// `True-Client-IP`, `X-Forwarded-Port` are removed, and a `Forwarded` is
/// replaced by lb's own: no spoofed header reaches a backend as if lb had
/// set it.
pub(super) fn add_headers(
    session: &pingora::proxy::Session,
    ctx: &super::RequestCtx,
    settings: &crate::config::HeadersConfig,
    upstream_request: &mut pingora::http::RequestHeader,
) -> pingora::Result<()> {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| crate::policy::client::canonical(a.ip()));
    let keep_chain = ctx.trusted_peer || settings.append_client_forwarded_for;
    if let Some(peer) = peer {
        let previous = upstream_request
            .headers
            .get("x-forwarded-for")
            .filter(|_| keep_chain);
        let forwarded_for = forwarded_for(previous, peer);
        upstream_request.insert_header("X-Forwarded-For", forwarded_for)?;
    }
    let proto = if super::access::is_tls(session) {
        "https"
    } else {
        "http"
    };
    if !ctx.trusted_peer && remove_spoofable(upstream_request) {
        replace_forwarded(upstream_request, ctx.client.or(peer), proto)?;
    }
    upstream_request.insert_header("X-Forwarded-Proto", HeaderValue::from_static(proto))?;
    let host = upstream_request
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| {
            let authority = upstream_request.uri.authority()?;
            http::HeaderValue::from_str(authority.as_str()).ok()
        });
    if let Some(host) = host {
        upstream_request.insert_header("X-Forwarded-Host", host)?;
    }
    Ok(())
}

/// Puts lb's own `Forwarded` (RFC 7239) in place of an untrusted client's.
fn replace_forwarded(
    upstream_request: &mut pingora::http::RequestHeader,
    client: Option<std::net::IpAddr>,
    proto: &str,
) -> pingora::Result<()> {
    let value = match client {
        Some(std::net::IpAddr::V6(ip)) => format!("for=\"[{ip}]\";proto={proto}"),
        Some(ip) => format!("for={ip};proto={proto}"),
        None => format!("for=unknown;proto={proto}"),
    };
    let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("for=unknown"));
    upstream_request.insert_header(http::header::FORWARDED, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(forwarded_for(None, ip), "10.0.0.1");
        let short = HeaderValue::from_static("1.2.3.4");
        assert_eq!(forwarded_for(Some(&short), ip), "1.2.3.4, 10.0.0.1");
        let long = HeaderValue::from_static("203.0.113.7, 198.51.100.2, 192.0.2.44");
        assert_eq!(
            forwarded_for(Some(&long), ip),
            "203.0.113.7, 198.51.100.2, 192.0.2.44, 10.0.0.1"
        );
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(forwarded_for(Some(&short), v6), "1.2.3.4, 2001:db8::1");
    }

    #[test]
    fn ip_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }
}
