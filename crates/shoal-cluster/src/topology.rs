//! The cluster's shape at bootstrap, computed identically on every node from the flags
//! (`--initial-cluster`, `--shards`, `--replication`), and the identity a data directory
//! keeps so a restarted node resumes as itself, in its own cluster.
//!
//! Every node derives the same map, so no node has to go first: the metadata group and
//! each shard group are initialised by exactly one node (its first replica in placement
//! order), whatever order the nodes start in.
//!
//! ## The cluster id
//!
//! The cluster id is minted once, when the cluster is formed: a hash of the founding flags
//! (`cluster_id`; the same formula as ever, so existing data directories keep their
//! identity). From then on it is the cluster's identity, not a function of the flags: every
//! data directory records it (`identity.json`, `check_identity`), the metadata group
//! stores it in the cluster map, and a newer map is only adopted if it carries the same id
//! (`MapCell::offer`), so a map that gains nodes keeps it. A founding member is restarted
//! with the flags the cluster was formed with, which give the same id. A node that joins
//! later will take the id from the cluster it joins (the admission reply), record it in its
//! identity file and use that on restart, never one computed from its own flags.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_core::map::{ClusterMap, NodeInfo, ShardInfo};
use shoal_core::placement::{PlacementNode, place};
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, ShardLayout};

/// Most voters of the metadata group (design.md: "voters on up to 5 nodes").
pub const MAX_META_VOTERS: u32 = 5;

/// Parses `1=host:port,2=host:port`.
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<(u64, String)>, String> {
    let mut members = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            format!("--initial-cluster entry {part:?} is not ID=HOST:PORT (e.g. 1=127.0.0.1:7001)")
        })?;
        let id: u64 = id.trim().parse().map_err(|_| {
            format!("--initial-cluster entry {part:?}: node id {id:?} is not a positive integer")
        })?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!(
                "--initial-cluster entry {part:?}: {addr:?} is not HOST:PORT"
            ));
        }
        members.push((id, addr.to_string()));
    }
    Ok(members)
}

/// The bootstrap layout of a cluster, the same on every member.
#[derive(Debug, Clone)]
pub struct Topology {
    pub map: ClusterMap,
    /// Voters of the metadata group.
    pub meta_replicas: Vec<u64>,
}

impl Topology {
    /// Validates the member list (this node in it, ids and addresses unique) and places
    /// every shard.
    pub fn new(
        me: u64,
        members: &[(u64, String)],
        shards: u32,
        replication: u32,
    ) -> Result<Topology, Error> {
        let invalid = |m: String| Err(Error::Invalid(m));
        if members.is_empty() {
            return invalid("--initial-cluster lists no nodes".into());
        }
        if replication == 0 {
            return invalid("--replication must be 1 or more".into());
        }
        let mut ids = HashSet::new();
        let mut addrs: BTreeMap<&str, u64> = BTreeMap::new();
        for (id, addr) in members {
            if *id == 0 {
                return invalid("--initial-cluster: node ids start at 1".into());
            }
            if !ids.insert(*id) {
                return invalid(format!("--initial-cluster lists node {id} twice"));
            }
            if let Some(other) = addrs.insert(addr.as_str(), *id) {
                return invalid(format!(
                    "--initial-cluster gives nodes {other} and {id} the same address {addr}"
                ));
            }
        }
        if !ids.contains(&me) {
            let listed: Vec<String> = members.iter().map(|(id, _)| id.to_string()).collect();
            return invalid(format!(
                "this node's --id {me} is not in --initial-cluster (it lists {}); add it or fix --id",
                listed.join(", ")
            ));
        }
        let layout = ShardLayout::even(shards).map_err(Error::Invalid)?;
        let nodes: Vec<PlacementNode> = members
            .iter()
            .map(|(id, _)| PlacementNode { id: *id, weight: 1 })
            .collect();
        let shard_ids: Vec<u32> = layout.shards().iter().map(|(id, _)| *id).collect();
        let placement =
            place(&nodes, &shard_ids, replication).map_err(|e| Error::Invalid(e.to_string()))?;
        let meta = place(&nodes, &[META_GROUP], MAX_META_VOTERS)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let mut sorted: Vec<(u64, String)> = members.to_vec();
        sorted.sort();
        let map = ClusterMap {
            cluster_id: cluster_id(&sorted, shards, replication),
            epoch: 1,
            replication,
            nodes: sorted
                .iter()
                .map(|(id, addr)| NodeInfo {
                    id: *id,
                    peer_addr: addr.clone(),
                    resp_addr: String::new(),
                    http_addr: String::new(),
                    grpc_addr: String::new(),
                })
                .collect(),
            shards: layout
                .shards()
                .iter()
                .map(|(id, range)| ShardInfo {
                    id: *id,
                    range: *range,
                    replicas: placement.replicas(*id).to_vec(),
                    learners: Vec::new(),
                })
                .collect(),
            meta: meta.replicas(META_GROUP).to_vec(),
            meta_learners: Vec::new(),
            draining: Vec::new(),
            removed: Vec::new(),
            dead: Vec::new(),
            moves: Vec::new(),
            rebalance_paused: false,
        };
        Ok(Topology {
            map,
            meta_replicas: meta.replicas(META_GROUP).to_vec(),
        })
    }

    /// Replicas of `group` (the metadata group included).
    pub fn replicas(&self, group: u32) -> &[u64] {
        if group == META_GROUP {
            return &self.meta_replicas;
        }
        self.map
            .shards
            .iter()
            .find(|s| s.id == group)
            .map_or(&[], |s| s.replicas.as_slice())
    }
}

/// A stable id for the cluster the flags describe: a hash of the member list, shard count
/// and replication factor. Two clusters started with different flags never accept each
/// other's nodes or data directories.
fn cluster_id(members: &[(u64, String)], shards: u32, replication: u32) -> String {
    let mut text = format!("shoal/v1|shards={shards}|replication={replication}");
    for (id, addr) in members {
        text.push_str(&format!("|{id}={addr}"));
    }
    // FNV-1a, 64-bit: stable across platforms and releases; not a security boundary.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// What a data directory remembers about whom it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: u64,
}

const IDENTITY_FILE: &str = "identity.json";

/// Checks the data directory belongs to this node of this cluster, recording it on first
/// start. Refuses a directory of another node or another cluster. `Ok(true)` when the
/// directory already belonged to this node (a restart), `Ok(false)` on first start.
pub fn check_identity(data_dir: &Path, expected: &Identity) -> Result<bool, Error> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Storage(format!("{} is unreadable: {e}", path.display())))?;
            if stored.node_id != expected.node_id {
                return Err(Error::Invalid(format!(
                    "data directory {} belongs to node {}, not node {}: start it with --id {} or use another --data-dir",
                    data_dir.display(),
                    stored.node_id,
                    expected.node_id,
                    stored.node_id
                )));
            }
            if stored.cluster_id != expected.cluster_id {
                return Err(Error::Invalid(format!(
                    "data directory {} belongs to cluster {}, but --initial-cluster/--shards/--replication describe cluster {}: \
                     restart with the flags the cluster was formed with, or use an empty --data-dir",
                    data_dir.display(),
                    stored.cluster_id,
                    expected.cluster_id
                )));
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| Error::Storage(e.to_string()))?;
            let tmp = data_dir.join("identity.json.tmp");
            let bytes = serde_json::to_vec_pretty(expected).expect("identity serialises");
            std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .and_then(|_| std::fs::File::open(data_dir)?.sync_all())
                .map(|_| false)
                .map_err(|e| Error::Storage(format!("cannot write {}: {e}", path.display())))
        }
        Err(e) => Err(Error::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> Vec<(u64, String)> {
        (1..=n)
            .map(|i| (i, format!("127.0.0.1:{}", 7000 + i)))
            .collect()
    }

    #[test]
    fn parses_and_rejects_initial_cluster_specs() {
        assert_eq!(
            parse_initial_cluster("1=a:1, 2=b:2").unwrap(),
            vec![(1, "a:1".to_string()), (2, "b:2".to_string())]
        );
        for bad in ["1", "x=a:1", "1=a", "1=a:notaport", "1=:80"] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_node_computes_the_same_map_whatever_the_listing_order() {
        let a = Topology::new(1, &members(5), 16, 3).unwrap();
        let mut shuffled = members(5);
        shuffled.reverse();
        let b = Topology::new(4, &shuffled, 16, 3).unwrap();
        assert_eq!(a.map, b.map);
        assert_eq!(a.meta_replicas, b.meta_replicas);
        assert_eq!(a.meta_replicas.len(), 5);
        for shard in &a.map.shards {
            assert_eq!(shard.replicas.len(), 3);
        }
        let other = Topology::new(1, &members(5), 16, 5).unwrap();
        assert_ne!(a.map.cluster_id, other.map.cluster_id);
    }

    /// The id is recorded in every data directory: a change to the formula would make
    /// every existing node refuse its own directory.
    #[test]
    fn the_cluster_id_of_given_flags_never_changes() {
        let t = Topology::new(1, &members(3), 16, 3).unwrap();
        assert_eq!(t.map.cluster_id, "f07b0b93b7426032");
        let lone = Topology::new(1, &[(1, "local".into())], 2, 1).unwrap();
        assert_eq!(lone.map.cluster_id, "b610a11e501d6655");
    }

    #[test]
    fn refuses_bad_member_lists() {
        let err = |r: Result<Topology, Error>| r.unwrap_err().to_string();
        assert!(err(Topology::new(9, &members(3), 16, 3)).contains("not in --initial-cluster"));
        let mut twice = members(3);
        twice.push((2, "127.0.0.1:9999".into()));
        assert!(err(Topology::new(1, &twice, 16, 3)).contains("node 2 twice"));
        let mut same_addr = members(3);
        same_addr[2].1 = same_addr[0].1.clone();
        assert!(err(Topology::new(1, &same_addr, 16, 3)).contains("same address"));
    }

    #[test]
    fn a_data_directory_of_another_node_or_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity {
            cluster_id: "abc".into(),
            node_id: 1,
        };
        assert!(!check_identity(dir.path(), &me).unwrap(), "first start");
        assert!(check_identity(dir.path(), &me).unwrap(), "restart");
        let other_node = Identity {
            node_id: 2,
            ..me.clone()
        };
        assert!(
            check_identity(dir.path(), &other_node)
                .unwrap_err()
                .to_string()
                .contains("belongs to node 1")
        );
        let other_cluster = Identity {
            cluster_id: "def".into(),
            ..me
        };
        assert!(
            check_identity(dir.path(), &other_cluster)
                .unwrap_err()
                .to_string()
                .contains("belongs to cluster abc")
        );
    }
}
