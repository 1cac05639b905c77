//! Two real transports on loopback: one connection per pair, whichever node calls first,
//! and reconnection from either side after a node goes away.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use shoal_core::map::{NodeInfo, NodeStatus};
use shoal_core::{Command, Consistency, Error, Reply, ShardId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::*;
use crate::Raft;

/// A node with no groups that answers status requests with its id.
struct StatusOnly {
    id: u64,
}

impl PeerHandler for StatusOnly {
    fn group(&self, _group: ShardId) -> Option<Raft> {
        None
    }

    fn forward(
        &self,
        shard: ShardId,
        _command: Command,
        _consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        Box::pin(async move { Err(Error::NoLeader { shard }) })
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            map_epoch: 0,
            commands: 0,
            info: NodeInfo {
                id: self.id,
                peer_addr: String::new(),
                resp_addr: String::new(),
                http_addr: String::new(),
                grpc_addr: String::new(),
            },
            replicas: Vec::new(),
            disk: shoal_core::map::DiskStatus {
                free_bytes: u64::MAX,
                reserve_bytes: 0,
            },
            memory: shoal_core::map::MemoryStatus {
                rss_bytes: 0,
                budget_bytes: 0,
            },
        }
    }
}

struct TestNode {
    router: PeerRouter,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    _snapshots: tempfile::TempDir,
}

impl TestNode {
    async fn start(id: u64, listener: TcpListener, peers: &[(u64, String)]) -> TestNode {
        let router = PeerRouter::new(
            id,
            "test-cluster".into(),
            TransportOptions::default(),
            Faults::default(),
            tokio::runtime::Handle::current(),
        );
        for (peer, addr) in peers {
            router.set_addr(*peer, addr.clone());
        }
        let snapshots = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            me: id,
            faults: Faults::default(),
            incoming_snapshot_dir: snapshots.path().to_path_buf(),
            raft_runtime: tokio::runtime::Handle::current(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            config,
            Arc::new(StatusOnly { id }),
            router.clone(),
            stop_rx,
        ));
        TestNode {
            router,
            stop,
            server,
            _snapshots: snapshots,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.router.shutdown();
        self.server.await.unwrap();
    }

    /// `count` status calls to `target` at once; panics unless every one is answered by it.
    async fn ask(&self, target: u64, count: usize) {
        let calls = (0..count).map(|_| {
            self.router
                .call(target, Request::Status, Duration::from_secs(10))
        });
        for answer in futures_util::future::join_all(calls).await {
            match answer {
                Ok(Response::Status(status)) => assert_eq!(status.info.id, target),
                other => panic!("node {} asking node {target}: {other:?}", self.router.me()),
            }
        }
    }

    /// Calls `target` until one call is answered, then asks `count` times. After a peer
    /// restarts, a call fails at once while the link waits to reconnect, and one sent just
    /// before the link saw the old connection close is lost with it.
    async fn reach(&self, target: u64, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .router
                .call(target, Request::Status, Duration::from_secs(10))
                .await
            {
                Ok(_) => break,
                Err(CallError::NotSent(why) | CallError::Lost(why))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(%why, "not connected yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("node {} cannot reach node {target}: {e}", self.router.me()),
            }
        }
        self.ask(target, count).await;
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_calling_at_once_share_one_connection() {
    for round in 0..10 {
        let ((l1, a1), (l2, a2)) = (listener().await, listener().await);
        let n1 = TestNode::start(1, l1, &[(2, a2)]).await;
        let n2 = TestNode::start(2, l2, &[(1, a1)]).await;
        // Both dial at the same moment: one connection must win on both sides, and no
        // call may fail on the way.
        tokio::join!(n1.ask(2, 50), n2.ask(1, 50));
        assert_eq!(
            (
                n1.router.connections_opened(),
                n2.router.connections_opened()
            ),
            (1, 1),
            "round {round}: each node took up exactly one connection"
        );
        assert!(n1.router.is_connected(2) && n2.router.is_connected(1));
        n1.stop().await;
        n2.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reached_again_from_either_side() {
    let ((l1, a1), (l2, a2)) = (listener().await, listener().await);
    let n1 = TestNode::start(1, l1, &[(2, a2.clone())]).await;
    let n2 = TestNode::start(2, l2, &[(1, a1.clone())]).await;
    n1.ask(2, 5).await;
    n2.ask(1, 5).await;
    n2.stop().await;

    // The higher id comes back and calls first: node 1 takes up its new connection.
    let n2 = TestNode::start(2, TcpListener::bind(&a2).await.unwrap(), &[(1, a1.clone())]).await;
    n2.reach(1, 5).await;
    n1.ask(2, 5).await;
    n1.stop().await;

    // The lower id comes back and node 2 calls first: node 2 reaches it again.
    let n1 = TestNode::start(1, TcpListener::bind(&a1).await.unwrap(), &[(2, a2)]).await;
    n2.reach(1, 5).await;
    n1.ask(2, 5).await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_learned_after_start_is_reached_and_may_call_in() {
    let ((l1, a1), (l2, a2)) = (listener().await, listener().await);
    let n1 = TestNode::start(1, l1, &[]).await;
    let n2 = TestNode::start(2, l2, &[(1, a1.clone())]).await;
    match n1
        .router
        .call(2, Request::Status, Duration::from_secs(1))
        .await
    {
        Err(CallError::NotSent(_)) => {}
        other => panic!("node 1 called a node it does not know: {other:?}"),
    }
    assert!(n1.router.learn_addr(2, &a2));
    assert!(
        !n1.router.learn_addr(2, "127.0.0.1:1"),
        "a known address stays"
    );
    assert_eq!(n1.router.addr(2), Some(a2));
    n1.reach(2, 5).await;
    n2.reach(1, 5).await;
    n1.stop().await;
    n2.stop().await;
}
