//! Fault injection for tests and chaos runs: cut this node off from chosen peers.
//!
//! A blocked peer's traffic is dropped in both directions at this node: calls to it fail as
//! unreachable and requests from it are refused. Blocking on one side of a link is enough
//! to cut it; blocking a set of peers on each node builds any partition (including
//! asymmetric "bridge" ones). Only reachable when the node was started with fault injection
//! enabled (`--fault-injection`); production nodes never expose it.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Default)]
pub struct Faults {
    blocked: Arc<RwLock<BTreeSet<u64>>>,
}

impl Faults {
    /// Replaces the set of peers this node cannot talk to.
    pub fn set_blocked(&self, peers: impl IntoIterator<Item = u64>) {
        *self.blocked.write().expect("faults lock") = peers.into_iter().collect();
    }

    pub fn blocked(&self) -> Vec<u64> {
        self.blocked
            .read()
            .expect("faults lock")
            .iter()
            .copied()
            .collect()
    }

    pub fn is_blocked(&self, peer: u64) -> bool {
        self.blocked.read().expect("faults lock").contains(&peer)
    }
}
