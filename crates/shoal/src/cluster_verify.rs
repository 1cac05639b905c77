//! The cluster commands that change membership or wait on it: `remove-node` (optionally
//! waiting, with a progress bar, until the node has left), `rebalance pause|resume`,
//! `wait-balanced`, and `verify`, which checks a live cluster's shape from one node's view.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use shoal_core::map::{ClusterView, NodeState};
use shoal_core::slot::SLOT_COUNT;

use crate::client::Format;
use crate::cluster_cmd::{
    RebalanceAction, RebalanceArgs, RemoveNodeArgs, StatusArgs, WaitArgs, fetch, http_client,
    unreachable,
};

/// How often the waiting commands look at the cluster.
const POLL: Duration = Duration::from_millis(500);

async fn post(addr: &str, path: &str) -> Result<ClusterView, String> {
    let (base, http) = http_client(addr, Duration::from_secs(30))?;
    let response = http
        .post(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| unreachable(addr, e))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("").to_string();
        return Err(format!("{addr} answered {status}: {message}"));
    }
    response
        .json::<ClusterView>()
        .await
        .map_err(|e| format!("{addr} did not answer like a shoal node: {e}"))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

/// Replicas (voters and learners, the metadata group's included) node `id` holds.
fn held_by(view: &ClusterView, id: u64) -> u64 {
    let data = view
        .shards
        .iter()
        .filter(|s| s.replicas.contains(&id) || s.learners.contains(&id))
        .count();
    let meta = usize::from(view.meta.contains(&id) || view.meta_learners.contains(&id));
    (data + meta) as u64
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len.max(1));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, ETA {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

pub(crate) async fn remove_node(args: RemoveNodeArgs) -> ExitCode {
    let view = match post(
        &args.addr,
        &format!("/v1/cluster/nodes/{}/remove", args.node),
    )
    .await
    {
        Ok(view) => view,
        Err(e) => return fail(&e),
    };
    if view.nodes.iter().all(|n| n.info.id != args.node) {
        println!("node {} is removed (epoch {})", args.node, view.epoch);
        return ExitCode::SUCCESS;
    }
    if !args.wait {
        match args.output {
            Format::Json => println!(
                "{}",
                serde_json::json!({"draining": args.node, "epoch": view.epoch})
            ),
            Format::Human => println!(
                "node {} is draining: its {} replica(s) move to the other nodes, then it leaves \
                 (watch: shoal cluster status --addr {})",
                args.node,
                held_by(&view, args.node),
                args.addr
            ),
        }
        return ExitCode::SUCCESS;
    }
    let total = held_by(&view, args.node);
    let progress = bar(total, &format!("draining node {}", args.node));
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        if let Ok(view) = fetch(&args.addr).await {
            if view.nodes.iter().all(|n| n.info.id != args.node) {
                progress.finish_and_clear();
                println!(
                    "node {} removed: it holds no replica and is out of the cluster (epoch {}); stop it",
                    args.node, view.epoch
                );
                return ExitCode::SUCCESS;
            }
            progress.set_position(total.saturating_sub(held_by(&view, args.node)));
        }
        if Instant::now() >= deadline {
            progress.abandon();
            return fail(&format!(
                "node {} still holds replicas after {} s (shoal cluster status shows the moves)",
                args.node, args.timeout_secs
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn rebalance(args: RebalanceArgs) -> ExitCode {
    let (path, done) = match args.action {
        RebalanceAction::Pause => (
            "pause",
            "paused: no new replica move starts (moves in flight finish)",
        ),
        RebalanceAction::Resume => ("resume", "resumed"),
    };
    match post(&args.addr, &format!("/v1/cluster/rebalance/{path}")).await {
        Ok(_) => {
            println!("rebalancing {done}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub(crate) async fn wait_balanced(args: WaitArgs) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut progress: Option<(ProgressBar, u64)> = None;
    loop {
        match fetch(&args.addr).await {
            Ok(view) => {
                let pending = view.moves_pending.max(view.moves.len() as u64);
                // Balanced means leaders too: leader balancing follows the last moves.
                if pending == 0 && leader_spread(&view).is_none() {
                    if let Some((bar, _)) = progress {
                        bar.finish_and_clear();
                    }
                    println!(
                        "balanced: {} nodes, {} shards, leaders even (epoch {})",
                        view.nodes.len(),
                        view.shards.len(),
                        view.epoch
                    );
                    return ExitCode::SUCCESS;
                }
                let (bar, total) =
                    progress.get_or_insert_with(|| (bar(pending, "replica moves"), pending));
                if pending > *total {
                    *total = pending;
                    bar.set_length(pending);
                }
                bar.set_position(*total - pending);
            }
            Err(e) => {
                if let Some((bar, _)) = &progress {
                    bar.println(format!("warning: {e}"));
                }
            }
        }
        if Instant::now() >= deadline {
            return fail(&format!(
                "not balanced after {} s (shoal cluster status shows the moves)",
                args.timeout_secs
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `verify` found wrong; empty when the cluster is healthy and balanced.
pub(crate) fn findings(view: &ClusterView) -> Vec<String> {
    let mut found = Vec::new();
    // Every slot in exactly one shard.
    let mut ranges: Vec<(u32, u32, u32)> = view
        .shards
        .iter()
        .map(|s| (u32::from(s.range.start), s.range.end, s.id))
        .collect();
    ranges.sort();
    let mut next = 0u32;
    for (start, end, id) in &ranges {
        if *start != next {
            found.push(format!(
                "slots {next}..{start} are in no shard, or overlap shard {id}'s"
            ));
        }
        next = *end;
    }
    if next != u32::from(SLOT_COUNT) {
        found.push(format!("slots {next}..{SLOT_COUNT} are in no shard"));
    }
    let active = active_nodes(view);
    for node in &view.nodes {
        if !node.up {
            found.push(format!("node {} is down", node.info.id));
        }
        if node.state != NodeState::Active {
            found.push(format!("node {} is {}", node.info.id, node.state.as_str()));
        }
    }
    let rf = (view.replication as usize).min(active.len()).max(1);
    for shard in &view.shards {
        if shard.replicas.len() != rf {
            found.push(format!(
                "shard {} has {} voters, not {rf}: {:?}",
                shard.id,
                shard.replicas.len(),
                shard.replicas
            ));
        }
        if !shard.learners.is_empty() {
            found.push(format!(
                "shard {} has learners {:?} (a move in flight)",
                shard.id, shard.learners
            ));
        }
        if shard.leader.is_none() {
            found.push(format!("shard {} has no leader", shard.id));
        }
        for r in &shard.replicas {
            if !active.contains(r) {
                found.push(format!(
                    "shard {} has a replica on node {r}, which is not active",
                    shard.id
                ));
            }
        }
    }
    if !view.under_replicated.is_empty() {
        found.push(format!(
            "group(s) {:?} have fewer healthy voters than they should (under-replicated){}",
            view.under_replicated,
            view.healing_held
                .as_ref()
                .map_or(String::new(), |why| format!("; self-healing held: {why}"))
        ));
    }
    if !view.moves.is_empty() {
        found.push(format!("{} replica move(s) in flight", view.moves.len()));
    } else if view.moves_pending > 0 {
        found.push(format!(
            "{} replica move(s) needed to reach the target placement",
            view.moves_pending
        ));
    }
    if let Some(uneven) = leader_spread(view) {
        found.push(uneven);
    }
    found
}

/// The ids of the active nodes (not joining or draining).
fn active_nodes(view: &ClusterView) -> Vec<u64> {
    view.nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .map(|n| n.info.id)
        .collect()
}

/// A finding when leaders are not within one of even across the active nodes.
fn leader_spread(view: &ClusterView) -> Option<String> {
    let active = active_nodes(view);
    let leads = |id: u64| view.shards.iter().filter(|s| s.leader == Some(id)).count();
    let counts: Vec<(u64, usize)> = active.iter().map(|id| (*id, leads(*id))).collect();
    let min = counts.iter().map(|c| c.1).min()?;
    let max = counts.iter().map(|c| c.1).max()?;
    (max > min + 1)
        .then(|| format!("leaders are uneven across nodes (node: shards led): {counts:?}"))
}

pub(crate) async fn verify(args: StatusArgs) -> ExitCode {
    let view = match fetch(&args.addr).await {
        Ok(view) => view,
        Err(e) => return fail(&e),
    };
    let found = findings(&view);
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::json!({"ok": found.is_empty(), "epoch": view.epoch, "findings": found})
        ),
        Format::Human => {
            for finding in &found {
                println!("FAIL {finding}");
            }
            if found.is_empty() {
                println!(
                    "ok: {} nodes, {} shards with {} voters each, balanced, leaders even (epoch {})",
                    view.nodes.len(),
                    view.shards.len(),
                    view.replication,
                    view.epoch
                );
            }
        }
    }
    if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::map::{NodeInfo, NodeView, ShardView};
    use shoal_core::shard::SlotRange;

    use super::*;

    fn view() -> ClusterView {
        let node = |id: u64| NodeView {
            info: NodeInfo {
                id,
                peer_addr: String::new(),
                resp_addr: String::new(),
                http_addr: String::new(),
                grpc_addr: String::new(),
            },
            up: true,
            state: NodeState::Active,
            disk: None,
            memory: None,
            down_for_ms: None,
            suspect: false,
        };
        let shard = |id: u32, start: u16, end: u32, replicas: Vec<u64>| ShardView {
            id,
            range: SlotRange { start, end },
            leader: replicas.first().copied(),
            replicas,
            learners: Vec::new(),
            last_applied: 1,
        };
        ClusterView {
            cluster_id: "c".into(),
            epoch: 3,
            nodes: vec![node(1), node(2), node(3)],
            shards: vec![
                shard(1, 0, 8192, vec![1, 2, 3]),
                shard(2, 8192, 16384, vec![2, 3, 1]),
            ],
            replication: 3,
            meta: vec![1, 2, 3],
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_balanced_cluster_has_no_findings() {
        assert_eq!(findings(&view()), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_trouble_is_named() {
        let mut v = view();
        v.shards[0].range.end = 8000;
        v.shards[1].replicas.pop();
        v.shards[1].learners.push(4);
        v.nodes[2].up = false;
        v.moves_pending = 2;
        let found = findings(&v).join("\n");
        for expected in [
            "slots 8000..8192 are in no shard",
            "shard 2 has 2 voters, not 3",
            "shard 2 has learners [4]",
            "node 3 is down",
            "2 replica move(s) needed",
        ] {
            assert!(found.contains(expected), "no {expected:?} in:\n{found}");
        }
    }

    #[test]
    fn uneven_leaders_are_a_finding() {
        let mut v = view();
        v.shards.push(ShardView {
            id: 3,
            range: SlotRange {
                start: 16383,
                end: 16383,
            },
            replicas: vec![1, 2, 3],
            learners: Vec::new(),
            leader: Some(1),
            last_applied: 0,
        });
        v.shards[1].leader = Some(1);
        let found = findings(&v).join("\n");
        assert!(found.contains("leaders are uneven"), "{found}");
    }
}
