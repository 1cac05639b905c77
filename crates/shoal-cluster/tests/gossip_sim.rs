//! Gossip at scale, simulated: hundreds of chitchat instances in one process over chitchat's
//! in-memory transport, configured exactly as a node configures its own
//! (`shoal_cluster::gossip::chitchat_config`), on paused tokio time, so every figure is in
//! simulated seconds however long the CPU takes.
//!
//! Measured: how long until every node has learned of a node that joins, how long until
//! every node has noticed a node that died, and the gossip bytes each node sends per second.
//! The 100-node run is a test with bounds; `cargo test -p shoal-cluster --test gossip_sim
//! -- --ignored --nocapture` also runs 1,000 nodes (minutes of CPU) and prints the figures
//! that docs/benchmarks.md quotes.

use std::net::SocketAddr;
use std::time::Duration;

use chitchat::ChitchatHandle;
use chitchat::transport::ChannelTransport;
use shoal_cluster::gossip::{GossipOptions, chitchat_config};
use tokio::time::Instant;

/// How often the simulation checks every node's view (simulated time).
const CHECK: Duration = Duration::from_millis(50);

struct Sim {
    transport: ChannelTransport,
    nodes: Vec<(u64, ChitchatHandle)>,
    options: GossipOptions,
    /// Uncompressed digests (protocol V0) instead of a node's V1: the same gossip and
    /// timing, far less CPU per simulated second (zstd dominates at 1,000 nodes); bytes
    /// are then an upper bound.
    uncompressed: bool,
}

fn addr(id: u64) -> SocketAddr {
    let port = 10_000 + id as u16;
    ([127, 0, 0, 1], port).into()
}

impl Sim {
    fn new() -> Sim {
        Sim {
            transport: ChannelTransport::with_mtu(65_507),
            nodes: Vec::new(),
            options: GossipOptions::default(),
            uncompressed: false,
        }
    }

    /// Starts node `id`, seeded (like a real node) with three members' addresses.
    async fn spawn(&mut self, id: u64) {
        let seeds = (1..=3)
            .filter(|s| *s != id)
            .map(|s| addr(s).to_string())
            .collect();
        let mut config = chitchat_config(id, 1, "sim", addr(id), seeds, &self.options);
        if self.uncompressed {
            config.protocol_version = chitchat::ProtocolVersion::V0;
        }
        let handle = chitchat::spawn_chitchat(config, Vec::new(), &self.transport)
            .await
            .expect("spawn a simulated node");
        self.nodes.push((id, handle));
    }

    /// Node ids each node sees as live, for every node.
    async fn views(&self) -> Vec<Vec<u64>> {
        let mut views = Vec::with_capacity(self.nodes.len());
        for (_, handle) in &self.nodes {
            let live = handle
                .with_chitchat(|c| {
                    c.live_nodes()
                        .filter_map(|id| id.node_id.parse::<u64>().ok())
                        .collect::<Vec<u64>>()
                })
                .await;
            views.push(live);
        }
        views
    }

    /// Simulated time until `done` holds for every node's live set (panics after `limit`).
    async fn until(&self, what: &str, limit: Duration, done: impl Fn(&[u64]) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if self.views().await.iter().all(|v| done(v)) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?} (simulated)"
            );
            tokio::time::sleep(CHECK).await;
        }
    }
}

/// The figures of one run.
struct Figures {
    nodes: usize,
    converge: Duration,
    join: Duration,
    death: Duration,
    bytes_per_node_per_sec: f64,
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes: converged in {:.1} s, a join known to all in {:.2} s, a death noticed \
             by all in {:.2} s, {:.1} KiB/s of gossip per node",
            self.nodes,
            self.converge.as_secs_f64(),
            self.join.as_secs_f64(),
            self.death.as_secs_f64(),
            self.bytes_per_node_per_sec / 1024.0
        )
    }
}

async fn run(n: u64, uncompressed: bool) -> Figures {
    let mut sim = Sim::new();
    sim.uncompressed = uncompressed;
    for id in 1..n {
        sim.spawn(id).await;
    }
    let members = (n - 1) as usize;
    let converge = sim
        .until("the first nodes converge", Duration::from_secs(300), |v| {
            v.len() == members
        })
        .await;

    // Steady state: bytes on the wire over 10 simulated seconds.
    let before = sim.transport.statistics().num_bytes_total;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sent = sim.transport.statistics().num_bytes_total - before;
    let bytes_per_node_per_sec = sent as f64 / members as f64 / 10.0;

    // A join: node n starts; every node must list it.
    let started = Instant::now();
    sim.spawn(n).await;
    sim.until(
        "every node learns of the join",
        Duration::from_secs(60),
        |v| v.contains(&n),
    )
    .await;
    let join = started.elapsed();

    // A death: node 5 stops; every other node must drop it.
    let (victim, handle) = sim.nodes.remove(4);
    handle.abort();
    drop(handle);
    let death = sim
        .until(
            "every node notices the death",
            Duration::from_secs(120),
            |v| !v.contains(&victim),
        )
        .await;
    for (_, handle) in sim.nodes.drain(..) {
        handle.abort();
    }
    Figures {
        nodes: n as usize,
        converge,
        join,
        death,
        bytes_per_node_per_sec,
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hundred_nodes_learn_a_join_and_a_death_within_seconds() {
    let figures = run(100, false).await;
    println!("{figures:?}");
    // Defaults: a round every 250 ms with three peers; a death is noticed after about
    // phi 8 x the mean heartbeat interval, plus the spread of the news.
    assert!(figures.join < Duration::from_secs(5), "{figures:?}");
    assert!(figures.death < Duration::from_secs(10), "{figures:?}");
    assert!(figures.bytes_per_node_per_sec < 200_000.0, "{figures:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
#[ignore = "minutes of CPU: run by hand for docs/benchmarks.md"]
async fn a_thousand_nodes() {
    let figures = run(1000, true).await;
    println!("{figures:?}");
    assert!(figures.death < Duration::from_secs(60), "{figures:?}");
}
