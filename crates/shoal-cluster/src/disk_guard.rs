//! The node's side of the free-space guard (shoal-storage's `disk`): which writes a shard
//! leader still accepts, which entries a replica still takes from its leader, and the task
//! that samples free space and says so in the log when the node runs low or recovers.
//!
//! The metadata group is exempt: its writes are small, and they are how an operator
//! changes the cluster (removing a node, for one) while a disk is full.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use shoal_core::map::DiskStatus;
use shoal_core::shard::META_GROUP;
use shoal_core::{Error, ShardId, WriteOp};
use shoal_storage::{DiskLow, DiskSpace, DiskUse};
use tokio_util::sync::CancellationToken;

use crate::group::Groups;
use crate::peers::Peers;

/// How often free space is sampled.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

const MIB: u64 = 1 << 20;

/// Below this, a reserve may not hold one memtable flush (64 MiB) and the compaction it
/// triggers; the node says so at start.
const SMALL_RESERVE_MIB: u64 = 256;

/// What is refused at each level, as the error message says it.
fn refused_at(usage: DiskUse) -> &'static str {
    match usage {
        DiskUse::Grow => "writes that add data are",
        DiskUse::Shrink => "writes, deletes included, are",
        DiskUse::Replicate => "writes and replication to it are",
    }
}

/// The client's error for a write refused because `node` is low on space.
fn disk_full(node: u64, low: DiskLow, what: impl Into<String>) -> Error {
    Error::DiskFull {
        node,
        free_mib: low.free_bytes / MIB,
        threshold_mib: low.threshold_bytes.div_ceil(MIB),
        reserve_mib: low.reserve_bytes.div_ceil(MIB),
        what: what.into(),
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
        .map_err(|low| disk_full(node, low, refused_at(usage)))
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
        .map(|low| disk_full(node, low, refused_at(DiskUse::Replicate)).to_string())
}

/// Why this node cannot install a received snapshot of `bytes` for `group`, if it
/// cannot: the state machine keeps a copy of the file and imports every record (journal,
/// then tables), about twice the file, and must stay above the replication floor.
pub(crate) fn refuses_install(
    disk: &DiskSpace,
    node: u64,
    group: ShardId,
    bytes: u64,
) -> Option<String> {
    if disk.reserve_bytes() == 0 {
        return None;
    }
    let needed = bytes.saturating_mul(2) + disk.threshold(DiskUse::Replicate);
    let free = disk.free_bytes();
    (free < needed).then(|| {
        format!(
            "node {node} cannot install a {} MiB snapshot of shard {group}: that needs about {} MiB free (twice the snapshot, plus a quarter of the --min-free-disk-mib reserve), {} MiB are",
            bytes.div_ceil(MIB),
            needed.div_ceil(MIB),
            free / MIB
        )
    })
}

/// Set on a group this node leads while a majority of its voters cannot take log entries
/// for lack of disk (by their last status reports): a write could not commit, so it is
/// refused at once with the reason instead of waiting out its timeout.
#[derive(Debug, Default)]
pub(crate) struct QuorumDisk {
    low: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl QuorumDisk {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if !self.low.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.error.lock().expect("quorum disk lock").clone() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn set(&self, error: Option<Error>) {
        let mut slot = self.error.lock().expect("quorum disk lock");
        self.low.store(error.is_some(), Ordering::Relaxed);
        *slot = error;
    }
}

/// Re-evaluates, for every data shard this node (`me`, with `own` free space) leads,
/// whether a majority of its voters refuse entries for lack of disk, by the peers' last
/// status reports. Called after each round of them.
pub(crate) fn check_quorums(me: u64, own: DiskStatus, groups: &Groups, peers: &Peers) {
    for group in groups.data() {
        let voters: Vec<u64> = {
            let metrics = group.raft.metrics();
            let m = metrics.borrow_watched();
            if m.current_leader != Some(me) {
                Vec::new()
            } else {
                m.membership_config.membership().voter_ids().collect()
            }
        };
        let error = quorum_refusal(group.id, &voters, |id| {
            if id == me {
                Some(own)
            } else if peers.is_up(id) {
                peers.disk(id)
            } else {
                None
            }
        });
        group.quorum_disk.set(error);
    }
}

/// Why writes to `shard` are refused, when a majority of its `voters` take no log entries
/// for lack of disk. `disk_of` gives a voter's free space as last known (None: unknown or
/// down, which never counts as refusing). None without voters (this node does not lead).
fn quorum_refusal(
    shard: ShardId,
    voters: &[u64],
    disk_of: impl Fn(u64) -> Option<DiskStatus>,
) -> Option<Error> {
    let refusing: Vec<(u64, DiskStatus)> = voters
        .iter()
        .filter_map(|&id| {
            disk_of(id)
                .filter(DiskStatus::refuses_entries)
                .map(|d| (id, d))
        })
        .collect();
    (refusing.len() * 2 > voters.len()).then(|| {
        let (fullest, disk) = *refusing
            .iter()
            .min_by_key(|(_, d)| d.free_bytes)
            .expect("a majority is not empty");
        let ids: Vec<String> = refusing.iter().map(|(id, _)| id.to_string()).collect();
        let low = DiskLow {
            free_bytes: disk.free_bytes,
            reserve_bytes: disk.reserve_bytes,
            threshold_bytes: DiskUse::Replicate.threshold(disk.reserve_bytes),
        };
        disk_full(
            fullest,
            low,
            format!(
                "nodes {} (a majority of shard {shard}'s replicas) take no log entries, so writes to the shard are",
                ids.join(", "),
            ),
        )
    })
}

/// The service that samples free space, logging each change between "enough" and "low"
/// once, not on every sample.
pub(crate) struct DiskSampler {
    pub disk: Arc<DiskSpace>,
    /// This node's id, for the log.
    pub node: u64,
}

impl DiskSampler {
    /// Samples until `cancel` is cancelled.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let Self { disk, node } = self;
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
                _ = cancel.cancelled() => return,
            }
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

    /// Free space of a node with a 512 MiB reserve: under 128 MiB it takes no entries.
    fn disk(free_mib: u64) -> Option<DiskStatus> {
        Some(DiskStatus {
            free_bytes: free_mib * MIB,
            reserve_bytes: 512 * MIB,
        })
    }

    #[test]
    fn a_majority_of_voters_out_of_disk_refuses_the_shard() {
        let disk_of = |id| match id {
            1 => disk(1000),
            2 => disk(100),
            3 => disk(50),
            _ => None,
        };
        let err = quorum_refusal(7, &[1, 2, 3], disk_of).unwrap();
        assert_eq!(err.code(), "disk_full");
        let message = err.to_string();
        // Named after the fullest node, listing every refusing one.
        assert!(message.contains("disk full on node 3"), "{message}");
        assert!(
            message.contains("nodes 2, 3 (a majority of shard 7's replicas)"),
            "{message}"
        );
    }

    #[test]
    fn a_minority_out_of_disk_refuses_nothing() {
        let disk_of = |id| if id == 3 { disk(50) } else { disk(1000) };
        assert_eq!(quorum_refusal(7, &[1, 2, 3], disk_of), None);
        // Half is not a majority.
        assert_eq!(
            quorum_refusal(7, &[3, 4], |id| if id == 3 { disk(50) } else { disk(1000) }),
            None
        );
    }

    #[test]
    fn a_voter_that_is_down_never_counts_as_refusing() {
        // 2 is down (its last report said full): 3 alone is no majority of three.
        let disk_of = |id| match id {
            1 => disk(1000),
            3 => disk(50),
            _ => None,
        };
        assert_eq!(quorum_refusal(7, &[1, 2, 3], disk_of), None);
    }

    #[test]
    fn no_voters_refuses_nothing() {
        assert_eq!(quorum_refusal(7, &[], |_| disk(0)), None);
    }

    #[test]
    fn a_snapshot_is_installed_only_with_room_for_twice_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSpace::new(dir.path(), 512 * MIB).unwrap();
        disk.set_override(Some(1000 * MIB));
        // 2 x 400 + 128 = 928 MiB needed.
        assert_eq!(refuses_install(&disk, 2, 5, 400 * MIB), None);
        let why = refuses_install(&disk, 2, 5, 450 * MIB).unwrap();
        assert!(
            why.contains("450 MiB snapshot of shard 5") && why.contains("1028 MiB free"),
            "{why}"
        );
    }
}
