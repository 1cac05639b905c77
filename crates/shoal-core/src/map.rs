//! What a node reports about the cluster: nodes, shards, slot ranges, leaders.
//!
//! The metadata group stores the durable part (`ClusterMap`); `ClusterView` adds the live
//! part (current leaders, liveness) that front ends render for CLUSTER SLOTS and HTTP.

use serde::{Deserialize, Serialize};

use crate::shard::{ShardId, SlotRange};

/// A node's stable identity and the addresses clients and peers reach it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    /// Where other nodes reach this one (Raft traffic and forwarded requests).
    #[serde(default)]
    pub peer_addr: String,
    /// Empty until the node has reported it (nodes learn each other's client addresses
    /// from the peer status exchange).
    pub resp_addr: String,
    pub http_addr: String,
}

/// One shard: its slot range and the nodes holding its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub range: SlotRange,
    pub replicas: Vec<u64>,
}

/// The durable cluster map, held by the metadata group. `epoch` only grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Random id fixed at bootstrap; a data directory from another cluster is refused.
    pub cluster_id: String,
    pub epoch: u64,
    pub replication: u32,
    pub nodes: Vec<NodeInfo>,
    pub shards: Vec<ShardInfo>,
}

impl ClusterMap {
    /// Shard `id`, if the map has it (data shards only: the metadata group is not in it).
    pub fn shard(&self, id: ShardId) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The replicas of shard `id`, preferred leader first; none for a shard it lacks.
    pub fn replicas(&self, id: ShardId) -> &[u64] {
        self.shard(id).map_or(&[], |s| s.replicas.as_slice())
    }
}

/// A shard as seen right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardView {
    pub id: ShardId,
    pub range: SlotRange,
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
    pub last_applied: u64,
}

/// A node as seen right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    pub up: bool,
    /// Free space under its data directory, from its last status report (none yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStatus>,
    /// Its resident memory and memory budget, from its last status report (none yet:
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStatus>,
}

/// A node's resident set size (0 where the platform does not say) and its memory budget
/// (`--memory-budget-mib`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    pub rss_bytes: u64,
    pub budget_bytes: u64,
}

/// Free space under a node's data directory and the reserve it keeps, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

/// What a caller wants to write, from the most to the least refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskUse {
    /// A client write that can add data: refused below the reserve.
    Grow,
    /// A client write that only removes data (DEL, expiry): refused below half the
    /// reserve. Removing keys is how an operator makes room, so it keeps working longest
    /// among client writes (its tombstones still take log and journal space).
    Shrink,
    /// Log entries or a snapshot a leader sends this replica: refused below a quarter of
    /// the reserve. The leader keeps retrying; the group commits with its other replicas.
    Replicate,
}

impl DiskUse {
    /// The free space below which a node with `reserve` bytes in reserve refuses this.
    pub fn threshold(self, reserve: u64) -> u64 {
        match self {
            DiskUse::Grow => reserve,
            DiskUse::Shrink => reserve / 2,
            DiskUse::Replicate => reserve / 4,
        }
    }
}

impl DiskStatus {
    /// Under the reserve: the node refuses client writes that add data.
    pub fn is_low(&self) -> bool {
        self.free_bytes < DiskUse::Grow.threshold(self.reserve_bytes)
    }

    /// Under a quarter of the reserve: the node refuses log entries from its leaders.
    pub fn refuses_entries(&self) -> bool {
        self.free_bytes < DiskUse::Replicate.threshold(self.reserve_bytes)
    }
}

/// The live cluster view every front end renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub epoch: u64,
    /// The node answering.
    pub this_node: u64,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
}

/// One replica as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub shard: ShardId,
    /// The leader this replica knows of, and the term it knows it for.
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: u64,
    pub key_count: u64,
}

/// What a node tells its peers about itself, several times a second: its addresses and the
/// state of every replica it holds. Advisory (routing hints, liveness); Raft holds the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub info: NodeInfo,
    pub replicas: Vec<ReplicaStatus>,
    pub disk: DiskStatus,
    pub memory: MemoryStatus,
}
