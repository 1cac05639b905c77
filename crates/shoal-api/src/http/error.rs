//! HTTP rendering of errors: the one place a `shoal_core::Error` becomes a status code and
//! a JSON body `{"error": {"code": ..., "message": ...}}`, plus the errors only HTTP has
//! (unknown route, wrong method, bad query, oversized body).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shoal_core::Error;

/// Header naming the shard leader when this node is not it, for smart clients.
pub const LEADER_HEADER: &str = "x-shoal-leader";

/// An error response, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code; for core errors exactly `Error::code()`.
    pub code: &'static str,
    pub message: String,
    /// Transient condition: tell the client to retry after a second.
    pub retry_after: bool,
    /// The node that leads the shard, when known and not us.
    pub leader: Option<u64>,
    /// For `version_mismatch`: the key's current version (`None` = absent), so a
    /// compare-and-set loop can retry without another read.
    pub actual_version: Option<Option<u64>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: false,
            leader: None,
            actual_version: None,
        }
    }

    /// A malformed request: bad query parameter, path or cursor.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into()).into()
    }

    /// The request body exceeds the value size limit (axum refused to buffer it).
    pub fn body_too_large(limit: usize, content_length: Option<u64>) -> Self {
        let message = match content_length {
            Some(len) => Error::ValueTooLarge {
                len: len as usize,
                limit,
            }
            .to_string(),
            None => format!(
                "request body is over the value size limit of {limit} bytes (--max-value-bytes)"
            ),
        };
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", message)
    }

    pub fn unknown_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!(
                "no such endpoint: {method} {path}; endpoints are /v1/kv/{{key}}, /v1/kv, \
                 /v1/txn, /v1/cluster and /health"
            ),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not supported on {path}; see the Allow header"),
        )
    }

    /// The node answered with a reply of the wrong shape: a bug, never the client's fault.
    pub fn unexpected_reply(what: &str, reply: &impl std::fmt::Debug) -> Self {
        Error::Internal(format!("unexpected reply to {what}: {reply:?}")).into()
    }
}

/// The status every core error maps to.
pub fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::EmptyKey | Error::KeyTooLarge { .. } | Error::Invalid(_) | Error::CrossShard => {
            StatusCode::BAD_REQUEST
        }
        // The value a command would operate on has the wrong type: the request cannot
        // succeed as sent, so it is the client's error, not the server's.
        Error::NotInteger | Error::NotFloat | Error::Overflow | Error::NanOrInfinity => {
            StatusCode::BAD_REQUEST
        }
        Error::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::NoSuchKey => StatusCode::NOT_FOUND,
        Error::VersionMismatch { .. } | Error::KeyExists | Error::KeyMissing => {
            StatusCode::PRECONDITION_FAILED
        }
        Error::Disabled(..) | Error::Denied(_) => StatusCode::FORBIDDEN,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Removed { .. } | Error::Replaced { .. } => StatusCode::GONE,
        // NotLeader should be rare over HTTP (the node forwards to the leader); when it
        // does surface it is transient, so it is a 503 with a leader hint, not a 500.
        Error::NoLeader { .. }
        | Error::NotLeader { .. }
        | Error::Overloaded { .. }
        | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        // The write may have been applied: a gateway timeout says "outcome unknown".
        Error::Timeout(_) | Error::Indeterminate(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::Storage(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = status_of(&err);
        let mut api = ApiError::new(status, err.code(), err.to_string());
        api.retry_after = status == StatusCode::SERVICE_UNAVAILABLE;
        match err {
            Error::NotLeader { leader, .. } => api.leader = Some(leader),
            Error::VersionMismatch { actual, .. } => api.actual_version = Some(actual),
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(actual) = self.actual_version {
            error["actual_version"] = json!(actual);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        if self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(leader) = self.leader {
            headers.insert(LEADER_HEADER, HeaderValue::from(leader));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"shoal\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<Error> {
        vec![
            Error::EmptyKey,
            Error::KeyTooLarge { len: 2, limit: 1 },
            Error::ValueTooLarge { len: 2, limit: 1 },
            Error::CrossShard,
            Error::NotInteger,
            Error::NotFloat,
            Error::Overflow,
            Error::NanOrInfinity,
            Error::NoSuchKey,
            Error::VersionMismatch {
                expected: 3,
                actual: Some(5),
            },
            Error::KeyExists,
            Error::KeyMissing,
            Error::Invalid("x".into()),
            Error::Disabled("FLUSHALL".into(), "start with --allow-flush".into()),
            Error::NoLeader { shard: 1 },
            Error::NotLeader {
                shard: 1,
                leader: 7,
            },
            Error::Timeout(100),
            Error::ShuttingDown,
            Error::Overloaded {
                shard: 1,
                limit: 10,
            },
            Error::DiskFull {
                node: 2,
                free_mib: 10,
                threshold_mib: 512,
                reserve_mib: 512,
                what: "writes".into(),
            },
            Error::Storage("disk".into()),
            Error::Internal("bug".into()),
        ]
    }

    #[test]
    fn statuses_follow_the_documented_table() {
        use StatusCode as S;
        let expected = [
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::PAYLOAD_TOO_LARGE,
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::NOT_FOUND,
            S::PRECONDITION_FAILED,
            S::PRECONDITION_FAILED,
            S::PRECONDITION_FAILED,
            S::BAD_REQUEST,
            S::FORBIDDEN,
            S::SERVICE_UNAVAILABLE,
            S::SERVICE_UNAVAILABLE,
            S::GATEWAY_TIMEOUT,
            S::SERVICE_UNAVAILABLE,
            S::SERVICE_UNAVAILABLE,
            S::INSUFFICIENT_STORAGE,
            S::INTERNAL_SERVER_ERROR,
            S::INTERNAL_SERVER_ERROR,
        ];
        let errors = every_error();
        assert_eq!(errors.len(), expected.len());
        for (err, status) in errors.iter().zip(expected) {
            assert_eq!(status_of(err), status, "{err:?}");
        }
    }

    #[test]
    fn only_unavailable_errors_ask_for_a_retry() {
        for err in every_error() {
            let api = ApiError::from(err.clone());
            assert_eq!(
                api.retry_after,
                api.status == StatusCode::SERVICE_UNAVAILABLE,
                "{err:?}"
            );
            assert_eq!(api.code, err.code());
            assert_eq!(api.message, err.to_string());
        }
    }

    #[tokio::test]
    async fn renders_json_body_and_headers() {
        let response = ApiError::from(Error::NoLeader { shard: 3 }).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "no_leader");
        assert_eq!(
            body["error"]["message"],
            "shard 3 has no leader right now; retry shortly"
        );

        let response = ApiError::from(Error::NotLeader {
            shard: 3,
            leader: 9,
        })
        .into_response();
        assert_eq!(response.headers()[LEADER_HEADER], "9");
    }

    #[tokio::test]
    async fn version_mismatch_reports_the_actual_version() {
        let response = ApiError::from(Error::VersionMismatch {
            expected: 3,
            actual: None,
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "version_mismatch");
        assert_eq!(
            body["error"]["message"],
            "version mismatch: expected 3, key is at absent"
        );
        assert_eq!(body["error"]["actual_version"], serde_json::Value::Null);
        assert!(
            body["error"]
                .as_object()
                .unwrap()
                .contains_key("actual_version")
        );
    }
}
