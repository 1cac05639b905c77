//! Runs the HTTP conformance suite (`shoal_conformance::http`) over loopback against the in-memory
//! `FakeNode`, so the whole front end is tested without Raft; `tests/http.rs` runs the same
//! suite against a real node. The scenarios here need a rigged node: injected errors, slow
//! keys, recorded consistency levels, the fake's bounded scans.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use shoal_core::{Consistency, Error, Limits};

use super::{HttpConfig, serve_backend};
use crate::fake::{FakeConfig, FakeNode};
use shoal_conformance::http::{self as suite, Server, expect_error};

/// Keys the fake's scan looks at per call: small, so pages need several calls.
const SCAN_BUDGET: usize = 7;

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
        scan_budget: SCAN_BUDGET,
        ..FakeConfig::default()
    }));
    let backend = node.clone();
    let server = Server::spawn(
        addr,
        |shutdown| serve_backend(listener, backend, HttpConfig::default(), shutdown),
        async {},
    );
    (server, node)
}

async fn start() -> Server {
    start_fake().await.0
}

shoal_conformance::http_suite!(start);

#[tokio::test]
async fn listing_pages_are_cut_short_by_the_scan_bound() {
    let (s, _) = start_fake().await;
    for i in 0..60 {
        s.put_ok(&format!("/v1/kv/p/{i:03}"), "v").await;
    }
    // The default page of 100 is cut short by the bound on node scans per request
    // (8 scans of 7 keys each in the fake): a short page with a cursor is not the end.
    let listing: Value = s.get("/v1/kv").await.json().await.unwrap();
    assert_eq!(listing["items"].as_array().unwrap().len(), 8 * SCAN_BUDGET);
    assert!(listing["next_cursor"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn health_names_a_shard_stopped_on_this_node() {
    let (s, node) = start_fake().await;
    assert_eq!(s.get("/health").await.status(), StatusCode::OK);
    node.fail_group(
        3,
        Error::Storage(
            "shard 3 stopped on this node after a storage failure (Too many open files)".into(),
        ),
    );
    let response = s.get("/health").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["failed_shards"][0]["shard"], 3);
    assert!(
        body["failed_shards"][0]["error"]
            .as_str()
            .unwrap()
            .contains("Too many open files"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn consistency_is_passed_through() {
    let (s, node) = start_fake().await;
    s.put_ok("/v1/kv/k", "v").await;
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
        node.consistencies(),
        [
            Consistency::Linearizable,
            Consistency::Stale,
            Consistency::Linearizable,
            Consistency::Stale
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn node_errors_map_to_statuses_and_headers() {
    let (s, node) = start_fake().await;
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
        node.fail(key, err);
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
    s.stop().await;
}

#[tokio::test]
async fn cluster_is_the_nodes_view() {
    let (s, _) = start_fake().await;
    let cluster: Value = s.get("/v1/cluster").await.json().await.unwrap();
    assert_eq!(cluster["cluster_id"], "fake");
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (mut s, node) = start_fake().await;
    s.put_ok("/v1/kv/slow", "worth the wait").await;
    node.slow("slow", Duration::from_millis(300));
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

/// The attack: a web page's "simple" cross-origin request that writes a key.
#[tokio::test]
async fn browsers_at_other_origins_cannot_write_and_allowed_origins_get_cors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Arc::new(FakeNode::new(FakeConfig::default()));
    let backend = node.clone();
    let config = HttpConfig {
        allowed_origins: vec!["https://app.example".to_string()],
        ..HttpConfig::default()
    };
    let s = Server::spawn(
        addr,
        |shutdown| serve_backend(listener, backend, config, shutdown),
        async {},
    );
    let http = reqwest::Client::new();
    let put = async |headers: &[(&'static str, &'static str)]| {
        let mut request = http.put(s.url("/v1/kv/target")).body("written-by-a-page");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    };
    let evil = put(&[
        ("origin", "http://evil.example"),
        ("content-type", "text/plain"),
    ])
    .await;
    let body = expect_error(evil, StatusCode::FORBIDDEN, "cross_origin").await;
    assert!(body.to_string().contains("--http-allow-origin"), "{body}");
    // A form post whose Origin the browser withheld, but which still looks like a browser's.
    let form = put(&[
        ("sec-fetch-site", "cross-site"),
        ("content-type", "application/x-www-form-urlencoded"),
    ])
    .await;
    expect_error(form, StatusCode::FORBIDDEN, "form_content_type").await;
    assert_eq!(s.get("/v1/kv/target").await.status(), StatusCode::NOT_FOUND);

    // DNS rebinding: a page's own name pointed at the node; same-origin reads carry no
    // Origin, but the Host is the page's name.
    let rebound = http
        .get(s.url("/v1/kv/target"))
        .header("host", "rebound.example")
        .send()
        .await
        .unwrap();
    expect_error(rebound, StatusCode::FORBIDDEN, "host_not_allowed").await;

    // curl --data-binary sends a form content type and no browser header: served.
    let curl = put(&[("content-type", "application/x-www-form-urlencoded")]).await;
    assert_eq!(curl.status(), StatusCode::OK);
    // An allowed origin is served, with CORS headers, and its preflight answered.
    let app = put(&[
        ("origin", "https://app.example"),
        ("content-type", "text/plain"),
    ])
    .await;
    assert_eq!(app.status(), StatusCode::OK);
    assert_eq!(
        app.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let preflight = http
        .request(reqwest::Method::OPTIONS, s.url("/v1/kv/target"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    s.stop().await;
}

#[tokio::test]
async fn debug_routes_exist_only_when_enabled() {
    let s = start().await;
    expect_error(
        s.get("/v1/debug/raft-stats").await,
        StatusCode::NOT_FOUND,
        "unknown_route",
    )
    .await;
    s.stop().await;
}
