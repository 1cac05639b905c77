//! shoal-cluster: the node runtime.
//!
//! A `Node` owns the storage engine, the peer transport, its replicas of the metadata group
//! and of the shards placed on it, the per-shard proposer and read-gate tasks that batch
//! client requests, the status exchange with peers, and the TTL reaper. Front ends call
//! `Node::execute`, which routes each command to the replica that must answer it.

mod admin;
mod bootstrap;
mod catch_up;
mod clock;
mod cluster_map;
mod config;
mod control;
mod disk_guard;
mod executor;
pub mod gossip;
mod gossip_peer;
mod group;
mod handler;
mod healer;
mod join;
mod leadership;
mod local;
pub mod memory;
pub mod mover;
mod node;
mod peers;
mod reaper;
mod replicas;
mod router;
mod services;
mod start_error;
mod supervisor;
#[cfg(test)]
mod tests;
pub mod topology;
pub mod users;
mod view;

pub use clock::now_ms;
pub use cluster_map::MapRx;
pub use config::DEFAULT_DEAD_AFTER;
pub use memory::{MemoryBudget, MemoryReport};
pub use node::{
    ClusterConfig, Node, NodeConfig, NodeStats, Tuning, available_cores, default_raft_threads,
};
pub use shoal_raft::transport::{
    DEFAULT_APPEND_PIPELINE, DEFAULT_SNAPSHOT_BYTES_PER_SEC, Faults, TransportOptions,
};
pub use start_error::StartError;
