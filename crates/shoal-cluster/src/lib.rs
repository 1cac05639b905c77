//! shoal-cluster: the node runtime.
//!
//! A `Node` owns the storage engine, one Raft group per shard plus the metadata group, the
//! per-shard proposer and reader tasks that batch client requests, and the TTL reaper.
//! Front ends call `Node::execute`.

mod node;

pub use node::{Node, NodeConfig};
