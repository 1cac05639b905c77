//! The gRPC front end against a real in-process node: a `shoal_cluster::Node` over a temp
//! directory, served on a loopback port, driven with the generated `shoal.v1` stubs.
//!
//! The scenarios live in the `shoal-conformance` crate, shared with the unit tests, which run
//! them against an in-memory fake node; here every one of them runs against the real thing.

use shoal_api::grpc::{GrpcConfig, serve};
use shoal_cluster::{Node, NodeConfig};
use shoal_core::Limits;

use shoal_conformance::http::{self as suite, Server};

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::start(NodeConfig {
        id: suite::NODE_ID,
        data_dir: dir.path().to_path_buf(),
        shards: suite::SHARDS,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: addr.to_string(),
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
    let (backend, owned) = (node.clone(), node);
    Server::spawn(
        addr,
        |shutdown| serve(listener, backend, GrpcConfig::default(), shutdown),
        // Stops the node after the gRPC server; the data directory lives until then.
        async move {
            owned.shutdown().await;
            drop(dir);
        },
    )
}

shoal_conformance::grpc_suite!(start);
