//! The RESP conformance suite: drives a server over TCP with the `redis` crate and with raw
//! bytes, checking Redis's reply types and exact error strings.
//!
//! Run by two harnesses that each start a server configured with the constants below:
//! shoal-api's unit tests (`src/resp/tests.rs`, against the in-memory fake node, so the
//! front end is tested alone) and `shoal-api/tests/resp.rs` (against a real node).
//! `resp_suite!(start)` expands to one `#[tokio::test]` per scenario.

mod commands;
mod protocol;
mod transactions;

pub use commands::*;
pub use protocol::*;
pub use transactions::*;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Shards the node under test has; `foo` and `bar` then live in different shards.
pub const SHARDS: u32 = 4;
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const MAX_KEYS_REPLY: usize = 50;
/// Redis 7's slot of `foo`.
const FOO_SLOT: i64 = 12182;
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a harness's `start` is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub allow_flush: bool,
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_flush: true,
            max_connections: 64,
        }
    }
}

/// A running server, as a harness hands it to the suite.
pub struct Server {
    pub addr: SocketAddr,
    /// Completing this stops the server.
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Whatever must live as long as the server (node, data directory).
    pub keep: Box<dyn std::any::Any + Send>,
}

/// One `#[tokio::test]` per scenario, each on a fresh server from `$start(Options)`.
#[macro_export]
macro_rules! resp_suite {
    ($start:path) => {
        $crate::resp_suite!(@tests $start;
            connection_commands, string_commands, key_commands, multi_key_commands_stay_in_one_shard,
            scan_and_keys, flushall, cluster_commands, pipelining_keeps_order, resp3_after_hello,
            inline_commands, malformed_frame_closes_only_that_connection, http_request_closes_the_connection,
            size_limits,
            graceful_shutdown, transactions, watch_makes_exec_conditional,
            mget_sees_transactions_whole);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn flushall_disabled() {
            let options = $crate::resp::Options { allow_flush: false, ..Default::default() };
            $crate::resp::flushall_disabled($start(options).await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn connection_limit() {
            let options = $crate::resp::Options { max_connections: 2, ..Default::default() };
            $crate::resp::connection_limit($start(options).await).await;
        }
    };
    (@tests $start:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::resp::$name($start($crate::resp::Options::default()).await).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Helpers.

async fn connect(addr: SocketAddr) -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("valid url");
    tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("connect")
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// Runs a command that must succeed.
async fn q(con: &mut MultiplexedConnection, args: &[&str]) -> Value {
    match cmd(args).query_async::<Value>(con).await {
        Ok(value) => value,
        Err(e) => panic!("{args:?} failed: {e}"),
    }
}

/// Runs a command that must fail; returns the error line without its `-`.
async fn e(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    error_line(cmd(args).query_async::<Value>(con).await, args)
}

fn error_line<T: std::fmt::Debug>(
    result: redis::RedisResult<T>,
    what: impl std::fmt::Debug,
) -> String {
    match result {
        Ok(value) => panic!("{what:?} should fail, got {value:?}"),
        Err(err) => match (err.code(), err.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            _ => panic!("{what:?} failed without a server error: {err}"),
        },
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A raw TCP client: send bytes, expect exact bytes back.
struct Raw(TcpStream);

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw(TcpStream::connect(addr).await.expect("connect"))
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.expect("send");
    }

    /// Reads exactly `expected.len()` bytes and compares.
    async fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0; expected.len()];
        tokio::time::timeout(TIMEOUT, self.0.read_exact(&mut got))
            .await
            .expect("reply in time")
            .unwrap_or_else(|e| panic!("reading {:?}: {e}", String::from_utf8_lossy(expected)));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Reads until the data ends with `suffix`; returns all of it.
    async fn until(&mut self, suffix: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(suffix) {
            let n = tokio::time::timeout(TIMEOUT, self.0.read(&mut byte))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(
                n > 0,
                "closed before {:?}; got {:?}",
                String::from_utf8_lossy(suffix),
                String::from_utf8_lossy(&got)
            );
            got.push(byte[0]);
        }
        got
    }

    /// The server closes the connection without sending anything more.
    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, self.0.read_to_end(&mut rest))
            .await
            .expect("closed in time");
        // A reset also counts as closed.
        if read.is_ok() {
            assert!(
                rest.is_empty(),
                "unexpected data: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
    }
}

/// A request as a client library encodes it.
fn request(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}
