//! End-to-end tests of the HTTP layer over loopback, against the in-memory `FakeNode`:
//! routing, statuses, bodies, headers, limits, paging and graceful shutdown. The same
//! behaviour against a real node is covered by `tests/http.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use shoal_core::{Consistency, Error, Limits};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{HttpConfig, serve_backend};
use crate::fake::{FakeConfig, FakeNode};

struct Server {
    base: String,
    client: reqwest::Client,
    node: Arc<FakeNode>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

const LIMITS: Limits = Limits {
    max_key_bytes: 64,
    max_value_bytes: 1024,
};
/// Keys the fake's scan looks at per call: small, so pages need several calls.
const SCAN_BUDGET: usize = 7;

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let node = Arc::new(FakeNode::new(FakeConfig {
        id: 7,
        limits: LIMITS,
        scan_budget: SCAN_BUDGET,
        ..FakeConfig::default()
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_backend(
        listener,
        node.clone(),
        HttpConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        client: reqwest::Client::new(),
        node,
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn put(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn version_of_put(&self, path: &str, body: &'static str) -> u64 {
        let response = self.put(path, body).await;
        assert_eq!(response.status(), StatusCode::OK, "PUT {path}");
        let json: Value = response.json().await.unwrap();
        json["version"].as_u64().expect("version is a number")
    }
}

/// Asserts the status and the JSON error shape; returns the error object.
async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    error.clone()
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let s = start().await;
    let v1 = s.version_of_put("/v1/kv/greeting", "hello").await;
    let response = s.get("/v1/kv/greeting").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-shoal-version"],
        v1.to_string().as_str()
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(response.headers().get("x-shoal-expire-at").is_none());
    assert_eq!(response.bytes().await.unwrap(), "hello");

    // POST is a synonym of PUT; versions only grow.
    let response = s
        .client
        .post(s.url("/v1/kv/greeting"))
        .body("again")
        .send()
        .await
        .unwrap();
    let v2 = response.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    assert!(v2 > v1);

    let response = s
        .client
        .delete(s.url("/v1/kv/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({"deleted": true})
    );
    expect_error(
        s.get("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let response = s
        .client
        .delete(s.url("/v1/kv/greeting"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn keys_are_any_bytes_and_may_contain_slashes() {
    let s = start().await;
    s.version_of_put("/v1/kv/users/42", "a").await;
    assert_eq!(s.get("/v1/kv/users%2F42").await.bytes().await.unwrap(), "a");
    s.version_of_put("/v1/kv/%FF%FE", "binary").await;
    assert_eq!(
        s.get("/v1/kv/%ff%fe").await.bytes().await.unwrap(),
        "binary"
    );
    s.version_of_put("/v1/kv/with%20space%3F", "q").await;
    assert_eq!(
        s.get("/v1/kv/with%20space%3F").await.bytes().await.unwrap(),
        "q"
    );

    let listing: Value = s.get("/v1/kv?prefix=%FF").await.json().await.unwrap();
    assert_eq!(listing["items"][0]["key_base64"], "//4=");
    assert!(listing["items"][0].get("key").is_none());
}

#[tokio::test]
async fn conditional_puts_and_deletes() {
    let s = start().await;
    let v1 = s.version_of_put("/v1/kv/c?if_version=0", "first").await;
    let error = expect_error(
        s.put("/v1/kv/c?if_version=0", "x").await,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(error["actual_version"], v1);
    assert_eq!(
        error["message"],
        format!("version mismatch: expected 0, key is at {v1}")
    );

    expect_error(
        s.put("/v1/kv/c?if_absent=true", "x").await,
        StatusCode::PRECONDITION_FAILED,
        "key_exists",
    )
    .await;
    let v2 = s
        .version_of_put(&format!("/v1/kv/c?if_version={v1}"), "second")
        .await;
    expect_error(
        s.put(&format!("/v1/kv/c?if_version={v1}"), "stale").await,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(s.get("/v1/kv/c").await.bytes().await.unwrap(), "second");

    let response = s
        .client
        .delete(s.url(&format!("/v1/kv/c?if_version={v1}")))
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    let response = s
        .client
        .delete(s.url(&format!("/v1/kv/c?if_version={v2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    s.version_of_put("/v1/kv/c?if_absent", "back").await;
}

#[tokio::test]
async fn ttl_sets_expiry_and_the_key_expires() {
    let s = start().await;
    let before = now_ms();
    s.version_of_put("/v1/kv/t?ttl_ms=150", "soon gone").await;
    let response = s.get("/v1/kv/t").await;
    let expire_at: u64 = response.headers()["x-shoal-expire-at"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expire_at >= before + 150 && expire_at <= now_ms() + 150,
        "{expire_at}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while s.get("/v1/kv/t").await.status() == StatusCode::OK {
        assert!(Instant::now() < deadline, "key did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_error(s.get("/v1/kv/t").await, StatusCode::NOT_FOUND, "not_found").await;

    s.version_of_put("/v1/kv/t2?ttl=100", "x").await;
    let response = s.get("/v1/kv/t2").await;
    let expire_at: u64 = response.headers()["x-shoal-expire-at"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expire_at >= before + 100_000);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn listing_pages_cover_every_key_exactly_once() {
    let s = start().await;
    let mut expected = BTreeSet::new();
    for i in 0..60 {
        let key = format!("p/{i:03}");
        s.client
            .put(s.url(&format!("/v1/kv/{key}")))
            .body("v")
            .send()
            .await
            .unwrap();
        expected.insert(key);
    }
    for i in 0..25 {
        s.client
            .put(s.url(&format!("/v1/kv/q/{i}")))
            .body("v")
            .send()
            .await
            .unwrap();
    }

    let mut seen = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        assert!(page < 100, "listing did not finish");
        let listing: Value = s
            .get(&format!("/v1/kv?prefix=p/&limit=9&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        let items = listing["items"].as_array().unwrap();
        assert!(items.len() <= 9);
        for item in items {
            assert!(item["version"].as_u64().is_some());
            assert!(item["expire_at"].is_null());
            seen.push(item["key"].as_str().unwrap().to_string());
        }
        match listing["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "a key was listed twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);

    // The default page of 100 is cut short by the bound on node scans per request
    // (8 scans of 7 keys each in the fake): a short page with a cursor is not the end.
    let listing: Value = s.get("/v1/kv").await.json().await.unwrap();
    assert_eq!(listing["items"].as_array().unwrap().len(), 8 * SCAN_BUDGET);
    assert!(listing["next_cursor"].is_string());
}

#[tokio::test]
async fn listing_rejects_bad_parameters() {
    let s = start().await;
    let error = expect_error(
        s.get("/v1/kv?limit=1001").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("1000"));
    expect_error(
        s.get("/v1/kv?cursor=nothex").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    expect_error(
        s.get("/v1/kv?consistency=eventual").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    expect_error(
        s.get("/v1/kv?page=2").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
}

#[tokio::test]
async fn consistency_is_passed_through() {
    let s = start().await;
    s.version_of_put("/v1/kv/k", "v").await;
    assert_eq!(
        s.get("/v1/kv/k?consistency=stale").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        s.get("/v1/kv/k?consistency=linearizable").await.status(),
        StatusCode::OK
    );
    s.get("/v1/kv?consistency=stale").await;
    assert_eq!(
        s.node.consistencies(),
        [
            Consistency::Linearizable,
            Consistency::Stale,
            Consistency::Linearizable,
            Consistency::Stale
        ]
    );
    expect_error(
        s.get("/v1/kv/k?consistency=strong").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
}

#[tokio::test]
async fn key_and_value_limits() {
    let s = start().await;
    expect_error(
        s.put("/v1/kv/", "v").await,
        StatusCode::BAD_REQUEST,
        "empty_key",
    )
    .await;
    expect_error(s.get("/v1/kv/").await, StatusCode::BAD_REQUEST, "empty_key").await;
    let long_key = "k".repeat(LIMITS.max_key_bytes + 1);
    let error = expect_error(
        s.get(&format!("/v1/kv/{long_key}")).await,
        StatusCode::BAD_REQUEST,
        "key_too_large",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("64 bytes"));
    expect_error(
        s.get("/v1/kv/bad%zzescape").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;

    // A value exactly at the limit is fine; one byte more is a JSON 413.
    let at_limit = vec![b'v'; LIMITS.max_value_bytes];
    let response = s
        .client
        .put(s.url("/v1/kv/big"))
        .body(at_limit)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let over = vec![b'v'; LIMITS.max_value_bytes + 1];
    let response = s
        .client
        .put(s.url("/v1/kv/big"))
        .body(over)
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "value_too_large").await;
    assert_eq!(
        error["message"],
        "value is 1025 bytes, over the value size limit of 1024 bytes (--max-value-bytes)"
    );
}

#[tokio::test]
async fn node_errors_map_to_statuses_and_headers() {
    let s = start().await;
    let cases = [
        (
            "a",
            Error::NoLeader { shard: 2 },
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
        ),
        (
            "b",
            Error::Overloaded { shard: 2, limit: 9 },
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
        ),
        (
            "c",
            Error::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
        ),
        (
            "d",
            Error::Timeout(500),
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        ),
        (
            "e",
            Error::Disabled("x".into(), "y".into()),
            StatusCode::FORBIDDEN,
            "disabled",
        ),
        (
            "f",
            Error::Storage("disk full".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
        ),
        (
            "g",
            Error::CrossShard,
            StatusCode::BAD_REQUEST,
            "cross_slot",
        ),
        (
            "h",
            Error::NotLeader {
                shard: 2,
                leader: 3,
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
        ),
    ];
    for (key, err, status, code) in cases {
        s.node.fail(key, err);
        let response = s.get(&format!("/v1/kv/{key}")).await;
        let retry = response.headers().get("retry-after").cloned();
        let leader = response.headers().get("x-shoal-leader").cloned();
        expect_error(response, status, code).await;
        assert_eq!(
            retry.is_some(),
            status == StatusCode::SERVICE_UNAVAILABLE,
            "{code}"
        );
        assert_eq!(leader.is_some(), code == "not_leader", "{code}");
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let s = start().await;
    expect_error(s.get("/nope").await, StatusCode::NOT_FOUND, "unknown_route").await;
    expect_error(
        s.get("/v1/kvx").await,
        StatusCode::NOT_FOUND,
        "unknown_route",
    )
    .await;
    let response = s.client.patch(s.url("/v1/kv/k")).send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    for method in ["GET", "PUT", "POST", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
    let response = s.client.delete(s.url("/v1/kv")).send().await.unwrap();
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let response = s.client.post(s.url("/health")).send().await.unwrap();
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn bad_put_parameters_are_rejected_before_writing() {
    let s = start().await;
    for query in [
        "ttl=abc",
        "ttl=0",
        "tll=5",
        "if_version=x",
        "if_absent=maybe",
        "ttl=1&ttl_ms=5",
    ] {
        let response = s.put(&format!("/v1/kv/k?{query}"), "v").await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    }
    expect_error(s.get("/v1/kv/k").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn health_and_cluster() {
    let s = start().await;
    let health: Value = s.get("/health").await.json().await.unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok", "node_id": 7}));
    let cluster: Value = s.get("/v1/cluster").await.json().await.unwrap();
    assert_eq!(cluster["this_node"], 7);
    assert_eq!(cluster["cluster_id"], "fake");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut s = start().await;
    s.version_of_put("/v1/kv/slow", "worth the wait").await;
    s.node.slow("slow", Duration::from_millis(300));
    let in_flight = tokio::spawn(s.client.get(s.url("/v1/kv/slow")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop.take().unwrap().send(()).unwrap();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), "worth the wait");
    let health_url = s.url("/health");
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    // Stopped accepting: a fresh connection is refused.
    let fresh = reqwest::Client::new();
    assert!(fresh.get(health_url).send().await.is_err());
}
