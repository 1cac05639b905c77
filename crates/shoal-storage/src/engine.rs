//! The engine handle: opening the database, Raft log and bookkeeping per group.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, UserValue};

use crate::disk::DiskSpace;
use crate::keys::{self, GroupId};
use crate::syncer::{SyncCallback, Syncer, WriterActivity};
use crate::{Result, StorageError};

/// Largest memtable of the shard records, the one keyspace written at random keys (every
/// apply). fjall's default of 64 MiB makes each insert a deep, cache-missing skiplist
/// search: 19% of a single node's CPU under pipelined SETs. 16 MiB measured +30% SET -P 16
/// on one node and -17% CPU per write on 3 nodes; 8 MiB flushed too often to gain more.
const DATA_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Largest memtable of the per-group bookkeeping (vote, applied position, purge point): a
/// handful of keys, one of which every apply rewrites, so a big memtable holds hundreds of
/// thousands of dead versions to search past. 1 MiB measured SET -P 1 on one node
/// 27.9-31.0k -> 30.8-32.5k /s against 64 MiB.
const META_MEMTABLE_BYTES: u64 = 1024 * 1024;

/// Largest memtables of the Raft log (appended in order, so size costs no CPU) and of the
/// expiry index (written only by keys with a TTL).
const LOG_MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;
const EXPIRY_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// fjall refuses a journal limit below this.
const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Memtable size limits per keyspace, from the write-buffer budget. fjall keeps, per
/// keyspace, one active memtable and the sealed ones waiting for a flush (it halts writes
/// at four), so the sizes add up to half the budget: the active memtables plus as much
/// again being flushed. Each is the measured best size above, or its share of that half
/// when the budget is smaller (log 40%, data 40%, expiry 15%, bookkeeping 5%), never
/// under 1 MiB. fjall stores a keyspace's options when it creates it, so these apply to
/// data directories created from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemtableSizes {
    pub log: u64,
    pub data: u64,
    pub expiry: u64,
    pub meta: u64,
}

impl MemtableSizes {
    pub fn for_write_buffers(write_buffer_bytes: u64) -> Self {
        let half = write_buffer_bytes / 2;
        let share = |percent: u64, best: u64| (half / 100 * percent).clamp(1 << 20, best);
        Self {
            log: share(40, LOG_MEMTABLE_BYTES),
            data: share(40, DATA_MEMTABLE_BYTES),
            expiry: share(15, EXPIRY_MEMTABLE_BYTES),
            meta: share(5, META_MEMTABLE_BYTES),
        }
    }

    pub fn total(&self) -> u64 {
        self.log + self.data + self.expiry + self.meta
    }
}

/// Default free-space reserve: room for what lands after writes are acknowledged (a
/// memtable flush per keyspace, the compactions they trigger, the journal until flushed);
/// see `disk`.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;

/// Tunables of the engine, with the limits they impose.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Memory for memtables across keyspaces (see `MemtableSizes`); it also sets the
    /// journal's limit, half of it and at least 64 MiB, past which fjall flushes the
    /// memtables holding the oldest journal so it can delete it.
    pub write_buffer_bytes: u64,
    /// Record cache size in bytes (0 disables it).
    pub record_cache_bytes: u64,
    /// The threads that append to the log, which group commit waits for (see `syncer`);
    /// None syncs as soon as a request arrives.
    pub writer_activity: Option<Arc<WriterActivity>>,
    /// Free space kept in reserve under the data directory; writes are refused as free
    /// space falls into it (see `disk`). 0 turns the guard off.
    pub min_free_bytes: u64,
    /// Table files kept open at once (fjall's descriptor cache; more are opened per read).
    /// Journals and files being written come on top. At least [`MIN_OPEN_FILES`].
    pub open_files: usize,
}

/// fjall's own default for its descriptor cache.
pub const DEFAULT_OPEN_FILES: usize = 900;
/// The fewest the descriptor cache works with (fjall asserts at least 10).
pub const MIN_OPEN_FILES: usize = 16;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 128 * 1024 * 1024,
            write_buffer_bytes: 192 * 1024 * 1024,
            record_cache_bytes: 128 * 1024 * 1024,
            writer_activity: None,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            open_files: DEFAULT_OPEN_FILES,
        }
    }
}

std::thread_local! {
    static RECOVERING: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// The data directory this thread is opening (recovering) right now, if any. fjall and
/// lsm-tree assert on some damaged metadata, and the unwinding then aborts the process (a
/// panic while dropping the half-opened database), so no error can be returned: the binary's
/// panic hook asks this to tell the operator which directory is damaged and what to do.
pub fn recovering_dir() -> Option<PathBuf> {
    RECOVERING.with(|r| r.borrow().clone())
}

/// Marks this thread as recovering `dir` until dropped.
struct Recovering;

impl Recovering {
    fn enter(dir: &Path) -> Self {
        RECOVERING.with(|r| *r.borrow_mut() = Some(dir.to_path_buf()));
        Recovering
    }
}

impl Drop for Recovering {
    fn drop(&mut self) {
        RECOVERING.with(|r| *r.borrow_mut() = None);
    }
}

/// First and last index present in a group's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogBounds {
    pub first: Option<u64>,
    pub last: Option<u64>,
}

/// Memory the engine holds now, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineMemory {
    /// Blocks in fjall's block cache.
    pub block_cache_bytes: u64,
    /// fjall's memtables, active and sealed, across keyspaces.
    pub write_buffer_bytes: u64,
    /// The record cache, as it charges entries (key, value and bookkeeping).
    pub record_cache_bytes: u64,
}

/// Counters that show group commit at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub fsyncs: u64,
    pub sync_requests: u64,
}

/// The node's storage. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Database,
    pub(crate) log: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) data: Keyspace,
    pub(crate) expiry: Keyspace,
    pub(crate) records: crate::cache::RecordCache,
    disk: Arc<DiskSpace>,
    syncer: Mutex<Syncer>,
    counters: Arc<crate::syncer::SyncCounters>,
    pub(crate) dir: PathBuf,
}

/// A journal that cannot be replayed, and what an operator does about it.
fn corrupt_journal(dir: &Path, cause: String) -> StorageError {
    StorageError::corrupt(
        format!("the journal under {}", dir.join("db").display()),
        format!(
            "{cause}. In a cluster, move {} aside and start this node again with --rejoin: \
             it rebuilds its replicas from the other nodes",
            dir.display()
        ),
    )
}

/// Above this, a recovered sequence number can only come from a damaged journal: fjall
/// reserves the top bit and asserts below it, and a node would need 2^62 writes to get
/// here (a million writes a second for 146,000 years).
const MAX_SANE_SEQNO: u64 = 1 << 62;

impl Engine {
    /// Opens (or creates) the engine under `dir`. fjall replays its journal here; a torn
    /// tail from a crash is cut at the last intact batch (every batch is checksummed),
    /// which only ever loses writes that were never acknowledged, since we acknowledge a
    /// write only after the fsync that covers it.
    pub fn open(dir: &Path, options: &EngineOptions) -> Result<Engine> {
        if dir.exists() && !dir.is_dir() {
            return Err(StorageError::Io(std::io::Error::other(format!(
                "{} exists and is not a directory; pass a directory path",
                dir.display()
            ))));
        }
        std::fs::create_dir_all(dir)?;
        let disk = Arc::new(DiskSpace::new(dir, options.min_free_bytes)?);
        let db_dir = dir.join("db");
        let builder = Database::builder(&db_dir)
            .cache_size(options.cache_bytes)
            .max_cached_files(Some(options.open_files.max(MIN_OPEN_FILES)))
            .max_journaling_size((options.write_buffer_bytes / 2).max(MIN_JOURNAL_BYTES))
            .manual_journal_persist(true);
        // fjall asserts some journal invariants while decoding (debug builds), so damaged
        // bytes can panic instead of erroring: that is a corrupt journal too, not a bug
        // to crash on.
        let recovering = Recovering::enter(dir);
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.open()))
            .map_err(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                corrupt_journal(dir, format!("decoding it failed ({what})"))
            })?;
        drop(recovering);
        let db = opened.map_err(|e| match e {
            // A batch written in full (it has its end marker) that fails its check is
            // damage, not a crash: fjall refuses it rather than drop what follows.
            fjall::Error::JournalRecovery(kind) => corrupt_journal(
                dir,
                format!("{kind:?}: a completely written batch fails its check, which a crash cannot cause"),
            ),
            other => other.into(),
        })?;
        // A damaged batch header can pass recovery with an absurd sequence number (its
        // checksum does not cover it): fjall then panics on the first write ("ran out of
        // sequence numbers") and poisons every group. Seen once in the damaged-journal test
        // (a corrupted byte). No real journal comes near 2^62 writes: refuse it as corrupt.
        if db.seqno() >= MAX_SANE_SEQNO {
            return Err(corrupt_journal(
                dir,
                format!(
                    "it recovered an impossible sequence number ({:#x})",
                    db.seqno()
                ),
            ));
        }
        let sizes = MemtableSizes::for_write_buffers(options.write_buffer_bytes);
        let open = |name: &str, memtable: u64| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let log = open("raft_log", sizes.log)?;
        let meta = open("raft_meta", sizes.meta)?;
        let data = open("shard_data", sizes.data)?;
        let expiry = open("shard_expiry", sizes.expiry)?;
        let syncer = Syncer::start(db.clone(), db_dir, options.writer_activity.clone())?;
        let counters = syncer.counters.clone();
        Ok(Engine {
            inner: Arc::new(Inner {
                db,
                log,
                meta,
                data,
                expiry,
                records: crate::cache::RecordCache::new(options.record_cache_bytes),
                disk,
                syncer: Mutex::new(syncer),
                counters,
                dir: dir.to_path_buf(),
            }),
        })
    }

    /// The directory this engine lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Free space under the data directory, and what it still admits.
    pub fn disk(&self) -> &Arc<DiskSpace> {
        &self.inner.disk
    }

    /// Runs `callback` once every write made so far is durable (group commit).
    pub fn sync(&self, callback: SyncCallback) {
        self.inner
            .syncer
            .lock()
            .expect("syncer lock")
            .sync(callback);
    }

    /// Blocks until every write made so far is durable.
    pub fn sync_now(&self) -> Result<()> {
        self.inner.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    pub fn stats(&self) -> StorageStats {
        StorageStats {
            fsyncs: self.inner.counters.fsyncs.load(Ordering::Relaxed),
            sync_requests: self.inner.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Memory the engine holds now (the parts of the node's memory budget it can measure).
    pub fn memory(&self) -> EngineMemory {
        EngineMemory {
            block_cache_bytes: self.inner.db.cache_size(),
            write_buffer_bytes: self.inner.db.write_buffer_size(),
            record_cache_bytes: self.inner.records.weight(),
        }
    }

    /// Completes queued syncs, then makes everything durable. Further syncs fail.
    pub fn close(&self) -> Result<()> {
        self.inner.syncer.lock().expect("syncer lock").stop();
        self.inner.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    // ---- Raft log -------------------------------------------------------------------

    /// Writes log entries (index, encoded entry). Visible to reads at once; durable after
    /// the next `sync`.
    pub fn append_log<I>(&self, group: GroupId, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (u64, Vec<u8>)>,
    {
        let mut batch = self.inner.db.batch();
        for (index, bytes) in entries {
            batch.insert(&self.inner.log, keys::log_key(group, index), bytes);
        }
        batch.commit()?;
        Ok(())
    }

    /// Entries with index in `[start, end)`, in order.
    pub fn read_log(&self, group: GroupId, start: u64, end: u64) -> Result<Vec<(u64, UserValue)>> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        for item in self
            .inner
            .log
            .range(keys::log_key(group, start)..keys::log_key(group, end))
        {
            let (k, v) = item.into_inner()?;
            let index = keys::log_index_of(&k)
                .ok_or_else(|| StorageError::corrupt("raft log", "short log key"))?;
            out.push((index, v));
        }
        Ok(out)
    }

    pub fn log_bounds(&self, group: GroupId) -> Result<LogBounds> {
        let range = keys::log_key(group, 0)..=keys::log_key(group, u64::MAX);
        let index_of = |guard: Option<fjall::Guard>| -> Result<Option<u64>> {
            match guard {
                None => Ok(None),
                Some(g) => {
                    let k = g.key()?;
                    Ok(Some(keys::log_index_of(&k).ok_or_else(|| {
                        StorageError::corrupt("raft log", "short log key")
                    })?))
                }
            }
        };
        let first = index_of(self.inner.log.range(range.clone()).next())?;
        let last = index_of(self.inner.log.range(range).next_back())?;
        Ok(LogBounds { first, last })
    }

    /// Deletes entries with index >= `from`.
    pub fn truncate_log_from(&self, group: GroupId, from: u64) -> Result<()> {
        self.delete_log_range(group, Bound::Included(from), Bound::Included(u64::MAX))
    }

    /// Deletes entries with index <= `upto`.
    pub fn purge_log_upto(&self, group: GroupId, upto: u64) -> Result<()> {
        self.delete_log_range(group, Bound::Included(0), Bound::Included(upto))
    }

    fn delete_log_range(&self, group: GroupId, start: Bound<u64>, end: Bound<u64>) -> Result<()> {
        let map = |b: Bound<u64>| b.map(|i| keys::log_key(group, i));
        let mut batch = self.inner.db.batch();
        let mut n = 0usize;
        for item in self.inner.log.range::<[u8; 12], _>((map(start), map(end))) {
            let k = item.key()?;
            batch.remove(&self.inner.log, k);
            n += 1;
            // Bounded batches: a purge after a long outage must not build one huge batch.
            if n.is_multiple_of(4096) {
                std::mem::replace(&mut batch, self.inner.db.batch()).commit()?;
            }
        }
        batch.commit()?;
        Ok(())
    }

    // ---- per-group bookkeeping ------------------------------------------------------

    pub fn get_meta(&self, group: GroupId, tag: u8) -> Result<Option<UserValue>> {
        Ok(self.inner.meta.get(keys::meta_key(group, tag))?)
    }

    pub fn put_meta(&self, group: GroupId, tag: u8, value: Vec<u8>) -> Result<()> {
        self.inner.meta.insert(keys::meta_key(group, tag), value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_directory_being_recovered_is_known_only_during_open() {
        assert_eq!(recovering_dir(), None);
        let dir = tempfile::tempdir().unwrap();
        {
            let _guard = Recovering::enter(dir.path());
            assert_eq!(recovering_dir().as_deref(), Some(dir.path()));
            // Another thread recovers nothing.
            let elsewhere = std::thread::spawn(recovering_dir).join().unwrap();
            assert_eq!(elsewhere, None);
        }
        assert_eq!(recovering_dir(), None);
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert_eq!(recovering_dir(), None, "cleared once open returns");
        drop(engine);
    }

    #[test]
    fn log_append_read_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        engine
            .append_log(1, (1..=10).map(|i| (i, vec![i as u8])))
            .unwrap();
        engine
            .append_log(2, (1..=3).map(|i| (i, vec![0xff])))
            .unwrap();
        assert_eq!(
            engine.log_bounds(1).unwrap(),
            LogBounds {
                first: Some(1),
                last: Some(10)
            }
        );
        let got = engine.read_log(1, 3, 6).unwrap();
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(&*got[0].1, &[3u8]);
        engine.truncate_log_from(1, 8).unwrap();
        engine.purge_log_upto(1, 2).unwrap();
        assert_eq!(
            engine.log_bounds(1).unwrap(),
            LogBounds {
                first: Some(3),
                last: Some(7)
            }
        );
        // Other groups are untouched.
        assert_eq!(
            engine.log_bounds(2).unwrap(),
            LogBounds {
                first: Some(1),
                last: Some(3)
            }
        );
        assert_eq!(engine.log_bounds(3).unwrap(), LogBounds::default());
    }

    #[test]
    fn group_commit_completes_every_callback() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100u64 {
            engine.append_log(1, [(i + 1, vec![1])]).unwrap();
            let tx = tx.clone();
            engine.sync(Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        for _ in 0..100 {
            assert!(rx.recv().unwrap());
        }
        let stats = engine.stats();
        assert_eq!(stats.sync_requests, 100);
        assert!(stats.fsyncs >= 1 && stats.fsyncs <= 100);
    }

    fn engine_with_activity(dir: &Path, activity: &Arc<WriterActivity>) -> Engine {
        let options = EngineOptions {
            writer_activity: Some(activity.clone()),
            ..EngineOptions::default()
        };
        Engine::open(dir, &options).unwrap()
    }

    #[test]
    fn group_commit_waits_for_busy_writers_and_covers_all_they_queued() {
        let dir = tempfile::tempdir().unwrap();
        let activity = Arc::new(WriterActivity::new(1, Duration::from_secs(60)));
        let engine = engine_with_activity(dir.path(), &activity);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3u64 {
            engine.append_log(1, [(i + 1, vec![1])]).unwrap();
            let tx = tx.clone();
            engine.sync(Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        // The writer is busy, so the round has not run (its hold is a minute).
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(engine.stats().fsyncs, 0);
        activity.idle();
        for _ in 0..3 {
            assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        assert_eq!(engine.stats().fsyncs, 1, "one fsync covers all three");
        // An idle writer does not hold a round back.
        engine.sync(Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        assert_eq!(engine.stats().fsyncs, 2);
    }

    #[test]
    fn group_commit_waits_no_longer_than_its_hold() {
        let dir = tempfile::tempdir().unwrap();
        // Never goes idle: only the hold ends each round.
        let activity = Arc::new(WriterActivity::new(1, Duration::from_millis(20)));
        let engine = engine_with_activity(dir.path(), &activity);
        let (tx, rx) = std::sync::mpsc::channel();
        let started = std::time::Instant::now();
        engine.append_log(1, [(1, vec![1])]).unwrap();
        engine.sync(Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn memtables_take_half_the_write_buffers_up_to_their_best_sizes() {
        const MIB: u64 = 1 << 20;
        let big = MemtableSizes::for_write_buffers(192 * MIB);
        assert_eq!((big.log, big.data, big.meta), (32 * MIB, 16 * MIB, MIB));
        assert_eq!(big.expiry, 96 * MIB / 100 * 15);
        assert!(big.total() <= 96 * MIB);
        let small = MemtableSizes::for_write_buffers(16 * MIB);
        // Half of 16 MiB, give or take the bookkeeping memtable's 1 MiB floor.
        assert!(small.total() <= 9 * MIB, "{small:?}");
        assert!(small.data < 4 * MIB && small.log < 4 * MIB, "{small:?}");
        assert_eq!(small.meta, MIB);
        assert_eq!(MemtableSizes::for_write_buffers(0).total(), 4 * MIB);
    }

    #[test]
    fn memory_reports_what_the_caches_hold() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let before = engine.memory();
        engine
            .append_log(1, (1..=100).map(|i| (i, vec![7u8; 1000])))
            .unwrap();
        let after = engine.memory();
        assert!(
            after.write_buffer_bytes >= before.write_buffer_bytes + 100_000,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
            engine.append_log(4, [(1, b"entry".to_vec())]).unwrap();
            engine
                .put_meta(4, keys::TAG_VOTE, b"vote".to_vec())
                .unwrap();
            engine.close().unwrap();
        }
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert_eq!(&*engine.read_log(4, 1, 2).unwrap()[0].1, b"entry");
        assert_eq!(
            &*engine.get_meta(4, keys::TAG_VOTE).unwrap().unwrap(),
            b"vote"
        );
    }
}
