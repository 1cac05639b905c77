//! Runs the gRPC conformance suite (`shoal_conformance::grpc`) over loopback against the
//! in-memory `FakeNode`, so the front end is tested without Raft; `tests/grpc.rs` runs the
//! same suite against a real node. The scenarios here need a rigged node.

use std::sync::Arc;

use shoal_conformance::grpc::expect_status;
use shoal_conformance::http::{self as suite, Server};
use shoal_core::{Error, Limits};
use shoal_proto::v1::GetRequest;
use shoal_proto::v1::kv_client::KvClient;
use tonic::Code;

use super::{GrpcConfig, serve_backend};
use crate::fake::{FakeConfig, FakeNode};

async fn start_fake() -> (Server, Arc<FakeNode>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Arc::new(FakeNode::new(FakeConfig {
        id: suite::NODE_ID,
        shards: suite::SHARDS,
        limits: Limits {
            max_key_bytes: suite::MAX_KEY_BYTES,
            max_value_bytes: suite::MAX_VALUE_BYTES,
        },
        scan_budget: 7,
        ..FakeConfig::default()
    }));
    let backend = node.clone();
    let server = Server::spawn(
        addr,
        |shutdown| serve_backend(listener, backend, GrpcConfig::default(), shutdown),
        async {},
    );
    (server, node)
}

async fn start() -> Server {
    start_fake().await.0
}

shoal_conformance::grpc_suite!(start);

#[tokio::test]
async fn node_errors_map_to_their_status_codes() {
    let (s, node) = start_fake().await;
    let mut kv = KvClient::connect(s.base.clone()).await.unwrap();
    let get = |key: &str| GetRequest {
        key: key.as_bytes().to_vec().into(),
        consistency: 0,
    };
    let cases = [
        (
            "a",
            Error::NoLeader { shard: 1 },
            Code::Unavailable,
            "no_leader",
        ),
        (
            "b",
            Error::Indeterminate("x".into()),
            Code::Unknown,
            "indeterminate",
        ),
        ("c", Error::Timeout(5), Code::DeadlineExceeded, "timeout"),
        (
            "d",
            Error::Overloaded { shard: 1, limit: 2 },
            Code::ResourceExhausted,
            "overloaded",
        ),
        (
            "e",
            Error::Storage("disk".into()),
            Code::Internal,
            "storage",
        ),
    ];
    for (key, err, code, reason) in cases {
        node.fail(key, err);
        expect_status(kv.get(get(key)).await, code, reason);
    }
    node.fail(
        "f",
        Error::NotLeader {
            shard: 2,
            leader: 5,
        },
    );
    let status = expect_status(kv.get(get("f")).await, Code::Unavailable, "not_leader");
    assert_eq!(status.metadata().get("x-shoal-leader").unwrap(), "5");
    s.stop().await;
}

#[tokio::test]
async fn a_deadline_is_honoured() {
    let (s, node) = start_fake().await;
    node.slow("slow", std::time::Duration::from_secs(30));
    let mut kv = KvClient::connect(s.base.clone()).await.unwrap();
    let mut request = tonic::Request::new(GetRequest {
        key: "slow".into(),
        consistency: 0,
    });
    request.set_timeout(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let status = kv.get(request).await.unwrap_err();
    // tonic's server answers an expired grpc-timeout with CANCELLED ("Timeout expired").
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_node_keeps_serving() {
    use shoal_proto::v1::{BatchRequest, Op, PutRequest, op};
    let (s, _) = start_fake().await;
    let mut kv = KvClient::connect(s.base.clone()).await.unwrap();
    // 80 values of 60 KiB: each under the value limit, together over the 4 MiB message cap.
    let ops = (0..80)
        .map(|i| Op {
            op: Some(op::Op::Put(PutRequest {
                key: format!("big{i}").into(),
                value: vec![b'v'; 60 * 1024].into(),
                ..PutRequest::default()
            })),
        })
        .collect();
    let status = kv
        .batch(BatchRequest {
            ops,
            consistency: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("message"), "{status:?}");
    // The connection and the node are fine.
    let get = GetRequest {
        key: "big0".into(),
        consistency: 0,
    };
    expect_status(kv.get(get).await, Code::NotFound, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn connections_count_against_the_shared_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Arc::new(FakeNode::new(FakeConfig::default()));
    let limit = crate::ConnectionLimit::new(1);
    let config = GrpcConfig {
        connections: limit.clone(),
        ..GrpcConfig::default()
    };
    let s = Server::spawn(
        addr,
        |shutdown| serve_backend(listener, node, config, shutdown),
        async {},
    );
    let get = || GetRequest {
        key: "k".into(),
        consistency: 0,
    };
    let mut first = KvClient::connect(s.base.clone()).await.unwrap();
    expect_status(first.get(get()).await, Code::NotFound, "not_found");
    assert_eq!(limit.open(), 1);
    // The second connection is closed at once: its call fails, the first one still works.
    let second = tonic::transport::Endpoint::from_shared(s.base.clone())
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = second {
        // hyper reports the closed connection as a request it never sent.
        let status = KvClient::new(channel).get(get()).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Cancelled),
            "{status:?}"
        );
    }
    expect_status(first.get(get()).await, Code::NotFound, "not_found");
    drop(first);
    shoal_conformance::http::eventually(
        std::time::Duration::from_secs(10),
        "the first connection's place to free",
        || {
            let limit = limit.clone();
            async move { limit.open() == 0 }
        },
    )
    .await;
    let mut third = KvClient::connect(s.base.clone()).await.unwrap();
    expect_status(third.get(get()).await, Code::NotFound, "not_found");
    s.stop().await;
}
