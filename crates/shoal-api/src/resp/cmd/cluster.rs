//! Redis Cluster commands rendered from the node's `ClusterView`, so cluster-aware clients
//! learn which node serves which slots, plus READONLY / READWRITE / ASKING.
//!
//! Mapping: a shard's Raft leader plays the Redis "master" of the shard's slot range (its
//! first replica while no leader is known), the other replicas its "replicas". Node ids are
//! rendered as 40 hex digits, the length Redis node ids have.

use bytes::Bytes;
use shoal_core::map::{ClusterView, NodeView, ShardView};
use shoal_core::{Consistency, SLOT_COUNT, key_slot};

use super::args::{is, unknown_subcommand, wrong_args};
use super::{Ctx, Outcome, Session};
use crate::resp::frame::Frame;

const CLUSTER_HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node.",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings.",
    "HELP",
    "    Print this help.",
];

pub(super) fn cluster(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let sub = &args[1];
    let expect = |argc: usize, name: &str| {
        if args.len() == argc {
            Ok(())
        } else {
            Err(wrong_args(&format!("cluster|{name}")))
        }
    };
    let reply = if is(sub, "KEYSLOT") {
        expect(3, "keyslot")?;
        Frame::Integer(key_slot(&args[2]).into())
    } else if is(sub, "MYID") {
        expect(2, "myid")?;
        Frame::bulk(node_id(ctx.node.id()))
    } else if is(sub, "INFO") {
        expect(2, "info")?;
        Frame::Verbatim(info(&ctx.node.cluster_view()))
    } else if is(sub, "SLOTS") {
        expect(2, "slots")?;
        session.routes_itself = true;
        slots(&ctx.node.cluster_view())
    } else if is(sub, "SHARDS") {
        expect(2, "shards")?;
        session.routes_itself = true;
        shards(&ctx.node.cluster_view())
    } else if is(sub, "NODES") {
        expect(2, "nodes")?;
        session.routes_itself = true;
        Frame::Verbatim(nodes(&ctx.node.cluster_view()))
    } else if is(sub, "HELP") {
        Frame::Array(
            CLUSTER_HELP
                .iter()
                .map(|line| Frame::simple(*line))
                .collect(),
        )
    } else {
        return Err(unknown_subcommand(sub, "CLUSTER"));
    };
    Ok(Outcome::Now(reply))
}

/// Reads on this connection may be served by any replica (possibly stale), as Redis
/// Cluster's READONLY allows reads from replicas.
pub(super) fn readonly(_: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    session.consistency = Consistency::Stale;
    Ok(Outcome::Now(Frame::ok()))
}

pub(super) fn readwrite(_: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    session.consistency = Consistency::Linearizable;
    Ok(Outcome::Now(Frame::ok()))
}

/// Slots never migrate mid-request in shoal (any node routes any key), so ASKING has
/// nothing to do.
pub(super) fn asking(_: &Ctx, _: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    Ok(Outcome::Now(Frame::ok()))
}

fn node_id(id: u64) -> String {
    format!("{id:040x}")
}

/// The node standing in for the Redis master of `shard`.
fn owner(shard: &ShardView) -> Option<u64> {
    shard.leader.or_else(|| shard.replicas.first().copied())
}

/// `host:port` split into its parts; IPv6 brackets removed. Port 0 if unparseable.
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host.to_string(), port.parse().unwrap_or(0))
        }
        None => (addr.to_string(), 0),
    }
}

fn find_node(view: &ClusterView, id: u64) -> Option<&NodeView> {
    view.nodes.iter().find(|n| n.info.id == id)
}

/// A shard's nodes, owner first.
fn shard_nodes(shard: &ShardView) -> Vec<u64> {
    let owner = owner(shard);
    owner
        .into_iter()
        .chain(shard.replicas.iter().copied().filter(|r| Some(*r) != owner))
        .collect()
}

fn info(view: &ClusterView) -> String {
    let mut owners: Vec<u64> = view.shards.iter().filter_map(owner).collect();
    owners.sort_unstable();
    owners.dedup();
    // Any node routes any key, so the cluster is usable as soon as it answers at all.
    format!(
        "cluster_state:ok\r\ncluster_slots_assigned:{SLOT_COUNT}\r\ncluster_slots_ok:{SLOT_COUNT}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\n\
         cluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\n\
         cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n",
        view.nodes.len(),
        owners.len(),
        view.epoch,
        view.epoch,
    )
}

/// `CLUSTER SLOTS`: `[start, end, [host, port, id], replicas...]` per shard.
fn slots(view: &ClusterView) -> Frame {
    let entries = view.shards.iter().map(|shard| {
        let mut entry = vec![
            Frame::Integer(shard.range.start.into()),
            Frame::Integer(shard.range.last().into()),
        ];
        for id in shard_nodes(shard) {
            let Some(node) = find_node(view, id) else {
                continue;
            };
            let (host, port) = split_addr(&node.info.resp_addr);
            entry.push(Frame::Array(vec![
                Frame::bulk(host),
                Frame::Integer(port.into()),
                Frame::bulk(node_id(id)),
            ]));
        }
        Frame::Array(entry)
    });
    Frame::Array(entries.collect())
}

/// `CLUSTER SHARDS`: one map per shard with its slot range and nodes.
fn shards(view: &ClusterView) -> Frame {
    let entries = view.shards.iter().map(|shard| {
        let owner = owner(shard);
        let nodes = shard_nodes(shard)
            .into_iter()
            .filter_map(|id| find_node(view, id))
            .map(|node| {
                let (host, port) = split_addr(&node.info.resp_addr);
                let role = if Some(node.info.id) == owner {
                    "master"
                } else {
                    "replica"
                };
                Frame::Map(vec![
                    (Frame::bulk("id"), Frame::bulk(node_id(node.info.id))),
                    (Frame::bulk("port"), Frame::Integer(port.into())),
                    (Frame::bulk("ip"), Frame::bulk(host.clone())),
                    (Frame::bulk("endpoint"), Frame::bulk(host)),
                    (Frame::bulk("role"), Frame::bulk(role)),
                    (
                        Frame::bulk("replication-offset"),
                        Frame::Integer(shard.last_applied.min(i64::MAX as u64) as i64),
                    ),
                    (
                        Frame::bulk("health"),
                        Frame::bulk(if node.up { "online" } else { "failed" }),
                    ),
                ])
            })
            .collect();
        Frame::Map(vec![
            (
                Frame::bulk("slots"),
                Frame::Array(vec![
                    Frame::Integer(shard.range.start.into()),
                    Frame::Integer(shard.range.last().into()),
                ]),
            ),
            (Frame::bulk("nodes"), Frame::Array(nodes)),
        ])
    });
    Frame::Array(entries.collect())
}

/// `CLUSTER NODES`: one line per node; every node is a "master" of the slot ranges whose
/// shard it leads (shoal nodes hold replicas of many shards at once, which Redis's
/// master/replica node roles cannot express).
fn nodes(view: &ClusterView) -> String {
    let mut text = String::new();
    for node in &view.nodes {
        let (host, port) = split_addr(&node.info.resp_addr);
        let bus_port = u32::from(port) + 10_000;
        let mut flags = String::new();
        if node.info.id == view.this_node {
            flags.push_str("myself,");
        }
        flags.push_str("master");
        if !node.up {
            flags.push_str(",fail");
        }
        let link = if node.up { "connected" } else { "disconnected" };
        text.push_str(&format!(
            "{} {host}:{port}@{bus_port} {flags} - 0 0 {} {link}",
            node_id(node.info.id),
            view.epoch
        ));
        for shard in view
            .shards
            .iter()
            .filter(|s| owner(s) == Some(node.info.id))
        {
            let (start, last) = (shard.range.start, shard.range.last());
            if start == last {
                text.push_str(&format!(" {start}"));
            } else {
                text.push_str(&format!(" {start}-{last}"));
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use shoal_core::map::NodeInfo;
    use shoal_core::shard::SlotRange;

    use super::*;

    fn view() -> ClusterView {
        let node = |id, port| NodeView {
            info: NodeInfo {
                id,
                peer_addr: String::new(),
                resp_addr: format!("127.0.0.1:{port}"),
                http_addr: String::new(),
                grpc_addr: String::new(),
            },
            up: true,
            state: Default::default(),
            disk: None,
            memory: None,
            down_for_ms: None,
            suspect: false,
        };
        let shard = |id, start, end, leader| ShardView {
            id,
            range: SlotRange { start, end },
            replicas: vec![1, 2],
            learners: Vec::new(),
            leader,
            last_applied: 7,
        };
        ClusterView {
            cluster_id: "c".into(),
            epoch: 3,
            this_node: 1,
            nodes: vec![node(1, 7001), node(2, 7002)],
            shards: vec![shard(1, 0, 8192, Some(2)), shard(2, 8192, 16384, None)],
            ..Default::default()
        }
    }

    #[test]
    fn slots_put_the_leader_first() {
        let Frame::Array(entries) = slots(&view()) else {
            panic!("not an array")
        };
        assert_eq!(
            entries[0],
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(8191),
                Frame::Array(vec![
                    Frame::bulk("127.0.0.1"),
                    Frame::Integer(7002),
                    Frame::bulk(node_id(2))
                ]),
                Frame::Array(vec![
                    Frame::bulk("127.0.0.1"),
                    Frame::Integer(7001),
                    Frame::bulk(node_id(1))
                ]),
            ])
        );
    }

    #[test]
    fn nodes_lines() {
        let text = nodes(&view());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{} 127.0.0.1:7001@17001 myself,master - 0 0 3 connected 8192-16383",
                node_id(1)
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "{} 127.0.0.1:7002@17002 master - 0 0 3 connected 0-8191",
                node_id(2)
            )
        );
        assert!(info(&view()).contains("cluster_size:2\r\n"));
    }

    #[test]
    fn addresses() {
        assert_eq!(split_addr("10.0.0.1:6379"), ("10.0.0.1".to_string(), 6379));
        assert_eq!(split_addr("[::1]:7000"), ("::1".to_string(), 7000));
        assert_eq!(split_addr("nohost"), ("nohost".to_string(), 0));
    }
}
