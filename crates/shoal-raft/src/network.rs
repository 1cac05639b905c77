//! The peer network seam. A single node has no peers, so every RPC reports the target
//! unreachable; the multi-node transport (one connection per peer carrying all groups)
//! replaces `NoPeers` without touching the groups.

use std::future::Future;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};

use crate::state_machine::SnapshotFile;
use crate::types::{TypeConfig, Vote};

/// Why an RPC could not be sent.
#[derive(Debug)]
struct NoPeerTransport(u64);

impl std::fmt::Display for NoPeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no peer transport configured on this node (target node {})",
            self.0
        )
    }
}

impl std::error::Error for NoPeerTransport {}

/// Creates clients for peers.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

/// A client for a peer on a node without a peer transport.
#[derive(Debug, Clone)]
pub struct NoPeers {
    target: u64,
}

impl NoPeers {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::new(&NoPeerTransport(self.target))
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NoPeers;

    async fn new_client(&mut self, target: u64, _node: &openraft::impls::BasicNode) -> NoPeers {
        NoPeers { target }
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeers {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
