//! TTL reaping: the leader of each shard proposes deletes for keys whose expiry passed,
//! so every replica removes them at the same log position. Reads already hide expired
//! keys; this only reclaims their space.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::WriteOp;
use shoal_storage::Engine;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Tuning;
use crate::group::Groups;

/// The service that reaps expired keys of the data shards this node leads.
pub(crate) struct Reaper {
    pub groups: Arc<Groups>,
    pub engine: Engine,
    /// How often it looks for due keys, and how many it deletes per shard and round.
    pub interval: Duration,
    pub batch: usize,
}

impl Reaper {
    pub(crate) fn new(groups: Arc<Groups>, engine: Engine, tuning: &Tuning) -> Self {
        Self {
            groups,
            engine,
            interval: tuning.reap_interval,
            batch: tuning.reap_batch,
        }
    }

    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Keys proposed in the previous round, so a slow apply is not proposed twice.
        let mut recently: HashSet<bytes::Bytes> = HashSet::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            recently = self.round(&recently);
        }
    }

    /// Proposes the deletes of one round (without waiting for them); returns the keys
    /// it proposed.
    fn round(&self, recently: &HashSet<bytes::Bytes>) -> HashSet<bytes::Bytes> {
        let now = now_ms();
        let mut proposed = HashSet::new();
        for group in self.groups.data() {
            if !group.is_leader() {
                continue;
            }
            let due = match self.engine.due_expiries(group.id, now, self.batch) {
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
        proposed
    }
}
