//! What this node knows of the others: their client addresses, whether they are alive, and
//! which shards they lead. Learned from gossip (`gossip.rs`): liveness from its failure
//! detector, the rest from each peer's published `NodeStatus`. Advisory only (routing hints,
//! `cluster status`, the dead-node rules): Raft decides who leads, and a stale hint costs one
//! redirected hop.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use shoal_core::ShardId;
use shoal_core::map::{ClusterMap, NodeInfo, NodeStatus};
use shoal_raft::transport::PeerRouter;
use tokio_util::sync::CancellationToken;

use crate::cluster_map::MapRx;

#[derive(Debug, Clone)]
struct PeerEntry {
    info: NodeInfo,
    status: Option<NodeStatus>,
    /// Alive by the failure detector.
    live: bool,
    /// Since when it has not been alive (`None`: never seen alive since it was tracked).
    down_since: Option<Instant>,
    /// When this node started tracking it: "down since" for a peer never heard from.
    tracked_since: Instant,
    /// Its last gossip heartbeat, when that last grew, and how long quiet makes it suspect.
    heartbeat: (u64, Instant, Duration),
}

impl PeerEntry {
    fn new(info: NodeInfo) -> Self {
        Self {
            info,
            status: None,
            live: false,
            down_since: None,
            tracked_since: Instant::now(),
            heartbeat: (0, Instant::now(), Duration::MAX),
        }
    }
}

#[derive(Debug, Default)]
pub struct Peers {
    table: RwLock<HashMap<u64, PeerEntry>>,
}

impl Peers {
    pub fn new(nodes: &[NodeInfo]) -> Peers {
        let table = nodes
            .iter()
            .map(|n| (n.id, PeerEntry::new(n.clone())))
            .collect();
        Peers {
            table: RwLock::new(table),
        }
    }

    /// Starts tracking the nodes of `nodes` it did not know. Known nodes keep what was
    /// learned of them, and nodes missing from `nodes` stay (removal comes with draining).
    pub fn sync(&self, nodes: &[NodeInfo]) {
        let mut table = self.table.write().expect("peers lock");
        for n in nodes {
            table
                .entry(n.id)
                .or_insert_with(|| PeerEntry::new(n.clone()));
        }
    }

    /// Records `status` from `node`; ignored for a node not in the map (yet).
    pub fn record(&self, node: u64, status: NodeStatus) {
        let mut table = self.table.write().expect("peers lock");
        if let Some(entry) = table.get_mut(&node) {
            // The peer address stays as configured; client addresses come from the peer.
            entry.info.resp_addr = status.info.resp_addr.clone();
            entry.info.http_addr = status.info.http_addr.clone();
            entry.info.grpc_addr = status.info.grpc_addr.clone();
            entry.status = Some(status);
        }
    }

    /// Records whether `node` is alive (by the failure detector); ignored for a node not
    /// in the map.
    pub fn set_live(&self, node: u64, live: bool) {
        let mut table = self.table.write().expect("peers lock");
        if let Some(entry) = table.get_mut(&node) {
            if live {
                entry.down_since = None;
            } else if entry.live {
                entry.down_since = Some(Instant::now());
            }
            entry.live = live;
        }
    }

    /// Records `node`'s gossip heartbeat; quiet for `suspect_after`, a live node is suspect.
    pub fn heartbeat(&self, node: u64, beat: u64, suspect_after: Duration) {
        let mut table = self.table.write().expect("peers lock");
        if let Some(entry) = table.get_mut(&node) {
            if beat != entry.heartbeat.0 {
                entry.heartbeat = (beat, Instant::now(), suspect_after);
            } else {
                entry.heartbeat.2 = suspect_after;
            }
        }
    }

    /// Alive by the failure detector, but its heartbeat has not grown for a while.
    pub fn is_suspect(&self, node: u64) -> bool {
        self.table
            .read()
            .expect("peers lock")
            .get(&node)
            .is_some_and(|e| e.live && e.heartbeat.1.elapsed() > e.heartbeat.2)
    }

    pub fn is_up(&self, node: u64) -> bool {
        self.table
            .read()
            .expect("peers lock")
            .get(&node)
            .is_some_and(|e| e.live)
    }

    /// How long `node` has not been alive (since the failure detector last saw it alive,
    /// or since this node began tracking it), or `None` while it is up. A node not tracked counts as up: it is not
    /// in the map this node knows, so nothing may be decided about it.
    pub fn down_for(&self, node: u64) -> Option<Duration> {
        let table = self.table.read().expect("peers lock");
        let entry = table.get(&node)?;
        (!entry.live).then(|| entry.down_since.unwrap_or(entry.tracked_since).elapsed())
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
            .filter(|e| e.live)
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

/// The service that keeps this node's address book current with the cluster map: on every
/// map it sees (the current one at start, then each newer one), the transport learns the
/// peer address of every node new to it, and `Peers` starts tracking new nodes, so a node
/// that joins later can be called, may call in, and has its status recorded.
///
/// Addresses are only added: a node keeps the address it was first known by (a join that
/// reuses an id with another address is refused before it reaches the map).
pub(crate) struct PeerBook {
    pub me: u64,
    pub map: MapRx,
    pub router: PeerRouter,
    pub peers: Arc<Peers>,
}

impl PeerBook {
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        loop {
            let map = self.map.borrow_and_update().clone();
            self.learn(&map);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = self.map.changed() => {
                    // The map's owner is gone (the node is shutting down).
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn learn(&self, map: &ClusterMap) {
        for n in &map.nodes {
            if n.id != self.me
                && !n.peer_addr.is_empty()
                && self.router.learn_addr(n.id, &n.peer_addr)
            {
                tracing::info!(node = n.id, addr = %n.peer_addr, epoch = map.epoch, "learned a new peer");
            }
        }
        self.peers.sync(&map.nodes);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use shoal_core::map::{DiskStatus, MemoryStatus};

    use super::*;
    use crate::cluster_map::MapCell;
    use crate::topology::Topology;

    /// A status report from node `id`: no replicas, plenty of disk.
    pub(crate) fn status(id: u64) -> NodeStatus {
        NodeStatus {
            map_epoch: 0,
            commands: 0,
            info: NodeInfo {
                id,
                peer_addr: String::new(),
                resp_addr: format!("n{id}:6379"),
                http_addr: String::new(),
                grpc_addr: String::new(),
            },
            replicas: Vec::new(),
            disk: DiskStatus {
                free_bytes: u64::MAX,
                reserve_bytes: 0,
            },
            memory: MemoryStatus {
                rss_bytes: 0,
                budget_bytes: 0,
            },
        }
    }

    /// Node `id` as the map lists it.
    fn node(id: u64) -> NodeInfo {
        NodeInfo {
            id,
            peer_addr: format!("n{id}:1"),
            resp_addr: String::new(),
            http_addr: String::new(),
            grpc_addr: String::new(),
        }
    }

    #[tokio::test]
    async fn a_newer_map_with_an_extra_node_teaches_its_address_and_tracks_its_status() {
        let members: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("n{id}:1"))).collect();
        let seed = Topology::new(1, &members, 3, 3).unwrap().map;
        let cell = MapCell::new(seed.clone());
        let router = PeerRouter::new(
            1,
            seed.cluster_id.clone(),
            Default::default(),
            Default::default(),
            tokio::runtime::Handle::current(),
        );
        // As the node does at start, from its flags.
        router.set_addr(2, "n2:1".into());
        let peers = Arc::new(Peers::new(&seed.nodes));
        peers.record(4, status(4));
        peers.set_live(4, true);
        assert!(!peers.is_up(4), "a node outside the map is ignored");

        let cancel = CancellationToken::new();
        let book = PeerBook {
            me: 1,
            map: cell.subscribe(),
            router: router.clone(),
            peers: peers.clone(),
        };
        let task = tokio::spawn(book.run(cancel.clone()));
        // The current map is learned at start: node 3, which the flags did not give the
        // router here, is learned; node 2 keeps its address, and this node is not added.
        wait_for(|| router.addr(3).is_some()).await;
        assert_eq!(router.addr(3).as_deref(), Some("n3:1"));
        assert_eq!(router.addr(2).as_deref(), Some("n2:1"));
        assert_eq!(router.addr(1), None);

        assert!(cell.offer(crate::cluster_map::grown(seed, 4, "n4:1")));
        wait_for(|| router.addr(4).is_some()).await;
        assert_eq!(router.addr(4).as_deref(), Some("n4:1"));
        peers.record(4, status(4));
        assert!(!peers.is_up(4), "up only once the failure detector says so");
        peers.set_live(4, true);
        assert!(peers.is_up(4));
        assert_eq!(peers.info(4).unwrap().resp_addr, "n4:6379");

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops when cancelled")
            .unwrap();
        router.shutdown();
    }

    #[test]
    fn sync_keeps_what_was_learned_of_known_nodes() {
        let peers = Peers::new(&[node(1), node(2)]);
        peers.record(2, status(2));
        peers.set_live(2, true);
        peers.sync(&[node(1), node(2), node(3)]);
        assert!(peers.is_up(2));
        assert_eq!(peers.info(2).unwrap().resp_addr, "n2:6379");
        assert_eq!(peers.info(3).unwrap().peer_addr, "n3:1");
        assert!(!peers.is_up(3));
    }

    #[test]
    fn down_for_counts_from_the_last_time_alive_or_from_tracking() {
        let peers = Peers::new(&[node(1), node(2)]);
        assert!(
            peers.down_for(2).is_some(),
            "never seen alive: down since tracked"
        );
        peers.set_live(2, true);
        assert_eq!(peers.down_for(2), None);
        peers.set_live(2, false);
        let first = peers.down_for(2).expect("down");
        std::thread::sleep(Duration::from_millis(5));
        peers.set_live(2, false);
        assert!(
            peers.down_for(2).unwrap() > first,
            "a second report keeps the start"
        );
        assert_eq!(
            peers.down_for(9),
            None,
            "a node outside the map is never judged"
        );
    }

    #[test]
    fn a_live_peer_whose_heartbeat_stops_growing_is_suspect() {
        let quiet = Duration::from_millis(20);
        let peers = Peers::new(&[node(1), node(2)]);
        peers.set_live(2, true);
        peers.heartbeat(2, 7, quiet);
        assert!(!peers.is_suspect(2));
        std::thread::sleep(quiet * 2);
        peers.heartbeat(2, 7, quiet);
        assert!(
            peers.is_suspect(2),
            "same heartbeat for longer than {quiet:?}"
        );
        peers.heartbeat(2, 8, quiet);
        assert!(!peers.is_suspect(2), "it grew again");
        std::thread::sleep(quiet * 2);
        peers.set_live(2, false);
        assert!(!peers.is_suspect(2), "down, not suspect");
    }

    async fn wait_for(done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
