//! The elastic cluster: nodes join (`--join`) and leave (`POST /v1/cluster/nodes/{id}/remove`)
//! while clients write, replicas move by themselves, and nothing acknowledged is lost.

use std::sync::atomic::AtomicU64;

use super::harness::ClusterView;
use super::*;

/// Longest a cluster of these tests may take to finish its replica moves.
const BALANCE: Duration = Duration::from_secs(180);

/// Polls node `asking` until the cluster has `members` nodes, no move in flight or pending.
pub(super) async fn wait_balanced(api: &Api, asking: u64, members: usize) -> ClusterView {
    poll_until(
        &format!("a balanced cluster of {members} nodes (as node {asking} sees it)"),
        BALANCE,
        || async {
            let view = api.view(asking).await.map_err(|e| e.to_string())?;
            let active = view.nodes.iter().filter(|n| n.state == "active").count();
            if active == members
                && view.nodes.len() == members
                && view.moves.is_empty()
                && view.moves_pending == 0
            {
                Ok(view)
            } else {
                Err(format!(
                    "{} nodes ({active} active), {} moves in flight, {} pending, epoch {}",
                    view.nodes.len(),
                    view.moves.len(),
                    view.moves_pending,
                    view.epoch
                ))
            }
        },
    )
    .await
}

/// Writes fresh keys through the nodes in `targets` in turn until `stop`; returns the
/// acknowledged writes. Any failure but a transient one fails the test.
pub(super) fn start_writer(
    prefix: &'static str,
    api: Api,
    targets: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<Expected>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let node = {
                let targets = targets.lock().unwrap();
                targets[i % targets.len()]
            };
            let key = format!("{prefix}-{i}");
            let value = format!("v{i}-via-{node}");
            match api.put(node, &key, &value).await {
                Ok(version) => {
                    acked.push(Expected {
                        key,
                        value,
                        version: Some(version),
                    });
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => assert_transient(&e, &format!("PUT {key} through node {node}")),
            }
            i += 1;
        }
        acked
    })
}

/// Each node's number of replicas (voters) across the data shards.
fn replicas_per_node(view: &ClusterView) -> BTreeMap<u64, usize> {
    let mut count: BTreeMap<u64, usize> = view.nodes.iter().map(|n| (n.id, 0)).collect();
    for shard in &view.shards {
        for r in &shard.replicas {
            *count.entry(*r).or_default() += 1;
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grows_from_three_to_five_nodes_and_shrinks_back_under_load() {
    let mut cluster = Cluster::start(3).await;
    let api = cluster.api().clone();
    let targets = Arc::new(Mutex::new(vec![1, 2, 3]));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = start_writer("grow", api, targets.clone(), stop.clone(), written.clone());

    // Grow: two nodes join while the writer runs.
    let four = cluster.add_node().await;
    let five = cluster.add_node().await;
    let api = cluster.api().clone();
    let view = wait_balanced(&api, 1, 5).await;
    let per_node = replicas_per_node(&view);
    let total: usize = per_node.values().sum();
    assert_eq!(total, view.shards.len() * 3, "{per_node:?}");
    let (low, high) = (total / 5, total.div_ceil(5));
    assert!(
        per_node.values().all(|c| (low..=high).contains(c)),
        "every node holds {low} or {high} replicas: {per_node:?}"
    );
    assert_eq!(view.meta.len(), 5, "the metadata group spans five nodes");
    stop.store(true, Ordering::Relaxed);
    let mut acked = writer.await.expect("writer");

    // Writes through every node, the new ones included, while the two new nodes leave again
    // (the writer stops using them first).
    let stop = Arc::new(AtomicBool::new(false));
    targets.lock().unwrap().extend([four, five]);
    let writer = start_writer(
        "shrink",
        api.clone(),
        targets.clone(),
        stop.clone(),
        written.clone(),
    );
    let before = written.load(Ordering::Relaxed);
    poll_until("writes through the new nodes too", RECOVERY, || async {
        (written.load(Ordering::Relaxed) > before + 20)
            .then_some(())
            .ok_or_else(|| "waiting".to_string())
    })
    .await;
    // Node 5 leads shards (the balancer hands each shard to its preferred leader) when it
    // is removed: leadership moves away before its replicas do.
    poll_until("node 5 leads a shard", RECOVERY, || async {
        let view = api.view(1).await.map_err(|e| e.to_string())?;
        let led = view
            .shards
            .iter()
            .filter(|s| s.leader == Some(five))
            .count();
        (led > 0).then_some(()).ok_or_else(|| "not yet".to_string())
    })
    .await;
    targets.lock().unwrap().retain(|n| *n <= 3);
    api.remove_node(2, five).await.expect("remove node 5");
    api.remove_node(3, four).await.expect("remove node 4");
    let view = wait_balanced(&api, 1, 3).await;
    assert!(view.nodes.iter().all(|n| n.id <= 3), "{view:?}");
    assert_eq!(view.meta.len(), 3);
    stop.store(true, Ordering::Relaxed);
    acked.extend(writer.await.expect("writer"));
    assert!(
        acked.len() > 50,
        "the writer made progress: {}",
        acked.len()
    );
    assert_all_readable(&api, &[1, 2, 3], &acked).await;

    // A removed node refuses to serve, and refuses to start again.
    poll_until("node 5 refuses requests once removed", RECOVERY, || async {
        match api.get(five, "grow-0").await {
            Err(e) if e.to_string().contains("was removed") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let spec = cluster.spec(five);
    cluster.kill(five);
    let done = spec.run_to_exit();
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert!(done.stderr.contains("was removed"), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_clashes_or_reuses_a_removed_id_is_refused() {
    let mut cluster = Cluster::start(3).await;
    let members = (1..=3)
        .map(|id| cluster.spec(id).peer_addr())
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(3);
    let template = cluster.spec(1);
    let joiner = |id: u64, data: &str| NodeSpec {
        id,
        data_dir: dir.path().join(data),
        resp_port: ports[0],
        http_port: ports[1],
        peer_port: ports[2],
        join: Some(members.clone()),
        ..template.clone()
    };
    let mut both = joiner(7, "both");
    both.extra_args.extend([
        "--initial-cluster".to_string(),
        format!("7=127.0.0.1:{}", ports[2]),
    ]);
    super::assert_refused(&both, "--join and --initial-cluster together");
    super::assert_refused(
        &joiner(2, "clash"),
        "node id 2 is already used by the node at",
    );
    let nowhere = NodeSpec {
        join: Some(format!("127.0.0.1:{}", free_ports(1)[0])),
        extra_args: vec!["--join-timeout-secs".into(), "1".into()],
        ..joiner(8, "nowhere")
    };
    super::assert_refused(&nowhere, "cannot join");

    // Joining, restarting with the same flags (no second join), then leaving for good.
    let four = cluster.add_node().await;
    let epoch = cluster.api().view(1).await.expect("view").epoch;
    cluster.kill(four);
    cluster.restart(four).await;
    wait_balanced(cluster.api(), 1, 4).await;
    cluster
        .api()
        .remove_node(1, four)
        .await
        .expect("remove node 4");
    wait_balanced(cluster.api(), 1, 3).await;
    assert!(cluster.api().view(1).await.expect("view").epoch > epoch);
    super::assert_refused(&joiner(four, "again"), "never reused");
    // Three nodes with three replicas each cannot lose one.
    let err = cluster.api().remove_node(1, 3).await.expect_err("refused");
    assert!(err.to_string().contains("would leave 2 node(s)"), "{err}");
}

/// Writes `count` keys of `bytes` bytes each through node 1; every write must succeed.
async fn put_sized(api: &Api, prefix: &str, count: usize, bytes: usize) -> Vec<Expected> {
    let value = "x".repeat(bytes);
    let mut written = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("{prefix}-{i}");
        let value = format!("{i}-{value}");
        let version = api
            .put(1 + (i as u64 % 3), &key, &value)
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
        written.push(Expected {
            key,
            value,
            version: Some(version),
        });
    }
    written
}

/// Polls node `asking` until a move that adds a replica to `node` is in flight.
async fn wait_for_move_to(api: &Api, asking: u64, node: u64) -> ClusterView {
    poll_until(
        &format!("a replica moving to node {node}"),
        RECOVERY,
        || async {
            let view = api.view(asking).await.map_err(|e| e.to_string())?;
            let moving = view.moves.iter().any(|m| m["add"].as_u64() == Some(node));
            if moving {
                Ok(view)
            } else {
                Err(format!("moves in flight: {:?}", view.moves))
            }
        },
    )
    .await
}

/// Runs `shoal cluster verify` against node `via`: its exit status and what it printed.
pub(super) fn run_verify(cluster: &Cluster, via: u64) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "cluster",
            "verify",
            "--addr",
            cluster.http_url(via).as_str(),
        ])
        .output()
        .expect("run shoal cluster verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Polls until `shoal cluster verify` passes (leaders spread by the balancer take a moment
/// after the last move), then checks what it printed.
pub(super) async fn wait_verified(cluster: &Cluster, via: u64) {
    poll_until("shoal cluster verify passes", BALANCE, || async {
        match run_verify(cluster, via) {
            (true, _) => Ok(()),
            (false, findings) => Err(findings),
        }
    })
    .await;
    let (ok, stdout) = run_verify(cluster, via);
    assert!(ok, "verify failed:\n{stdout}");
    assert!(stdout.starts_with("ok:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_survives_kill_9_of_the_new_replica_and_of_the_metadata_leader() {
    // Slow snapshots (256 KiB/s) over about 1.5 MB, so the kills land mid-transfer.
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--rebalance-max-bytes-per-sec",
            "262144",
            "--snapshot-every",
            "50",
        ],
    )
    .await;
    let api = cluster.api().clone();
    let written = put_sized(&api, "heavy", 200, 8 * 1024).await;

    let four = cluster.add_node().await;
    let api = cluster.api().clone();
    wait_for_move_to(&api, 1, four).await;
    cluster.kill(four);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(four).await;

    let view = wait_for_move_to(&api, 1, four).await;
    let meta_leader = view.meta_leader.expect("node 1 holds a metadata replica");
    cluster.kill(meta_leader);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(meta_leader).await;

    let view = wait_balanced(&api, 1, 4).await;
    assert!(
        view.shards.iter().all(|s| s.replicas.len() == 3),
        "{view:?}"
    );
    wait_verified(&cluster, 1).await;
    assert_all_readable(&api, &[1, 2, 3, four], &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_while_a_member_is_down_is_balanced_once_it_is_back() {
    let mut cluster = Cluster::start(3).await;
    let api = cluster.api().clone();
    let written = put_sized(&api, "before", 50, 100).await;
    cluster.kill(3);
    let four = cluster.add_node().await;
    let api = cluster.api().clone();
    // Writes keep working through the survivors and the new node meanwhile.
    let mut more = Vec::new();
    for (i, node) in [1, 2, four].into_iter().cycle().take(30).enumerate() {
        let key = format!("during-{i}");
        match api.put(node, &key, "v").await {
            Ok(version) => more.push(Expected {
                key,
                value: "v".into(),
                version: Some(version),
            }),
            Err(e) => assert_transient(&e, &format!("PUT {key} through node {node}")),
        }
    }
    cluster.restart(3).await;
    let view = wait_balanced(&api, 1, 4).await;
    let per_node = replicas_per_node(&view);
    assert!(
        per_node[&four] >= 2,
        "the new node got replicas: {per_node:?}"
    );
    wait_verified(&cluster, 1).await;
    let mut all = written;
    all.extend(more);
    assert_all_readable(&api, &[1, 2, 3, four], &all).await;
}
