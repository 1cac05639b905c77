//! The answering side of the peer transport: accepts peers' connections, checks who they
//! are before the router's link to that peer takes them up, and answers each request from
//! a peer with this node's groups or its command executor.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openraft::storage::Snapshot;
use shoal_core::map::NodeStatus;
use shoal_core::{Command, Consistency, Error, Reply, ShardId};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::client::{HELLO_TIMEOUT, PeerRouter, TransportCounters, refuse};
use super::connection::Offer;
use super::faults::Faults;
use super::stream::{PeerStream, accept as accept_stream, identity_mismatch};
use super::wire::{
    Frame, GUEST, Hello, HelloReply, MAX_GUEST_REQUEST_BYTES, MAX_HELLO_BYTES, PROTOCOL_VERSION,
    Request, RequestFrame, Response, ResponseFrame, SnapshotChunk, decode, encode,
    read_frame_within, write_frame,
};
use crate::{Raft, SnapshotFile};

/// What the transport needs from the node it serves.
pub trait PeerHandler: Send + Sync + 'static {
    /// This node's replica of `group`, if it has one open.
    fn group(&self, group: ShardId) -> Option<Raft>;
    /// Runs `command` on `shard` here, without forwarding it further. Called in the order
    /// requests arrive on a connection; must order the command before returning.
    fn forward(
        &self,
        shard: ShardId,
        command: Command,
        consistency: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>>;
    fn status(&self) -> NodeStatus;
    /// Why this node's replica of `group` refuses to take part in elections right now,
    /// if it does (see shoal-cluster's rejoin guard).
    fn refuses_votes(&self, _group: ShardId) -> Option<String> {
        None
    }
    /// Why this node's replica of `group` refuses log entries and snapshots right now, if
    /// it does (a disk running full). Entry-less AppendEntries (heartbeats, commit index)
    /// are still answered, so the leader keeps its lease.
    fn refuses_entries(&self, _group: ShardId) -> Option<String> {
        None
    }
    /// Why this node cannot install a received snapshot of `bytes` for `group` now, if
    /// it cannot (not enough disk for the copy it keeps and the import).
    fn refuses_snapshot_install(&self, _group: ShardId, _bytes: u64) -> Option<String> {
        None
    }
    /// A node that believes it leads `group` just sent this node's replica entries or a
    /// snapshot chunk.
    fn on_leader_contact(&self, _group: ShardId) {}
    /// Answers a cluster administration request from `from` (`guest`: from a node that is
    /// not a member, over a guest connection). The payload's encoding is the caller's.
    fn admin(
        &self,
        _from: u64,
        _guest: Option<GuestIdentity>,
        _request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        Box::pin(async { Err("this node answers no administration requests".to_string()) })
    }
    /// Takes a gossip message from member `from` (must not block: it runs on the
    /// connection's reader).
    fn gossip(&self, _from: u64, _payload: Bytes) {}
}

/// What a guest's connection shows about who it is: with TLS, the certificate it
/// presented (signed by the cluster CA, or the handshake would have failed).
#[derive(Debug, Clone)]
pub struct GuestIdentity {
    certificate: Option<Vec<u8>>,
}

impl GuestIdentity {
    fn of(stream: &PeerStream) -> Self {
        let certificate = match stream {
            tokio_util::either::Either::Right(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
            tokio_util::either::Either::Left(_) => None,
        };
        Self { certificate }
    }

    /// Why this guest may not claim peer address `addr`, if it may not: with TLS its
    /// certificate must name the address's host, as a member's must.
    pub fn mismatch(&self, addr: &str) -> Option<String> {
        let cert = self.certificate.as_ref()?;
        let cert = shoal_tls::rustls::pki_types::CertificateDer::from(cert.as_slice());
        shoal_tls::check_peer_identity(&cert, addr).err()
    }
}

/// Who this server is and where it keeps snapshots being received.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub me: u64,
    pub faults: Faults,
    pub incoming_snapshot_dir: PathBuf,
    /// Where Raft requests are handled: the runtime the groups run on.
    pub raft_runtime: tokio::runtime::Handle,
}

/// A snapshot being received: chunks are appended in order, then it is installed.
struct Incoming {
    path: PathBuf,
    file: std::fs::File,
    next_offset: u64,
}

/// Most peer connections accepted at once that have not finished their hello. Real peers
/// open one or two connections each, once; the rest wait a few hundred milliseconds.
const MAX_UNINTRODUCED: usize = 64;

/// Answers the peers' requests on this node; shared by every connection.
pub struct Responder {
    config: ServerConfig,
    handler: Arc<dyn PeerHandler>,
    incoming: Mutex<HashMap<(u64, ShardId), Incoming>>,
    raft_runtime: tokio::runtime::Handle,
    stopped: watch::Receiver<bool>,
    counters: Arc<TransportCounters>,
}

impl Responder {
    /// Starts handling one request from `from`; its answer goes to `answers` once ready.
    /// Forwarded commands are ordered here, in arrival order, before anything awaits.
    pub(super) fn dispatch(
        self: &Arc<Self>,
        from: u64,
        request: RequestFrame,
        answers: mpsc::Sender<Vec<u8>>,
        permit: OwnedSemaphorePermit,
    ) {
        let RequestFrame { id, body } = request;
        let respond = move |body: Result<Response, String>| async move {
            match encode(&Frame::Response(ResponseFrame { id, body })) {
                Ok(frame) => {
                    let _ = answers.send(frame).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a peer response"),
            }
            drop(permit);
        };
        let me = self.config.me;
        if *self.stopped.borrow() {
            tokio::spawn(respond(Err(format!("node {me} is shutting down"))));
            return;
        }
        if self.config.faults.is_blocked(from) {
            tokio::spawn(respond(Err(format!(
                "node {me} is cut off from node {from} by fault injection"
            ))));
            return;
        }
        match body {
            Request::Forward {
                shard,
                command,
                consistency,
            } => {
                let fut = self.handler.forward(shard, command, consistency);
                tokio::spawn(async move { respond(Ok(Response::Forward(fut.await))).await });
            }
            Request::Status => {
                let status = self.handler.status();
                tokio::spawn(respond(Ok(Response::Status(status))));
            }
            Request::Gossip(payload) => {
                self.handler.gossip(from, payload);
                tokio::spawn(respond(Ok(Response::Gossip)));
            }
            Request::Admin(payload) => {
                let fut = self.handler.admin(from, None, payload);
                tokio::spawn(async move { respond(fut.await.map(Response::Admin)).await });
            }
            other => {
                if let Request::AppendEntries { rpc, .. } = &other {
                    self.counters
                        .append_entries_received
                        .fetch_add(1, Ordering::Relaxed);
                    if rpc.entries.is_empty() {
                        self.counters
                            .append_entries_empty
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                let responder = self.clone();
                spawn_in_order(&self.raft_runtime, async move {
                    respond(handle_raft(&responder, from, other).await).await
                });
            }
        }
    }
}

/// Runs `task` here until it first waits, then as a task on `runtime`.
///
/// A leader keeps several AppendEntries of one group in flight to a follower
/// (`group_network`), and the follower's Raft must see them in the order they were sent: one
/// that overtakes its predecessor finds a gap in the log, is refused as a conflict, and
/// restarts replication. Spawned tasks start in no set order (tokio runs the newest first),
/// but everything `handle_raft` does before its first wait, up to and including queueing
/// the request into the group's Raft channel (a bounded channel whose waiting senders are
/// served first come, first served), happens here, in the order the connection read the
/// requests. The rest (waiting for the follower's fsync) runs as a task.
fn spawn_in_order<F>(runtime: &tokio::runtime::Handle, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut task = Box::pin(task);
    // The task is polled again on `runtime` with a real waker, which replaces this one.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if task.as_mut().poll(&mut cx).is_pending() {
        runtime.spawn(task);
    }
}

/// Answers the peers' requests (on every connection to them, whichever node opened it)
/// through `router` from now on, and returns the loop that accepts peer connections until
/// `shutdown` turns true.
pub fn serve(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<dyn PeerHandler>,
    router: PeerRouter,
    mut shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    if let Err(e) = std::fs::create_dir_all(&config.incoming_snapshot_dir) {
        tracing::error!(error = %e, "cannot create the incoming snapshot directory");
    }
    router.set_responder(Arc::new(Responder {
        raft_runtime: config.raft_runtime.clone(),
        config,
        handler,
        incoming: Mutex::new(HashMap::new()),
        stopped: shutdown.clone(),
        counters: router.counters().clone(),
    }));
    // Connections that have not said who they are yet: each may hold a task, a socket and up
    // to MAX_HELLO_BYTES for HELLO_TIMEOUT, so anyone who can reach the port is bounded.
    let unintroduced = Arc::new(tokio::sync::Semaphore::new(MAX_UNINTRODUCED));
    async move {
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = until_stopped(&mut shutdown) => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let Ok(permit) = unintroduced.clone().try_acquire_owned() else {
                            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                                last_warning = Some(std::time::Instant::now());
                                tracing::warn!(%addr, "{MAX_UNINTRODUCED} peer connections are already waiting for their hello; closing new ones until they finish (a flood on the peer port?)");
                            }
                            continue;
                        };
                        let router = router.clone();
                        tokio::spawn(async move {
                            let tls = router.options().tls.clone();
                            let secured = tokio::time::timeout(HELLO_TIMEOUT, accept_stream(stream, tls.as_ref())).await;
                            let stream = match secured {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(why)) => {
                                    // Refused before any frame is read.
                                    tracing::warn!(%addr, reason = %why, "refused a peer connection");
                                    return;
                                }
                                Err(_) => {
                                    tracing::warn!(%addr, "refused a peer connection: no TLS handshake within {} s", HELLO_TIMEOUT.as_secs());
                                    return;
                                }
                            };
                            let introduced = introduce(stream, &router).await;
                            drop(permit);
                            if let Err(e) = introduced {
                                tracing::debug!(%addr, error = %e, "refused a peer connection");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a peer connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// Reads and checks a new connection's hello, then hands the connection to the link to
/// the peer that opened it.
async fn introduce(mut stream: PeerStream, router: &PeerRouter) -> Result<(), String> {
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame_within(&mut stream, MAX_HELLO_BYTES),
    )
    .await
    .map_err(|_| format!("no hello within {} s", HELLO_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?
    .ok_or("closed before hello")?;
    let hello: Hello = decode(&hello)?;
    let me = router.me();
    if hello.to == GUEST && hello.version == PROTOCOL_VERSION {
        return serve_guest(stream, hello, router).await;
    }
    let refusal = if hello.version != PROTOCOL_VERSION {
        Some(format!(
            "peer protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
            hello.version
        ))
    } else if hello.cluster_id != router.cluster_id() {
        Some(format!(
            "this node belongs to cluster {}, not {}",
            router.cluster_id(),
            hello.cluster_id
        ))
    } else if hello.to != me {
        Some(format!(
            "this is node {me}, not node {}: check --initial-cluster",
            hello.to
        ))
    } else if hello.from == me || !router.knows(hello.from) {
        Some(format!(
            "node {me} knows no peer with id {}: check --initial-cluster",
            hello.from
        ))
    } else if let Some(why) = identity_mismatch(&stream, router.addr(hello.from).as_deref()) {
        Some(format!("node {} is refused: {why}", hello.from))
    } else {
        None
    };
    let offer = Offer { stream };
    match refusal {
        Some(why) => {
            tracing::warn!(from = hello.from, reason = %why, "refused a peer connection");
            refuse(offer, why.clone()).await;
            Err(why)
        }
        None => {
            router.offer(hello.from, offer);
            Ok(())
        }
    }
}

/// A node that is not a member (yet) asks one administration question: welcomed if it
/// names no cluster or this one, answered, then disconnected.
async fn serve_guest(
    mut stream: PeerStream,
    hello: Hello,
    router: &PeerRouter,
) -> Result<(), String> {
    let identity = GuestIdentity::of(&stream);
    let offer = Offer { stream };
    if !hello.cluster_id.is_empty() && hello.cluster_id != router.cluster_id() {
        let why = format!(
            "this node belongs to cluster {}, not {}",
            router.cluster_id(),
            hello.cluster_id
        );
        refuse(offer, why.clone()).await;
        return Err(why);
    }
    let Some(responder) = router.responder() else {
        let why = format!("node {} is not serving yet", router.me());
        refuse(offer, why.clone()).await;
        return Err(why);
    };
    stream = offer.stream;
    let exchange = async {
        write_frame(&mut stream, &encode(&HelloReply::Welcome)?)
            .await
            .map_err(|e| e.to_string())?;
        let frame = read_frame_within(&mut stream, MAX_GUEST_REQUEST_BYTES)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the guest closed the connection before its request")?;
        let Frame::Request(RequestFrame { id, body }) = decode(&frame)? else {
            return Err("a guest must send a request".to_string());
        };
        let Request::Admin(payload) = body else {
            return Err("a guest may only send an administration request".to_string());
        };
        let body = responder
            .handler
            .admin(hello.from, Some(identity), payload)
            .await
            .map(Response::Admin);
        write_frame(
            &mut stream,
            &encode(&Frame::Response(ResponseFrame { id, body }))?,
        )
        .await
        .map_err(|e| e.to_string())
    };
    tokio::time::timeout(GUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "guest exchange did not finish within {} s",
                GUEST_TIMEOUT.as_secs()
            )
        })?
}

/// How long a guest connection may last, its request and the answer included (an
/// admission waits for a metadata write).
const GUEST_TIMEOUT: Duration = Duration::from_secs(20);

async fn handle_raft(shared: &Responder, from: u64, request: Request) -> Result<Response, String> {
    let group_id = match &request {
        Request::AppendEntries { group, .. }
        | Request::Vote { group, .. }
        | Request::PreVote { group, .. }
        | Request::TransferLeader { group, .. } => *group,
        Request::Snapshot(chunk) => chunk.group,
        Request::Forward { .. } | Request::Status | Request::Admin(_) | Request::Gossip(_) => {
            unreachable!("handled by the caller")
        }
    };
    // A replica that may have lost entries stays out of elections, including one a
    // leader hands it (see `refuses_votes`).
    if matches!(
        request,
        Request::Vote { .. } | Request::PreVote { .. } | Request::TransferLeader { .. }
    ) && let Some(why) = shared.handler.refuses_votes(group_id)
    {
        return Err(why);
    }
    let carries_data = match &request {
        Request::AppendEntries { rpc, .. } => !rpc.entries.is_empty(),
        Request::Snapshot(_) => true,
        _ => false,
    };
    if carries_data && let Some(why) = shared.handler.refuses_entries(group_id) {
        return Err(why);
    }
    if matches!(
        request,
        Request::AppendEntries { .. } | Request::Snapshot(_)
    ) {
        shared.handler.on_leader_contact(group_id);
    }
    let raft = shared
        .handler
        .group(group_id)
        .ok_or_else(|| format!("group {group_id} is not open on node {}", shared.config.me))?;
    match request {
        Request::AppendEntries { rpc, .. } => {
            let response = raft.append_entries(rpc).await.map_err(|e| e.to_string())?;
            if response.is_conflict() {
                shared
                    .counters
                    .append_entries_conflicts
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(Response::AppendEntries(response))
        }
        Request::Vote { rpc, .. } => raft
            .vote(rpc)
            .await
            .map(Response::Vote)
            .map_err(|e| e.to_string()),
        Request::PreVote { rpc, .. } => raft
            .pre_vote(rpc)
            .await
            .map(Response::Vote)
            .map_err(|e| e.to_string()),
        Request::Snapshot(chunk) => receive_chunk(shared, from, &raft, chunk).await,
        Request::TransferLeader { req, .. } => raft
            .handle_transfer_leader(req)
            .await
            .map(Response::TransferLeader)
            .map_err(|e| e.to_string()),
        Request::Forward { .. } | Request::Status | Request::Admin(_) | Request::Gossip(_) => {
            unreachable!("handled by the caller")
        }
    }
}

/// Appends one chunk to the snapshot being received from `from` for its group; the last
/// chunk installs it. The file's own checksum is verified when the state machine imports it.
async fn receive_chunk(
    shared: &Responder,
    from: u64,
    raft: &Raft,
    chunk: SnapshotChunk,
) -> Result<Response, String> {
    let key = (from, chunk.group);
    let dir = shared.config.incoming_snapshot_dir.clone();
    let receiving = {
        let mut incoming = shared.incoming.lock().expect("incoming lock");
        if chunk.offset == 0 {
            let path = dir.join(format!("group-{}-from-{from}.snap", chunk.group));
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            incoming.insert(
                key,
                Incoming {
                    path,
                    file,
                    next_offset: 0,
                },
            );
        }
        let Some(receiving) = incoming.get_mut(&key) else {
            return Err(format!(
                "snapshot chunk at offset {} of group {} arrived without its start",
                chunk.offset, chunk.group
            ));
        };
        if receiving.next_offset != chunk.offset {
            let expected = receiving.next_offset;
            incoming.remove(&key);
            return Err(format!(
                "snapshot chunk at offset {} of group {}, expected offset {expected}",
                chunk.offset, chunk.group
            ));
        }
        // Chunks are at most a few MiB; writing them under the lock keeps the file and its
        // offset consistent without a second lock.
        if let Err(e) = receiving.file.write_all(&chunk.data) {
            incoming.remove(&key);
            return Err(format!("cannot write a received snapshot: {e}"));
        }
        receiving.next_offset += chunk.data.len() as u64;
        if !chunk.done {
            return Ok(Response::Snapshot(None));
        }
        incoming.remove(&key).expect("present")
    };
    // Checked before installing: a write failing for lack of space during the import
    // would stop every group on the node. The leader sends it again later.
    if let Some(why) = shared
        .handler
        .refuses_snapshot_install(chunk.group, receiving.next_offset)
    {
        let _ = std::fs::remove_file(&receiving.path);
        return Err(why);
    }
    // An fsync of a large file takes a while: off the runtime that answers peers.
    let path = receiving.path.clone();
    tokio::task::spawn_blocking(move || receiving.file.sync_all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot sync a received snapshot: {e}"))?;
    let snapshot = Snapshot {
        meta: chunk.meta,
        snapshot: SnapshotFile { path: path.clone() },
    };
    let result = raft.install_full_snapshot(chunk.vote, snapshot).await;
    let _ = std::fs::remove_file(&path);
    if result.is_ok() {
        tracing::info!(
            group = chunk.group,
            from,
            bytes = chunk.offset + chunk.data.len() as u64,
            "installed a snapshot streamed from a peer"
        );
    }
    result
        .map(|r| Response::Snapshot(Some(r)))
        .map_err(|e| e.to_string())
}

async fn until_stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod guest_tests {
    use super::GuestIdentity;

    #[test]
    fn a_guest_may_claim_only_an_address_its_certificate_names() {
        let ca = shoal_tls::DevCa::new("test CA").unwrap();
        let issued = ca.issue("node9", &["127.0.0.2", "node9.example"]).unwrap();
        let der = rustls_pemfile_der(&issued.cert_pem);
        let guest = GuestIdentity {
            certificate: Some(der),
        };
        assert_eq!(guest.mismatch("127.0.0.2:7000"), None);
        assert_eq!(guest.mismatch("node9.example:7000"), None);
        let why = guest.mismatch("127.0.0.1:7000").expect("another address");
        assert!(why.contains("127.0.0.1"), "{why}");
        // Without TLS there is no certificate to hold a guest to.
        let plain = GuestIdentity { certificate: None };
        assert_eq!(plain.mismatch("127.0.0.1:7000"), None);
    }

    /// The DER of the first certificate in `pem`.
    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, pem).unwrap();
        shoal_tls::read_certs("--tls-cert", &path).unwrap()[0].to_vec()
    }
}
