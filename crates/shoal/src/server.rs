//! `shoal server`: start a node, serve RESP and HTTP, stop gracefully on SIGTERM/Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use shoal_api::ConnectionLimit;
use shoal_api::auth::{Authenticator, UserSync};
use shoal_api::grpc::{self, GrpcConfig};
use shoal_api::http::{self, HttpConfig};
use shoal_api::resp::{self, RespConfig};
use shoal_cluster::topology::parse_initial_cluster;
use shoal_cluster::{ClusterConfig, MemoryBudget, Node, NodeConfig, Tuning};
use shoal_core::Limits;
use shoal_core::limits::{DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Threads for the client-facing runtime, from `--io-threads` or the cores left after the
/// Raft runtime's.
pub fn io_threads(args: &ServerArgs) -> usize {
    args.io_threads
        .unwrap_or_else(|| shoal_cluster::available_cores().saturating_sub(args.raft_threads))
        .max(1)
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This node's id: a number >= 1, stable for the life of its data directory.
    #[arg(long, default_value_t = 1, env = "SHOAL_ID")]
    id: u64,
    /// Where the node keeps its data (created if missing).
    #[arg(long, default_value = "shoal-data", env = "SHOAL_DATA_DIR")]
    data_dir: PathBuf,
    /// Address for Redis-protocol clients (redis-cli, redis-benchmark, any Redis client).
    #[arg(long, default_value = "127.0.0.1:6379", env = "SHOAL_RESP_ADDR")]
    resp_addr: SocketAddr,
    /// Address for the HTTP/JSON API and `shoal get|put|del|scan`.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SHOAL_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Address for gRPC clients (package shoal.v1: services KV and Cluster, with server
    /// reflection and grpc.health.v1), or `off`.
    #[arg(long, default_value = "127.0.0.1:50051", env = "SHOAL_GRPC_ADDR", value_parser = parse_grpc_addr)]
    grpc_addr: GrpcAddr,
    /// Number of shards (Raft groups) the 16384 slots are split into. Part of the
    /// cluster's identity: every node must be started with the same value.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Address other nodes reach this one on (Raft traffic, forwarded requests). Needed
    /// when --initial-cluster lists other nodes; must match this node's entry there.
    #[arg(long, env = "SHOAL_PEER_ADDR", help_heading = "Cluster")]
    peer_addr: Option<String>,
    /// UDP address this node gossips on (liveness, and each node's addresses, leaders and
    /// free disk). Default: the --peer-addr's host and port, over UDP. A node gossiping
    /// elsewhere is still found (it introduces itself to the members' peer addresses,
    /// which gossip on the default).
    #[arg(long, help_heading = "Cluster")]
    gossip_addr: Option<String>,
    /// Every founding member as ID=HOST:PORT (peer addresses), comma-separated, the same on
    /// every node, e.g. 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001. Omit for a single
    /// node. Start the nodes in any order; a restarted node rejoins with its data directory.
    #[arg(long, env = "SHOAL_INITIAL_CLUSTER", help_heading = "Cluster")]
    initial_cluster: Option<String>,
    /// Join a running cluster: peer addresses (HOST:PORT, comma-separated) of any of its
    /// members. The node asks to be admitted, takes the cluster's id and map from the
    /// answer, and replicas move to it by themselves. Needs --peer-addr; not with
    /// --initial-cluster. Restarting it with the same flags resumes it (no second join).
    #[arg(
        long,
        env = "SHOAL_JOIN",
        value_delimiter = ',',
        help_heading = "Cluster"
    )]
    join: Vec<String>,
    /// Seconds --join keeps asking the given members for admission before giving up.
    #[arg(long, default_value_t = 30, help_heading = "Cluster")]
    join_timeout_secs: u64,
    /// Most replica moves in flight in the whole cluster (used by the metadata leader).
    #[arg(long, default_value_t = shoal_cluster::mover::MoveLimits::default().max_moves, help_heading = "Rebalancing")]
    rebalance_max_moves: usize,
    /// Most replica moves in flight that add a replica to, or take one from, one node.
    #[arg(long, default_value_t = shoal_cluster::mover::MoveLimits::default().max_moves_per_node, help_heading = "Rebalancing")]
    rebalance_max_moves_per_node: usize,
    /// Snapshot bytes per second this node sends, all transfers together: replica moves
    /// (and lagging followers) leave this much of the disk and network to clients. 0: no
    /// limit.
    #[arg(long, default_value_t = shoal_cluster::DEFAULT_SNAPSHOT_BYTES_PER_SEC, help_heading = "Rebalancing")]
    rebalance_max_bytes_per_sec: u64,
    /// Seconds a replica move may take before it is rolled back (its new replica removed)
    /// and retried later.
    #[arg(long, default_value_t = shoal_cluster::mover::MoveLimits::default().timeout.as_secs(), help_heading = "Rebalancing")]
    rebalance_move_timeout_secs: u64,
    /// How long a node may be unreachable before the cluster declares it dead and re-creates
    /// its replicas on live nodes: a number of seconds, or with a unit (`90s`, `5m`, `1h`);
    /// `0` never declares a node dead. Used by the metadata leader; a dead node that comes
    /// back refuses to serve. Nothing is declared while more than replication - 1 nodes are
    /// down, while the rest could not hold the replication factor, or where a shard would
    /// lose its majority (see docs/architecture.md, "Dead nodes").
    #[arg(long, default_value = "5m", value_parser = parse_duration, help_heading = "Rebalancing")]
    dead_after: std::time::Duration,
    /// Replicas of every shard (at most the number of nodes). Same on every node.
    #[arg(long, default_value_t = 3, help_heading = "Cluster")]
    replication: u32,
    /// Raft election timeout range in milliseconds, as MIN-MAX: how long followers wait
    /// for a silent leader before electing another. Failover takes about this long.
    #[arg(long, default_value = "300-600", help_heading = "Cluster")]
    election_timeout_ms: String,
    /// Start this node, a member the cluster already has, on an empty --data-dir (its disk
    /// was lost, or its journal was found corrupt and moved aside): it initialises nothing
    /// and takes no part in elections until the leaders have copied its replicas back.
    #[arg(long, help_heading = "Cluster")]
    rejoin: bool,
    /// Let tests cut this node off from peers over HTTP (PUT /v1/debug/blocked-peers).
    /// Never enable in production.
    #[arg(long, hide = true)]
    fault_injection: bool,
    #[command(flatten)]
    security: crate::security::SecurityArgs,
    /// Deliberately broken: serve "linearizable" reads from any replica without a
    /// leadership check, so tests can show the linearizability checker catches it.
    #[arg(long, hide = true)]
    unsafe_unconfirmed_reads: bool,
    /// Largest key accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_KEY_BYTES)]
    max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Free disk space, in MiB, kept in reserve under --data-dir. Below it the node refuses
    /// writes that add data (deletes still work), below half of it deletes too, and below
    /// a quarter it stops taking entries from its shards' leaders; reads always work and
    /// writes resume by themselves once space is freed. 0 turns the guard off.
    #[arg(long, default_value_t = Tuning::default().min_free_disk_bytes >> 20, env = "SHOAL_MIN_FREE_DISK_MIB")]
    min_free_disk_mib: u64,
    /// Most simultaneous client connections, RESP and HTTP together. Lowered at start, with a
    /// warning, to what the open-file limit leaves once the storage engine's files and a
    /// reserve for peers and snapshots are set aside (the node first raises its soft limit to
    /// the hard one).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Most keys one KEYS command may return (use SCAN for more).
    #[arg(long, default_value_t = 100_000)]
    max_keys_reply: usize,
    /// Allow FLUSHALL/FLUSHDB, which delete every key.
    #[arg(long)]
    allow_flush: bool,
    /// Raft log entries each shard leader keeps in flight. Fewer means fuller entries
    /// (less work per write), more means lower latency when load is light.
    #[arg(long, default_value_t = Tuning::default().max_inflight_entries, env = "SHOAL_MAX_INFLIGHT_ENTRIES", help_heading = "Tuning")]
    max_inflight_entries: usize,
    /// Queued requests per shard before clients get a retryable "overloaded" error.
    #[arg(long, default_value_t = Tuning::default().max_pending_per_shard, help_heading = "Tuning")]
    max_pending_per_shard: usize,
    /// Memory the node plans for, in MiB: split into the storage engine's block cache
    /// (1/8), its write buffers (3/16), the record cache (1/8), the Raft log cache (1/16)
    /// and a reserve for connections, requests in flight and the process itself (the
    /// rest). `INFO memory` shows the split and what each part holds.
    #[arg(long, default_value_t = shoal_cluster::memory::DEFAULT_MEMORY_BUDGET_BYTES >> 20, env = "SHOAL_MEMORY_BUDGET_MIB")]
    memory_budget_mib: u64,
    /// Memory for caching records in front of the storage engine, in MiB (0 disables), out
    /// of --memory-budget-mib. Default: an eighth of the budget.
    #[arg(long, help_heading = "Tuning")]
    record_cache_mib: Option<u64>,
    /// Threads serving client connections (RESP and HTTP). Default: the cores left after
    /// the Raft threads, at least 1. On 2 cores one I/O thread measured best for
    /// unpipelined clients; more threads help heavily pipelined reads.
    #[arg(long, help_heading = "Tuning")]
    pub io_threads: Option<usize>,
    /// Worker threads of the runtime that runs the Raft groups (log appends, applies).
    #[arg(long, default_value_t = Tuning::default().raft_threads, help_heading = "Tuning")]
    raft_threads: usize,
    /// Longest wait, in microseconds, before a shared fsync while the Raft threads are still
    /// busy appending (0: fsync at once). A round starts as soon as they go idle, so this
    /// bounds the wait only under sustained load.
    #[arg(long, default_value_t = Tuning::default().group_commit_wait.as_micros() as u64, env = "SHOAL_GROUP_COMMIT_WAIT_US", help_heading = "Tuning")]
    group_commit_wait_us: u64,
    /// AppendEntries each shard keeps in flight to each follower (1: send the next only
    /// after the previous is answered). More lets a leader send new entries while a
    /// follower is still syncing earlier ones.
    #[arg(long, default_value_t = shoal_cluster::DEFAULT_APPEND_PIPELINE as u64, env = "SHOAL_APPEND_PIPELINE", value_parser = clap::value_parser!(u64).range(1..=64), help_heading = "Tuning")]
    append_pipeline: u64,
    /// Skip a shard's heartbeat to a follower that acknowledged replication within the last
    /// heartbeat interval (under steady writes, heartbeats then only go to idle shards).
    #[arg(long, default_value_t = true, env = "SHOAL_HEARTBEAT_SUPPRESSION", action = clap::ArgAction::Set, help_heading = "Tuning")]
    heartbeat_suppression: bool,
    /// How long, in microseconds, an AppendEntries that only moves a follower's commit index
    /// forward waits for one with new entries, which replaces it (0: sent at once).
    #[arg(long, default_value_t = shoal_cluster::TransportOptions::default().commit_update_delay.as_micros() as u64, env = "SHOAL_COMMIT_UPDATE_DELAY_US", value_parser = clap::value_parser!(u64).range(0..=100_000), help_heading = "Tuning")]
    commit_update_delay_us: u64,
    /// How often, in milliseconds, each shard leader checks whether to hand the shard back
    /// to its preferred leader (the node that led it at bootstrap), once that node is back
    /// and caught up, so leaders spread out again after a failover (0: never).
    #[arg(long, default_value_t = Tuning::default().leader_balance_interval.as_millis() as u64, help_heading = "Tuning")]
    leader_balance_interval_ms: u64,
    /// Log entries between snapshots of a shard (the log before a snapshot is discarded).
    #[arg(long, default_value_t = Tuning::default().snapshot_every, help_heading = "Tuning")]
    snapshot_every: u64,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(
        long,
        default_value = "info,openraft=error,fjall=warn,lsm_tree=warn",
        env = "SHOAL_LOG"
    )]
    log_level: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(args: &ServerArgs) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).map_err(|e| {
        format!(
            "--log-level {:?} is not a valid filter: {e}",
            args.log_level
        )
    })?;
    use std::io::IsTerminal;
    // Colour codes only for a person watching a terminal, never in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// `--grpc-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
enum GrpcAddr {
    Off,
    At(SocketAddr),
}

fn parse_grpc_addr(text: &str) -> Result<GrpcAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(GrpcAddr::Off);
    }
    text.parse().map(GrpcAddr::At).map_err(|e| {
        format!("{e}: give HOST:PORT (an IP address and a port, e.g. 127.0.0.1:50051) or `off`")
    })
}

async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("{flag} {addr} is already in use by another process; choose a free address with {flag}")
        }
        _ => format!("cannot listen on {flag} {addr}: {e}"),
    })
}

/// Parses `MIN-MAX` milliseconds.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let bad =
        || format!("--election-timeout-ms {text:?} is not MIN-MAX in milliseconds, e.g. 300-600");
    let (min, max) = text.split_once('-').ok_or_else(bad)?;
    let (min, max): (u64, u64) = (
        min.trim().parse().map_err(|_| bad())?,
        max.trim().parse().map_err(|_| bad())?,
    );
    if min < 30 || max <= min {
        return Err(format!(
            "--election-timeout-ms {text:?}: MIN must be at least 30 and below MAX"
        ));
    }
    Ok((min, max))
}

pub async fn run(args: ServerArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// A panic while the storage engine recovers the data directory can abort the process from
/// inside fjall (an assertion on damaged metadata, then a poisoned lock while unwinding), so
/// no error ever reaches `serve`: say here which directory is damaged and what to do.
fn explain_recovery_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(dir) = shoal_storage::recovering_dir() {
            eprintln!(
                "error: the storage engine failed while recovering {} ({info}): its files are damaged. \
                 Move that directory aside and start this node again on an empty one with --rejoin, \
                 so the other nodes copy its replicas back (a single node has no other copy)",
                dir.display()
            );
        }
        previous(info);
    }));
}

async fn serve(args: ServerArgs) -> Result<(), String> {
    init_logging(&args)?;
    explain_recovery_panics();
    let mut signals = StopSignals::install()?;
    shoal_tls::install_provider();
    let mut listening = vec![
        ("--resp-addr", args.resp_addr.to_string()),
        ("--http-addr", args.http_addr.to_string()),
    ];
    if let GrpcAddr::At(addr) = args.grpc_addr {
        listening.push(("--grpc-addr", addr.to_string()));
    }
    if let Some(addr) = &args.peer_addr {
        listening.push(("--peer-addr", addr.clone()));
    }
    if let Some(addr) = &args.gossip_addr {
        listening.push(("--gossip-addr", addr.clone()));
    }
    let tls = args.security.check(&crate::security::Listening {
        addrs: listening,
        peers: args.peer_addr.is_some(),
        fault_injection: args.fault_injection,
    })?;
    let resp_listener = bind("--resp-addr", args.resp_addr).await?;
    let http_listener = bind("--http-addr", args.http_addr).await?;
    let resp_addr = resp_listener.local_addr().map_err(|e| e.to_string())?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;
    let grpc_listener = match args.grpc_addr {
        GrpcAddr::Off => None,
        GrpcAddr::At(addr) => Some(bind("--grpc-addr", addr).await?),
    };
    let grpc_addr = match &grpc_listener {
        Some(listener) => Some(listener.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };

    let initial_cluster = match &args.initial_cluster {
        Some(spec) => parse_initial_cluster(spec)?,
        None => Vec::new(),
    };
    let peer_addr = args.peer_addr.clone();
    if let (Some(addr), false) = (&peer_addr, initial_cluster.is_empty()) {
        match initial_cluster.iter().find(|(id, _)| *id == args.id) {
            Some((_, listed)) if listed != addr => {
                return Err(format!(
                    "--peer-addr {addr} differs from node {}'s entry {listed} in --initial-cluster; make them match",
                    args.id
                ));
            }
            _ => {}
        }
    }
    let election_timeout_ms = parse_range(&args.election_timeout_ms)?;
    let fd_limit = crate::fds::raise_open_file_limit();
    let fd_plan = crate::fds::plan(fd_limit.soft, args.max_connections)?;
    if fd_plan.clients < args.max_connections {
        let warning = format!(
            "--max-connections {} lowered to {} to fit the open-file limit of {} ({} for storage files, {} in reserve); raise the limit (ulimit -n, LimitNOFILE=) to allow more",
            args.max_connections,
            fd_plan.clients,
            fd_limit.soft,
            fd_plan.storage_files,
            crate::fds::RESERVED_FDS
        );
        tracing::warn!("{warning}");
        eprintln!("warning: {warning}");
    }
    let config = NodeConfig {
        id: args.id,
        data_dir: args.data_dir.clone(),
        shards: args.shards,
        resp_addr: resp_addr.to_string(),
        http_addr: http_addr.to_string(),
        grpc_addr: grpc_addr.map(|a| a.to_string()).unwrap_or_default(),
        limits: Limits {
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
        },
        allow_flush: args.allow_flush,
        max_keys_reply: args.max_keys_reply,
        cluster: ClusterConfig {
            peer_addr,
            initial_cluster,
            replication: args.replication,
            fault_injection: args.fault_injection,
            rejoin: args.rejoin,
            join: args.join.clone(),
        },
    };
    let tuning = Tuning {
        election_timeout_ms,
        heartbeat_ms: (election_timeout_ms.0 / 3).max(10),
        // Heartbeats are suppressed for a heartbeat interval after an acknowledged
        // AppendEntries (the node clamps it to what the election timeout allows).
        heartbeat_min_interval_ms: if args.heartbeat_suppression {
            (election_timeout_ms.0 / 3).max(10)
        } else {
            0
        },
        unsafe_unconfirmed_reads: args.unsafe_unconfirmed_reads,
        max_inflight_entries: args.max_inflight_entries,
        max_pending_per_shard: args.max_pending_per_shard,
        snapshot_every: args.snapshot_every,
        memory: MemoryBudget::split(
            args.memory_budget_mib.saturating_mul(1 << 20),
            args.record_cache_mib.map(|mib| mib.saturating_mul(1 << 20)),
        )?,
        raft_threads: args.raft_threads,
        group_commit_wait: std::time::Duration::from_micros(args.group_commit_wait_us),
        leader_balance_interval: std::time::Duration::from_millis(args.leader_balance_interval_ms),
        join_patience: std::time::Duration::from_secs(args.join_timeout_secs),
        dead_after: args.dead_after,
        moves: shoal_cluster::mover::MoveLimits {
            max_moves: args.rebalance_max_moves.max(1),
            max_moves_per_node: args.rebalance_max_moves_per_node.max(1),
            timeout: std::time::Duration::from_secs(args.rebalance_move_timeout_secs.max(1)),
            ..Default::default()
        },
        min_free_disk_bytes: args.min_free_disk_mib.saturating_mul(1 << 20),
        storage_open_files: fd_plan.storage_files,
        gossip: shoal_cluster::gossip::GossipOptions {
            addr: args.gossip_addr.clone(),
            ..Default::default()
        },
        transport: shoal_cluster::TransportOptions {
            snapshot_bytes_per_sec: args.rebalance_max_bytes_per_sec,
            append_pipeline: args.append_pipeline as usize,
            commit_update_delay: std::time::Duration::from_micros(args.commit_update_delay_us),
            tls: tls.clone(),
            ..Default::default()
        },
        ..Tuning::default()
    };
    let node = Node::start_with(config, tuning).await.map_err(|e| {
        format!(
            "cannot start the node with data directory {}: {e}",
            args.data_dir.display()
        )
    })?;

    // Logged once the node is up, so a start that fails says only why.
    tracing::info!(
        open_file_limit = fd_limit.soft,
        raised_from = fd_limit.before,
        storage_files = fd_plan.storage_files,
        reserved = crate::fds::RESERVED_FDS,
        max_connections = fd_plan.clients,
        "file descriptors"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // One limit for both front ends: every client connection costs a descriptor alike.
    let connections = ConnectionLimit::new(fd_plan.clients);
    // Users: known at once from this node's metadata replica (if it hosts one), then kept
    // in step with the metadata leader. With TLS on, nobody is served anonymously.
    let auth = Arc::new(Authenticator::new(tls.is_some()));
    auth.set_users(node.local_users());
    let fetching = node.clone();
    auth.set_fetch(Box::new(move || {
        let node = fetching.clone();
        Box::pin(async move { node.users().await })
    }));
    tokio::spawn(
        UserSync {
            auth: auth.clone(),
            backend: Arc::new(node.clone()),
        }
        .run(stopped(stop_rx.clone())),
    );
    let resp_config = RespConfig {
        connections: connections.clone(),
        tls: tls.clone(),
        auth: auth.clone(),
        ..RespConfig::default()
    };
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(stopped(stop_rx.clone())));
    }
    let resp_task = tokio::spawn(resp::serve(
        resp_listener,
        node.clone(),
        resp_config,
        stopped(stop_rx.clone()),
    ));
    let http_task = tokio::spawn(http::serve(
        http_listener,
        node.clone(),
        HttpConfig {
            connections: connections.clone(),
            tls: tls.clone(),
            allowed_origins: args.security.http_allow_origin.clone(),
            debug_routes: args.fault_injection,
            auth: auth.clone(),
            ..HttpConfig::default()
        },
        stopped(stop_rx.clone()),
    ));
    let mut tasks = vec![("RESP", resp_task), ("HTTP", http_task)];
    if let Some(listener) = grpc_listener {
        let config = GrpcConfig {
            connections,
            tls: tls.clone(),
            auth: auth.clone(),
            ..GrpcConfig::default()
        };
        let serving = grpc::serve(listener, node.clone(), config, stopped(stop_rx));
        tasks.push(("gRPC", tokio::spawn(serving)));
    }
    let grpc_note = match grpc_addr {
        Some(addr) => format!(", gRPC on {addr}"),
        None => String::new(),
    };
    let grpc_shown = grpc_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(%resp_addr, %http_addr, grpc_addr = %grpc_shown, data_dir = %args.data_dir.display(), "serving");
    let (scheme, secured) = match &tls {
        Some(_) => ("https", " (TLS only)"),
        None => ("http", ""),
    };
    eprintln!(
        "shoal node {} serving RESP on {resp_addr}, HTTP on {scheme}://{http_addr}{grpc_note}{secured}",
        args.id
    );
    if tls.is_some() && !auth.has_users() {
        eprintln!(
            "note: this cluster has no users yet, so every client is refused; add the first admin from this machine: shoal user add root --role admin --addr https://{http_addr} --tls-ca <the cluster CA>"
        );
    }
    if tls.is_none() {
        if args.security.insecure_listen_any {
            let warning = "no TLS and --insecure-listen-any: anyone who reaches these ports can read and write every key";
            tracing::warn!("{warning}");
            eprintln!("warning: {warning}");
        } else {
            eprintln!(
                "note: no TLS, so this node listens on loopback only (docs/security.md says how to serve a network)"
            );
        }
    }

    signals.wait().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    for (name, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{name} server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "{name} server task failed"),
        }
    }
    node.shutdown().await;
    Ok(())
}

/// SIGTERM and SIGINT, listened for from the very start so a signal that arrives while
/// the node is still starting is not fatal: it is seen once startup ends and the node
/// stops cleanly.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
            let int = signal(SignalKind::interrupt())
                .map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
            Ok(Self { term, int })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--dead-after`: `300`, `300s`, `5m` or `1h`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: give seconds (90) or 90s, 5m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        other => return Err(format!("unknown unit '{other}' in '{text}': use s, m or h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn dead_after_takes_seconds_or_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(
            parse_duration("5 minutes")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
