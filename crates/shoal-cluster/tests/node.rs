//! A real node over a temporary directory: writes, reads, restart, TTL, CAS, routing errors.

use std::time::Duration;

use bytes::Bytes;
use shoal_cluster::{Node, NodeConfig};
use shoal_core::command::ScanCursor;
use shoal_core::{
    Command, Condition, Consistency, Error, Expiry, Limits, Reply, WriteOp, WriteReply,
};

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        shards: 4,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: String::new(),
        limits: Limits::default(),
        allow_flush: true,
        max_keys_reply: 1000,
        cluster: Default::default(),
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, value: &str) -> Command {
    Command::Write(WriteOp::Put {
        key: b(key),
        value: b(value),
        condition: Condition::None,
        expiry: Expiry::Clear,
        return_old: false,
    })
}

async fn get(node: &Node, key: &str) -> Option<Bytes> {
    match node
        .execute(Command::Get { key: b(key) }, Consistency::Linearizable)
        .await
        .unwrap()
    {
        Reply::Record(r) => r.map(|r| r.value),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    for i in 0..200 {
        node.execute(
            put(&format!("k{i}"), &format!("v{i}")),
            Consistency::Linearizable,
        )
        .await
        .unwrap();
    }
    assert_eq!(get(&node, "k7").await, Some(b("v7")));
    let cluster_id = node.cluster_view().cluster_id;
    node.shutdown().await;
    drop(node);

    let node = Node::start(config(dir.path())).await.unwrap();
    assert_eq!(node.cluster_view().cluster_id, cluster_id);
    for i in 0..200 {
        assert_eq!(
            get(&node, &format!("k{i}")).await,
            Some(b(&format!("v{i}"))),
            "k{i}"
        );
    }
    match node
        .execute(Command::Count, Consistency::Linearizable)
        .await
        .unwrap()
    {
        Reply::Count(n) => assert_eq!(n, 200),
        other => panic!("unexpected {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_has_one_winner_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    let version = match node
        .execute(put("cas", "0"), Consistency::Linearizable)
        .await
        .unwrap()
    {
        Reply::Write(WriteReply::Put {
            version: Some(v), ..
        }) => v,
        other => panic!("unexpected {other:?}"),
    };
    let futures: Vec<_> = (0..32)
        .map(|i| {
            node.execute(
                Command::Write(WriteOp::Put {
                    key: b("cas"),
                    value: b(&format!("w{i}")),
                    condition: Condition::IfVersion(version),
                    expiry: Expiry::Clear,
                    return_old: false,
                }),
                Consistency::Linearizable,
            )
        })
        .collect();
    let results = futures_util::future::join_all(futures).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(Error::VersionMismatch { .. })))
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_and_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    let cmd = Command::Write(WriteOp::Put {
        key: b("t"),
        value: b("v"),
        condition: Condition::None,
        expiry: Expiry::AfterMillis(200),
        return_old: false,
    });
    node.execute(cmd, Consistency::Linearizable).await.unwrap();
    assert_eq!(get(&node, "t").await, Some(b("v")));
    // Await the reaper's replicated delete: the key count drops to zero.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Reply::Count(n) = node
            .execute(Command::Count, Consistency::Stale)
            .await
            .unwrap()
        else {
            panic!()
        };
        if n == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "key was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&node, "t").await, None);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_and_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    // "foo" (slot 12182) and "bar" (slot 5061) live in different shards of 4.
    let err = node
        .execute(
            Command::GetMany {
                keys: vec![b("foo"), b("bar")],
            },
            Consistency::Linearizable,
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::CrossShard);
    let big = "x".repeat(17 * 1024);
    let err = node
        .execute(put(&big, "v"), Consistency::Linearizable)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::KeyTooLarge { limit: 16384, .. }),
        "{err:?}"
    );
    // Scan sees every key once.
    for i in 0..50 {
        node.execute(put(&format!("s{i}"), "v"), Consistency::Linearizable)
            .await
            .unwrap();
    }
    let mut cursor = ScanCursor::default();
    let mut seen = 0;
    loop {
        let cmd = Command::Scan {
            cursor: cursor.clone(),
            limit: 7,
            prefix: Some(b("s")),
            with_values: false,
        };
        let Reply::Scan { entries, next } =
            node.execute(cmd, Consistency::Linearizable).await.unwrap()
        else {
            panic!()
        };
        seen += entries.len();
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    assert_eq!(seen, 50);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_built_and_restart_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = shoal_cluster::Tuning {
        snapshot_every: 50,
        ..Default::default()
    };
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    let node = Node::start_with(cfg.clone(), tuning.clone()).await.unwrap();
    for i in 0..400 {
        node.execute(
            put(&format!("k{i}"), &format!("v{i}")),
            Consistency::Linearizable,
        )
        .await
        .unwrap();
    }
    // Await a snapshot file of the data shard (group 1).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let snapshot_exists = || {
        std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("group-1-"))
    };
    while !snapshot_exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot was built"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await;
    drop(node);
    let node = Node::start_with(cfg, tuning).await.unwrap();
    for i in 0..400 {
        assert_eq!(
            get(&node, &format!("k{i}")).await,
            Some(b(&format!("v{i}")))
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_value_limit_does_not_block_startup_or_restart() {
    // The cluster map is bigger than this limit; it must not count against it.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits = Limits {
        max_key_bytes: 64,
        max_value_bytes: 16,
    };
    let node = Node::start(cfg.clone()).await.unwrap();
    let err = node
        .execute(put("k", &"v".repeat(17)), Consistency::Linearizable)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { len: 17, limit: 16 }),
        "{err:?}"
    );
    node.execute(put("k", "small"), Consistency::Linearizable)
        .await
        .unwrap();
    node.shutdown().await;
    drop(node);
    let node = Node::start(cfg).await.unwrap();
    assert_eq!(get(&node, "k").await, Some(b("small")));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_are_answered_at_once_by_a_sole_voter_leader() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    node.execute(put("now", "v"), Consistency::Linearizable)
        .await
        .unwrap();
    // After start-up every group is led by this node, its only voter.
    let get = Command::Get { key: b("now") };
    match node.try_read_now(&get, Consistency::Linearizable) {
        Some(Ok(Reply::Record(Some(r)))) => assert_eq!(r.value, b("v")),
        other => panic!("expected an immediate answer, got {other:?}"),
    }
    let missing = Command::Get { key: b("absent") };
    assert!(matches!(
        node.try_read_now(&missing, Consistency::Linearizable),
        Some(Ok(Reply::Record(None)))
    ));
    let cross = Command::GetMany {
        keys: vec![b("foo"), b("bar")],
    };
    assert_eq!(
        node.try_read_now(&cross, Consistency::Linearizable),
        Some(Err(Error::CrossShard))
    );
    let scan = Command::Scan {
        cursor: ScanCursor::default(),
        limit: 10,
        prefix: None,
        with_values: false,
    };
    assert_eq!(node.try_read_now(&scan, Consistency::Linearizable), None);
    node.shutdown().await;
    // A stopped node answers nothing at once.
    assert_eq!(node.try_read_now(&get, Consistency::Linearizable), None);
}
