//! Asks every peer for its status a few times a second: liveness for `cluster status`,
//! client addresses for CLUSTER SLOTS and MOVED, and leader hints for routing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use shoal_raft::transport::PeerRouter;
use shoal_raft::transport::wire::{Request, Response};
use shoal_storage::DiskSpace;
use tokio_util::sync::CancellationToken;

use crate::group::Groups;
use crate::peers::Peers;

/// The service that polls the peers' status, then re-checks which shards this node leads
/// have a majority of voters too low on disk to take entries (`disk_guard::check_quorums`).
pub(crate) struct StatusPoll {
    pub me: u64,
    /// Every other node of the cluster.
    pub peer_ids: Vec<u64>,
    pub router: PeerRouter,
    pub peers: Arc<Peers>,
    pub groups: Arc<Groups>,
    pub disk: Arc<DiskSpace>,
    pub interval: Duration,
}

impl StatusPoll {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let timeout = self.interval * 4;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // A round waits up to `timeout` for slow peers; shutdown does not.
            if cancel
                .run_until_cancelled(self.round(timeout))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    async fn round(&self, timeout: Duration) {
        let calls = self.peer_ids.iter().map(|&peer| {
            let call = self.router.call(peer, Request::Status, timeout);
            async move { (peer, call.await) }
        });
        for (peer, answer) in join_all(calls).await {
            if let Ok(Response::Status(status)) = answer {
                self.peers.record(peer, status);
            }
        }
        crate::disk_guard::check_quorums(self.me, self.disk.status(), &self.groups, &self.peers);
    }
}
