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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use shoal_core::ShardId;
use shoal_core::map::ClusterMap;
use shoal_core::shard::META_GROUP;
use shoal_raft::TypeConfig;
use tokio_util::sync::CancellationToken;

use crate::cluster_map::MapRx;
use crate::group::{Group, Groups};

/// Most transfers one node starts per round: each makes its shard briefly refuse
/// requests, so they are spread out rather than done all at once.
const MAX_TRANSFERS_PER_ROUND: usize = 1;

/// Rounds the preferred leader must be seen caught up in a row before it gets the group:
/// a node that just came back is given time to settle (catch up on every group, lift its
/// rejoin guards) before it takes on leader work.
const ROUNDS_CAUGHT_UP: u32 = 2;

/// The service that hands each group this node leads back to its preferred leader.
pub(crate) struct LeaderBalancer {
    pub me: u64,
    pub groups: Arc<Groups>,
    /// Where the shards' preferred leaders come from (the first replica of each shard),
    /// read afresh each round.
    pub map: MapRx,
    /// The metadata group's preferred leader (its voters are not in the cluster map).
    pub meta_preferred: Option<u64>,
    /// Counts the transfers started (`NodeStats::leader_transfers`).
    pub transfers: Arc<AtomicU64>,
    pub interval: Duration,
}

impl LeaderBalancer {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Per group: consecutive rounds its preferred leader was caught up.
        let mut caught_up_rounds: Vec<u32> = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut started = 0;
            for group in self.groups.all() {
                let slot = group.id as usize;
                if caught_up_rounds.len() <= slot {
                    caught_up_rounds.resize(slot + 1, 0);
                }
                let Some(target) = self.target(&group) else {
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
                    from = self.me,
                    to = target,
                    "handing leadership back to the shard's preferred leader"
                );
                let trigger = group.raft.trigger();
                match cancel
                    .run_until_cancelled(trigger.transfer_leader(target))
                    .await
                {
                    None => return,
                    Some(Ok(())) => {
                        self.transfers.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(shard = group.id, error = %e, "leader transfer failed to start")
                    }
                }
            }
        }
    }

    /// The node this leader should hand `group` to now, if any.
    fn target(&self, group: &Group) -> Option<u64> {
        let preferred = preferred_leader(&self.map.borrow(), self.meta_preferred, group.id);
        let facts = {
            let metrics = group.raft.metrics();
            let m = metrics.borrow_watched();
            HandoverFacts::read(&m, preferred?)?
        };
        handover_target(self.me, preferred, facts)
    }
}

/// The preferred leader of `group`: the first replica the map gives a shard, or
/// `meta_preferred` for the metadata group.
pub(crate) fn preferred_leader(
    map: &ClusterMap,
    meta_preferred: Option<u64>,
    group: ShardId,
) -> Option<u64> {
    if group == META_GROUP {
        return meta_preferred;
    }
    map.replicas(group).first().copied()
}

/// What the leader's metrics say about the preferred leader (read under one metrics borrow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandoverFacts {
    /// The group's leader as this node knows it.
    pub leader: Option<u64>,
    /// The preferred leader is a voter of the effective membership, and of the committed one
    /// (both differ during a joint change).
    pub voter: bool,
    pub committed_voter: bool,
    /// The group's commit index, and the last index the leader knows the preferred leader
    /// has (None if it has none yet).
    pub committed: u64,
    pub matched: Option<u64>,
}

impl HandoverFacts {
    /// `None` when the metrics hold no replication state (this node does not lead), or none
    /// for `preferred`.
    fn read(m: &openraft::RaftMetrics<TypeConfig>, preferred: u64) -> Option<Self> {
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == preferred);
        let committed_voter = m
            .committed_membership_config
            .membership()
            .voter_ids()
            .any(|id| id == preferred);
        let matched = m
            .replication
            .as_ref()?
            .get(&preferred)?
            .as_ref()
            .map(|log_id| log_id.index);
        Some(Self {
            leader: m.current_leader,
            voter,
            committed_voter,
            committed: m.cluster_committed.as_ref().map_or(0, |id| id.index),
            matched,
        })
    }
}

/// The node leader `me` should hand its group to now, if any: the group's preferred leader,
/// when that is another node, a voter (of the committed membership too), and has every
/// committed entry.
pub(crate) fn handover_target(
    me: u64,
    preferred: Option<u64>,
    facts: HandoverFacts,
) -> Option<u64> {
    let preferred = preferred?;
    if preferred == me || facts.leader != Some(me) {
        return None;
    }
    if !facts.voter || !facts.committed_voter {
        return None;
    }
    // Everything committed, not merely close: a restarted replica keeps its rejoin guard
    // (and refuses the transfer, leaving the group leaderless for an election timeout)
    // until its log reaches the commit index.
    (facts.matched? >= facts.committed).then_some(preferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 1 leads; node 2, the preferred leader, is a caught-up voter.
    const READY: HandoverFacts = HandoverFacts {
        leader: Some(1),
        voter: true,
        committed_voter: true,
        committed: 10,
        matched: Some(10),
    };

    #[test]
    fn a_caught_up_voter_gets_the_group() {
        assert_eq!(handover_target(1, Some(2), READY), Some(2));
        let ahead = HandoverFacts {
            matched: Some(11),
            ..READY
        };
        assert_eq!(handover_target(1, Some(2), ahead), Some(2));
    }

    #[test]
    fn no_preferred_leader_or_it_is_me() {
        assert_eq!(handover_target(1, None, READY), None);
        assert_eq!(handover_target(1, Some(1), READY), None);
    }

    #[test]
    fn only_the_leader_hands_over() {
        for leader in [None, Some(2), Some(3)] {
            let facts = HandoverFacts { leader, ..READY };
            assert_eq!(handover_target(1, Some(2), facts), None, "{leader:?}");
        }
    }

    #[test]
    fn not_to_a_non_voter() {
        let facts = HandoverFacts {
            voter: false,
            committed_voter: false,
            ..READY
        };
        assert_eq!(handover_target(1, Some(2), facts), None);
    }

    #[test]
    fn not_during_a_joint_change_that_has_not_committed_it() {
        let joint = HandoverFacts {
            committed_voter: false,
            ..READY
        };
        assert_eq!(handover_target(1, Some(2), joint), None);
        let leaving = HandoverFacts {
            voter: false,
            ..READY
        };
        assert_eq!(handover_target(1, Some(2), leaving), None);
    }

    #[test]
    fn not_before_it_has_every_committed_entry() {
        let behind = HandoverFacts {
            matched: Some(9),
            ..READY
        };
        assert_eq!(handover_target(1, Some(2), behind), None);
        let empty = HandoverFacts {
            matched: None,
            ..READY
        };
        assert_eq!(handover_target(1, Some(2), empty), None);
    }

    fn three_nodes() -> ClusterMap {
        let members: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("n{id}:1"))).collect();
        crate::topology::Topology::new(1, &members, 3, 3)
            .unwrap()
            .map
    }

    #[test]
    fn preferred_leaders_come_from_the_map_but_the_metadata_groups_from_its_own() {
        let map = three_nodes();
        for shard in &map.shards {
            assert_eq!(
                preferred_leader(&map, Some(9), shard.id),
                shard.replicas.first().copied()
            );
        }
        assert_eq!(preferred_leader(&map, Some(9), META_GROUP), Some(9));
        assert_eq!(preferred_leader(&map, None, META_GROUP), None);
        assert_eq!(preferred_leader(&map, Some(9), 99), None, "no such shard");
    }

    #[test]
    fn a_newer_map_moves_the_preferred_leader() {
        let seed = three_nodes();
        let cell = crate::cluster_map::MapCell::new(seed.clone());
        let rx = cell.subscribe();
        let shard = seed.shards[0].id;
        let before = preferred_leader(&rx.borrow(), None, shard).unwrap();
        let mut newer = seed;
        newer.epoch += 1;
        newer.shards[0].replicas.rotate_left(1);
        assert!(cell.offer(newer.clone()));
        let after = preferred_leader(&rx.borrow(), None, shard).unwrap();
        assert_eq!(after, newer.shards[0].replicas[0]);
        assert_ne!(after, before);
    }

    #[test]
    fn no_replication_metrics_no_facts() {
        let m = openraft::RaftMetrics::<TypeConfig>::new_initial(1);
        assert_eq!(HandoverFacts::read(&m, 2), None);
    }
}
