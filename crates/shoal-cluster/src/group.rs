//! One Raft group on this node, with the two tasks that batch client traffic into it:
//!
//! - the proposer drains queued writes into one log entry (never two writes to one key in
//!   one entry, so a key's version, the entry's index, stays unique per write) and hands it
//!   to Raft without waiting for the previous entry, so many entries are in flight and
//!   share fsyncs;
//! - the read gate coalesces linearizable reads: every read waiting when a round starts
//!   shares one leadership confirmation (see `run_read_gate`), and a read that arrives during
//!   a round waits for the next, so no read is confirmed by a check that began before it did.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::LinearizerOption;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::raft::ClientWriteResult;
use shoal_core::{Error, ShardId, WriteOp, WriteReply};
use shoal_raft::{CallbackResponder, Raft, ShardRequest, ShardResponse, TypeConfig};
use shoal_storage::DiskSpace;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::clock::now_ms;
use crate::disk_guard;

/// Most ops in one log entry.
pub const MAX_OPS_PER_ENTRY: usize = 1024;
/// Most payload bytes in one log entry (a single larger op still goes alone).
pub const MAX_BYTES_PER_ENTRY: usize = 4 * 1024 * 1024;

pub type WriteResult = Result<WriteReply, Error>;

pub struct Proposal {
    pub op: WriteOp,
    pub reply: Option<oneshot::Sender<WriteResult>>,
}

/// A running group: its Raft handle and the queues in front of it.
pub struct Group {
    pub id: ShardId,
    pub raft: Raft,
    proposals: mpsc::Sender<Proposal>,
    reads: mpsc::Sender<oneshot::Sender<Result<(), Error>>>,
    pub key_count: Arc<AtomicU64>,
    max_pending: usize,
    /// True while this node leads the group and is its only voter (see `local_reads_ok`).
    sole_voter_leader: Arc<AtomicBool>,
    /// The leader this replica knows of, kept current from Raft's metrics so routing reads
    /// it without touching the metrics lock.
    leader: Arc<KnownLeader>,
    pub counters: Arc<GroupCounters>,
    node_id: u64,
    /// Free space under the data directory: writes are refused as it runs low.
    disk: Arc<DiskSpace>,
    /// Why the group stopped on this node, once Raft reported it stopped for good.
    failure: Arc<OnceLock<Error>>,
    /// Set while a majority of its voters are too low on disk to take entries.
    pub(crate) quorum_disk: disk_guard::QuorumDisk,
}

/// This node's replicas, indexed by group id (0 is the metadata group; `None` where this
/// node holds no replica): the registry groups are opened into and closed from at runtime,
/// as the cluster map gives this node replicas and takes them away (`replicas.rs`). Shared
/// by the node, the transport's group lookup and the background services.
pub(crate) struct Groups(std::sync::RwLock<Vec<Option<Arc<Group>>>>);

impl Groups {
    pub(crate) fn new(groups: Vec<Option<Group>>) -> Self {
        Self(std::sync::RwLock::new(
            groups.into_iter().map(|g| g.map(Arc::new)).collect(),
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<Group>>>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's replica of `group`, if it holds one.
    pub(crate) fn get(&self, group: ShardId) -> Option<Arc<Group>> {
        self.read().get(group as usize).cloned().flatten()
    }

    pub(crate) fn contains(&self, group: ShardId) -> bool {
        self.read().get(group as usize).is_some_and(Option::is_some)
    }

    /// This node's replicas of every group, the metadata group first.
    pub(crate) fn all(&self) -> Vec<Arc<Group>> {
        self.read().iter().flatten().cloned().collect()
    }

    /// This node's replicas of data shards.
    pub(crate) fn data(&self) -> Vec<Arc<Group>> {
        self.read().iter().skip(1).flatten().cloned().collect()
    }

    /// Registers an opened group; false (and nothing changes) if one is open already.
    pub(crate) fn insert(&self, group: Group) -> bool {
        let mut slots = self.0.write().unwrap_or_else(|e| e.into_inner());
        let index = group.id as usize;
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        if slots[index].is_some() {
            return false;
        }
        slots[index] = Some(Arc::new(group));
        true
    }

    /// Unregisters `group`: requests and the transport no longer find it.
    pub(crate) fn remove(&self, group: ShardId) -> Option<Arc<Group>> {
        let mut slots = self.0.write().unwrap_or_else(|e| e.into_inner());
        slots.get_mut(group as usize).and_then(Option::take)
    }
}

/// What the proposer did, for INFO and tuning: ops per entry shows batching at work.
#[derive(Debug, Default)]
pub struct GroupCounters {
    pub entries: AtomicU64,
    pub ops: AtomicU64,
}

impl Group {
    pub fn start(
        id: ShardId,
        node_id: u64,
        raft: Raft,
        key_count: Arc<AtomicU64>,
        max_pending: usize,
        max_inflight_entries: usize,
        disk: Arc<DiskSpace>,
    ) -> Group {
        let (proposals, proposal_rx) = mpsc::channel(max_pending);
        let (reads, read_rx) = mpsc::channel(max_pending);
        let sole_voter_leader = Arc::new(AtomicBool::new(false));
        let leader = Arc::new(KnownLeader::default());
        let counters = Arc::new(GroupCounters::default());
        let failure = Arc::new(OnceLock::new());
        tokio::spawn(run_proposer(
            id,
            raft.clone(),
            proposal_rx,
            max_inflight_entries,
            counters.clone(),
            failure.clone(),
        ));
        tokio::spawn(run_read_gate(id, raft.clone(), read_rx));
        tokio::spawn(watch_metrics(
            raft.clone(),
            node_id,
            sole_voter_leader.clone(),
            leader.clone(),
        ));
        Group {
            id,
            raft,
            proposals,
            reads,
            key_count,
            max_pending,
            sole_voter_leader,
            leader,
            counters,
            node_id,
            disk,
            failure,
            quorum_disk: disk_guard::QuorumDisk::default(),
        }
    }

    /// Why the group stopped on this node, if Raft stopped it (a storage failure): waiters
    /// whose write was lost with it get this instead of a bare "shutting down".
    pub(crate) fn failure(&self) -> Option<Error> {
        if let Some(known) = self.failure.get() {
            return Some(known.clone());
        }
        let running = self.raft.metrics().borrow_watched().running_state.clone();
        let err = stopped_error(self.id, &running.err()?);
        if matches!(err, Error::ShuttingDown) {
            return None;
        }
        let _ = self.failure.set(err.clone());
        Some(err)
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<u64> {
        self.leader.get()
    }

    /// The leader this replica knows of, with a signal when it changes.
    pub(crate) fn known_leader(&self) -> Arc<KnownLeader> {
        self.leader.clone()
    }

    /// Whether a linearizable read may be answered from local applied state without a
    /// ReadIndex round. True when this node leads the group and is its only voter in both
    /// the effective and the committed membership: then no other node can commit anything,
    /// every acknowledged write is already applied here (writes are acknowledged after
    /// apply), and applied state only moves forward. Startup runs one ReadIndex round per
    /// group before serving, so state from before a restart is applied first.
    pub fn local_reads_ok(&self) -> bool {
        self.sole_voter_leader.load(Ordering::Acquire)
    }

    /// Queues a write now; the returned receiver yields its result once applied.
    pub fn propose(&self, op: WriteOp) -> Result<oneshot::Receiver<WriteResult>, Error> {
        if let Some(failure) = self.failure.get() {
            return Err(failure.clone());
        }
        disk_guard::admit_write(&self.disk, self.node_id, self.id, &op)?;
        self.quorum_disk.check()?;
        let (tx, rx) = oneshot::channel();
        self.proposals
            .try_send(Proposal {
                op,
                reply: Some(tx),
            })
            .map_err(|e| self.queue_error(e))?;
        Ok(rx)
    }

    /// Queues a write whose result nobody waits for (TTL reaping).
    pub fn propose_detached(&self, op: WriteOp) -> Result<(), Error> {
        disk_guard::admit_write(&self.disk, self.node_id, self.id, &op)?;
        self.quorum_disk.check()?;
        self.proposals
            .try_send(Proposal { op, reply: None })
            .map_err(|e| self.queue_error(e))
    }

    /// Queues a linearizable-read confirmation; resolves once this node's applied state
    /// reflects every write that completed before the call.
    pub fn read_barrier(&self) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.reads.try_send(tx).map_err(|e| self.queue_error(e))?;
        Ok(rx)
    }

    fn queue_error<T>(&self, e: mpsc::error::TrySendError<T>) -> Error {
        match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded {
                shard: self.id,
                limit: self.max_pending,
            },
            mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// This node's id (the replica's id in the group).
    pub fn node_id(&self) -> u64 {
        self.node_id
    }
}

/// Maps a failed proposal to what the client should do.
fn write_error(shard: ShardId, e: &ClientWriteError<TypeConfig>) -> Error {
    match e {
        ClientWriteError::ForwardToLeader(f) => match f.leader_id {
            Some(leader) => Error::NotLeader { shard, leader },
            None => Error::NoLeader { shard },
        },
        other => Error::Indeterminate(format!("shard {shard}: {other}")),
    }
}

fn fatal_error<E: std::fmt::Display>(shard: ShardId, e: &RaftError<TypeConfig, E>) -> Error {
    match e {
        RaftError::Fatal(fatal) => stopped_error(shard, fatal),
        RaftError::APIError(api) => Error::Internal(format!("shard {shard}: {api}")),
    }
}

/// A group that stopped on this node for good: why, and what brings it back.
fn stopped_error(shard: ShardId, fatal: &Fatal<TypeConfig>) -> Error {
    match fatal {
        Fatal::StorageError(e) => Error::Storage(format!(
            "shard {shard} stopped on this node after a storage failure ({e}); fix the cause (a full disk?) and restart the node"
        )),
        Fatal::Panicked => Error::Internal(format!(
            "shard {shard} stopped on this node after a panic; restart the node"
        )),
        Fatal::Stopped => Error::ShuttingDown,
    }
}

/// The leader a replica knows of (0: none), and a signal for requests waiting out an
/// election: they retry as soon as a leader is known instead of at their next backoff step.
#[derive(Debug, Default)]
pub(crate) struct KnownLeader {
    id: AtomicU64,
    changed: Notify,
}

impl KnownLeader {
    pub(crate) fn get(&self) -> Option<u64> {
        match self.id.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    fn set(&self, id: Option<u64>) {
        let id = id.unwrap_or(0);
        if self.id.swap(id, Ordering::AcqRel) != id {
            self.changed.notify_waiters();
        }
    }

    /// Completes at the next change of leader (registered when first polled).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Keeps `flag` equal to "this node leads and is the only voter", and `leader` equal to
/// the leader this replica knows of.
async fn watch_metrics(raft: Raft, node_id: u64, flag: Arc<AtomicBool>, leader: Arc<KnownLeader>) {
    let mut rx = raft.server_metrics();
    loop {
        let ok = {
            let m = rx.borrow_watched();
            leader.set(m.current_leader);
            let only_me = |ids: &mut dyn Iterator<Item = u64>| {
                let ids: Vec<u64> = ids.collect();
                ids == [node_id]
            };
            m.current_leader == Some(node_id)
                && only_me(&mut m.membership_config.voter_ids())
                && only_me(&mut m.committed_membership_config.voter_ids())
        };
        flag.store(ok, Ordering::Release);
        if rx.changed().await.is_err() {
            flag.store(false, Ordering::Release);
            leader.set(None);
            return;
        }
    }
}

async fn run_proposer(
    id: ShardId,
    raft: Raft,
    mut rx: mpsc::Receiver<Proposal>,
    max_inflight: usize,
    counters: Arc<GroupCounters>,
    failure: Arc<OnceLock<Error>>,
) {
    // Bounding entries in flight lets requests that arrive meanwhile gather into the next
    // entry: fewer, fuller entries cost less per op than many small ones.
    let inflight = Arc::new(Semaphore::new(max_inflight.max(1)));
    let mut carry: Option<Proposal> = None;
    // Keys of the entry being built, reused across entries to keep its allocation.
    let mut keys: HashSet<Bytes> = HashSet::new();
    loop {
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        keys.clear();
        let mut has_flush = false;
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(p) = next.take() {
            let is_flush = matches!(p.op, WriteOp::Flush);
            let op_keys: Vec<Bytes> = p.op.keys().into_iter().cloned().collect();
            // A flush touches every key, so it shares its entry with nothing.
            let conflict = (is_flush && !ops.is_empty())
                || has_flush
                || op_keys.iter().any(|k| keys.contains(k));
            let size = p.op.payload_bytes();
            if !ops.is_empty() && (conflict || bytes + size > MAX_BYTES_PER_ENTRY) {
                carry = Some(p);
                break;
            }
            keys.extend(op_keys);
            has_flush |= is_flush;
            bytes += size;
            ops.push(p.op);
            replies.push(p.reply);
            if ops.len() >= MAX_OPS_PER_ENTRY {
                break;
            }
            next = rx.try_recv().ok();
        }
        counters.entries.fetch_add(1, Ordering::Relaxed);
        counters.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        let request = ShardRequest {
            now_ms: now_ms(),
            ops,
        };
        // The callback runs where the entry is applied and answers every op of it; if
        // the group stops first, dropping it drops the senders and waiters see shutdown.
        let responder = CallbackResponder::new(move |outcome: ClientWriteResult<TypeConfig>| {
            drop(permit);
            match outcome {
                Ok(response) => {
                    let ShardResponse { results } = response.data;
                    debug_assert_eq!(results.len(), replies.len());
                    for (reply, result) in replies.into_iter().zip(results) {
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                }
                Err(e) => {
                    let err = write_error(id, &e);
                    for reply in replies.into_iter().flatten() {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
        // Entries are handed to Raft in order, without waiting for earlier ones to commit.
        if let Err(fatal) = raft.client_write_ff(request, Some(responder)).await {
            let err = stopped_error(id, &fatal);
            if !matches!(err, Error::ShuttingDown) && failure.set(err.clone()).is_ok() {
                tracing::error!(shard = id, error = %err, "group stopped on this node");
            }
        }
    }
}

async fn run_read_gate(
    id: ShardId,
    raft: Raft,
    mut rx: mpsc::Receiver<oneshot::Sender<Result<(), Error>>>,
) {
    // Leadership is confirmed by a quorum acknowledgement (a heartbeat or an append reply)
    // younger than half the minimum election timeout; an older one triggers a heartbeat
    // round at once. Followers refuse to elect another leader while the lease of the
    // current one (the election timeout) runs, so a fresh acknowledgement proves no other
    // leader can have committed anything: the read index is then this leader's commit
    // index. Under load acknowledgements arrive continuously and reads need no round trip
    // of their own. Relies on clocks advancing at about the same rate on every node
    // (monotonic clocks include pauses such as SIGSTOP, so a paused leader's acks are old).
    let read_option = LinearizerOption::new(
        Some(Duration::from_millis(
            raft.config().election_timeout_min / 2,
        )),
        true,
    );
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        waiters.push(first);
        while let Ok(more) = rx.try_recv() {
            waiters.push(more);
        }
        let result = match raft.ensure_linearizable(read_option.clone()).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(
                f,
            ))) => Err(match f.leader_id {
                Some(leader) => Error::NotLeader { shard: id, leader },
                None => Error::NoLeader { shard: id },
            }),
            // Leadership cannot be confirmed (no quorum answers): no leader, for now.
            Err(RaftError::APIError(openraft::error::LinearizableReadError::QuorumNotEnough(
                _,
            ))) => Err(Error::NoLeader { shard: id }),
            Err(e) => Err(fatal_error(id, &e)),
        };
        for waiter in waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}
