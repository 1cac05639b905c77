//! The node: opens the storage engine, the peer transport and this node's replicas of the
//! metadata group and of the shards placed on it, starts the background services, then
//! serves commands through its `Executor` (`executor.rs`, `router.rs`, `local.rs`): the
//! composition root, and a thin facade over the parts it composed.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openraft::{Config, SnapshotPolicy};
use shoal_core::map::{ClusterView, MemoryStatus, NodeInfo, RebalanceLimits};
use shoal_core::shard::META_GROUP;
use shoal_core::{Command, Consistency, Error, Limits, Reply, ShardId, ShardLayout};
use shoal_raft::transport::{Faults, PeerRouter, ServerConfig, wire::MAX_PAYLOAD_ENTRIES};
use shoal_storage::{Engine, EngineOptions};
use tokio::sync::watch;

use crate::admin::AdminRequest;
use crate::bootstrap::wait_leader;
use crate::catch_up::{self, CatchingUp};
use crate::cluster_map::{MapCell, MapRx};
use crate::control::Control;
use crate::executor::{Executor, ExecutorConfig};
use crate::group::{Group, Groups};
use crate::handler::Served;
use crate::memory::{MemoryReport, process_rss_bytes};
use crate::peers::Peers;
use crate::start_error::StartError;
use crate::supervisor::{STOP_DEADLINE, Supervisor};
use crate::topology::{Identity, Topology, check_identity};

pub use crate::config::{ClusterConfig, NodeConfig, Tuning, available_cores, default_raft_threads};

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) tuning: Tuning,
    pub(crate) engine: Engine,
    pub(crate) topology: Arc<Topology>,
    /// This node's latest known cluster map (`cluster_map.rs`).
    pub(crate) map: Arc<MapCell>,
    pub(crate) groups: Arc<Groups>,
    pub(crate) router: PeerRouter,
    pub(crate) peers: Arc<Peers>,
    pub(crate) faults: Faults,
    /// Runs every group's Raft tasks and the peer transport, apart from the front ends'
    /// runtime: storage calls that block (fjall holds its journal lock through a journal
    /// rotation) then stall writes only, while reads keep being served.
    raft_runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    /// Stops the peer server (the background services stop through `services`).
    stop_peer_server: watch::Sender<bool>,
    /// The background services, on the front ends' runtime.
    pub(crate) services: Supervisor,
    /// Set by `shutdown`; shared with the executor, which then refuses commands.
    stopped: Arc<AtomicBool>,
    /// Set once the cluster map says this node was removed: it serves nothing more.
    pub(crate) removed: Arc<AtomicBool>,
    /// The request path.
    pub(crate) executor: Arc<Executor>,
    /// Answers and routes administration requests (joins, drains, membership steps).
    pub(crate) control: Control,
    /// Opens replicas the cluster map gives this node.
    pub(crate) opener: crate::replicas::GroupOpener,
    started: Instant,
    /// Leader transfers this node started to give groups back to their preferred leader.
    pub(crate) leader_transfers: Arc<AtomicU64>,
    /// Bytes in every group's cache of recent log entries.
    raft_log_cache: Arc<AtomicU64>,
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        Self::start_with(config, Tuning::default()).await
    }

    pub async fn start_with(config: NodeConfig, tuning: Tuning) -> Result<Node, StartError> {
        if config.id == 0 {
            return Err(Error::Invalid("node id must be 1 or greater".into()).into());
        }
        let me = config.id;
        let cluster = &config.cluster;
        let info = NodeInfo {
            id: me,
            peer_addr: cluster.peer_addr.clone().unwrap_or_default(),
            resp_addr: config.resp_addr.clone(),
            http_addr: config.http_addr.clone(),
            grpc_addr: config.grpc_addr.clone(),
        };
        let (mut seed, founding) = crate::join::seed_map(&config, &info, &tuning).await?;
        let cluster_id = seed.cluster_id.clone();
        let known_dir = check_identity(
            &config.data_dir,
            &Identity {
                cluster_id: cluster_id.clone(),
                node_id: me,
            },
        )?;
        // A member restarting may have been removed, or the cluster changed, while it was
        // down: ask the others for their map before opening anything.
        if known_dir && seed.nodes.len() > 1 {
            let seeds: Vec<String> = if cluster.join.is_empty() {
                seed.nodes
                    .iter()
                    .filter(|n| n.id != me)
                    .map(|n| n.peer_addr.clone())
                    .collect()
            } else {
                cluster.join.clone()
            };
            if let Some(latest) =
                crate::join::fetch_map(&seeds, me, &cluster_id, tuning.transport.tls.as_ref()).await
                && latest.cluster_id == cluster_id
                && latest.epoch > seed.epoch
            {
                crate::join::save_map(&config.data_dir, &latest)?;
                seed = latest;
            }
        }
        if seed.removed.contains(&me) || seed.dead.contains(&me) {
            return Err(crate::join::removed_error(me, &seed).into());
        }
        // A restart, or a member rebuilding on an empty directory: either may have
        // forgotten what it acknowledged, so its replicas are guarded (`catch_up`).
        let restarted = known_dir || cluster.rejoin;
        let writer_activity = (!tuning.group_commit_wait.is_zero()).then(|| {
            Arc::new(shoal_storage::WriterActivity::new(
                tuning.raft_threads.max(1),
                tuning.group_commit_wait,
            ))
        });
        let engine_options = EngineOptions {
            cache_bytes: tuning.memory.block_cache_bytes,
            write_buffer_bytes: tuning.memory.write_buffer_bytes,
            record_cache_bytes: tuning.memory.record_cache_bytes,
            writer_activity: writer_activity.clone(),
            min_free_bytes: tuning.min_free_disk_bytes,
            open_files: tuning.storage_open_files,
        };
        let engine = Engine::open(&config.data_dir, &engine_options)
            .map_err(StartError::storage("opening the storage engine"))?;
        let raft_config = Arc::new(
            Config {
                cluster_name: format!("shoal-{cluster_id}"),
                heartbeat_interval: tuning.heartbeat_ms,
                // Clamped to what openraft accepts: interval + this + a tick (13/64 of an
                // interval) below the election timeout.
                heartbeat_min_interval: Some(
                    tuning.heartbeat_min_interval_ms.min(
                        tuning
                            .election_timeout_ms
                            .0
                            .saturating_sub(tuning.heartbeat_ms + tuning.heartbeat_ms / 4 + 1),
                    ),
                ),
                election_timeout_min: tuning.election_timeout_ms.0,
                election_timeout_max: tuning.election_timeout_ms.1,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
                // Entries kept after a snapshot let a briefly lagging replica catch up from
                // the log; one further behind gets the snapshot.
                max_in_snapshot_log_to_keep: (tuning.snapshot_every / 2).clamp(1, 1_000),
                max_payload_entries: MAX_PAYLOAD_ENTRIES,
                // The commit index is not persisted, so a leader that restarted must win an
                // election (and commit a blank entry) before it knows what is committed;
                // restoring leadership without one served stale reads after a full restart.
                enable_leader_restore: Some(false),
                // A follower's log only goes backwards when its disk lost acknowledged
                // entries (a cut or corrupted journal tail). Without this the leader
                // panics (debug builds, taking every group on the node down) or keeps
                // counting entries the follower no longer has (release builds); with it,
                // the leader re-replicates them. The rejoin guard (`catch_up`) keeps such
                // a follower out of elections until it has them again.
                allow_log_reversion: Some(true),
                ..Default::default()
            }
            .validate()
            .map_err(|e| Error::Invalid(format!("raft config: {e}")))?,
        );

        let mut raft_runtime = tokio::runtime::Builder::new_multi_thread();
        raft_runtime
            .worker_threads(tuning.raft_threads.max(1))
            .thread_name("shoal-raft")
            .enable_all();
        // Group commit syncs once the workers (which do every log append) have gone idle.
        if let Some(activity) = writer_activity {
            let on_wake = activity.clone();
            raft_runtime
                .on_thread_park(move || activity.idle())
                .on_thread_unpark(move || on_wake.busy());
        }
        let raft_runtime = raft_runtime.build().map_err(StartError::Runtime)?;
        let rt = raft_runtime.handle().clone();
        let faults = Faults::default();
        // Peer connections run on the groups' runtime: one connection per peer carries both
        // directions, and most of its traffic is Raft's, which then never hops between
        // runtimes. Measured against running them on the front ends' runtime (A/B, 3 rounds
        // each, 3 nodes on 2 cores): leader-routed puts 11.0k vs 10.3k/s, linearizable
        // gets through node 1 (two thirds forwarded) 54k vs 40k/s.
        let router = PeerRouter::new(
            me,
            cluster_id.clone(),
            tuning.transport.clone(),
            faults.clone(),
            rt.clone(),
        );
        for node in &seed.nodes {
            if node.id != me {
                router.set_addr(node.id, node.peer_addr.clone());
            }
        }
        let group_count = seed.shards.iter().map(|s| s.id).max().unwrap_or(0) as usize + 1;
        let groups = Arc::new(Groups::new((0..group_count).map(|_| None).collect()));
        let map = Arc::new(MapCell::new(seed.clone()));
        let commands = Arc::new(AtomicU64::new(0));
        let source = crate::handler::StatusSource {
            info: info.clone(),
            groups: groups.clone(),
            disk: engine.disk().clone(),
            map: map.clone(),
            memory_budget_bytes: tuning.memory.total_bytes,
            commands: commands.clone(),
        };
        let gossip_inbox = crate::gossip_peer::GossipInbox::default();
        let handler = Arc::new(crate::handler::Handler {
            groups: groups.clone(),
            source: source.clone(),
            disk: engine.disk().clone(),
            catching_up: Arc::new(CatchingUp::default()),
            served: OnceLock::new(),
            info: info.clone(),
            gossip: gossip_inbox.clone(),
        });
        // Dropped on a start error, which stops what it started.
        let services = Supervisor::new(tokio::runtime::Handle::current());
        let sampler = crate::disk_guard::DiskSampler {
            disk: engine.disk().clone(),
            node: me,
        };
        services.start("disk-sampler", |cancel| sampler.run(cancel));
        let (stop_peer_server, stop_rx) = watch::channel(false);
        // Listen before opening groups: peers may need this node's vote to elect leaders.
        if let Some(addr) = &cluster.peer_addr {
            let listener = {
                let bind_addr = addr.clone();
                rt.spawn(async move { tokio::net::TcpListener::bind(&bind_addr).await })
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(|e| {
                        Error::Invalid(format!(
                            "cannot listen for peers on {addr} (--peer-addr): {e}"
                        ))
                    })?
            };
            let server_config = ServerConfig {
                me,
                faults: faults.clone(),
                incoming_snapshot_dir: config.data_dir.join("snapshots-incoming"),
                raft_runtime: rt.clone(),
            };
            rt.spawn(shoal_raft::transport::serve(
                listener,
                server_config,
                handler.clone(),
                router.clone(),
                stop_rx,
            ));
        }

        // Finish deleting replicas whose deletion a crash interrupted, before anything opens.
        for group in engine
            .tombstoned_groups()
            .map_err(StartError::storage("listing interrupted deletions"))?
        {
            crate::replicas::delete_group(&engine, group)?;
        }
        let others: Vec<u64> = seed
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| *id != me)
            .collect();
        // A new directory in a cluster that already runs: a wiped node restarted without
        // --rejoin, or a member starting late. Either joins what exists, guarded.
        let running_elsewhere = if !known_dir
            && !cluster.rejoin
            && founding.is_some()
            && !others.is_empty()
        {
            catch_up::groups_running_elsewhere(&router, &others, tuning.transport.connect_timeout)
                .await
        } else {
            Default::default()
        };
        if !running_elsewhere.is_empty() {
            tracing::warn!(
                groups = running_elsewhere.len(),
                "new data directory, but peers already run this node's groups: joining them \
                 as with --rejoin (not voting until caught up)"
            );
        }
        let hosted = seed.groups_of(me);
        // The Raft log cache's share of the budget, split over the groups a node of this
        // cluster hosts when balanced (replicas opened later get the same share).
        let raft_log_cache = Arc::new(AtomicU64::new(0));
        let balanced =
            (seed.shards.len() * seed.replication as usize).div_ceil(seed.nodes.len().max(1)) + 1;
        let recent_per_group = (tuning.memory.raft_log_cache_bytes
            / hosted.len().max(balanced).max(1) as u64) as usize;
        let opener = crate::replicas::GroupOpener {
            raft_runtime: rt.clone(),
            engine: engine.clone(),
            me,
            raft_config: raft_config.clone(),
            tuning: tuning.clone(),
            limits: config.limits,
            recent_log: (recent_per_group, raft_log_cache.clone()),
            router: router.clone(),
        };
        // Groups are founded only from the founding map (epoch 1), by their first replica.
        let founding_map = founding.as_ref().filter(|_| seed.epoch == 1);
        for group_id in hosted {
            let replicas = seed.replicas(group_id).to_vec();
            let joins_existing = cluster.rejoin || running_elsewhere.contains(&group_id);
            // Peers do not report the metadata group. If the cluster runs, guard it, but
            // still found it if this node is its founder: if the founder skipped it, no
            // node would ever initialise it (founding is only ever done by the founder).
            let guard_meta = group_id == META_GROUP && !running_elsewhere.is_empty();
            let founders: Option<Vec<(u64, String)>> = founding_map
                .filter(|_| replicas.first() == Some(&me) && !joins_existing)
                .map(|t| {
                    replicas
                        .iter()
                        .map(|id| {
                            (
                                *id,
                                t.map
                                    .node(*id)
                                    .map(|n| n.peer_addr.clone())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                });
            let group = opener.open(group_id, founders).await?;
            // By placement, not by the membership in the log: a log cut to nothing
            // has none, and is the replica that most needs guarding.
            let other_voters = replicas.iter().any(|r| *r != me);
            if (restarted || joins_existing || guard_meta) && other_voters {
                catch_up::guard(
                    group.raft.clone(),
                    group_id,
                    me,
                    handler.catching_up.clone(),
                    tuning.rejoin_fallback(),
                );
            }
            groups.insert(group);
        }
        // Gossip (liveness, every peer's status) on the peer port's host, UDP; with TLS over
        // the peer connections.
        let gossip = match &cluster.peer_addr {
            Some(peer_addr) => {
                let addr = tuning.gossip.addr.as_deref().unwrap_or(peer_addr);
                let listen = crate::gossip::resolve(addr).await?;
                let mut seeds: Vec<String> = seed
                    .nodes
                    .iter()
                    .filter(|n| n.id != me && !n.peer_addr.is_empty())
                    .map(|n| n.peer_addr.clone())
                    .collect();
                seeds.extend(cluster.join.iter().cloned());
                let (handle, book) = crate::gossip::start(
                    me,
                    &cluster_id,
                    listen,
                    seeds,
                    &tuning.gossip,
                    crate::gossip::Carrier {
                        faults: faults.clone(),
                        // With TLS, gossip is authenticated too: it rides the mutual-TLS
                        // peer connections instead of plaintext UDP.
                        over_peers: tuning
                            .transport
                            .tls
                            .is_some()
                            .then(|| (router.clone(), gossip_inbox.clone())),
                    },
                    &source.status(),
                )
                .await?;
                Some(crate::services::Gossiping {
                    handle,
                    book,
                    source,
                })
            }
            None => None,
        };
        let layout =
            ShardLayout::from_ranges(seed.shards.iter().map(|s| (s.id, s.range)).collect());
        let lone = seed.nodes.len() == 1 && cluster.join.is_empty();
        let bootstrap = founding.unwrap_or_else(|| Topology {
            map: seed.clone(),
            meta_replicas: seed.meta.clone(),
        });
        let peers = Arc::new(Peers::new(&seed.nodes));
        let control = Control {
            me,
            groups: groups.clone(),
            engine: engine.clone(),
            router: router.clone(),
            peers: peers.clone(),
            map: map.clone(),
        };
        let stopped = Arc::new(AtomicBool::new(false));
        let removed = Arc::new(AtomicBool::new(false));
        let executor = Arc::new(Executor {
            config: ExecutorConfig::new(me, config.limits, config.allow_flush, &tuning),
            layout,
            groups: groups.clone(),
            map: map.clone(),
            peers: peers.clone(),
            router: router.clone(),
            engine: engine.clone(),
            stopped: stopped.clone(),
            removed: removed.clone(),
            commands,
        });
        handler.serve(Served {
            executor: executor.clone(),
            control: control.clone(),
        });
        let node = Node {
            inner: Arc::new(Inner {
                peers,
                config,
                tuning,
                engine,
                map,
                topology: Arc::new(bootstrap),
                groups,
                router,
                faults,
                raft_runtime: std::sync::Mutex::new(Some(raft_runtime)),
                stop_peer_server,
                services,
                stopped,
                removed,
                executor,
                control,
                opener,
                started: Instant::now(),
                leader_transfers: Arc::new(AtomicU64::new(0)),
                raft_log_cache,
            }),
        };
        if lone {
            // A lone node elects itself at once; wait for that, so the first command does
            // not see "no leader", and apply everything committed before a restart, which
            // local reads (`Group::local_reads_ok`) rely on.
            for group in node.all_groups() {
                wait_leader(&group, me, node.inner.tuning.startup_timeout).await?;
                group
                    .read_barrier()?
                    .await
                    .map_err(|_| Error::ShuttingDown)??;
            }
        }
        let inner = &node.inner;
        crate::services::start(inner, me, lone, gossip).await?;
        tracing::info!(
            node = node.id(),
            shards = node.layout().len(),
            hosted = node.all_groups().len(),
            cluster = %cluster_id,
            epoch = seed.epoch,
            "node ready"
        );
        Ok(node)
    }

    /// Executes a command wherever it must run (see `Executor::execute`): ordered at call
    /// time, before the returned future is polled.
    pub fn execute(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        self.inner.executor.execute(command, consistency)
    }

    /// Like `execute`, but a keyed command whose shard is led elsewhere is not forwarded:
    /// it fails with `NotLeader` (RESP's `-MOVED`) for clients that route by themselves.
    pub fn execute_direct(
        &self,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        self.inner.executor.execute_direct(command, consistency)
    }

    /// Answers a point read right away when nothing needs to be awaited (see
    /// `Executor::try_read_now`); `None` means "use `execute`".
    pub fn try_read_now(
        &self,
        command: &Command,
        consistency: Consistency,
    ) -> Option<Result<Reply, Error>> {
        self.inner.executor.try_read_now(command, consistency)
    }

    /// The leader of `shard` as far as this node knows.
    pub fn leader_of(&self, shard: ShardId) -> Option<u64> {
        self.inner.executor.leader_of(shard)
    }

    /// The epoch of this node's latest known cluster map.
    pub fn map_epoch(&self) -> u64 {
        self.inner.map.current().epoch
    }

    /// This node's latest known cluster map, and its changes.
    pub fn cluster_map(&self) -> MapRx {
        self.inner.map.subscribe()
    }

    /// The node's view of the cluster: every node (up or not, with the client addresses
    /// it reported), every shard with its replicas and its current leader, every move.
    pub fn cluster_view(&self) -> ClusterView {
        let tuning = &self.inner.tuning;
        crate::view::cluster_view(
            &self.inner.executor,
            self.info(),
            self.memory_status(),
            RebalanceLimits {
                max_bytes_per_sec: tuning.transport.snapshot_bytes_per_sec,
                max_moves: tuning.moves.max_moves as u64,
                max_moves_per_node: tuning.moves.max_moves_per_node as u64,
                move_timeout_secs: tuning.moves.timeout.as_secs(),
            },
            tuning.dead_after,
        )
    }

    pub fn id(&self) -> u64 {
        self.inner.config.id
    }

    pub fn limits(&self) -> Limits {
        self.inner.config.limits
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.inner.executor.layout
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

    /// Fault injection (cutting links to peers), when the node was started with it.
    pub fn faults(&self) -> Option<&Faults> {
        self.inner
            .config
            .cluster
            .fault_injection
            .then_some(&self.inner.faults)
    }

    /// Fault injection: report `bytes` of free disk space instead of the real figure
    /// (None: stop), when the node was started with fault injection.
    pub fn set_disk_free_override(&self, bytes: Option<u64>) -> Result<(), Error> {
        if !self.inner.config.cluster.fault_injection {
            return Err(Error::fault_injection_disabled());
        }
        self.inner.engine.disk().set_override(bytes);
        Ok(())
    }

    /// Counters for INFO and tuning.
    pub fn stats(&self) -> NodeStats {
        let storage = self.inner.engine.stats();
        let disk = self.inner.engine.disk();
        let transport = self.inner.router.counters();
        let sum = |f: fn(&Group) -> &AtomicU64| {
            self.data_groups()
                .iter()
                .map(|g| f(g).load(Ordering::Relaxed))
                .sum()
        };
        NodeStats {
            commands: self.inner.executor.commands.load(Ordering::Relaxed),
            log_entries_proposed: sum(|g| &g.counters.entries),
            writes_proposed: sum(|g| &g.counters.ops),
            fsyncs: storage.fsyncs,
            fsync_requests: storage.sync_requests,
            shards_led: self.data_groups().iter().filter(|g| g.is_leader()).count() as u64,
            leader_transfers: self.inner.leader_transfers.load(Ordering::Relaxed),
            disk_free_bytes: disk.free_bytes(),
            disk_reserve_bytes: disk.reserve_bytes(),
            disk_refused: disk.refused(),
            append_entries_received: transport.append_entries_received.load(Ordering::Relaxed),
            append_entries_empty: transport.append_entries_empty.load(Ordering::Relaxed),
            append_entries_conflicts: transport.append_entries_conflicts.load(Ordering::Relaxed),
        }
    }

    /// The memory budget, its parts, and what each holds now where it can be measured.
    pub fn memory(&self) -> MemoryReport {
        let engine = self.inner.engine.memory();
        MemoryReport {
            budget: self.inner.tuning.memory,
            rss_bytes: process_rss_bytes(),
            block_cache_bytes: engine.block_cache_bytes,
            write_buffer_bytes: engine.write_buffer_bytes,
            record_cache_bytes: engine.record_cache_bytes,
            raft_log_cache_bytes: self.inner.raft_log_cache.load(Ordering::Relaxed),
        }
    }

    /// This node's replicas of data shards.
    pub(crate) fn data_groups(&self) -> Vec<Arc<Group>> {
        self.inner.groups.data()
    }

    /// Groups Raft stopped on this node for good (a storage failure, a panic), with why: they
    /// serve nothing until the node restarts, and `/health` reports them.
    pub fn failed_groups(&self) -> Vec<(ShardId, Error)> {
        self.all_groups()
            .iter()
            .filter_map(|g| Some((g.id, g.failure()?)))
            .collect()
    }

    /// This node's replicas of every group, the metadata group first.
    /// openraft's runtime statistics (batch sizes, per-stage latencies) of every group this
    /// node leads, as text: `GET /v1/debug/raft-stats`, for tuning the write path.
    pub async fn raft_stats(&self) -> String {
        let mut out = String::new();
        for group in self.all_groups() {
            if !group.is_leader() {
                continue;
            }
            match group.raft.runtime_stats().await {
                Ok(stats) => out.push_str(&format!(
                    "group {} (led by node {}):\n{}\n",
                    group.id,
                    self.id(),
                    stats.display().human_readable()
                )),
                Err(e) => out.push_str(&format!("group {}: {e}\n", group.id)),
            }
        }
        if out.is_empty() {
            out.push_str("this node leads no group\n");
        }
        out
    }

    pub(crate) fn all_groups(&self) -> Vec<Arc<Group>> {
        self.inner.groups.all()
    }

    pub(crate) fn memory_status(&self) -> MemoryStatus {
        MemoryStatus {
            rss_bytes: process_rss_bytes().unwrap_or(0),
            budget_bytes: self.inner.tuning.memory.total_bytes,
        }
    }

    pub(crate) fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id(),
            peer_addr: self
                .inner
                .config
                .cluster
                .peer_addr
                .clone()
                .unwrap_or_default(),
            resp_addr: self.inner.config.resp_addr.clone(),
            http_addr: self.inner.config.http_addr.clone(),
            grpc_addr: self.inner.config.grpc_addr.clone(),
        }
    }

    /// Drains node `id` (its replicas move to the others), after which it leaves the
    /// cluster; refused when the others could not hold the replication factor.
    pub async fn remove_node(&self, id: u64) -> Result<(), Error> {
        self.inner
            .control
            .meta(AdminRequest::RemoveNode(id))
            .await
            .map(|_| ())
    }

    /// Every user, as the metadata leader has them.
    pub async fn users(&self) -> Result<Vec<crate::users::StoredUser>, Error> {
        self.user_request(AdminRequest::Users).await
    }

    /// The users as this node's replica of the metadata group has them (empty if it hosts
    /// none): what a node knows at once at start, before it can ask the leader.
    pub fn local_users(&self) -> Vec<crate::users::StoredUser> {
        crate::users::read_users(&self.inner.engine).unwrap_or_default()
    }

    /// Creates (`Create`) or changes (`Update`) a user; answers every user.
    pub async fn put_user(
        &self,
        user: crate::users::StoredUser,
        mode: crate::users::UserWrite,
    ) -> Result<Vec<crate::users::StoredUser>, Error> {
        self.user_request(AdminRequest::PutUser { user, mode })
            .await
    }

    /// Removes a user (never the last admin); answers every user left.
    pub async fn remove_user(&self, name: &str) -> Result<Vec<crate::users::StoredUser>, Error> {
        self.user_request(AdminRequest::RemoveUser(name.to_string()))
            .await
    }

    async fn user_request(
        &self,
        request: AdminRequest,
    ) -> Result<Vec<crate::users::StoredUser>, Error> {
        match self.inner.control.meta(request).await? {
            crate::admin::AdminReply::Users(users) => Ok(users),
            other => Err(Error::Internal(format!(
                "a user request was answered with {other:?}"
            ))),
        }
    }

    /// Pauses (or resumes) new replica moves; moves in flight finish.
    pub async fn set_rebalance_paused(&self, paused: bool) -> Result<(), Error> {
        self.inner
            .control
            .meta(AdminRequest::SetPaused(paused))
            .await
            .map(|_| ())
    }

    /// Stops accepting commands, stops every group, and makes storage durable.
    pub async fn shutdown(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.services.shutdown(STOP_DEADLINE).await;
        let _ = self.inner.stop_peer_server.send(true);
        self.inner.router.shutdown();
        for group in self.all_groups() {
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
    /// Data shards this node leads now.
    pub shards_led: u64,
    /// Leader transfers started by leader balancing since start.
    pub leader_transfers: u64,
    /// Free space under the data directory as last sampled, the reserve kept, and the
    /// writes and replication requests refused for lack of space since start.
    pub disk_free_bytes: u64,
    pub disk_reserve_bytes: u64,
    pub disk_refused: u64,
    /// AppendEntries received as a follower, those without entries (heartbeats and
    /// commit-index updates), and those answered with a conflict.
    pub append_entries_received: u64,
    pub append_entries_empty: u64,
    pub append_entries_conflicts: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop_peer_server.send(true);
        // A runtime may not be dropped (which blocks) inside async code; let it wind down.
        if let Some(rt) = self.raft_runtime.get_mut().ok().and_then(|r| r.take()) {
            rt.shutdown_background();
        }
    }
}
