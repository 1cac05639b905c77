//! The HTTP/JSON API against a real in-process node: a `shoal_cluster::Node` over a temp
//! directory, served on a loopback port, driven with reqwest. Protocol edge cases that
//! need a rigged node (503/504/403 from the node) are unit-tested in `src/http/tests.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_api::http::{HttpConfig, serve};
use shoal_cluster::{Node, NodeConfig};
use shoal_core::Limits;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;

struct TestNode {
    node: Node,
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

async fn start() -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = Node::start(NodeConfig {
        id: 1,
        data_dir: dir.path().to_path_buf(),
        shards: 4,
        resp_addr: "127.0.0.1:0".into(),
        http_addr: addr.clone(),
        limits: Limits {
            max_key_bytes: MAX_KEY,
            max_value_bytes: MAX_VALUE,
        },
        allow_flush: false,
        max_keys_reply: 10_000,
    })
    .await
    .expect("node starts");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        node.clone(),
        HttpConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    TestNode {
        node,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    }
}

impl TestNode {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
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

    async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// PUTs and returns the new version, failing the test on anything but 200.
    async fn put_ok(&self, path: &str, body: impl Into<reqwest::Body>) -> u64 {
        let response = self.put(path, body).await;
        assert_eq!(response.status(), StatusCode::OK, "PUT {path}");
        let version = response.headers()["x-shoal-version"]
            .to_str()
            .unwrap()
            .parse::<u64>();
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["version"].as_u64(), Some(version.unwrap()));
        json["version"].as_u64().unwrap()
    }

    /// Stops the HTTP server gracefully, then the node.
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        self.node.shutdown().await;
    }
}

/// Asserts status and the `{"error": {"code", "message"}}` body; returns the error object.
async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"].clone()
}

/// Polls `check` every 20 ms until it holds, failing after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let t = start().await;
    let v1 = t.put_ok("/v1/kv/greeting", "hello").await;
    let response = t.get("/v1/kv/greeting").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-shoal-version"],
        v1.to_string().as_str()
    );
    assert!(response.headers().get("x-shoal-expire-at").is_none());
    assert_eq!(response.bytes().await.unwrap(), "hello");

    let response = t.delete("/v1/kv/greeting").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": true})
    );
    expect_error(
        t.get("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        t.delete("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Binary values and keys with slashes or non-UTF-8 bytes survive the trip.
    let value: Vec<u8> = (0..=255).collect();
    t.put_ok("/v1/kv/dir/sub%2Fkey%FF", value.clone()).await;
    assert_eq!(
        t.get("/v1/kv/dir%2Fsub/key%ff")
            .await
            .bytes()
            .await
            .unwrap(),
        value
    );
    t.stop().await;
}

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
async fn if_version_is_compare_and_set() {
    let t = start().await;
    let v1 = t.put_ok("/v1/kv/cas?if_version=0", "a").await;
    let error = expect_error(
        t.put("/v1/kv/cas?if_version=0", "b").await,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(
        error["message"],
        format!("version mismatch: expected 0, key is at {v1}")
    );
    assert_eq!(error["actual_version"], v1);

    let v2 = t.put_ok(&format!("/v1/kv/cas?if_version={v1}"), "b").await;
    let error = expect_error(
        t.put(&format!("/v1/kv/cas?if_version={v1}"), "stale").await,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(
        error["message"],
        format!("version mismatch: expected {v1}, key is at {v2}")
    );

    // Conditional delete.
    let response = t.delete(&format!("/v1/kv/cas?if_version={v1}")).await;
    expect_error(
        response,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(
        t.delete(&format!("/v1/kv/cas?if_version={v2}"))
            .await
            .status(),
        StatusCode::OK
    );
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
async fn if_absent_only_creates() {
    let t = start().await;
    t.put_ok("/v1/kv/once?if_absent=true", "first").await;
    let error = expect_error(
        t.put("/v1/kv/once?if_absent=true", "second").await,
        StatusCode::PRECONDITION_FAILED,
        "key_exists",
    )
    .await;
    assert_eq!(error["message"], "key already exists");
    assert_eq!(t.get("/v1/kv/once").await.text().await.unwrap(), "first");
    // Bare flag form; after a delete the key may be created again.
    t.delete("/v1/kv/once").await;
    t.put_ok("/v1/kv/once?if_absent", "again").await;
    t.stop().await;
}

#[tokio::test]
async fn ttl_expires_keys() {
    let t = start().await;
    let before = now_ms();
    t.put_ok("/v1/kv/ephemeral?ttl_ms=300", "soon gone").await;
    let response = t.get("/v1/kv/ephemeral").await;
    assert_eq!(response.status(), StatusCode::OK);
    let expire_at: u64 = response.headers()["x-shoal-expire-at"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expire_at >= before + 300 && expire_at <= now_ms() + 300,
        "{expire_at}"
    );

    eventually(Duration::from_secs(10), "the key to expire", || async {
        t.get("/v1/kv/ephemeral").await.status() == StatusCode::NOT_FOUND
    })
    .await;
    expect_error(
        t.get("/v1/kv/ephemeral").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Seconds form; a plain put afterwards clears the expiry.
    t.put_ok("/v1/kv/later?ttl=3600", "x").await;
    let response = t.get("/v1/kv/later").await;
    let expire_at: u64 = response.headers()["x-shoal-expire-at"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expire_at >= before + 3_600_000);
    t.put_ok("/v1/kv/later", "y").await;
    assert!(
        t.get("/v1/kv/later")
            .await
            .headers()
            .get("x-shoal-expire-at")
            .is_none()
    );
    t.stop().await;
}

/// Follows `next_cursor` from the start and returns every listed item.
async fn list_all(t: &TestNode, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        assert!(page < 1000, "listing did not finish");
        let response = t.get(&format!("/v1/kv?{query}&cursor={cursor}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let listing: Value = response.json().await.unwrap();
        items.extend(listing["items"].as_array().unwrap().iter().cloned());
        match listing["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return items,
        }
    }
    unreachable!()
}

#[tokio::test]
async fn listing_pages_cover_every_key_exactly_once() {
    let t = start().await;
    let mut expected = BTreeSet::new();
    for i in 0..250 {
        let key = format!("page/{i:04}");
        t.put_ok(&format!("/v1/kv/{key}"), "v").await;
        expected.insert(key);
    }
    for i in 0..40 {
        t.put_ok(&format!("/v1/kv/other/{i}"), "v").await;
    }
    t.put_ok("/v1/kv/page/%FF%FE", "binary").await;
    t.put_ok("/v1/kv/expiring?ttl=3600", "v").await;

    let items = list_all(&t, "prefix=page/&limit=37").await;
    let mut seen = Vec::new();
    let mut binary = Vec::new();
    for item in &items {
        assert!(item["version"].as_u64().is_some_and(|v| v > 0), "{item}");
        match item["key"].as_str() {
            Some(key) => seen.push(key.to_string()),
            None => binary.push(item["key_base64"].as_str().unwrap().to_string()),
        }
    }
    assert_eq!(seen.len(), expected.len(), "a key was listed twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(binary, [base64_of(b"page/\xff\xfe")]);

    // Everything, default page size: 250 + 40 + 2 keys.
    let all = list_all(&t, "").await;
    assert_eq!(all.len(), 292);
    let expiring = all.iter().find(|i| i["key"] == "expiring").unwrap();
    assert!(expiring["expire_at"].as_u64().is_some());
    assert!(all.iter().find(|i| i["key"] == "other/1").unwrap()["expire_at"].is_null());

    // A page never exceeds its limit, and the limit is capped.
    let page: Value = t.get("/v1/kv?limit=5").await.json().await.unwrap();
    assert!(page["items"].as_array().unwrap().len() <= 5);
    assert!(page["next_cursor"].is_string());
    let error = expect_error(
        t.get("/v1/kv?limit=1001").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("1000"),
        "{error}"
    );
    t.stop().await;
}

/// Standard base64, independent of the implementation under test (small inputs only).
fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = String::new();
    for b in bytes {
        bits.push_str(&format!("{b:08b}"));
    }
    while !bits.len().is_multiple_of(6) {
        bits.push('0');
    }
    let mut out: String = bits
        .as_bytes()
        .chunks(6)
        .map(|c| {
            ALPHABET[usize::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()] as char
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
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
    expect_error(
        t.get("/v1/kv/fresh?consistency=eventual").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn every_client_error_has_its_status_and_json_body() {
    let t = start().await;
    // 400s
    expect_error(
        t.put("/v1/kv/", "v").await,
        StatusCode::BAD_REQUEST,
        "empty_key",
    )
    .await;
    let long = "k".repeat(MAX_KEY + 1);
    let error = expect_error(
        t.put(&format!("/v1/kv/{long}"), "v").await,
        StatusCode::BAD_REQUEST,
        "key_too_large",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{MAX_KEY} bytes"))
    );
    expect_error(
        t.get(&format!("/v1/kv/{long}")).await,
        StatusCode::BAD_REQUEST,
        "key_too_large",
    )
    .await;
    for bad in [
        "ttl=soon",
        "ttl=0",
        "if_version=-1",
        "if_absent=perhaps",
        "colour=blue",
    ] {
        let response = t.put(&format!("/v1/kv/k?{bad}"), "v").await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    }
    expect_error(
        t.get("/v1/kv?cursor=zz").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    expect_error(
        t.get("/v1/kv?cursor=ffff").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    // 404s: missing key versus unknown endpoint are told apart by code.
    expect_error(
        t.get("/v1/kv/missing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        t.get("/v2/kv/missing").await,
        StatusCode::NOT_FOUND,
        "unknown_route",
    )
    .await;
    // 405
    let response = t.client.patch(t.url("/v1/kv/k")).send().await.unwrap();
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    // 412s are covered above; 413:
    t.put_ok("/v1/kv/at-limit", vec![b'x'; MAX_VALUE]).await;
    let error = expect_error(
        t.put("/v1/kv/too-big", vec![b'x'; MAX_VALUE + 1]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{MAX_VALUE} bytes"))
    );
    expect_error(
        t.get("/v1/kv/too-big").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Nothing failed the writes that were refused.
    assert_eq!(t.get("/v1/kv/k").await.status(), StatusCode::NOT_FOUND);
    t.stop().await;
}

#[tokio::test]
async fn health_cluster_and_shutting_down() {
    let t = start().await;
    let health: Value = t.get("/health").await.json().await.unwrap();
    assert_eq!(health, json!({"status": "ok", "node_id": 1}));
    let cluster: Value = t.get("/v1/cluster").await.json().await.unwrap();
    assert_eq!(cluster["this_node"], 1);
    assert_eq!(cluster["shards"].as_array().unwrap().len(), 4);

    // A node that is shutting down answers 503 with Retry-After while HTTP still serves.
    t.node.shutdown().await;
    let response = t.get("/v1/kv/anything").await;
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "shutting_down").await;
    t.stop().await;
}
