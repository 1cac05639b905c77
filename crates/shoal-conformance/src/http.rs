//! The HTTP conformance suite: drives a server over loopback with reqwest, checking
//! statuses, bodies, headers, limits and paging.
//!
//! Run by two harnesses that each start a server configured with the constants below:
//! shoal-api's unit tests (`src/http/tests.rs`, against the in-memory fake node, so the
//! front end is tested alone) and `shoal-api/tests/http.rs` (against a real node).
//! `http_suite!(start)` expands to one `#[tokio::test]` per scenario; the helpers also
//! serve each harness's own scenarios.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The id of the node under test (not 1, so a hard-coded id would show).
pub const NODE_ID: u64 = 7;
/// Shards the node under test has.
pub const SHARDS: u32 = 4;
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// One `#[tokio::test]` per scenario, each on a fresh server from `$start()`.
#[macro_export]
macro_rules! http_suite {
    ($start:path) => {
        $crate::http_suite!(@tests $start;
            put_get_delete_round_trip, keys_are_any_bytes_and_may_contain_slashes,
            if_version_is_compare_and_set, if_absent_only_creates, ttl_expires_keys,
            listing_pages_cover_every_key_exactly_once, bad_read_parameters_are_rejected,
            key_and_value_limits, bad_put_parameters_are_rejected_before_writing,
            unknown_routes_and_wrong_methods_answer_json, health_and_cluster,
            transactions_apply_atomically);
    };
    (@tests $start:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::http::$name($start().await).await;
            }
        )*
    };
}

/// A running server, as a harness hands it to the suite.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    /// Sending on this stops the server.
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
    /// Awaited once the server has stopped (shuts the node down); owns whatever must live
    /// as long as the server (node, data directory).
    pub after_stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Server {
    /// Spawns `serve(shutdown)`, a server listening at `addr` until `shutdown` completes.
    pub fn spawn<F>(
        addr: SocketAddr,
        serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
        after_stop: impl Future<Output = ()> + Send + 'static,
    ) -> Server
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async {
            let _ = stopped.await;
        })));
        Server {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
            after_stop: Box::pin(after_stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// PUTs and returns the new version, failing the test on anything but 200.
    pub async fn put_ok(&self, path: &str, body: impl Into<reqwest::Body>) -> u64 {
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

    /// Stops the server gracefully, then runs `after_stop`.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        self.after_stop.await;
    }
}

/// Asserts status and the `{"error": {"code", "message"}}` body; returns the error object.
pub async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
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

/// Polls `check` every 20 ms until it holds, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn expire_at_of(response: &reqwest::Response) -> u64 {
    response.headers()["x-shoal-expire-at"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Follows `next_cursor` from the start, checking every page against `limit`, and
/// returns every listed item.
async fn list_all(s: &Server, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        assert!(page < 1000, "listing did not finish");
        let response = s.get(&format!("/v1/kv?{query}&cursor={cursor}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let listing: Value = response.json().await.unwrap();
        let page = listing["items"].as_array().unwrap();
        assert!(page.len() <= limit, "{listing}");
        items.extend(page.iter().cloned());
        match listing["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return items,
        }
    }
    unreachable!()
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

// ---------------------------------------------------------------------------------------
// Scenarios.

pub async fn put_get_delete_round_trip(s: Server) {
    let v1 = s.put_ok("/v1/kv/greeting", "hello").await;
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

    let response = s.delete("/v1/kv/greeting").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": true})
    );
    expect_error(
        s.get("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        s.delete("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    s.stop().await;
}

pub async fn keys_are_any_bytes_and_may_contain_slashes(s: Server) {
    s.put_ok("/v1/kv/users/42", "a").await;
    assert_eq!(s.get("/v1/kv/users%2F42").await.bytes().await.unwrap(), "a");
    s.put_ok("/v1/kv/%FF%FE", "binary").await;
    assert_eq!(
        s.get("/v1/kv/%ff%fe").await.bytes().await.unwrap(),
        "binary"
    );
    s.put_ok("/v1/kv/with%20space%3F", "q").await;
    assert_eq!(
        s.get("/v1/kv/with%20space%3F").await.bytes().await.unwrap(),
        "q"
    );

    let listing: Value = s.get("/v1/kv?prefix=%FF").await.json().await.unwrap();
    assert_eq!(listing["items"][0]["key_base64"], "//4=");
    assert!(listing["items"][0].get("key").is_none());

    // Binary values and keys with slashes or non-UTF-8 bytes survive the trip.
    let value: Vec<u8> = (0..=255).collect();
    s.put_ok("/v1/kv/dir/sub%2Fkey%FF", value.clone()).await;
    assert_eq!(
        s.get("/v1/kv/dir%2Fsub/key%ff")
            .await
            .bytes()
            .await
            .unwrap(),
        value
    );
    s.stop().await;
}

pub async fn if_version_is_compare_and_set(s: Server) {
    let v1 = s.put_ok("/v1/kv/cas?if_version=0", "a").await;
    let error = expect_error(
        s.put("/v1/kv/cas?if_version=0", "b").await,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(
        error["message"],
        format!("version mismatch: expected 0, key is at {v1}")
    );
    assert_eq!(error["actual_version"], v1);

    let v2 = s.put_ok(&format!("/v1/kv/cas?if_version={v1}"), "b").await;
    let error = expect_error(
        s.put(&format!("/v1/kv/cas?if_version={v1}"), "stale").await,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(
        error["message"],
        format!("version mismatch: expected {v1}, key is at {v2}")
    );
    assert_eq!(s.get("/v1/kv/cas").await.bytes().await.unwrap(), "b");

    // Conditional delete.
    let response = s.delete(&format!("/v1/kv/cas?if_version={v1}")).await;
    expect_error(
        response,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    )
    .await;
    assert_eq!(
        s.delete(&format!("/v1/kv/cas?if_version={v2}"))
            .await
            .status(),
        StatusCode::OK
    );
    s.stop().await;
}

pub async fn if_absent_only_creates(s: Server) {
    s.put_ok("/v1/kv/once?if_absent=true", "first").await;
    let error = expect_error(
        s.put("/v1/kv/once?if_absent=true", "second").await,
        StatusCode::PRECONDITION_FAILED,
        "key_exists",
    )
    .await;
    assert_eq!(error["message"], "key already exists");
    assert_eq!(s.get("/v1/kv/once").await.text().await.unwrap(), "first");
    // Bare flag form; after a delete the key may be created again.
    s.delete("/v1/kv/once").await;
    s.put_ok("/v1/kv/once?if_absent", "again").await;
    s.stop().await;
}

pub async fn ttl_expires_keys(s: Server) {
    let before = now_ms();
    s.put_ok("/v1/kv/ephemeral?ttl_ms=300", "soon gone").await;
    let response = s.get("/v1/kv/ephemeral").await;
    assert_eq!(response.status(), StatusCode::OK);
    let expire_at = expire_at_of(&response);
    assert!(
        expire_at >= before + 300 && expire_at <= now_ms() + 300,
        "{expire_at}"
    );

    eventually(TIMEOUT, "the key to expire", || async {
        s.get("/v1/kv/ephemeral").await.status() == StatusCode::NOT_FOUND
    })
    .await;
    expect_error(
        s.get("/v1/kv/ephemeral").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Seconds form; a plain put afterwards clears the expiry.
    s.put_ok("/v1/kv/later?ttl=3600", "x").await;
    let response = s.get("/v1/kv/later").await;
    assert!(expire_at_of(&response) >= before + 3_600_000);
    s.put_ok("/v1/kv/later", "y").await;
    assert!(
        s.get("/v1/kv/later")
            .await
            .headers()
            .get("x-shoal-expire-at")
            .is_none()
    );
    s.stop().await;
}

pub async fn listing_pages_cover_every_key_exactly_once(s: Server) {
    let mut expected = BTreeSet::new();
    for i in 0..250 {
        let key = format!("page/{i:04}");
        s.put_ok(&format!("/v1/kv/{key}"), "v").await;
        expected.insert(key);
    }
    for i in 0..40 {
        s.put_ok(&format!("/v1/kv/other/{i}"), "v").await;
    }
    s.put_ok("/v1/kv/page/%FF%FE", "binary").await;
    s.put_ok("/v1/kv/expiring?ttl=3600", "v").await;

    let items = list_all(&s, "prefix=page/&limit=37", 37).await;
    let mut seen = Vec::new();
    let mut binary = Vec::new();
    for item in &items {
        assert!(item["version"].as_u64().is_some_and(|v| v > 0), "{item}");
        assert!(item["expire_at"].is_null(), "{item}");
        match item["key"].as_str() {
            Some(key) => seen.push(key.to_string()),
            None => binary.push(item["key_base64"].as_str().unwrap().to_string()),
        }
    }
    assert_eq!(seen.len(), expected.len(), "a key was listed twice");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(binary, [base64_of(b"page/\xff\xfe")]);

    // Everything, default page size: 250 + 40 + 2 keys.
    let all = list_all(&s, "", 100).await;
    assert_eq!(all.len(), 292);
    let expiring = all.iter().find(|i| i["key"] == "expiring").unwrap();
    assert!(expiring["expire_at"].as_u64().is_some());
    assert!(all.iter().find(|i| i["key"] == "other/1").unwrap()["expire_at"].is_null());

    // A page never exceeds its limit.
    let page: Value = s.get("/v1/kv?limit=5").await.json().await.unwrap();
    assert!(page["items"].as_array().unwrap().len() <= 5);
    assert!(page["next_cursor"].is_string());
    s.stop().await;
}

pub async fn bad_read_parameters_are_rejected(s: Server) {
    // The limit is capped.
    let error = expect_error(
        s.get("/v1/kv?limit=1001").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("1000"),
        "{error}"
    );
    // An unknown consistency level, on a key and on the listing.
    s.put_ok("/v1/kv/k", "v").await;
    for path in [
        "/v1/kv/k?consistency=strong",
        "/v1/kv/k?consistency=eventual",
    ] {
        expect_error(
            s.get(path).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    for query in [
        "cursor=nothex",
        "cursor=zz",
        "cursor=ffff",
        "consistency=eventual",
        "page=2",
    ] {
        expect_error(
            s.get(&format!("/v1/kv?{query}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    s.stop().await;
}

pub async fn key_and_value_limits(s: Server) {
    expect_error(
        s.put("/v1/kv/", "v").await,
        StatusCode::BAD_REQUEST,
        "empty_key",
    )
    .await;
    expect_error(s.get("/v1/kv/").await, StatusCode::BAD_REQUEST, "empty_key").await;
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    for response in [
        s.put(&format!("/v1/kv/{long}"), "v").await,
        s.get(&format!("/v1/kv/{long}")).await,
    ] {
        let error = expect_error(response, StatusCode::BAD_REQUEST, "key_too_large").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{MAX_KEY_BYTES} bytes"))
        );
    }
    expect_error(
        s.get("/v1/kv/bad%zzescape").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;

    // A value exactly at the limit is fine; one byte more is a JSON 413, and not stored.
    s.put_ok("/v1/kv/at-limit", vec![b'v'; MAX_VALUE_BYTES])
        .await;
    let error = expect_error(
        s.put("/v1/kv/too-big", vec![b'v'; MAX_VALUE_BYTES + 1])
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
    )
    .await;
    assert_eq!(
        error["message"],
        format!(
            "value is {} bytes, over the value size limit of {MAX_VALUE_BYTES} bytes \
             (--max-value-bytes)",
            MAX_VALUE_BYTES + 1
        )
    );
    expect_error(
        s.get("/v1/kv/too-big").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    s.stop().await;
}

pub async fn bad_put_parameters_are_rejected_before_writing(s: Server) {
    for query in [
        "ttl=abc",
        "ttl=soon",
        "ttl=0",
        "tll=5",
        "colour=blue",
        "if_version=x",
        "if_version=-1",
        "if_absent=maybe",
        "if_absent=perhaps",
        "ttl=1&ttl_ms=5",
        // Past the signed 64-bit expiry times every front end keeps.
        "ttl_ms=18446744073709551615",
        "ttl_ms=9223372036854775807",
        "ttl=9223372036854775",
    ] {
        let response = s.put(&format!("/v1/kv/k?{query}"), "v").await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    }
    for ttl_ms in [0, u64::MAX, i64::MAX as u64] {
        let ops = json!({"ops": [{"op": "put", "key": "k", "value": "v", "ttl_ms": ttl_ms}]});
        expect_error(
            txn(&s, ops).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    expect_error(s.get("/v1/kv/k").await, StatusCode::NOT_FOUND, "not_found").await;
    s.stop().await;
}

pub async fn unknown_routes_and_wrong_methods_answer_json(s: Server) {
    // A missing key and an unknown endpoint are both 404s, told apart by code.
    expect_error(
        s.get("/v1/kv/missing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for path in ["/nope", "/v1/kvx", "/v2/kv/missing"] {
        expect_error(s.get(path).await, StatusCode::NOT_FOUND, "unknown_route").await;
    }
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
    for response in [
        s.delete("/v1/kv").await,
        s.client.post(s.url("/health")).send().await.unwrap(),
    ] {
        expect_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
    s.stop().await;
}

pub async fn health_and_cluster(s: Server) {
    let health: Value = s.get("/health").await.json().await.unwrap();
    assert_eq!(health, json!({"status": "ok", "node_id": NODE_ID}));
    let cluster: Value = s.get("/v1/cluster").await.json().await.unwrap();
    assert_eq!(cluster["this_node"], NODE_ID);
    assert_eq!(cluster["shards"].as_array().unwrap().len(), SHARDS as usize);
    s.stop().await;
}

async fn txn(s: &Server, body: Value) -> reqwest::Response {
    s.client
        .post(s.url("/v1/txn"))
        .json(&body)
        .send()
        .await
        .expect("POST /v1/txn")
}

async fn txn_ok(s: &Server, body: Value) -> Vec<Value> {
    let response = txn(s, body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    let reply: Value = response.json().await.expect("JSON reply");
    reply["results"].as_array().expect("results").clone()
}

pub async fn transactions_apply_atomically(s: Server) {
    // Every op sees the ones before it; all take the transaction's one version.
    let results = txn_ok(
        &s,
        json!({"ops": [
            {"op": "put", "key": "{t}a", "value": "1"},
            {"op": "incr", "key": "{t}a", "by": 4},
            {"op": "get", "key": "{t}a"},
            {"op": "append", "key": "{t}b", "value": "xy"},
            {"op": "get", "key": "{t}missing"},
            {"op": "delete", "key": "{t}b"},
        ]}),
    )
    .await;
    let version = results[0]["version"]
        .as_u64()
        .expect("a put answers its version");
    assert_eq!(results[1], json!({"value": 5}));
    assert_eq!(results[2], json!({"value": "5", "version": version}));
    assert_eq!(results[3], json!({"length": 2}));
    assert_eq!(results[4], json!({"value": null}));
    assert_eq!(results[5], json!({"deleted": true}));
    assert_eq!(s.get("/v1/kv/%7Bt%7Da").await.text().await.unwrap(), "5");
    assert_eq!(
        s.get("/v1/kv/%7Bt%7Db").await.status(),
        StatusCode::NOT_FOUND
    );

    // Compare: applied only while every compared key has the given version (0: absent).
    let guarded = |a_version: u64| {
        json!({
            "compare": [{"key": "{t}a", "version": a_version}, {"key": "{t}new", "version": 0}],
            "ops": [{"op": "put", "key": "{t}new", "value": "created", "ttl_ms": 60000}],
        })
    };
    let error = expect_error(
        txn(&s, guarded(version + 1)).await,
        StatusCode::PRECONDITION_FAILED,
        "compare_failed",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("nothing was applied")
    );
    assert_eq!(
        s.get("/v1/kv/%7Bt%7Dnew").await.status(),
        StatusCode::NOT_FOUND
    );
    let results = txn_ok(&s, guarded(version)).await;
    assert!(results[0]["version"].as_u64().unwrap() > version);
    expect_error(
        txn(&s, guarded(version)).await,
        StatusCode::PRECONDITION_FAILED,
        "compare_failed",
    )
    .await;

    // An op that fails fails alone, with its error in its slot.
    s.put_ok("/v1/kv/%7Bt%7Dtext", "not a number").await;
    let results = txn_ok(
        &s,
        json!({"ops": [
            {"op": "incr", "key": "{t}text"},
            {"op": "put", "key": "{t}after", "value": "1"},
            {"op": "put", "key": "{t}after", "value": "2", "if_absent": true},
        ]}),
    )
    .await;
    assert_eq!(results[0]["error"]["code"], "not_integer", "{results:?}");
    assert!(results[1]["version"].is_u64(), "{results:?}");
    assert_eq!(results[2]["error"]["code"], "key_exists", "{results:?}");
    assert_eq!(
        s.get("/v1/kv/%7Bt%7Dafter").await.text().await.unwrap(),
        "1"
    );

    // Keys of one transaction must share a shard; bad requests are refused before anything
    // runs.
    expect_error(
        txn(
            &s,
            json!({"ops": [{"op": "put", "key": "foo", "value": "1"},
                           {"op": "put", "key": "bar", "value": "1"}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "cross_slot",
    )
    .await;
    assert_eq!(s.get("/v1/kv/foo").await.status(), StatusCode::NOT_FOUND);
    for bad in [
        json!({}),
        json!({"ops": [{"op": "frobnicate", "key": "k"}]}),
        json!({"ops": [{"op": "get", "key": "k", "extra": 1}]}),
        json!({"ops": [{"op": "put", "key": "", "value": "v"}]}),
        json!({"ops": [{"op": "put", "key": "k", "value": "v", "if_absent": true, "if_version": 3}]}),
        json!({"ops": [], "compare": [{"key": "k"}]}),
    ] {
        let response = txn(&s, bad.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}
