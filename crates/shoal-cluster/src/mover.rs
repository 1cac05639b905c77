//! The reconciler: on the metadata group's leader, it compares every group's replicas with
//! the target placement (`shoal_core::rebalance`) and moves replicas one at a time per
//! group, within limits, recording each move in the cluster map before its first step.
//!
//! A move of group G from node R to node A:
//! 1. recorded: A listed as G's learner, the move listed (a new epoch). A's `ReplicaKeeper`
//!    opens G empty;
//! 2. G's leader adds A as a learner and streams it a snapshot and the log;
//! 3. once A is within `catch_up_lag` entries of the leader, G's leader replaces the voters
//!    (A in, R out: joint consensus inside openraft). A leader that is R hands leadership to
//!    a voter that stays first;
//! 4. recorded: A a voter, R gone, the move done (a new epoch). R's keeper deletes its copy.
//!
//! Every step is idempotent, so a new metadata leader resumes a recorded move from the start.
//! A move that does not finish within `timeout` is rolled back (the learner removed, unless it
//! already votes, in which case the move is recorded as done) and its group waits a backoff.
//! A shard never has fewer than its replication factor of up-to-date voters: a voter only
//! leaves in the same membership change that makes a caught-up learner a voter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::map::{ClusterMap, MoveRecord};
use shoal_core::placement::{Placement, PlacementNode, place};
use shoal_core::rebalance::{Move, ShardReplicas, plan};
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, ShardId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminReply, MembershipOp, update_map};
use crate::cluster_map::read_stored;
use crate::control::Control;
use crate::topology::MAX_META_VOTERS;

/// The reconciler's limits (flags of `shoal server`).
#[derive(Debug, Clone)]
pub struct MoveLimits {
    /// Moves in flight in the whole cluster.
    pub max_moves: usize,
    /// Moves in flight that add a replica to, or take one from, any one node.
    pub max_moves_per_node: usize,
    /// A move not done within this is rolled back and retried later.
    pub timeout: Duration,
    /// A learner this many log entries behind its leader counts as caught up.
    pub catch_up_lag: u64,
    /// How long a group waits after a rolled-back move before the next one.
    pub backoff: Duration,
    /// How often the reconciler looks at the map.
    pub interval: Duration,
}

impl Default for MoveLimits {
    fn default() -> Self {
        Self {
            // One move at a time (see benchmarks.md, "Growing a cluster"): on the 2-core VM,
            // clients kept 90% of their ops/s with one, and under 40% with four.
            max_moves: 1,
            max_moves_per_node: 1,
            timeout: Duration::from_secs(600),
            catch_up_lag: 64,
            backoff: Duration::from_secs(10),
            interval: Duration::from_millis(500),
        }
    }
}

/// Where each group's replicas should be: the data shards by the replication factor, the
/// metadata group on up to `MAX_META_VOTERS` nodes, both over the active nodes.
pub(crate) fn targets(map: &ClusterMap) -> Option<(Placement, Placement)> {
    let nodes: Vec<PlacementNode> = map
        .active_nodes()
        .into_iter()
        .map(|id| PlacementNode { id, weight: 1 })
        .collect();
    let shards: Vec<ShardId> = map.shards.iter().map(|s| s.id).collect();
    let data = place(&nodes, &shards, map.replication).ok()?;
    let meta = place(&nodes, &[META_GROUP], MAX_META_VOTERS).ok()?;
    Some((data, meta))
}

fn current(map: &ClusterMap, group: ShardId) -> ShardReplicas {
    ShardReplicas {
        shard: group,
        voters: map.replicas(group).to_vec(),
        learners: map.learners(group).to_vec(),
        moving: map.move_of(group).is_some(),
    }
}

/// Every group's next move toward the target, the metadata group's first.
pub fn next_moves(map: &ClusterMap) -> Vec<Move> {
    let Some((data, meta)) = targets(map) else {
        return Vec::new();
    };
    let mut moves = plan(&[current(map, META_GROUP)], &meta);
    let shards: Vec<ShardReplicas> = map.shards.iter().map(|s| current(map, s.id)).collect();
    moves.extend(plan(&shards, &data));
    moves
}

/// Groups (with no move in flight) whose voters are the target's in another order, with
/// the target's order.
pub(crate) fn reorders(map: &ClusterMap) -> Vec<(ShardId, Vec<u64>)> {
    let Some((data, meta)) = targets(map) else {
        return Vec::new();
    };
    map.group_ids()
        .into_iter()
        .filter(|g| map.move_of(*g).is_none() && map.learners(*g).is_empty())
        .filter_map(|g| {
            let goal = if g == META_GROUP { &meta } else { &data }.replicas(g);
            let voters = map.replicas(g);
            (same_set(voters, goal) && voters != goal).then(|| (g, goal.to_vec()))
        })
        .collect()
}

fn same_set(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().all(|n| b.contains(n))
}

/// Moves still needed to reach the target (0: balanced).
pub fn pending_moves(map: &ClusterMap) -> usize {
    let Some((data, meta)) = targets(map) else {
        return 0;
    };
    let shards: Vec<ShardReplicas> = map.shards.iter().map(|s| current(map, s.id)).collect();
    shoal_core::rebalance::distance(&[current(map, META_GROUP)], &meta)
        + shoal_core::rebalance::distance(&shards, &data)
        + map.moves.len()
}

/// The moves to start now: `candidates` in order, skipping groups in backoff and any that
/// would exceed the limits given the moves in flight (`map.moves`).
pub(crate) fn admit_moves(
    map: &ClusterMap,
    candidates: &[Move],
    limits: &MoveLimits,
    blocked: impl Fn(&Move) -> bool,
) -> Vec<Move> {
    let mut per_node: HashMap<u64, usize> = HashMap::new();
    for m in &map.moves {
        for n in m.add.iter().chain(m.remove.iter()) {
            *per_node.entry(*n).or_default() += 1;
        }
    }
    let mut total = map.moves.len();
    let mut chosen = Vec::new();
    for m in candidates {
        if total >= limits.max_moves {
            break;
        }
        if blocked(m) {
            continue;
        }
        let nodes: Vec<u64> = m.add.iter().chain(m.remove.iter()).copied().collect();
        if nodes
            .iter()
            .any(|n| per_node.get(n).copied().unwrap_or(0) >= limits.max_moves_per_node)
        {
            continue;
        }
        for n in nodes {
            *per_node.entry(n).or_default() += 1;
        }
        total += 1;
        chosen.push(*m);
    }
    chosen
}

/// The service: runs on every node, acts only while this node leads the metadata group.
pub(crate) struct Reconciler {
    pub control: Control,
    pub limits: MoveLimits,
    /// Down this long, a node is declared dead (`healer`); zero: never.
    pub dead_after: Duration,
}

impl Reconciler {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let this = Arc::new(self);
        let mut running: BTreeMap<ShardId, JoinHandle<()>> = BTreeMap::new();
        let mut backoff: HashMap<ShardId, Instant> = HashMap::new();
        let backoff_tx = Arc::new(std::sync::Mutex::new(Vec::<ShardId>::new()));
        let mut ticker = tokio::time::interval(this.limits.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            for shard in backoff_tx.lock().expect("backoff lock").drain(..) {
                backoff.insert(shard, Instant::now() + this.limits.backoff);
            }
            running.retain(|_, task| !task.is_finished());
            let leads = this
                .control
                .groups
                .get(META_GROUP)
                .is_some_and(|meta| meta.is_leader());
            if !leads {
                // Another node reconciles now; it resumes what this one started.
                for (_, task) in std::mem::take(&mut running) {
                    task.abort();
                }
                continue;
            }
            let round = this.round(&mut running, &backoff, &backoff_tx);
            if let Some(Err(e)) = cancel.run_until_cancelled(round).await {
                tracing::debug!(error = %e, "a rebalancing round failed; will retry");
            }
        }
        for (_, task) in running {
            task.abort();
        }
    }

    async fn round(
        self: &Arc<Self>,
        running: &mut BTreeMap<ShardId, JoinHandle<()>>,
        backoff: &HashMap<ShardId, Instant>,
        failed: &Arc<std::sync::Mutex<Vec<ShardId>>>,
    ) -> Result<(), Error> {
        let Some((map, _)) = read_stored(&self.control.engine)? else {
            return Ok(());
        };
        // Nodes down for longer than dead-after are declared dead, within the rules
        // (`healer`); placement then leaves them out and their replicas move to live nodes.
        let peers = &self.control.peers;
        let verdict = crate::healer::judge(&map, self.control.me, self.dead_after, |n| {
            peers.down_for(n)
        });
        if !verdict.declare.is_empty() {
            let meta = self.meta()?;
            let declare = verdict.declare.clone();
            let stored = update_map(&meta, &self.control.engine, move |m| {
                let mut changed = false;
                for n in &declare {
                    if m.node(*n).is_some() && !m.dead.contains(n) {
                        m.dead.push(*n);
                        changed = true;
                    }
                }
                Ok(changed)
            })
            .await?;
            self.control.map.offer(stored);
            tracing::warn!(
                nodes = ?verdict.declare,
                dead_after_secs = self.dead_after.as_secs(),
                "declared unreachable nodes dead: re-creating their replicas on live nodes"
            );
            return Ok(());
        }
        // Drained and dead nodes that hold nothing any more leave the map for good.
        let done: Vec<u64> = map
            .draining
            .iter()
            .chain(map.dead.iter())
            .copied()
            .filter(|n| map.groups_of(*n).is_empty())
            .filter(|n| {
                !map.moves
                    .iter()
                    .any(|m| m.add == Some(*n) || m.remove == Some(*n))
            })
            .collect();
        if !done.is_empty() {
            let meta = self.meta()?;
            update_map(&meta, &self.control.engine, |m| {
                m.nodes.retain(|n| !done.contains(&n.id));
                m.draining.retain(|n| !done.contains(n));
                m.dead.retain(|n| !done.contains(n));
                for n in &done {
                    if !m.removed.contains(n) {
                        m.removed.push(*n);
                    }
                }
                Ok(true)
            })
            .await?;
            tracing::info!(nodes = ?done, "drained or dead nodes removed from the cluster");
            return Ok(());
        }
        // Resume what the map says is in flight (after a metadata leader change).
        for record in &map.moves {
            if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(record.shard) {
                slot.insert(tokio::spawn(
                    self.clone().execute(record.clone(), failed.clone()),
                ));
            }
        }
        if map.rebalance_paused {
            return Ok(());
        }
        // Groups whose voters are already the target's but in another order: the first is
        // the preferred leader, so take the target's order (a map change only; leader
        // balancing then moves leadership), or leaders stay where an older placement put them.
        let reorder = reorders(&map);
        if !reorder.is_empty() {
            let meta = self.meta()?;
            let stored = update_map(&meta, &self.control.engine, |m| {
                let mut changed = false;
                for (group, order) in &reorder {
                    if let Some((voters, learners)) = m.group_mut(*group)
                        && learners.is_empty()
                        && same_set(voters, order)
                        && voters != order
                    {
                        *voters = order.clone();
                        changed = true;
                    }
                }
                Ok(changed)
            })
            .await?;
            self.control.map.offer(stored);
        }
        let now = Instant::now();
        let peers = &self.control.peers;
        let me = self.control.me;
        let candidates = next_moves(&map);
        let chosen = admit_moves(&map, &candidates, &self.limits, |m| {
            backoff.get(&m.shard).is_some_and(|until| *until > now)
                // The new replica's node must answer, or the move would only time out.
                || m.add.is_some_and(|a| a != me && !peers.is_up(a))
        });
        for m in chosen {
            let record = MoveRecord {
                shard: m.shard,
                add: m.add,
                remove: m.remove,
                started_ms: crate::clock::now_ms(),
            };
            let meta = self.meta()?;
            let recorded = record.clone();
            let stored = update_map(&meta, &self.control.engine, move |map| {
                if map.move_of(recorded.shard).is_some() {
                    return Ok(false);
                }
                if let (Some(add), Some((_, learners))) =
                    (recorded.add, map.group_mut(recorded.shard))
                    && !learners.contains(&add)
                {
                    learners.push(add);
                }
                map.moves.push(recorded.clone());
                Ok(true)
            })
            .await?;
            self.control.map.offer(stored);
            tracing::info!(group = m.shard, add = ?m.add, remove = ?m.remove, "starting a replica move");
            let task = tokio::spawn(self.clone().execute(record, failed.clone()));
            running.insert(m.shard, task);
        }
        Ok(())
    }

    fn meta(&self) -> Result<Arc<crate::group::Group>, Error> {
        self.control
            .groups
            .get(META_GROUP)
            .ok_or(Error::NoLeader { shard: META_GROUP })
    }

    /// Performs (or resumes) one recorded move; rolls it back if it cannot finish in time.
    async fn execute(
        self: Arc<Self>,
        record: MoveRecord,
        failed: Arc<std::sync::Mutex<Vec<ShardId>>>,
    ) {
        let group = record.shard;
        let started_ms = record.started_ms;
        let left = self.limits.timeout.saturating_sub(Duration::from_millis(
            crate::clock::now_ms().saturating_sub(started_ms),
        ));
        let outcome = tokio::time::timeout(left, self.steps(&record)).await;
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not done within {} s", self.limits.timeout.as_secs()),
        };
        tracing::warn!(group, add = ?record.add, remove = ?record.remove, reason = %failure, "rolling back a replica move");
        if let Err(e) = self.roll_back(&record).await {
            tracing::warn!(group, error = %e, "rolling back a move failed; the next metadata leader resumes it");
        }
        failed.lock().expect("backoff lock").push(group);
    }

    async fn steps(&self, record: &MoveRecord) -> Result<(), Error> {
        let group = record.shard;
        let control = &self.control;
        if let Some(add) = record.add {
            let addr = control
                .map
                .current()
                .node(add)
                .map(|n| n.peer_addr.clone())
                .ok_or_else(|| Error::Invalid(format!("node {add} is not in the map")))?;
            // A snapshot first, so the new replica is sent it rather than the whole log.
            self.retrying(|| control.at_leader(group, MembershipOp::CompactLog))
                .await?;
            self.retrying(|| {
                control.at_leader(
                    group,
                    MembershipOp::AddLearner {
                        node: add,
                        addr: addr.clone(),
                    },
                )
            })
            .await?;
            // Wait until the learner has caught up (a snapshot, then the log's tail).
            loop {
                if let AdminReply::Progress { matched, last } = self
                    .retrying(|| control.at_leader(group, MembershipOp::Progress { node: add }))
                    .await?
                    && matched.is_some_and(|m| m + self.limits.catch_up_lag >= last)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let (voters, target) = {
            let Some((map, _)) = read_stored(&control.engine)? else {
                return Err(Error::NoLeader { shard: META_GROUP });
            };
            let (data, meta) =
                targets(&map).ok_or_else(|| Error::Internal("no placement".into()))?;
            let target = if group == META_GROUP { meta } else { data };
            (
                map.replicas(group).to_vec(),
                target.replicas(group).to_vec(),
            )
        };
        let after = Move {
            shard: group,
            add: record.add,
            remove: record.remove,
        }
        .apply(&voters, &target);
        self.retrying(|| control.at_leader(group, MembershipOp::SetVoters(after.clone())))
            .await?;
        self.finish(record, after).await
    }

    /// Records the move as done with `voters` as the group's voters.
    async fn finish(&self, record: &MoveRecord, voters: Vec<u64>) -> Result<(), Error> {
        let meta = self.meta()?;
        let group = record.shard;
        let stored = update_map(&meta, &self.control.engine, |map| {
            let Some((v, learners)) = map.group_mut(group) else {
                return Ok(false);
            };
            *v = voters.clone();
            learners.retain(|l| !voters.contains(l) && Some(*l) != record.add);
            map.moves.retain(|m| m.shard != group);
            Ok(true)
        })
        .await?;
        self.control.map.offer(stored);
        tracing::info!(group, add = ?record.add, remove = ?record.remove, voters = ?voters, "replica move done");
        Ok(())
    }

    async fn roll_back(&self, record: &MoveRecord) -> Result<(), Error> {
        let group = record.shard;
        let control = &self.control;
        let state = self
            .retrying(|| control.at_leader(group, MembershipOp::State))
            .await?;
        if let AdminReply::Members {
            voters,
            joint: false,
            ..
        } = &state
            && record.add.is_some_and(|a| voters.contains(&a))
        {
            // The membership change went through: record it rather than undo it.
            let map = control.map.current();
            let mut ordered: Vec<u64> = map
                .replicas(group)
                .iter()
                .copied()
                .filter(|v| voters.contains(v))
                .collect();
            let rest: Vec<u64> = voters
                .iter()
                .copied()
                .filter(|v| !ordered.contains(v))
                .collect();
            ordered.extend(rest);
            return self.finish(record, ordered).await;
        }
        if let Some(add) = record.add {
            self.retrying(|| control.at_leader(group, MembershipOp::RemoveLearner(add)))
                .await?;
        }
        let meta = self.meta()?;
        let stored = update_map(&meta, &control.engine, |map| {
            if let (Some(add), Some((_, learners))) = (record.add, map.group_mut(group)) {
                learners.retain(|l| *l != add);
            }
            map.moves.retain(|m| m.shard != group);
            Ok(true)
        })
        .await?;
        control.map.offer(stored);
        Ok(())
    }

    /// Retries `step` through leader changes and unreachable leaders (each try already
    /// routes for `ROUTE_PATIENCE`); other errors are returned.
    async fn retrying<F, Fut>(&self, step: F) -> Result<AdminReply, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<AdminReply, Error>>,
    {
        loop {
            match step().await {
                Err(Error::NoLeader { .. } | Error::NotLeader { .. } | Error::ShuttingDown) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_map::grown;

    fn five() -> ClusterMap {
        let members: Vec<(u64, String)> = (1..=3).map(|i| (i, format!("h:{i}"))).collect();
        let map = crate::topology::Topology::new(1, &members, 16, 3)
            .unwrap()
            .map;
        grown(grown(map, 4, "h:4"), 5, "h:5")
    }

    #[test]
    fn growing_moves_replicas_to_the_new_nodes_within_the_limits() {
        let map = five();
        let moves = next_moves(&map);
        assert!(!moves.is_empty());
        assert!(
            moves.iter().all(|m| m.add == Some(4) || m.add == Some(5)),
            "{moves:?}"
        );
        // The metadata group gains voters on the new nodes too (up to five).
        assert!(moves.iter().any(|m| m.shard == META_GROUP));
        let limits = MoveLimits::default();
        let limits = MoveLimits {
            max_moves: 4,
            max_moves_per_node: 2,
            ..limits
        };
        let chosen = admit_moves(&map, &moves, &limits, |_| false);
        assert_eq!(chosen.len(), 4, "{chosen:?}");
        let to = |n: u64| chosen.iter().filter(|m| m.add == Some(n)).count();
        assert!(to(4) <= 2 && to(5) <= 2);
    }

    #[test]
    fn voters_in_another_order_take_the_targets() {
        let mut map = five();
        let (data, _) = targets(&map).unwrap();
        for s in &mut map.shards {
            s.replicas = data.replicas(s.id).to_vec();
        }
        assert!(reorders(&map).iter().all(|(g, _)| *g == META_GROUP));
        map.shards[0].replicas.reverse();
        let first = map.shards[0].id;
        let reorder: Vec<_> = reorders(&map)
            .into_iter()
            .filter(|(g, _)| *g == first)
            .collect();
        assert_eq!(reorder, vec![(first, data.replicas(first).to_vec())]);
        // Not while a move is in flight.
        map.shards[0].learners.push(9);
        assert!(reorders(&map).iter().all(|(g, _)| *g != first));
    }

    #[test]
    fn a_drained_node_loses_every_replica() {
        let mut map = five();
        // Pretend the cluster is balanced over five nodes, then drain node 5.
        let (data, meta) = targets(&map).unwrap();
        for s in &mut map.shards {
            s.replicas = data.replicas(s.id).to_vec();
        }
        map.meta = meta.replicas(META_GROUP).to_vec();
        assert_eq!(pending_moves(&map), 0);
        map.draining.push(5);
        let moves = next_moves(&map);
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|m| m.remove == Some(5)), "{moves:?}");
    }
}
