//! Replication under steady writes: a leader keeps several AppendEntries of a shard in
//! flight to each follower (`shoal-raft`'s `group_network`), and the follower must take them
//! in the order they were sent.

use super::*;

/// The conflicts and leader transfers summed over `ids`, from INFO.
async fn replication_counters(cluster: &Cluster, ids: &[u64]) -> (u64, u64, u64) {
    let (mut conflicts, mut received, mut transfers) = (0, 0, 0);
    for &id in ids {
        conflicts += info_field(cluster, id, "shoal_append_entries_conflicts").await;
        received += info_field(cluster, id, "shoal_append_entries_received").await;
        transfers += info_field(cluster, id, "shoal_leader_transfers").await;
    }
    (conflicts, received, transfers)
}

/// One AppendEntries that overtook its predecessor would find a gap in the follower's log
/// and be answered with a conflict (and replication would restart from a probe). Under
/// steady writes from many clients with no faults and no leader changes, there must be
/// none. A window in which a leader changed (an election on a starved CI machine) proves
/// nothing either way, so it is run again, a few times at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_reach_followers_in_order() {
    const WRITERS: usize = 32;
    const PUTS_EACH: usize = 40;
    let cluster = Cluster::start(3).await;
    let api = cluster.api().clone();
    let ids = cluster.ids();
    wait_for_preferred_leaders(&api, 1, "every shard led by its first replica").await;
    // Every leader's first requests to its followers (the probes that find where their
    // logs end, which may conflict) are over once a write to every node has gone through.
    put_batch(&api, &ids, "warm-up", 64).await;

    for attempt in 1..=3 {
        let leaders_before = api.view(1).await.expect("view").shards;
        let (conflicts_before, received_before, transfers_before) =
            replication_counters(&cluster, &ids).await;
        stream::iter(0..WRITERS)
            .for_each_concurrent(WRITERS, |writer| {
                let api = api.clone();
                let ids = ids.clone();
                async move {
                    for i in 0..PUTS_EACH {
                        let node = ids[(writer + i) % ids.len()];
                        let key = format!("ordered-{attempt}-{writer}-{i}");
                        api.put(node, &key, "v").await.expect("put without faults");
                    }
                }
            })
            .await;
        let (conflicts, received, transfers) = replication_counters(&cluster, &ids).await;
        let leaders_after = api.view(1).await.expect("view").shards;
        let same_leaders = leaders_before
            .iter()
            .zip(&leaders_after)
            .all(|(a, b)| a.leader == b.leader);
        let appends = received - received_before;
        // Each of the writes reached two followers, in however many requests.
        assert!(
            appends as usize >= (WRITERS * PUTS_EACH * 2) / 8,
            "only {appends} AppendEntries reached the followers"
        );
        if !same_leaders || transfers != transfers_before {
            eprintln!("attempt {attempt}: a shard changed leader during the window; again");
            continue;
        }
        assert_eq!(
            conflicts - conflicts_before,
            0,
            "followers answered conflicts to {} of {appends} AppendEntries under steady writes",
            conflicts - conflicts_before
        );
        return;
    }
    panic!("no window of steady leadership in 3 attempts");
}
