//! The rejoin guard: a node restarted on an existing data directory takes no part in a
//! group's elections (it neither votes nor stands) until a leader has brought its replica
//! up to date.
//!
//! Raft assumes a node never forgets what it acknowledged. A disk can break that: a cut
//! or corrupted journal tail loses log entries this node had acknowledged, or the vote it
//! cast. Voting with such a log can elect a leader that lacks a committed entry (the
//! entry's other copy is outvoted), and a forgotten vote can be cast twice in one term.
//! Neither is possible once the replica's log reaches what the current leader reports as
//! committed: a follower only appends what the leader sends after a matching entry, so
//! its log then holds every committed entry again, and its vote is the leader's. The
//! approach follows protocol-aware recovery (Alagappan et al., FAST '18).
//!
//! A restart cannot tell a damaged tail from a torn, never-acknowledged one, so every
//! restarted replica of a group with other voters is guarded. When no leader has sent it
//! anything for the fallback time (a majority restarting at once has no leader to wait
//! for), it takes part again, as plain Raft would: then a damaged disk in the same
//! outage is beyond what any majority protocol can mask.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use shoal_core::ShardId;
use shoal_raft::Raft;
use shoal_raft::transport::PeerRouter;
use shoal_raft::transport::wire::{Request, Response};

/// Groups on this node that are catching up and so refuse vote requests, each with when
/// a leader last sent it entries or a snapshot chunk.
#[derive(Debug, Default)]
pub struct CatchingUp {
    groups: RwLock<HashMap<ShardId, Option<Instant>>>,
}

impl CatchingUp {
    pub fn contains(&self, group: ShardId) -> bool {
        self.groups
            .read()
            .expect("catch-up lock")
            .contains_key(&group)
    }

    /// Called by the peer server for every AppendEntries and snapshot chunk.
    pub fn heard_from_leader(&self, group: ShardId) {
        if !self.contains(group) {
            return; // the common case: not guarded, nothing to record
        }
        if let Some(heard) = self.groups.write().expect("catch-up lock").get_mut(&group) {
            *heard = Some(Instant::now());
        }
    }

    fn last_heard(&self, group: ShardId) -> Option<Instant> {
        self.groups
            .read()
            .expect("catch-up lock")
            .get(&group)
            .copied()
            .flatten()
    }

    fn set(&self, group: ShardId, on: bool) {
        let mut groups = self.groups.write().expect("catch-up lock");
        if on {
            groups.insert(group, None);
        } else {
            groups.remove(&group);
        }
    }
}

/// What a refused vote request says.
pub fn refusal(me: u64, group: ShardId) -> String {
    format!(
        "node {me} restarted and is catching up on group {group}; \
         it votes again once a leader has brought it up to date"
    )
}

/// Guards `group` on this restarted node: elections off and votes refused until the
/// replica's log reaches what a leader reports as committed, or no leader has sent it
/// anything for `fallback` (counted from the restart at the earliest). Call before the group can receive vote requests.
pub fn guard(
    raft: Raft,
    group: ShardId,
    me: u64,
    catching_up: Arc<CatchingUp>,
    fallback: Duration,
) {
    catching_up.set(group, true);
    raft.runtime_config().elect(false);
    tracing::info!(
        group,
        "restarted: not voting until a leader brings this replica up to date"
    );
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let started = Instant::now();
        // The fallback counts from the last contact with a leader (or the restart): a
        // leader streaming a large snapshot here may take far longer than the fallback,
        // and while some node leads, nobody needs this replica's vote.
        let outcome = loop {
            {
                let m = metrics.borrow_watched();
                let leader = m.current_leader.filter(|l| *l != me);
                let committed = m.cluster_committed.as_ref().map(|c| c.index);
                // The log, not the applied state: a state machine flushed to disk can be
                // ahead of a log whose tail was cut.
                if let (Some(leader), Some(committed)) = (leader, committed)
                    && m.last_log_index >= Some(committed)
                {
                    break Some((leader, committed));
                }
            }
            let quiet_since = catching_up
                .last_heard(group)
                .unwrap_or(started)
                .max(started);
            let deadline = tokio::time::Instant::from_std(quiet_since + fallback);
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return; // the group shut down
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let heard = catching_up.last_heard(group).unwrap_or(started);
                    if heard.elapsed() >= fallback && started.elapsed() >= fallback {
                        break None;
                    }
                }
            }
        };
        match outcome {
            Some((leader, committed)) => tracing::info!(
                group,
                leader,
                committed,
                "caught up after a restart; taking part in elections again"
            ),
            None => tracing::warn!(
                group,
                fallback_ms = fallback.as_millis() as u64,
                "no leader reached this replica for the fallback time after a restart \
                 (a majority may have restarted); taking part in elections again"
            ),
        }
        raft.runtime_config().elect(true);
        catching_up.set(group, false);
    });
}

/// Groups that peers already run, asked once (each peer for at most `timeout`) by a node
/// starting on a new data directory. A wiped node restarted without `--rejoin` looks like
/// a founding member; this tells them apart: where a peer already runs a group, this node
/// joins it guarded instead of founding it. Peers report data groups only; the caller
/// decides about the metadata group. Peers that do not answer count for nothing, so a
/// cluster's first start, nodes coming up in any order, is unaffected.
pub async fn groups_running_elsewhere(
    router: &PeerRouter,
    peers: &[u64],
    timeout: Duration,
) -> HashSet<ShardId> {
    let calls = peers
        .iter()
        .map(|&peer| router.call(peer, Request::Status, timeout));
    let mut running = HashSet::new();
    for answer in futures_util::future::join_all(calls).await {
        if let Ok(Response::Status(status)) = answer {
            running.extend(
                status
                    .replicas
                    .iter()
                    .filter(|r| r.leader.is_some() || r.term > 0 || r.last_applied > 0)
                    .map(|r| r.shard),
            );
        }
    }
    running
}
