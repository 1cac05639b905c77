//! Snapshot traffic a node sends: paced to a byte rate shared by all its transfers
//! (`TransportOptions::snapshot_bytes_per_sec`, so replica moves leave room for clients),
//! and tracked per transfer, so `cluster status` can show bytes sent of total, rate and ETA.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_core::ShardId;

/// A transfer in progress, as its sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferProgress {
    pub sent: u64,
    pub total: u64,
    pub elapsed: Duration,
}

impl TransferProgress {
    /// Bytes per second so far (0 in the first instant).
    pub fn rate(&self) -> u64 {
        let secs = self.elapsed.as_secs_f64();
        if secs < 0.001 {
            0
        } else {
            (self.sent as f64 / secs) as u64
        }
    }
}

/// Paces and tracks a node's outgoing snapshots.
#[derive(Debug, Default)]
pub(crate) struct SnapshotTraffic {
    /// Bytes per second for all transfers together; 0: unpaced.
    rate: u64,
    /// When the bytes reserved so far will have been sent at `rate`.
    next_free: Mutex<Option<Instant>>,
    /// Transfers in progress by (target, group): when each started, bytes sent, total.
    sending: Mutex<HashMap<(u64, ShardId), Sending>>,
}

type Sending = (Instant, u64, u64);

impl SnapshotTraffic {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            rate,
            ..Self::default()
        }
    }

    /// Waits until `bytes` more may go out without exceeding the rate.
    pub(crate) async fn pace(&self, bytes: u64) {
        let wait = {
            if self.rate == 0 {
                return;
            }
            let now = Instant::now();
            let mut next = self.next_free.lock().expect("pace lock");
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.rate as f64));
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Records that a transfer of `total` bytes to `target` starts; dropping the guard ends it.
    pub(crate) fn start(&self, target: u64, group: ShardId, total: u64) -> TransferGuard<'_> {
        self.sending
            .lock()
            .expect("transfers lock")
            .insert((target, group), (Instant::now(), 0, total));
        TransferGuard {
            traffic: self,
            key: (target, group),
        }
    }

    pub(crate) fn progress(&self, target: u64, group: ShardId) -> Option<TransferProgress> {
        let sending = self.sending.lock().expect("transfers lock");
        let (started, sent, total) = sending.get(&(target, group))?;
        Some(TransferProgress {
            sent: *sent,
            total: *total,
            elapsed: started.elapsed(),
        })
    }
}

/// A transfer in progress; ends it when dropped (done, failed or cancelled).
pub(crate) struct TransferGuard<'a> {
    traffic: &'a SnapshotTraffic,
    key: (u64, ShardId),
}

impl TransferGuard<'_> {
    pub(crate) fn sent(&self, bytes: u64) {
        if let Some(entry) = self
            .traffic
            .sending
            .lock()
            .expect("transfers lock")
            .get_mut(&self.key)
        {
            entry.1 = bytes;
        }
    }
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        self.traffic
            .sending
            .lock()
            .expect("transfers lock")
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pacing_spreads_bytes_over_time_and_zero_means_unpaced() {
        let unpaced = SnapshotTraffic::new(0);
        let started = Instant::now();
        for _ in 0..100 {
            unpaced.pace(1 << 20).await;
        }
        assert!(started.elapsed() < Duration::from_millis(50));
        // 10 KiB/s: the first 1 KiB goes at once, the next four wait 100 ms each.
        let paced = SnapshotTraffic::new(10 * 1024);
        let started = Instant::now();
        for _ in 0..5 {
            paced.pace(1024).await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(390), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[test]
    fn progress_is_tracked_until_the_transfer_ends() {
        let traffic = SnapshotTraffic::new(0);
        assert!(traffic.progress(4, 2).is_none());
        let guard = traffic.start(4, 2, 1000);
        guard.sent(250);
        let p = traffic.progress(4, 2).unwrap();
        assert_eq!((p.sent, p.total), (250, 1000));
        drop(guard);
        assert!(traffic.progress(4, 2).is_none());
    }
}
