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
    // The disk sampler and the TTL reaper.
    assert_eq!(node.inner.services.running(), 2);
    node.shutdown().await;
    assert_eq!(node.inner.services.running(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_lone_node_without_shutdown_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    let inner = std::sync::Arc::downgrade(&node.inner);
    let groups = std::sync::Arc::downgrade(&node.inner.groups);
    drop(node);
    // No background service holds the node, so it is gone at once ...
    assert!(inner.upgrade().is_none());
    // ... and the supervisor's drop cancelled the reaper, which lets go of the groups.
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while groups.upgrade().is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reaper stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_lone_node_starts_cleanly_and_stops_its_services_each_time() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let node = Node::start(lone_node(dir.path())).await.unwrap();
        // The disk sampler and the TTL reaper; a lone node stores the map inline.
        assert_eq!(node.inner.services.running(), 2, "round {round}");
        let map = node
            .engine()
            .get_record(
                shoal_core::shard::META_GROUP,
                crate::bootstrap::CLUSTER_MAP_KEY,
            )
            .unwrap();
        assert!(map.is_some(), "round {round}: the cluster map is stored");
        node.shutdown().await;
        assert_eq!(node.inner.services.running(), 0, "round {round}");
    }
}
