//! Single-key endpoints: `GET`, `PUT`/`POST` and `DELETE /v1/kv/{key}`.
//!
//! Each handler parses the path and query, builds one `Command`, and renders the `Reply`;
//! semantics (conditions, expiry, versions) live in the node, not here.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shoal_core::{Command, Condition, Consistency, Error, Record, Reply, WriteOp, WriteReply};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::params::{DeleteParams, PutParams, ReadParams, key_from_path};

/// Response header carrying the key's version.
pub const VERSION_HEADER: &str = "x-shoal-version";
/// Response header carrying the key's expiry in Unix milliseconds, when it has one.
pub const EXPIRE_AT_HEADER: &str = "x-shoal-expire-at";

pub(crate) async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), &state.limits)?;
    let params = ReadParams::parse(uri.query())?;
    match state
        .run(&caller, Command::Get { key }, params.consistency)
        .await?
    {
        Reply::Record(Some(record)) => Ok(value_response(record)),
        Reply::Record(None) => Err(Error::NoSuchKey.into()),
        other => Err(ApiError::unexpected_reply("get", &other)),
    }
}

fn value_response(record: Record) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(VERSION_HEADER, HeaderValue::from(record.version));
    if let Some(at) = record.expire_at {
        headers.insert(EXPIRE_AT_HEADER, HeaderValue::from(at));
    }
    (headers, record.value).into_response()
}

pub(crate) async fn put_key(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), &state.limits)?;
    let params = PutParams::parse(uri.query())?;
    // A small body is a slice of hyper's read buffer; the node copies it out before it
    // enters the log (see the router), so it is passed on as is.
    let value = body.map_err(|rejection| body_error(rejection, &headers, &state))?;
    state.limits.check_value_len(value.len())?;
    let op = WriteOp::Put {
        key,
        value,
        condition: params.condition,
        expiry: params.expiry,
        return_old: false,
    };
    match state
        .run(&caller, Command::Write(op), Consistency::Linearizable)
        .await?
    {
        Reply::Write(WriteReply::Put {
            version: Some(version),
            ..
        }) => Ok((
            [(VERSION_HEADER, HeaderValue::from(version))],
            Json(json!({ "version": version })),
        )
            .into_response()),
        // Only if_absent can stop a put without an error (if_version mismatches are errors).
        Reply::Write(WriteReply::Put { version: None, .. })
            if params.condition == Condition::IfAbsent =>
        {
            Err(Error::KeyExists.into())
        }
        other => Err(ApiError::unexpected_reply("put", &other)),
    }
}

/// Why the body could not be read: over the size limit (413), or a broken upload (400).
pub(super) fn body_error(
    rejection: BytesRejection,
    headers: &HeaderMap,
    state: &AppState,
) -> ApiError {
    if let Some(timed_out) = find_source::<super::server::BodyTimedOut>(&rejection) {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            timed_out.to_string(),
        )
    } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        ApiError::body_too_large(state.limits.max_value_bytes, content_length)
    } else {
        ApiError::invalid(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// The first error of type `T` in `err`'s chain of sources.
fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

pub(crate) async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), &state.limits)?;
    let params = DeleteParams::parse(uri.query())?;
    let op = WriteOp::Delete {
        keys: vec![key],
        if_version: params.if_version,
    };
    match state
        .run(&caller, Command::Write(op), Consistency::Linearizable)
        .await?
    {
        Reply::Write(WriteReply::Deleted(0)) => Err(Error::NoSuchKey.into()),
        Reply::Write(WriteReply::Deleted(_)) => {
            Ok(Json(json!({ "deleted": true })).into_response())
        }
        other => Err(ApiError::unexpected_reply("delete", &other)),
    }
}
