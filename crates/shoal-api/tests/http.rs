//! The HTTP/JSON API against a real in-process node: a `shoal_cluster::Node` over a temp
//! directory, served on a loopback port, driven with reqwest.
//!
//! The shared scenarios live in the `shoal-conformance` crate, which the unit tests also run
//! against an in-memory fake node; here every one of them runs against the real thing,
//! followed by the scenarios that need a real node (Raft ordering, concurrency, shutdown).
//! Protocol edge cases that need a rigged node (503/504/403 from the node) are unit-tested
//! in `src/http/tests.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use shoal_api::http::{HttpConfig, serve};
use shoal_cluster::{Node, NodeConfig};
use shoal_core::Limits;

use shoal_conformance::http::{self as suite, Server, eventually, expect_error};

async fn start_node() -> (Server, Node) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::start(NodeConfig {
        id: suite::NODE_ID,
        data_dir: dir.path().to_path_buf(),
        shards: suite::SHARDS,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: addr.to_string(),
        grpc_addr: String::new(),
        limits: Limits {
            max_key_bytes: suite::MAX_KEY_BYTES,
            max_value_bytes: suite::MAX_VALUE_BYTES,
        },
        allow_flush: false,
        max_keys_reply: 10_000,
        cluster: Default::default(),
    })
    .await
    .expect("node starts");
    let (backend, owned) = (node.clone(), node.clone());
    let server = Server::spawn(
        addr,
        |shutdown| serve(listener, backend, HttpConfig::default(), shutdown),
        // Stops the node after the HTTP server; the data directory lives until then.
        async move {
            owned.shutdown().await;
            drop(dir);
        },
    );
    (server, node)
}

async fn start() -> Server {
    start_node().await.0
}

shoal_conformance::http_suite!(start);

#[tokio::test]
async fn versions_increase_and_post_is_put() {
    let t = start().await;
    let mut last = 0;
    for i in 0..5 {
        let version = if i % 2 == 0 {
            t.put_ok("/v1/kv/counter", format!("{i}")).await
        } else {
            let response = t
                .client
                .post(t.url("/v1/kv/counter"))
                .body(format!("{i}"))
                .send();
            response.await.unwrap().json::<Value>().await.unwrap()["version"]
                .as_u64()
                .unwrap()
        };
        assert!(version > last, "version {version} after {last}");
        last = version;
    }
    assert_eq!(t.get("/v1/kv/counter").await.bytes().await.unwrap(), "4");
    t.stop().await;
}

#[tokio::test]
async fn concurrent_if_version_writers_have_one_winner_per_version() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 6;
    let t = start().await;
    let mut current = t.put_ok("/v1/kv/contended", "start").await;
    for round in 0..ROUNDS {
        let attempts = (0..WRITERS).map(|writer| {
            let request = t
                .client
                .put(t.url(&format!("/v1/kv/contended?if_version={current}")))
                .body(format!("round {round} writer {writer}"))
                .send();
            async move {
                let response = request.await.unwrap();
                let status = response.status();
                (writer, status, response.json::<Value>().await.unwrap())
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, s, _)| *s == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, status, body) in &results {
            if *status != StatusCode::OK {
                assert_eq!(*status, StatusCode::PRECONDITION_FAILED, "{body}");
                assert_eq!(body["error"]["code"], "version_mismatch");
            }
        }
        let (writer, _, body) = winners[0];
        let version = body["version"].as_u64().unwrap();
        assert!(version > current);
        let stored = t.get("/v1/kv/contended").await;
        assert_eq!(
            stored.headers()["x-shoal-version"],
            version.to_string().as_str()
        );
        assert_eq!(
            stored.text().await.unwrap(),
            format!("round {round} writer {writer}")
        );
        current = version;
    }
    t.stop().await;
}

#[tokio::test]
async fn stale_reads_see_applied_writes() {
    let t = start().await;
    let version = t.put_ok("/v1/kv/fresh", "v1").await;
    eventually(
        Duration::from_secs(5),
        "the stale read to see the write",
        || async {
            let response = t.get("/v1/kv/fresh?consistency=stale").await;
            response.status() == StatusCode::OK
                && response.headers()["x-shoal-version"] == version.to_string().as_str()
        },
    )
    .await;
    assert_eq!(
        t.get("/v1/kv/fresh?consistency=linearizable")
            .await
            .text()
            .await
            .unwrap(),
        "v1"
    );
    let listing: Value = t
        .get("/v1/kv?consistency=stale")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listing["items"][0]["key"], "fresh");
    t.stop().await;
}

#[tokio::test]
async fn shutting_down_node_answers_503() {
    let (t, node) = start_node().await;
    // A node that is shutting down answers 503 with Retry-After while HTTP still serves.
    node.shutdown().await;
    let response = t.get("/v1/kv/anything").await;
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "shutting_down").await;
    t.stop().await;
}
