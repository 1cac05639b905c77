//! The internal request every front end translates into, and its reply.
//!
//! Front ends hold no logic beyond translation: RESP, HTTP and (later) gRPC all build a
//! `Command`, hand it to the node's router, and render the `Reply` or `Error`.
//! `WriteOp`s are what the Raft log carries; they are serialised, so their shape is a
//! storage format: add variants at the end only.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::error::Error;
use crate::record::Record;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// The leader confirms it still leads (ReadIndex) before answering.
    #[default]
    Linearizable,
    /// Any replica answers from its applied state; may be behind.
    Stale,
}

/// A precondition on a put.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    #[default]
    None,
    /// Only if the key does not exist (Redis NX).
    IfAbsent,
    /// Only if the key exists (Redis XX).
    IfPresent,
    /// Only if the key's version equals this; `0` means "only if absent".
    IfVersion(u64),
}

/// What a write does to the key's expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Remove any expiry (a plain SET does this).
    #[default]
    Clear,
    /// Leave the existing expiry as it is (KEEPTTL).
    Keep,
    /// Expire this many milliseconds after the write's proposal time.
    AfterMillis(u64),
    /// Expire at this absolute time.
    At(UnixMillis),
}

/// The latest expiry time a key can have. Redis keeps expiry times, and reports TTL, PTTL and
/// EXPIRETIME, as signed 64-bit milliseconds, so every front end refuses a time past this
/// (through [`Expiry::after_millis`]) rather than storing one that reads back negative.
pub const MAX_EXPIRE_AT: UnixMillis = i64::MAX as UnixMillis;

/// Why a time-to-live was refused by [`Expiry::after_millis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlError {
    /// 0 ms: a key cannot expire the moment it is written.
    Zero,
    /// `now + ttl` is past [`MAX_EXPIRE_AT`]; `max_ms` is the longest ttl allowed now.
    TooLarge { max_ms: u64 },
}

impl std::fmt::Display for TtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TtlError::Zero => write!(f, "must be at least 1 ms"),
            TtlError::TooLarge { max_ms } => write!(
                f,
                "is too large: expiry times are signed 64-bit Unix milliseconds, so it may be at most {max_ms} ms now"
            ),
        }
    }
}

impl Expiry {
    /// A relative expiry of `ms` milliseconds written at `now`, validated the same way by
    /// every front end (RESP's SET PX/EX, SETEX, EXPIRE..., HTTP's `ttl`/`ttl_ms`, `/v1/txn`).
    pub fn after_millis(ms: u64, now: UnixMillis) -> Result<Expiry, TtlError> {
        let max_ms = MAX_EXPIRE_AT.saturating_sub(now);
        match ms {
            0 => Err(TtlError::Zero),
            ms if ms > max_ms => Err(TtlError::TooLarge { max_ms }),
            ms => Ok(Expiry::AfterMillis(ms)),
        }
    }
}

/// When a conditional expiry change (EXPIRE's NX, XX, GT, LT) takes effect, judged against
/// the key's current expiry at apply time. A key without an expiry counts as never
/// expiring, as in Redis: GT never sets it, LT always does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpiryCondition {
    /// Only if the key has no expiry (NX).
    NoExpiry,
    /// Only if the key has an expiry (XX).
    HasExpiry,
    /// Only if the new expiry is later than the current one (GT).
    Later,
    /// Only if the new expiry is earlier than the current one (LT).
    Earlier,
    /// Only if the key has an expiry and the new one is earlier (XX with LT).
    HasExpiryAndEarlier,
}

impl ExpiryCondition {
    /// Whether a key expiring at `current` (None: never) may move to `new`.
    pub fn allows(self, current: Option<UnixMillis>, new: UnixMillis) -> bool {
        match self {
            ExpiryCondition::NoExpiry => current.is_none(),
            ExpiryCondition::HasExpiry => current.is_some(),
            ExpiryCondition::Later => current.is_some_and(|c| new > c),
            ExpiryCondition::Earlier => current.is_none_or(|c| new < c),
            ExpiryCondition::HasExpiryAndEarlier => current.is_some_and(|c| new < c),
        }
    }
}

/// A replicated write. Applied deterministically on every replica by `apply::apply`.
/// Variants are encoded by position in the Raft log: new ones go at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        key: Bytes,
        value: Bytes,
        condition: Condition,
        expiry: Expiry,
        return_old: bool,
    },
    /// Deletes the keys that exist; `if_version` only with a single key.
    Delete {
        keys: Vec<Bytes>,
        if_version: Option<u64>,
    },
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    IncrByFloat {
        key: Bytes,
        delta: f64,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
    },
    /// Sets (`Expiry::At`/`AfterMillis`) or clears (`Expiry::Clear`) a key's expiry.
    /// An expiry in the past deletes the key, as Redis does.
    SetExpiry {
        key: Bytes,
        expiry: Expiry,
    },
    GetDel {
        key: Bytes,
    },
    GetEx {
        key: Bytes,
        expiry: Expiry,
    },
    /// All-or-nothing multi-put within one shard; with `if_none_exist` (MSETNX) nothing is
    /// written if any key exists.
    PutMany {
        pairs: Vec<(Bytes, Bytes)>,
        if_none_exist: bool,
    },
    Rename {
        from: Bytes,
        to: Bytes,
        if_target_absent: bool,
    },
    /// Leader-proposed TTL reaping: deletes each key that is expired at the entry's time.
    Reap {
        keys: Vec<Bytes>,
    },
    /// Deletes every key of the shard.
    Flush,
    /// Sets a key's expiry (`Expiry::At`/`AfterMillis`) only if `condition` holds for its
    /// current one; an expiry in the past then deletes the key.
    SetExpiryIf {
        key: Bytes,
        expiry: Expiry,
        condition: ExpiryCondition,
    },
    /// Reads keys at apply time, for reads inside a transaction: answers `Records`.
    Read {
        keys: Vec<Bytes>,
    },
    /// MULTI/EXEC: `ops` applied as one, in order, each seeing the ones before it, with
    /// nothing else in between; a failing op does not undo the others (as in Redis). If a
    /// `watched` key's live version is no longer the one given (`None`: absent), nothing is
    /// applied and the reply is `Transaction(None)` (WATCH).
    Transaction {
        ops: Vec<WriteOp>,
        watched: Vec<(Bytes, Option<u64>)>,
    },
}

/// Most ops one transaction may carry.
pub const MAX_TRANSACTION_OPS: usize = 4096;

/// A copy of `bytes` in its own allocation (not a view into a larger buffer).
fn own(bytes: &Bytes) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

impl WriteOp {
    /// Whether applying this op can leave more data stored than before. Ops that only
    /// remove or read keys are how a node low on disk gets room back, so they are refused
    /// last (see shoal-storage's `disk`).
    pub fn adds_data(&self) -> bool {
        match self {
            WriteOp::Delete { .. }
            | WriteOp::GetDel { .. }
            | WriteOp::Reap { .. }
            | WriteOp::Flush
            | WriteOp::Read { .. } => false,
            WriteOp::Transaction { ops, .. } => ops.iter().any(WriteOp::adds_data),
            WriteOp::Put { .. }
            | WriteOp::IncrBy { .. }
            | WriteOp::IncrByFloat { .. }
            | WriteOp::Append { .. }
            | WriteOp::SetRange { .. }
            | WriteOp::SetExpiry { .. }
            | WriteOp::GetEx { .. }
            | WriteOp::PutMany { .. }
            | WriteOp::Rename { .. }
            | WriteOp::SetExpiryIf { .. } => true,
        }
    }

    /// The same op with every key and value copied into its own allocation, so that a
    /// caller's larger buffer (a network read buffer) is not kept alive by the op.
    pub fn into_owned(self) -> WriteOp {
        let own_all = |keys: Vec<Bytes>| keys.iter().map(own).collect();
        match self {
            WriteOp::Put {
                key,
                value,
                condition,
                expiry,
                return_old,
            } => WriteOp::Put {
                key: own(&key),
                value: own(&value),
                condition,
                expiry,
                return_old,
            },
            WriteOp::Delete { keys, if_version } => WriteOp::Delete {
                keys: own_all(keys),
                if_version,
            },
            WriteOp::IncrBy { key, delta } => WriteOp::IncrBy {
                key: own(&key),
                delta,
            },
            WriteOp::IncrByFloat { key, delta } => WriteOp::IncrByFloat {
                key: own(&key),
                delta,
            },
            WriteOp::Append { key, value } => WriteOp::Append {
                key: own(&key),
                value: own(&value),
            },
            WriteOp::SetRange { key, offset, value } => WriteOp::SetRange {
                key: own(&key),
                offset,
                value: own(&value),
            },
            WriteOp::SetExpiry { key, expiry } => WriteOp::SetExpiry {
                key: own(&key),
                expiry,
            },
            WriteOp::GetDel { key } => WriteOp::GetDel { key: own(&key) },
            WriteOp::GetEx { key, expiry } => WriteOp::GetEx {
                key: own(&key),
                expiry,
            },
            WriteOp::PutMany {
                pairs,
                if_none_exist,
            } => WriteOp::PutMany {
                pairs: pairs.iter().map(|(k, v)| (own(k), own(v))).collect(),
                if_none_exist,
            },
            WriteOp::Rename {
                from,
                to,
                if_target_absent,
            } => WriteOp::Rename {
                from: own(&from),
                to: own(&to),
                if_target_absent,
            },
            WriteOp::Reap { keys } => WriteOp::Reap {
                keys: own_all(keys),
            },
            WriteOp::Flush => WriteOp::Flush,
            WriteOp::SetExpiryIf {
                key,
                expiry,
                condition,
            } => WriteOp::SetExpiryIf {
                key: own(&key),
                expiry,
                condition,
            },
            WriteOp::Read { keys } => WriteOp::Read {
                keys: own_all(keys),
            },
            WriteOp::Transaction { ops, watched } => WriteOp::Transaction {
                ops: ops.into_iter().map(WriteOp::into_owned).collect(),
                watched: watched.iter().map(|(k, v)| (own(k), *v)).collect(),
            },
        }
    }

    /// The keys this write touches (for routing and limit checks).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::IncrBy { key, .. }
            | WriteOp::IncrByFloat { key, .. }
            | WriteOp::Append { key, .. }
            | WriteOp::SetRange { key, .. }
            | WriteOp::SetExpiry { key, .. }
            | WriteOp::SetExpiryIf { key, .. }
            | WriteOp::GetDel { key }
            | WriteOp::GetEx { key, .. } => vec![key],
            WriteOp::Delete { keys, .. } | WriteOp::Reap { keys } => keys.iter().collect(),
            WriteOp::PutMany { pairs, .. } => pairs.iter().map(|(k, _)| k).collect(),
            WriteOp::Rename { from, to, .. } => vec![from, to],
            WriteOp::Flush => vec![],
            WriteOp::Read { keys } => keys.iter().collect(),
            WriteOp::Transaction { ops, watched } => ops
                .iter()
                .flat_map(WriteOp::keys)
                .chain(watched.iter().map(|(k, _)| k))
                .collect(),
        }
    }

    /// Bytes of keys and values this op carries (what entry and frame limits count).
    pub fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value, .. }
            | WriteOp::Append { key, value }
            | WriteOp::SetRange { key, value, .. } => key.len() + value.len(),
            WriteOp::PutMany { pairs, .. } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
            WriteOp::Transaction { ops, watched } => {
                ops.iter().map(WriteOp::payload_bytes).sum::<usize>()
                    + watched.iter().map(|(k, _)| k.len()).sum::<usize>()
            }
            other => other.keys().iter().map(|k| k.len()).sum(),
        }
    }
}

/// What a write returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteReply {
    /// A put: `version` is the new version, `None` when a condition (NX/XX) stopped it;
    /// `old` is the previous value when asked for.
    Put {
        version: Option<u64>,
        old: Option<Bytes>,
    },
    /// Number of keys removed.
    Deleted(u64),
    Int(i64),
    /// INCRBYFLOAT result, already formatted as Redis prints it.
    Float(String),
    /// New length of the value (APPEND, SETRANGE).
    Len(u64),
    /// Whether the write took effect (EXPIRE, PERSIST, MSETNX, RENAMENX).
    Applied(bool),
    /// The value read by GETDEL / GETEX.
    Value(Option<Bytes>),
    Ok,
    /// What `WriteOp::Read` found, in its keys' order (`None`: absent or expired).
    Records(Vec<Option<Record>>),
    /// Each op's outcome, in order; `None` when a watched key had changed and nothing
    /// was applied.
    Transaction(Option<Vec<Result<WriteReply, Error>>>),
}

/// Where a SCAN resumes: the slot, and the key inside it to start after.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor {
    pub slot: u16,
    /// Start strictly after this key within `slot`; `None` starts at the slot's first key.
    pub after: Option<Bytes>,
}

/// A request to the node, independent of protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Get {
        key: Bytes,
    },
    /// Gets several keys; they must all live in one shard.
    GetMany {
        keys: Vec<Bytes>,
    },
    /// Lists keys in slot order from `cursor`, at most `limit`, optionally only those
    /// starting with `prefix`. Looks at no more than `budget` keys so one call stays bounded.
    Scan {
        cursor: ScanCursor,
        limit: usize,
        prefix: Option<Bytes>,
        with_values: bool,
    },
    /// Number of live keys on every shard.
    Count,
    /// Some live key, or none if the store is empty.
    RandomKey,
    Write(WriteOp),
}

/// A command's successful result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Record(Option<Record>),
    Records(Vec<Option<Record>>),
    Scan {
        entries: Vec<(Bytes, Option<Record>)>,
        next: Option<ScanCursor>,
    },
    Count(u64),
    Key(Option<Bytes>),
    Write(WriteReply),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_must_keep_the_expiry_time_within_a_signed_64_bit_millisecond() {
        let now = 1_800_000_000_000;
        assert_eq!(Expiry::after_millis(1, now), Ok(Expiry::AfterMillis(1)));
        assert_eq!(Expiry::after_millis(0, now), Err(TtlError::Zero));
        let max_ms = MAX_EXPIRE_AT - now;
        assert_eq!(
            Expiry::after_millis(max_ms, now),
            Ok(Expiry::AfterMillis(max_ms))
        );
        for ms in [max_ms + 1, i64::MAX as u64, u64::MAX] {
            assert_eq!(
                Expiry::after_millis(ms, now),
                Err(TtlError::TooLarge { max_ms })
            );
        }
        assert!(
            TtlError::TooLarge { max_ms }
                .to_string()
                .contains(&max_ms.to_string())
        );
    }

    #[test]
    fn into_owned_copies_out_of_the_callers_buffer() {
        let buffer = Bytes::from_static(b"key-and-a-long-value");
        let op = WriteOp::Put {
            key: buffer.slice(0..3),
            value: buffer.slice(8..),
            condition: Condition::None,
            expiry: Expiry::Clear,
            return_old: false,
        };
        let owned = op.clone().into_owned();
        assert_eq!(owned, op);
        let WriteOp::Put { key, value, .. } = owned else {
            unreachable!()
        };
        let inside = |b: &Bytes| buffer.as_ptr_range().contains(&b.as_ptr());
        assert!(!inside(&key) && !inside(&value));
        let many = WriteOp::PutMany {
            pairs: vec![(buffer.slice(0..3), buffer.slice(4..7))],
            if_none_exist: true,
        };
        assert_eq!(many.clone().into_owned(), many);
    }
}
