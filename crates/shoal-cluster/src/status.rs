//! Asks every peer for its status a few times a second: liveness for `cluster status`,
//! client addresses for CLUSTER SLOTS and MOVED, and leader hints for routing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use shoal_core::map::ClusterMap;
use shoal_raft::transport::PeerRouter;
use shoal_raft::transport::wire::{Request, Response};
use shoal_storage::DiskSpace;
use tokio_util::sync::CancellationToken;

use crate::cluster_map::{MapCell, MapRx};
use crate::group::Groups;
use crate::peers::Peers;

/// The service that polls the peers' status, then re-checks which shards this node leads
/// have a majority of voters too low on disk to take entries (`disk_guard::check_quorums`).
pub(crate) struct StatusPoll {
    pub me: u64,
    /// The cluster map: every other node in it is polled (read afresh each round).
    pub map: MapRx,
    /// Where a newer map learned from a peer goes.
    pub cell: Arc<MapCell>,
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
        let peer_ids = peer_ids(&self.map.borrow(), self.me);
        let calls = peer_ids.into_iter().map(|peer| {
            let call = self.router.call(peer, Request::Status, timeout);
            async move { (peer, call.await) }
        });
        let mut newest: Option<(u64, u64)> = None;
        for (peer, answer) in join_all(calls).await {
            if let Ok(Response::Status(status)) = answer {
                if newest.is_none_or(|(_, e)| status.map_epoch > e) {
                    newest = Some((peer, status.map_epoch));
                }
                self.peers.record(peer, status);
            }
        }
        // A peer knows a newer map (this node has no metadata replica, or its replica
        // lags): ask that peer for it.
        if let Some((peer, epoch)) = newest
            && epoch > self.cell.current().epoch
        {
            let ask = Request::Admin(crate::admin::encode(&crate::admin::AdminRequest::Map));
            if let Ok(Response::Admin(answer)) = self.router.call(peer, ask, timeout).await
                && let Ok(Ok(crate::admin::AdminReply::Map(map))) = crate::admin::decode::<
                    Result<crate::admin::AdminReply, shoal_core::Error>,
                >(&answer)
                && self.cell.offer(map)
            {
                tracing::info!(
                    epoch,
                    from = peer,
                    "adopted a newer cluster map from a peer"
                );
            }
        }
        crate::disk_guard::check_quorums(self.me, self.disk.status(), &self.groups, &self.peers);
    }
}

/// Every node of `map` but `me`.
fn peer_ids(map: &ClusterMap, me: u64) -> Vec<u64> {
    map.nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != me)
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn every_node_of_the_map_but_me_and_a_newer_map_adds_its_nodes() {
        let members: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("n{id}:1"))).collect();
        let seed = crate::topology::Topology::new(2, &members, 3, 3)
            .unwrap()
            .map;
        let cell = MapCell::new(seed.clone());
        let rx = cell.subscribe();
        assert_eq!(peer_ids(&rx.borrow(), 2), vec![1, 3]);
        assert!(cell.offer(crate::cluster_map::grown(seed, 4, "n4:1")));
        assert_eq!(peer_ids(&rx.borrow(), 2), vec![1, 3, 4]);
    }
}
