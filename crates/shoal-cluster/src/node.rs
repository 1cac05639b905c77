//! The node: starts every group over one storage engine, bootstraps the cluster map, and
//! routes each `Command` to the shard that owns its keys.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, SnapshotPolicy};
use shoal_core::command::ScanCursor;
use shoal_core::map::{ClusterMap, ClusterView, NodeView, ShardView};
use shoal_core::shard::{META_GROUP, SlotRange};
use shoal_core::{
    Command, Consistency, Error, Limits, Reply, ShardId, ShardLayout, WriteOp, WriteReply,
};
use shoal_storage::{Engine, EngineOptions};

use crate::bootstrap::{META_LIMITS, bootstrap_map, open_group, wait_leader};
use crate::clock::now_ms;
use crate::group::Group;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub shards: u32,
    pub resp_addr: String,
    pub http_addr: String,
    pub limits: Limits,
    /// Whether FLUSHALL/FLUSHDB may run.
    pub allow_flush: bool,
    /// Most keys KEYS may return before it errors.
    pub max_keys_reply: usize,
}

/// Tunables with defaults; not yet exposed as flags.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Queued writes (and queued reads) per shard before clients get `Overloaded`.
    pub max_pending_per_shard: usize,
    /// Log entries a shard leader keeps in flight at once.
    pub max_inflight_entries: usize,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Log entries between snapshots of a shard.
    pub snapshot_every: u64,
    /// How often the TTL reaper looks for due keys, and how many it deletes per round.
    pub reap_interval: Duration,
    pub reap_batch: usize,
    /// Keys one scan call may examine before returning a partial page.
    pub scan_budget: usize,
    /// How long to wait for a shard to elect itself at start.
    pub startup_timeout: Duration,
    /// Bytes of records cached in memory in front of the storage engine (0 disables).
    pub record_cache_bytes: u64,
    /// Worker threads of the runtime that runs the Raft groups.
    pub raft_threads: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_pending_per_shard: 65_536,
            max_inflight_entries: 4,
            heartbeat_ms: 100,
            election_timeout_ms: (300, 600),
            snapshot_every: 20_000,
            reap_interval: Duration::from_millis(100),
            reap_batch: 1_000,
            scan_budget: 100_000,
            startup_timeout: Duration::from_secs(30),
            record_cache_bytes: EngineOptions::default().record_cache_bytes,
            raft_threads: default_raft_threads(),
        }
    }
}

/// CPU cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Raft runtime threads by default: half the cores, at least 2 (measured on 2 cores: one
/// thread for the groups cost ~15% of write throughput against two).
pub fn default_raft_threads() -> usize {
    (available_cores() / 2).max(2)
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    tuning: Tuning,
    engine: Engine,
    layout: ShardLayout,
    map: ClusterMap,
    /// Indexed by group id: 0 is the metadata group.
    groups: Vec<Group>,
    /// Runs every group's Raft tasks, apart from the front ends' runtime: storage calls
    /// that block (fjall holds its journal lock through a journal rotation) then stall
    /// writes only, while reads keep being served.
    raft_runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    stopped: AtomicBool,
    started: Instant,
    commands: AtomicU64,
}

pub(crate) fn storage_err(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, Error> {
        Self::start_with(config, Tuning::default()).await
    }

    pub async fn start_with(config: NodeConfig, tuning: Tuning) -> Result<Node, Error> {
        if config.id == 0 {
            return Err(Error::Invalid("node id must be 1 or greater".into()));
        }
        let engine_options = EngineOptions {
            record_cache_bytes: tuning.record_cache_bytes,
            ..EngineOptions::default()
        };
        let engine = Engine::open(&config.data_dir, &engine_options).map_err(storage_err)?;
        let raft_config = Arc::new(
            Config {
                cluster_name: "shoal".into(),
                heartbeat_interval: tuning.heartbeat_ms,
                election_timeout_min: tuning.election_timeout_ms.0,
                election_timeout_max: tuning.election_timeout_ms.1,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
                max_in_snapshot_log_to_keep: 1_000,
                ..Default::default()
            }
            .validate()
            .map_err(|e| Error::Invalid(format!("raft config: {e}")))?,
        );

        let raft_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(tuning.raft_threads.max(1))
            .thread_name("shoal-raft")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the raft runtime: {e}")))?;
        let rt = raft_runtime.handle().clone();
        // The metadata group holds shoal's own records (the cluster map), not client data:
        // client size limits do not apply to it.
        let meta = open_group(
            &rt,
            &engine,
            META_GROUP,
            config.id,
            &raft_config,
            META_LIMITS,
            &tuning,
        )
        .await?;
        let map = bootstrap_map(&engine, &meta, &config, &tuning).await?;
        let layout = ShardLayout::from_ranges(map.shards.iter().map(|s| (s.id, s.range)).collect());
        if layout.len() as u32 != config.shards {
            tracing::warn!(
                stored = layout.len(),
                requested = config.shards,
                "--shards differs from the cluster's shard count; the stored count is used"
            );
        }
        let mut groups = vec![meta];
        for shard in &map.shards {
            let group = open_group(
                &rt,
                &engine,
                shard.id,
                config.id,
                &raft_config,
                config.limits,
                &tuning,
            )
            .await?;
            groups.push(group);
        }
        let node = Node {
            inner: Arc::new(Inner {
                config,
                tuning,
                engine,
                layout,
                map,
                groups,
                raft_runtime: std::sync::Mutex::new(Some(raft_runtime)),
                stopped: AtomicBool::new(false),
                started: Instant::now(),
                commands: AtomicU64::new(0),
            }),
        };
        for group in &node.inner.groups[1..] {
            wait_leader(
                group,
                node.inner.config.id,
                node.inner.tuning.startup_timeout,
            )
            .await?;
            // One ReadIndex round: everything committed before a restart is applied before
            // the first read, which local reads (`Group::local_reads_ok`) rely on.
            group
                .read_barrier()?
                .await
                .map_err(|_| Error::ShuttingDown)??;
        }
        tokio::spawn(crate::reaper::run(node.clone()));
        tracing::info!(
            node = node.id(),
            shards = node.inner.layout.len(),
            cluster = %node.inner.map.cluster_id,
            "node ready"
        );
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.inner.config.id
    }

    pub fn limits(&self) -> Limits {
        self.inner.config.limits
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.inner.layout
    }

    pub fn allow_flush(&self) -> bool {
        self.inner.config.allow_flush
    }

    pub fn max_keys_reply(&self) -> usize {
        self.inner.config.max_keys_reply
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Counters for INFO and tuning.
    pub fn stats(&self) -> NodeStats {
        let storage = self.inner.engine.stats();
        let sum = |f: fn(&Group) -> &AtomicU64| {
            self.data_groups()
                .iter()
                .map(|g| f(g).load(Ordering::Relaxed))
                .sum()
        };
        NodeStats {
            commands: self.inner.commands.load(Ordering::Relaxed),
            log_entries_proposed: sum(|g| &g.counters.entries),
            writes_proposed: sum(|g| &g.counters.ops),
            fsyncs: storage.fsyncs,
            fsync_requests: storage.sync_requests,
        }
    }

    pub(crate) fn data_groups(&self) -> &[Group] {
        &self.inner.groups[1..]
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Relaxed)
    }

    fn group(&self, shard: ShardId) -> &Group {
        &self.inner.groups[shard as usize]
    }

    pub fn cluster_view(&self) -> ClusterView {
        let me = self.id();
        let shards = self
            .data_groups()
            .iter()
            .map(|g| {
                let metrics = g.raft.metrics().borrow_watched().clone();
                ShardView {
                    id: g.id,
                    range: self
                        .inner
                        .layout
                        .range_of(g.id)
                        .expect("every group has a range"),
                    replicas: vec![me],
                    leader: metrics.current_leader,
                    last_applied: metrics.last_applied.map_or(0, |id| id.index),
                }
            })
            .collect();
        ClusterView {
            cluster_id: self.inner.map.cluster_id.clone(),
            epoch: self.inner.map.epoch,
            this_node: me,
            nodes: self
                .inner
                .map
                .nodes
                .iter()
                .map(|info| NodeView {
                    info: info.clone(),
                    up: true,
                })
                .collect(),
            shards,
        }
    }

    /// Executes a command. The command is ordered at call time, before the returned future
    /// is polled: two writes submitted in sequence from one task are applied in that order.
    pub fn execute(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        self.inner.commands.fetch_add(1, Ordering::Relaxed);
        let node = self.clone();
        // Everything that orders the command (validation, queueing) happens here, now.
        let submitted = self.submit(command, consistency);
        async move {
            match submitted? {
                Submitted::Ready(reply) => Ok(reply),
                Submitted::Write(rx) => {
                    let result = rx.await.map_err(|_| Error::ShuttingDown)?;
                    result.map(Reply::Write)
                }
                Submitted::Flush(rxs) => {
                    for rx in rxs {
                        rx.await.map_err(|_| Error::ShuttingDown)??;
                    }
                    Ok(Reply::Write(WriteReply::Ok))
                }
                Submitted::Read(barrier, command) => {
                    if let Some(barrier) = barrier {
                        barrier.await.map_err(|_| Error::ShuttingDown)??;
                    }
                    node.read(command, consistency).await
                }
            }
        }
    }

    fn submit(&self, command: Command, consistency: Consistency) -> Result<Submitted, Error> {
        if self.is_stopped() {
            return Err(Error::ShuttingDown);
        }
        let limits = self.limits();
        let barrier = |shard: ShardId| -> Result<Option<_>, Error> {
            let group = self.group(shard);
            match consistency {
                Consistency::Linearizable if !group.local_reads_ok() => {
                    group.read_barrier().map(Some)
                }
                _ => Ok(None),
            }
        };
        match command {
            Command::Write(WriteOp::Flush) => {
                if !self.allow_flush() {
                    return Err(Error::Disabled(
                        "FLUSHALL".into(),
                        "start the node with --allow-flush to enable it".into(),
                    ));
                }
                let rxs = self
                    .data_groups()
                    .iter()
                    .map(|g| g.propose(WriteOp::Flush))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Submitted::Flush(rxs))
            }
            Command::Write(op) => {
                validate_write(&op, &limits)?;
                let shard = self.shard_of(op.keys().into_iter())?;
                Ok(Submitted::Write(self.group(shard).propose(op)?))
            }
            Command::GetMany { ref keys } if keys.is_empty() => {
                Ok(Submitted::Ready(Reply::Records(Vec::new())))
            }
            Command::Get { .. } | Command::GetMany { .. } => {
                let shard = self.point_read_shard(&command)?;
                Ok(Submitted::Read(barrier(shard)?, command))
            }
            Command::Scan { ref cursor, .. } => {
                let shard = self
                    .inner
                    .layout
                    .shard_of_slot(cursor.slot.min(shoal_core::SLOT_COUNT - 1));
                Ok(Submitted::Read(barrier(shard)?, command))
            }
            Command::Count | Command::RandomKey => Ok(Submitted::Read(None, command)),
        }
    }

    /// The shard a GET or a non-empty MGET reads, after the key limits.
    fn point_read_shard(&self, command: &Command) -> Result<ShardId, Error> {
        let limits = self.limits();
        match command {
            Command::Get { key } => {
                limits.check_key(key)?;
                Ok(self.inner.layout.shard_of_key(key))
            }
            Command::GetMany { keys } => {
                keys.iter().try_for_each(|k| limits.check_key(k))?;
                self.shard_of(keys.iter())
            }
            _ => Err(Error::Internal("not a point read".into())),
        }
    }

    /// The one shard all `keys` live in, or `CrossShard`.
    fn shard_of<'a>(&self, mut keys: impl Iterator<Item = &'a Bytes>) -> Result<ShardId, Error> {
        let first = keys
            .next()
            .ok_or_else(|| Error::Invalid("no key given".into()))?;
        let shard = self.inner.layout.shard_of_key(first);
        if keys.all(|k| self.inner.layout.shard_of_key(k) == shard) {
            Ok(shard)
        } else {
            Err(Error::CrossShard)
        }
    }

    /// Answers a read from local applied state (after any barrier).
    /// A live record from local applied state.
    fn get_live(&self, key: &[u8], now: u64) -> Result<Option<shoal_core::Record>, Error> {
        let shard = self.inner.layout.shard_of_key(key);
        Ok(self
            .engine()
            .get_record(shard, key)
            .map_err(storage_err)?
            .filter(|r| !r.is_expired(now)))
    }

    /// Answers a point read (GET, MGET) right away when nothing needs to be awaited: the
    /// read is stale by request, or this node may serve it linearizably from local state
    /// (`Group::local_reads_ok`). `None` means "use `execute`". Saves the future, the
    /// queueing and the wake-up that `execute` costs for the commonest request.
    pub fn try_read_now(
        &self,
        command: &Command,
        consistency: Consistency,
    ) -> Option<Result<Reply, Error>> {
        if self.is_stopped() {
            return None;
        }
        let (keys, single) = match command {
            Command::Get { key } => (std::slice::from_ref(key), true),
            Command::GetMany { keys } if !keys.is_empty() => (keys.as_slice(), false),
            _ => return None,
        };
        let shard = match self.point_read_shard(command) {
            Ok(shard) => shard,
            Err(e) => return Some(Err(e)),
        };
        if consistency == Consistency::Linearizable && !self.group(shard).local_reads_ok() {
            return None;
        }
        let now = now_ms();
        let result = if single {
            self.get_live(&keys[0], now).map(Reply::Record)
        } else {
            keys.iter()
                .map(|k| self.get_live(k, now))
                .collect::<Result<_, _>>()
                .map(Reply::Records)
        };
        self.inner.commands.fetch_add(1, Ordering::Relaxed);
        Some(result)
    }

    async fn read(&self, command: Command, consistency: Consistency) -> Result<Reply, Error> {
        let engine = self.engine();
        let now = now_ms();
        let get = |key: &[u8]| self.get_live(key, now);
        match command {
            Command::Get { key } => Ok(Reply::Record(get(&key)?)),
            Command::GetMany { keys } => Ok(Reply::Records(
                keys.iter().map(|k| get(k)).collect::<Result<_, _>>()?,
            )),
            Command::Scan {
                cursor,
                limit,
                prefix,
                with_values,
            } => {
                self.scan(cursor, limit, prefix, with_values, now, consistency)
                    .await
            }
            Command::Count => Ok(Reply::Count(
                self.data_groups()
                    .iter()
                    .map(|g| g.key_count.load(Ordering::Relaxed))
                    .sum(),
            )),
            Command::RandomKey => {
                let start = rand::random_range(0..shoal_core::SLOT_COUNT);
                let first = self.inner.layout.shard_of_slot(start);
                let shards = self.inner.layout.shards();
                let pos = shards.iter().position(|(id, _)| *id == first).unwrap_or(0);
                for i in 0..shards.len() {
                    let (id, range) = shards[(pos + i) % shards.len()];
                    let slot = if i == 0 { start } else { range.start };
                    if let Some(key) = engine.key_near_slot(id, slot, now).map_err(storage_err)? {
                        return Ok(Reply::Key(Some(key)));
                    }
                }
                Ok(Reply::Key(None))
            }
            Command::Write(_) => Err(Error::Internal("write routed as a read".into())),
        }
    }

    /// Scans shards in slot order from `cursor`, crossing shards as needed. Each further
    /// shard gets its own read barrier for linearizable scans.
    async fn scan(
        &self,
        mut cursor: ScanCursor,
        limit: usize,
        prefix: Option<Bytes>,
        with_values: bool,
        now: u64,
        consistency: Consistency,
    ) -> Result<Reply, Error> {
        let limit = limit.max(1);
        let mut entries = Vec::new();
        let mut budget = self.tuning().scan_budget;
        let mut first_shard = true;
        while (cursor.slot as u32) < shoal_core::SLOT_COUNT as u32 {
            let shard = self.inner.layout.shard_of_slot(cursor.slot);
            let range: SlotRange = self.inner.layout.range_of(shard).expect("range");
            if !first_shard {
                // Linearizable scans confirm leadership per shard; the first was done by submit.
                let group = self.group(shard);
                if consistency == Consistency::Linearizable && !group.local_reads_ok() {
                    group
                        .read_barrier()?
                        .await
                        .map_err(|_| Error::ShuttingDown)??;
                }
            }
            first_shard = false;
            let page = self
                .engine()
                .scan(
                    shard,
                    cursor.slot,
                    cursor.after.as_deref(),
                    range.end,
                    limit - entries.len(),
                    prefix.as_deref(),
                    now,
                    budget,
                )
                .map_err(storage_err)?;
            budget = budget.saturating_sub(page.entries.len().max(1));
            for (key, mut record) in page.entries {
                if !with_values {
                    record.value = Bytes::new();
                }
                entries.push((key, Some(record)));
            }
            match page.next {
                Some((slot, after)) => {
                    return Ok(Reply::Scan {
                        entries,
                        next: Some(ScanCursor { slot, after }),
                    });
                }
                None if range.end >= shoal_core::SLOT_COUNT as u32 => break,
                None => {
                    cursor = ScanCursor {
                        slot: range.end as u16,
                        after: None,
                    }
                }
            }
            if entries.len() >= limit || budget == 0 {
                return Ok(Reply::Scan {
                    entries,
                    next: Some(cursor),
                });
            }
        }
        Ok(Reply::Scan {
            entries,
            next: None,
        })
    }

    /// Stops accepting commands, stops every group, and makes storage durable.
    pub async fn shutdown(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for group in &self.inner.groups {
            if let Err(e) = group.raft.shutdown().await {
                tracing::warn!(group = group.id, error = %e, "group did not stop cleanly");
            }
        }
        if let Some(rt) = self
            .inner
            .raft_runtime
            .lock()
            .ok()
            .and_then(|mut r| r.take())
        {
            rt.shutdown_background();
        }
        if let Err(e) = self.inner.engine.close() {
            tracing::error!(error = %e, "storage did not close cleanly");
        }
        tracing::info!(node = self.id(), "node stopped");
    }
}

/// Node counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub commands: u64,
    /// Log entries proposed by data shards, and the writes they carried.
    pub log_entries_proposed: u64,
    pub writes_proposed: u64,
    /// fsyncs done by group commit, and the durability requests (log appends, votes)
    /// they covered.
    pub fsyncs: u64,
    pub fsync_requests: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A runtime may not be dropped (which blocks) inside async code; let it wind down.
        if let Some(rt) = self.raft_runtime.get_mut().ok().and_then(|r| r.take()) {
            rt.shutdown_background();
        }
    }
}

enum Submitted {
    Ready(Reply),
    Write(tokio::sync::oneshot::Receiver<Result<WriteReply, Error>>),
    Flush(Vec<tokio::sync::oneshot::Receiver<Result<WriteReply, Error>>>),
    Read(
        Option<tokio::sync::oneshot::Receiver<Result<(), Error>>>,
        Command,
    ),
}

/// Size checks before anything is queued; apply checks again, so a replica never stores
/// what a limit forbids even if a front end forgot.
fn validate_write(op: &WriteOp, limits: &Limits) -> Result<(), Error> {
    for key in op.keys() {
        limits.check_key(key)?;
    }
    match op {
        WriteOp::Put { value, .. } | WriteOp::Append { value, .. } => {
            limits.check_value_len(value.len())
        }
        WriteOp::SetRange { offset, value, .. } => {
            limits.check_value_len((*offset as usize).saturating_add(value.len()))
        }
        WriteOp::PutMany { pairs, .. } => pairs
            .iter()
            .try_for_each(|(_, v)| limits.check_value_len(v.len())),
        WriteOp::Reap { .. } => Err(Error::Invalid("reap is internal".into())),
        _ => Ok(()),
    }
}
