//! TTL reaping: the leader of each shard proposes deletes for keys whose expiry passed,
//! so every replica removes them at the same log position. Reads already hide expired
//! keys; this only reclaims their space.

use std::collections::HashSet;

use shoal_core::WriteOp;

use crate::clock::now_ms;
use crate::node::Node;

pub async fn run(node: Node) {
    let mut ticker = tokio::time::interval(node.tuning().reap_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Keys proposed in the previous round, so a slow apply is not proposed twice.
    let mut recently: HashSet<bytes::Bytes> = HashSet::new();
    loop {
        ticker.tick().await;
        if node.is_stopped() {
            return;
        }
        let now = now_ms();
        let mut proposed = HashSet::new();
        for group in node.data_groups() {
            if !group.is_leader() {
                continue;
            }
            let due = match node
                .engine()
                .due_expiries(group.id, now, node.tuning().reap_batch)
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(shard = group.id, error = %e, "reaper could not read the expiry index");
                    continue;
                }
            };
            let keys: Vec<_> = due.into_iter().filter(|k| !recently.contains(k)).collect();
            if keys.is_empty() {
                continue;
            }
            proposed.extend(keys.iter().cloned());
            if let Err(e) = group.propose_detached(WriteOp::Reap { keys }) {
                tracing::debug!(shard = group.id, error = %e, "reaper skipped a round");
            }
        }
        recently = proposed;
    }
}
