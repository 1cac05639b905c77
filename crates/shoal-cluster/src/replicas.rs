//! Which replicas this node hosts, kept in step with the cluster map at runtime: the
//! `ReplicaKeeper` opens a group when the map gives this node a replica of it (as a learner,
//! empty: its leader streams it a snapshot), and once the map no longer lists this node in a
//! group it stops the group and deletes its log, metadata and data (in bounded batches, on a
//! blocking thread, so the node's other groups keep serving) to give the disk space back.
//!
//! Why deleting is safe: the mover changes a group's membership first and records the
//! result in the map after the change committed, so a map that no longer lists this node in
//! a group means the group goes on without it. Every map is saved to the data directory
//! (`saved_map`) before this node acts on it, so a restart never goes back to a map older
//! than one it acted on, and never deletes a replica a newer map still counts on.
//!
//! Why a node may later host a new replica of a group it once left, under the same node id:
//! its old replica's vote and log are deleted with it, and the new one starts as a learner,
//! which takes no part in elections or commit until the leader has brought it up to date and
//! a committed membership change makes it a voter. By then it has accepted entries from that
//! leader, so its vote is the leader's (committed) one: it cannot grant a second vote in any
//! term its old incarnation voted in, because those terms are all behind the current leader's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::Config;
use shoal_core::map::ClusterMap;
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, Limits, ShardId};
use shoal_raft::ShardStateMachine;
use shoal_raft::transport::PeerRouter;
use shoal_storage::Engine;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{META_LIMITS, open_group};
use crate::cluster_map::MapRx;
use crate::config::Tuning;
use crate::group::{Group, Groups};
use crate::start_error::storage_err;

/// Everything needed to open this node's replica of a group.
#[derive(Clone)]
pub(crate) struct GroupOpener {
    pub raft_runtime: tokio::runtime::Handle,
    pub engine: Engine,
    pub me: u64,
    pub raft_config: Arc<Config>,
    pub tuning: Tuning,
    /// Client data limits (the metadata group has its own, `META_LIMITS`).
    pub limits: Limits,
    /// Each group's share of the Raft log cache, and the counter of all groups' use.
    pub recent_log: (usize, Arc<AtomicU64>),
    pub router: PeerRouter,
}

impl GroupOpener {
    /// Opens (or reopens) this node's replica of `group`; `founders` initialises it (see
    /// `open_group`).
    pub(crate) async fn open(
        &self,
        group: ShardId,
        founders: Option<Vec<(u64, String)>>,
    ) -> Result<Group, Error> {
        let limits = if group == META_GROUP {
            // The metadata group holds shoal's own records, not client data.
            META_LIMITS
        } else {
            self.limits
        };
        open_group(
            &self.raft_runtime,
            &self.engine,
            group,
            self.me,
            &self.raft_config,
            limits,
            &self.tuning,
            self.recent_log.clone(),
            founders,
            self.router.clone(),
        )
        .await
    }
}

/// Stops `group` on this node and deletes everything it stored.
pub(crate) async fn close_and_delete(
    groups: &Groups,
    engine: &Engine,
    group: ShardId,
) -> Result<(), Error> {
    if let Some(open) = groups.remove(group)
        && let Err(e) = open.raft.shutdown().await
    {
        tracing::warn!(group, error = %e, "a removed replica did not stop cleanly");
    }
    let engine = engine.clone();
    let deleted = tokio::task::spawn_blocking(move || delete_group(&engine, group))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    tracing::info!(
        group,
        ?deleted,
        "deleted this node's replica of a group it no longer hosts"
    );
    Ok(())
}

/// Deletes everything stored for `group` here, its snapshot files (built, and being
/// received) included. Blocks: call it from a blocking thread, with the group stopped.
pub(crate) fn delete_group(
    engine: &Engine,
    group: ShardId,
) -> Result<shoal_storage::GroupDeletion, Error> {
    let mut files = Vec::new();
    for dir in [
        ShardStateMachine::snapshot_dir(engine),
        engine.dir().join("snapshots-incoming"),
    ] {
        files.extend(ShardStateMachine::group_snapshot_files(&dir, group).map_err(storage_err)?);
    }
    engine.delete_group(group, &files).map_err(storage_err)
}

/// The service that opens and closes this node's replicas as the cluster map changes.
pub(crate) struct ReplicaKeeper {
    pub me: u64,
    pub map: MapRx,
    pub groups: Arc<Groups>,
    pub opener: GroupOpener,
    pub data_dir: PathBuf,
    /// Set when the map says this node was removed: the node then refuses every request.
    pub removed: Arc<AtomicBool>,
}

/// How long the keeper waits before retrying a group it failed to open or delete.
const RETRY: Duration = Duration::from_secs(1);

impl ReplicaKeeper {
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut saved_epoch = 0;
        loop {
            let map = self.map.borrow_and_update().clone();
            let mut settled = true;
            if map.epoch > saved_epoch {
                match crate::join::save_map(&self.data_dir, &map) {
                    Ok(()) => saved_epoch = map.epoch,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot save the cluster map; not acting on it yet");
                        settled = false;
                    }
                }
            }
            if settled {
                match cancel.run_until_cancelled(self.reconcile(&map)).await {
                    None => return,
                    Some(done) => settled = done,
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = self.map.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RETRY), if !settled => {}
            }
        }
    }

    /// Opens what `map` gives this node and deletes what it no longer does; true when
    /// everything succeeded.
    async fn reconcile(&self, map: &ClusterMap) -> bool {
        if map.removed.contains(&self.me) || map.dead.contains(&self.me) {
            if !self.removed.swap(true, Ordering::SeqCst) {
                tracing::error!("{}", crate::join::removed_error(self.me, map));
            }
            // Stop every replica (keeping its data for whoever inspects the machine): a
            // node declared dead was replaced, and its groups must not hear from it again.
            for group in self.groups.all() {
                if let Some(open) = self.groups.remove(group.id)
                    && let Err(e) = open.raft.shutdown().await
                {
                    tracing::warn!(group = group.id, error = %e, "a replica did not stop cleanly");
                }
            }
            return true;
        }
        if map.node(self.me).is_none() {
            // Removed (or not admitted yet): touch nothing; the node refuses to serve.
            return true;
        }
        let wanted = map.groups_of(self.me);
        let mut ok = true;
        for group in &wanted {
            if self.groups.contains(*group) {
                continue;
            }
            match self.opener.open(*group, None).await {
                Ok(opened) => {
                    tracing::info!(
                        group,
                        epoch = map.epoch,
                        "opened a new replica given to this node"
                    );
                    self.groups.insert(opened);
                }
                Err(e) => {
                    tracing::warn!(group, error = %e, "cannot open a replica given to this node; will retry");
                    ok = false;
                }
            }
        }
        let engine = &self.opener.engine;
        let on_disk = match engine.groups_with_state() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the groups stored on this node");
                return false;
            }
        };
        let open: Vec<ShardId> = self.groups.all().iter().map(|g| g.id).collect();
        let mut stale: Vec<ShardId> = open.into_iter().chain(on_disk).collect();
        stale.sort_unstable();
        stale.dedup();
        stale.retain(|g| !wanted.contains(g));
        for group in stale {
            if let Err(e) = close_and_delete(&self.groups, engine, group).await {
                tracing::warn!(group, error = %e, "cannot delete a replica this node no longer hosts; will retry");
                ok = false;
            }
        }
        ok
    }
}
