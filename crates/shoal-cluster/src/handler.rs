//! The peer transport's view of a node (`PeerHandler`): its groups for Raft traffic, and,
//! once the node has started, forwarded commands, status and administration requests.

use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use shoal_core::map::{MemoryStatus, NodeInfo, NodeStatus};
use shoal_core::{Command, Consistency, Error, Reply, ShardId};
use shoal_raft::Raft;
use shoal_raft::transport::PeerHandler;

use crate::admin::AdminRequest;
use crate::catch_up::{self, CatchingUp};
use crate::group::Groups;
use crate::memory::process_rss_bytes;
use crate::node::{Inner, Node};

/// The peer transport's view of this node: groups register as they open, commands are
/// served once the node is fully started.
pub(crate) struct Handler {
    pub(crate) groups: Arc<Groups>,
    pub(crate) disk: Arc<shoal_storage::DiskSpace>,
    pub(crate) catching_up: Arc<CatchingUp>,
    pub(crate) node: OnceLock<Weak<Inner>>,
    pub(crate) info: NodeInfo,
    pub(crate) memory_budget_bytes: u64,
}

impl Handler {
    fn node(&self) -> Option<Node> {
        self.node
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| Node { inner })
    }
}

impl PeerHandler for Handler {
    fn group(&self, group: ShardId) -> Option<Raft> {
        self.groups.get(group).map(|g| g.raft.clone())
    }

    fn admin(
        &self,
        from: u64,
        guest: bool,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let Some(node) = self.node() else {
            return Box::pin(async { Err("this node is still starting".to_string()) });
        };
        Box::pin(async move {
            let answer = match crate::admin::decode::<AdminRequest>(&request) {
                Ok(request) => node.inner.control.answer(from, guest, request).await,
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
        match self.node() {
            Some(node) => Box::pin(node.execute_here(shard, command, consistency)),
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
        match self.node() {
            Some(node) => node.status(),
            None => NodeStatus {
                info: self.info.clone(),
                replicas: Vec::new(),
                disk: self.disk.status(),
                memory: MemoryStatus {
                    rss_bytes: process_rss_bytes().unwrap_or(0),
                    budget_bytes: self.memory_budget_bytes,
                },
                map_epoch: 0,
            },
        }
    }
}
