//! The node's side of the free-space guard (shoal-storage's `disk`): which writes a shard
//! leader still accepts, which entries a replica still takes from its leader, and the task
//! that samples free space and says so in the log when the node runs low or recovers.
//!
//! The metadata group is exempt: its writes are small, and they are how an operator
//! changes the cluster (removing a node, for one) while a disk is full.

use std::sync::Arc;
use std::time::Duration;

use shoal_core::shard::META_GROUP;
use shoal_core::{Error, ShardId, WriteOp};
use shoal_storage::{DiskLow, DiskSpace, DiskUse};
use tokio::sync::watch;

/// How often free space is sampled.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

const MIB: u64 = 1 << 20;

/// Below this, a reserve may not hold one memtable flush (64 MiB) and the compaction it
/// triggers; the node says so at start.
const SMALL_RESERVE_MIB: u64 = 256;

/// The client's error for a write refused for lack of space.
fn disk_full(node: u64, usage: DiskUse, low: DiskLow) -> Error {
    Error::DiskFull {
        node,
        free_mib: low.free_bytes / MIB,
        threshold_mib: low.threshold_bytes.div_ceil(MIB),
        reserve_mib: low.reserve_bytes.div_ceil(MIB),
        what: match usage {
            DiskUse::Grow => "writes that add data are",
            DiskUse::Shrink => "writes, deletes included, are",
            DiskUse::Replicate => "writes and replication to it are",
        }
        .to_string(),
    }
}

/// Whether this node, leading `shard`, may propose `op` now.
pub(crate) fn admit_write(
    disk: &DiskSpace,
    node: u64,
    shard: ShardId,
    op: &WriteOp,
) -> Result<(), Error> {
    if shard == META_GROUP {
        return Ok(());
    }
    let usage = if op.adds_data() {
        DiskUse::Grow
    } else {
        DiskUse::Shrink
    };
    disk.admit(usage, op.payload_bytes() as u64)
        .map_err(|low| disk_full(node, usage, low))
}

/// Why this node's replica of `group` refuses entries or a snapshot from its leader, if it
/// does: taking them could fill the disk, and a failed journal write stops every group
/// on the node until it restarts. The leader retries; the group commits with its other
/// replicas meanwhile.
pub(crate) fn refuses_entries(disk: &DiskSpace, node: u64, group: ShardId) -> Option<String> {
    if group == META_GROUP {
        return None;
    }
    // Not charged: the leader already charged the entries on its own disk, and this
    // node's next sample sees what they took here.
    disk.admit(DiskUse::Replicate, 0)
        .err()
        .map(|low| disk_full(node, DiskUse::Replicate, low).to_string())
}

/// Samples free space until `stop` turns true, logging each change between "enough"
/// and "low" once, not on every sample.
pub(crate) async fn sample(disk: Arc<DiskSpace>, node: u64, mut stop: watch::Receiver<bool>) {
    let reserve_mib = disk.reserve_bytes() / MIB;
    if reserve_mib > 0 && reserve_mib < SMALL_RESERVE_MIB {
        tracing::warn!(
            node,
            reserve_mib,
            "--min-free-disk-mib is under {SMALL_RESERVE_MIB}: a memtable flush and the compaction after it may not fit, and a write failing for lack of space stops this node's shards until it restarts"
        );
    }
    let mut was_low = false;
    let mut failing = false;
    loop {
        match disk.refresh() {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(node, error = %e, "cannot read free disk space; using the last sample");
            }
            Err(_) => {}
        }
        let low = disk.is_low();
        if low != was_low {
            let free_mib = disk.free_bytes() / MIB;
            let reserve_mib = disk.reserve_bytes() / MIB;
            if low {
                tracing::warn!(
                    node,
                    free_mib,
                    reserve_mib,
                    "disk low: refusing writes that add data until space is freed (--min-free-disk-mib)"
                );
            } else {
                tracing::info!(
                    node,
                    free_mib,
                    reserve_mib,
                    "disk space back above the reserve: accepting writes"
                );
            }
            was_low = low;
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shoal_core::command::{Condition, Expiry};

    fn put() -> WriteOp {
        WriteOp::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            condition: Condition::None,
            expiry: Expiry::Keep,
            return_old: false,
        }
    }

    fn delete() -> WriteOp {
        WriteOp::Delete {
            keys: vec![Bytes::from_static(b"k")],
            if_version: None,
        }
    }

    #[test]
    fn low_disk_refuses_puts_before_deletes_and_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSpace::new(dir.path(), 512 * MIB).unwrap();
        disk.set_override(Some(300 * MIB));
        let err = admit_write(&disk, 3, 1, &put()).unwrap_err();
        assert_eq!(err.code(), "disk_full");
        let message = err.to_string();
        assert!(
            message.contains("node 3") && message.contains("300 MiB free"),
            "{message}"
        );
        assert!(message.contains("--min-free-disk-mib"), "{message}");
        assert!(!err.is_retryable());
        assert_eq!(admit_write(&disk, 3, 1, &delete()), Ok(()));
        // The metadata group is never refused.
        assert_eq!(admit_write(&disk, 3, META_GROUP, &put()), Ok(()));
        assert_eq!(refuses_entries(&disk, 3, 1), None);
        disk.set_override(Some(100 * MIB));
        assert!(admit_write(&disk, 3, 1, &delete()).is_err());
        let why = refuses_entries(&disk, 3, 1).unwrap();
        assert!(why.contains("replication"), "{why}");
        assert_eq!(refuses_entries(&disk, 3, META_GROUP), None);
    }
}
