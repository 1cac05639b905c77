//! Cluster administration over the peer transport: the requests that change the cluster map
//! (admit a node, drain one, pause rebalancing), which run on the metadata group's leader;
//! the membership steps of a replica move, which run on the moved group's leader; and the
//! map itself, which any node answers (a node that joins, or one without a metadata
//! replica, learns the map this way).
//!
//! Payloads are JSON: these requests are rare, and the map's optional fields then decode
//! from older writers. Every change to the map is a compare-and-set on its record's version
//! (`update_map`), so two metadata leaders can never lose each other's update.

use std::collections::BTreeSet;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use shoal_core::map::{ClusterMap, NodeInfo};
use shoal_core::{Condition, Error, Expiry, ShardId, WriteOp};
use shoal_storage::Engine;

use crate::cluster_map::{CLUSTER_MAP_KEY, read_stored};
use crate::group::{Group, Groups};

/// A question for another node's cluster layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Admit this node to the cluster (metadata leader).
    Join(NodeInfo),
    /// The answering node's current cluster map.
    Map,
    /// Drain a node, then remove it from the map (metadata leader).
    RemoveNode(u64),
    /// Pause (true) or resume new replica moves (metadata leader).
    SetPaused(bool),
    /// One membership step of a move (the group's leader).
    Membership { group: ShardId, op: MembershipOp },
    /// Create or change a user (metadata leader).
    PutUser {
        user: crate::users::StoredUser,
        mode: crate::users::UserWrite,
    },
    /// Remove a user (metadata leader).
    RemoveUser(String),
    /// Every user (metadata leader, after a read barrier).
    Users,
}

/// A membership step, run by the group's leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    /// Build a snapshot of the group now and purge the log it covers, so a replica added
    /// next is sent the snapshot (compact, streamed in paced chunks) rather than the whole
    /// log (every write ever made, in large unpaced batches).
    CompactLog,
    /// Make `node` a learner (no-op if it already is a member).
    AddLearner { node: u64, addr: String },
    /// How far `node` has caught up.
    Progress { node: u64 },
    /// Replace the voters by these (joint consensus inside openraft); removed voters leave
    /// the group. A leader that would remove itself hands leadership to the first of them
    /// and answers `NotLeader` instead: the caller retries there.
    SetVoters(Vec<u64>),
    /// Take back a learner that never became a voter (a move rolled back).
    RemoveLearner(u64),
    /// The group's membership as its leader sees it.
    State,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminReply {
    Map(ClusterMap),
    Users(Vec<crate::users::StoredUser>),
    Done,
    Progress {
        matched: Option<u64>,
        last: u64,
    },
    Members {
        voters: Vec<u64>,
        learners: Vec<u64>,
        joint: bool,
    },
}

/// Longest a group may take to build the snapshot a new replica is sent.
const SNAPSHOT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("admin messages serialise"))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("malformed administration message: {e}")))
}

/// Applies `change` to the stored cluster map and stores the result one epoch later, with a
/// compare-and-set on the record's version (retried on a conflict). `change` returns false
/// when the map needs no change; the stored map is returned as it is then. Must run on the
/// metadata group's leader (anything else fails with `NotLeader`).
pub(crate) async fn update_map<F>(
    meta: &Group,
    engine: &Engine,
    mut change: F,
) -> Result<ClusterMap, Error>
where
    F: FnMut(&mut ClusterMap) -> Result<bool, Error>,
{
    for _ in 0..8 {
        // A linearizable read first: a new leader may not have applied the last map yet.
        meta.read_barrier()?
            .await
            .map_err(|_| Error::ShuttingDown)??;
        let Some((stored, version)) = read_stored(engine)? else {
            return Err(Error::NoLeader { shard: 0 });
        };
        let mut next = stored.clone();
        if !change(&mut next)? {
            return Ok(stored);
        }
        next.epoch = stored.epoch + 1;
        let op = WriteOp::Put {
            key: Bytes::from_static(CLUSTER_MAP_KEY),
            value: encode(&next),
            condition: Condition::IfVersion(version),
            expiry: Expiry::Clear,
            return_old: false,
        };
        match meta.propose(op)?.await.map_err(|_| Error::ShuttingDown)? {
            Ok(_) => return Ok(next),
            Err(Error::VersionMismatch { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(
        "the cluster map kept changing under an update; retry".into(),
    ))
}

/// Adds `node` to the map. Idempotent for the same id and peer address; refuses a removed
/// id, an id another address uses, and an address another id uses.
pub(crate) fn admit(map: &mut ClusterMap, node: &NodeInfo) -> Result<bool, Error> {
    let id = node.id;
    if id == 0 {
        return Err(Error::Invalid("node id must be 1 or greater".into()));
    }
    if map.removed.contains(&id) || map.dead.contains(&id) {
        return Err(Error::Invalid(format!(
            "node {id} was removed from this cluster (or declared dead and replaced) and node \
             ids are never reused: start the new node with an unused --id and an empty \
             --data-dir"
        )));
    }
    if let Some(other) = map
        .nodes
        .iter()
        .find(|n| n.peer_addr == node.peer_addr && n.id != id)
    {
        return Err(Error::Invalid(format!(
            "peer address {} is already used by node {}: give this node its own --peer-addr \
             (or, to restart node {}, pass --id {})",
            node.peer_addr, other.id, other.id, other.id
        )));
    }
    if let Some(known) = map.nodes.iter_mut().find(|n| n.id == id) {
        if known.peer_addr != node.peer_addr {
            return Err(Error::Invalid(format!(
                "node id {id} is already used by the node at {}: pick an unused --id \
                 (`shoal cluster status` lists the members)",
                known.peer_addr
            )));
        }
        // The same node asking again (a retried or repeated join): nothing new, but keep
        // its client addresses current.
        let changed = known.resp_addr != node.resp_addr
            || known.http_addr != node.http_addr
            || known.grpc_addr != node.grpc_addr;
        known.resp_addr = node.resp_addr.clone();
        known.http_addr = node.http_addr.clone();
        known.grpc_addr = node.grpc_addr.clone();
        return Ok(changed);
    }
    map.nodes.push(node.clone());
    map.nodes.sort_by_key(|n| n.id);
    Ok(true)
}

/// Marks `id` as draining: the reconciler moves its replicas away, then removes it.
/// Refused when the others could not hold the replication factor.
pub(crate) fn drain(map: &mut ClusterMap, id: u64) -> Result<bool, Error> {
    if map.removed.contains(&id) {
        // Already done: removing twice is not an error (`remove-node --wait` retried).
        return Ok(false);
    }
    if map.node(id).is_none() {
        let members: Vec<String> = map.nodes.iter().map(|n| n.id.to_string()).collect();
        return Err(Error::Invalid(format!(
            "node {id} is not a member of this cluster (members: {})",
            members.join(", ")
        )));
    }
    if map.draining.contains(&id) {
        return Ok(false);
    }
    let remaining = map.active_nodes().into_iter().filter(|n| *n != id).count();
    if remaining < map.replication as usize {
        return Err(Error::Invalid(format!(
            "removing node {id} would leave {remaining} node(s) to hold {} replicas of every shard \
             (--replication): add a node first (shoal server --join ...), then remove this one",
            map.replication
        )));
    }
    map.draining.push(id);
    Ok(true)
}

/// Runs one membership step on this node's replica of `group`, which must lead it.
pub(crate) async fn membership(
    groups: &Groups,
    group: ShardId,
    op: MembershipOp,
) -> Result<AdminReply, Error> {
    let Some(g) = groups.get(group) else {
        return Err(Error::NoLeader { shard: group });
    };
    if !g.is_leader() {
        return Err(match g.leader() {
            Some(leader) => Error::NotLeader {
                shard: group,
                leader,
            },
            None => Error::NoLeader { shard: group },
        });
    }
    let metrics = g.raft.metrics().borrow_watched().clone();
    let config = metrics.membership_config.membership().clone();
    let voters: BTreeSet<u64> = config.voter_ids().collect();
    let learners: BTreeSet<u64> = config.learner_ids().collect();
    let joint = config.get_joint_config().len() > 1;
    let raft_err = |e: openraft::error::RaftError<
        shoal_raft::TypeConfig,
        openraft::error::ClientWriteError<shoal_raft::TypeConfig>,
    >| {
        match e.forward_to_leader() {
            Some(f) => match f.leader_id {
                Some(leader) => Error::NotLeader {
                    shard: group,
                    leader,
                },
                None => Error::NoLeader { shard: group },
            },
            None => Error::Internal(format!("group {group}: {e}")),
        }
    };
    match op {
        MembershipOp::CompactLog => {
            let Some(applied) = metrics.last_applied.map(|id| id.index) else {
                return Ok(AdminReply::Done);
            };
            if metrics.snapshot.is_none_or(|s| s.index < applied) {
                g.raft
                    .trigger()
                    .snapshot()
                    .await
                    .map_err(|e| Error::Internal(format!("group {group}: {e}")))?;
                g.raft
                    .wait(Some(SNAPSHOT_PATIENCE))
                    .metrics(
                        |m| m.snapshot.is_some_and(|s| s.index >= applied),
                        "snapshot for a new replica",
                    )
                    .await
                    .map_err(|e| Error::Internal(format!("group {group}: {e}")))?;
            }
            let upto = g
                .raft
                .metrics()
                .borrow_watched()
                .snapshot
                .map_or(applied, |s| s.index);
            g.raft
                .trigger()
                .purge_log(upto)
                .await
                .map_err(|e| Error::Internal(format!("group {group}: {e}")))?;
            Ok(AdminReply::Done)
        }
        MembershipOp::AddLearner { node, addr } => {
            if voters.contains(&node) || learners.contains(&node) {
                return Ok(AdminReply::Done);
            }
            g.raft
                .add_learner(node, BasicNode::new(addr), false)
                .await
                .map_err(raft_err)?;
            Ok(AdminReply::Done)
        }
        MembershipOp::Progress { node } => Ok(AdminReply::Progress {
            matched: metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&node).cloned().flatten())
                .map(|id| id.index),
            last: metrics.last_log_index.unwrap_or(0),
        }),
        MembershipOp::SetVoters(target) => {
            let set: BTreeSet<u64> = target.iter().copied().collect();
            if set.is_empty() {
                return Err(Error::Invalid("a group needs at least one voter".into()));
            }
            if set == voters && !joint {
                return Ok(AdminReply::Done);
            }
            let me = g.node_id();
            if !set.contains(&me) {
                // Hand leadership to a voter that stays, then let the caller retry there: a
                // leader removing itself would leave the group leaderless for an election.
                let Some(next) = target.iter().copied().find(|n| voters.contains(n)) else {
                    return Err(Error::Invalid(format!(
                        "group {group}: no current voter stays among {target:?}"
                    )));
                };
                let _ = g.raft.trigger().transfer_leader(next).await;
                return Err(Error::NotLeader {
                    shard: group,
                    leader: next,
                });
            }
            g.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(set), false)
                .await
                .map_err(raft_err)?;
            Ok(AdminReply::Done)
        }
        MembershipOp::RemoveLearner(node) => {
            if voters.contains(&node) {
                return Err(Error::Invalid(format!(
                    "group {group}: node {node} is already a voter, not a learner"
                )));
            }
            if !learners.contains(&node) {
                return Ok(AdminReply::Done);
            }
            g.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await
                .map_err(raft_err)?;
            Ok(AdminReply::Done)
        }
        MembershipOp::State => Ok(AdminReply::Members {
            voters: voters.into_iter().collect(),
            learners: learners.into_iter().collect(),
            joint,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_map::grown;

    fn three() -> ClusterMap {
        let members: Vec<(u64, String)> = (1..=3).map(|i| (i, format!("h:{i}"))).collect();
        crate::topology::Topology::new(1, &members, 4, 3)
            .unwrap()
            .map
    }

    fn info(id: u64, addr: &str) -> NodeInfo {
        NodeInfo {
            id,
            peer_addr: addr.into(),
            resp_addr: String::new(),
            http_addr: String::new(),
            grpc_addr: String::new(),
        }
    }

    #[test]
    fn admission_is_idempotent_and_refuses_clashes() {
        let mut map = three();
        assert!(admit(&mut map, &info(4, "h:4")).unwrap());
        assert!(
            !admit(&mut map, &info(4, "h:4")).unwrap(),
            "joining twice changes nothing"
        );
        assert_eq!(map.nodes.len(), 4);
        let err = admit(&mut map, &info(4, "h:9")).unwrap_err().to_string();
        assert!(
            err.contains("node id 4 is already used by the node at h:4"),
            "{err}"
        );
        let err = admit(&mut map, &info(5, "h:2")).unwrap_err().to_string();
        assert!(err.contains("already used by node 2"), "{err}");
        map.removed.push(7);
        let err = admit(&mut map, &info(7, "h:7")).unwrap_err().to_string();
        assert!(err.contains("never reused"), "{err}");
    }

    #[test]
    fn draining_keeps_the_replication_factor() {
        let mut map = three();
        let err = drain(&mut map, 2).unwrap_err().to_string();
        assert!(
            err.contains("would leave 2 node(s) to hold 3 replicas"),
            "{err}"
        );
        let mut map = grown(three(), 4, "h:4");
        assert!(drain(&mut map, 2).unwrap());
        assert!(
            !drain(&mut map, 2).unwrap(),
            "draining twice changes nothing"
        );
        assert_eq!(map.active_nodes(), vec![1, 3, 4]);
        let err = drain(&mut map, 9).unwrap_err().to_string();
        assert!(err.contains("not a member"), "{err}");
    }
}
