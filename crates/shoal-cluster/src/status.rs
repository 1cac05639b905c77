//! Asks every peer for its status a few times a second: liveness for `cluster status`,
//! client addresses for CLUSTER SLOTS and MOVED, and leader hints for routing.

use futures_util::future::join_all;
use shoal_raft::transport::wire::{Request, Response};

use crate::node::Node;

pub async fn run(node: Node) {
    let me = node.id();
    let peers: Vec<u64> = node
        .inner
        .topology
        .map
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != me)
        .collect();
    let interval = node.tuning().status_interval;
    let timeout = interval * 4;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if node.is_stopped() {
            return;
        }
        let calls = peers.iter().map(|&peer| {
            let call = node.inner.router.call(peer, Request::Status, timeout);
            async move { (peer, call.await) }
        });
        for (peer, answer) in join_all(calls).await {
            if let Ok(Response::Status(status)) = answer {
                node.inner.peers.record(peer, status);
            }
        }
        crate::disk_guard::check_quorums(&node);
    }
}
