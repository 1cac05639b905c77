//! The `shoal.v1.KV` service: each call builds the same `Command` the HTTP and RESP front
//! ends build and renders the `Reply`; nothing here decides semantics.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::join_all;
use shoal_core::command::ScanCursor;
use shoal_core::{Command, Consistency, Error, Reply, WriteOp, WriteReply};
use shoal_proto::v1::kv_server::Kv;
use shoal_proto::v1::{
    AppendRequest, AppendResponse, BatchRequest, BatchResponse, DeleteRequest, DeleteResponse,
    GetRequest, GetResponse, IncrRequest, IncrResponse, KeyValue, PutRequest, PutResponse,
    ScanRequest, ScanResponse, TxnRequest, TxnResponse, op_result,
};
use shoal_proto::{EPOCH_METADATA, LEADER_METADATA};
use tonic::{Code, Request, Response, Status};

use super::GrpcConfig;
use super::ops::{self, BatchOp, Shape};
use super::status::{invalid, status_of, unexpected_reply, with_reason};
use crate::backend::Backend;
use crate::http::cursor::{decode_cursor, encode_cursor};
use shoal_core::auth::Grant;

/// The KV service over one backend.
#[derive(Clone)]
pub struct KvService {
    backend: Arc<dyn Backend>,
    config: GrpcConfig,
}

type ScanPages = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send>>;

impl KvService {
    pub fn new(backend: Arc<dyn Backend>, config: GrpcConfig) -> Self {
        Self { backend, config }
    }

    async fn run(
        &self,
        grant: &Grant,
        command: Command,
        consistency: Consistency,
    ) -> Result<Reply, Status> {
        allowed(grant, &command)?;
        if let Some(answer) = self.backend.try_read_now(&command, consistency) {
            return answer.map_err(|e| status_of(&e));
        }
        self.backend
            .execute(command, consistency)
            .await
            .map_err(|e| status_of(&e))
    }

    async fn write(&self, grant: &Grant, op: WriteOp) -> Result<WriteReply, Status> {
        match self
            .run(grant, Command::Write(op), Consistency::Linearizable)
            .await?
        {
            Reply::Write(reply) => Ok(reply),
            other => Err(unexpected_reply("a write", &other)),
        }
    }

    /// `message` as a response carrying the node's map epoch, and naming the shard's leader
    /// when it is another node, so a client can go there directly next time.
    fn respond<T>(&self, key: &[u8], message: T) -> Response<T> {
        let mut response = Response::new(message);
        let epoch = self.backend.map_epoch();
        if epoch > 0 {
            let value = epoch
                .to_string()
                .parse()
                .expect("digits are valid metadata");
            response.metadata_mut().insert(EPOCH_METADATA, value);
        }
        let shard = self.backend.layout().shard_of_key(key);
        if let Some(leader) = self.backend.leader_of(shard)
            && leader != self.backend.id()
        {
            let value = leader
                .to_string()
                .parse()
                .expect("digits are valid metadata");
            response.metadata_mut().insert(LEADER_METADATA, value);
        }
        response
    }
}

fn consistency(value: i32) -> Result<Consistency, Status> {
    match shoal_proto::v1::Consistency::try_from(value) {
        Ok(shoal_proto::v1::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(shoal_proto::v1::Consistency::Stale) => Ok(Consistency::Stale),
        Err(_) => Err(invalid(format!(
            "consistency {value} is unknown: use CONSISTENCY_LINEARIZABLE or CONSISTENCY_STALE"
        ))),
    }
}

/// A scan's starting point: a previous page's cursor, or the first slot.
fn cursor(text: &str) -> Result<ScanCursor, Status> {
    if text.is_empty() {
        return Ok(ScanCursor::default());
    }
    decode_cursor(text).map_err(|e| invalid(format!("cursor: {e}")))
}

fn entries(entries: Vec<(Bytes, Option<shoal_core::Record>)>) -> Vec<KeyValue> {
    entries
        .into_iter()
        .map(|(key, record)| match record {
            Some(r) => KeyValue {
                key,
                value: r.value,
                version: r.version,
                expire_at_ms: r.expire_at,
            },
            None => KeyValue {
                key,
                ..KeyValue::default()
            },
        })
        .collect()
}

/// Whether `grant` allows `command`, as a PERMISSION_DENIED status.
fn allowed(grant: &Grant, command: &Command) -> Result<(), Status> {
    grant
        .check(command)
        .map_err(|denied| status_of(&Error::from(denied)))
}

/// A scan's reach, for the permission check: the keys under the request's prefix.
fn listing(request: &ScanRequest) -> Command {
    Command::Scan {
        cursor: ScanCursor::default(),
        limit: 0,
        prefix: (!request.prefix.is_empty()).then(|| request.prefix.clone()),
        with_values: false,
    }
}

/// One node scan from `cursor`: its entries and where the next one starts.
async fn scan_once(
    backend: &dyn Backend,
    cursor: ScanCursor,
    limit: usize,
    request: &ScanRequest,
    consistency: Consistency,
) -> Result<(Vec<KeyValue>, Option<ScanCursor>), Status> {
    let command = Command::Scan {
        cursor,
        limit,
        prefix: (!request.prefix.is_empty()).then(|| request.prefix.clone()),
        with_values: request.with_values,
    };
    match backend.execute(command, consistency).await {
        Ok(Reply::Scan {
            entries: found,
            next,
        }) => Ok((entries(found), next)),
        Ok(other) => Err(unexpected_reply("scan", &other)),
        Err(err) => Err(status_of(&err)),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let request = request.into_inner();
        let key = ops::key(request.key, &self.config.limits)?;
        let consistency = consistency(request.consistency)?;
        let reply = self
            .run(&grant, Command::Get { key: key.clone() }, consistency)
            .await?;
        match reply {
            Reply::Record(Some(record)) => Ok(self.respond(
                &key,
                GetResponse {
                    value: record.value,
                    version: record.version,
                    expire_at_ms: record.expire_at,
                },
            )),
            Reply::Record(None) => Err(status_of(&Error::NoSuchKey)),
            other => Err(unexpected_reply("get", &other)),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let (op, condition) = ops::put_op(request.into_inner(), &self.config.limits)?;
        let key = op.keys()[0].clone();
        match self.write(&grant, op).await? {
            WriteReply::Put {
                version: Some(version),
                ..
            } => Ok(self.respond(&key, PutResponse { version })),
            WriteReply::Put { version: None, .. } => Err(status_of(&ops::stopped_put(condition))),
            other => Err(unexpected_reply("put", &other)),
        }
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let op = ops::delete_op(request.into_inner(), &self.config.limits)?;
        let key = op.keys()[0].clone();
        match self.write(&grant, op).await? {
            WriteReply::Deleted(0) => Err(status_of(&Error::NoSuchKey)),
            WriteReply::Deleted(_) => Ok(self.respond(&key, DeleteResponse { deleted: true })),
            other => Err(unexpected_reply("delete", &other)),
        }
    }

    async fn incr(&self, request: Request<IncrRequest>) -> Result<Response<IncrResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let op = ops::incr_op(request.into_inner(), &self.config.limits)?;
        let key = op.keys()[0].clone();
        match self.write(&grant, op).await? {
            WriteReply::Int(value) => Ok(self.respond(&key, IncrResponse { value })),
            other => Err(unexpected_reply("incr", &other)),
        }
    }

    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let op = ops::append_op(request.into_inner(), &self.config.limits)?;
        let key = op.keys()[0].clone();
        match self.write(&grant, op).await? {
            WriteReply::Len(length) => Ok(self.respond(&key, AppendResponse { length })),
            other => Err(unexpected_reply("append", &other)),
        }
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let request = request.into_inner();
        let config = &self.config;
        let limit = match request.limit as usize {
            0 => config.default_scan_limit,
            n if n > config.max_scan_limit => {
                return Err(invalid(format!(
                    "limit {n} is over the most one page may hold ({}); page with the cursor \
                     or use ScanStream",
                    config.max_scan_limit
                )));
            }
            n => n,
        };
        let consistency = consistency(request.consistency)?;
        allowed(&grant, &listing(&request))?;
        let mut next = Some(cursor(&request.cursor)?);
        let mut page = Vec::new();
        // A node scan looks at a bounded number of keys; a few calls fill a sparse page.
        for _ in 0..config.max_scan_calls.max(1) {
            let Some(from) = next.take() else { break };
            let (found, after) = scan_once(
                self.backend.as_ref(),
                from,
                limit - page.len(),
                &request,
                consistency,
            )
            .await?;
            page.extend(found);
            next = after;
            if page.len() >= limit {
                break;
            }
        }
        Ok(Response::new(ScanResponse {
            entries: page,
            next_cursor: next.as_ref().map(encode_cursor).unwrap_or_default(),
        }))
    }

    type ScanStreamStream = ScanPages;

    async fn scan_stream(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<ScanPages>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let request = request.into_inner();
        let consistency = consistency(request.consistency)?;
        allowed(&grant, &listing(&request))?;
        let start = cursor(&request.cursor)?;
        let remaining = match request.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let page_size = self.config.max_scan_limit;
        let backend = self.backend.clone();
        // One node scan per page, pulled as the client reads: a slow reader holds the
        // stream back instead of the node buffering the whole range.
        let state = (Some(start), remaining, request);
        let pages = futures_util::stream::unfold(state, move |(next, remaining, request)| {
            let backend = backend.clone();
            async move {
                let from = next?;
                if remaining == 0 {
                    return None;
                }
                let limit = remaining.min(page_size);
                match scan_once(backend.as_ref(), from, limit, &request, consistency).await {
                    Ok((entries, after)) => {
                        let remaining = remaining - entries.len().min(remaining);
                        // At the limit the listing stops, but its cursor still says where
                        // the rest begins.
                        let page = ScanResponse {
                            entries,
                            next_cursor: after.as_ref().map(encode_cursor).unwrap_or_default(),
                        };
                        let next = if remaining == 0 { None } else { after };
                        Some((Ok(page), (next, remaining, request)))
                    }
                    Err(status) => Some((Err(status), (None, 0, request))),
                }
            }
        });
        Ok(Response::new(Box::pin(pages)))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let request = request.into_inner();
        let limits = &self.config.limits;
        if request.ops.is_empty() && request.compare.is_empty() {
            return Err(invalid("a transaction needs at least one op or compare"));
        }
        if request.ops.len() > shoal_core::command::MAX_TRANSACTION_OPS {
            return Err(invalid(format!(
                "a transaction carries at most {} ops, this one {}",
                shoal_core::command::MAX_TRANSACTION_OPS,
                request.ops.len()
            )));
        }
        let mut writes = Vec::with_capacity(request.ops.len());
        let mut shapes = Vec::with_capacity(request.ops.len());
        for (index, op) in request.ops.into_iter().enumerate() {
            let (write, shape) = ops::txn_op(op, index, limits)?;
            writes.push(write);
            shapes.push(shape);
        }
        let watched = request
            .compare
            .into_iter()
            .map(|c| {
                Ok((
                    ops::key(c.key, limits)?,
                    (c.version > 0).then_some(c.version),
                ))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let first_key = writes
            .first()
            .and_then(|w| w.keys().first().map(|k| (*k).clone()))
            .or_else(|| watched.first().map(|(k, _)| k.clone()))
            .unwrap_or_default();
        let op = WriteOp::Transaction {
            ops: writes,
            watched,
        };
        match self.write(&grant, op).await? {
            WriteReply::Transaction(None) => Err(with_reason(
                Code::FailedPrecondition,
                "compare_failed",
                "a compared key no longer has the given version (0: absent); nothing was applied",
                Default::default(),
            )),
            WriteReply::Transaction(Some(outcomes)) => {
                let results = shapes
                    .into_iter()
                    .zip(outcomes)
                    .map(|(shape, outcome)| ops::op_result(shape, outcome))
                    .collect();
                Ok(self.respond(&first_key, TxnResponse { results }))
            }
            other => Err(unexpected_reply("txn", &other)),
        }
    }

    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        let grant = super::caller(&self.config.auth, &request).await?;
        let request = request.into_inner();
        let max = self.config.max_batch_ops;
        if request.ops.len() > max {
            return Err(invalid(format!(
                "a batch carries at most {max} ops, this one {}; split it",
                request.ops.len()
            )));
        }
        let consistency = consistency(request.consistency)?;
        let limits = &self.config.limits;
        let parsed = request
            .ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| ops::batch_op(op, index, limits))
            .collect::<Result<Vec<_>, Status>>()?;
        for op in parsed.iter().filter(|_| !grant.unrestricted()) {
            let command = match op {
                BatchOp::Get(key) => Command::Get { key: key.clone() },
                BatchOp::Write(write, _) => Command::Write(write.clone()),
            };
            allowed(&grant, &command)?;
        }
        // The ops run concurrently: writes to one shard are proposed in the batch's order,
        // but a read may be served before a write of the same batch commits (the proto
        // says so: ordering within a batch is what Txn is for).
        let pending = parsed.into_iter().map(|op| {
            let backend = self.backend.clone();
            match op {
                BatchOp::Get(key) => {
                    let answer = backend
                        .try_read_now(&Command::Get { key: key.clone() }, consistency)
                        .map(futures_util::future::Either::Left);
                    let future = answer.unwrap_or_else(|| {
                        futures_util::future::Either::Right(
                            backend.execute(Command::Get { key }, consistency),
                        )
                    });
                    (Shape::Get, future)
                }
                BatchOp::Write(write, shape) => (
                    shape,
                    futures_util::future::Either::Right(
                        backend.execute(Command::Write(write), Consistency::Linearizable),
                    ),
                ),
            }
        });
        let (shapes, futures): (Vec<_>, Vec<_>) = pending.unzip();
        let futures = futures.into_iter().map(|f| async move {
            match f {
                futures_util::future::Either::Left(ready) => ready,
                futures_util::future::Either::Right(fut) => fut.await,
            }
        });
        let replies = join_all(futures).await;
        let results = shapes
            .into_iter()
            .zip(replies)
            .map(|(shape, reply)| match (shape, reply) {
                (Shape::Get, Ok(Reply::Record(record))) => shoal_proto::v1::OpResult {
                    result: Some(op_result::Result::Get(ops::record(record))),
                },
                (shape, Ok(Reply::Write(reply))) => ops::op_result(shape, Ok(reply)),
                (_, Err(err)) => ops::error_result(&err),
                (_, Ok(other)) => ops::error_result(&Error::Internal(format!(
                    "unexpected reply in a batch: {other:?}"
                ))),
            })
            .collect();
        Ok(Response::new(BatchResponse { results }))
    }
}
