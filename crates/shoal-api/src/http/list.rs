//! `GET /v1/kv`: a page of keys (with version and expiry, never values) in slot order,
//! with an opaque cursor for the next page.
//!
//! One node scan looks at a bounded number of keys, so it may return a short (even empty)
//! page that is not the end. We call the node a few times to fill the page, but a page
//! may still come back short: only `"next_cursor": null` means the listing is finished.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use bytes::Bytes;
use serde_json::{Value, json};
use shoal_core::{Command, Record, Reply};

use super::AppState;
use super::auth::Caller;
use super::cursor::encode_cursor;
use super::encoding::bytes_field;
use super::error::ApiError;
use super::params::ListParams;

pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let config = &state.config;
    let params = ListParams::parse(
        uri.query(),
        config.default_list_limit,
        config.max_list_limit,
    )?;
    let mut items = Vec::new();
    let mut next = Some(params.cursor);
    let mut calls = 0;
    while let Some(cursor) = next.take() {
        let command = Command::Scan {
            cursor,
            limit: params.limit - items.len(),
            prefix: params.prefix.clone(),
            with_values: false,
        };
        calls += 1;
        match state.run(&caller, command, params.consistency).await? {
            Reply::Scan {
                entries,
                next: after,
            } => {
                items.extend(
                    entries
                        .iter()
                        .map(|(key, record)| item(key, record.as_ref())),
                );
                next = after;
            }
            other => return Err(ApiError::unexpected_reply("scan", &other)),
        }
        if items.len() >= params.limit || calls >= config.max_scan_calls.max(1) {
            break;
        }
    }
    Ok(Json(
        json!({ "items": items, "next_cursor": next.as_ref().map(encode_cursor) }),
    ))
}

/// One listed key: `key` when it is UTF-8, else `key_base64`, so JSON stays lossless.
fn item(key: &Bytes, record: Option<&Record>) -> Value {
    let mut item = bytes_field("key", key);
    item.insert("version".into(), json!(record.map(|r| r.version)));
    item.insert("expire_at".into(), json!(record.and_then(|r| r.expire_at)));
    Value::Object(item)
}
