//! The `shoal.v1.Cluster` service: this node's status and the cluster map, from the same
//! `ClusterView` that `GET /v1/cluster` and CLUSTER SLOTS render.

use std::sync::Arc;

use shoal_core::slot::SLOT_COUNT;
use shoal_proto::v1::cluster_server::Cluster;
use shoal_proto::v1::{
    MapRequest, MapResponse, Node, Shard, SlotRange, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::backend::Backend;

/// The Cluster service over one backend.
#[derive(Clone)]
pub struct ClusterService {
    backend: Arc<dyn Backend>,
    auth: Arc<crate::auth::Authenticator>,
}

impl ClusterService {
    pub fn new(backend: Arc<dyn Backend>, auth: Arc<crate::auth::Authenticator>) -> Self {
        Self { backend, auth }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        super::caller(&self.auth, &request).await?;
        let view = self.backend.cluster_view();
        let me = self.backend.id();
        let failed = self.backend.failed_groups();
        let health = if failed.is_empty() {
            "ok".to_string()
        } else {
            let shards: Vec<String> = failed
                .iter()
                .map(|(shard, err)| format!("shard {shard}: {err}"))
                .collect();
            format!("unhealthy: {}", shards.join("; "))
        };
        Ok(Response::new(StatusResponse {
            node_id: me,
            cluster_id: view.cluster_id,
            shards_led: view
                .shards
                .iter()
                .filter(|s| s.leader == Some(me))
                .map(|s| s.id)
                .collect(),
            shards: self.backend.layout().shards().len() as u32,
            epoch: view.epoch,
            health,
        }))
    }

    async fn map(&self, request: Request<MapRequest>) -> Result<Response<MapResponse>, Status> {
        super::caller(&self.auth, &request).await?;
        let view = self.backend.cluster_view();
        let nodes = view
            .nodes
            .iter()
            .map(|n| Node {
                id: n.info.id,
                resp_addr: n.info.resp_addr.clone(),
                http_addr: n.info.http_addr.clone(),
                grpc_addr: n.info.grpc_addr.clone(),
                state: n.state.as_str().to_string(),
            })
            .collect();
        let shards = view
            .shards
            .iter()
            .map(|s| Shard {
                id: s.id,
                // The map's ranges are half-open; the proto's, like CLUSTER SLOTS, inclusive.
                slots: vec![SlotRange {
                    start: u32::from(s.range.start),
                    end: s.range.end.min(u32::from(SLOT_COUNT)) - 1,
                }],
                leader: s.leader.unwrap_or(0),
                replicas: s.replicas.clone(),
            })
            .collect();
        Ok(Response::new(MapResponse {
            cluster_id: view.cluster_id,
            epoch: view.epoch,
            nodes,
            shards,
        }))
    }
}
