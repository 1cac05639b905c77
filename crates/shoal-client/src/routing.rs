//! The client's picture of the cluster: which shard owns each slot, which node leads each
//! shard, and where each node serves gRPC. Built from `Cluster.Map`; leaders are corrected
//! one at a time from the hints responses carry (`x-shoal-leader`), and the whole map is
//! fetched again when a hint names a node it does not know or a node stops answering.

use std::collections::HashMap;

use shoal_core::slot::{SLOT_COUNT, key_slot};
use shoal_proto::v1::MapResponse;

/// One snapshot of the map, shared read-only by requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routing {
    pub(crate) epoch: u64,
    /// Shard id of each slot (0: no shard known).
    slot_shard: Vec<u32>,
    /// Leader of each shard (absent: unknown).
    leaders: HashMap<u32, u64>,
    /// gRPC address of each node that serves it.
    addrs: HashMap<u64, String>,
}

impl Routing {
    pub(crate) fn from_map(map: &MapResponse) -> Routing {
        let mut slot_shard = vec![0; usize::from(SLOT_COUNT)];
        let mut leaders = HashMap::new();
        for shard in &map.shards {
            for range in &shard.slots {
                let end = (range.end as usize).min(slot_shard.len() - 1);
                if let Some(slots) = slot_shard.get_mut(range.start as usize..=end) {
                    slots.fill(shard.id);
                }
            }
            if shard.leader != 0 {
                leaders.insert(shard.id, shard.leader);
            }
        }
        let addrs = map
            .nodes
            .iter()
            .filter(|n| !n.grpc_addr.is_empty() && n.state != "removed" && n.state != "dead")
            .map(|n| (n.id, n.grpc_addr.clone()))
            .collect();
        Routing {
            epoch: map.epoch,
            slot_shard,
            leaders,
            addrs,
        }
    }

    /// The shard owning `key`'s slot (None before a map is known).
    pub(crate) fn shard_of(&self, key: &[u8]) -> Option<u32> {
        let shard = *self.slot_shard.get(usize::from(key_slot(key)))?;
        (shard != 0).then_some(shard)
    }

    /// Where to send a request for `shard`: its leader's address, when known.
    pub(crate) fn leader_addr(&self, shard: u32) -> Option<&str> {
        let leader = self.leaders.get(&shard)?;
        self.addrs.get(leader).map(String::as_str)
    }

    /// Records that `leader` leads `shard`; false when the map has no address for it (the
    /// map is stale: fetch it again).
    pub(crate) fn set_leader(&mut self, shard: u32, leader: u64) -> bool {
        self.leaders.insert(shard, leader);
        self.addrs.contains_key(&leader)
    }

    /// Forgets who leads `shard` (its leader stopped answering).
    pub(crate) fn forget_leader(&mut self, shard: u32) {
        self.leaders.remove(&shard);
    }

    /// Every node's gRPC address, in id order.
    pub(crate) fn addrs(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.addrs.iter().collect();
        ids.sort();
        ids.into_iter().map(|(_, a)| a.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Node, Shard, SlotRange};

    fn map() -> MapResponse {
        MapResponse {
            cluster_id: "c".into(),
            epoch: 4,
            nodes: vec![
                Node {
                    id: 1,
                    grpc_addr: "10.0.0.1:50051".into(),
                    state: "active".into(),
                    ..Node::default()
                },
                Node {
                    id: 2,
                    grpc_addr: "10.0.0.2:50051".into(),
                    state: "active".into(),
                    ..Node::default()
                },
                Node {
                    id: 3,
                    grpc_addr: "10.0.0.3:50051".into(),
                    state: "removed".into(),
                    ..Node::default()
                },
            ],
            shards: vec![
                Shard {
                    id: 1,
                    slots: vec![SlotRange {
                        start: 0,
                        end: 8191,
                    }],
                    leader: 1,
                    replicas: vec![1, 2],
                },
                Shard {
                    id: 2,
                    slots: vec![SlotRange {
                        start: 8192,
                        end: 16383,
                    }],
                    leader: 0,
                    replicas: vec![1, 2],
                },
            ],
        }
    }

    #[test]
    fn keys_route_to_their_shards_leader() {
        let mut routing = Routing::from_map(&map());
        // "a" hashes to slot 15495, "b" to 3300 (as Redis Cluster computes them).
        assert_eq!(routing.shard_of(b"a"), Some(2));
        assert_eq!(routing.shard_of(b"b"), Some(1));
        assert_eq!(routing.leader_addr(1), Some("10.0.0.1:50051"));
        assert_eq!(routing.leader_addr(2), None, "no leader known yet");
        assert!(routing.set_leader(2, 2));
        assert_eq!(routing.leader_addr(2), Some("10.0.0.2:50051"));
        // A removed node is not an address to use; a hint naming it means a stale map.
        assert!(!routing.set_leader(2, 3));
        assert_eq!(routing.addrs(), vec!["10.0.0.1:50051", "10.0.0.2:50051"]);
    }

    #[test]
    fn before_a_map_nothing_routes() {
        assert_eq!(Routing::default().shard_of(b"a"), None);
    }
}
