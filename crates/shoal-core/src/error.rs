//! The one error type. Each front end maps it to its protocol (RESP error strings, HTTP
//! status plus JSON code) in exactly one place.

use serde::{Deserialize, Serialize};

use crate::shard::ShardId;

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    #[error("key is empty: keys must be 1 byte or longer")]
    EmptyKey,
    #[error("key is {len} bytes, over the key size limit of {limit} bytes (--max-key-bytes)")]
    KeyTooLarge { len: usize, limit: usize },
    #[error("value is {len} bytes, over the value size limit of {limit} bytes (--max-value-bytes)")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("keys in request don't hash to the same shard")]
    CrossShard,
    #[error("value is not an integer or out of range")]
    NotInteger,
    #[error("value is not a valid float")]
    NotFloat,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("increment would produce NaN or Infinity")]
    NanOrInfinity,
    #[error("no such key")]
    NoSuchKey,
    #[error("version mismatch: expected {expected}, key is at {}", fmt_version(.actual))]
    VersionMismatch { expected: u64, actual: Option<u64> },
    #[error("key already exists")]
    KeyExists,
    #[error("key does not exist")]
    KeyMissing,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0} is disabled on this node: {1}")]
    Disabled(String, String),
    #[error("shard {shard} has no leader right now; retry shortly")]
    NoLeader { shard: ShardId },
    #[error("shard {shard} is led by node {leader}, not this node")]
    NotLeader { shard: ShardId, leader: u64 },
    /// The request may or may not have taken effect (its leader changed or the node it was
    /// forwarded to stopped answering after receiving it). Never retried automatically.
    #[error(
        "outcome unknown: {0}; the write may or may not have been applied, read the key to find out"
    )]
    Indeterminate(String),
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("too many pending requests on shard {shard} (limit {limit}); retry shortly")]
    Overloaded { shard: ShardId, limit: usize },
    /// Free space under the node's data directory fell into its reserve. Never retried
    /// automatically: only freeing space helps.
    #[error(
        "disk full on node {node}: {free_mib} MiB free in its data directory, under the {threshold_mib} MiB this needs (reserve {reserve_mib} MiB, --min-free-disk-mib); {what} refused until space is freed, reads still work"
    )]
    DiskFull {
        node: u64,
        free_mib: u64,
        threshold_mib: u64,
        reserve_mib: u64,
        /// Which writes are refused at this level ("writes", "writes and deletes").
        what: String,
    },
    /// This node was removed from its cluster (`cluster remove-node`): it serves nothing.
    #[error(
        "node {node} was removed from cluster {cluster} and refuses to serve its stale data: to bring this machine back, move its --data-dir aside and start it with an unused --id and --join"
    )]
    Removed { node: u64, cluster: String },
    /// This node was declared dead (down longer than the cluster's `--dead-after`) and its
    /// replicas re-created elsewhere: it serves nothing.
    #[error(
        "node {node} was declared dead by cluster {cluster} (unreachable for longer than --dead-after) and its replicas were re-created on other nodes; it refuses to serve its stale data: to bring this machine back, move its --data-dir aside and start it with an unused --id and --join"
    )]
    Replaced { node: u64, cluster: String },
    /// The client has not logged in, or its credentials are wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// The logged-in user's role or key prefix does not allow the request.
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A fault-injection call on a node started without `--fault-injection`.
    pub fn fault_injection_disabled() -> Error {
        Error::Disabled(
            "fault injection".into(),
            "start the node with --fault-injection (tests only)".into(),
        )
    }
}

fn fmt_version(v: &Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    }
}

impl Error {
    /// A stable machine-readable code, used by HTTP and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptyKey => "empty_key",
            Error::KeyTooLarge { .. } => "key_too_large",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::CrossShard => "cross_slot",
            Error::NotInteger => "not_integer",
            Error::NotFloat => "not_float",
            Error::Overflow => "overflow",
            Error::NanOrInfinity => "nan_or_infinity",
            Error::NoSuchKey => "not_found",
            Error::VersionMismatch { .. } => "version_mismatch",
            Error::KeyExists => "key_exists",
            Error::KeyMissing => "key_missing",
            Error::Invalid(_) => "invalid_argument",
            Error::Disabled(..) => "disabled",
            Error::NoLeader { .. } => "no_leader",
            Error::NotLeader { .. } => "not_leader",
            Error::Indeterminate(_) => "indeterminate",
            Error::Timeout(_) => "timeout",
            Error::ShuttingDown => "shutting_down",
            Error::Overloaded { .. } => "overloaded",
            Error::DiskFull { .. } => "disk_full",
            Error::Removed { .. } => "node_removed",
            Error::Replaced { .. } => "node_replaced",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Denied(_) => "permission_denied",
            Error::Storage(_) => "storage",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether a client may retry the same request unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NoLeader { .. }
                | Error::NotLeader { .. }
                | Error::Timeout(_)
                | Error::Overloaded { .. }
        )
    }
}
