//! This node's cluster map, as a `watch` that services and front ends can subscribe to.
//!
//! The watch holds this node's *latest known* map, not necessarily the cluster's newest:
//! it is seeded at start from the bootstrap map every node computes from its flags
//! (`Topology`), and only ever moves to a newer epoch of the same cluster (`MapCell::offer`).
//! Only the metadata group's replicas (at most `MAX_META_VOTERS` nodes) hold the stored map
//! locally; feeding the others comes with the join work.
//!
//! The metadata group's voters are not in `ClusterMap` (adding them would change the stored
//! JSON): they stay in `Topology::meta_replicas`.
//!
//! A node with a metadata replica reads the stored map at start (`read_stored`) and offers
//! it, so a restarted node resumes from the newest map it had applied, not the seed; from
//! then on its `MapFollower` offers every map the metadata group applies.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use shoal_core::map::{ClusterMap, ClusterView, MoveView, NodeView, ShardView};
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, ShardId};
use shoal_storage::Engine;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::group::Groups;
use crate::node::{Node, storage_err};

/// The key under which the metadata group stores the cluster map.
pub(crate) const CLUSTER_MAP_KEY: &[u8] = b"shoal/cluster-map";

/// The cluster map this node's metadata replica has applied, with its record's version
/// (the Raft index of the write that stored it: a later map write must be conditional on
/// it, so that two writers cannot lose each other's update). `None` before it is stored.
pub(crate) fn read_stored(engine: &Engine) -> Result<Option<(ClusterMap, u64)>, Error> {
    let Some(record) = engine
        .get_record(META_GROUP, CLUSTER_MAP_KEY)
        .map_err(storage_err)?
    else {
        return Ok(None);
    };
    let map = serde_json::from_slice(&record.value).map_err(|e| {
        Error::Internal(format!(
            "the stored cluster map ({}) does not decode: {e}",
            String::from_utf8_lossy(CLUSTER_MAP_KEY)
        ))
    })?;
    Ok(Some((map, record.version)))
}

/// Offers the stored map, if any, to `cell`; true when it was adopted. A stored map of
/// another cluster, or one that differs from the cell's map at the same epoch, means the
/// flags and the store disagree: it is not adopted, and a warning says so.
pub(crate) fn adopt_stored(engine: &Engine, cell: &MapCell) -> Result<bool, Error> {
    let Some((stored, _)) = read_stored(engine)? else {
        return Ok(false);
    };
    let current = cell.current();
    if stored.cluster_id != current.cluster_id
        || (stored.epoch == current.epoch && stored != *current)
    {
        tracing::warn!(
            stored_cluster = %stored.cluster_id,
            stored_epoch = stored.epoch,
            cluster = %current.cluster_id,
            epoch = current.epoch,
            "the stored cluster map disagrees with the one computed from the flags; keeping the latter"
        );
        return Ok(false);
    }
    Ok(cell.offer(stored))
}

/// The service that keeps the watch current on a node with a metadata replica: whenever
/// the metadata group has applied something new, it re-reads the stored map and offers it.
///
/// It watches the group's Raft metrics rather than polling: a new map is seen as soon as
/// it is applied, and an idle group costs nothing but the metrics' own wake-ups. Those
/// also come with heartbeats and leadership changes, so the map is only re-read when
/// `last_applied` has moved. A key-change hook in the state machine would be more exact,
/// but reaches into shoal-raft, and the metadata group applies little besides map writes.
pub(crate) struct MapFollower {
    pub groups: Arc<Groups>,
    pub engine: Engine,
    pub map: Arc<MapCell>,
}

impl MapFollower {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut seen = None;
        loop {
            // The metadata replica may open (or close) at runtime: look it up each time.
            let Some(meta) = self.groups.get(META_GROUP) else {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => continue,
                }
            };
            let mut metrics = meta.raft.metrics();
            drop(meta);
            let applied = metrics.borrow_watched().last_applied.map(|id| id.index);
            if applied != seen {
                seen = applied;
                match adopt_stored(&self.engine, &self.map) {
                    Ok(true) => tracing::info!(
                        epoch = self.map.current().epoch,
                        "adopted a newer cluster map"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the stored cluster map failed"),
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = metrics.changed() => {
                    // The group stopped (shutting down, or the replica was removed).
                    if changed.is_err() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}

/// A subscription to this node's cluster map.
pub type MapRx = watch::Receiver<Arc<ClusterMap>>;

/// The node's current cluster map; services subscribe to changes.
pub(crate) struct MapCell {
    tx: watch::Sender<Arc<ClusterMap>>,
}

impl MapCell {
    pub(crate) fn new(seed: ClusterMap) -> Self {
        Self {
            tx: watch::Sender::new(Arc::new(seed)),
        }
    }

    /// The map now. Takes the watch's read lock briefly: for cold paths, not per request.
    pub(crate) fn current(&self) -> Arc<ClusterMap> {
        self.tx.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> MapRx {
        self.tx.subscribe()
    }

    /// Adopts `map` if it is of this cluster and its epoch is newer; true when it did (and
    /// subscribers are woken).
    pub(crate) fn offer(&self, map: ClusterMap) -> bool {
        self.tx.send_if_modified(|current| {
            if map.cluster_id != current.cluster_id || map.epoch <= current.epoch {
                return false;
            }
            *current = Arc::new(map);
            true
        })
    }
}

impl Node {
    /// This node's latest known cluster map, and its changes.
    pub fn cluster_map(&self) -> MapRx {
        self.inner.map.subscribe()
    }

    /// Replicas of `shard` by the cluster map (the metadata group's by the topology).
    pub(crate) fn replicas(&self, shard: ShardId) -> Vec<u64> {
        if shard == META_GROUP {
            return self.inner.topology.meta_replicas.clone();
        }
        self.inner.map.current().replicas(shard).to_vec()
    }

    /// The node's view of the cluster: every node (up or not, with the client addresses
    /// it reported), every shard with its replicas and its current leader.
    pub fn cluster_view(&self) -> ClusterView {
        let me = self.id();
        let map = self.inner.map.current();
        let shards = map
            .shards
            .iter()
            .map(|s| {
                let local = self.local_group(s.id);
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
                        .filter_map(|r| self.inner.peers.replica(*r, s.id))
                        .map(|r| r.last_applied)
                        .max()
                        .unwrap_or(0),
                };
                ShardView {
                    id: s.id,
                    range: s.range,
                    replicas: s.replicas.clone(),
                    learners: s.learners.clone(),
                    leader: self.leader_of(s.id),
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
                        info: self.info(),
                        up: true,
                        state: map.node_state(n.id).unwrap_or_default(),
                        disk: Some(self.inner.engine.disk().status()),
                        memory: Some(self.memory_status()),
                    }
                } else {
                    NodeView {
                        info: self.inner.peers.info(n.id).unwrap_or_else(|| n.clone()),
                        up: self.inner.peers.is_up(n.id),
                        state: map.node_state(n.id).unwrap_or_default(),
                        disk: self.inner.peers.disk(n.id),
                        memory: self.inner.peers.memory(n.id),
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
                    let group = self.local_group(record.shard).filter(|g| g.is_leader())?;
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
                    .and_then(|add| self.inner.router.snapshot_progress(add, record.shard));
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
            meta_leader: self.local_group(META_GROUP).and_then(|g| g.leader()),
            moves,
            rebalance_paused: map.rebalance_paused,
            moves_pending: crate::mover::pending_moves(&map) as u64,
            rebalance_limits: shoal_core::map::RebalanceLimits {
                max_bytes_per_sec: self.inner.tuning.transport.snapshot_bytes_per_sec,
                max_moves: self.inner.tuning.moves.max_moves as u64,
                max_moves_per_node: self.inner.tuning.moves.max_moves_per_node as u64,
                move_timeout_secs: self.inner.tuning.moves.timeout.as_secs(),
            },
        }
    }
}

/// `map` one epoch later with node `id` (peer address `peer_addr`) added: what an admission
/// would publish. For the services' tests.
#[cfg(test)]
pub(crate) fn grown(mut map: ClusterMap, id: u64, peer_addr: &str) -> ClusterMap {
    map.epoch += 1;
    map.nodes.push(shoal_core::map::NodeInfo {
        id,
        peer_addr: peer_addr.into(),
        resp_addr: String::new(),
        http_addr: String::new(),
    });
    map
}

#[cfg(test)]
mod tests {
    use shoal_core::map::{NodeInfo, ShardInfo};
    use shoal_core::shard::SlotRange;

    use super::*;

    fn map(cluster_id: &str, epoch: u64) -> ClusterMap {
        ClusterMap {
            cluster_id: cluster_id.into(),
            epoch,
            replication: 1,
            nodes: vec![NodeInfo {
                id: 1,
                peer_addr: String::new(),
                resp_addr: String::new(),
                http_addr: String::new(),
            }],
            shards: vec![ShardInfo {
                id: 1,
                range: SlotRange {
                    start: 0,
                    end: 16384,
                },
                replicas: vec![1],
                learners: Vec::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_older_or_equal_epoch_is_ignored() {
        let cell = MapCell::new(map("c", 2));
        let rx = cell.subscribe();
        assert!(!cell.offer(map("c", 1)));
        let mut same = map("c", 2);
        same.replication = 3;
        assert!(!cell.offer(same));
        assert_eq!(*cell.current(), map("c", 2));
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn another_cluster_is_ignored() {
        let cell = MapCell::new(map("c", 1));
        assert!(!cell.offer(map("other", 5)));
        assert_eq!(cell.current().cluster_id, "c");
        assert_eq!(cell.current().epoch, 1);
    }

    #[tokio::test]
    async fn a_newer_epoch_wakes_subscribers() {
        let cell = MapCell::new(map("c", 1));
        let mut rx = cell.subscribe();
        assert!(cell.offer(map("c", 2)));
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(rx.borrow_and_update().epoch, 2);
        assert_eq!(cell.current().epoch, 2);
    }

    #[test]
    fn replicas_by_shard() {
        let m = map("c", 1);
        assert_eq!(m.shard(1).map(|s| s.id), Some(1));
        assert_eq!(m.replicas(1), &[1]);
        assert!(m.shard(2).is_none());
        assert!(m.replicas(2).is_empty());
    }
}
