//! Dead nodes: which down nodes the metadata leader declares dead, so that the reconciler
//! re-creates their replicas on live nodes (the same moves as a drain: learner, snapshot,
//! promote, the dead voter out), and the rules that keep it from making things worse.
//!
//! A node is a candidate once it has been unreachable for `--dead-after` as the metadata
//! leader sees it. It is declared dead only if all of these hold:
//! 1. at most replication - 1 nodes are down at once (counting nodes already declared dead
//!    and not yet replaced): more looks like a partition or a correlated failure, where
//!    moving data adds load and cannot restore what is lost anyway;
//! 2. the live nodes left can hold every shard's replication factor;
//! 3. every group it is a voter of keeps a majority of voters on live nodes without it: a
//!    dead node refuses to serve if it comes back, so declaring it must never be what
//!    costs a group its quorum.
//!
//! The metadata group must have a quorum for any of this to happen: the declaration is a
//! write to it. These are pure functions of the map and of each node's time down, so the
//! liveness source (status polling today, gossip later) is one argument.

use std::time::Duration;

use shoal_core::ShardId;
use shoal_core::map::ClusterMap;

/// What the rules decide this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Nodes to declare dead now.
    pub declare: Vec<u64>,
    /// Why a node down for longer than `dead_after` (or a dead one) is not being replaced.
    pub held: Option<String>,
}

/// Applies the rules. `down_for(id)`: how long node `id` has been unreachable (`None`: up).
pub(crate) fn judge(
    map: &ClusterMap,
    me: u64,
    dead_after: Duration,
    down_for: impl Fn(u64) -> Option<Duration>,
) -> Verdict {
    if dead_after.is_zero() {
        return Verdict::default();
    }
    let members: Vec<u64> = map.nodes.iter().map(|n| n.id).collect();
    let is_down = |id: u64| id != me && (map.dead.contains(&id) || down_for(id).is_some());
    let candidates: Vec<u64> = members
        .iter()
        .copied()
        .filter(|id| *id != me && !map.dead.contains(id))
        .filter(|id| down_for(*id).is_some_and(|d| d >= dead_after))
        .collect();
    if candidates.is_empty() && map.dead.is_empty() {
        return Verdict::default();
    }
    let replication = map.replication.max(1) as usize;
    let down: Vec<u64> = members.iter().copied().filter(|id| is_down(*id)).collect();
    if down.len() > replication - 1 {
        return Verdict {
            declare: Vec::new(),
            held: Some(format!(
                "{} nodes are down at once ({}); at most {} (replication - 1) are replaced \
                 automatically: bring nodes back, or remove them with `shoal cluster remove-node`",
                down.len(),
                list(&down),
                replication - 1
            )),
        };
    }
    let live = map
        .active_nodes()
        .into_iter()
        .filter(|id| !is_down(*id))
        .count();
    if live < replication {
        return Verdict {
            declare: Vec::new(),
            held: Some(format!(
                "{live} live node(s) cannot hold {replication} replicas of every shard \
                 (--replication): the cluster serves with fewer until a node comes back or \
                 one joins (shoal server --join ...)"
            )),
        };
    }
    let mut verdict = Verdict::default();
    for id in candidates {
        let lost: Vec<ShardId> = map
            .group_ids()
            .into_iter()
            .filter(|g| {
                let voters = map.replicas(*g);
                voters.contains(&id)
                    && voters.iter().filter(|v| !is_down(**v)).count() * 2 <= voters.len()
            })
            .collect();
        if lost.is_empty() {
            verdict.declare.push(id);
        } else {
            verdict.held = Some(format!(
                "node {id} is down but not replaced: group(s) {} would be left without a \
                 majority of live voters",
                list(&lost)
            ));
        }
    }
    verdict
}

/// Groups with fewer voters on live, non-dead nodes than they should have: data shards
/// fewer than the replication factor, the metadata group fewer than its voters.
pub(crate) fn under_replicated(
    map: &ClusterMap,
    me: u64,
    down_for: impl Fn(u64) -> Option<Duration>,
) -> Vec<ShardId> {
    let healthy = |id: &&u64| **id == me || (!map.dead.contains(id) && down_for(**id).is_none());
    map.group_ids()
        .into_iter()
        .filter(|g| {
            let voters = map.replicas(*g);
            let want = if *g == shoal_core::shard::META_GROUP {
                voters.len()
            } else {
                map.replication as usize
            };
            voters.iter().filter(healthy).count() < want
        })
        .collect()
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    const AFTER: Duration = Duration::from_secs(10);

    fn map(nodes: u64) -> ClusterMap {
        let members: Vec<(u64, String)> = (1..=nodes).map(|id| (id, format!("n{id}:1"))).collect();
        Topology::new(1, &members, 16, 3).unwrap().map
    }

    /// Node `id` down for `secs` seconds, the others up.
    fn down(list: &'static [(u64, u64)]) -> impl Fn(u64) -> Option<Duration> {
        move |id| {
            list.iter()
                .find(|(n, _)| *n == id)
                .map(|(_, s)| Duration::from_secs(*s))
        }
    }

    #[test]
    fn a_node_down_for_dead_after_is_declared_and_a_brief_outage_is_not() {
        let m = map(4);
        assert_eq!(judge(&m, 1, AFTER, down(&[(4, 9)])), Verdict::default());
        assert_eq!(judge(&m, 1, AFTER, down(&[(4, 10)])).declare, vec![4]);
        assert_eq!(under_replicated(&m, 1, down(&[])), Vec::<ShardId>::new());
        assert!(!under_replicated(&m, 1, down(&[(4, 1)])).is_empty());
        // Off when dead-after is zero.
        assert_eq!(
            judge(&m, 1, Duration::ZERO, down(&[(4, 99)])),
            Verdict::default()
        );
    }

    #[test]
    fn nothing_is_declared_when_the_rest_cannot_hold_the_replication_factor() {
        // 4 nodes, RF 3: one died and was replaced (it left the map): 3 remain.
        let mut m = map(4);
        m.nodes.retain(|n| n.id != 4);
        m.removed.push(4);
        let v = judge(&m, 1, AFTER, down(&[(3, 60)]));
        assert!(v.declare.is_empty());
        assert!(
            v.held.unwrap().contains("2 live node(s) cannot hold 3"),
            "the reason is shown"
        );
    }

    #[test]
    fn more_nodes_down_than_replication_minus_one_moves_nothing() {
        // Half of 6 nodes cut off: a partition, not three deaths.
        let m = map(6);
        let v = judge(&m, 1, AFTER, down(&[(4, 60), (5, 60), (6, 60)]));
        assert!(v.declare.is_empty());
        assert!(v.held.unwrap().contains("3 nodes are down at once"));
        // Two down of six (RF 3): both may go, unless a group would lose its majority.
        let v = judge(&m, 1, AFTER, down(&[(5, 60), (6, 60)]));
        let shared = m
            .group_ids()
            .into_iter()
            .any(|g| m.replicas(g).contains(&5) && m.replicas(g).contains(&6));
        if shared {
            assert!(v.declare.is_empty(), "{v:?}");
            assert!(v.held.unwrap().contains("without a majority"));
        } else {
            assert_eq!(v.declare, vec![5, 6]);
        }
    }

    #[test]
    fn a_node_already_dead_counts_as_down_until_it_leaves_the_map() {
        let mut m = map(5);
        m.dead.push(5);
        // 4 down for long: with 5 still being replaced, two are down: allowed for RF 3 only
        // where no group has both as voters.
        let v = judge(&m, 1, AFTER, down(&[(4, 60)]));
        let shared = m
            .group_ids()
            .into_iter()
            .any(|g| m.replicas(g).contains(&4) && m.replicas(g).contains(&5));
        assert_eq!(v.declare.is_empty(), shared, "{v:?}");
        assert!(
            under_replicated(&m, 1, down(&[]))
                .iter()
                .all(|g| m.replicas(*g).contains(&5))
        );
    }
}
