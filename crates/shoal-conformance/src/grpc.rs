//! The gRPC conformance suite: drives a server's `shoal.v1` services over loopback with the
//! generated stubs, checking status codes, the `ErrorInfo` reason (the same code names as
//! the HTTP suite checks), limits, paging, transactions, batches, health and reflection.
//!
//! Run by two harnesses that start a server configured with the HTTP suite's constants
//! (`crate::http::{NODE_ID, SHARDS, MAX_KEY_BYTES, MAX_VALUE_BYTES}`): shoal-api's unit tests
//! against the in-memory fake node, and `shoal-api/tests/grpc.rs` against a real node. The
//! server is handed over as the same `crate::http::Server` (its `base` is the gRPC URL).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::v1::cluster_client::ClusterClient;
use shoal_proto::v1::kv_client::KvClient;
use shoal_proto::v1::{
    AppendRequest, BatchRequest, Compare, DeleteRequest, GetRequest, IncrRequest, MapRequest, Op,
    PutRequest, ScanRequest, StatusRequest, TxnRequest, op, op_result,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::http::{MAX_KEY_BYTES, MAX_VALUE_BYTES, NODE_ID, Server, eventually, now_ms};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One `#[tokio::test]` per scenario, each on a fresh server from `$start()`.
#[macro_export]
macro_rules! grpc_suite {
    ($start:path) => {
        $crate::grpc_suite!(@tests $start;
            put_get_delete_round_trip, keys_are_any_bytes, if_version_is_compare_and_set,
            put_conditions, ttl_expires_keys, scan_pages_cover_every_key_exactly_once,
            scan_stream_delivers_every_key, bad_requests_are_invalid_arguments,
            key_and_value_limits, transactions_apply_atomically, batches_answer_per_op,
            health_reflection_and_cluster);
    };
    (@tests $start:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::grpc::$name($start().await).await;
            }
        )*
    };
}

async fn channel(s: &Server) -> Channel {
    Channel::from_shared(s.base.clone())
        .unwrap()
        .connect()
        .await
        .expect("connects over gRPC")
}

async fn kv(s: &Server) -> KvClient<Channel> {
    KvClient::new(channel(s).await)
}

/// Asserts the status code and the `ErrorInfo` reason; returns the status.
pub fn expect_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    reason: &str,
) -> tonic::Status {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "shoal");
    assert!(!status.message().is_empty());
    status
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..PutRequest::default()
    }
}

fn get(key: &[u8]) -> GetRequest {
    GetRequest {
        key: key.to_vec().into(),
        consistency: 0,
    }
}

async fn put_ok(kv: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    kv.put(put(key, value))
        .await
        .expect("put")
        .into_inner()
        .version
}

fn op_of(op: op::Op) -> Op {
    Op { op: Some(op) }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

pub async fn put_get_delete_round_trip(s: Server) {
    let mut kv = kv(&s).await;
    expect_status(kv.get(get(b"greeting")).await, Code::NotFound, "not_found");
    let v1 = put_ok(&mut kv, "greeting", "hello").await;
    let got = kv.get(get(b"greeting")).await.unwrap().into_inner();
    assert_eq!((got.value.as_ref(), got.version), (&b"hello"[..], v1));
    assert_eq!(got.expire_at_ms, None);
    let v2 = put_ok(&mut kv, "greeting", "again").await;
    assert!(v2 > v1);
    let deleted = kv
        .delete(DeleteRequest {
            key: "greeting".into(),
            if_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    expect_status(kv.get(get(b"greeting")).await, Code::NotFound, "not_found");
    expect_status(
        kv.delete(DeleteRequest {
            key: "greeting".into(),
            if_version: None,
        })
        .await,
        Code::NotFound,
        "not_found",
    );
    // Incr and append, and their errors on a value of the wrong kind.
    let incr = |by| IncrRequest {
        key: "n".into(),
        by,
    };
    assert_eq!(kv.incr(incr(None)).await.unwrap().into_inner().value, 1);
    assert_eq!(
        kv.incr(incr(Some(-5))).await.unwrap().into_inner().value,
        -4
    );
    let append = AppendRequest {
        key: "n".into(),
        value: "0".into(),
    };
    assert_eq!(kv.append(append).await.unwrap().into_inner().length, 3);
    assert_eq!(
        kv.get(get(b"n")).await.unwrap().into_inner().value,
        &b"-40"[..]
    );
    put_ok(&mut kv, "text", "abc").await;
    let failed = kv
        .incr(IncrRequest {
            key: "text".into(),
            by: Some(1),
        })
        .await;
    expect_status(failed, Code::FailedPrecondition, "not_integer");
    s.stop().await;
}

pub async fn keys_are_any_bytes(s: Server) {
    let mut kv = kv(&s).await;
    let key = vec![0u8, 0xff, b'/', b' ', 0x80];
    let request = PutRequest {
        key: key.clone().into(),
        value: vec![0u8, 1, 2].into(),
        ..PutRequest::default()
    };
    kv.put(request).await.unwrap();
    let got = kv.get(get(&key)).await.unwrap().into_inner();
    assert_eq!(got.value.as_ref(), &[0u8, 1, 2]);
    s.stop().await;
}

pub async fn if_version_is_compare_and_set(s: Server) {
    let mut kv = kv(&s).await;
    let v1 = put_ok(&mut kv, "cas", "a").await;
    let mut request = put("cas", "b");
    request.if_version = Some(v1);
    let v2 = kv.put(request.clone()).await.unwrap().into_inner().version;
    assert!(v2 > v1);
    // The same compare again loses, and says what the version is now.
    let status = expect_status(
        kv.put(request).await,
        Code::FailedPrecondition,
        "version_mismatch",
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata["actual_version"], v2.to_string());
    assert_eq!(kv.get(get(b"cas")).await.unwrap().into_inner().value, "b");
    // 0: only if absent.
    let mut create = put("fresh", "x");
    create.if_version = Some(0);
    kv.put(create.clone()).await.unwrap();
    let status = expect_status(
        kv.put(create).await,
        Code::FailedPrecondition,
        "version_mismatch",
    );
    assert_ne!(
        status.get_details_error_info().unwrap().metadata["actual_version"],
        "absent"
    );
    // A conditional delete.
    let stale = DeleteRequest {
        key: "cas".into(),
        if_version: Some(v1),
    };
    expect_status(
        kv.delete(stale).await,
        Code::FailedPrecondition,
        "version_mismatch",
    );
    let current = DeleteRequest {
        key: "cas".into(),
        if_version: Some(v2),
    };
    assert!(kv.delete(current).await.unwrap().into_inner().deleted);
    s.stop().await;
}

pub async fn put_conditions(s: Server) {
    let mut kv = kv(&s).await;
    let mut absent = put("cond", "first");
    absent.if_absent = true;
    kv.put(absent.clone()).await.unwrap();
    expect_status(kv.put(absent).await, Code::AlreadyExists, "key_exists");
    let mut present = put("cond", "second");
    present.if_present = true;
    kv.put(present).await.unwrap();
    let mut missing = put("nothing-here", "x");
    missing.if_present = true;
    expect_status(
        kv.put(missing).await,
        Code::FailedPrecondition,
        "key_missing",
    );
    expect_status(
        kv.get(get(b"nothing-here")).await,
        Code::NotFound,
        "not_found",
    );
    assert_eq!(
        kv.get(get(b"cond")).await.unwrap().into_inner().value,
        "second"
    );
    s.stop().await;
}

pub async fn ttl_expires_keys(s: Server) {
    let mut kv = kv(&s).await;
    let before = now_ms();
    let mut request = put("ephemeral", "soon gone");
    request.ttl_ms = 300;
    kv.put(request).await.unwrap();
    let got = kv.get(get(b"ephemeral")).await.unwrap().into_inner();
    let at = got.expire_at_ms.expect("an expiry");
    assert!(at >= before + 300 && at <= now_ms() + 300, "{at}");
    eventually(TIMEOUT, "the key to expire", || {
        let mut kv = kv.clone();
        async move { kv.get(get(b"ephemeral")).await.is_err() }
    })
    .await;
    expect_status(kv.get(get(b"ephemeral")).await, Code::NotFound, "not_found");
    s.stop().await;
}

pub async fn scan_pages_cover_every_key_exactly_once(s: Server) {
    let mut kv = kv(&s).await;
    let mut expected = BTreeSet::new();
    for i in 0..137 {
        let key = format!("page/{i:03}");
        put_ok(&mut kv, &key, "v").await;
        expected.insert(key.into_bytes());
    }
    put_ok(&mut kv, "elsewhere", "v").await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for round in 0.. {
        assert!(round < 1000, "listing did not finish");
        let page = kv
            .scan(ScanRequest {
                prefix: "page/".into(),
                cursor: cursor.clone(),
                limit: 10,
                consistency: 0,
                with_values: round % 2 == 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 10);
        for entry in page.entries {
            assert!(entry.version > 0);
            assert_eq!(
                entry.value.is_empty(),
                round % 2 != 0,
                "values only when asked"
            );
            seen.push(entry.key.to_vec());
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen.len(), expected.len(), "no key twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    s.stop().await;
}

pub async fn scan_stream_delivers_every_key(s: Server) {
    let mut kv = kv(&s).await;
    for i in 0..250 {
        put_ok(&mut kv, &format!("stream/{i:03}"), "v").await;
    }
    let request = |limit| ScanRequest {
        prefix: "stream/".into(),
        limit,
        ..ScanRequest::default()
    };
    let mut stream = kv.scan_stream(request(0)).await.unwrap().into_inner();
    let mut keys = BTreeSet::new();
    while let Some(page) = stream.message().await.unwrap() {
        for entry in page.entries {
            assert!(keys.insert(entry.key.to_vec()), "a key twice");
        }
    }
    assert_eq!(keys.len(), 250);
    // With a limit the stream stops there, its last cursor saying where the rest begins.
    let mut stream = kv.scan_stream(request(30)).await.unwrap().into_inner();
    let (mut count, mut last_cursor) = (0, String::new());
    while let Some(page) = stream.message().await.unwrap() {
        count += page.entries.len();
        last_cursor = page.next_cursor;
    }
    assert_eq!(count, 30);
    assert!(!last_cursor.is_empty());
    s.stop().await;
}

pub async fn bad_requests_are_invalid_arguments(s: Server) {
    let mut kv = kv(&s).await;
    let bad_consistency = GetRequest {
        key: "k".into(),
        consistency: 7,
    };
    expect_status(
        kv.get(bad_consistency).await,
        Code::InvalidArgument,
        "invalid_argument",
    );
    let mut two = put("k", "v");
    two.if_absent = true;
    two.if_version = Some(3);
    expect_status(kv.put(two).await, Code::InvalidArgument, "invalid_argument");
    let mut forever = put("k", "v");
    forever.ttl_ms = u64::MAX;
    expect_status(
        kv.put(forever).await,
        Code::InvalidArgument,
        "invalid_argument",
    );
    let bad_cursor = ScanRequest {
        cursor: "not-a-cursor".into(),
        ..ScanRequest::default()
    };
    expect_status(
        kv.scan(bad_cursor).await,
        Code::InvalidArgument,
        "invalid_argument",
    );
    let huge = ScanRequest {
        limit: 1_000_000,
        ..ScanRequest::default()
    };
    expect_status(
        kv.scan(huge).await,
        Code::InvalidArgument,
        "invalid_argument",
    );
    let empty_op = TxnRequest {
        compare: vec![],
        ops: vec![Op { op: None }],
    };
    expect_status(
        kv.txn(empty_op).await,
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_status(
        kv.txn(TxnRequest::default()).await,
        Code::InvalidArgument,
        "invalid_argument",
    );
    // Nothing of the refused writes was stored.
    expect_status(kv.get(get(b"k")).await, Code::NotFound, "not_found");
    s.stop().await;
}

pub async fn key_and_value_limits(s: Server) {
    let mut kv = kv(&s).await;
    expect_status(
        kv.put(put("", "v")).await,
        Code::InvalidArgument,
        "empty_key",
    );
    expect_status(kv.get(get(b"")).await, Code::InvalidArgument, "empty_key");
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let status = expect_status(
        kv.put(put(&long, "v")).await,
        Code::InvalidArgument,
        "key_too_large",
    );
    assert!(status.message().contains(&format!("{MAX_KEY_BYTES} bytes")));
    expect_status(
        kv.get(get(long.as_bytes())).await,
        Code::InvalidArgument,
        "key_too_large",
    );
    let at_limit = "v".repeat(MAX_VALUE_BYTES);
    put_ok(&mut kv, "at-limit", &at_limit).await;
    let status = expect_status(
        kv.put(put("too-big", &format!("{at_limit}v"))).await,
        Code::InvalidArgument,
        "value_too_large",
    );
    assert_eq!(
        status.message(),
        format!(
            "value is {} bytes, over the value size limit of {MAX_VALUE_BYTES} bytes \
             (--max-value-bytes)",
            MAX_VALUE_BYTES + 1
        )
    );
    expect_status(kv.get(get(b"too-big")).await, Code::NotFound, "not_found");
    s.stop().await;
}

pub async fn transactions_apply_atomically(s: Server) {
    let mut kv = kv(&s).await;
    let stock = put_ok(&mut kv, "{shop}stock", "10").await;
    let txn = TxnRequest {
        compare: vec![
            Compare {
                key: "{shop}stock".into(),
                version: stock,
            },
            Compare {
                key: "{shop}order:7".into(),
                version: 0,
            },
        ],
        ops: vec![
            op_of(op::Op::Incr(IncrRequest {
                key: "{shop}stock".into(),
                by: Some(-1),
            })),
            op_of(op::Op::Put(put("{shop}order:7", "paid"))),
            op_of(op::Op::Get(get(b"{shop}stock"))),
            op_of(op::Op::Get(get(b"{shop}nothing"))),
            op_of(op::Op::Incr(IncrRequest {
                key: "{shop}order:7".into(),
                by: None,
            })),
        ],
    };
    let results = kv.txn(txn.clone()).await.unwrap().into_inner().results;
    let results: Vec<_> = results.into_iter().map(|r| r.result.unwrap()).collect();
    assert_eq!(results[0], op_result::Result::IncrValue(9));
    assert!(matches!(results[1], op_result::Result::PutVersion(v) if v > stock));
    match &results[2] {
        op_result::Result::Get(record) => {
            assert!(record.found);
            assert_eq!(record.value, "9");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&results[3], op_result::Result::Get(r) if !r.found));
    // One op failing alone does not undo the others (as in Redis).
    assert!(matches!(&results[4], op_result::Result::Error(e) if e.code == "not_integer"));
    // The compares no longer hold: nothing applies.
    expect_status(
        kv.txn(txn).await,
        Code::FailedPrecondition,
        "compare_failed",
    );
    assert_eq!(
        kv.get(get(b"{shop}stock"))
            .await
            .unwrap()
            .into_inner()
            .value,
        "9"
    );
    let cross = TxnRequest {
        compare: vec![],
        ops: vec![
            op_of(op::Op::Put(put("a", "1"))),
            op_of(op::Op::Put(put("b", "2"))),
        ],
    };
    expect_status(kv.txn(cross).await, Code::InvalidArgument, "cross_slot");
    expect_status(kv.get(get(b"a")).await, Code::NotFound, "not_found");
    s.stop().await;
}

pub async fn batches_answer_per_op(s: Server) {
    let mut kv = kv(&s).await;
    put_ok(&mut kv, "word", "text").await;
    put_ok(&mut kv, "before", "7").await;
    let mut ops: Vec<Op> = (0..50)
        .map(|i| op_of(op::Op::Put(put(&format!("batch/{i}"), &i.to_string()))))
        .collect();
    ops.push(op_of(op::Op::Incr(IncrRequest {
        key: "word".into(),
        by: None,
    })));
    // Ops of a batch run concurrently: a get sees what was written before the batch.
    ops.push(op_of(op::Op::Get(get(b"before"))));
    ops.push(op_of(op::Op::Delete(DeleteRequest {
        key: "absent".into(),
        if_version: None,
    })));
    let request = BatchRequest {
        ops,
        consistency: 0,
    };
    let results = kv.batch(request).await.unwrap().into_inner().results;
    assert_eq!(results.len(), 53);
    let results: Vec<_> = results.into_iter().map(|r| r.result.unwrap()).collect();
    assert!(
        results[..50]
            .iter()
            .all(|r| matches!(r, op_result::Result::PutVersion(_)))
    );
    assert!(matches!(&results[50], op_result::Result::Error(e) if e.code == "not_integer"));
    assert!(matches!(&results[51], op_result::Result::Get(r) if r.found && r.value == "7"));
    assert_eq!(results[52], op_result::Result::Deleted(false));
    for i in [0, 25, 49] {
        let got = kv.get(get(format!("batch/{i}").as_bytes())).await.unwrap();
        assert_eq!(got.into_inner().value, i.to_string());
    }
    s.stop().await;
}

pub async fn health_reflection_and_cluster(s: Server) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = channel(&s).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["shoal.v1.KV", "shoal.v1.Cluster"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, 1, "{service} is SERVING");
    }

    // Reflection lists the services, so grpcurl needs no .proto file.
    use futures_util::StreamExt;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: BTreeSet<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["shoal.v1.KV", "shoal.v1.Cluster", "grpc.health.v1.Health"] {
        assert!(names.contains(expected), "{names:?}");
    }

    let mut cluster = ClusterClient::new(channel);
    let status = cluster.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.node_id, NODE_ID);
    assert_eq!(status.shards, crate::http::SHARDS);
    assert_eq!(status.health, "ok");
    let map = cluster.map(MapRequest {}).await.unwrap().into_inner();
    assert_eq!(map.shards.len(), crate::http::SHARDS as usize);
    assert!(map.nodes.iter().any(|n| n.id == NODE_ID));
    // The shards' slot ranges cover all 16384 slots, in order, without overlap.
    let mut next = 0;
    for shard in &map.shards {
        for range in &shard.slots {
            assert_eq!(range.start, next, "{map:?}");
            next = range.end + 1;
        }
    }
    assert_eq!(next, 16384);
    s.stop().await;
}
