//! The client against the gRPC front end over the in-memory fake node: the typed API, the
//! error codes, and which failures are retried (the fake fails chosen keys on demand and
//! counts the commands that reached it).

use std::sync::Arc;
use std::time::Duration;

use shoal_api::fake::{FakeConfig, FakeNode};
use shoal_api::grpc::{GrpcConfig, serve_backend};
use shoal_core::Error as CoreError;
use tokio::sync::oneshot;

use super::*;

struct Harness {
    node: Arc<FakeNode>,
    client: Client,
    addr: String,
    _stop: oneshot::Sender<()>,
}

fn fast() -> ClientConfig {
    ClientConfig {
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        max_attempts: 4,
        ..ClientConfig::default()
    }
}

async fn start() -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = Arc::new(FakeNode::new(FakeConfig {
        shards: 4,
        scan_budget: 5,
        ..FakeConfig::default()
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    let backend = node.clone();
    tokio::spawn(serve_backend(
        listener,
        backend,
        GrpcConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client::connect_with(&[&addr], fast())
        .await
        .expect("connects");
    Harness {
        node,
        client,
        addr,
        _stop: stop,
    }
}

#[tokio::test]
async fn single_key_operations_round_trip() {
    let h = start().await;
    let c = &h.client;
    assert_eq!(c.get("k").await.unwrap(), None);
    let v1 = c.put("k", "one").await.unwrap();
    let got = c.get("k").await.unwrap().unwrap();
    assert_eq!((got.value.as_ref(), got.version), (&b"one"[..], v1));
    let v2 = c.cas("k", v1, "two").await.unwrap();
    assert!(v2 > v1);
    match c.cas("k", v1, "three").await.unwrap_err() {
        Error::Refused {
            code,
            actual_version,
            ..
        } => {
            assert_eq!(code, "version_mismatch");
            assert_eq!(actual_version, Some(Some(v2)));
        }
        other => panic!("{other:?}"),
    }
    let err = c
        .put_with("k", "x", PutOptions::new().if_absent())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("key_exists"));
    let err = c
        .put_with("nope", "x", PutOptions::new().if_present())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("key_missing"));
    assert_eq!(c.incr("n", 5).await.unwrap(), 5);
    assert_eq!(c.incr("n", -7).await.unwrap(), -2);
    assert_eq!(
        c.incr("k", 1).await.unwrap_err().code(),
        Some("not_integer")
    );
    assert_eq!(c.append("a", "xy").await.unwrap(), 2);
    assert_eq!(c.append("a", "z").await.unwrap(), 3);
    assert!(c.delete("k").await.unwrap());
    assert!(!c.delete("k").await.unwrap());
    assert_eq!(c.get("k").await.unwrap(), None);
    let err = c.put("", "v").await.unwrap_err();
    assert_eq!(err.code(), Some("empty_key"));
}

#[tokio::test]
async fn ttl_sets_an_expiry() {
    let h = start().await;
    let options = PutOptions::new().ttl(Duration::from_secs(60));
    h.client.put_with("t", "v", options).await.unwrap();
    let at = h
        .client
        .get("t")
        .await
        .unwrap()
        .unwrap()
        .expire_at_ms
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(at > now + 50_000 && at <= now + 60_000, "{at} vs {now}");
}

#[tokio::test]
async fn transactions_are_all_or_nothing_and_batches_per_op() {
    let h = start().await;
    let c = &h.client;
    let v = c.put("{u}stock", "10").await.unwrap();
    let results = c
        .txn(
            Txn::new()
                .compare("{u}stock", v)
                .compare("{u}order", 0)
                .op(Op::incr("{u}stock", -1))
                .op(Op::put("{u}order", "paid"))
                .op(Op::get("{u}stock"))
                .op(Op::append("{u}order", "!")),
        )
        .await
        .unwrap();
    assert_eq!(results[0], OpOutcome::Incr(9));
    assert!(matches!(results[1], OpOutcome::Put(_)));
    match &results[2] {
        OpOutcome::Get(Some(value)) => assert_eq!(value.value, "9"),
        other => panic!("{other:?}"),
    }
    assert_eq!(results[3], OpOutcome::Append(5));
    // The same compare again: stock moved on, so nothing applies.
    let err = c
        .txn(Txn::new().compare("{u}stock", v).op(Op::delete("{u}stock")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("compare_failed"));
    assert!(c.get("{u}stock").await.unwrap().is_some());
    let err = c
        .txn(Txn::new().op(Op::put("a", "1")).op(Op::put("b", "2")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("cross_slot"));

    // A batch spans shards; each op has its own outcome, failures included. Its ops run
    // concurrently, so its get reads a key written before it.
    c.put("before", "3").await.unwrap();
    let ops: Vec<Op> = (0..20)
        .map(|i| Op::put(format!("b{i}"), format!("{i}")))
        .chain([
            Op::incr("{u}order", 1),
            Op::get("before"),
            Op::get("missing"),
        ])
        .collect();
    let outcomes = c.batch(ops).await.unwrap();
    assert_eq!(outcomes.len(), 23);
    assert!(
        outcomes[..20]
            .iter()
            .all(|o| matches!(o, OpOutcome::Put(_)))
    );
    assert!(matches!(&outcomes[20], OpOutcome::Failed { code, .. } if code == "not_integer"));
    assert!(matches!(&outcomes[21], OpOutcome::Get(Some(v)) if v.value == "3"));
    assert_eq!(outcomes[22], OpOutcome::Get(None));
}

#[tokio::test]
async fn scans_page_and_stream_every_key_once() {
    let h = start().await;
    for i in 0..57 {
        h.client.put(format!("s/{i:02}"), "v").await.unwrap();
    }
    h.client.put("other", "v").await.unwrap();
    let all = h.client.scan("s/", 0, true).await.unwrap();
    let mut keys: Vec<_> = all.iter().map(|e| e.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 57);
    assert!(all.iter().all(|e| e.value == "v"));
    assert_eq!(h.client.scan("s/", 10, false).await.unwrap().len(), 10);

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut options = ScanOptions::new().prefix("s/").limit(7);
        if let Some(cursor) = &cursor {
            options = options.cursor(cursor.clone());
        }
        let page = h.client.scan_page(&options).await.unwrap();
        assert!(page.entries.len() <= 7);
        paged.extend(page.entries.into_iter().map(|e| e.key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    paged.sort();
    assert_eq!(paged, keys);
    let garbage = ScanOptions::new().prefix("s/").cursor("garbage");
    let err = h.client.scan_page(&garbage).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_argument"));
}

#[tokio::test]
async fn refused_before_proposing_is_retried_and_applied_once() {
    let h = start().await;
    let not_leader = CoreError::NotLeader {
        shard: 1,
        leader: 9,
    };
    h.node.fail_times("w", not_leader, 2);
    h.client.put("w", "v").await.unwrap();
    assert_eq!(h.node.executed("w"), 3, "two refusals, then the write");
    h.node.fail_times("r", CoreError::NoLeader { shard: 1 }, 1);
    assert_eq!(h.client.get("r").await.unwrap(), None);
    assert_eq!(h.node.executed("r"), 2);
}

#[tokio::test]
async fn a_write_of_unknown_outcome_is_never_resent() {
    let h = start().await;
    h.node
        .fail_times("w", CoreError::Indeterminate("leader changed".into()), 1);
    let err = h.client.put("w", "v").await.unwrap_err();
    assert!(err.is_indeterminate(), "{err:?}");
    assert_eq!(h.node.executed("w"), 1);
    // A refusal that is not transient is returned at once, too.
    h.node.fail(
        "d",
        CoreError::DiskFull {
            node: 1,
            free_mib: 1,
            threshold_mib: 2,
            reserve_mib: 2,
            what: "writes".into(),
        },
    );
    assert_eq!(
        h.client.put("d", "v").await.unwrap_err().code(),
        Some("disk_full")
    );
    assert_eq!(h.node.executed("d"), 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let h = start().await;
    h.node.fail("busy", CoreError::NoLeader { shard: 2 });
    let err = h.client.put("busy", "v").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(h.node.executed("busy"), 4, "max_attempts");
}

#[tokio::test]
async fn a_node_that_is_gone_is_unavailable_not_indeterminate() {
    let h = start().await;
    drop(h._stop);
    // Wait for the listener to close: a refused connection means nothing was sent.
    let addr = h.addr.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "server stops");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = Client {
        inner: h.client.inner.clone(),
    };
    let err = client.put("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let err = Client::connect_with(&[&addr], fast()).await.err().unwrap();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(matches!(
        Client::connect("not an address").await.err().unwrap(),
        Error::InvalidAddress { .. }
    ));
}
