//! shoal-cluster: the node runtime.
//!
//! A `Node` owns the storage engine, one Raft group per shard plus the metadata group, the
//! per-shard proposer and read-gate tasks that batch client requests, and the TTL reaper.
//! Front ends call `Node::execute`.

mod bootstrap;
mod clock;
mod group;
mod node;
mod reaper;

pub use clock::now_ms;
pub use node::{Node, NodeConfig, NodeStats, Tuning, available_cores, default_raft_threads};
