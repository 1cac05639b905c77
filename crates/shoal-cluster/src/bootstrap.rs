//! Starting groups and storing the bootstrap cluster map in the metadata group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use openraft::{BasicNode, Config};
use shoal_core::map::ClusterMap;
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, Limits, ShardId, WriteOp};
use shoal_raft::transport::PeerRouter;
use shoal_raft::{LogStore, NetworkFactory, Raft, ShardStateMachine};
use shoal_storage::Engine;
use tokio_util::sync::CancellationToken;

use crate::cluster_map::CLUSTER_MAP_KEY;
use crate::config::Tuning;
use crate::group::{Group, Groups};
use crate::start_error::storage_err;

/// Size limits of the metadata group's own records.
pub(crate) const META_LIMITS: Limits = Limits {
    max_key_bytes: 1024,
    max_value_bytes: 64 * 1024 * 1024,
};

/// Opens this node's replica of one group. `founders` is set on the one node that
/// initialises the group (with every founding replica and its peer address); it is
/// ignored if the group's log shows it was initialised before. Raft tasks, the proposer
/// and the read gate run on `raft_runtime`, so a storage call that blocks them never blocks
/// the front ends' runtime.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_group(
    raft_runtime: &tokio::runtime::Handle,
    engine: &Engine,
    id: ShardId,
    node_id: u64,
    config: &Arc<Config>,
    limits: Limits,
    tuning: &Tuning,
    (recent_log_bytes, recent_log_total): (usize, Arc<AtomicU64>),
    founders: Option<Vec<(u64, String)>>,
    router: PeerRouter,
) -> Result<Group, Error> {
    let (engine, config) = (engine.clone(), config.clone());
    let (max_pending, max_inflight) = (tuning.max_pending_per_shard, tuning.max_inflight_entries);
    let disk = engine.disk().clone();
    let start = async move {
        let log = LogStore::open_with_cache(engine.clone(), id, recent_log_bytes, recent_log_total)
            .map_err(storage_err)?;
        let key_count = Arc::new(AtomicU64::new(0));
        let sm =
            ShardStateMachine::open(engine, id, limits, key_count.clone()).map_err(storage_err)?;
        let network = NetworkFactory::new(router, id);
        let raft = Raft::new(node_id, config, network, log, sm)
            .await
            .map_err(|e| Error::Internal(format!("starting group {id}: {e}")))?;
        if let Some(founders) = founders {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<u64, BasicNode> = founders
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode::new(addr)))
                    .collect();
                raft.initialize(members)
                    .await
                    .map_err(|e| Error::Internal(format!("initialising group {id}: {e}")))?;
            }
        }
        Ok(Group::start(
            id,
            node_id,
            raft,
            key_count,
            max_pending,
            max_inflight,
            disk,
        ))
    };
    raft_runtime
        .spawn(start)
        .await
        .map_err(|e| Error::Internal(format!("starting group {id}: {e}")))?
}

pub(crate) async fn wait_leader(
    group: &Group,
    node_id: u64,
    timeout: Duration,
) -> Result<(), Error> {
    group
        .raft
        .wait(Some(timeout))
        .current_leader(node_id, "startup")
        .await
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("group {} did not elect a leader: {e}", group.id)))
}

/// Makes sure the metadata group holds the bootstrap cluster map, through this node's
/// replica `meta` of it. Every node computes the same map, so whichever replica leads first
/// stores it, with a compare-and-set so it is stored once. `Ok(true)` once it is stored;
/// `Ok(false)` when this node cannot tell yet (it does not lead the metadata group and has
/// not applied the map).
pub(crate) async fn publish_map(
    meta: &Group,
    engine: &Engine,
    map: &ClusterMap,
) -> Result<bool, Error> {
    if engine
        .get_record(META_GROUP, CLUSTER_MAP_KEY)
        .map_err(storage_err)?
        .is_some()
    {
        return Ok(true);
    }
    if !meta.is_leader() {
        return Ok(false);
    }
    let value = serde_json::to_vec(map).map_err(|e| Error::Internal(e.to_string()))?;
    let op = WriteOp::Put {
        key: Bytes::from_static(CLUSTER_MAP_KEY),
        value: Bytes::from(value),
        condition: shoal_core::Condition::IfVersion(0),
        expiry: shoal_core::Expiry::Clear,
        return_old: false,
    };
    match meta.propose(op)?.await.map_err(|_| Error::ShuttingDown)? {
        Ok(_) | Err(Error::VersionMismatch { .. }) => Ok(true),
        Err(Error::NotLeader { .. } | Error::NoLeader { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The service that stores the bootstrap cluster map on a node of a multi-node cluster
/// with a metadata replica: it retries `publish_map` every 500 ms until the map is stored.
pub(crate) struct MapPublisher {
    pub groups: Arc<Groups>,
    pub engine: Engine,
    pub map: ClusterMap,
}

impl MapPublisher {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let Some(meta) = self.groups.get(META_GROUP) else {
            return;
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let publish = publish_map(&meta, &self.engine, &self.map);
            match cancel.run_until_cancelled(publish).await {
                None => return,
                Some(Ok(true)) => {
                    tracing::info!("the cluster map is stored in the metadata group");
                    return;
                }
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "storing the cluster map failed; will retry")
                }
            }
        }
    }
}
