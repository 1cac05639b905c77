//! shoal-raft: openraft over shoal-storage.
//!
//! Defines the Raft type config every group shares, the log store and the state machine
//! (both thin layers over the node's one storage engine), and the peer network seam. The
//! state machine runs shoal-core's deterministic `apply`, so this crate holds no
//! key-value semantics of its own.

mod log_store;
mod network;
mod state_machine;
mod types;

pub use log_store::LogStore;
pub use network::{NetworkFactory, NoPeers};
pub use state_machine::{ShardStateMachine, SnapshotFile};
pub use types::{CallbackResponder, ShardRequest, ShardResponse, TypeConfig};

/// A Raft instance of any shoal group.
pub type Raft = openraft::Raft<TypeConfig, ShardStateMachine>;

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
