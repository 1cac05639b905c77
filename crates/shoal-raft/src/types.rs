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

/// Types of every shoal Raft group (metadata and shards alike). Written out rather than
/// declared with `declare_raft_types!`, whose syntax cannot name a generic responder.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = ShardRequest;
    type R = ShardResponse;
    type NodeId = u64;
    type Node = openraft::impls::BasicNode;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<ShardRequest, u64, openraft::impls::BasicNode>;
    type Entry =
        openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type Responder<T>
        = CallbackResponder<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Completes a proposal by calling a closure where the entry is applied, so results fan
/// out to waiting clients without another task hop per entry.
pub struct CallbackResponder<T> {
    callback: Box<dyn FnOnce(T) + Send + Sync>,
}

impl<T> CallbackResponder<T> {
    pub fn new(callback: impl FnOnce(T) + Send + Sync + 'static) -> Self {
        Self {
            callback: Box::new(callback),
        }
    }
}

impl<T: openraft::OptionalSend + 'static> openraft::raft::responder::Responder<TypeConfig, T>
    for CallbackResponder<T>
{
    fn on_complete(self, result: T) {
        (self.callback)(result)
    }
}

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
