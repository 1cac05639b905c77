//! Replica placement: a pure, deterministic map from (weighted nodes, shard ids,
//! replication factor) to each shard's replica set.
//!
//! Why this algorithm: membership changes should move as little data as possible, and
//! never shuffle replicas between nodes that were already there. So placement replays
//! the cluster as if nodes joined one at a time, in ascending id order:
//!
//! - While at most `rf` nodes have joined, each newcomer joins every shard.
//! - Afterwards each newcomer `n` steals replicas: it picks the victim `v` with the highest
//!   `load / weight` (ties: lower id) that is over-loaded relative to it,
//!   `load_v / w_v > (load_n + 1) / w_n` (compared by integer cross-multiplication), and
//!   among `v`'s shards that `n` lacks takes the one where `n` has the highest rendezvous
//!   score (ties: lower shard id). It stops when no steal qualifies.
//!
//! Guarantees: with `rf = min(replication, nodes)`, every shard has exactly `rf` distinct
//! replicas. With equal weights every node's load is the floor or ceiling of the mean.
//! Adding a node whose id is larger than every existing id only extends the replay by one
//! step, so replicas move only from old nodes to the new one, at most
//! `ceil(rf * shards / (nodes + 1))` of them. A node with a smaller id changes the replay
//! from its position on: moves stay bounded by the rebalancing but may involve old nodes,
//! so give new nodes increasing ids.
//!
//! Each replica list is ordered by rendezvous score, highest first (ties: lower id), except
//! that the first entry is the preferred leader, chosen so every node is the preferred
//! leader of as many shards as the others, within one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::shard::ShardId;

/// A node that can hold replicas; `weight` is relative capacity (1 = normal, 0 is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementNode {
    pub id: u64,
    pub weight: u32,
}

/// Why a placement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no nodes to place replicas on: pass at least one node")]
    NoNodes,
    #[error("node {0} is listed twice: pass each node id once")]
    DuplicateNode(u64),
    #[error("node {0} has weight 0: give it a weight of 1 or more, or leave it out")]
    ZeroWeight(u64),
    #[error("replication factor is 0: use 1 or more")]
    ZeroReplication,
    #[error("no shards to place: pass at least one shard id")]
    NoShards,
    #[error("shard {0} is listed twice: pass each shard id once")]
    DuplicateShard(ShardId),
}

/// Each shard's replica set, as computed by [`place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    replicas: BTreeMap<ShardId, Vec<u64>>,
    replication: usize,
}

impl Placement {
    /// The replication factor actually used: `min(replication, number of nodes)`.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// The shard's replicas, preferred leader first; empty for an unknown shard.
    pub fn replicas(&self, shard: ShardId) -> &[u64] {
        self.replicas.get(&shard).map_or(&[], Vec::as_slice)
    }

    /// Every shard with its replicas, in ascending shard id order.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &[u64])> + '_ {
        self.replicas.iter().map(|(&s, r)| (s, r.as_slice()))
    }

    /// How many replicas the node holds.
    pub fn load(&self, node: u64) -> usize {
        self.replicas.values().filter(|r| r.contains(&node)).count()
    }

    /// How many (shard, node) replica slots in `self` are absent from `other`: the
    /// replicas that must be copied to go from `other` to `self`.
    pub fn moves_from(&self, other: &Placement) -> usize {
        self.iter()
            .map(|(s, r)| r.iter().filter(|n| !other.replicas(s).contains(n)).count())
            .sum()
    }
}

/// The stable rendezvous score of `node` for `shard` (splitmix64-based, the same on every
/// platform and Rust version).
pub fn rendezvous_score(shard: ShardId, node: u64) -> u64 {
    splitmix64(splitmix64(node) ^ u64::from(shard))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Computes each shard's replica set; see the module docs for the algorithm and guarantees.
/// The result does not depend on the order of `nodes` or `shards`.
pub fn place(
    nodes: &[PlacementNode],
    shards: &[ShardId],
    replication: u32,
) -> Result<Placement, PlacementError> {
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    if replication == 0 {
        return Err(PlacementError::ZeroReplication);
    }
    if shards.is_empty() {
        return Err(PlacementError::NoShards);
    }
    let mut nodes = nodes.to_vec();
    nodes.sort_by_key(|n| n.id);
    if let Some(w) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(PlacementError::DuplicateNode(w[0].id));
    }
    if let Some(n) = nodes.iter().find(|n| n.weight == 0) {
        return Err(PlacementError::ZeroWeight(n.id));
    }
    let mut all = shards.to_vec();
    all.sort_unstable();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(PlacementError::DuplicateShard(w[0]));
    }
    let all: BTreeSet<ShardId> = all.into_iter().collect();
    let rf = nodes.len().min(replication as usize);

    // held[i]: the shards node i (in ascending id order) holds.
    let mut held: Vec<BTreeSet<ShardId>> = Vec::with_capacity(nodes.len());
    let weight = |i: usize| u128::from(nodes[i].weight);
    for (k, node) in nodes.iter().enumerate() {
        if k < rf {
            held.push(all.clone());
            continue;
        }
        let mut mine = BTreeSet::new();
        let mut order: Vec<usize> = (0..k).collect();
        loop {
            // Highest load/weight first, ties lower id (nodes are sorted by id).
            order.sort_by(|&a, &b| {
                let (la, lb) = (held[a].len() as u128, held[b].len() as u128);
                (lb * weight(a)).cmp(&(la * weight(b))).then(a.cmp(&b))
            });
            let mut steal = None;
            for &v in &order {
                let over = held[v].len() as u128 * weight(k) > (mine.len() as u128 + 1) * weight(v);
                if !over {
                    break; // victims are in descending ratio: nobody later qualifies
                }
                let best = held[v]
                    .iter()
                    .filter(|s| !mine.contains(*s))
                    .max_by_key(|&&s| (rendezvous_score(s, node.id), Reverse(s)));
                if let Some(&s) = best {
                    steal = Some((v, s));
                    break;
                }
            }
            let Some((v, s)) = steal else { break };
            held[v].remove(&s);
            mine.insert(s);
        }
        held.push(mine);
    }

    let mut replicas: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
    for (i, set) in held.iter().enumerate() {
        for &s in set {
            replicas.entry(s).or_default().push(nodes[i].id);
        }
    }
    for (&s, r) in replicas.iter_mut() {
        r.sort_by_key(|&n| (Reverse(rendezvous_score(s, n)), n));
        assert_eq!(r.len(), rf, "shard {s} must have exactly {rf} replicas");
        assert!(
            r.windows(2).all(|w| w[0] != w[1]),
            "shard {s} has a duplicate replica"
        );
    }
    assert_eq!(replicas.len(), all.len(), "every shard must be placed");
    // Preferred leaders: each shard in turn puts first the replica that leads the fewest
    // shards so far (ties: rendezvous order), so leadership, and with it write load,
    // spreads evenly.
    let mut leads: BTreeMap<u64, usize> = BTreeMap::new();
    for r in replicas.values_mut() {
        let (pos, _) = r
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (leads.get(n).copied().unwrap_or(0), *i))
            .expect("rf >= 1");
        let leader = r.remove(pos);
        r.insert(0, leader);
        *leads.entry(leader).or_default() += 1;
    }
    spread_leaders(&mut replicas, nodes.iter().map(|n| n.id));
    Ok(Placement {
        replicas,
        replication: rf,
    })
}

/// Evens out preferred leaders after the greedy pass, which can leave a node leading none
/// while another leads two (it decides shard by shard). While some node leads at least two
/// more shards than another, a chain of shards is sought from the one leading fewer: a shard
/// it holds is handed to it from its leader, which takes over another shard it holds, and so
/// on, ending at a node leading at least two more (an augmenting path). Each chain lowers the
/// spread, so this ends; when none exists the leads are as even as the replicas allow.
fn spread_leaders(replicas: &mut BTreeMap<ShardId, Vec<u64>>, nodes: impl Iterator<Item = u64>) {
    let mut leads: BTreeMap<u64, usize> = nodes.map(|n| (n, 0)).collect();
    for r in replicas.values() {
        *leads.entry(r[0]).or_default() += 1;
    }
    // Bounded: each chain lowers the sum of squared leads.
    for _ in 0..replicas.len() * leads.len() {
        let mut improved = false;
        let mut by_load: Vec<u64> = leads.keys().copied().collect();
        by_load.sort_by_key(|n| (leads[n], *n));
        for &start in &by_load {
            // Breadth-first from `start`: parent[y] = (shard, x): x can take `shard` from y.
            let mut parent: BTreeMap<u64, (ShardId, u64)> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut end = None;
            while let Some(x) = queue.pop_front() {
                for (&s, r) in replicas.iter() {
                    let y = r[0];
                    if y == x || y == start || parent.contains_key(&y) || !r.contains(&x) {
                        continue;
                    }
                    parent.insert(y, (s, x));
                    if leads[&y] >= leads[&start] + 2 {
                        end = Some(y);
                        break;
                    }
                    queue.push_back(y);
                }
                if end.is_some() {
                    break;
                }
            }
            let Some(mut y) = end else { continue };
            *leads.get_mut(&y).expect("known") -= 1;
            *leads.get_mut(&start).expect("known") += 1;
            while let Some(&(s, x)) = parent.get(&y) {
                let r = replicas.get_mut(&s).expect("placed");
                let pos = r.iter().position(|n| *n == x).expect("a replica");
                let taker = r.remove(pos);
                r.insert(0, taker);
                if x == start {
                    break;
                }
                y = x;
            }
            improved = true;
            break;
        }
        if !improved {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn equal(ids: &[u64]) -> Vec<PlacementNode> {
        ids.iter()
            .map(|&id| PlacementNode { id, weight: 1 })
            .collect()
    }

    /// Every shard has exactly min(rf, nodes) distinct replicas, all of them known nodes.
    fn check_shape(p: &Placement, nodes: &[PlacementNode], shards: &[ShardId], rf: u32) {
        let want = nodes.len().min(rf as usize);
        assert_eq!(p.replication(), want);
        assert_eq!(p.iter().count(), shards.len());
        for &s in shards {
            let r = p.replicas(s);
            let distinct: BTreeSet<u64> = r.iter().copied().collect();
            assert_eq!(r.len(), want, "shard {s}: {r:?}");
            assert_eq!(distinct.len(), want, "shard {s} has duplicates: {r:?}");
            assert!(r.iter().all(|n| nodes.iter().any(|k| k.id == *n)));
        }
    }

    #[test]
    fn one_node_holds_every_shard_once() {
        let nodes = equal(&[7]);
        let shards = [1, 2, 3, 9];
        let p = place(&nodes, &shards, 3).unwrap();
        check_shape(&p, &nodes, &shards, 3);
        assert_eq!(p.replication(), 1);
        assert!(shards.iter().all(|&s| p.replicas(s) == [7]));
        assert_eq!(p.load(7), shards.len());
    }

    #[test]
    fn three_nodes_rf3_put_every_shard_everywhere() {
        let nodes = equal(&[30, 10, 20]);
        let shards: Vec<ShardId> = (1..=16).collect();
        let p = place(&nodes, &shards, 3).unwrap();
        check_shape(&p, &nodes, &shards, 3);
        for &s in &shards {
            let mut r = p.replicas(s).to_vec();
            r.sort_unstable();
            assert_eq!(r, [10, 20, 30]);
        }
        assert!(p.replicas(99).is_empty());
        assert_eq!(p.moves_from(&p), 0);
    }

    #[test]
    fn leaders_spread_across_nodes() {
        let nodes = equal(&[1, 2, 3]);
        let shards: Vec<ShardId> = (1..=64).collect();
        let p = place(&nodes, &shards, 3).unwrap();
        let leaders: BTreeSet<u64> = p.iter().map(|(_, r)| r[0]).collect();
        assert_eq!(leaders.len(), 3, "every node should lead some shard");
        let mut counts = [0usize; 3];
        for (_, r) in p.iter() {
            counts[(r[0] - 1) as usize] += 1;
        }
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "preferred leaders are balanced: {counts:?}"
        );
    }

    /// The greedy pass alone left node 4 leading nothing and node 2 leading two shards here
    /// (4 shards, 4 nodes, rf 3): a cluster grown from 3 to 4 nodes then failed `verify`.
    #[test]
    fn a_node_that_holds_replicas_leads_its_share() {
        let p = place(&equal(&[1, 2, 3, 4]), &[1, 2, 3, 4], 3).unwrap();
        let leaders: BTreeSet<u64> = p.iter().map(|(_, r)| r[0]).collect();
        assert_eq!(leaders, BTreeSet::from([1, 2, 3, 4]), "{p:?}");
    }

    #[test]
    fn rejects_bad_input() {
        let ok = equal(&[1, 2]);
        let cases = [
            (place(&[], &[1], 1), PlacementError::NoNodes),
            (place(&ok, &[1], 0), PlacementError::ZeroReplication),
            (place(&ok, &[], 1), PlacementError::NoShards),
            (
                place(&equal(&[3, 1, 3]), &[1], 1),
                PlacementError::DuplicateNode(3),
            ),
            (
                place(&[PlacementNode { id: 4, weight: 0 }], &[1], 1),
                PlacementError::ZeroWeight(4),
            ),
            (place(&ok, &[5, 2, 5], 1), PlacementError::DuplicateShard(5)),
        ];
        for (got, want) in cases {
            let err = got.unwrap_err();
            assert!(
                err.to_string().contains(':'),
                "message says what to do: {err}"
            );
            assert_eq!(err, want);
        }
    }

    fn ids(max: usize) -> impl Strategy<Value = Vec<u64>> {
        prop::collection::btree_set(0u64..1_000_000, 1..=max).prop_map(|s| s.into_iter().collect())
    }

    fn shard_ids() -> impl Strategy<Value = Vec<ShardId>> {
        prop::collection::btree_set(any::<ShardId>(), 1..=256).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// With equal weights and at least as many shards as nodes, every node leads its
        /// share of shards, within one.
        #[test]
        fn preferred_leaders_within_one_of_even(n in 1u64..10, shards in 1u32..40, rf in 1u32..5) {
            let ids: Vec<u64> = (1..=n).collect();
            let shard_ids: Vec<ShardId> = (1..=shards).collect();
            let p = place(&equal(&ids), &shard_ids, rf).unwrap();
            let mut counts: BTreeMap<u64, usize> = ids.iter().map(|id| (*id, 0)).collect();
            for (_, r) in p.iter() {
                *counts.get_mut(&r[0]).unwrap() += 1;
            }
            let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
            prop_assert!(max - min <= 1, "{counts:?} in {p:?}");
        }

        #[test]
        fn equal_weights_balanced_and_deterministic(
            (sorted, shuffled) in ids(12).prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            shards in shard_ids(),
            rf in 1u32..=5,
        ) {
            let nodes = equal(&shuffled);
            let p = place(&nodes, &shards, rf).unwrap();
            check_shape(&p, &nodes, &shards, rf);
            let total = p.replication() * shards.len();
            let n = nodes.len();
            let loads: Vec<usize> = sorted.iter().map(|&id| p.load(id)).collect();
            prop_assert_eq!(loads.iter().sum::<usize>(), total);
            let (lo, hi) = (*loads.iter().min().unwrap(), *loads.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "loads {:?}", loads);
            prop_assert!(lo >= total / n && hi <= total.div_ceil(n), "loads {:?}", loads);
            prop_assert_eq!(&place(&nodes, &shards, rf).unwrap(), &p);
            prop_assert_eq!(&place(&equal(&sorted), &shards, rf).unwrap(), &p);
            let mut reversed = shards.clone();
            reversed.reverse();
            prop_assert_eq!(&place(&nodes, &reversed, rf).unwrap(), &p);
        }

        #[test]
        fn adding_a_larger_id_moves_replicas_only_to_it(
            old_ids in ids(12),
            gap in 1u64..1000,
            shards in shard_ids(),
            rf in 1u32..=5,
        ) {
            let new_id = old_ids.last().unwrap() + gap;
            let mut new_ids = old_ids.clone();
            new_ids.push(new_id);
            let old = place(&equal(&old_ids), &shards, rf).unwrap();
            let new = place(&equal(&new_ids), &shards, rf).unwrap();
            check_shape(&new, &equal(&new_ids), &shards, rf);
            let n = old_ids.len();
            let moved = new.moves_from(&old);
            prop_assert_eq!(moved, new.load(new_id));
            if n < rf as usize {
                // Still at or under the replication factor: the newcomer joins every shard.
                for &s in &shards {
                    let mut want = old.replicas(s).to_vec();
                    want.push(new_id);
                    want.sort_unstable();
                    let mut got = new.replicas(s).to_vec();
                    got.sort_unstable();
                    prop_assert_eq!(got, want);
                }
                prop_assert_eq!(moved, shards.len());
            } else {
                for &s in &shards {
                    let before: BTreeSet<u64> = old.replicas(s).iter().copied().collect();
                    let gained: Vec<u64> =
                        new.replicas(s).iter().copied().filter(|x| !before.contains(x)).collect();
                    prop_assert!(gained.is_empty() || gained == [new_id], "shard {}: {:?}", s, gained);
                }
                let bound = (rf as usize * shards.len()).div_ceil(n + 1) + 1;
                prop_assert!(moved <= bound, "moved {} > {}", moved, bound);
            }
        }

        /// Weighted placement. What the steal rule guarantees:
        /// - Always: when the last node `n` (largest id) stops stealing, every other node `v`
        ///   is not over-loaded relative to it (`load_v * w_n <= (load_n + 1) * w_v`), or `n`
        ///   already holds every shard `v` holds, so no steal qualifies.
        /// - With rf = 1 replica sets are disjoint, so the highest load/weight node always has
        ///   a shard to give, and the first node starts alone; stealing from it keeps, for
        ///   every pair,
        ///   `load_i * w_j <= (load_j + 1) * w_i`. Summing over j gives, with
        ///   `ideal_i = total * w_i / W`: `ideal_i - 1 <= load_i <= ideal_i + (N-1) * w_i / W`.
        ///   (With rf > 1 the first rf nodes hold every shard whatever their weight, so only
        ///   the stop condition is guaranteed.)
        #[test]
        fn weighted_loads_follow_weights(
            nodes in ids(12).prop_flat_map(|ids| {
                let n = ids.len();
                (Just(ids), prop::collection::vec(1u32..=4, n))
            }).prop_map(|(ids, ws)| {
                ids.into_iter().zip(ws).map(|(id, weight)| PlacementNode { id, weight }).collect::<Vec<_>>()
            }),
            shards in shard_ids(),
            rf in 1u32..=5,
        ) {
            let p = place(&nodes, &shards, rf).unwrap();
            check_shape(&p, &nodes, &shards, rf);
            let load = |n: &PlacementNode| p.load(n.id) as u64;
            let w = |n: &PlacementNode| u64::from(n.weight);
            let last = nodes.last().unwrap();
            let last_shards: BTreeSet<ShardId> =
                p.iter().filter(|(_, r)| r.contains(&last.id)).map(|(s, _)| s).collect();
            for v in &nodes[..nodes.len() - 1] {
                let calm = load(v) * w(last) <= (load(last) + 1) * w(v);
                let covered = p.iter().all(|(s, r)| !r.contains(&v.id) || last_shards.contains(&s));
                prop_assert!(calm || covered, "node {} could still lose a replica to {}", v.id, last.id);
            }
            if rf == 1 {
                let total = shards.len() as u64;
                let sum_w: u64 = nodes.iter().map(w).sum();
                let n = nodes.len() as u64;
                for i in &nodes {
                    for j in &nodes {
                        prop_assert!(load(i) * w(j) <= (load(j) + 1) * w(i));
                    }
                    // ideal - 1 <= load <= ideal + (N-1) * w / W, times W.
                    prop_assert!(load(i) * sum_w + sum_w >= total * w(i));
                    prop_assert!(load(i) * sum_w <= (total + n - 1) * w(i));
                }
            }
        }
    }
}
