//! Tests of a node that look at its internals (tests/ sees only the public API).

use shoal_core::Limits;

use crate::{Node, NodeConfig};

fn lone_node(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        shards: 2,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        limits: Limits::default(),
        allow_flush: true,
        max_keys_reply: 1000,
        cluster: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_and_awaits_the_background_services() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    // At least the disk sampler.
    assert!(node.inner.services.running() >= 1);
    node.shutdown().await;
    assert_eq!(node.inner.services.running(), 0);
}
