//! A disk running full (injected: nodes report a free-space figure through the fault
//! injection API, as `df` would show it): the leader refuses writes with a precise error
//! and keeps serving reads and deletes; a follower that runs low stops taking entries
//! without stopping its groups, and catches up once space is back. Nothing needs a restart.

use std::time::Duration;

use super::harness::{Cluster, Versioned, poll_until};
use super::{assert_caught_up, put_batch};

const MIB: u64 = 1 << 20;
/// The reserve the nodes run with (`--min-free-disk-mib`).
const RESERVE_MIB: &str = "64";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_recovers_without_a_restart() {
    let cluster = Cluster::start_with(3, &["--min-free-disk-mib", RESERVE_MIB]).await;
    let api = cluster.api().clone();
    // Hash-tagged keys share a slot, so a shard and its leader.
    let key = "{disk}:a";
    let doomed = "{disk}:doomed";
    let v1 = api.put(1, key, "v1").await.expect("PUT v1");
    api.put(1, doomed, "x").await.expect("PUT doomed");
    // Leader balancing may still be moving leaders just after start; a leader that moves
    // mid-test would take the writes this test expects its disk to refuse.
    super::wait_for_preferred_leaders(&api, 1, "leaders settle at their preferred nodes").await;
    let leader = cluster.leader_of_key(key).await;
    let other = cluster.ids().into_iter().find(|id| *id != leader).unwrap();

    // Below the reserve: writes that add data are refused, through any node.
    api.set_disk_free(leader, Some(40 * MIB))
        .await
        .expect("inject 40 MiB free");
    let refused = api
        .put(other, key, "v2")
        .await
        .expect_err("a PUT with the leader's disk under its reserve");
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (Some(507), "disk_full"),
        "{refused}"
    );
    for needed in [
        format!("disk full on node {leader}"),
        // Not an exact figure: writes since the last sample are charged against it.
        "MiB free".into(),
        "reserve 64 MiB".into(),
        "--min-free-disk-mib".into(),
        "reads still work".into(),
    ] {
        assert!(
            refused.message.contains(&needed),
            "{needed:?} not in {refused}"
        );
    }
    let mut con = cluster.resp(leader).await;
    let over_resp: redis::RedisResult<()> = redis::cmd("SET")
        .arg(key)
        .arg("v2")
        .query_async(&mut con)
        .await;
    let over_resp = over_resp
        .expect_err("SET over RESP with a full disk")
        .to_string();
    assert!(
        over_resp.contains("disk full on node"),
        "RESP error: {over_resp}"
    );
    // Reads and deletes still work.
    let v1_read = Versioned {
        value: "v1".into(),
        version: v1,
    };
    for id in cluster.ids() {
        assert_eq!(api.get(id, key).await.expect("GET"), Some(v1_read.clone()));
    }
    assert!(
        api.delete(other, doomed)
            .await
            .expect("DELETE below the reserve")
    );

    // Below half the reserve, deletes are refused too.
    api.set_disk_free(leader, Some(20 * MIB))
        .await
        .expect("inject 20 MiB free");
    let refused = api
        .delete(other, key)
        .await
        .expect_err("a DELETE below half the reserve");
    assert_eq!(refused.code, "disk_full", "{refused}");

    // Space back: writes resume at once, no restart.
    api.set_disk_free(leader, None)
        .await
        .expect("end injection");
    let v2 = api
        .put(other, key, "v2")
        .await
        .expect("PUT once space is back");
    assert!(v2 > v1);

    // A follower that runs low stops taking entries; the shard commits with the other two,
    // and nothing on the low node stops for good.
    let follower = other;
    api.set_disk_free(follower, Some(10 * MIB))
        .await
        .expect("inject 10 MiB free on the follower");
    // Every write succeeds: put_batch panics on any error.
    let written = put_batch(&api, &[leader], "{disk}:while-low", 20).await;
    // The leader keeps retrying the entries the low node lacks, and each try is refused;
    // the writes above may all commit before the first try reaches it.
    let cluster_ref = &cluster;
    poll_until(
        "the low follower refuses the entries its leader sends",
        Duration::from_secs(30),
        move || async move {
            match super::info_field(cluster_ref, follower, "shoal_disk_refused").await {
                0 => Err(format!("node {follower} has refused no entry yet")),
                n => Ok(n),
            }
        },
    )
    .await;
    api.set_disk_free(follower, None)
        .await
        .expect("end injection");
    assert_caught_up(&api, follower, &written).await;
    assert!(
        !cluster.log_text(follower).contains("storage failure"),
        "node {follower} had a storage failure"
    );

    // Both followers low: the shard has no majority that can take entries, so the leader
    // refuses writes with that reason (once their status reports arrive) rather than
    // letting them wait out their timeout.
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    for &id in &followers {
        api.set_disk_free(id, Some(10 * MIB)).await.expect("inject");
    }
    let api_ref = &api;
    let followers_ref = &followers;
    poll_until(
        "the leader hears that both followers are low",
        Duration::from_secs(30),
        move || async move {
            let view = api_ref.view(leader).await.map_err(|e| e.to_string())?;
            let low = view
                .nodes
                .iter()
                .filter(|n| followers_ref.contains(&n.id))
                .filter(|n| n.disk.is_some_and(|d| d.free_bytes < d.reserve_bytes / 4))
                .count();
            if low == followers_ref.len() {
                Ok(())
            } else {
                Err(format!("{:?}", view.nodes))
            }
        },
    )
    .await;
    let refused = poll_until(
        "the leader refuses writes while a majority of replicas are full",
        Duration::from_secs(30),
        move || async move {
            match api_ref.put(leader, "{disk}:no-majority", "x").await {
                Err(e) if e.code == "disk_full" => Ok(e),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(refused.status, Some(507), "{refused}");
    assert!(refused.message.contains("a majority of shard"), "{refused}");
    for &id in &followers {
        api.set_disk_free(id, None).await.expect("end injection");
    }
    poll_until(
        "writes resume once the followers have space again",
        Duration::from_secs(30),
        move || async move {
            api_ref
                .put(leader, "{disk}:majority-back", "y")
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
}
