//! The peer transport's view of a node (`PeerHandler`): its groups for Raft traffic, its
//! status, and, once the node has started, forwarded commands and administration requests.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use shoal_core::map::{MemoryStatus, NodeInfo, NodeStatus, ReplicaStatus};
use shoal_core::{Command, Consistency, Error, Reply, ShardId};
use shoal_raft::Raft;
use shoal_raft::transport::PeerHandler;

use crate::admin::AdminRequest;
use crate::catch_up::{self, CatchingUp};
use crate::cluster_map::MapCell;
use crate::control::Control;
use crate::executor::Executor;
use crate::group::Groups;
use crate::memory::process_rss_bytes;

/// The peer transport's view of this node: groups register as they open, commands are
/// served once the node is fully started.
pub(crate) struct Handler {
    pub(crate) groups: Arc<Groups>,
    pub(crate) source: StatusSource,
    pub(crate) disk: Arc<shoal_storage::DiskSpace>,
    pub(crate) catching_up: Arc<CatchingUp>,
    /// Set once the node has started (`Handler::serve`).
    pub(crate) served: OnceLock<Served>,
    pub(crate) info: NodeInfo,
    /// Gossip received over the peer transport (TLS clusters).
    pub(crate) gossip: crate::gossip_peer::GossipInbox,
}

/// What a node tells its peers about itself (a status request, gossip): its replicas'
/// leaders and progress, its disk, its memory and the map epoch it knows.
#[derive(Clone)]
pub(crate) struct StatusSource {
    pub(crate) info: NodeInfo,
    pub(crate) groups: Arc<Groups>,
    pub(crate) disk: Arc<shoal_storage::DiskSpace>,
    pub(crate) map: Arc<MapCell>,
    pub(crate) memory_budget_bytes: u64,
    /// Commands accepted since start (the executor counts them).
    pub(crate) commands: Arc<std::sync::atomic::AtomicU64>,
}

impl StatusSource {
    pub(crate) fn status(&self) -> NodeStatus {
        node_status(
            &self.info,
            &self.groups,
            &self.disk,
            self.memory_budget_bytes,
            self.map.current().epoch,
            self.commands.load(Ordering::Relaxed),
        )
    }
}

/// What answers requests once the node has started.
pub(crate) struct Served {
    pub(crate) executor: Arc<Executor>,
    pub(crate) control: Control,
}

impl Handler {
    /// Starts answering forwarded commands and administration requests.
    pub(crate) fn serve(&self, served: Served) {
        let _ = self.served.set(served);
    }
}

fn node_status(
    info: &NodeInfo,
    groups: &Groups,
    disk: &shoal_storage::DiskSpace,
    memory_budget_bytes: u64,
    map_epoch: u64,
    commands: u64,
) -> NodeStatus {
    NodeStatus {
        info: info.clone(),
        replicas: groups
            .data()
            .iter()
            .map(|g| {
                let m = g.raft.metrics().borrow_watched().clone();
                ReplicaStatus {
                    shard: g.id,
                    leader: m.current_leader,
                    term: m.current_term,
                    last_applied: m.last_applied.map_or(0, |id| id.index),
                    key_count: g.key_count.load(Ordering::Relaxed),
                }
            })
            .collect(),
        disk: disk.status(),
        memory: MemoryStatus {
            rss_bytes: process_rss_bytes().unwrap_or(0),
            budget_bytes: memory_budget_bytes,
        },
        map_epoch,
        commands,
    }
}

impl PeerHandler for Handler {
    fn group(&self, group: ShardId) -> Option<Raft> {
        self.groups.get(group).map(|g| g.raft.clone())
    }

    fn gossip(&self, from: u64, payload: Bytes) {
        self.gossip.deliver(from, payload);
    }

    fn admin(
        &self,
        from: u64,
        guest: Option<shoal_raft::transport::GuestIdentity>,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let Some(control) = self.served.get().map(|s| s.control.clone()) else {
            return Box::pin(async { Err("this node is still starting".to_string()) });
        };
        Box::pin(async move {
            let answer = match crate::admin::decode::<AdminRequest>(&request) {
                Ok(request) => control.answer(from, guest, request).await,
                Err(e) => Err(e),
            };
            Ok(crate::admin::encode(&answer))
        })
    }

    fn forward(
        &self,
        shard: ShardId,
        command: Command,
        consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        match self.served.get() {
            Some(served) => Box::pin(served.executor.execute_here(shard, command, consistency)),
            None => Box::pin(async move { Err(Error::NoLeader { shard }) }),
        }
    }

    fn refuses_votes(&self, group: ShardId) -> Option<String> {
        self.catching_up
            .contains(group)
            .then(|| catch_up::refusal(self.info.id, group))
    }

    fn refuses_entries(&self, group: ShardId) -> Option<String> {
        crate::disk_guard::refuses_entries(&self.disk, self.info.id, group)
    }

    fn refuses_snapshot_install(&self, group: ShardId, bytes: u64) -> Option<String> {
        crate::disk_guard::refuses_install(&self.disk, self.info.id, group, bytes)
    }

    fn on_leader_contact(&self, group: ShardId) {
        self.catching_up.heard_from_leader(group);
    }

    fn status(&self) -> NodeStatus {
        self.source.status()
    }
}
