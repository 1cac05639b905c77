//! The node: routing of commands to shard groups (stub while the runtime is written).

use std::future::Future;
use std::path::PathBuf;

use shoal_core::map::ClusterView;
use shoal_core::{Command, Consistency, Error, Limits, Reply, ShardLayout};

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub shards: u32,
    pub resp_addr: String,
    pub http_addr: String,
    pub limits: Limits,
    /// Whether FLUSHALL/FLUSHDB may run.
    pub allow_flush: bool,
    /// Most keys KEYS may return before it errors.
    pub max_keys_reply: usize,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {}

impl Node {
    pub async fn start(_config: NodeConfig) -> Result<Node, Error> {
        todo!()
    }

    /// Executes a command. The command is ordered at call time, before the returned future
    /// is polled: two writes submitted in sequence from one task are applied in that order.
    pub fn execute(
        &self,
        _command: Command,
        _consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        async { todo!() }
    }

    pub fn id(&self) -> u64 {
        todo!()
    }

    pub fn limits(&self) -> Limits {
        todo!()
    }

    pub fn layout(&self) -> &ShardLayout {
        todo!()
    }

    pub fn allow_flush(&self) -> bool {
        todo!()
    }

    pub fn max_keys_reply(&self) -> usize {
        todo!()
    }

    pub fn cluster_view(&self) -> ClusterView {
        todo!()
    }

    /// Stops the groups and flushes storage.
    pub async fn shutdown(&self) {}
}
