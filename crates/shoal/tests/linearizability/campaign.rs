//! Campaigns: runs of the workloads under the nemesis until a deadline, their summary
//! table, and the `soak` and `chaos` entry points that `scripts/soak` and `scripts/chaos`
//! run.

use super::*;

/// One run's line in a summary table; `verdict` is an error when the run is incorrect.
pub(crate) struct Summary {
    pub(crate) workload: &'static str,
    pub(crate) nodes: usize,
    pub(crate) seed: u64,
    pub(crate) schedule: Vec<String>,
    pub(crate) ok: usize,
    pub(crate) failed: usize,
    pub(crate) unknown: usize,
    pub(crate) verdict: Result<(), String>,
}

impl Summary {
    /// Panics with the seed, schedule and checker's explanation unless the run was
    /// correct and did some work.
    pub(crate) fn assert_correct(&self) {
        if let Err(e) = &self.verdict {
            panic!(
                "{} run, seed {} ({} nodes), schedule {:?}: {e}",
                self.workload, self.seed, self.nodes, self.schedule
            );
        }
        assert!(
            self.ok > 0,
            "seed {}: no operation succeeded at all",
            self.seed
        );
    }

    pub(crate) fn print(&self) {
        eprintln!(
            "{} seed {}: {} nodes, schedule {:?}: ops ok {}, failed {}, unknown {}: {}",
            self.workload,
            self.seed,
            self.nodes,
            self.schedule,
            self.ok,
            self.failed,
            self.unknown,
            match &self.verdict {
                Ok(()) => "correct".to_string(),
                Err(e) => format!("VIOLATION: {e}"),
            }
        );
    }
}

/// The summary table `scripts/chaos` prints: one row per run.
fn print_table(rows: &[Summary]) {
    eprintln!(
        "\n{:<9} {:>5} {:>11} {:>7} {:>7} {:>7}  {:<12} schedule",
        "workload", "nodes", "seed", "ok", "failed", "unknown", "verdict"
    );
    for r in rows {
        eprintln!(
            "{:<9} {:>5} {:>11} {:>7} {:>7} {:>7}  {:<12} {}",
            r.workload,
            r.nodes,
            r.seed,
            r.ok,
            r.failed,
            r.unknown,
            if r.verdict.is_ok() {
                "correct"
            } else {
                "VIOLATION"
            },
            r.schedule.join("; ")
        );
    }
}

/// Runs fresh seeds from `seed` until `secs` have passed, alternating 3 and 5 nodes and
/// the register, counter/set and bank workloads; prints the summary table and fails on any
/// violation, naming its seed.
async fn campaign(secs: u64, mut seed: u64, net: Net) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut rows = Vec::new();
    while std::time::Instant::now() < deadline {
        let runs = rows.len();
        let nodes = if runs.is_multiple_of(2) { 3 } else { 5 };
        let summary = match runs % 4 {
            2 => counter_set_run(nodes, seed, net).await,
            3 => super::bank::bank_run(nodes, seed, net).await,
            _ => register_run(nodes, seed, net).await,
        };
        rows.push(summary);
        seed += 1;
    }
    print_table(&rows);
    let bad: Vec<u64> = rows
        .iter()
        .filter(|r| r.verdict.is_err())
        .map(|r| r.seed)
        .collect();
    eprintln!(
        "{} runs in {secs} s ({net:?} faults): {} correct, violations at seeds {bad:?}",
        rows.len(),
        rows.len() - bad.len()
    );
    for row in &rows {
        row.assert_correct();
    }
}

/// `SHOAL_DURATION` (seconds) and `SHOAL_SEED` (first seed; the clock if unset), as
/// `scripts/soak` and `scripts/chaos` pass them from `--duration` and `--seed`.
fn campaign_settings(default_secs: u64) -> (u64, u64) {
    let secs = std::env::var("SHOAL_DURATION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    let seed = std::env::var("SHOAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs()
        });
    (secs, seed)
}

/// A long soak with the transport's fault injection: `scripts/soak --duration 1800`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of SHOAL_DURATION (default 1800) seconds; run by scripts/soak"]
async fn soak() {
    let (secs, seed) = campaign_settings(1800);
    campaign(secs, seed, Net::Transport).await;
}

/// The same campaign with every node in its own network namespace and partitions made by
/// the kernel dropping packets: `scripts/chaos` (root) runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root for network namespaces; run by scripts/chaos"]
async fn chaos() {
    if let Some(why) = harness::Netns::unavailable() {
        panic!("network namespaces are not available here: {why}");
    }
    kernel_partitions_take_effect().await;
    let (secs, seed) = campaign_settings(120);
    campaign(secs, seed, Net::Isolated).await;
}

/// A nemesis that silently does nothing would make every run pass: first show that a
/// kernel partition really cuts a leader off (its linearizable reads fail while the
/// majority writes on) and that healing really reconnects it.
async fn kernel_partitions_take_effect() {
    let cluster = Cluster::start_isolated(3).await;
    let key = KEYS[0];
    cluster.api().put(1, key, "before").await.expect("write");
    let leader = cluster.leader_of_key(key).await;
    let others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    let shard = cluster.shard_of_key(key).await;
    cluster.partition(&[&[leader], &others]).await;
    // A write forwarded to the old leader before the majority notices would rightly end
    // as "indeterminate"; once the majority has elected, writes through it succeed.
    harness::poll_until(
        "the majority side elects a new leader",
        harness::LEADER_TIMEOUT,
        || async {
            let view = cluster
                .api()
                .view(others[0])
                .await
                .map_err(|e| e.to_string())?;
            match view
                .shards
                .iter()
                .find(|s| s.id == shard)
                .and_then(|s| s.leader)
            {
                Some(l) if l != leader => Ok(()),
                other => Err(format!("leader of shard {shard}: {other:?}")),
            }
        },
    )
    .await;
    let version = cluster
        .api()
        .put(others[0], key, "during")
        .await
        .expect("the majority side writes");
    let cut_off = cluster.api().get(leader, key).await;
    assert!(
        cut_off.is_err(),
        "a leader cut off by the kernel answered a linearizable read: {cut_off:?}"
    );
    cluster.heal().await;
    harness::poll_until(
        "the healed node reads the majority's write",
        harness::LEADER_TIMEOUT,
        || async {
            match cluster.api().get(leader, key).await {
                Ok(Some(r)) if r.version == version => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eprintln!("kernel partitions take effect: node {leader} was cut off and rejoined");
}
