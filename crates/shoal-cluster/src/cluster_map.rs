//! This node's cluster map, as a `watch` that services and front ends can subscribe to.
//!
//! The watch holds this node's *latest known* map, not necessarily the cluster's newest:
//! it is seeded at start from the bootstrap map every node computes from its flags
//! (`Topology`), and only ever moves to a newer epoch of the same cluster (`MapCell::offer`).
//! Only the metadata group's replicas (at most `MAX_META_VOTERS` nodes) hold the stored map
//! locally; feeding the others comes with the join work.
//!
//! A node with a metadata replica reads the stored map at start (`read_stored`) and offers
//! it, so a restarted node resumes from the newest map it had applied, not the seed; from
//! then on its `MapFollower` offers every map the metadata group applies.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use shoal_core::Error;
use shoal_core::map::ClusterMap;
use shoal_core::shard::META_GROUP;
use shoal_storage::Engine;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::group::Groups;
use crate::start_error::storage_err;

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
        // Kept across rounds: a fresh `raft.metrics()` is a copy of a receiver that has
        // seen no update, so its `changed()` is ready at once, and taking one per round
        // spun this loop on a core of every node.
        let mut watching = None;
        loop {
            let metrics = match &mut watching {
                Some(metrics) => metrics,
                // The metadata replica may open (or close) at runtime: looked up again
                // after the one watched stops.
                None => match self.groups.get(META_GROUP) {
                    Some(meta) => watching.insert(meta.raft.metrics()),
                    None => {
                        tokio::select! {
                            biased;
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => continue,
                        }
                    }
                },
            };
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
                        watching = None;
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
        grpc_addr: String::new(),
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
                grpc_addr: String::new(),
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
