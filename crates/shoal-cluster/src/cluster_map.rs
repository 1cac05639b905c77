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

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use shoal_core::ShardId;
use shoal_core::map::{ClusterMap, ClusterView, NodeView, ShardView};
use shoal_core::shard::META_GROUP;
use tokio::sync::watch;

use crate::node::Node;

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
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the stored map is offered from the next commits")
    )]
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
                        disk: Some(self.inner.engine.disk().status()),
                        memory: Some(self.memory_status()),
                    }
                } else {
                    NodeView {
                        info: self.inner.peers.info(n.id).unwrap_or_else(|| n.clone()),
                        up: self.inner.peers.is_up(n.id),
                        disk: self.inner.peers.disk(n.id),
                        memory: self.inner.peers.memory(n.id),
                    }
                }
            })
            .collect();
        ClusterView {
            cluster_id: map.cluster_id.clone(),
            epoch: map.epoch,
            this_node: me,
            nodes,
            shards,
        }
    }
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
            }],
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
