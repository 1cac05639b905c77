//! Tests of a node that look at its internals (tests/ sees only the public API).

use shoal_core::Limits;

use crate::{Node, NodeConfig};

/// The disk sampler, the TTL reaper, the map follower, the replica keeper, the reconciler,
/// the leader balancer and the peer book: a lone node runs them all (idle until it has
/// peers), so it can be joined. Gossip runs where there is a peer address (not here).
const LONE_NODE_SERVICES: usize = 7;

fn lone_node(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        shards: 2,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: String::new(),
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
    assert_eq!(node.inner.services.running(), LONE_NODE_SERVICES);
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
    // ... and the supervisor's drop cancelled the reaper and the map follower, which let go
    // of the groups.
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
        // A lone node stores the map inline: no map publisher.
        assert_eq!(
            node.inner.services.running(),
            LONE_NODE_SERVICES,
            "round {round}"
        );
        let map = node
            .inner
            .engine
            .get_record(
                shoal_core::shard::META_GROUP,
                crate::cluster_map::CLUSTER_MAP_KEY,
            )
            .unwrap();
        assert!(map.is_some(), "round {round}: the cluster map is stored");
        node.shutdown().await;
        assert_eq!(node.inner.services.running(), 0, "round {round}");
    }
}

/// Writes `value` under the cluster map's key through the node's metadata replica, if the
/// record is still at `version`.
async fn put_map_record(node: &Node, value: Vec<u8>, version: u64) {
    let op = shoal_core::WriteOp::Put {
        key: bytes::Bytes::from_static(crate::cluster_map::CLUSTER_MAP_KEY),
        value: value.into(),
        condition: shoal_core::Condition::IfVersion(version),
        expiry: shoal_core::Expiry::Clear,
        return_old: false,
    };
    let meta = node
        .inner
        .groups
        .get(shoal_core::shard::META_GROUP)
        .unwrap();
    meta.propose(op).unwrap().await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reads_the_stored_map() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    let (stored, version) = crate::cluster_map::read_stored(&node.inner.engine)
        .unwrap()
        .expect("stored");
    assert_eq!(stored, **node.cluster_map().borrow());
    assert_eq!(stored.epoch, 1);
    // A newer map, stored as a later map update would be (on the record's version).
    let mut newer = stored.clone();
    newer.epoch = 2;
    put_map_record(&node, serde_json::to_vec(&newer).unwrap(), version).await;
    node.shutdown().await;
    drop(node);

    let node = Node::start(lone_node(dir.path())).await.unwrap();
    assert_eq!(**node.cluster_map().borrow(), newer);
    assert_eq!(node.cluster_view().epoch, 2);
    let (again, _) = crate::cluster_map::read_stored(&node.inner.engine)
        .unwrap()
        .unwrap();
    assert_eq!(again, newer);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_map_that_does_not_decode_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    let (_, version) = crate::cluster_map::read_stored(&node.inner.engine)
        .unwrap()
        .unwrap();
    put_map_record(&node, b"not json".to_vec(), version).await;
    match crate::cluster_map::read_stored(&node.inner.engine) {
        Err(shoal_core::Error::Internal(msg)) => {
            assert!(msg.contains("shoal/cluster-map"), "{msg}")
        }
        other => panic!("expected Internal, got {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_stored_map_wakes_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    let mut rx = node.cluster_map();
    assert_eq!(rx.borrow_and_update().epoch, 1);
    let (stored, version) = crate::cluster_map::read_stored(&node.inner.engine)
        .unwrap()
        .unwrap();
    let mut newer = stored;
    newer.epoch = 2;
    put_map_record(&node, serde_json::to_vec(&newer).unwrap(), version).await;
    // A hang guard, not a wait: the follower offers the map once the group applies it.
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        rx.wait_for(|m| m.epoch == 2),
    )
    .await
    .expect("the watch saw epoch 2")
    .unwrap();
    assert_eq!(**node.cluster_map().borrow(), newer);
    assert_eq!(node.cluster_view().epoch, 2);
    node.shutdown().await;
    assert_eq!(node.inner.services.running(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_kept_in_the_metadata_group_and_the_last_admin_stays() {
    use crate::users::{StoredUser, UserWrite};
    use shoal_core::auth::Role;
    let dir = tempfile::tempdir().unwrap();
    let user = |name: &str, role| StoredUser {
        name: name.into(),
        role,
        prefix: None,
        hash: format!("$argon2id$fake-{name}"),
    };
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    assert!(node.users().await.unwrap().is_empty());
    let err = node
        .put_user(user("app", Role::ReadWrite), UserWrite::Create)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("first user must be an admin"),
        "{err}"
    );
    node.put_user(user("root", Role::Admin), UserWrite::Create)
        .await
        .unwrap();
    let err = node
        .put_user(user("root", Role::Read), UserWrite::Create)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = node
        .put_user(user("ghost", Role::Read), UserWrite::Update)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no user named ghost"), "{err}");
    let err = node
        .put_user(user("root", Role::Read), UserWrite::Update)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("last admin"), "{err}");
    let err = node.remove_user("root").await.unwrap_err();
    assert!(err.to_string().contains("last admin"), "{err}");
    let users = node
        .put_user(user("app", Role::ReadWrite), UserWrite::Create)
        .await
        .unwrap();
    assert_eq!(users.len(), 2);
    node.shutdown().await;
    drop(node);

    // Durable: a restarted node has them, and removes one.
    let node = Node::start(lone_node(dir.path())).await.unwrap();
    let names: Vec<String> = node
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["app", "root"]);
    let left = node.remove_user("app").await.unwrap();
    assert_eq!(left, vec![user("root", Role::Admin)]);
    node.shutdown().await;
}
