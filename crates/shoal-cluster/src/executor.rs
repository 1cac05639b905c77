//! The request path's state: everything a command needs to find its shard and run there,
//! and nothing else. `router.rs` (where a command goes, retries) and `local.rs` (running it
//! on this node's replica) are its methods; `Node` and the peer handler only hold it.
//!
//! It holds the replica registry, the cluster map and the peers' reports, each shared with
//! the services that keep them current, so it sees groups open and close and leaders move
//! without reaching into the node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::{Error, Limits, ShardId, ShardLayout};
use shoal_raft::transport::PeerRouter;
use shoal_storage::Engine;

use crate::cluster_map::MapCell;
use crate::config::Tuning;
use crate::group::{Group, Groups};
use crate::peers::Peers;

/// The limits and timeouts the request path obeys (from `NodeConfig` and `Tuning`).
#[derive(Debug, Clone)]
pub(crate) struct ExecutorConfig {
    pub(crate) me: u64,
    pub(crate) limits: Limits,
    /// Whether FLUSHALL may run (`--allow-flush`).
    pub(crate) allow_flush: bool,
    /// Keys one scan call may examine before returning a partial page.
    pub(crate) scan_budget: usize,
    /// See `Tuning::route_timeout`, `forward_timeout`, `request_timeout`.
    pub(crate) route_timeout: Duration,
    pub(crate) forward_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// The deliberately broken test mode (`Tuning::unsafe_unconfirmed_reads`).
    pub(crate) unsafe_unconfirmed_reads: bool,
}

impl ExecutorConfig {
    pub(crate) fn new(me: u64, limits: Limits, allow_flush: bool, tuning: &Tuning) -> Self {
        Self {
            me,
            limits,
            allow_flush,
            scan_budget: tuning.scan_budget,
            route_timeout: tuning.route_timeout,
            forward_timeout: tuning.forward_timeout,
            request_timeout: tuning.request_timeout,
            unsafe_unconfirmed_reads: tuning.unsafe_unconfirmed_reads,
        }
    }
}

/// Runs commands: routes each to its shard's leader and runs it there or here.
pub(crate) struct Executor {
    pub(crate) config: ExecutorConfig,
    /// The slot ranges of the shards (fixed: shards are never split yet).
    pub(crate) layout: ShardLayout,
    /// This node's replicas, opened and closed at runtime by the replica keeper.
    pub(crate) groups: Arc<Groups>,
    /// The newest cluster map this node knows: which nodes host which shard.
    pub(crate) map: Arc<MapCell>,
    /// Peers' latest status reports: leaders of shards this node does not host.
    pub(crate) peers: Arc<Peers>,
    pub(crate) router: PeerRouter,
    pub(crate) engine: Engine,
    /// Set by `Node::shutdown`: new commands get `ShuttingDown`.
    pub(crate) stopped: Arc<AtomicBool>,
    /// Set once the cluster map says this node was removed: it serves nothing more.
    pub(crate) removed: Arc<AtomicBool>,
    /// Commands accepted since start (INFO's total_commands_processed; gossiped as load).
    pub(crate) commands: Arc<AtomicU64>,
}

impl Executor {
    pub(crate) fn me(&self) -> u64 {
        self.config.me
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Why a removed node refuses a command.
    pub(crate) fn removed_error(&self) -> Error {
        crate::join::removed_error(self.me(), &self.map.current())
    }

    pub(crate) fn local_group(&self, group: ShardId) -> Option<Arc<Group>> {
        self.groups.get(group)
    }

    /// Replicas of `shard` by the cluster map.
    pub(crate) fn replicas(&self, shard: ShardId) -> Vec<u64> {
        self.map.current().replicas(shard).to_vec()
    }

    /// The leader of `shard` as far as this node knows: its own replica's view if it has
    /// one, else the freshest peer report.
    pub(crate) fn leader_of(&self, shard: ShardId) -> Option<u64> {
        if let Some(leader) = self.local_group(shard).and_then(|g| g.leader()) {
            return Some(leader);
        }
        self.peers.leader_of(shard).map(|(leader, _term)| leader)
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::map::{NodeStatus, ReplicaStatus};
    use shoal_core::{Command, Consistency, WriteOp};

    use super::*;
    use crate::topology::Topology;

    /// An executor for node 1 of a 3-node map that hosts no replica (an empty registry),
    /// and what it knows of its peers.
    fn executor(dir: &std::path::Path) -> (Arc<Executor>, ShardId) {
        let members: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("n{id}:1"))).collect();
        let seed = Topology::new(1, &members, 4, 3).unwrap().map;
        let router = PeerRouter::new(
            1,
            seed.cluster_id.clone(),
            Default::default(),
            Default::default(),
            tokio::runtime::Handle::current(),
        );
        let peers = Arc::new(Peers::new(&seed.nodes));
        let layout =
            ShardLayout::from_ranges(seed.shards.iter().map(|s| (s.id, s.range)).collect());
        let shard = layout.shard_of_key(b"k");
        // Node 2 reports that it leads the key's shard.
        peers.record(
            2,
            NodeStatus {
                map_epoch: seed.epoch,
                info: seed.node(2).unwrap().clone(),
                replicas: vec![ReplicaStatus {
                    shard,
                    leader: Some(2),
                    term: 3,
                    last_applied: 7,
                    key_count: 1,
                }],
                ..crate::peers::tests::status(2)
            },
        );
        peers.set_live(2, true);
        let engine = Engine::open(dir, &Default::default()).unwrap();
        let executor = Executor {
            config: ExecutorConfig::new(1, Limits::default(), false, &Tuning::default()),
            layout,
            groups: Arc::new(Groups::new((0..5).map(|_| None).collect())),
            map: Arc::new(MapCell::new(seed)),
            peers,
            router,
            engine,
            stopped: Arc::default(),
            removed: Arc::default(),
            commands: Arc::default(),
        };
        (Arc::new(executor), shard)
    }

    fn put() -> Command {
        Command::Write(WriteOp::Put {
            key: "k".into(),
            value: "v".into(),
            condition: Default::default(),
            expiry: Default::default(),
            return_old: false,
        })
    }

    #[tokio::test]
    async fn a_shard_led_elsewhere_is_redirected_with_its_leader_from_peer_reports() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, shard) = executor(dir.path());
        assert_eq!(executor.leader_of(shard), Some(2));
        let answer = executor
            .execute_direct(put(), Consistency::Linearizable)
            .await;
        assert_eq!(answer, Err(Error::NotLeader { shard, leader: 2 }));
        // Asked to run here (a forwarded command), it names the leader too.
        let here = executor
            .execute_here(shard, put(), Consistency::Linearizable)
            .await;
        assert_eq!(here, Err(Error::NotLeader { shard, leader: 2 }));
        assert_eq!(executor.commands.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn keys_of_two_shards_and_flush_without_the_flag_are_refused_before_routing() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, shard) = executor(dir.path());
        let other = (0..1000)
            .map(|i| bytes::Bytes::from(format!("o{i}")))
            .find(|k| executor.layout.shard_of_key(k) != shard)
            .unwrap();
        let mget = Command::GetMany {
            keys: vec!["k".into(), other],
        };
        let answer = executor.execute(mget, Consistency::Linearizable).await;
        assert_eq!(answer, Err(Error::CrossShard));
        let flush = executor
            .execute(Command::Write(WriteOp::Flush), Consistency::Linearizable)
            .await;
        assert!(
            matches!(&flush, Err(Error::Disabled(what, how)) if what == "FLUSHALL" && how.contains("--allow-flush")),
            "{flush:?}"
        );
    }

    #[tokio::test]
    async fn a_stopped_or_removed_node_refuses_commands_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, _) = executor(dir.path());
        executor.removed.store(true, Ordering::Relaxed);
        let removed = executor.execute(put(), Consistency::Linearizable).await;
        assert!(
            matches!(&removed, Err(Error::Removed { node: 1, .. })),
            "{removed:?}"
        );
        assert_eq!(
            executor.try_read_now(&Command::Get { key: "k".into() }, Consistency::Stale),
            None
        );
        executor.stopped.store(true, Ordering::Relaxed);
        let stopped = executor.execute(put(), Consistency::Linearizable).await;
        assert_eq!(stopped, Err(Error::ShuttingDown));
    }
}
