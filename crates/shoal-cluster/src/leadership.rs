//! Leader balance: each group's leader hands leadership back to the group's preferred
//! leader (the first replica placement gives it, the node that led it at bootstrap) once
//! that node is a caught-up voter again.
//!
//! Without this, a node that restarts after a failover leads nothing until other nodes
//! fail, and the survivors carry every shard's leader work (writes, linearizable reads)
//! for good. Placement spreads first replicas evenly, so preferred leaders are balanced.
//!
//! The hand-over is openraft's leader transfer: the leader stops accepting writes and
//! confirming reads at once (requests are retried at the new leader by the router), then
//! asks the target to campaign. A target that turns out unable to win (it refuses while its
//! rejoin guard is up) costs one election timeout, after which any voter may lead again.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::group::Group;
use crate::node::Node;

/// Most transfers one node starts per round: each makes its shard briefly refuse
/// requests, so they are spread out rather than done all at once.
const MAX_TRANSFERS_PER_ROUND: usize = 1;

/// Rounds the preferred leader must be seen caught up in a row before it gets the group:
/// a node that just came back is given time to settle (catch up on every group, lift its
/// rejoin guards) before it takes on leader work.
const ROUNDS_CAUGHT_UP: u32 = 2;

pub async fn run(node: Node, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Per group: consecutive rounds its preferred leader was caught up.
    let mut caught_up_rounds: Vec<u32> = Vec::new();
    loop {
        ticker.tick().await;
        if node.is_stopped() {
            return;
        }
        let mut started = 0;
        for group in node.all_groups() {
            let slot = group.id as usize;
            if caught_up_rounds.len() <= slot {
                caught_up_rounds.resize(slot + 1, 0);
            }
            let Some(target) = handover_target(&node, group) else {
                caught_up_rounds[slot] = 0;
                continue;
            };
            caught_up_rounds[slot] += 1;
            if caught_up_rounds[slot] < ROUNDS_CAUGHT_UP || started >= MAX_TRANSFERS_PER_ROUND {
                continue;
            }
            caught_up_rounds[slot] = 0;
            started += 1;
            tracing::info!(
                shard = group.id,
                from = node.id(),
                to = target,
                "handing leadership back to the shard's preferred leader"
            );
            match group.raft.trigger().transfer_leader(target).await {
                Ok(()) => {
                    node.inner
                        .leader_transfers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(shard = group.id, error = %e, "leader transfer failed to start")
                }
            }
        }
    }
}

/// The node this leader should hand `group` to now, if any: its preferred leader, when
/// that is another node, a voter, and has every committed entry.
fn handover_target(node: &Node, group: &Group) -> Option<u64> {
    let me = node.id();
    let preferred = *node.preferred_leader(group.id)?;
    if preferred == me {
        return None;
    }
    let metrics = group.raft.metrics();
    let m = metrics.borrow_watched();
    if m.current_leader != Some(me) {
        return None;
    }
    let is_voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == preferred);
    let is_voter_committed = m
        .committed_membership_config
        .membership()
        .voter_ids()
        .any(|id| id == preferred);
    if !is_voter || !is_voter_committed {
        return None;
    }
    // Everything committed, not merely close: a restarted replica keeps its rejoin guard
    // (and refuses the transfer, leaving the group leaderless for an election timeout)
    // until its log reaches the commit index.
    let committed = m.cluster_committed.as_ref().map_or(0, |id| id.index);
    let matched = m
        .replication
        .as_ref()?
        .get(&preferred)?
        .as_ref()
        .map(|log_id| log_id.index)?;
    (matched >= committed).then_some(preferred)
}
