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
}

impl BrowserPolicy {
    pub(crate) fn new(allowed: &[String]) -> Arc<Self> {
        Arc::new(Self {
            allowed: allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
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
    let essence = value
        .to_str()
        .unwrap_or("")
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
    fn origins_match_exactly_or_by_wildcard() {
        let policy = BrowserPolicy::new(&["https://App.example/".to_string()]);
        assert!(policy.allows("https://app.example"));
        assert!(!policy.allows("https://app.example.evil"));
        assert!(!policy.allows("http://app.example"));
        assert!(BrowserPolicy::new(&["*".to_string()]).allows("http://anything"));
    }
}
