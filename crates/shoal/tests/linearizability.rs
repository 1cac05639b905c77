//! Jepsen-style checks against real `shoal` processes: concurrent clients run a register
//! workload (read, write, compare-and-set on a few keys) through every node while a seeded
//! nemesis partitions, kills, pauses and restarts nodes; every operation is recorded with
//! its outcome (ok, failed, unknown), and `shoal_check` verifies the history is
//! linearizable per key. A deliberately broken mode (reads without a leadership check) must
//! be caught. The seed of every run is printed; `SHOAL_SEED=N` replays one.

// Shared with `cluster.rs`; not every helper is used here.
#[allow(dead_code)]
#[path = "cluster/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "linearizability/bank.rs"]
mod bank;
#[path = "linearizability/campaign.rs"]
mod campaign;
#[path = "linearizability/damage.rs"]
mod damage;

use campaign::Summary;
use harness::{Api, Cluster, HttpError, resp_connection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_check::{
    CheckOptions, History, OpKind, Outcome, Recorder, check_counter, check_history, check_set,
};

/// Keys of the register workload: few, so operations contend.
const KEYS: [&str; 3] = ["reg-a", "reg-b", "reg-c"];
/// Concurrent clients.
const CLIENTS: u64 = 6;
/// Fault steps per run; each lasts about 1.5 s plus a calm period.
const STEPS: usize = 4;

/// How a failed write is recorded: `Fail` only when the error guarantees it never took
/// effect, else `Info` (unknown).
fn write_failure(error: &HttpError) -> Outcome {
    match (error.status, error.code.as_str()) {
        // Refused before reaching a log: a condition failed, no leader was found, the
        // shard was overloaded, the disk was full.
        (Some(412), _)
        | (Some(503), "no_leader" | "not_leader" | "overloaded")
        | (Some(507), "disk_full") => Outcome::Fail,
        (Some(400..=499), _) => Outcome::Fail,
        // Never sent: the node was down.
        (None, "connect") => Outcome::Fail,
        // Timeouts, "indeterminate", a node shutting down or killed mid-request.
        _ => Outcome::Info,
    }
}

/// One client: random operations on random keys through random nodes until `stop`.
async fn client(
    api: Api,
    nodes: Vec<u64>,
    id: u64,
    seed: u64,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id << 32));
    let mut seen = [0u64; KEYS.len()];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.random_range(0..KEYS.len());
        let key = KEYS[k];
        let node = nodes[rng.random_range(0..nodes.len())];
        n += 1;
        let value = format!("c{id}-{n}");
        match rng.random_range(0..10) {
            0..=3 => {
                let op = recorder.invoke(id, key, OpKind::Read);
                match api.get(node, key).await {
                    Ok(read) => {
                        if let Some(r) = &read {
                            seen[k] = r.version;
                        }
                        recorder.complete(
                            op,
                            Outcome::Ok {
                                read: read.map(|r| (r.value, r.version)),
                                version: None,
                            },
                        );
                    }
                    // A failed read observed nothing.
                    Err(_) => recorder.complete(op, Outcome::Fail),
                }
            }
            4..=7 => {
                let op = recorder.invoke(
                    id,
                    key,
                    OpKind::Write {
                        value: value.clone(),
                    },
                );
                let result = api.put(node, key, &value).await;
                record_write(&recorder, op, result, &mut seen[k]);
            }
            _ => {
                let expected = seen[k];
                let op = recorder.invoke(
                    id,
                    key,
                    OpKind::Cas {
                        expected_version: expected,
                        value: value.clone(),
                    },
                );
                let result = api.put_if_version(node, key, &value, expected).await;
                record_write(&recorder, op, result, &mut seen[k]);
            }
        }
    }
}

/// Records a write's outcome; an acknowledged one also becomes the client's latest seen
/// version of its key (what its next compare-and-set expects).
fn record_write(
    recorder: &Recorder,
    op: shoal_check::OpId,
    result: Result<u64, HttpError>,
    seen: &mut u64,
) {
    match result {
        Ok(version) => {
            *seen = version;
            recorder.complete(
                op,
                Outcome::Ok {
                    read: None,
                    version: Some(version),
                },
            );
        }
        Err(e) => recorder.complete(op, write_failure(&e)),
    }
}

/// Starts the register workload's clients through every node of `cluster`.
fn spawn_clients(
    cluster: &Cluster,
    seed: u64,
    recorder: &Recorder,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ids = cluster.ids();
    (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                cluster.api().clone(),
                ids.clone(),
                c,
                seed,
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

/// One fault, held for a while, then undone.
async fn nemesis_step(cluster: &mut Cluster, rng: &mut StdRng, step: usize) -> String {
    let kind = rng.random_range(0..7);
    nemesis_step_of(cluster, rng, step, kind).await
}

/// `nemesis_step` with every other step a membership change (the membership nemesis).
async fn membership_nemesis_step(cluster: &mut Cluster, rng: &mut StdRng, step: usize) -> String {
    let kind = if step.is_multiple_of(2) {
        6
    } else {
        rng.random_range(0..4)
    };
    nemesis_step_of(cluster, rng, step, kind).await
}

async fn nemesis_step_of(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    step: usize,
    kind: u32,
) -> String {
    let ids = cluster.ids();
    let n = ids.len();
    let victim = ids[rng.random_range(0..n)];
    let hold = Duration::from_millis(rng.random_range(1000..2000));
    let what = match kind {
        // Membership: a node joins, replicas move to it, then it is drained and leaves
        // (loopback only: a joining node has no network namespace of its own).
        6 if !cluster.is_isolated() => {
            let added = cluster.add_node().await;
            // Half the time a member dies (kill -9) while replicas move to the new node.
            let killed = rng.random_bool(0.5).then_some(victim);
            if let Some(victim) = killed {
                cluster.kill(victim);
                tokio::time::sleep(hold / 2).await;
                cluster.restart(victim).await;
            } else {
                tokio::time::sleep(hold).await;
            }
            cluster.remove_and_forget(added).await;
            match killed {
                Some(victim) => format!(
                    "add node {added} (--join), kill -9 node {victim} mid-move, remove node {added}"
                ),
                None => format!("add node {added} (--join), then remove it"),
            }
        }
        0 => {
            // A minority cut off from the rest.
            let others: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
            cluster.partition(&[&[victim], &others]).await;
            tokio::time::sleep(hold).await;
            cluster.heal().await;
            format!("partition {{{victim}}} from the rest")
        }
        1 => {
            // The leader of a register key's shard cut off.
            let key = KEYS[rng.random_range(0..KEYS.len())];
            let leader = cluster.leader_of_key(key).await;
            let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
            cluster.partition(&[&[leader], &others]).await;
            tokio::time::sleep(hold).await;
            cluster.heal().await;
            format!("partition leader {leader} of {key} away")
        }
        2 => {
            cluster.kill(victim);
            tokio::time::sleep(hold / 2).await;
            cluster.restart(victim).await;
            format!("kill -9 node {victim}, restart")
        }
        3 => {
            // Longer than the election timeout (300-600 ms).
            cluster.pause(victim);
            tokio::time::sleep(hold).await;
            cluster.resume(victim);
            format!("pause node {victim}")
        }
        4 if n >= 5 => {
            // Bridge: two sides that each see the bridge node but not each other.
            let bridge = victim;
            let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != bridge).collect();
            let (left, right) = rest.split_at(rest.len() / 2);
            for &a in left {
                cluster.block(a, right).await;
            }
            for &b in right {
                cluster.block(b, left).await;
            }
            tokio::time::sleep(hold).await;
            cluster.heal().await;
            format!("bridge through {bridge}: {left:?} | {right:?}")
        }
        _ => {
            // A majority in turn, or everyone at once.
            if step.is_multiple_of(2) {
                for id in ids.clone() {
                    cluster.kill(id);
                }
                cluster.restart_many(&ids).await;
                "kill -9 every node, restart all".to_string()
            } else {
                let majority: Vec<u64> = ids.iter().copied().take(n / 2 + 1).collect();
                for &id in &majority {
                    cluster.kill(id);
                    cluster.restart(id).await;
                }
                format!("kill -9 and restart {majority:?} one at a time")
            }
        }
    };
    // Calm: let the cluster elect and catch up before the next fault.
    tokio::time::sleep(Duration::from_millis(500)).await;
    what
}

/// Where a run's partitions happen: in the nodes' transport (`cargo test`, no root), or
/// in the kernel with every node in a network namespace (`scripts/chaos`, root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Transport,
    Isolated,
}

async fn start_cluster(nodes: usize, net: Net) -> Cluster {
    start_cluster_with(nodes, net, &[]).await
}

async fn start_cluster_with(nodes: usize, net: Net, extra_args: &[&str]) -> Cluster {
    match net {
        Net::Transport => Cluster::start_with(nodes, extra_args).await,
        Net::Isolated => Cluster::start_isolated(nodes).await,
    }
}

/// Runs the register workload under a nemesis seeded with `seed`, then checks the
/// history (saved to a temp file when it is not linearizable).
async fn register_run(nodes: usize, seed: u64, net: Net) -> Summary {
    register_run_with(nodes, seed, net, &[]).await
}

/// The register workload under the membership nemesis: nodes join and leave, between
/// kills, pauses and partitions.
async fn register_membership_run(nodes: usize, seed: u64) -> Summary {
    eprintln!("register run with membership changes: {nodes} nodes, seed {seed}");
    register_run_inner(nodes, seed, Net::Transport, &[], true).await
}

/// `register_run` on nodes started with `extra_args`.
async fn register_run_with(nodes: usize, seed: u64, net: Net, extra_args: &[&str]) -> Summary {
    register_run_inner(nodes, seed, net, extra_args, false).await
}

async fn register_run_inner(
    nodes: usize,
    seed: u64,
    net: Net,
    extra_args: &[&str],
    membership: bool,
) -> Summary {
    eprintln!("register run: {nodes} nodes, seed {seed} (replay with SHOAL_SEED={seed})");
    let mut cluster = start_cluster_with(nodes, net, extra_args).await;
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let ids = cluster.ids();
    let clients = spawn_clients(&cluster, seed, &recorder, &stop);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedule = Vec::new();
    for step in 0..STEPS {
        schedule.push(if membership {
            membership_nemesis_step(&mut cluster, &mut rng, step).await
        } else {
            nemesis_step(&mut cluster, &mut rng, step).await
        });
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    // After healing every key must be readable again, through every node.
    cluster.wait_for_leaders(1).await;
    for &node in &ids {
        for key in KEYS {
            let op = recorder.invoke(1000 + node, key, OpKind::Read);
            let read = cluster.api().get(node, key).await.unwrap_or_else(|e| {
                panic!("seed {seed}: final read of {key} via node {node}: {e}")
            });
            recorder.complete(
                op,
                Outcome::Ok {
                    read: read.map(|r| (r.value, r.version)),
                    version: None,
                },
            );
        }
    }
    let history = recorder.into_history();
    let report = check_history(&history, &CheckOptions::default());
    let (ok, failed, unknown) = counts(&history);
    let verdict = if report.is_ok() {
        Ok(())
    } else {
        let path = std::env::temp_dir().join(format!("shoal-history-seed-{seed}.json"));
        history.save(&path).expect("write history");
        Err(format!(
            "not linearizable: {report:?}; history in {}",
            path.display()
        ))
    };
    let summary = Summary {
        workload: "register",
        nodes,
        seed,
        schedule,
        ok,
        failed,
        unknown,
        verdict,
    };
    summary.print();
    summary
}

async fn run(nodes: usize, seed: u64) {
    register_run(nodes, seed, Net::Transport)
        .await
        .assert_correct();
}

fn counts(history: &History) -> (usize, usize, usize) {
    let mut c = (0, 0, 0);
    for op in &history.ops {
        match op.outcome {
            Outcome::Ok { .. } => c.0 += 1,
            Outcome::Fail => c.1 += 1,
            Outcome::Info => c.2 += 1,
        }
    }
    c
}

/// Seeds for one test: `SHOAL_SEED` if set (replay), else `count` seeds from `base`.
fn seeds(base: u64, count: u64) -> Vec<u64> {
    match std::env::var("SHOAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (base..base + count).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_faults_3_nodes() {
    for seed in seeds(1, 6) {
        run(3, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_faults_3_nodes_more_seeds() {
    for seed in seeds(101, 6) {
        run(3, seed).await;
    }
}

/// Leader balancing every 100 ms instead of every second: as the nemesis kills, pauses and
/// restarts nodes, shards are handed back to returning nodes within the run, so leader
/// transfers (a leader giving up writes and reads, followers dropping its lease, the target
/// campaigning) land inside the checked history while clients read and write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_with_frequent_leader_transfers() {
    for seed in seeds(201, 4) {
        register_run_with(
            3,
            seed,
            Net::Transport,
            &["--leader-balance-interval-ms", "100"],
        )
        .await
        .assert_correct();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_while_nodes_join_and_leave() {
    for seed in seeds(7100, 2) {
        register_membership_run(3, seed).await.assert_correct();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_faults_5_nodes() {
    for seed in seeds(201, 4) {
        run(5, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_faults_5_nodes_more_seeds() {
    for seed in seeds(301, 4) {
        run(5, seed).await;
    }
}

/// The checker is only worth something if it catches a real bug: with reads served by any
/// replica without a leadership check, a leader cut off from its majority answers reads
/// from its old state while the majority moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_without_read_confirmation_is_caught() {
    let cluster = Cluster::start_with(3, &["--unsafe-unconfirmed-reads"]).await;
    let api = cluster.api().clone();
    let recorder = Recorder::new();
    let key = KEYS[0];
    let put = |client: u64, node: u64, value: &'static str| {
        let (api, recorder) = (api.clone(), recorder.clone());
        async move {
            let op = recorder.invoke(
                client,
                key,
                OpKind::Write {
                    value: value.into(),
                },
            );
            let version = api.put(node, key, value).await.expect("write");
            recorder.complete(
                op,
                Outcome::Ok {
                    read: None,
                    version: Some(version),
                },
            );
        }
    };
    put(1, 1, "v1").await;
    let old_leader = cluster.leader_of_key(key).await;
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|i| *i != old_leader)
        .collect();
    cluster.partition(&[&[old_leader], &others]).await;
    put(2, others[0], "v2").await;
    let op = recorder.invoke(3, key, OpKind::Read);
    let read = api
        .get(old_leader, key)
        .await
        .expect("unconfirmed read answers");
    recorder.complete(
        op,
        Outcome::Ok {
            read: read.clone().map(|r| (r.value, r.version)),
            version: None,
        },
    );
    assert_eq!(
        read.map(|r| r.value).as_deref(),
        Some("v1"),
        "the broken mode should serve the cut-off replica's old value"
    );
    let report = check_history(&recorder.into_history(), &CheckOptions::default());
    assert!(
        !report.is_ok(),
        "the checker accepted a stale read: {report:?}"
    );
    cluster.heal().await;
}

/// What a RESP write's error says about whether it happened: `-TRYAGAIN` is only sent for a
/// write that never reached a log (no leader, overloaded); anything else may have happened.
fn resp_write_failed_for_sure(error: &redis::RedisError) -> bool {
    error.code() == Some("TRYAGAIN")
}

/// A RESP connection to a node picked at random; `None` (after a short pause, so callers
/// can loop) while that node does not accept one.
async fn connect_to_any<'a>(
    urls: &'a [String],
    rng: &mut StdRng,
) -> Option<(&'a str, redis::aio::MultiplexedConnection)> {
    let url = &urls[rng.random_range(0..urls.len())];
    match resp_connection(url).await {
        Ok(con) => Some((url, con)),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        }
    }
}

/// Acknowledged and unknown outcomes of the RESP workloads.
#[derive(Default)]
struct Tally<T> {
    acknowledged: Vec<T>,
    unknown: Vec<T>,
}

/// The counter and append-set workloads over RESP through random nodes, under the same
/// nemesis: `INCRBY ctr n` and `APPEND set ",elem"`. Afterwards every node must read a
/// counter equal to the acknowledged increments plus some of the unknown ones, and a set
/// with every acknowledged element once and nothing nobody wrote.
async fn counter_set_run(nodes: usize, seed: u64, net: Net) -> Summary {
    eprintln!("counter/set run: {nodes} nodes, seed {seed} (replay with SHOAL_SEED={seed})");
    let mut cluster = start_cluster(nodes, net).await;
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = cluster
        .ids()
        .iter()
        .map(|id| cluster.resp_url(*id))
        .collect();
    let counter = Arc::new(std::sync::Mutex::new(Tally::<i64>::default()));
    let set = Arc::new(std::sync::Mutex::new(Tally::<String>::default()));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let (urls, stop, counter, set, failed) = (
                urls.clone(),
                stop.clone(),
                counter.clone(),
                set.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ (c << 40) ^ 0xc0ffee);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Some((_, mut con)) = connect_to_any(&urls, &mut rng).await else {
                        continue;
                    };
                    for _ in 0..20 {
                        n += 1;
                        if rng.random_bool(0.5) {
                            let by: i64 = rng.random_range(1..=5);
                            let r: redis::RedisResult<i64> = redis::cmd("INCRBY")
                                .arg("ctr")
                                .arg(by)
                                .query_async(&mut con)
                                .await;
                            let mut t = counter.lock().expect("tally");
                            match r {
                                Ok(_) => t.acknowledged.push(by),
                                Err(e) if resp_write_failed_for_sure(&e) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => t.unknown.push(by),
                            }
                        } else {
                            let elem = format!("c{c}-{n}");
                            let r: redis::RedisResult<i64> = redis::cmd("APPEND")
                                .arg("set")
                                .arg(format!(",{elem}"))
                                .query_async(&mut con)
                                .await;
                            let mut t = set.lock().expect("tally");
                            match r {
                                Ok(_) => t.acknowledged.push(elem),
                                Err(e) if resp_write_failed_for_sure(&e) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => t.unknown.push(elem),
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedule = Vec::new();
    for step in 0..STEPS {
        schedule.push(nemesis_step(&mut cluster, &mut rng, step).await);
    }
    // A schedule of back-to-back restarts can leave no time to write at all (restarted
    // replicas sit out elections until caught up); keep the clients going after the
    // last fault until both workloads have had an acknowledged write, so the checks
    // below are never vacuous.
    harness::poll_until(
        &format!("seed {seed}: an acknowledged increment and append after the faults"),
        harness::LEADER_TIMEOUT,
        || async {
            let increments = counter.lock().expect("tally").acknowledged.len();
            let appends = set.lock().expect("tally").acknowledged.len();
            if increments > 0 && appends > 0 {
                Ok(())
            } else {
                Err(format!("{increments} increments, {appends} appends"))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    cluster.wait_for_leaders(1).await;
    let counter = std::mem::take(&mut *counter.lock().expect("tally"));
    let set = std::mem::take(&mut *set.lock().expect("tally"));
    let mut reads = Vec::new();
    let mut verdict = Ok(());
    for id in cluster.ids() {
        let mut con = cluster.resp(id).await;
        let ctr: Option<i64> = redis::cmd("GET")
            .arg("ctr")
            .query_async(&mut con)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: final read of ctr via node {id}: {e}"));
        reads.push(ctr.unwrap_or(0));
        let value: Option<String> = redis::cmd("GET")
            .arg("set")
            .query_async(&mut con)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: final read of set via node {id}: {e}"));
        let elements: Vec<String> = value
            .unwrap_or_default()
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if let Err(e) = check_set(&elements, &set.acknowledged, &set.unknown) {
            verdict = Err(format!("set read through node {id}: {e}"));
        }
    }
    if let Err(e) = check_counter(&reads, &counter.acknowledged, &counter.unknown) {
        verdict = Err(format!("counter: {e}"));
    }
    let summary = Summary {
        workload: "ctr/set",
        nodes,
        seed,
        schedule,
        ok: counter.acknowledged.len() + set.acknowledged.len(),
        failed: failed.load(Ordering::Relaxed),
        unknown: counter.unknown.len() + set.unknown.len(),
        verdict,
    };
    summary.print();
    if summary.verdict.is_ok() {
        assert!(
            !counter.acknowledged.is_empty() && !set.acknowledged.is_empty(),
            "seed {seed}: the counter or the set saw no acknowledged write"
        );
    }
    summary
}

async fn run_counter_and_set(nodes: usize, seed: u64) {
    counter_set_run(nodes, seed, Net::Transport)
        .await
        .assert_correct();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_and_set_lose_and_invent_nothing_under_faults() {
    for seed in seeds(401, 2) {
        run_counter_and_set(3, seed).await;
    }
    for seed in seeds(501, 1) {
        run_counter_and_set(5, seed).await;
    }
}
