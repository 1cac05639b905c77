//! Free disk space under the data directory, and what the node may still write with it.
//!
//! fjall poisons its whole database on the first failed journal write (a full disk is
//! enough) and every Raft group on the node then stops for good, until a restart. So the
//! node must never get there: it keeps a reserve (`--min-free-disk-mib`) and, as free space
//! falls into it, refuses first the writes that add data, then deletes, and last the
//! entries its leaders replicate to it. Reads always work. Everything resumes on its own
//! once space is freed; nothing needs a restart.
//!
//! Free space is sampled (`refresh`, every 100 ms by the node), not checked per write: a
//! `statvfs` per write would cost more than the write. Between two samples each admitted
//! write is charged against the last sample at `WRITE_AMPLIFICATION` times its size, so a
//! fast writer is cut off within the sample, not one sample late. The reserve itself is
//! for what lands later: memtable flushes and compactions write after the client's write
//! was acknowledged (measured: 111 MiB of 1 MiB SETs took 236 MiB of free space, and a
//! compaction then hit ENOSPC with a 100 MiB reserve), hence a default of 1 GiB.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Disk bytes a write of N bytes takes before the next sample: the Raft log entry and the
/// applied record each go to the journal, then each to a table when memtables flush.
pub const WRITE_AMPLIFICATION: u64 = 4;

/// No override in place (see [`DiskSpace::set_override`]).
const NO_OVERRIDE: u64 = u64::MAX;

pub use shoal_core::map::DiskUse;

/// Why a write was refused: the figures for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLow {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
    /// The free space below which this kind of write is refused.
    pub threshold_bytes: u64,
}

/// The free space of one data directory, as last sampled.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    reserve: u64,
    free: AtomicU64,
    /// Bytes charged to admitted writes since the last sample.
    charged: AtomicU64,
    /// Fault injection (tests): free space to report instead of the file system's.
    forced: AtomicU64,
    refused: AtomicU64,
}

impl DiskSpace {
    /// Samples `dir`'s file system now. A `reserve` of 0 never refuses anything.
    pub fn new(dir: &Path, reserve: u64) -> std::io::Result<Self> {
        let space = Self {
            dir: dir.to_path_buf(),
            reserve,
            free: AtomicU64::new(u64::MAX),
            charged: AtomicU64::new(0),
            forced: AtomicU64::new(NO_OVERRIDE),
            refused: AtomicU64::new(0),
        };
        space.refresh()?;
        Ok(space)
    }

    /// Samples the file system again (one `statvfs`).
    pub fn refresh(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        // Space available to this (unprivileged) process, not the root-only remainder.
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.free.store(free, Ordering::Relaxed);
        self.charged.store(0, Ordering::Relaxed);
        Ok(free)
    }

    /// Free bytes as last sampled (or as overridden), less what writes admitted since
    /// were charged.
    pub fn free_bytes(&self) -> u64 {
        let sampled = match self.forced.load(Ordering::Relaxed) {
            NO_OVERRIDE => self.free.load(Ordering::Relaxed),
            forced => forced,
        };
        sampled.saturating_sub(self.charged.load(Ordering::Relaxed))
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve
    }

    /// Writes refused so far for lack of space.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Reports `bytes` free instead of the file system's figure (None: stop). For fault
    /// injection in tests; the node only exposes it when started with fault injection on.
    pub fn set_override(&self, bytes: Option<u64>) {
        self.forced
            .store(bytes.unwrap_or(NO_OVERRIDE), Ordering::Relaxed);
    }

    /// The free space below which `usage` is refused.
    pub fn threshold(&self, usage: DiskUse) -> u64 {
        usage.threshold(self.reserve)
    }

    /// Whether a write of this kind, carrying `bytes` of keys and values, may go ahead
    /// now; if it may, it is charged until the next sample.
    pub fn admit(&self, usage: DiskUse, bytes: u64) -> Result<(), DiskLow> {
        let free = self.free_bytes();
        let threshold = self.threshold(usage);
        if free >= threshold {
            if self.reserve > 0 {
                self.charged
                    .fetch_add(bytes.saturating_mul(WRITE_AMPLIFICATION), Ordering::Relaxed);
            }
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(DiskLow {
            free_bytes: free,
            reserve_bytes: self.reserve,
            threshold_bytes: threshold,
        })
    }

    /// Free space and reserve, as peers and `cluster status` see them.
    pub fn status(&self) -> shoal_core::map::DiskStatus {
        shoal_core::map::DiskStatus {
            free_bytes: self.free_bytes(),
            reserve_bytes: self.reserve,
        }
    }

    /// Whether free space is under the reserve, where client writes are refused.
    pub fn is_low(&self) -> bool {
        self.free_bytes() < self.reserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn samples_the_real_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 0).unwrap();
        assert!(space.free_bytes() > 0 && space.free_bytes() < u64::MAX);
        assert!(!space.is_low());
        assert_eq!(space.admit(DiskUse::Grow, 0), Ok(()));
    }

    #[test]
    fn refuses_growth_first_then_deletes_then_replication() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 400 * MIB).unwrap();
        let admitted = |free: u64| {
            space.set_override(Some(free));
            [DiskUse::Grow, DiskUse::Shrink, DiskUse::Replicate].map(|u| space.admit(u, 0).is_ok())
        };
        assert_eq!(admitted(400 * MIB), [true, true, true]);
        assert_eq!(admitted(399 * MIB), [false, true, true]);
        assert_eq!(admitted(199 * MIB), [false, false, true]);
        assert_eq!(admitted(99 * MIB), [false, false, false]);
        assert_eq!(space.refused(), 6);
        // Peers judge a node from its reported status by the same thresholds.
        for free in [99 * MIB, 100 * MIB, 399 * MIB, 400 * MIB] {
            space.set_override(Some(free));
            let status = space.status();
            assert_eq!(status.is_low(), space.admit(DiskUse::Grow, 0).is_err());
            assert_eq!(
                status.refuses_entries(),
                space.admit(DiskUse::Replicate, 0).is_err()
            );
        }
        space.set_override(Some(99 * MIB));
        assert!(space.is_low());
        let low = space.admit(DiskUse::Grow, 0).unwrap_err();
        assert_eq!(
            low,
            DiskLow {
                free_bytes: 99 * MIB,
                reserve_bytes: 400 * MIB,
                threshold_bytes: 400 * MIB
            }
        );
        // Space freed: everything is admitted again, no restart.
        space.set_override(Some(500 * MIB));
        assert_eq!(space.admit(DiskUse::Grow, 0), Ok(()));
        // Without the override, the sampled figure is back.
        space.set_override(None);
        let sampled = space.refresh().unwrap();
        assert_eq!(space.free_bytes(), sampled);
    }

    #[test]
    fn writes_between_samples_are_charged() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 100 * MIB).unwrap();
        space.set_override(Some(120 * MIB));
        // 4 MiB charged per 1 MiB write: 120 - 5 * 4 = 100 left, then refused.
        for _ in 0..5 {
            assert_eq!(space.admit(DiskUse::Grow, MIB), Ok(()));
        }
        assert_eq!(space.free_bytes(), 100 * MIB);
        assert_eq!(space.admit(DiskUse::Grow, 0), Ok(()));
        space.admit(DiskUse::Grow, MIB).unwrap();
        assert!(space.admit(DiskUse::Grow, MIB).is_err());
        // A new sample starts the charge over.
        space.refresh().unwrap();
        assert_eq!(space.free_bytes(), 120 * MIB);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        assert!(DiskSpace::new(&gone, MIB).is_err());
    }
}
