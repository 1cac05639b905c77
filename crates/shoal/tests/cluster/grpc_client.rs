//! The Rust client (`shoal-client`, over gRPC) against a real 3-node cluster whose leader is
//! killed while writes stream in: no acknowledged write is lost, no write is applied twice
//! (the client never resends a write whose outcome is unknown), and the client finds the
//! new leaders by itself.

use shoal_client::{Client, ClientConfig};

use harness::LEADER_TIMEOUT;

use super::*;

const WRITERS: usize = 6;
const OPS_EACH: usize = 120;

/// Every node's gRPC address, once every node's view lists them all.
async fn grpc_addrs(cluster: &Cluster) -> Vec<String> {
    let api = cluster.api().clone();
    poll_until(
        "every node's gRPC address in the map",
        LEADER_TIMEOUT,
        || {
            let api = api.clone();
            async move {
                let view = api.view(1).await.map_err(|e| e.to_string())?;
                let addrs: Vec<String> = view.nodes.iter().map(|n| n.grpc_addr.clone()).collect();
                if addrs.len() == 3 && addrs.iter().all(|a| !a.is_empty()) {
                    Ok(addrs)
                } else {
                    Err(format!("addresses so far: {addrs:?}"))
                }
            }
        },
    )
    .await
}

/// What one writer saw: counter increments acknowledged and of unknown outcome, and the
/// keys it wrote with an acknowledgement.
#[derive(Default)]
struct Seen {
    incr_acked: u64,
    incr_unknown: u64,
    puts_acked: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_survives_a_leader_kill_without_losing_or_doubling_writes() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leaders(1).await;
    let addrs = grpc_addrs(&cluster).await;
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        max_attempts: 30,
        backoff_max: Duration::from_millis(500),
        ..ClientConfig::default()
    };
    // Through one node only: the client learns the others from the map.
    let client = Client::connect_with(&[&addrs[0]], config)
        .await
        .expect("connects");
    let victim = cluster.leader_of_key("counter-0").await;

    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                for i in 0..OPS_EACH {
                    match client.incr(format!("counter-{w}"), 1).await {
                        Ok(_) => seen.incr_acked += 1,
                        Err(e) if e.is_indeterminate() => seen.incr_unknown += 1,
                        Err(e) => panic!("writer {w} incr {i}: {e}"),
                    }
                    let (key, value) = (format!("key-{w}-{i}"), format!("value-{i}"));
                    match client.put(key.clone(), value.clone()).await {
                        Ok(_) => seen.puts_acked.push((key, value)),
                        Err(e) if e.is_indeterminate() => {}
                        Err(e) => panic!("writer {w} put {i}: {e}"),
                    }
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();

    // Mid-stream: once a third of the work is done, kill -9 a leader.
    poll_until("a third of the writes done", LEADER_TIMEOUT, || {
        let done = acked.load(std::sync::atomic::Ordering::Relaxed);
        async move {
            if done >= WRITERS * OPS_EACH / 3 {
                Ok(())
            } else {
                Err(format!("{done} done"))
            }
        }
    })
    .await;
    cluster.kill(victim);

    let mut seen = Vec::new();
    for writer in writers {
        seen.push(writer.await.expect("writer finished"));
    }
    let unknown: u64 = seen.iter().map(|s| s.incr_unknown).sum();
    for (w, s) in seen.iter().enumerate() {
        let value = client
            .get(format!("counter-{w}"))
            .await
            .expect("read the counter")
            .map_or(0, |v| {
                String::from_utf8_lossy(&v.value).parse::<u64>().unwrap()
            });
        // Every acknowledged increment applied once; one of unknown outcome at most once.
        assert!(
            value >= s.incr_acked && value <= s.incr_acked + s.incr_unknown,
            "counter-{w} is {value}: {} acknowledged, {} unknown",
            s.incr_acked,
            s.incr_unknown
        );
        for (key, expected) in &s.puts_acked {
            let got = client.get(key.clone()).await.expect("read a key");
            assert_eq!(
                got.map(|v| v.value),
                Some(bytes::Bytes::from(expected.clone())),
                "{key} was acknowledged"
            );
        }
    }
    let stats = client.stats();
    eprintln!("client stats {stats:?}, {unknown} increments of unknown outcome");
    // The killed node led shards the writers kept writing to: the client had to notice,
    // refetch the map and go elsewhere.
    assert!(stats.map_refreshes >= 2, "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");
}

/// The proto works for non-Rust users: a Python program with stubs generated from
/// `proto/` (grpc_tools.protoc) drives a 3-node cluster through every node. Needs
/// `pip install grpcio-tools grpcio-status` (`.ci/run` installs them); skipped with a
/// message when Python lacks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stubs_generated_from_the_proto_drive_a_cluster() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc_tools, grpc_status"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: python3 with grpcio-tools and grpcio-status is needed \
             (pip install grpcio-tools grpcio-status)"
        );
        return;
    }
    let cluster = Cluster::start(3).await;
    cluster.wait_for_leaders(1).await;
    let addrs = grpc_addrs(&cluster).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/interop/grpc_client.py");
    let proto = root.join("../../proto");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&proto)
        .args(&addrs)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// A node joins: the map's epoch moves on, and the client learns it from the epoch every
/// response carries (no request needs to fail for that) and fetches the new map, so it
/// routes to the new node's shards once they move there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_a_changed_map_by_its_epoch() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leaders(1).await;
    let addrs = grpc_addrs(&cluster).await;
    let client = Client::connect(&addrs[0]).await.expect("connects");
    let before = client.map_epoch();
    let refreshes = client.stats().map_refreshes;
    cluster.add_node().await;
    let mut i = 0u64;
    poll_until("the client to take a newer map", LEADER_TIMEOUT, || {
        i += 1;
        let (client, key) = (client.clone(), format!("epoch-{i}"));
        async move {
            client.put(key, "v").await.map_err(|e| e.to_string())?;
            let epoch = client.map_epoch();
            if epoch > before {
                Ok(())
            } else {
                Err(format!("still at epoch {epoch}"))
            }
        }
    })
    .await;
    let stats = client.stats();
    assert!(stats.map_refreshes > refreshes, "{stats:?}");
}
