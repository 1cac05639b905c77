//! The peer transport: one TCP connection per pair of nodes carries every group's Raft
//! messages, streamed snapshots, forwarded client commands and status exchanges, in both
//! directions (openraft-multi's router model: `PeerRouter` is the shared router, each group
//! talks through a `GroupNetworkAdapter` bound to its id).

mod client;
mod connection;
mod faults;
mod group_network;
mod server;
mod snapshots;
mod stream;
pub mod wire;

#[cfg(test)]
mod tests;

use std::future::Future;

use openraft::OptionalSend;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::GroupRouter;
use shoal_core::ShardId;
use tokio::io::AsyncReadExt;

pub use client::{
    CallError, DEFAULT_APPEND_PIPELINE, DEFAULT_SNAPSHOT_BYTES_PER_SEC, PeerRouter,
    TransportCounters, TransportOptions, guest_call,
};
pub use faults::Faults;
pub use group_network::GroupNetwork;
pub use server::{GuestIdentity, PeerHandler, Responder, ServerConfig, serve};
pub use snapshots::TransferProgress;
use wire::{Request, Response, SnapshotChunk};

use crate::state_machine::SnapshotFile;
use crate::types::{TypeConfig, Vote};

fn unreachable(target: u64, e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&CallError::NotSent(format!("node {target}: {e}")))
}

fn unexpected(target: u64) -> Unreachable<TypeConfig> {
    unreachable(target, "answered with an unexpected message type")
}

fn vote_response(
    target: u64,
    response: Response,
) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
    match response {
        Response::Vote(r) => Ok(r),
        _ => Err(RPCError::Unreachable(unexpected(target))),
    }
}

impl PeerRouter {
    /// One Raft RPC within openraft's deadline; any transport failure is "unreachable", so
    /// openraft backs off before retrying.
    async fn raft_call(
        &self,
        target: u64,
        request: Request,
        option: RPCOption,
    ) -> Result<Response, RPCError<TypeConfig>> {
        self.call(target, request, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(target, e)))
    }

    /// Queues one AppendEntries for `target` now, before the returned future is polled, so
    /// calls made one after another are sent in that order (`group_network` relies on it).
    fn append_call(
        &self,
        target: u64,
        group: ShardId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>>
    + Send
    + use<> {
        let floor = self.options().append_timeout_min;
        let timeout = option.hard_ttl().max(floor);
        let call = self.call(target, Request::AppendEntries { group, rpc }, timeout);
        async move {
            match call.await {
                Ok(Response::AppendEntries(r)) => Ok(r),
                Ok(_) => Err(RPCError::Unreachable(unexpected(target))),
                Err(e) => Err(RPCError::Unreachable(unreachable(target, e))),
            }
        }
    }
}

impl GroupRouter<TypeConfig, ShardId> for PeerRouter {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &self,
        target: u64,
        group: ShardId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.append_call(target, group, rpc, option).await
    }

    async fn vote(
        &self,
        target: u64,
        group: ShardId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        vote_response(
            target,
            self.raft_call(target, Request::Vote { group, rpc }, option)
                .await?,
        )
    }

    async fn pre_vote(
        &self,
        target: u64,
        group: ShardId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Request::PreVote { group, rpc };
        vote_response(target, self.raft_call(target, request, option).await?)
    }

    async fn transfer_leader(
        &self,
        target: u64,
        group: ShardId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Request::TransferLeader { group, req };
        match self.raft_call(target, request, option).await? {
            Response::TransferLeader(r) => Ok(r),
            _ => Err(RPCError::Unreachable(unexpected(target))),
        }
    }

    /// Streams the snapshot file in chunks, one in flight at a time, so a transfer holds
    /// one chunk of memory whatever the shard's size.
    async fn full_snapshot(
        &self,
        target: u64,
        group: ShardId,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk_bytes = self.options().snapshot_chunk_bytes.max(1);
        let timeout = self.options().snapshot_chunk_timeout;
        let send = async move {
            let fail = |e: String| StreamingError::Unreachable(unreachable(target, e));
            let mut file = tokio::fs::File::open(&snapshot.snapshot.path)
                .await
                .map_err(|e| fail(format!("cannot open the snapshot to send: {e}")))?;
            let total = file
                .metadata()
                .await
                .map_err(|e| fail(e.to_string()))?
                .len();
            let transfer = self.snapshots().start(target, group, total);
            let mut offset = 0u64;
            loop {
                let len = chunk_bytes.min((total - offset) as usize);
                self.snapshots().pace(len as u64).await;
                let mut data = vec![0u8; len];
                file.read_exact(&mut data)
                    .await
                    .map_err(|e| fail(format!("cannot read the snapshot to send: {e}")))?;
                let done = offset + len as u64 >= total;
                let chunk = SnapshotChunk {
                    group,
                    vote,
                    meta: snapshot.meta.clone(),
                    offset,
                    data: data.into(),
                    done,
                };
                let response = self
                    .call(target, Request::Snapshot(chunk), timeout)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                offset += len as u64;
                transfer.sent(offset);
                match response {
                    Response::Snapshot(Some(r)) if done => return Ok(r),
                    Response::Snapshot(None) if !done => {}
                    _ => return Err(StreamingError::Unreachable(unexpected(target))),
                }
            }
        };
        tokio::select! {
            result = send => result,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

/// Creates each group's clients for its peers, all over the node's one `PeerRouter`.
#[derive(Clone)]
pub struct NetworkFactory {
    router: PeerRouter,
    group: ShardId,
}

impl NetworkFactory {
    pub fn new(router: PeerRouter, group: ShardId) -> Self {
        Self { router, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(
        &mut self,
        target: u64,
        _node: &openraft::impls::BasicNode,
    ) -> Self::Network {
        GroupNetwork::new(self.router.clone(), target, self.group)
    }
}
