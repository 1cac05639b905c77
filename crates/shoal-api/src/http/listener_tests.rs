//! The HTTP listener's own defences, over raw TCP against the fake node: JSON bodies on the
//! errors hyper raises before any handler, the header-read, body-read and no-progress
//! timeouts, and the connection limit shared with RESP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HttpConfig, serve_backend};
use crate::ConnectionLimit;
use crate::fake::{FakeConfig, FakeNode};
use shoal_conformance::http::{self as suite, Server};

/// Far longer than any wait below: reaching it is a failure, not a pass.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start(config: HttpConfig) -> (Server, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Arc::new(FakeNode::new(FakeConfig {
        id: suite::NODE_ID,
        shards: suite::SHARDS,
        ..FakeConfig::default()
    }));
    let server = Server::spawn(
        addr,
        |shutdown| serve_backend(listener, node, config, shutdown),
        async {},
    );
    (server, addr)
}

/// Sends `request` and reads until the server closes: the whole answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .map_err(|_| String::from_utf8_lossy(&out[..]).into_owned())
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status and the JSON error code of a raw response.
fn status_and_code(response: &str) -> (u16, String) {
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {response:?}"));
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{response}"
    );
    (status, code)
}

#[tokio::test]
async fn errors_raised_before_any_handler_have_json_bodies() {
    let (server, addr) = start(HttpConfig::default()).await;
    let long_uri = format!(
        "GET /v1/kv/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "k".repeat(70_000)
    );
    let big_headers = format!(
        "GET /v1/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "h".repeat(100_000)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> =
        vec![
        (b"GET /v1/kv/a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"GET /v1/kv/\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(), 400, "malformed_request"),
        (
            b"PUT /v1/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            b"PUT /v1/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
            "malformed_request",
        ),
        (big_headers.into_bytes(), 431, "headers_too_large"),
        (long_uri.into_bytes(), 414, "uri_too_long"),
    ];
    for (request, status, code) in cases {
        let response = exchange(addr, &request).await;
        assert_eq!(
            status_and_code(&response),
            (status, code.to_string()),
            "{:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
    }
    // A request hyper parses is still answered by the API.
    let response = exchange(
        addr,
        b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (status, code) = status_and_code(&response);
    assert_eq!((status, code.as_str()), (404, "unknown_route"));
    assert!(response.contains("/v1/txn"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn a_slowloris_is_cut_off_by_the_header_read_timeout() {
    let config = HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let (server, addr) = start(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // Never finishes its headers: the server hangs up (hyper sends a bare 408 or nothing).
    let answer = read_to_close(&mut stream).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A keep-alive connection idle past the same timeout is closed too.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_trickled_past_the_deadline_gets_a_408() {
    let config = HttpConfig {
        body_read_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let (server, addr) = start(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // An endless chunked body: one byte, then nothing more.
    stream
        .write_all(
            b"PUT /v1/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert_eq!(
        status_and_code(&answer),
        (408, "request_timeout".to_string())
    );
    // Nothing was written.
    let response = exchange(
        addr,
        b"GET /v1/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_moves_no_bytes_is_closed() {
    let config = HttpConfig {
        idle_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let (server, addr) = start(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Connected and silent: under the header timeout (30 s), over the idle one.
    let answer = read_to_close(&mut stream).await;
    assert_eq!(answer, "");
    server.stop().await;
}

#[tokio::test]
async fn http_and_resp_share_one_connection_limit() {
    let limit = ConnectionLimit::new(2);
    let config = HttpConfig {
        connections: limit.clone(),
        ..HttpConfig::default()
    };
    let (server, addr) = start(config).await;
    // One place taken by another front end (RESP, in the node), one by an HTTP client.
    let resp_client = limit.try_admit().expect("a place");
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let refused = exchange(addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(
        status_and_code(&refused),
        (503, "too_many_connections".to_string())
    );
    assert!(refused.contains("--max-connections"), "{refused}");
    // A freed place admits the next client.
    drop(resp_client);
    let response = exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.stop().await;
}
