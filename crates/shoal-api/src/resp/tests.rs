//! Runs the RESP conformance suite (`shoal_conformance::resp`) over real TCP against the in-memory fake
//! node, so the whole front end is tested without Raft. `tests/resp.rs` runs the same
//! suite against a real node.

use std::sync::Arc;

use shoal_core::Limits;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::RespConfig;
use super::listener::serve_backend;
use crate::fake::{FakeConfig, FakeNode};
use shoal_conformance::resp::{self as suite, Options, Server};

async fn start(options: Options) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let limits = Limits {
        max_key_bytes: suite::MAX_KEY_BYTES,
        max_value_bytes: suite::MAX_VALUE_BYTES,
    };
    let node = FakeNode::new(FakeConfig {
        id: 1,
        shards: suite::SHARDS,
        limits,
        allow_flush: options.allow_flush,
        max_keys_reply: suite::MAX_KEYS_REPLY,
        resp_addr: addr.to_string(),
        scan_budget: 25,
        // Replies of one pipeline complete out of order; the connection must reorder them.
        jitter: true,
    });
    let config = RespConfig {
        connections: crate::ConnectionLimit::new(options.max_connections),
        ..RespConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_backend(listener, Arc::new(node), config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop,
        task,
        keep: Box::new(()),
    }
}

shoal_conformance::resp_suite!(start);
