//! The node's view of the cluster (`GET /v1/cluster`, `shoal cluster status`): the map it
//! knows, with each shard's leader and progress, each node's liveness and resources, and
//! each move's progress where this node can see it.

use openraft::async_runtime::WatchReceiver;
use shoal_core::map::{
    ClusterView, MemoryStatus, MoveView, NodeInfo, NodeView, RebalanceLimits, ShardView,
};
use shoal_core::shard::META_GROUP;

use crate::executor::Executor;

/// `info` and `memory`: this node's own, which it knows better than its peers' reports.
pub(crate) fn cluster_view(
    exec: &Executor,
    info: NodeInfo,
    memory: MemoryStatus,
    rebalance_limits: RebalanceLimits,
    dead_after: std::time::Duration,
) -> ClusterView {
    let me = exec.me();
    let down_for = |n| exec.peers.down_for(n);
    let map = exec.map.current();
    let shards = map
        .shards
        .iter()
        .map(|s| {
            let local = exec.local_group(s.id);
            let last_applied = match local {
                Some(g) => g
                    .raft
                    .metrics()
                    .borrow_watched()
                    .last_applied
                    .map_or(0, |id| id.index),
                None => s
                    .replicas
                    .iter()
                    .filter_map(|r| exec.peers.replica(*r, s.id))
                    .map(|r| r.last_applied)
                    .max()
                    .unwrap_or(0),
            };
            ShardView {
                id: s.id,
                range: s.range,
                replicas: s.replicas.clone(),
                learners: s.learners.clone(),
                leader: exec.leader_of(s.id),
                last_applied,
            }
        })
        .collect();
    let nodes = map
        .nodes
        .iter()
        .map(|n| {
            if n.id == me {
                NodeView {
                    info: info.clone(),
                    up: true,
                    state: map.node_state(n.id).unwrap_or_default(),
                    disk: Some(exec.engine.disk().status()),
                    memory: Some(memory),
                    down_for_ms: None,
                    suspect: false,
                }
            } else {
                NodeView {
                    info: exec.peers.info(n.id).unwrap_or_else(|| n.clone()),
                    up: exec.peers.is_up(n.id),
                    state: map.node_state(n.id).unwrap_or_default(),
                    disk: exec.peers.disk(n.id),
                    memory: exec.peers.memory(n.id),
                    down_for_ms: exec.peers.down_for(n.id).map(|d| d.as_millis() as u64),
                    suspect: exec.peers.is_suspect(n.id),
                }
            }
        })
        .collect();
    let moves = map
        .moves
        .iter()
        .map(|record| {
            let step = match record.add {
                Some(add) if map.learners(record.shard).contains(&add) => "learner",
                _ => "voter",
            };
            // Progress is known where this node leads the group.
            let progress = record.add.and_then(|add| {
                let group = exec.local_group(record.shard).filter(|g| g.is_leader())?;
                let m = group.raft.metrics().borrow_watched().clone();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&add).cloned().flatten())
                    .map(|id| id.index);
                Some((matched, m.last_log_index))
            });
            let snapshot = progress
                .and(record.add)
                .and_then(|add| exec.router.snapshot_progress(add, record.shard));
            MoveView {
                record: record.clone(),
                step: step.to_string(),
                matched: progress.and_then(|p| p.0),
                last_index: progress.and_then(|p| p.1),
                snapshot_sent: snapshot.map(|s| s.sent),
                snapshot_total: snapshot.map(|s| s.total),
                snapshot_bytes_per_sec: snapshot.map(|s| s.rate()),
            }
        })
        .collect();
    ClusterView {
        cluster_id: map.cluster_id.clone(),
        epoch: map.epoch,
        this_node: me,
        nodes,
        shards,
        replication: map.replication,
        meta: map.meta.clone(),
        meta_learners: map.meta_learners.clone(),
        meta_leader: exec.local_group(META_GROUP).and_then(|g| g.leader()),
        moves,
        rebalance_paused: map.rebalance_paused,
        moves_pending: crate::mover::pending_moves(&map) as u64,
        rebalance_limits,
        under_replicated: crate::healer::under_replicated(&map, me, down_for),
        dead_after_secs: dead_after.as_secs(),
        healing_held: crate::healer::judge(&map, me, dead_after, down_for).held,
    }
}
