//! Rebalancing plans: from each shard's replicas as they are to the target placement
//! ([`crate::placement::place`] over the active nodes), one replica change per shard at a
//! time. Pure and deterministic, so the mover on the metadata leader (which performs and
//! records the moves) and its tests agree on what comes next.
//!
//! Rules:
//! 1. At most one move per shard in a plan. A shard that already has a move in flight (or a
//!    learner left from one) gets none: the mover finishes or rolls that one back first.
//! 2. With `C` the shard's voters and `T` its target replicas, a move adds the first node of
//!    `T \ C` in target order (the preferred leader comes in first) and removes the last of
//!    `C \ T` in current order (the first replica, usually the leader, leaves last).
//! 3. Add and remove are paired while both sets are non-empty; an under-replicated shard only
//!    gains a replica, an over-replicated one only loses one. A move never removes a node of
//!    `T`, and it is executed add-before-remove (learner, catch up, membership change), so a
//!    shard never has fewer than `min(|C|, |T|)` up-to-date voters during it.
//! 4. Each move lowers the shard's `max(|T \ C|, |C \ T|)` by exactly one, and no single move
//!    can do more, so following plans takes exactly [`distance`] moves: the minimum.
//! 5. Throttling (moves in flight per node and per cluster, pausing) is the mover's job:
//!    `plan` lists every shard's next move, and the mover takes what its limits allow.

use serde::{Deserialize, Serialize};

use crate::map::ShardInfo;
use crate::placement::Placement;
use crate::shard::ShardId;

/// One shard's replicas as they are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReplicas {
    pub shard: ShardId,
    /// Voters, preferred leader first.
    pub voters: Vec<u64>,
    /// Replicas being added, not yet voters.
    pub learners: Vec<u64>,
    /// A move of this shard is in flight.
    pub moving: bool,
}

impl From<&ShardInfo> for ShardReplicas {
    fn from(shard: &ShardInfo) -> Self {
        Self {
            shard: shard.id,
            voters: shard.replicas.clone(),
            learners: Vec::new(),
            moving: false,
        }
    }
}

/// One replica change of one shard, executed as: add `add` as a learner, catch it up, then
/// one membership change that makes it a voter and removes `remove`. Never both `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Move {
    pub shard: ShardId,
    pub add: Option<u64>,
    pub remove: Option<u64>,
}

impl Move {
    /// The shard's voters once this move is done: the target's nodes in target order (so its
    /// preferred leader comes first), then any others in their current order.
    pub fn apply(&self, voters: &[u64], target: &[u64]) -> Vec<u64> {
        let mut after: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|n| Some(*n) != self.remove)
            .collect();
        if let Some(add) = self.add
            && !after.contains(&add)
        {
            after.push(add);
        }
        let rank = |n: &u64| target.iter().position(|t| t == n).unwrap_or(usize::MAX);
        // Stable: nodes outside the target keep their order, after the target's.
        after.sort_by_key(rank);
        after
    }
}

/// The next move of every shard whose voters differ from its target, by ascending shard id.
/// Shards with a move in flight, and shards the target does not place, get none.
pub fn plan(current: &[ShardReplicas], target: &Placement) -> Vec<Move> {
    let mut moves: Vec<Move> = current
        .iter()
        .filter(|s| !s.moving && s.learners.is_empty())
        .filter_map(|s| next_move(s.shard, &s.voters, target.replicas(s.shard)))
        .collect();
    moves.sort();
    moves
}

/// The moves still needed to reach `target`: the sum over shards of
/// `max(|T \ C|, |C \ T|)`. Each [`plan`] move lowers it by exactly one.
pub fn distance(current: &[ShardReplicas], target: &Placement) -> usize {
    current
        .iter()
        .map(|s| {
            let goal = target.replicas(s.shard);
            if goal.is_empty() {
                return 0;
            }
            let missing = goal.iter().filter(|n| !s.voters.contains(n)).count();
            let extra = s.voters.iter().filter(|n| !goal.contains(n)).count();
            missing.max(extra)
        })
        .sum()
}

fn next_move(shard: ShardId, voters: &[u64], goal: &[u64]) -> Option<Move> {
    if goal.is_empty() {
        return None;
    }
    let add = goal.iter().copied().find(|n| !voters.contains(n));
    let remove = voters.iter().copied().rev().find(|n| !goal.contains(n));
    // Only lose a replica without a replacement when the shard has more than its target.
    let remove = match (add, remove) {
        (None, Some(_)) if voters.len() <= goal.len() => None,
        (_, remove) => remove,
    };
    (add.is_some() || remove.is_some()).then_some(Move { shard, add, remove })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::placement::{PlacementNode, place};

    fn nodes(ids: &[u64]) -> Vec<PlacementNode> {
        ids.iter()
            .map(|&id| PlacementNode { id, weight: 1 })
            .collect()
    }

    fn shard(id: ShardId, voters: &[u64]) -> ShardReplicas {
        ShardReplicas {
            shard: id,
            voters: voters.to_vec(),
            learners: Vec::new(),
            moving: false,
        }
    }

    /// The placement of one shard on exactly `replicas` (rf = their number).
    fn target_of(replicas: &[u64]) -> Placement {
        place(&nodes(replicas), &[1], replicas.len() as u32).unwrap()
    }

    fn mv(shard: ShardId, add: Option<u64>, remove: Option<u64>) -> Move {
        Move { shard, add, remove }
    }

    #[test]
    fn a_replaced_replica_is_one_paired_move() {
        let target = target_of(&[1, 2, 4]);
        assert_eq!(
            plan(&[shard(1, &[1, 2, 3])], &target),
            vec![mv(1, Some(4), Some(3))]
        );
    }

    #[test]
    fn under_and_over_replicated_shards_only_add_or_only_remove() {
        let target = target_of(&[1, 2, 3]);
        let under = plan(&[shard(1, &[1, 2])], &target);
        assert_eq!(under, vec![mv(1, Some(3), None)]);
        let over = plan(&[shard(1, &[1, 2, 3, 4])], &target);
        assert_eq!(over, vec![mv(1, None, Some(4))]);
        // Fewer voters than the target and one misplaced: swap it (never below 2 voters),
        // then add the third.
        let short = plan(&[shard(1, &[1, 5])], &target);
        let first_missing = target.replicas(1).iter().copied().find(|n| *n != 1);
        assert_eq!(short, vec![mv(1, first_missing, Some(5))]);
        assert_eq!(distance(&[shard(1, &[1, 5])], &target), 2);
    }

    #[test]
    fn shards_mid_move_and_placed_shards_get_nothing() {
        let target = target_of(&[1, 2, 4]);
        let mut learning = shard(1, &[1, 2, 3]);
        learning.learners = vec![4];
        let mut moving = shard(1, &[1, 2, 3]);
        moving.moving = true;
        assert!(plan(&[learning], &target).is_empty());
        assert!(plan(&[moving], &target).is_empty());
        assert!(plan(&[shard(1, &[4, 2, 1])], &target).is_empty());
        assert_eq!(distance(&[shard(1, &[4, 2, 1])], &target), 0);
    }

    #[test]
    fn a_disjoint_target_takes_one_move_per_replica() {
        let target = target_of(&[4, 5, 6]);
        let mut current = vec![shard(1, &[1, 2, 3])];
        assert_eq!(distance(&current, &target), 3);
        let mut rounds = 0;
        while let [next] = plan(&current, &target)[..] {
            current[0].voters = next.apply(&current[0].voters, target.replicas(1));
            assert_eq!(
                current[0].voters.len(),
                3,
                "never below the replication factor"
            );
            rounds += 1;
        }
        assert_eq!(rounds, 3);
        assert_eq!(current[0].voters, target.replicas(1));
    }

    fn subset(pool: &[u64], mask: u64) -> Vec<u64> {
        pool.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    proptest! {
        /// Following plans from any state reaches the target in exactly `distance` moves,
        /// each one legal: one per shard per round, adds from the target, removes outside
        /// it, never below min(current, target) voters.
        #[test]
        fn plans_converge_in_the_fewest_moves(
            pool_size in 1usize..10,
            shard_count in 1u16..24,
            rf in 1u32..5,
            target_mask in 1u64..1024,
            masks in proptest::collection::vec(1u64..1024, 24),
        ) {
            let pool: Vec<u64> = (1..=pool_size as u64).map(|n| n * 3).collect();
            let target_nodes = subset(&pool, target_mask);
            prop_assume!(!target_nodes.is_empty());
            let shards: Vec<ShardId> = (1..=u32::from(shard_count)).collect();
            let target = place(&nodes(&target_nodes), &shards, rf).unwrap();
            let mut current: Vec<ShardReplicas> = shards
                .iter()
                .zip(&masks)
                .map(|(&s, &m)| shard(s, &subset(&pool, m)))
                .filter(|s| !s.voters.is_empty())
                .collect();
            let total = distance(&current, &target);
            let mut left = total;
            let mut moves = 0;
            loop {
                let round = plan(&current, &target);
                if round.is_empty() {
                    break;
                }
                let ids: BTreeSet<ShardId> = round.iter().map(|m| m.shard).collect();
                prop_assert_eq!(ids.len(), round.len(), "one move per shard");
                for m in round {
                    let s = current.iter_mut().find(|s| s.shard == m.shard).unwrap();
                    let goal = target.replicas(m.shard);
                    prop_assert!(m.add.is_some() || m.remove.is_some());
                    if let Some(add) = m.add {
                        prop_assert!(goal.contains(&add) && !s.voters.contains(&add));
                    }
                    if let Some(remove) = m.remove {
                        prop_assert!(!goal.contains(&remove) && s.voters.contains(&remove));
                    }
                    let floor = s.voters.len().min(goal.len());
                    s.voters = m.apply(&s.voters, goal);
                    prop_assert!(s.voters.len() >= floor);
                    moves += 1;
                }
                let now = distance(&current, &target);
                prop_assert!(now < left);
                left = now;
            }
            prop_assert_eq!(left, 0);
            prop_assert_eq!(moves, total);
            for s in &current {
                let got: BTreeSet<u64> = s.voters.iter().copied().collect();
                let want: BTreeSet<u64> = target.replicas(s.shard).iter().copied().collect();
                prop_assert_eq!(got, want, "reached");
            }
        }

        /// A node with a larger id than all others joining: every move adds it, and the
        /// number of moves is the placement's own count of replicas to copy.
        #[test]
        fn growing_by_a_larger_id_moves_replicas_only_to_it(
            old_count in 1u64..8,
            shard_count in 1u16..32,
            rf in 1u32..4,
        ) {
            let old: Vec<u64> = (1..=old_count).collect();
            let shards: Vec<ShardId> = (1..=u32::from(shard_count)).collect();
            let before = place(&nodes(&old), &shards, rf).unwrap();
            let new = old_count + 10;
            let mut grown = old.clone();
            grown.push(new);
            let after = place(&nodes(&grown), &shards, rf).unwrap();
            let current: Vec<ShardReplicas> =
                before.iter().map(|(s, r)| shard(s, r)).collect();
            let moves = plan(&current, &after);
            prop_assert!(moves.iter().all(|m| m.add == Some(new)));
            prop_assert_eq!(distance(&current, &after), after.moves_from(&before));
        }
    }
}
