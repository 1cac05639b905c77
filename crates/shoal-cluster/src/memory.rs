//! The node's memory budget (`--memory-budget-mib`) and how it is split between the parts
//! that hold memory in proportion to load or data: the storage engine's block cache, its
//! write buffers (memtables), the record cache, the Raft log's cache of recent entries, and
//! a reserve for everything else (connections and their buffers, requests in flight, the
//! runtimes' threads, the allocator's slack).

const MIB: u64 = 1 << 20;

/// Default budget. A node at rest takes about 40 MiB; 1 GiB leaves the caches room to
/// matter (128 MiB of records is about 100k 1 KiB values) and fits next to other services
/// on a small VM. Lower it on small machines (the least is `MemoryBudget::minimum_bytes`).
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 1024 * MIB;

/// Smallest parts that still work: a few blocks per level, memtables of a few MiB each
/// (the write buffers are split over four keyspaces), a cached entry or two per group,
/// and room for the process itself under load.
const MIN_BLOCK_CACHE: u64 = 8 * MIB;
const MIN_WRITE_BUFFERS: u64 = 16 * MIB;
const MIN_RAFT_LOG_CACHE: u64 = 4 * MIB;
const MIN_RESERVE: u64 = 96 * MIB;

/// The budget and its parts, in bytes. `block_cache + write_buffers + record_cache +
/// raft_log_cache + reserve == total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub total_bytes: u64,
    /// fjall's block cache (data, index and filter blocks read from disk).
    pub block_cache_bytes: u64,
    /// fjall's memtables across keyspaces, active and sealed (waiting to be flushed).
    pub write_buffer_bytes: u64,
    /// Records cached in front of the engine (`--record-cache-mib`; 0 disables it).
    pub record_cache_bytes: u64,
    /// Recently appended Raft log entries kept decoded, across every group, so applies
    /// and replication do not read them back from the engine.
    pub raft_log_cache_bytes: u64,
    /// Not assigned to a cache: connections, requests in flight, threads, allocator slack.
    pub reserve_bytes: u64,
}

/// The memory budget and what its measurable parts hold now, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    pub budget: MemoryBudget,
    /// The process's resident set (None where /proc is not available).
    pub rss_bytes: Option<u64>,
    pub block_cache_bytes: u64,
    pub write_buffer_bytes: u64,
    pub record_cache_bytes: u64,
    pub raft_log_cache_bytes: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::split(DEFAULT_MEMORY_BUDGET_BYTES, None).expect("the default budget splits")
    }
}

impl MemoryBudget {
    /// The least budget that holds a record cache of `record_cache_bytes`.
    pub fn minimum_bytes(record_cache_bytes: u64) -> u64 {
        MIN_BLOCK_CACHE + MIN_WRITE_BUFFERS + MIN_RAFT_LOG_CACHE + MIN_RESERVE + record_cache_bytes
    }

    /// Splits `total_bytes`: an eighth to the block cache, three sixteenths to write
    /// buffers, an eighth to the record cache (unless `record_cache_bytes` sets it), a
    /// sixteenth to the Raft log cache, and the rest (half, by default) in reserve. An
    /// explicit record cache larger than its share takes the difference from the reserve,
    /// down to its least, then from the other parts, down to theirs; so does a budget
    /// near the least. Errors name the flags to change.
    pub fn split(total_bytes: u64, record_cache_bytes: Option<u64>) -> Result<Self, String> {
        let mib = |b: u64| b / MIB;
        let mib_up = |b: u64| b.div_ceil(MIB);
        let min_parts = MIN_BLOCK_CACHE + MIN_WRITE_BUFFERS + MIN_RAFT_LOG_CACHE;
        let min_total = Self::minimum_bytes(0);
        if total_bytes < min_total {
            return Err(format!(
                "--memory-budget-mib {} is too small: the node needs at least {} MiB \
                 (block cache {}, write buffers {}, Raft log cache {}, reserve {} MiB for \
                 connections and requests in flight); raise --memory-budget-mib",
                mib(total_bytes),
                mib_up(min_total),
                mib(MIN_BLOCK_CACHE),
                mib(MIN_WRITE_BUFFERS),
                mib(MIN_RAFT_LOG_CACHE),
                mib(MIN_RESERVE),
            ));
        }
        let room_for_records = total_bytes - min_parts - MIN_RESERVE;
        let record_cache_bytes = match record_cache_bytes {
            Some(r) if r > room_for_records => {
                return Err(format!(
                    "--record-cache-mib {} does not fit in --memory-budget-mib {}: the block \
                     cache, write buffers and Raft log cache need at least {} MiB of it and \
                     {} MiB are kept in reserve, which leaves at most {} MiB for records; \
                     lower --record-cache-mib or raise --memory-budget-mib",
                    mib_up(r),
                    mib(total_bytes),
                    mib(min_parts),
                    mib(MIN_RESERVE),
                    mib(room_for_records),
                ));
            }
            Some(r) => r,
            None => (total_bytes / 8).min(room_for_records),
        };
        // Each part's share, at least its least; scaled back toward the least if the
        // shares and the reserve's least do not fit beside the record cache.
        let wanted = [
            ((total_bytes / 8).max(MIN_BLOCK_CACHE), MIN_BLOCK_CACHE),
            (
                (total_bytes / 16 * 3).max(MIN_WRITE_BUFFERS),
                MIN_WRITE_BUFFERS,
            ),
            (
                (total_bytes / 16).max(MIN_RAFT_LOG_CACHE),
                MIN_RAFT_LOG_CACHE,
            ),
        ];
        let room = total_bytes - record_cache_bytes - MIN_RESERVE - min_parts;
        let above_least: u64 = wanted.iter().map(|(want, least)| want - least).sum();
        let [block_cache_bytes, write_buffer_bytes, raft_log_cache_bytes] =
            wanted.map(|(want, least)| {
                if above_least <= room {
                    want
                } else {
                    least + ((want - least) as u128 * room as u128 / above_least as u128) as u64
                }
            });
        let reserve_bytes = total_bytes
            - record_cache_bytes
            - block_cache_bytes
            - write_buffer_bytes
            - raft_log_cache_bytes;
        Ok(Self {
            total_bytes,
            block_cache_bytes,
            write_buffer_bytes,
            record_cache_bytes,
            raft_log_cache_bytes,
            reserve_bytes,
        })
    }

    /// `name:bytes` for each part, in the order INFO and the docs list them.
    pub fn parts(&self) -> [(&'static str, u64); 5] {
        [
            ("block_cache", self.block_cache_bytes),
            ("write_buffers", self.write_buffer_bytes),
            ("record_cache", self.record_cache_bytes),
            ("raft_log_cache", self.raft_log_cache_bytes),
            ("reserve", self.reserve_bytes),
        ]
    }
}

/// The process's resident set size in bytes, from /proc/self/status (None elsewhere).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_splits_into_parts_that_add_up() {
        let b = MemoryBudget::default();
        assert_eq!(b.total_bytes, 1024 * MIB);
        assert_eq!(b.block_cache_bytes, 128 * MIB);
        assert_eq!(b.write_buffer_bytes, 192 * MIB);
        assert_eq!(b.record_cache_bytes, 128 * MIB);
        assert_eq!(b.raft_log_cache_bytes, 64 * MIB);
        assert_eq!(b.reserve_bytes, 512 * MIB);
        assert_eq!(b.parts().iter().map(|(_, v)| v).sum::<u64>(), b.total_bytes);
    }

    #[test]
    fn every_budget_from_the_minimum_up_adds_up() {
        let min = MemoryBudget::minimum_bytes(0);
        for total in (min..min + 2048 * MIB).step_by(7 * MIB as usize + 12_345) {
            for record in [None, Some(0), Some(MIB), Some(100 * MIB)] {
                if let Ok(b) = MemoryBudget::split(total, record) {
                    assert_eq!(b.parts().iter().map(|(_, v)| v).sum::<u64>(), total);
                    assert!(b.reserve_bytes >= MIN_RESERVE);
                    assert!(b.block_cache_bytes >= MIN_BLOCK_CACHE);
                    assert!(b.write_buffer_bytes >= MIN_WRITE_BUFFERS);
                }
            }
        }
        assert!(MemoryBudget::split(min, Some(0)).is_ok());
        let least = MemoryBudget::split(min, None).unwrap();
        assert_eq!(least.record_cache_bytes, 0);
        assert_eq!(least.reserve_bytes, MIN_RESERVE);
    }

    #[test]
    fn an_explicit_record_cache_takes_from_the_reserve() {
        let b = MemoryBudget::split(1024 * MIB, Some(512 * MIB)).unwrap();
        assert_eq!(b.record_cache_bytes, 512 * MIB);
        assert_eq!(b.block_cache_bytes, 128 * MIB);
        assert_eq!(b.reserve_bytes, 128 * MIB);
        let off = MemoryBudget::split(1024 * MIB, Some(0)).unwrap();
        assert_eq!(off.record_cache_bytes, 0);
        assert_eq!(off.reserve_bytes, 640 * MIB);
    }

    #[test]
    fn a_budget_below_the_minimum_names_the_flag_and_the_least() {
        let err = MemoryBudget::split(64 * MIB, None).unwrap_err();
        assert!(
            err.starts_with("--memory-budget-mib 64 is too small"),
            "{err}"
        );
        assert!(err.contains("at least 124 MiB"), "{err}");
        let err = MemoryBudget::split(128 * MIB, Some(64 * MIB)).unwrap_err();
        assert!(err.contains("leaves at most 4 MiB for records"), "{err}");
    }

    #[test]
    fn a_record_cache_larger_than_the_budget_allows_names_both_flags() {
        let err = MemoryBudget::split(1024 * MIB, Some(1000 * MIB)).unwrap_err();
        assert!(
            err.starts_with("--record-cache-mib 1000 does not fit in --memory-budget-mib 1024"),
            "{err}"
        );
        assert!(err.contains("leaves at most 900 MiB for records"), "{err}");
        // At the most, the other parts and the reserve are down to their least.
        let b = MemoryBudget::split(1024 * MIB, Some(900 * MIB)).unwrap();
        assert_eq!(b.block_cache_bytes, MIN_BLOCK_CACHE);
        assert_eq!(b.write_buffer_bytes, MIN_WRITE_BUFFERS);
        assert_eq!(b.reserve_bytes, MIN_RESERVE);
    }

    #[test]
    fn rss_is_read_where_proc_exists() {
        if std::path::Path::new("/proc/self/statm").exists() {
            assert!(process_rss_bytes().unwrap() > MIB);
        }
    }
}
