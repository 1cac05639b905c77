//! Where administration requests go: `Control` answers the ones peers (and guests) send
//! this node, and routes this node's own to the node that must run them: map changes to
//! the metadata group's leader, membership steps to the moved group's leader.
//!
//! Routing is bounded to two hops: a request that arrives from a member runs here or fails
//! with a leader hint (`NotLeader`), so requests never bounce between nodes; only this
//! node's own requests, and a guest's (which cannot route), are routed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::Error;
use shoal_core::ShardId;
use shoal_core::map::ClusterMap;
use shoal_core::shard::META_GROUP;
use shoal_raft::transport::PeerRouter;
use shoal_raft::transport::wire::{Request, Response};
use shoal_storage::Engine;

use crate::admin::{
    AdminReply, AdminRequest, MembershipOp, admit, decode, drain, encode, update_map,
};
use crate::cluster_map::MapCell;
use crate::group::Groups;
use crate::peers::Peers;

/// How long one routed administration request keeps looking for its leader.
pub(crate) const ROUTE_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct Control {
    pub me: u64,
    pub groups: Arc<Groups>,
    pub engine: Engine,
    pub router: PeerRouter,
    pub peers: Arc<Peers>,
    pub map: Arc<MapCell>,
}

impl Control {
    /// Answers a request from `from` (`guest`: not a member yet).
    pub(crate) async fn answer(
        &self,
        from: u64,
        guest: Option<shoal_raft::transport::GuestIdentity>,
        request: AdminRequest,
    ) -> Result<AdminReply, Error> {
        match (request, guest) {
            (AdminRequest::Map, _) => Ok(AdminReply::Map((*self.map.current()).clone())),
            (AdminRequest::Join(info), Some(guest)) => {
                if info.id != from {
                    return Err(Error::Invalid(format!(
                        "a join for node {} over a connection from node {from}",
                        info.id
                    )));
                }
                // One CA-signed certificate must not let its holder join as any address.
                if let Some(why) = guest.mismatch(&info.peer_addr) {
                    tracing::warn!(node = info.id, peer_addr = %info.peer_addr, reason = %why, "refused a join");
                    return Err(Error::Invalid(format!(
                        "node {} cannot join as {}: {why}",
                        info.id, info.peer_addr
                    )));
                }
                self.meta(AdminRequest::Join(info)).await
            }
            (_, Some(_)) => Err(Error::Invalid(
                "a node that is not a member may only ask to join or for the map".into(),
            )),
            (AdminRequest::Membership { group, op }, None) => {
                crate::admin::membership(&self.groups, group, op).await
            }
            (
                request @ (AdminRequest::PutUser { .. }
                | AdminRequest::RemoveUser(_)
                | AdminRequest::Users),
                None,
            ) => self.users_here(request).await,
            (other, None) => self.meta_here(other).await,
        }
    }

    /// This node's metadata replica, which must lead its group.
    fn meta_leader(&self) -> Result<Arc<crate::group::Group>, Error> {
        let Some(meta) = self.groups.get(META_GROUP) else {
            return Err(Error::NoLeader { shard: META_GROUP });
        };
        if !meta.is_leader() {
            return Err(match meta.leader() {
                Some(leader) => Error::NotLeader {
                    shard: META_GROUP,
                    leader,
                },
                None => Error::NoLeader { shard: META_GROUP },
            });
        }
        Ok(meta)
    }

    /// Runs a user request on this node, which must lead the metadata group.
    async fn users_here(&self, request: AdminRequest) -> Result<AdminReply, Error> {
        let meta = self.meta_leader()?;
        match request {
            AdminRequest::PutUser { user, mode } => {
                let name = user.name.clone();
                crate::users::put_user(&meta, &self.engine, user, mode).await?;
                tracing::info!(user = %name, ?mode, "user stored");
            }
            AdminRequest::RemoveUser(name) => {
                crate::users::remove_user(&meta, &self.engine, &name).await?;
                tracing::info!(user = %name, "user removed");
            }
            AdminRequest::Users => {
                meta.read_barrier()?
                    .await
                    .map_err(|_| Error::ShuttingDown)??;
            }
            _ => unreachable!("only user requests come here"),
        }
        Ok(AdminReply::Users(crate::users::read_users(&self.engine)?))
    }

    /// Runs a map change on this node, which must lead the metadata group.
    async fn meta_here(&self, request: AdminRequest) -> Result<AdminReply, Error> {
        let meta = self.meta_leader()?;
        let map = match request {
            AdminRequest::Join(info) => {
                let map = update_map(&meta, &self.engine, |m| admit(m, &info)).await?;
                tracing::info!(node = info.id, peer_addr = %info.peer_addr, epoch = map.epoch, "admitted a node");
                map
            }
            AdminRequest::RemoveNode(id) => {
                let map = update_map(&meta, &self.engine, |m| drain(m, id)).await?;
                tracing::info!(node = id, epoch = map.epoch, "draining a node");
                map
            }
            AdminRequest::SetPaused(paused) => {
                update_map(&meta, &self.engine, |m| {
                    let changed = m.rebalance_paused != paused;
                    m.rebalance_paused = paused;
                    Ok(changed)
                })
                .await?
            }
            AdminRequest::Map
            | AdminRequest::Membership { .. }
            | AdminRequest::PutUser { .. }
            | AdminRequest::RemoveUser(_)
            | AdminRequest::Users => {
                unreachable!("answered by the caller")
            }
        };
        self.map.offer(map.clone());
        Ok(AdminReply::Map(map))
    }

    /// Runs a map change on the metadata group's leader, wherever it is.
    pub(crate) async fn meta(&self, request: AdminRequest) -> Result<AdminReply, Error> {
        let candidates = |map: &ClusterMap| map.replicas(META_GROUP).to_vec();
        self.route(META_GROUP, request, candidates).await
    }

    /// Runs a membership step on `group`'s leader, wherever it is.
    pub(crate) async fn at_leader(
        &self,
        group: ShardId,
        op: MembershipOp,
    ) -> Result<AdminReply, Error> {
        let request = AdminRequest::Membership { group, op };
        self.route(group, request, move |map: &ClusterMap| {
            map.replicas(group).to_vec()
        })
        .await
    }

    async fn route(
        &self,
        group: ShardId,
        request: AdminRequest,
        candidates: impl Fn(&ClusterMap) -> Vec<u64>,
    ) -> Result<AdminReply, Error> {
        let started = Instant::now();
        let mut hint: Option<u64> = None;
        let mut tried = 0usize;
        let mut last_error = Error::NoLeader { shard: group };
        while started.elapsed() < ROUTE_PATIENCE {
            let target = hint
                .take()
                .or_else(|| self.known_leader(group))
                .unwrap_or_else(|| {
                    let all = candidates(&self.map.current());
                    tried += 1;
                    all.get(tried % all.len().max(1))
                        .copied()
                        .unwrap_or(self.me)
                });
            let result = if target == self.me {
                match &request {
                    AdminRequest::Membership { group, op } => {
                        crate::admin::membership(&self.groups, *group, op.clone()).await
                    }
                    AdminRequest::PutUser { .. }
                    | AdminRequest::RemoveUser(_)
                    | AdminRequest::Users => self.users_here(request.clone()).await,
                    other => self.meta_here(other.clone()).await,
                }
            } else {
                self.call(target, group, &request).await
            };
            match result {
                Err(Error::NotLeader { leader, .. }) if leader != target => {
                    hint = Some(leader);
                    last_error = Error::NotLeader {
                        shard: group,
                        leader,
                    };
                }
                Err(
                    e @ (Error::NotLeader { .. } | Error::NoLeader { .. } | Error::ShuttingDown),
                ) => {
                    last_error = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
        Err(last_error)
    }

    fn known_leader(&self, group: ShardId) -> Option<u64> {
        if let Some(local) = self.groups.get(group) {
            return local.leader();
        }
        self.peers.leader_of(group).map(|(leader, _)| leader)
    }

    async fn call(
        &self,
        target: u64,
        group: ShardId,
        request: &AdminRequest,
    ) -> Result<AdminReply, Error> {
        let answer = self
            .router
            .call(target, Request::Admin(encode(request)), ROUTE_PATIENCE)
            .await
            .map_err(|e| {
                // Unreachable: try another candidate.
                tracing::debug!(target, error = %e, "an administration request was not answered");
                Error::NoLeader { shard: group }
            })?;
        match answer {
            Response::Admin(bytes) => decode::<Result<AdminReply, Error>>(&bytes)?,
            _ => Err(Error::Internal(format!(
                "node {target} answered an administration request with something else"
            ))),
        }
    }
}
