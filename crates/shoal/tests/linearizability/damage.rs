//! Damaged disks: a node's journal cut or corrupted while it is down, beyond what a crash
//! can do, one node at a time, while the register workload runs.

use super::*;

/// How a test damages a stopped node's newest journal.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The last `n` written bytes zeroed, as a lost or truncated tail reads back
    /// (journals are preallocated with zeros).
    Cut(usize),
    /// `n` bytes inverted in the middle of the last written 8 KiB.
    Corrupt(usize),
}

/// The `.jnl` files under `dir`, newest last.
fn journals(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read data dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jnl") {
                found.push(path);
            }
        }
    }
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found
}

/// Applies `damage` to the newest journal in `dir`; returns what it did, for messages.
fn damage_journal(dir: &std::path::Path, damage: Damage) -> String {
    let path = journals(dir)
        .pop()
        .expect("a journal in the node's data dir");
    let mut bytes = std::fs::read(&path).expect("read journal");
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    assert!(end > 0, "journal {} has nothing written", path.display());
    let range = match damage {
        Damage::Cut(n) => end.saturating_sub(n)..end,
        Damage::Corrupt(n) => {
            let start = end.saturating_sub(8192) + end.min(8192) / 2;
            start..(start + n).min(end)
        }
    };
    for b in &mut bytes[range.clone()] {
        *b = match damage {
            Damage::Cut(_) => 0,
            Damage::Corrupt(_) => !*b,
        };
    }
    std::fs::write(&path, &bytes).expect("write journal");
    format!(
        "{damage:?} at bytes {range:?} of {} ({end} written)",
        path.display()
    )
}

/// Waits until node `id` logged that every group it guarded after its latest start has
/// caught up from a leader (not merely timed out of the guard).
async fn wait_caught_up(cluster: &Cluster, id: u64) {
    harness::poll_until(
        &format!("node {id} catches up on every group"),
        harness::LEADER_TIMEOUT,
        || async {
            let log = cluster.log_text(id);
            let guarded = log.matches("not voting until a leader").count();
            let caught_up = log.matches("caught up after a restart").count();
            if guarded > 0 && caught_up == guarded {
                Ok(())
            } else {
                Err(format!("{caught_up} of {guarded} groups caught up"))
            }
        },
    )
    .await;
}

/// A node killed mid-load whose journal tail is then cut or corrupted (as a torn write, a
/// lying disk or a bad sector would leave it) must repair at start, by dropping the tail
/// from the first damaged batch on, and catch up from the leader; the cluster must stay
/// linearizable meanwhile and the repaired node must end with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_damaged_log_tail_repairs_and_the_cluster_stays_correct() {
    let seed = seeds(601, 1)[0];
    let mut cluster = Cluster::start(3).await;
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let ids = cluster.ids();
    let clients = spawn_clients(&cluster, seed, &recorder, &stop);
    let mut done = Vec::new();
    for damage in [
        Damage::Cut(4096),
        Damage::Corrupt(64),
        Damage::Cut(1 << 20),
        Damage::Corrupt(1),
    ] {
        // The leader of a register key holds the most recently acknowledged entries.
        let victim = cluster.leader_of_key(KEYS[done.len() % KEYS.len()]).await;
        // Let some writes land on it first.
        let before = recorder.len();
        harness::poll_until("writes during the run", harness::LEADER_TIMEOUT, || async {
            if recorder.len() >= before + 200 {
                Ok(())
            } else {
                Err(format!("{} operations", recorder.len()))
            }
        })
        .await;
        cluster.kill(victim);
        let what = damage_journal(&cluster.spec(victim).data_dir, damage);
        // fjall cuts a damaged tail (a torn or cut last batch, broken framing) and
        // refuses a batch that was written in full but fails its checksum; either is
        // right, and a refusal must say how to recover: a new disk and --rejoin.
        let outcome = match cluster.try_restart(victim).await {
            Ok(()) => "repaired".to_string(),
            Err(log) => {
                assert!(
                    log.contains("corrupt") && log.contains("--rejoin"),
                    "node {victim} refused to start without saying why and what to do: {log}"
                );
                cluster.replace_disk(victim);
                cluster.restart(victim).await;
                "refused; rebuilt with --rejoin".to_string()
            }
        };
        done.push(format!("node {victim}: {what}: {outcome}"));
        // One damaged disk at a time: a second before the first has caught up would be
        // two faults among three nodes, more than a majority protocol can mask.
        wait_caught_up(&cluster, victim).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    cluster.wait_for_leaders(1).await;
    // Every node's own replica converges on the linearizable value of every key.
    for key in KEYS {
        let latest = cluster.api().get(1, key).await.expect("final read");
        for &node in &ids {
            harness::poll_until(
                &format!("node {node}'s replica of {key} catches up"),
                harness::LEADER_TIMEOUT,
                || async {
                    let local = cluster.api().get_stale(node, key).await;
                    match local {
                        Ok(local) if local == latest => Ok(()),
                        other => Err(format!("{other:?}, latest {latest:?}")),
                    }
                },
            )
            .await;
        }
        let op = recorder.invoke(1000, key, OpKind::Read);
        recorder.complete(
            op,
            Outcome::Ok {
                read: latest.map(|r| (r.value, r.version)),
                version: None,
            },
        );
    }
    let history = recorder.into_history();
    let report = check_history(&history, &CheckOptions::default());
    let (ok, failed, unknown) = counts(&history);
    eprintln!("damage {done:?}: ops ok {ok}, failed {failed}, unknown {unknown}");
    assert!(report.is_ok(), "seed {seed}, damage {done:?}: {report:?}");
    assert!(ok > 0, "nothing succeeded");
}

/// An operator wipes a node's data directory and starts it again with the same flags,
/// forgetting `--rejoin`: it must not found its groups afresh or vote with an empty log,
/// but notice that its peers run them, join them guarded, and get every write back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_restarted_without_rejoin_joins_its_groups_guarded() {
    let mut cluster = Cluster::start(3).await;
    let mut written = Vec::new();
    for i in 0..60 {
        let key = format!("wiped-{i}");
        let version = cluster.api().put(1 + i % 3, &key, "v").await.expect("PUT");
        written.push((key, version));
    }
    // Node 1 founds some groups (it is their first replica): the interesting case.
    cluster.kill(1);
    cluster.wipe_disk(1);
    cluster.restart(1).await;
    let log = cluster.log_text(1);
    assert!(
        log.contains("peers already run this node's groups"),
        "the wiped node did not notice the running cluster:\n{log}"
    );
    wait_caught_up(&cluster, 1).await;
    for (key, version) in &written {
        harness::poll_until(
            &format!("node 1's own replica has {key}"),
            harness::LEADER_TIMEOUT,
            || async {
                match cluster.api().get_stale(1, key).await {
                    Ok(Some(r)) if r.version == *version => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}

/// The other side of the wiped-node check: a founding member that starts late, on its
/// first start, finds its peers already running the groups they founded. It joins those
/// guarded, still founds its own (the metadata group among them: only a founder ever
/// initialises a group), and the cluster forms completely and serves through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_founding_node_that_starts_late_still_founds_its_groups() {
    // Each node in turn, so the metadata group's founder is among them.
    for late in 1..=3 {
        founding_node_starts_late(late).await;
    }
}

async fn founding_node_starts_late(late: u64) {
    let cluster = Cluster::start_late(3, &[late]).await;
    for node in cluster.ids() {
        let key = format!("late-{node}");
        let version = cluster.api().put(node, &key, "v").await.expect("PUT");
        for reader in cluster.ids() {
            let got = cluster.api().get(reader, &key).await.expect("GET");
            assert_eq!(
                got.map(|r| r.version),
                Some(version),
                "{key} via node {reader}"
            );
        }
    }
    // The metadata group formed too: every replica of it has the cluster map.
    for node in cluster.ids() {
        harness::poll_until(
            &format!("node {node} has the cluster map"),
            harness::LEADER_TIMEOUT,
            || async {
                if cluster
                    .log_text(node)
                    .contains("the cluster map is stored in the metadata group")
                {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            },
        )
        .await;
    }
}
