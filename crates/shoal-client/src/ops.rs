//! The typed operations and results of the client's API, and their `shoal.v1` messages.

use std::time::Duration;

use bytes::Bytes;
use shoal_proto::v1 as pb;

/// A key's value as read, with its version (raised by every write) and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub value: Bytes,
    pub version: u64,
    /// Unix milliseconds; `None` when the key does not expire.
    pub expire_at_ms: Option<u64>,
}

/// How a put is conditioned and how long the key lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) if_version: Option<u64>,
    pub(crate) if_absent: bool,
    pub(crate) if_present: bool,
}

impl PutOptions {
    /// No condition, no expiry: a plain put.
    pub fn new() -> Self {
        Self::default()
    }
    /// The key expires this long after the write (rounded down to milliseconds).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Only if the key's version is `version` (0: only if absent); else the error's code
    /// is `version_mismatch`.
    pub fn if_version(mut self, version: u64) -> Self {
        self.if_version = Some(version);
        self
    }
    /// Only if the key does not exist; else `key_exists`.
    pub fn if_absent(mut self) -> Self {
        self.if_absent = true;
        self
    }
    /// Only if the key exists; else `key_missing`.
    pub fn if_present(mut self) -> Self {
        self.if_present = true;
        self
    }

    pub(crate) fn request(&self, key: Bytes, value: Bytes) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            ttl_ms: self.ttl.map_or(0, |t| t.as_millis().max(1) as u64),
            if_version: self.if_version,
            if_absent: self.if_absent,
            if_present: self.if_present,
        }
    }
}

/// One operation of a transaction or batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
        options: PutOptions,
    },
    Delete {
        key: Bytes,
        if_version: Option<u64>,
    },
    Incr {
        key: Bytes,
        by: i64,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
}

impl Op {
    /// Reads `key` (in a transaction: as the ops before it left it).
    pub fn get(key: impl Into<Bytes>) -> Op {
        Op::Get { key: key.into() }
    }
    /// Writes `key`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            options: PutOptions::default(),
        }
    }
    /// Writes `key` under `options` (conditions, time to live).
    pub fn put_with(key: impl Into<Bytes>, value: impl Into<Bytes>, options: PutOptions) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            options,
        }
    }
    /// Deletes `key`.
    pub fn delete(key: impl Into<Bytes>) -> Op {
        Op::Delete {
            key: key.into(),
            if_version: None,
        }
    }
    /// Adds `by` to the integer in `key`.
    pub fn incr(key: impl Into<Bytes>, by: i64) -> Op {
        Op::Incr {
            key: key.into(),
            by,
        }
    }
    /// Appends `value` to `key`'s value.
    pub fn append(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The key the op is on (what routes it).
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Incr { key, .. }
            | Op::Append { key, .. } => key,
        }
    }

    /// Whether the op writes (and so must never be sent twice).
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }

    pub(crate) fn message(&self) -> pb::Op {
        use pb::op::Op as P;
        let op = match self.clone() {
            Op::Get { key } => P::Get(pb::GetRequest {
                key,
                consistency: 0,
            }),
            Op::Put {
                key,
                value,
                options,
            } => P::Put(options.request(key, value)),
            Op::Delete { key, if_version } => P::Delete(pb::DeleteRequest { key, if_version }),
            Op::Incr { key, by } => P::Incr(pb::IncrRequest { key, by: Some(by) }),
            Op::Append { key, value } => P::Append(pb::AppendRequest { key, value }),
        };
        pb::Op { op: Some(op) }
    }
}

/// What one op of a transaction or batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// A get: the value, or `None` when the key is absent.
    Get(Option<Value>),
    /// A put: the new version.
    Put(u64),
    /// A delete: whether the key existed.
    Deleted(bool),
    /// An incr: the new value.
    Incr(i64),
    /// An append: the new length.
    Append(u64),
    /// This op failed alone (`code` as the HTTP API names it); the others still ran.
    Failed { code: String, message: String },
}

impl OpOutcome {
    pub(crate) fn from_message(result: pb::OpResult) -> OpOutcome {
        use pb::op_result::Result as R;
        match result.result {
            Some(R::Get(record)) => OpOutcome::Get(record.found.then_some(Value {
                value: record.value,
                version: record.version,
                expire_at_ms: record.expire_at_ms,
            })),
            Some(R::PutVersion(v)) => OpOutcome::Put(v),
            Some(R::Deleted(d)) => OpOutcome::Deleted(d),
            Some(R::IncrValue(n)) => OpOutcome::Incr(n),
            Some(R::AppendLength(n)) => OpOutcome::Append(n),
            Some(R::Error(e)) => OpOutcome::Failed {
                code: e.code,
                message: e.message,
            },
            None => OpOutcome::Failed {
                code: "internal".into(),
                message: "the server sent an empty result".into(),
            },
        }
    }
}

/// A transaction: ops on keys of one shard (a `{hash tag}` puts keys together), applied
/// atomically if every compared key still has its version.
///
/// ```no_run
/// # async fn demo(client: shoal_client::Client) -> Result<(), shoal_client::Error> {
/// use shoal_client::{Op, OpOutcome, Txn};
///
/// // Take one from the stock and record the order, only if nobody touched the stock
/// // since we read it at version 41 and the order does not exist yet.
/// let txn = Txn::new()
///     .compare("{shop}stock", 41)
///     .compare("{shop}order:7", 0)
///     .op(Op::incr("{shop}stock", -1))
///     .op(Op::put("{shop}order:7", "paid"));
/// match client.txn(txn).await {
///     Ok(outcomes) => assert!(matches!(outcomes[0], OpOutcome::Incr(_))),
///     Err(e) if e.code() == Some("compare_failed") => { /* re-read and try again */ }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    pub(crate) compare: Vec<(Bytes, u64)>,
    pub(crate) ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction: add compares and ops.
    pub fn new() -> Self {
        Self::default()
    }
    /// Applies only if `key` still has `version` (0: is absent).
    pub fn compare(mut self, key: impl Into<Bytes>, version: u64) -> Self {
        self.compare.push((key.into(), version));
        self
    }
    /// Adds `op`, applied after the ones before it.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    pub(crate) fn message(&self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self
                .compare
                .iter()
                .map(|(key, version)| pb::Compare {
                    key: key.clone(),
                    version: *version,
                })
                .collect(),
            ops: self.ops.iter().map(Op::message).collect(),
        }
    }

    /// The key that routes the transaction.
    pub(crate) fn first_key(&self) -> Option<&Bytes> {
        self.ops
            .first()
            .map(Op::key)
            .or_else(|| self.compare.first().map(|(k, _)| k))
    }
}

/// A listed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Bytes,
    /// Empty unless values were asked for.
    pub value: Bytes,
    pub version: u64,
    pub expire_at_ms: Option<u64>,
}

/// What a page of a scan covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    prefix: Bytes,
    cursor: Option<String>,
    limit: u32,
    with_values: bool,
    stale: bool,
}

impl ScanOptions {
    /// Every key, from the start, a page of the server's default size.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only keys starting with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<Bytes>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Resume where a previous page's `next_cursor` said.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }
    /// At most this many keys in the page (0: the server's default, 100).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
    /// Return the values too.
    pub fn with_values(mut self) -> Self {
        self.with_values = true;
        self
    }
    /// Let any replica answer from what it has applied (possibly behind).
    pub fn stale(mut self) -> Self {
        self.stale = true;
        self
    }

    pub(crate) fn request(&self) -> pb::ScanRequest {
        let consistency = if self.stale {
            pb::Consistency::Stale
        } else {
            pb::Consistency::Linearizable
        };
        pb::ScanRequest {
            prefix: self.prefix.clone(),
            cursor: self.cursor.clone().unwrap_or_default(),
            limit: self.limit,
            consistency: consistency as i32,
            with_values: self.with_values,
        }
    }
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` when the listing is finished.
    pub next_cursor: Option<String>,
}

impl Page {
    pub(crate) fn from_message(page: pb::ScanResponse) -> Page {
        Page {
            entries: page
                .entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    value: e.value,
                    version: e.version,
                    expire_at_ms: e.expire_at_ms,
                })
                .collect(),
            next_cursor: (!page.next_cursor.is_empty()).then_some(page.next_cursor),
        }
    }
}
