//! Raft log storage for one group over the shared engine: appends join group commit.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use shoal_storage::keys::{GroupId, TAG_PURGED, TAG_VOTE};
use shoal_storage::{Engine, StorageError};

use crate::io_err;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Log store of one Raft group. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    engine: Engine,
    group: GroupId,
    /// The newest entries, so the state machine applies what was just appended without
    /// reading it back from the LSM and decoding it again.
    recent: Arc<Mutex<RecentEntries>>,
}

/// Most entries, and by default most encoded bytes, kept in the recent-entry cache per
/// group. The cache only has to cover entries between append and apply (a few in flight
/// per group) and what followers fetch soon after; the newest entry is kept even when it
/// alone is larger.
const RECENT_ENTRIES: usize = 1024;
pub const RECENT_BYTES: usize = 8 * 1024 * 1024;

/// A contiguous run of the newest log entries, with their encoded sizes.
struct RecentEntries {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    max_bytes: usize,
    /// Bytes held by every group's cache together (the node reports it).
    total: Arc<AtomicU64>,
}

impl Default for RecentEntries {
    fn default() -> Self {
        Self::new(RECENT_BYTES, Arc::default())
    }
}

impl Drop for RecentEntries {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes as u64, Ordering::Relaxed);
    }
}

impl RecentEntries {
    fn new(max_bytes: usize, total: Arc<AtomicU64>) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
            total,
        }
    }

    fn add_bytes(&mut self, size: usize) {
        self.bytes += size;
        self.total.fetch_add(size as u64, Ordering::Relaxed);
    }

    fn sub_bytes(&mut self, size: usize) {
        self.bytes -= size;
        self.total.fetch_sub(size as u64, Ordering::Relaxed);
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let contiguous = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !contiguous {
            // Appends after a truncation restart the run.
            self.entries.clear();
            self.sub_bytes(self.bytes);
        }
        self.entries.push_back((entry, size));
        self.add_bytes(size);
        while self.entries.len() > 1
            && (self.entries.len() > RECENT_ENTRIES || self.bytes > self.max_bytes)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.sub_bytes(size);
        }
    }

    /// Entries `[start, end)` if all of them are cached.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || end > last + 1 || start >= end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    fn truncate_from(&mut self, index: u64) {
        while let Some((e, size)) = self.entries.back() {
            if e.log_id.index < index {
                break;
            }
            let size = *size;
            self.sub_bytes(size);
            self.entries.pop_back();
        }
    }

    fn purge_upto(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= index)
        {
            self.pop_front();
        }
    }
}

impl LogStore {
    /// Opens the group's log and verifies it: every entry decodes and indexes are
    /// contiguous from the purge point. A damaged log is an error naming the group and
    /// index, never silently skipped.
    pub fn open(engine: Engine, group: GroupId) -> Result<Self, StorageError> {
        Self::open_with_cache(engine, group, RECENT_BYTES, Arc::default())
    }

    /// Like `open`, keeping at most `recent_bytes` of recent entries (and always the
    /// newest), counted into `recent_total` with every other group's.
    pub fn open_with_cache(
        engine: Engine,
        group: GroupId,
        recent_bytes: usize,
        recent_total: Arc<AtomicU64>,
    ) -> Result<Self, StorageError> {
        let store = LogStore {
            engine,
            group,
            recent: Arc::new(Mutex::new(RecentEntries::new(recent_bytes, recent_total))),
        };
        let purged = store
            .purged()
            .map_err(|e| StorageError::corrupt("raft log", e))?;
        let mut bounds = store.engine.log_bounds(group)?;
        if let (Some(p), Some(first)) = (&purged, bounds.first)
            && first <= p.index
        {
            // A purge was interrupted by a crash: finish it.
            store.engine.purge_log_upto(group, p.index)?;
            bounds = store.engine.log_bounds(group)?;
        }
        if let (Some(first), Some(last)) = (bounds.first, bounds.last) {
            let mut expected = first;
            if let Some(p) = &purged
                && first != p.index + 1
            {
                return Err(StorageError::corrupt(
                    format!("raft log of group {group}"),
                    format!(
                        "first entry {first} does not follow purge point {}",
                        p.index
                    ),
                ));
            }
            // Walk in bounded chunks so a long log does not load at once.
            while expected <= last {
                let end = (expected + 1024).min(last + 1);
                for (index, bytes) in store.engine.read_log(group, expected, end)? {
                    if index != expected {
                        return Err(StorageError::corrupt(
                            format!("raft log of group {group}"),
                            format!("entry {expected} is missing (next present is {index})"),
                        ));
                    }
                    let entry: Entry = postcard::from_bytes(&bytes).map_err(|e| {
                        StorageError::corrupt(
                            format!("raft log of group {group}, entry {index}"),
                            e,
                        )
                    })?;
                    if entry.log_id.index != index {
                        return Err(StorageError::corrupt(
                            format!("raft log of group {group}"),
                            format!(
                                "entry stored at {index} claims index {}",
                                entry.log_id.index
                            ),
                        ));
                    }
                    expected += 1;
                }
                if expected < end {
                    return Err(StorageError::corrupt(
                        format!("raft log of group {group}"),
                        format!("entry {expected} is missing"),
                    ));
                }
            }
        }
        Ok(store)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, tag: u8) -> io::Result<Option<T>> {
        match self
            .engine
            .get_meta(self.group, tag)
            .map_err(io::Error::from)?
        {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(io_err),
        }
    }

    fn purged(&self) -> io::Result<Option<LogId>> {
        self.read_meta(TAG_PURGED)
    }

    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.engine.sync(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.await
            .map_err(|_| io_err("storage sync thread stopped"))?
    }
}

fn to_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_range(&range);
        if let Some(hit) = self
            .recent
            .lock()
            .expect("recent entries lock")
            .get(start, end)
        {
            return Ok(hit);
        }
        let raw = self
            .engine
            .read_log(self.group, start, end)
            .map_err(io::Error::from)?;
        raw.iter()
            .map(|(index, bytes)| {
                postcard::from_bytes(bytes).map_err(|e| {
                    io_err(format!(
                        "raft log of group {} entry {index} is corrupt: {e}",
                        self.group
                    ))
                })
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(TAG_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.purged()?;
        let bounds = self
            .engine
            .log_bounds(self.group)
            .map_err(io::Error::from)?;
        let last_log_id = match bounds.last {
            Some(last) => {
                let mut entries = self.try_get_log_entries(last..=last).await?;
                entries.pop().map(|e| e.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = postcard::to_allocvec(vote).map_err(io_err)?;
        self.engine
            .put_meta(self.group, TAG_VOTE, bytes)
            .map_err(io::Error::from)?;
        // A vote must be durable before it is acted on, or a restart could vote twice.
        self.sync().await
    }

    // `save_committed`/`read_committed` keep openraft's defaults (not persisted): writing
    // the commit index is one more journal write per entry, and it only lets a restarted
    // node apply before its first election. The node instead runs one ReadIndex round per
    // group at startup, which applies everything committed before serving any read.

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| postcard::to_allocvec(e).map(|b| (e.log_id.index, b)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err)?;
        let sizes: Vec<usize> = encoded.iter().map(|(_, bytes)| bytes.len()).collect();
        self.engine
            .append_log(self.group, encoded)
            .map_err(io::Error::from)?;
        {
            let mut recent = self.recent.lock().expect("recent entries lock");
            for (entry, size) in entries.into_iter().zip(sizes) {
                recent.push(entry, size);
            }
        }
        // Group commit: the callback fires after the fsync that covers this append,
        // shared with every other group's appends queued meanwhile.
        self.engine
            .sync(Box::new(move |r| callback.io_completed(r)));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.recent
            .lock()
            .expect("recent entries lock")
            .truncate_from(from);
        self.engine
            .truncate_log_from(self.group, from)
            .map_err(io::Error::from)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: a crash mid-purge then leaves only entries that
        // are below it, which `open` tolerates by purging again.
        let bytes = postcard::to_allocvec(&log_id).map_err(io_err)?;
        self.engine
            .put_meta(self.group, TAG_PURGED, bytes)
            .map_err(io::Error::from)?;
        self.recent
            .lock()
            .expect("recent entries lock")
            .purge_upto(log_id.index);
        self.engine
            .purge_log_upto(self.group, log_id.index)
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use shoal_storage::EngineOptions;

    use super::*;

    fn entry(index: u64) -> Vec<u8> {
        let log_id = LogId::new(
            openraft::vote::leader_id_adv::CommittedLeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        );
        postcard::to_allocvec(&Entry::new_blank(log_id)).unwrap()
    }

    #[tokio::test]
    async fn intact_log_opens_and_reports_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        engine
            .append_log(1, (1..=5).map(|i| (i, entry(i))))
            .unwrap();
        let mut store = LogStore::open(engine, 1).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(5));
        assert_eq!(store.try_get_log_entries(2..4).await.unwrap().len(), 2);
    }

    #[test]
    fn recent_entries_stay_bounded_and_contiguous() {
        let blank = |index: u64| {
            let log_id = LogId::new(
                openraft::vote::leader_id_adv::CommittedLeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            );
            Entry::new_blank(log_id)
        };
        let mut recent = RecentEntries::default();
        for i in 1..=(RECENT_ENTRIES as u64 + 10) {
            recent.push(blank(i), 100);
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(recent.bytes, RECENT_ENTRIES * 100);
        assert!(recent.get(1, 5).is_none(), "evicted entries are not served");
        assert_eq!(recent.get(20, 23).unwrap().len(), 3);
        // One huge entry evicts the rest but is itself kept.
        recent.push(blank(RECENT_ENTRIES as u64 + 11), RECENT_BYTES * 2);
        assert_eq!(recent.entries.len(), 1);
        // A gap (append after truncation) restarts the run.
        recent.truncate_from(RECENT_ENTRIES as u64 + 11);
        assert_eq!(recent.bytes, 0);
        recent.push(blank(5), 10);
        recent.push(blank(6), 10);
        recent.purge_upto(5);
        assert_eq!(recent.get(6, 7).unwrap().len(), 1);
        assert_eq!(recent.bytes, 10);
        assert_eq!(recent.total.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn corrupt_entry_is_reported_with_group_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        engine
            .append_log(3, [(1, entry(1)), (2, vec![0xff, 0xfe, 0x01])])
            .unwrap();
        let err = LogStore::open(engine, 3)
            .err()
            .expect("corruption must be reported")
            .to_string();
        assert!(err.contains("group 3") && err.contains("entry 2"), "{err}");
    }

    #[test]
    fn gap_in_log_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        engine
            .append_log(2, [(1, entry(1)), (2, entry(2)), (4, entry(4))])
            .unwrap();
        let err = LogStore::open(engine, 2)
            .err()
            .expect("gap must be reported")
            .to_string();
        assert!(err.contains("entry 3 is missing"), "{err}");
    }
}
