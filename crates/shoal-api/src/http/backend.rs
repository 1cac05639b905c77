//! The slice of the node the HTTP front end uses, as a trait.
//!
//! Production code only ever uses `shoal_cluster::Node`; the trait exists so the front
//! end's protocol behaviour (routing, status codes, bodies, limits, paging) can be tested
//! against an in-memory fake without starting Raft groups.

use std::future::Future;

use shoal_cluster::Node;
use shoal_core::map::ClusterView;
use shoal_core::{Command, Consistency, Error, Limits, Reply};

pub(crate) trait Backend: Clone + Send + Sync + 'static {
    fn execute(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static;
    fn node_id(&self) -> u64;
    fn limits(&self) -> Limits;
    fn cluster_view(&self) -> ClusterView;
}

impl Backend for Node {
    fn execute(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        Node::execute(self, command, consistency)
    }

    fn node_id(&self) -> u64 {
        self.id()
    }

    fn limits(&self) -> Limits {
        Node::limits(self)
    }

    fn cluster_view(&self) -> ClusterView {
        Node::cluster_view(self)
    }
}
