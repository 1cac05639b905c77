//! Self-healing: a node down for longer than `--dead-after` is declared dead and its
//! replicas are re-created on the live nodes, within the rules that keep it from making
//! things worse (`shoal-cluster/src/healer.rs`).

use std::sync::atomic::AtomicU64;

use super::elastic::{run_verify, start_writer, wait_balanced, wait_verified};
use super::harness::ClusterView;
use super::*;

/// Short enough for a test, long enough that a restart or an election never counts.
const DEAD_AFTER_SECS: u64 = 4;

/// Polls node `asking` until node `id` is `state` ("dead", "active", ...), or gone from the
/// map when `state` is "removed".
async fn wait_node_state(api: &Api, asking: u64, id: u64, state: &str) -> ClusterView {
    poll_until(
        &format!("node {id} {state} (as node {asking} sees it)"),
        RECOVERY * 2,
        || async {
            let view = api.view(asking).await.map_err(|e| e.to_string())?;
            let now = view
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.state.clone());
            match now.as_deref() {
                None if state == "removed" => Ok(view),
                Some(s) if s == state => Ok(view),
                other => Err(format!("node {id} is {other:?}")),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_and_with_three_left_a_second_death_moves_nothing() {
    let dead_after = DEAD_AFTER_SECS.to_string();
    let mut cluster = Cluster::start_with(4, &["--dead-after", &dead_after]).await;
    let api = cluster.api().clone();
    let targets = Arc::new(Mutex::new(vec![1, 2, 3]));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = start_writer("heal", api.clone(), targets, stop.clone(), written.clone());
    poll_until("the writer is under way", RECOVERY, || async {
        (written.load(Ordering::Relaxed) > 20)
            .then_some(())
            .ok_or_else(|| "waiting".to_string())
    })
    .await;

    cluster.kill(4);
    let killed = Instant::now();
    // Declared dead, its replicas re-created on 1-3, then it leaves the map.
    let view = wait_balanced(&api, 1, 3).await;
    assert!(
        killed.elapsed() >= Duration::from_secs(DEAD_AFTER_SECS),
        "nothing moves before --dead-after"
    );
    assert!(view.nodes.iter().all(|n| n.id != 4), "{view:?}");
    assert!(
        view.shards
            .iter()
            .all(|s| s.replicas.len() == 3 && !s.replicas.contains(&4)),
        "every shard has three voters on the live nodes: {view:?}"
    );
    assert!(view.under_replicated.is_empty(), "{view:?}");
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    assert!(
        acked.len() > 20,
        "the writer made progress: {}",
        acked.len()
    );
    assert_all_readable(&api, &[1, 2, 3], &acked).await;
    wait_verified(&cluster, 1).await;

    // A second death with three nodes left and three replicas per shard: nothing to move
    // to, so nothing moves; the cluster serves with two of three replicas and says why.
    cluster.kill(3);
    let epoch = view.epoch;
    let view = poll_until("node 3 down past --dead-after", RECOVERY, || async {
        let view = api.view(1).await.map_err(|e| e.to_string())?;
        let down = view
            .nodes
            .iter()
            .find(|n| n.id == 3)
            .and_then(|n| n.down_for_ms)
            .unwrap_or(0);
        if down > (DEAD_AFTER_SECS + 2) * 1000 && view.healing_held.is_some() {
            Ok(view)
        } else {
            Err(format!("node 3 down for {down} ms"))
        }
    })
    .await;
    let held = view.healing_held.clone().unwrap_or_default();
    assert!(held.contains("2 live node(s) cannot hold 3"), "{held}");
    assert_eq!(view.epoch, epoch, "the map did not change: {view:?}");
    assert!(view.moves.is_empty(), "{view:?}");
    let three = view.nodes.iter().find(|n| n.id == 3).expect("node 3 stays");
    assert_eq!(three.state, "active");
    assert_eq!(
        view.under_replicated.len(),
        view.shards.len() + 1,
        "{view:?}"
    );
    let version = api
        .put(2, "after-second-death", "v")
        .await
        .expect("still serving");
    assert!(version > 0);
    let (ok, findings) = run_verify(&cluster, 1);
    assert!(!ok, "verify fails while shards are under-replicated");
    assert!(findings.contains("under-replicated"), "{findings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_under_dead_after_moves_nothing_and_over_it_replaces_the_node_which_then_refuses() {
    let dead_after = (DEAD_AFTER_SECS + 2).to_string();
    let mut cluster = Cluster::start_with(4, &["--dead-after", &dead_after]).await;
    let api = cluster.api().clone();
    let before = api.put(1, "before-pause", "v").await.expect("put");
    assert!(before > 0);
    let epoch = api.view(1).await.expect("view").epoch;

    // A short pause (under dead-after): node 4 catches up as after any outage.
    cluster.pause(4);
    tokio::time::sleep(Duration::from_secs(DEAD_AFTER_SECS)).await;
    cluster.resume(4);
    poll_until("node 4 is up again", RECOVERY, || async {
        let view = api.view(1).await.map_err(|e| e.to_string())?;
        let four = view.nodes.iter().find(|n| n.id == 4).cloned();
        match four {
            Some(n) if n.up => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let view = api.view(1).await.expect("view");
    assert_eq!(view.epoch, epoch, "nothing moved: {view:?}");
    assert!(view.nodes.iter().all(|n| n.state == "active"), "{view:?}");

    // A long one: node 4 is declared dead and replaced while frozen.
    cluster.pause(4);
    wait_node_state(&api, 1, 4, "dead").await;
    let view = wait_balanced(&api, 1, 3).await;
    assert!(
        view.shards.iter().all(|s| !s.replicas.contains(&4)),
        "{view:?}"
    );
    cluster.resume(4);
    // Back, it learns it was replaced and serves nothing, not even a stale read.
    poll_until(
        "node 4 refuses to serve once it learns",
        RECOVERY,
        || async {
            match api.get_stale(4, "before-pause").await {
                Err(e)
                    if e.to_string().contains("declared dead")
                        || e.to_string().contains("was removed") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // It disturbs nobody: the three others keep their leaders and pass verify.
    let version = api.put(1, "after-resume", "v").await.expect("put");
    assert!(version > 0);
    wait_verified(&cluster, 1).await;
    let spec = cluster.spec(4);
    cluster.kill(4);
    let done = spec.run_to_exit();
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert!(
        done.stderr.contains("was removed") || done.stderr.contains("declared dead"),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_into_halves_longer_than_dead_after_declares_only_what_the_rules_allow() {
    let dead_after = DEAD_AFTER_SECS.to_string();
    let cluster = Cluster::start_with(5, &["--dead-after", &dead_after]).await;
    let api = cluster.api().clone();
    let before = api.view(1).await.expect("view");
    cluster.partition(&[&[1, 2, 3], &[4, 5]]).await;
    let targets = Arc::new(Mutex::new(vec![1, 2, 3]));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = start_writer("split", api.clone(), targets, stop.clone(), written.clone());

    // Well past dead-after on both sides.
    let majority = poll_until("nodes 4 and 5 down past --dead-after", RECOVERY, || async {
        let view = api.view(1).await.map_err(|e| e.to_string())?;
        let down = |id: u64| {
            view.nodes
                .iter()
                .find(|n| n.id == id)
                .and_then(|n| n.down_for_ms)
                .unwrap_or(0)
        };
        let past = (DEAD_AFTER_SECS + 2) * 1000;
        if down(4) > past && down(5) > past {
            Ok(view)
        } else {
            Err(format!("down for {} and {} ms", down(4), down(5)))
        }
    })
    .await;
    // The rules: two down of five is within replication - 1, three stay live, but a shard
    // with voters on both 4 and 5 would lose its majority: then neither is declared.
    let shared = before
        .shards
        .iter()
        .any(|s| s.replicas.contains(&4) && s.replicas.contains(&5));
    let dead: Vec<u64> = majority
        .nodes
        .iter()
        .filter(|n| n.state == "dead")
        .map(|n| n.id)
        .collect();
    if shared {
        assert!(dead.is_empty(), "{majority:?}");
        assert_eq!(majority.epoch, before.epoch, "the majority moved nothing");
        let held = majority.healing_held.clone().unwrap_or_default();
        assert!(held.contains("without a majority of live voters"), "{held}");
    }
    // The minority side has no metadata quorum: its map never changes.
    let minority = api.view(4).await.expect("node 4 answers");
    assert_eq!(minority.epoch, before.epoch, "{minority:?}");
    assert!(
        minority.nodes.iter().all(|n| n.state == "active"),
        "{minority:?}"
    );

    cluster.heal().await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    // Shards with two voters on the minority side cannot commit (a PUT to one of them waits
    // for a leader until it times out), the others can.
    assert!(!acked.is_empty(), "the majority side served writes");
    if shared {
        wait_verified(&cluster, 1).await;
        assert_all_readable(&api, &[1, 4], &acked).await;
    } else {
        // Both were declared dead and replaced: the three others hold everything.
        wait_balanced(&api, 1, 3).await;
        wait_verified(&cluster, 1).await;
        assert_all_readable(&api, &[1, 2, 3], &acked).await;
    }
}
