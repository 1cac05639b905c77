//! shoal-raft: openraft over shoal-storage.
//!
//! Defines the Raft type config every group shares, the log store and the state machine
//! (both thin layers over the node's one storage engine), and the peer transport. The
//! state machine runs shoal-core's deterministic `apply`, so this crate holds no
//! key-value semantics of its own.

mod log_store;
mod state_machine;
pub mod transport;
mod types;

pub use log_store::LogStore;
pub use state_machine::{ShardStateMachine, SnapshotFile};
pub use transport::NetworkFactory;
pub use types::{CallbackResponder, ShardRequest, ShardResponse, TypeConfig};

/// A Raft instance of any shoal group.
pub type Raft = openraft::Raft<TypeConfig, ShardStateMachine>;

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
