//! What a node is started with: its identity and addresses (`NodeConfig`), how it finds
//! its peers (`ClusterConfig`), and every tunable with its default (`Tuning`). A leaf: the
//! services take the parts they use from here and never import the node.

use std::path::PathBuf;
use std::time::Duration;

use shoal_core::Limits;
use shoal_raft::transport::TransportOptions;

use crate::memory::MemoryBudget;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub shards: u32,
    pub resp_addr: String,
    pub http_addr: String,
    /// Where this node serves gRPC; empty: it does not.
    pub grpc_addr: String,
    pub limits: Limits,
    /// Whether FLUSHALL/FLUSHDB may run.
    pub allow_flush: bool,
    /// Most keys KEYS may return before it errors.
    pub max_keys_reply: usize,
    pub cluster: ClusterConfig,
}

/// How this node finds and joins its peers.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where peers reach this node. `None` only for a node without peers.
    pub peer_addr: Option<String>,
    /// Every founding member (id, peer address), this node included. Empty: just this node.
    pub initial_cluster: Vec<(u64, String)>,
    /// Replicas per shard (capped at the number of nodes).
    pub replication: u32,
    /// Lets tests cut links between nodes (`Node::faults`). Never on in production.
    pub fault_injection: bool,
    /// This node is a member the cluster already has, starting on an empty data
    /// directory: it initialises no group and is guarded like a restart (`catch_up`).
    pub rejoin: bool,
    /// Peer addresses of members of a running cluster to ask for admission (`--join`).
    /// Empty: found or restart a cluster from `initial_cluster`.
    pub join: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peer_addr: None,
            initial_cluster: Vec::new(),
            replication: 3,
            fault_injection: false,
            rejoin: false,
            join: Vec::new(),
        }
    }
}

/// `--dead-after`'s default: as CockroachDB's `server.time_until_store_dead`, long enough
/// that a restart or a reboot never moves data, short enough to heal within minutes.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(300);

/// Tunables with defaults.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Queued writes (and queued reads) per shard before clients get `Overloaded`.
    pub max_pending_per_shard: usize,
    /// Log entries a shard leader keeps in flight at once.
    pub max_inflight_entries: usize,
    pub heartbeat_ms: u64,
    /// A follower that acknowledged an AppendEntries sent this recently (ms) gets no
    /// heartbeat: under steady writes the replication traffic proves the leader alive, so
    /// heartbeats only flow to idle groups (openraft's `heartbeat_min_interval`; 0: always
    /// send them). Must stay below `election_timeout_ms.0 - 1.25 * heartbeat_ms`.
    pub heartbeat_min_interval_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Log entries between snapshots of a shard.
    pub snapshot_every: u64,
    /// How often the TTL reaper looks for due keys, and how many it deletes per round.
    pub reap_interval: Duration,
    pub reap_batch: usize,
    /// Keys one scan call may examine before returning a partial page.
    pub scan_budget: usize,
    /// How long to wait for a single node's shards to elect themselves at start.
    pub startup_timeout: Duration,
    /// The node's memory budget (`--memory-budget-mib`) split into the block cache, write
    /// buffers, record cache (`--record-cache-mib`), Raft log cache and a reserve.
    pub memory: MemoryBudget,
    /// The reconciler's limits (moves in flight, per-move timeout).
    pub moves: crate::mover::MoveLimits,
    /// A node unreachable for this long is declared dead and its replicas re-created on
    /// live nodes (`--dead-after`; zero: never). See `healer` for the rules.
    pub dead_after: Duration,
    /// How long `--join` keeps asking the given members for admission.
    pub join_patience: Duration,
    /// Worker threads of the runtime that runs the Raft groups.
    pub raft_threads: usize,
    /// Longest time a group-commit round waits for busy Raft threads to finish appending
    /// before it fsyncs (zero: fsync as soon as a request arrives). See `shoal_storage`'s
    /// syncer: waiting for idle threads halved fsyncs and cut CPU per write.
    pub group_commit_wait: Duration,
    /// How long a request may keep looking for its shard's leader (through elections and
    /// redirects) before the client gets `NoLeader`.
    pub route_timeout: Duration,
    /// How long a forwarded request waits for the answer of the node it went to.
    pub forward_timeout: Duration,
    /// How long any request may take in all before the client gets `Timeout` (a read) or
    /// `Indeterminate` (a write, which may still commit later).
    pub request_timeout: Duration,
    /// Gossip: where, how often, how quickly a silent peer counts as down (`gossip`).
    pub gossip: crate::gossip::GossipOptions,
    /// How often each leader checks whether a group it leads should go back to its
    /// preferred leader (see `leadership`); zero turns leader balancing off.
    pub leader_balance_interval: Duration,
    /// A deliberately broken mode for testing the linearizability checker: "linearizable"
    /// reads are served by any replica without a leadership check. Never in production.
    pub unsafe_unconfirmed_reads: bool,
    pub transport: TransportOptions,
    /// Free space kept in reserve under the data directory (`--min-free-disk-mib`): writes
    /// are refused as free space falls into it, before the disk fills (see `disk_guard`).
    pub min_free_disk_bytes: u64,
    /// Table files the storage engine keeps open at once (fjall's descriptor cache); the
    /// binary sizes it from the process's open-file limit, beside the client connections.
    pub storage_open_files: usize,
}

impl Tuning {
    /// How long a restarted replica waits for a leader to bring it up to date before it
    /// takes part in elections anyway (see `catch_up`): long enough for the others to
    /// notice a dead leader (one election timeout), elect (another) and reach this node.
    pub fn rejoin_fallback(&self) -> Duration {
        Duration::from_millis(3 * self.election_timeout_ms.1)
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_pending_per_shard: 65_536,
            max_inflight_entries: 4,
            heartbeat_ms: 100,
            heartbeat_min_interval_ms: 100,
            election_timeout_ms: (300, 600),
            snapshot_every: 20_000,
            reap_interval: Duration::from_millis(100),
            leader_balance_interval: Duration::from_secs(1),
            reap_batch: 1_000,
            scan_budget: 100_000,
            startup_timeout: Duration::from_secs(30),
            memory: MemoryBudget::default(),
            moves: crate::mover::MoveLimits::default(),
            dead_after: DEFAULT_DEAD_AFTER,
            join_patience: Duration::from_secs(30),
            raft_threads: default_raft_threads(),
            group_commit_wait: Duration::from_millis(1),
            route_timeout: Duration::from_secs(5),
            forward_timeout: Duration::from_secs(8),
            request_timeout: Duration::from_secs(10),
            gossip: crate::gossip::GossipOptions::default(),
            unsafe_unconfirmed_reads: false,
            transport: TransportOptions::default(),
            min_free_disk_bytes: shoal_storage::DEFAULT_MIN_FREE_BYTES,
            storage_open_files: shoal_storage::DEFAULT_OPEN_FILES,
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
