//! `POST /v1/txn`: several operations on keys of one shard, applied atomically (one Raft
//! log entry, nothing in between), optionally only if some keys still have given
//! versions: etcd's compare-then-apply, and the atomic multi-get/multi-put of design §4.
//!
//! ```json
//! {"compare": [{"key": "stock", "version": 41}, {"key": "order:7", "version": 0}],
//!  "ops": [{"op": "incr", "key": "stock", "by": -1},
//!          {"op": "put", "key": "order:7", "value": "paid", "ttl_ms": 86400000},
//!          {"op": "get", "key": "stock"}]}
//! ```
//!
//! A compared `version` of 0 means "absent". If a compared key changed, nothing is applied
//! and the answer is 412 `compare_failed`. Otherwise 200 with one result per op, in order:
//! `{"version": N}` (put), `{"value": "...", "version": N}` or `{"value": null}` (get),
//! `{"deleted": bool}`, `{"value": N}` (incr), `{"length": N}` (append), or `{"error":
//! {...}}` for an op that failed alone (an incr of text), which, as in Redis, undoes
//! nothing else. Keys and values are JSON strings (UTF-8); a value read back that is not
//! UTF-8 comes as `value_base64`. Every key must be in one shard (a `{hash tag}` does
//! that), else 400 `cross_slot`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_core::{
    Command, Condition, Consistency, Error, Expiry, Record, Reply, WriteOp, WriteReply,
};

use super::AppState;
use super::auth::Caller;
use super::encoding::bytes_field;
use super::error::ApiError;
use super::kv::body_error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnRequest {
    #[serde(default)]
    compare: Vec<Compare>,
    #[serde(default)]
    ops: Vec<TxnOp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Compare {
    key: String,
    /// The version the key must still have; 0: it must be absent.
    version: u64,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum TxnOp {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
        #[serde(default)]
        ttl_ms: Option<u64>,
        #[serde(default)]
        if_absent: bool,
        #[serde(default)]
        if_version: Option<u64>,
    },
    Delete {
        key: String,
    },
    Incr {
        key: String,
        #[serde(default = "one")]
        by: i64,
    },
    Append {
        key: String,
        value: String,
    },
}

fn one() -> i64 {
    1
}

/// How one op's reply becomes its JSON result.
#[derive(Clone, Copy)]
enum Shape {
    Get,
    Put,
    Delete,
    Incr,
    Append,
}

fn key_bytes(key: String) -> Result<Bytes, ApiError> {
    if key.is_empty() {
        return Err(Error::EmptyKey.into());
    }
    Ok(Bytes::from(key))
}

fn to_write_op(op: TxnOp) -> Result<(WriteOp, Shape), ApiError> {
    Ok(match op {
        TxnOp::Get { key } => (
            WriteOp::Read {
                keys: vec![key_bytes(key)?],
            },
            Shape::Get,
        ),
        TxnOp::Put {
            key,
            value,
            ttl_ms,
            if_absent,
            if_version,
        } => {
            let condition = match (if_absent, if_version) {
                (true, Some(_)) => {
                    return Err(ApiError::invalid(
                        "a put takes if_absent or if_version, not both",
                    ));
                }
                (true, None) => Condition::IfAbsent,
                (false, Some(version)) => Condition::IfVersion(version),
                (false, None) => Condition::None,
            };
            let expiry = match ttl_ms {
                Some(ms) => super::params::checked_ttl("ttl_ms", ms)?,
                None => Expiry::Clear,
            };
            (
                WriteOp::Put {
                    key: key_bytes(key)?,
                    value: Bytes::from(value),
                    condition,
                    expiry,
                    return_old: false,
                },
                Shape::Put,
            )
        }
        TxnOp::Delete { key } => (
            WriteOp::Delete {
                keys: vec![key_bytes(key)?],
                if_version: None,
            },
            Shape::Delete,
        ),
        TxnOp::Incr { key, by } => (
            WriteOp::IncrBy {
                key: key_bytes(key)?,
                delta: by,
            },
            Shape::Incr,
        ),
        TxnOp::Append { key, value } => (
            WriteOp::Append {
                key: key_bytes(key)?,
                value: Bytes::from(value),
            },
            Shape::Append,
        ),
    })
}

fn error_json(err: &Error) -> Value {
    json!({ "error": { "code": err.code(), "message": err.to_string() } })
}

fn record_json(record: Option<Record>) -> Value {
    let Some(record) = record else {
        return json!({ "value": null });
    };
    let mut result = bytes_field("value", &record.value);
    result.insert("version".into(), json!(record.version));
    if let Some(at) = record.expire_at {
        result.insert("expire_at".into(), json!(at));
    }
    Value::Object(result)
}

fn result_json(shape: Shape, outcome: Result<WriteReply, Error>) -> Value {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(err) => return error_json(&err),
    };
    match (shape, reply) {
        (Shape::Get, WriteReply::Records(mut records)) if records.len() == 1 => {
            record_json(records.pop().flatten())
        }
        (
            Shape::Put,
            WriteReply::Put {
                version: Some(v), ..
            },
        ) => json!({ "version": v }),
        (Shape::Put, WriteReply::Put { version: None, .. }) => error_json(&Error::KeyExists),
        (Shape::Delete, WriteReply::Deleted(n)) => json!({ "deleted": n > 0 }),
        (Shape::Incr, WriteReply::Int(n)) => json!({ "value": n }),
        (Shape::Append, WriteReply::Len(n)) => json!({ "length": n }),
        (_, other) => error_json(&Error::Internal(format!(
            "unexpected reply in a transaction: {other:?}"
        ))),
    }
}

/// Parses a `POST /v1/txn` body into the transaction it asks for (no backend involved);
/// the fuzz target `http_params` drives it with arbitrary bytes.
#[doc(hidden)]
pub fn parse_txn_body(body: &[u8]) -> Result<WriteOp, ApiError> {
    parse_body(body).map(|(op, _)| op)
}

fn parse_body(body: &[u8]) -> Result<(WriteOp, Vec<Shape>), ApiError> {
    let request: TxnRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "expected {{\"compare\": [{{\"key\", \"version\"}}], \"ops\": [{{\"op\": \
             \"get|put|delete|incr|append\", \"key\", ...}}]}}: {e}"
        ))
    })?;
    if request.ops.is_empty() && request.compare.is_empty() {
        return Err(ApiError::invalid(
            "a transaction needs at least one op or compare",
        ));
    }
    let mut ops = Vec::with_capacity(request.ops.len());
    let mut shapes = Vec::with_capacity(request.ops.len());
    for op in request.ops {
        let (op, shape) = to_write_op(op)?;
        ops.push(op);
        shapes.push(shape);
    }
    let watched = request
        .compare
        .into_iter()
        .map(|c| {
            let expected = (c.version > 0).then_some(c.version);
            key_bytes(c.key).map(|key| (key, expected))
        })
        .collect::<Result<_, _>>()?;
    let op = WriteOp::Transaction { ops, watched };
    Ok((op, shapes))
}

pub(crate) async fn transaction(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|rejection| body_error(rejection, &headers, &state))?;
    let (op, shapes) = parse_body(&body)?;
    let reply = state
        .run(&caller, Command::Write(op), Consistency::Linearizable)
        .await?;
    match reply {
        Reply::Write(WriteReply::Transaction(None)) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "compare_failed",
            "a compared key no longer has the given version (0: absent); nothing was applied",
        )),
        Reply::Write(WriteReply::Transaction(Some(results))) => {
            let results: Vec<Value> = shapes
                .into_iter()
                .zip(results)
                .map(|(shape, outcome)| result_json(shape, outcome))
                .collect();
            Ok((StatusCode::OK, Json(json!({ "results": results }))))
        }
        other => Err(ApiError::unexpected_reply("transaction", &other)),
    }
}
