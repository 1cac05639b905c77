//! What this node knows of the others: their client addresses, whether they answer, and
//! which shards they lead. Learned by asking every peer for its `NodeStatus` a few times a
//! second over the peer transport. Advisory only (routing hints and `cluster status`):
//! Raft decides who leads, and a stale hint costs one redirected hop.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use shoal_core::ShardId;
use shoal_core::map::{NodeInfo, NodeStatus};

/// A peer is "down" once it has not answered a status request for this long.
pub const DOWN_AFTER: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
struct PeerEntry {
    info: NodeInfo,
    status: Option<NodeStatus>,
    last_answer: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Peers {
    table: RwLock<HashMap<u64, PeerEntry>>,
}

impl Peers {
    pub fn new(nodes: &[NodeInfo]) -> Peers {
        let table = nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    PeerEntry {
                        info: n.clone(),
                        status: None,
                        last_answer: None,
                    },
                )
            })
            .collect();
        Peers {
            table: RwLock::new(table),
        }
    }

    pub fn record(&self, node: u64, status: NodeStatus) {
        let mut table = self.table.write().expect("peers lock");
        if let Some(entry) = table.get_mut(&node) {
            // The peer address stays as configured; client addresses come from the peer.
            entry.info.resp_addr = status.info.resp_addr.clone();
            entry.info.http_addr = status.info.http_addr.clone();
            entry.status = Some(status);
            entry.last_answer = Some(Instant::now());
        }
    }

    pub fn is_up(&self, node: u64) -> bool {
        self.table
            .read()
            .expect("peers lock")
            .get(&node)
            .and_then(|e| e.last_answer)
            .is_some_and(|t| t.elapsed() < DOWN_AFTER)
    }

    pub fn info(&self, node: u64) -> Option<NodeInfo> {
        self.table
            .read()
            .expect("peers lock")
            .get(&node)
            .map(|e| e.info.clone())
    }

    /// The leader of `shard` by the freshest report (highest term) among peers that answer.
    pub fn leader_of(&self, shard: ShardId) -> Option<(u64, u64)> {
        let table = self.table.read().expect("peers lock");
        table
            .values()
            .filter(|e| e.last_answer.is_some_and(|t| t.elapsed() < DOWN_AFTER))
            .filter_map(|e| e.status.as_ref())
            .flat_map(|s| s.replicas.iter())
            .filter(|r| r.shard == shard)
            .filter_map(|r| r.leader.map(|l| (r.term, l)))
            .max()
            .map(|(term, leader)| (leader, term))
    }

    /// `node`'s free disk space by its last report.
    pub fn disk(&self, node: u64) -> Option<shoal_core::map::DiskStatus> {
        let table = self.table.read().expect("peers lock");
        Some(table.get(&node)?.status.as_ref()?.disk)
    }

    /// `node`'s resident memory and budget by its last report.
    pub fn memory(&self, node: u64) -> Option<shoal_core::map::MemoryStatus> {
        let table = self.table.read().expect("peers lock");
        Some(table.get(&node)?.status.as_ref()?.memory)
    }

    /// The last report about `shard` from `node`'s replica.
    pub fn replica(&self, node: u64, shard: ShardId) -> Option<shoal_core::map::ReplicaStatus> {
        let table = self.table.read().expect("peers lock");
        table
            .get(&node)?
            .status
            .as_ref()?
            .replicas
            .iter()
            .find(|r| r.shard == shard)
            .cloned()
    }
}
