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
    /// Empty when the node serves no gRPC (or has not reported it yet).
    #[serde(default)]
    pub grpc_addr: String,
}

/// One shard: its slot range and the nodes holding its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub range: SlotRange,
    /// Voters, preferred leader first.
    pub replicas: Vec<u64>,
    /// Replicas being added by a move: they receive the log but do not vote yet.
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// Where a node stands in the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// A member that holds no replica yet while moves to it are under way.
    Joining,
    /// A member that placement gives replicas to.
    #[default]
    Active,
    /// Being removed: its replicas move to the others, then it leaves the map.
    Draining,
    /// Removed for good; its id is never reused.
    Removed,
    /// Unreachable for longer than `--dead-after`: its replicas are re-created on live
    /// nodes, then it leaves the map as removed. It refuses to serve if it comes back.
    Dead,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
            NodeState::Dead => "dead",
        }
    }
}

/// A replica move in flight, recorded in the map before its first step so that a new
/// metadata leader resumes it (every step is idempotent) or rolls it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// The group moved (0: the metadata group).
    pub shard: ShardId,
    /// The node gaining a replica (a learner until it has caught up).
    pub add: Option<u64>,
    /// The voter leaving once `add` votes.
    pub remove: Option<u64>,
    /// When the move started (milliseconds since the Unix epoch).
    pub started_ms: u64,
}

/// The durable cluster map, held by the metadata group. `epoch` only grows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Random id fixed at bootstrap; a data directory from another cluster is refused.
    pub cluster_id: String,
    pub epoch: u64,
    pub replication: u32,
    /// Members (being removed included, removed ones not).
    pub nodes: Vec<NodeInfo>,
    pub shards: Vec<ShardInfo>,
    /// Voters of the metadata group (group 0), on up to five nodes.
    #[serde(default)]
    pub meta: Vec<u64>,
    /// Metadata group replicas being added by a move.
    #[serde(default)]
    pub meta_learners: Vec<u64>,
    /// Members being drained (`cluster remove-node`).
    #[serde(default)]
    pub draining: Vec<u64>,
    /// Ids of removed nodes: never admitted again.
    #[serde(default)]
    pub removed: Vec<u64>,
    /// Members declared dead (down longer than `--dead-after`) whose replicas are being
    /// re-created elsewhere; each becomes removed once it holds none.
    #[serde(default)]
    pub dead: Vec<u64>,
    /// Replica moves in flight, at most one per group.
    #[serde(default)]
    pub moves: Vec<MoveRecord>,
    /// `cluster rebalance pause`: no new move starts (those in flight finish).
    #[serde(default)]
    pub rebalance_paused: bool,
}

impl ClusterMap {
    /// Shard `id`, if the map has it (data shards only: the metadata group is not in it).
    pub fn shard(&self, id: ShardId) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The voters of group `id` (0: the metadata group), preferred leader first; none for a
    /// group it lacks.
    pub fn replicas(&self, id: ShardId) -> &[u64] {
        if id == crate::shard::META_GROUP {
            return &self.meta;
        }
        self.shard(id).map_or(&[], |s| s.replicas.as_slice())
    }

    /// The learners of group `id` (replicas being added).
    pub fn learners(&self, id: ShardId) -> &[u64] {
        if id == crate::shard::META_GROUP {
            return &self.meta_learners;
        }
        self.shard(id).map_or(&[], |s| s.learners.as_slice())
    }

    /// Voters and learners of group `id`, mutable; `None` for a group the map lacks.
    pub fn group_mut(&mut self, id: ShardId) -> Option<(&mut Vec<u64>, &mut Vec<u64>)> {
        if id == crate::shard::META_GROUP {
            return Some((&mut self.meta, &mut self.meta_learners));
        }
        self.shards
            .iter_mut()
            .find(|s| s.id == id)
            .map(|s| (&mut s.replicas, &mut s.learners))
    }

    /// Every group id: the metadata group, then the shards.
    pub fn group_ids(&self) -> Vec<ShardId> {
        std::iter::once(crate::shard::META_GROUP)
            .chain(self.shards.iter().map(|s| s.id))
            .collect()
    }

    /// The groups `node` holds a replica of (voter or learner), the metadata group first.
    pub fn groups_of(&self, node: u64) -> Vec<ShardId> {
        self.group_ids()
            .into_iter()
            .filter(|g| self.replicas(*g).contains(&node) || self.learners(*g).contains(&node))
            .collect()
    }

    pub fn node(&self, id: u64) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// `id`'s state; `None` for an id the cluster never had.
    pub fn node_state(&self, id: u64) -> Option<NodeState> {
        if self.removed.contains(&id) {
            return Some(NodeState::Removed);
        }
        self.node(id)?;
        if self.dead.contains(&id) {
            return Some(NodeState::Dead);
        }
        if self.draining.contains(&id) {
            return Some(NodeState::Draining);
        }
        // Holding no voter yet: its first replicas are still being added.
        Some(if self.replicas_any(id) {
            NodeState::Active
        } else {
            NodeState::Joining
        })
    }

    fn replicas_any(&self, id: u64) -> bool {
        self.group_ids()
            .into_iter()
            .any(|g| self.replicas(g).contains(&id))
    }

    /// Members that placement gives replicas to (all but the draining ones), ascending.
    pub fn active_nodes(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !self.draining.contains(id) && !self.dead.contains(id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The move in flight for group `id`, if any.
    pub fn move_of(&self, id: ShardId) -> Option<&MoveRecord> {
        self.moves.iter().find(|m| m.shard == id)
    }
}

/// A shard as seen right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardView {
    pub id: ShardId,
    pub range: SlotRange,
    pub replicas: Vec<u64>,
    /// Replicas being added (not voting yet).
    #[serde(default)]
    pub learners: Vec<u64>,
    pub leader: Option<u64>,
    pub last_applied: u64,
}

/// A node as seen right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    pub up: bool,
    #[serde(default)]
    pub state: NodeState,
    /// Free space under its data directory, from its last status report (none yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStatus>,
    /// Its resident memory and memory budget, from its last status report (none yet:
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStatus>,
    /// How long it has been unreachable as the answering node sees it (absent: up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_for_ms: Option<u64>,
    /// Up, but gone quiet: its gossip heartbeat has not grown for a few rounds.
    #[serde(default)]
    pub suspect: bool,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub epoch: u64,
    /// The node answering.
    pub this_node: u64,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
    /// Replicas per shard.
    #[serde(default)]
    pub replication: u32,
    /// Voters and learners of the metadata group.
    #[serde(default)]
    pub meta: Vec<u64>,
    #[serde(default)]
    pub meta_learners: Vec<u64>,
    /// The metadata group's leader, when the answering node holds a metadata replica.
    #[serde(default)]
    pub meta_leader: Option<u64>,
    /// Replica moves in flight.
    #[serde(default)]
    pub moves: Vec<MoveView>,
    /// Whether new moves are paused (`cluster rebalance pause`).
    #[serde(default)]
    pub rebalance_paused: bool,
    /// Moves still needed to reach the target placement (0: balanced).
    #[serde(default)]
    pub moves_pending: u64,
    /// Groups with fewer voters on live, non-dead nodes than the replication factor.
    #[serde(default)]
    pub under_replicated: Vec<ShardId>,
    /// How long a node may be down before it is declared dead and replaced (0: never).
    #[serde(default)]
    pub dead_after_secs: u64,
    /// Why dead nodes are not being replaced right now, when they are not (too few live
    /// nodes, too many down at once, a group that would lose its majority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing_held: Option<String>,
    /// The answering node's rebalancing limits (its `--rebalance-*` flags; the metadata
    /// leader's apply to moves, each group leader's pace applies to its snapshots).
    #[serde(default)]
    pub rebalance_limits: RebalanceLimits,
}

/// A node's `--rebalance-*` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceLimits {
    /// Snapshot bytes per second the node sends (0: no limit).
    pub max_bytes_per_sec: u64,
    pub max_moves: u64,
    pub max_moves_per_node: u64,
    pub move_timeout_secs: u64,
}

/// A move in flight as seen now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveView {
    #[serde(flatten)]
    pub record: MoveRecord,
    /// `learner` (catching up), `voter` (membership changing).
    pub step: String,
    /// How far the new replica has caught up: its matched log index against the leader's
    /// last, when the node answering leads the group.
    #[serde(default)]
    pub matched: Option<u64>,
    #[serde(default)]
    pub last_index: Option<u64>,
    /// The snapshot being streamed to the new replica, when the node answering leads the
    /// group and is sending one: bytes sent, of total, and the rate so far.
    #[serde(default)]
    pub snapshot_sent: Option<u64>,
    #[serde(default)]
    pub snapshot_total: Option<u64>,
    #[serde(default)]
    pub snapshot_bytes_per_sec: Option<u64>,
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
    /// The epoch of the newest cluster map the node knows: a peer that knows an older one
    /// asks it for the map.
    pub map_epoch: u64,
    /// Commands the node has accepted since it started: its load (two reports give a rate).
    #[serde(default)]
    pub commands: u64,
}
