//! The answering side of the peer transport: accepts peers' connections, checks who they
//! are, and hands each request to this node's groups or to its command executor.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::storage::Snapshot;
use shoal_core::map::NodeStatus;
use shoal_core::{Command, Consistency, Error, Reply, ShardId};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::faults::Faults;
use super::wire::{
    Hello, HelloReply, PROTOCOL_VERSION, READ_BUFFER_BYTES, Request, RequestFrame, Response,
    ResponseFrame, SnapshotChunk, decode, encode, read_frame, write_frame,
};
use crate::{Raft, SnapshotFile};

/// How long a new connection may take to introduce itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// A node that believes it leads `group` just sent this node's replica entries or a
    /// snapshot chunk.
    fn on_leader_contact(&self, _group: ShardId) {}
}

/// Who this server is and where it keeps snapshots being received.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub me: u64,
    pub cluster_id: String,
    pub faults: Faults,
    pub incoming_snapshot_dir: PathBuf,
    pub max_inflight_per_connection: usize,
}

/// A snapshot being received: chunks are appended in order, then it is installed.
struct Incoming {
    path: PathBuf,
    file: std::fs::File,
    next_offset: u64,
}

struct Shared {
    config: ServerConfig,
    handler: Arc<dyn PeerHandler>,
    incoming: Mutex<HashMap<(u64, ShardId), Incoming>>,
}

/// Accepts peer connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<dyn PeerHandler>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = std::fs::create_dir_all(&config.incoming_snapshot_dir) {
        tracing::error!(error = %e, "cannot create the incoming snapshot directory");
    }
    let stop_signal = shutdown.clone();
    let shared = Arc::new(Shared {
        config,
        handler,
        incoming: Mutex::new(HashMap::new()),
    });
    loop {
        tokio::select! {
            _ = until_stopped(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let (shared, shutdown) = (shared.clone(), stop_signal.clone());
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, shared, shutdown).await {
                            tracing::debug!(%addr, error = %e, "peer connection ended");
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

async fn serve_connection(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| "no hello within 5 s".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("closed before hello")?;
    let hello: Hello = decode(&hello)?;
    let config = &shared.config;
    let refusal = if hello.version != PROTOCOL_VERSION {
        Some(format!(
            "peer protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
            hello.version
        ))
    } else if hello.cluster_id != config.cluster_id {
        Some(format!(
            "this node belongs to cluster {}, not {}",
            config.cluster_id, hello.cluster_id
        ))
    } else if hello.to != config.me {
        Some(format!(
            "this is node {}, not node {}: check --initial-cluster",
            config.me, hello.to
        ))
    } else {
        None
    };
    let reply = match &refusal {
        Some(why) => HelloReply::Refused(why.clone()),
        None => HelloReply::Welcome,
    };
    write_frame(&mut stream, &encode(&reply)?)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(why) = refusal {
        tracing::warn!(from = hello.from, reason = %why, "refused a peer connection");
        return Err(why);
    }
    let from = hello.from;
    let (read_half, write_half) = stream.into_split();
    // Buffered: a frame read straight off the socket costs two reads or more (length, then
    // body); under load one read now takes every frame that has arrived.
    let mut read_half = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let limit = config.max_inflight_per_connection.max(1);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(limit);
    let writer = tokio::spawn(async move {
        let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
        while let Some(frame) = out_rx.recv().await {
            writer.write_all(&frame).await?;
            while let Ok(frame) = out_rx.try_recv() {
                writer.write_all(&frame).await?;
            }
            writer.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let permits = Arc::new(Semaphore::new(limit));
    let result = loop {
        let frame = tokio::select! {
            _ = until_stopped(&mut shutdown) => break Ok(()),
            frame = read_frame(&mut read_half) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        let RequestFrame { id, body } = match decode(&frame) {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        let out_tx = out_tx.clone();
        let respond = move |body: Result<Response, String>| async move {
            match encode(&ResponseFrame { id, body }) {
                Ok(frame) => {
                    let _ = out_tx.send(frame).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a peer response"),
            }
            drop(permit);
        };
        if shared.config.faults.is_blocked(from) {
            tokio::spawn(respond(Err(format!(
                "node {} is cut off from node {from} by fault injection",
                shared.config.me
            ))));
            continue;
        }
        // Forwarded commands are ordered here, in arrival order, before anything awaits.
        let work: BoxFuture<'static, Result<Response, String>> = match body {
            Request::Forward {
                shard,
                command,
                consistency,
            } => {
                let fut = shared.handler.forward(shard, command, consistency);
                Box::pin(async move { Ok(Response::Forward(fut.await)) })
            }
            Request::Status => {
                let status = shared.handler.status();
                Box::pin(async move { Ok(Response::Status(status)) })
            }
            other => {
                let shared = shared.clone();
                Box::pin(async move { handle_raft(&shared, from, other).await })
            }
        };
        tokio::spawn(async move { respond(work.await).await });
    };
    drop(out_tx);
    let _ = writer.await;
    result
}

async fn handle_raft(shared: &Shared, from: u64, request: Request) -> Result<Response, String> {
    let group_id = match &request {
        Request::AppendEntries { group, .. }
        | Request::Vote { group, .. }
        | Request::PreVote { group, .. }
        | Request::TransferLeader { group, .. } => *group,
        Request::Snapshot(chunk) => chunk.group,
        Request::Forward { .. } | Request::Status => unreachable!("handled by the caller"),
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
        Request::AppendEntries { rpc, .. } => raft
            .append_entries(rpc)
            .await
            .map(Response::AppendEntries)
            .map_err(|e| e.to_string()),
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
        Request::Forward { .. } | Request::Status => unreachable!("handled by the caller"),
    }
}

/// Appends one chunk to the snapshot being received from `from` for its group; the last
/// chunk installs it. The file's own checksum is verified when the state machine imports it.
async fn receive_chunk(
    shared: &Shared,
    from: u64,
    raft: &Raft,
    chunk: SnapshotChunk,
) -> Result<Response, String> {
    let key = (from, chunk.group);
    let dir = shared.config.incoming_snapshot_dir.clone();
    let path = {
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
        let receiving = incoming.remove(&key).expect("present");
        receiving
            .file
            .sync_all()
            .map_err(|e| format!("cannot sync a received snapshot: {e}"))?;
        receiving.path
    };
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
