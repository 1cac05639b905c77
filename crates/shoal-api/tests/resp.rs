//! The RESP front end against a real in-process node: a `shoal_cluster::Node` over a temp
//! directory, served on a loopback port, driven with the `redis` crate and raw TCP.
//!
//! The scenarios live in the `shoal-conformance` crate, shared with the unit tests, which run
//! them against an in-memory fake node; here every one of them runs against the real thing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_api::resp::{RespConfig, serve};
use shoal_cluster::{Node, NodeConfig};
use shoal_core::{Command, Consistency, Limits};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use shoal_conformance::resp::{self as suite, Options, Server};

async fn start(options: Options) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let node = Node::start(NodeConfig {
        id: 1,
        data_dir: dir.path().to_path_buf(),
        shards: suite::SHARDS,
        resp_addr: addr.to_string(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: String::new(),
        limits: Limits {
            max_key_bytes: suite::MAX_KEY_BYTES,
            max_value_bytes: suite::MAX_VALUE_BYTES,
        },
        allow_flush: options.allow_flush,
        max_keys_reply: suite::MAX_KEYS_REPLY,
        cluster: Default::default(),
    })
    .await
    .expect("node starts");
    wait_until_serving(&node).await;
    let config = RespConfig {
        connections: shoal_api::ConnectionLimit::new(options.max_connections),
        ..RespConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, node.clone(), config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop,
        task,
        keep: Box::new((node, dir)),
    }
}

/// Every shard answers a linearizable read (its group has a leader) before the suite runs.
async fn wait_until_serving(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let layout = node.layout().clone();
    for (shard, _) in layout.shards() {
        // A key routed to this shard: try keys until one lands there.
        let key = (0u32..)
            .map(|i| Bytes::from(format!("ready:{i}")))
            .find(|k| layout.shard_of_key(k) == *shard)
            .expect("some key routes to every shard");
        loop {
            match node
                .execute(Command::Get { key: key.clone() }, Consistency::Linearizable)
                .await
            {
                Ok(_) => break,
                Err(err) if err.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("shard {shard} does not serve: {err}"),
            }
        }
    }
}

shoal_conformance::resp_suite!(start);

/// `INFO memory` reports the resident set, the budget as maxmemory, each part of the
/// budget (adding up to it) and what the measurable parts hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_memory_reports_the_budget_and_its_parts() {
    let server = start(Options::default()).await;
    let client = redis::Client::open(format!("redis://{}", server.addr)).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let value = "v".repeat(1000);
    let _: () = redis::cmd("SET")
        .arg("memory-test")
        .arg(&value)
        .query_async(&mut con)
        .await
        .expect("SET");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut con)
        .await
        .expect("INFO memory");
    assert!(info.starts_with("# Memory\r\n"), "{info}");
    let fields: std::collections::HashMap<&str, &str> = info
        .lines()
        .filter_map(|line| line.split_once(':'))
        .collect();
    let bytes = |name: &str| -> u64 {
        fields
            .get(name)
            .unwrap_or_else(|| panic!("INFO memory lacks {name}: {info}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {info}"))
    };
    let budget = shoal_cluster::MemoryBudget::default();
    assert_eq!(bytes("maxmemory"), budget.total_bytes);
    assert_eq!(fields.get("maxmemory_human"), Some(&"1.00G"), "{info}");
    assert_eq!(
        fields.get("maxmemory_policy"),
        Some(&"noeviction"),
        "{info}"
    );
    assert!(bytes("used_memory_rss") > 1 << 20, "{info}");
    assert_eq!(bytes("used_memory"), bytes("used_memory_rss"));
    let parts: u64 = [
        "block_cache",
        "write_buffers",
        "record_cache",
        "raft_log_cache",
        "reserve",
    ]
    .iter()
    .map(|part| bytes(&format!("shoal_memory_budget_{part}")))
    .sum();
    assert_eq!(parts, budget.total_bytes, "{info}");
    assert_eq!(
        bytes("shoal_memory_budget_record_cache"),
        budget.record_cache_bytes
    );
    // The write is in a memtable, in the record cache and in the Raft log cache.
    assert!(bytes("shoal_memory_write_buffers") >= 1000, "{info}");
    assert!(bytes("shoal_memory_record_cache") >= 1000, "{info}");
    assert!(bytes("shoal_memory_raft_log_cache") >= 1000, "{info}");
    let _ = bytes("shoal_memory_block_cache");
    // The default INFO includes the section.
    let all: String = redis::cmd("INFO")
        .query_async(&mut con)
        .await
        .expect("INFO");
    assert!(all.contains("# Memory\r\nused_memory:"), "{all}");
    let _ = server.stop.send(());
}
