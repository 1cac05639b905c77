//! Translation between `shoal.v1` messages and core commands: each request message becomes
//! one `WriteOp` or `Command`, each reply one response or `OpResult`. Validation is the
//! same as HTTP's (key and value limits, one condition per put, positive ttl); semantics
//! live in the node.

use bytes::Bytes;
use shoal_core::{Condition, Error, Expiry, Limits, Record, WriteOp, WriteReply};
use shoal_proto::v1::{
    AppendRequest, DeleteRequest, IncrRequest, Op, OpResult, PutRequest, op, op_result,
};
use tonic::Status;

use super::status::{invalid, op_error, status_of};

/// What an op answers, so its reply can be shaped into an `OpResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Get,
    Put(Condition),
    Delete,
    Incr,
    Append,
}

pub(crate) fn key(key: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    limits.check_key(&key).map_err(|e| status_of(&e))?;
    Ok(key)
}

pub(crate) fn put_op(req: PutRequest, limits: &Limits) -> Result<(WriteOp, Condition), Status> {
    let condition = match (req.if_version, req.if_absent, req.if_present) {
        (None, false, false) => Condition::None,
        (Some(version), false, false) => Condition::IfVersion(version),
        (None, true, false) => Condition::IfAbsent,
        (None, false, true) => Condition::IfPresent,
        _ => {
            return Err(invalid(
                "a put takes at most one of if_version, if_absent and if_present",
            ));
        }
    };
    let expiry = match req.ttl_ms {
        0 => Expiry::Clear,
        ms => Expiry::after_millis(ms, crate::now_ms())
            .map_err(|e| invalid(format!("`ttl_ms` {e}")))?,
    };
    let key = key(req.key, limits)?;
    limits
        .check_value_len(req.value.len())
        .map_err(|e| status_of(&e))?;
    let op = WriteOp::Put {
        key,
        value: req.value,
        condition,
        expiry,
        return_old: false,
    };
    Ok((op, condition))
}

pub(crate) fn delete_op(req: DeleteRequest, limits: &Limits) -> Result<WriteOp, Status> {
    Ok(WriteOp::Delete {
        keys: vec![key(req.key, limits)?],
        if_version: req.if_version,
    })
}

pub(crate) fn incr_op(req: IncrRequest, limits: &Limits) -> Result<WriteOp, Status> {
    Ok(WriteOp::IncrBy {
        key: key(req.key, limits)?,
        delta: req.by.unwrap_or(1),
    })
}

pub(crate) fn append_op(req: AppendRequest, limits: &Limits) -> Result<WriteOp, Status> {
    let key = key(req.key, limits)?;
    limits
        .check_value_len(req.value.len())
        .map_err(|e| status_of(&e))?;
    Ok(WriteOp::Append {
        key,
        value: req.value,
    })
}

/// The `oneof` of `op`, or an error naming op `index` when it is unset.
fn inner(op: Op, index: usize) -> Result<op::Op, Status> {
    op.op.ok_or_else(|| {
        invalid(format!(
            "op {index} is empty: set one of get, put, delete, incr, append"
        ))
    })
}

/// An op of a transaction as the `WriteOp` it applies (a get reads inside it).
pub(crate) fn txn_op(op: Op, index: usize, limits: &Limits) -> Result<(WriteOp, Shape), Status> {
    Ok(match inner(op, index)? {
        op::Op::Get(get) => (
            WriteOp::Read {
                keys: vec![key(get.key, limits)?],
            },
            Shape::Get,
        ),
        op::Op::Put(put) => {
            let (op, condition) = put_op(put, limits)?;
            (op, Shape::Put(condition))
        }
        op::Op::Delete(delete) => (delete_op(delete, limits)?, Shape::Delete),
        op::Op::Incr(incr) => (incr_op(incr, limits)?, Shape::Incr),
        op::Op::Append(append) => (append_op(append, limits)?, Shape::Append),
    })
}

/// An op of a batch: a read stays a read (`None` write), so it can be served like a Get.
pub(crate) enum BatchOp {
    Get(Bytes),
    Write(WriteOp, Shape),
}

pub(crate) fn batch_op(op: Op, index: usize, limits: &Limits) -> Result<BatchOp, Status> {
    match inner(op, index)? {
        op::Op::Get(get) => Ok(BatchOp::Get(key(get.key, limits)?)),
        other => {
            let (write, shape) = txn_op(Op { op: Some(other) }, index, limits)?;
            Ok(BatchOp::Write(write, shape))
        }
    }
}

pub(crate) fn record(record: Option<Record>) -> shoal_proto::v1::Record {
    match record {
        Some(r) => shoal_proto::v1::Record {
            found: true,
            value: r.value,
            version: r.version,
            expire_at_ms: r.expire_at,
        },
        None => shoal_proto::v1::Record::default(),
    }
}

fn result(r: op_result::Result) -> OpResult {
    OpResult { result: Some(r) }
}

pub(crate) fn error_result(err: &Error) -> OpResult {
    result(op_result::Result::Error(op_error(err)))
}

/// One op's outcome as its `OpResult`.
pub(crate) fn op_result(shape: Shape, outcome: Result<WriteReply, Error>) -> OpResult {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(err) => return error_result(&err),
    };
    match (shape, reply) {
        (Shape::Get, WriteReply::Records(mut records)) if records.len() == 1 => {
            result(op_result::Result::Get(record(records.pop().flatten())))
        }
        (
            Shape::Put(_),
            WriteReply::Put {
                version: Some(v), ..
            },
        ) => result(op_result::Result::PutVersion(v)),
        (Shape::Put(condition), WriteReply::Put { version: None, .. }) => {
            error_result(&stopped_put(condition))
        }
        (Shape::Delete, WriteReply::Deleted(n)) => result(op_result::Result::Deleted(n > 0)),
        (Shape::Incr, WriteReply::Int(n)) => result(op_result::Result::IncrValue(n)),
        (Shape::Append, WriteReply::Len(n)) => result(op_result::Result::AppendLength(n)),
        (_, other) => error_result(&Error::Internal(format!(
            "unexpected reply to a {shape:?} op: {other:?}"
        ))),
    }
}

/// Why a put whose condition stopped it wrote nothing (`if_version` fails with its own
/// error; the flags stop it with no error from the node).
pub(crate) fn stopped_put(condition: Condition) -> Error {
    match condition {
        Condition::IfPresent => Error::KeyMissing,
        _ => Error::KeyExists,
    }
}
