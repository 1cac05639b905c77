//! Keeps web pages out: a page a user visits can make the browser send requests to a node
//! on the user's network (a "simple" request, sent without a CORS preflight). This refuses
//!
//! - a request whose `Origin` is not on the allow-list (`--http-allow-origin`); browsers
//!   send `Origin` on every cross-origin request that is not a plain GET, forms included;
//! - a write whose content type is one an HTML form can send (`text/plain`,
//!   `application/x-www-form-urlencoded`, `multipart/form-data`) when the request carries
//!   any header only browsers add (`Origin`, `Referer`, `Sec-Fetch-*`). Without those
//!   headers it is a program (curl sends `application/x-www-form-urlencoded` for
//!   `--data-binary`), and is served.
//!
//! Allowed origins get CORS answers (preflights included), so a page served from them can
//! use the API with any content type.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The origins allowed to call the API.
#[derive(Debug, Clone, Default)]
pub(crate) struct BrowserPolicy {
    allowed: Vec<String>,
    /// Refuse a `Host` that is a DNS name other than `localhost` (set without TLS): a page
    /// that rebinds its own name to a node's address is then same-origin with the node, and
    /// its reads carry no `Origin`; its `Host` is still its own name. Over TLS the browser
    /// refuses the node's certificate for that name instead.
    check_host: bool,
}

impl BrowserPolicy {
    pub(crate) fn new(allowed: &[String], check_host: bool) -> Arc<Self> {
        Arc::new(Self {
            allowed: allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            check_host,
        })
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.allowed.iter().any(|a| a == "*" || *a == origin)
    }
}

/// Content types an HTML form (or a no-preflight fetch) can send.
fn form_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // A fetch with a body and no content type is sent as text/plain.
        return true;
    };
    let Ok(value) = value.to_str() else {
        // Unreadable: assume the worst.
        return true;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
    )
}

/// Whether `host` (a `Host` header: name or address, optional port) is an IP address or
/// `localhost`, which no web page can rebind.
fn literal_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true; // An address without a port, IPv6 included.
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn from_a_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.contains_key(header::REFERER)
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("sec-fetch-"))
}

fn refuse(code: &'static str, message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, code, message).into_response()
}

pub(crate) async fn guard(
    State(policy): State<Arc<BrowserPolicy>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let headers = request.headers();
    if policy.check_host {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !host.is_empty() && !literal_host(host) {
            return refuse(
                "host_not_allowed",
                format!(
                    "this node has no TLS and answers only requests addressed to an IP address \
                     or localhost, not {host:?} (a web page can point any name at it); use the \
                     node's address, or give the node TLS"
                ),
            );
        }
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(not text)").to_string());
    let allowed_origin = match &origin {
        // `null` is what sandboxed frames and file:// pages send: never allowed by name.
        Some(origin) if origin != "null" && policy.allows(origin) => Some(origin.clone()),
        Some(origin) => {
            return refuse(
                "cross_origin",
                format!(
                    "requests from web pages at {origin} are refused; to allow that origin, \
                     start the node with --http-allow-origin {origin}"
                ),
            );
        }
        None => None,
    };
    let write = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if write && allowed_origin.is_none() && from_a_browser(headers) && form_content_type(headers) {
        return refuse(
            "form_content_type",
            "a browser's write with a content type an HTML form can send is refused (cross-site \
             request forgery); send application/octet-stream or application/json, or allow \
             the page's origin with --http-allow-origin"
                .to_string(),
        );
    }
    let Some(origin) = allowed_origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let requested_headers = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
        );
        if let Some(requested) = requested_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-shoal-version, x-shoal-expire-at, x-shoal-leader"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn form_types_and_browser_markers_are_recognised() {
        assert!(form_content_type(&headers(&[(
            "content-type",
            "text/plain;charset=UTF-8"
        )])));
        assert!(form_content_type(&headers(&[(
            "content-type",
            "Multipart/Form-Data; boundary=x"
        )])));
        assert!(form_content_type(&headers(&[])));
        assert!(!form_content_type(&headers(&[(
            "content-type",
            "application/json"
        )])));
        assert!(from_a_browser(&headers(&[(
            "sec-fetch-site",
            "cross-site"
        )])));
        assert!(from_a_browser(&headers(&[(
            "referer",
            "http://evil.example/"
        )])));
        assert!(!from_a_browser(&headers(&[("user-agent", "curl/8")])));
    }

    #[test]
    fn only_addresses_and_localhost_are_literal_hosts() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "::1",
            "10.0.0.7",
        ] {
            assert!(literal_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!literal_host(host), "{host}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let policy = BrowserPolicy::new(&["https://App.example/".to_string()], false);
        assert!(policy.allows("https://app.example"));
        assert!(!policy.allows("https://app.example.evil"));
        assert!(!policy.allows("http://app.example"));
        assert!(BrowserPolicy::new(&["*".to_string()], false).allows("http://anything"));
    }
}
