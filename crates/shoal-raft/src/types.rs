//! The Raft type config shared by every group, and what its log entries carry.

use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_core::{Error, WriteOp, WriteReply};

/// One log entry's payload: a batch of writes proposed together by a shard leader, with the
/// leader's clock at proposal so TTLs resolve identically on every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRequest {
    pub now_ms: u64,
    pub ops: Vec<WriteOp>,
}

impl fmt::Display for ShardRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardRequest({} ops @{})", self.ops.len(), self.now_ms)
    }
}

/// One result per op of the request, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardResponse {
    pub results: Vec<Result<WriteReply, Error>>,
}

openraft::declare_raft_types!(
    /// Types of every shoal Raft group (metadata and shards alike).
    pub TypeConfig:
        D = ShardRequest,
        R = ShardResponse,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
