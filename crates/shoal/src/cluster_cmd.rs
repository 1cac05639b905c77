//! `shoal cluster ...`: the cluster as one node sees it (`status`: nodes with their state,
//! shards with their slot ranges, leaders and replicas, replica moves in flight), and the
//! commands that change it (`remove-node`, `rebalance pause|resume`) or wait for it
//! (`wait-balanced`, `verify`: see `cluster_verify.rs`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use shoal_core::map::{ClusterView, DiskStatus, MemoryStatus};

use crate::client::{Format, base_url};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show nodes (up/down, addresses) and shards (slots, leader, replicas).
    #[command(
        after_help = "Examples:\n  shoal cluster status --addr 127.0.0.1:7101\n  shoal cluster status --output json"
    )]
    Status(StatusArgs),
    /// Drain a node: its replicas move to the others, then it leaves the cluster (and
    /// refuses to serve from then on). Refused when the rest could not hold every shard's
    /// replicas.
    #[command(
        after_help = "Examples:\n  shoal cluster remove-node --addr 127.0.0.1:7101 --node 5 --wait"
    )]
    RemoveNode(RemoveNodeArgs),
    /// Pause or resume replica moves (moves in flight finish).
    Rebalance(RebalanceArgs),
    /// Wait until no replica move is in flight or needed, with a progress bar; exits 1 on
    /// timeout.
    WaitBalanced(WaitArgs),
    /// Check the cluster is healthy and balanced: every slot in one shard, every shard with
    /// its replication factor of voters, all up, no move in flight or needed, leaders
    /// spread within one of even. Prints each finding; exits 0 only when all hold.
    Verify(StatusArgs),
}

#[derive(Debug, Args)]
pub struct RemoveNodeArgs {
    /// HTTP address of any node: host:port, http://host:port or https://host:port.
    #[arg(long, env = "SHOAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Id of the node to remove.
    #[arg(long)]
    pub node: u64,
    /// Wait (with a progress bar) until the node has left the cluster.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebalanceAction {
    Pause,
    Resume,
}

#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// `pause`: start no new replica move; `resume`: start them again.
    #[arg(value_enum)]
    pub action: RebalanceAction,
    /// HTTP address of any node: host:port, http://host:port or https://host:port.
    #[arg(long, env = "SHOAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// HTTP address of any node: host:port, http://host:port or https://host:port.
    #[arg(long, env = "SHOAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// HTTP address of any node: host:port, http://host:port or https://host:port.
    #[arg(long, env = "SHOAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// `human`: tables; `json`: the node's cluster view as one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    #[command(flatten)]
    pub access: crate::client_access::ClientAccessArgs,
}

pub async fn run(cmd: ClusterCommand) -> ExitCode {
    match &cmd {
        ClusterCommand::RemoveNode(a) => a.access.apply(),
        ClusterCommand::Rebalance(a) => a.access.apply(),
        ClusterCommand::WaitBalanced(a) => a.access.apply(),
        ClusterCommand::Verify(a) | ClusterCommand::Status(a) => a.access.apply(),
    }
    match cmd {
        ClusterCommand::RemoveNode(args) => crate::cluster_verify::remove_node(args).await,
        ClusterCommand::Rebalance(args) => crate::cluster_verify::rebalance(args).await,
        ClusterCommand::WaitBalanced(args) => crate::cluster_verify::wait_balanced(args).await,
        ClusterCommand::Verify(args) => crate::cluster_verify::verify(args).await,
        ClusterCommand::Status(args) => match fetch_with_progress(&args.addr).await {
            Ok(view) => {
                match args.output {
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&view).expect("a view serialises")
                    ),
                    Format::Human => print!("{}", render(&view)),
                }
                ExitCode::SUCCESS
            }
            Err(message) => {
                match args.output {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({"error": {"code": "unreachable", "message": message}})
                    ),
                    Format::Human => eprintln!("error: {message}"),
                }
                ExitCode::from(2)
            }
        },
    }
}

/// The view from `addr`, with each move's progress filled in from its group's leader (only
/// a group's leader knows how far its new replica has come).
pub(crate) async fn fetch_with_progress(addr: &str) -> Result<ClusterView, String> {
    let mut view = fetch(addr).await?;
    for i in 0..view.moves.len() {
        if view.moves[i].matched.is_some() || view.moves[i].snapshot_sent.is_some() {
            continue;
        }
        let group = view.moves[i].record.shard;
        let leader = view
            .shards
            .iter()
            .find(|s| s.id == group)
            .and_then(|s| s.leader);
        let Some(http) = leader
            .and_then(|l| view.nodes.iter().find(|n| n.info.id == l))
            .map(|n| n.info.http_addr.clone())
            .filter(|a| !a.is_empty())
        else {
            continue;
        };
        if let Ok(theirs) = fetch(&http).await
            && let Some(m) = theirs.moves.iter().find(|m| m.record.shard == group)
        {
            view.moves[i] = m.clone();
        }
    }
    Ok(view)
}

/// `addr`'s base URL and an HTTP client for the cluster commands, with `timeout` per request.
pub(crate) fn http_client(
    addr: &str,
    timeout: Duration,
) -> Result<(String, reqwest::Client), String> {
    let base = base_url(addr).map_err(|e| e.to_string())?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    let access = crate::client_access::ClientAccessArgs::current();
    if let Some(tls) = access.rustls()? {
        builder = builder.use_preconfigured_tls(tls);
    }
    builder = builder.default_headers(access.http_headers()?);
    let http = builder.build().map_err(|e| e.to_string())?;
    Ok((base, http))
}

/// What a cluster command says when `addr` does not answer.
pub(crate) fn unreachable(addr: &str, e: reqwest::Error) -> String {
    format!("cannot reach a shoal node at {addr}: {e}; is --addr a node's HTTP address?")
}

pub(crate) async fn fetch(addr: &str) -> Result<ClusterView, String> {
    let (base, http) = http_client(addr, Duration::from_secs(10))?;
    let response = http
        .get(format!("{base}/v1/cluster"))
        .send()
        .await
        .map_err(|e| unreachable(addr, e))?;
    if !response.status().is_success() {
        return Err(format!("{addr} answered {}", response.status()));
    }
    response
        .json::<ClusterView>()
        .await
        .map_err(|e| format!("{addr} did not answer like a shoal node: {e}"))
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// "55202 MiB", or with a warning once free space is in the reserve (writes refused).
fn disk_free(disk: DiskStatus) -> String {
    let mib = |bytes: u64| bytes >> 20;
    if disk.is_low() {
        format!(
            "{} MiB, LOW (reserve {} MiB): writes refused",
            mib(disk.free_bytes),
            mib(disk.reserve_bytes)
        )
    } else {
        format!("{} MiB", mib(disk.free_bytes))
    }
}

/// "412 of 1024 MiB": the resident set against the budget (`--memory-budget-mib`).
fn memory_use(memory: MemoryStatus) -> String {
    let mib = |bytes: u64| bytes >> 20;
    format!(
        "{} of {} MiB",
        mib(memory.rss_bytes),
        mib(memory.budget_bytes)
    )
}

/// A move's snapshot transfer: "12.0 of 40.0 MiB", its rate, and the time left at it.
fn snapshot_columns(m: &shoal_core::map::MoveView) -> (String, String, String) {
    let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
    match (m.snapshot_sent, m.snapshot_total, m.snapshot_bytes_per_sec) {
        (Some(sent), Some(total), Some(rate)) => (
            format!("{} of {} MiB", mib(sent), mib(total)),
            format!("{} MiB/s", mib(rate)),
            total
                .saturating_sub(sent)
                .checked_div(rate)
                .map_or("-".to_string(), |secs| format!("{secs} s")),
        ),
        _ => ("-".to_string(), "-".to_string(), "-".to_string()),
    }
}

/// `90` -> "1m30s", `12` -> "12s", `7300` -> "2h1m".
fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

pub(crate) fn render(view: &ClusterView) -> String {
    let up = view.nodes.iter().filter(|n| n.up).count();
    let led = view.shards.iter().filter(|s| s.leader.is_some()).count();
    let low_disk = view
        .nodes
        .iter()
        .filter(|n| n.disk.is_some_and(|d| d.is_low()))
        .count();
    let mut out = format!(
        "cluster {} (epoch {}), as seen by node {}: {}/{} nodes up, {}/{} shards with a leader{}\n\n",
        view.cluster_id,
        view.epoch,
        view.this_node,
        up,
        view.nodes.len(),
        led,
        view.shards.len(),
        match low_disk {
            0 => String::new(),
            1 => ", 1 node low on disk".to_string(),
            n => format!(", {n} nodes low on disk"),
        }
    );
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let replicas = |id: u64| {
        view.shards
            .iter()
            .filter(|s| s.replicas.contains(&id) || s.learners.contains(&id))
            .count()
    };
    out.push_str(&table(
        &[
            "NODE",
            "UP",
            "STATE",
            "REPLICAS",
            "RESP",
            "HTTP",
            "PEER",
            "LEADS",
            "DISK FREE",
            "MEMORY",
        ],
        view.nodes
            .iter()
            .map(|n| {
                let leads = view
                    .shards
                    .iter()
                    .filter(|s| s.leader == Some(n.info.id))
                    .count();
                vec![
                    n.info.id.to_string(),
                    match n.down_for_ms {
                        _ if n.up && n.suspect => "suspect".to_string(),
                        _ if n.up => "up".to_string(),
                        Some(ms) => format!("down {}", short_duration(ms / 1000)),
                        None => "down".to_string(),
                    },
                    n.state.as_str().to_string(),
                    replicas(n.info.id).to_string(),
                    dash(&n.info.resp_addr),
                    dash(&n.info.http_addr),
                    dash(&n.info.peer_addr),
                    leads.to_string(),
                    n.disk.map_or("-".to_string(), disk_free),
                    n.memory.map_or("-".to_string(), memory_use),
                ]
            })
            .collect(),
    ));
    out.push('\n');
    out.push_str(&table(
        &["SHARD", "SLOTS", "LEADER", "REPLICAS", "APPLIED"],
        view.shards
            .iter()
            .map(|s| {
                vec![
                    s.id.to_string(),
                    format!("{}-{}", s.range.start, s.range.last()),
                    s.leader.map_or("none".to_string(), |l| l.to_string()),
                    s.replicas
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    s.last_applied.to_string(),
                ]
            })
            .collect(),
    ));
    out.push('\n');
    if !view.under_replicated.is_empty() {
        let groups: Vec<String> = view
            .under_replicated
            .iter()
            .map(|g| g.to_string())
            .collect();
        out.push_str(&format!(
            "under-replicated: {} group(s) with fewer than {} healthy voters: {}\n",
            groups.len(),
            view.replication,
            groups.join(", ")
        ));
    }
    if let Some(why) = &view.healing_held {
        out.push_str(&format!("self-healing held: {why}\n"));
    }
    let limits = view.rebalance_limits;
    let pace = match limits.max_bytes_per_sec {
        0 => "unpaced".to_string(),
        b => format!("{} MiB/s", b >> 20),
    };
    out.push_str(&format!(
        "rebalancing: {} move(s) in flight, {} more needed{}; limits: {} move(s) at once, {} per node, \
         snapshots {pace}, {} s per move; {}\n",
        view.moves.len(),
        view.moves_pending.saturating_sub(view.moves.len() as u64),
        if view.rebalance_paused {
            " (paused: shoal cluster rebalance resume)"
        } else {
            ""
        },
        limits.max_moves,
        limits.max_moves_per_node,
        limits.move_timeout_secs,
        match view.dead_after_secs {
            0 => "dead nodes never replaced (--dead-after 0)".to_string(),
            s => format!("a node down {} is replaced", short_duration(s)),
        },
    ));
    if !view.moves.is_empty() {
        let node = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        out.push_str(&table(
            &[
                "GROUP",
                "ADD",
                "REMOVE",
                "STEP",
                "SNAPSHOT",
                "RATE",
                "ETA",
                "CAUGHT UP",
                "FOR",
            ],
            view.moves
                .iter()
                .map(|m| {
                    let caught_up = match (m.matched, m.last_index) {
                        (Some(matched), Some(last)) if last > 0 => {
                            format!("{}% ({matched} of {last})", matched * 100 / last)
                        }
                        (None, Some(_)) => "0% (snapshot)".to_string(),
                        _ => "-".to_string(),
                    };
                    let elapsed =
                        shoal_cluster::now_ms().saturating_sub(m.record.started_ms) / 1000;
                    let (snapshot, rate, eta) = snapshot_columns(m);
                    vec![
                        if m.record.shard == 0 {
                            "meta".to_string()
                        } else {
                            m.record.shard.to_string()
                        },
                        node(m.record.add),
                        node(m.record.remove),
                        m.step.clone(),
                        snapshot,
                        rate,
                        eta,
                        caught_up,
                        format!("{elapsed} s"),
                    ]
                })
                .collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::map::{NodeInfo, NodeView, ShardView};
    use shoal_core::shard::SlotRange;

    #[test]
    fn renders_nodes_and_shards_as_aligned_tables() {
        let node = |id: u64, up: bool| NodeView {
            info: NodeInfo {
                id,
                peer_addr: format!("127.0.0.1:720{id}"),
                resp_addr: format!("127.0.0.1:700{id}"),
                http_addr: String::new(),
                grpc_addr: String::new(),
            },
            up,
            state: Default::default(),
            disk: up.then_some(DiskStatus {
                free_bytes: 10 << 20,
                reserve_bytes: 1 << 30,
            }),
            memory: up.then_some(MemoryStatus {
                rss_bytes: 412 << 20,
                budget_bytes: 1 << 30,
            }),
            down_for_ms: (!up).then_some(12_000),
            suspect: false,
        };
        let view = ClusterView {
            cluster_id: "abc".into(),
            epoch: 1,
            this_node: 1,
            nodes: vec![node(1, true), node(2, false)],
            shards: vec![
                ShardView {
                    id: 1,
                    range: SlotRange {
                        start: 0,
                        end: 8192,
                    },
                    replicas: vec![1, 2],
                    learners: Vec::new(),
                    leader: Some(1),
                    last_applied: 7,
                },
                ShardView {
                    id: 2,
                    range: SlotRange {
                        start: 8192,
                        end: 16384,
                    },
                    replicas: vec![2, 1],
                    learners: Vec::new(),
                    leader: None,
                    last_applied: 3,
                },
            ],
            ..Default::default()
        };
        let mut view = view;
        view.under_replicated = vec![1, 2];
        view.healing_held = Some("2 live node(s) cannot hold 3 replicas".into());
        view.dead_after_secs = 300;
        view.replication = 3;
        let text = render(&view);
        assert!(
            text.contains("under-replicated: 2 group(s) with fewer than 3 healthy voters: 1, 2\n"),
            "{text}"
        );
        assert!(
            text.contains("self-healing held: 2 live node(s) cannot hold 3 replicas\n"),
            "{text}"
        );
        assert!(text.contains("; a node down 5m is replaced\n"), "{text}");
        assert!(
            text.contains("1/2 nodes up, 1/2 shards with a leader, 1 node low on disk\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "1      10 MiB, LOW (reserve 1024 MiB): writes refused  412 of 1024 MiB\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "2     down 12s  active  2         127.0.0.1:7002  -     127.0.0.1:7202  0"
            ),
            "{text}"
        );
        assert!(
            text.contains("1      0-8191      1       1,2       7"),
            "{text}"
        );
        assert!(
            text.contains("2      8192-16383  none    2,1       3"),
            "{text}"
        );
    }
}
