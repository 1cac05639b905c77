//! Starting groups and bootstrapping the cluster map in the metadata group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use openraft::{BasicNode, Config};
use shoal_core::map::{ClusterMap, NodeInfo, ShardInfo};
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, Limits, ShardId, ShardLayout, WriteOp};
use shoal_raft::{LogStore, NetworkFactory, Raft, ShardStateMachine};
use shoal_storage::Engine;

use crate::group::Group;
use crate::node::{NodeConfig, Tuning, storage_err};

/// The key under which the metadata group stores the cluster map.
pub(crate) const CLUSTER_MAP_KEY: &[u8] = b"shoal/cluster-map";

/// Size limits of the metadata group's own records.
pub(crate) const META_LIMITS: Limits = Limits {
    max_key_bytes: 1024,
    max_value_bytes: 64 * 1024 * 1024,
};

/// Opens one group. Its Raft tasks, proposer and read gate run on `raft_runtime`, so a
/// storage call that blocks them never blocks the front ends' runtime.
pub(crate) async fn open_group(
    raft_runtime: &tokio::runtime::Handle,
    engine: &Engine,
    id: ShardId,
    node_id: u64,
    config: &Arc<Config>,
    limits: Limits,
    tuning: &Tuning,
) -> Result<Group, Error> {
    let (engine, config) = (engine.clone(), config.clone());
    let (max_pending, max_inflight) = (tuning.max_pending_per_shard, tuning.max_inflight_entries);
    let start = async move {
        let log = LogStore::open(engine.clone(), id).map_err(storage_err)?;
        let key_count = Arc::new(AtomicU64::new(0));
        let sm =
            ShardStateMachine::open(engine, id, limits, key_count.clone()).map_err(storage_err)?;
        let raft = Raft::new(node_id, config, NetworkFactory, log, sm)
            .await
            .map_err(|e| Error::Internal(format!("starting group {id}: {e}")))?;
        if !raft
            .is_initialized()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
        {
            let mut members = BTreeMap::new();
            members.insert(node_id, BasicNode::new(""));
            raft.initialize(members)
                .await
                .map_err(|e| Error::Internal(format!("initialising group {id}: {e}")))?;
        }
        Ok(Group::start(
            id,
            node_id,
            raft,
            key_count,
            max_pending,
            max_inflight,
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

/// Reads the cluster map from the metadata group, creating it on first start.
pub(crate) async fn bootstrap_map(
    engine: &Engine,
    meta: &Group,
    config: &NodeConfig,
    tuning: &Tuning,
) -> Result<ClusterMap, Error> {
    wait_leader(meta, config.id, tuning.startup_timeout).await?;
    // Everything committed before the restart is applied once a read barrier passes.
    meta.read_barrier()?
        .await
        .map_err(|_| Error::ShuttingDown)??;
    let me = NodeInfo {
        id: config.id,
        resp_addr: config.resp_addr.clone(),
        http_addr: config.http_addr.clone(),
    };
    let stored = engine
        .get_record(META_GROUP, CLUSTER_MAP_KEY)
        .map_err(storage_err)?;
    let (map, version) = match stored {
        Some(record) => {
            let map: ClusterMap = serde_json::from_slice(&record.value)
                .map_err(|e| Error::Storage(format!("cluster map is unreadable: {e}")))?;
            if map.nodes.iter().any(|n| n == &me) {
                return Ok(map);
            }
            (
                ClusterMap {
                    epoch: map.epoch + 1,
                    nodes: vec![me],
                    ..map
                },
                record.version,
            )
        }
        None => {
            let layout = ShardLayout::even(config.shards).map_err(Error::Invalid)?;
            let map = ClusterMap {
                cluster_id: format!("{:016x}", rand::random::<u64>()),
                epoch: 1,
                replication: 1,
                nodes: vec![me],
                shards: layout
                    .shards()
                    .iter()
                    .map(|(id, range)| ShardInfo {
                        id: *id,
                        range: *range,
                        replicas: vec![config.id],
                    })
                    .collect(),
            };
            (map, 0)
        }
    };
    let value = serde_json::to_vec(&map).map_err(|e| Error::Internal(e.to_string()))?;
    let op = WriteOp::Put {
        key: Bytes::from_static(CLUSTER_MAP_KEY),
        value: Bytes::from(value),
        condition: shoal_core::Condition::IfVersion(version),
        expiry: shoal_core::Expiry::Clear,
        return_old: false,
    };
    meta.propose(op)?.await.map_err(|_| Error::ShuttingDown)??;
    Ok(map)
}
