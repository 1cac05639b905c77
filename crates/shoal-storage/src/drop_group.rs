//! Dropping a node's replica of a group: when a replica moves to another node, this one
//! deletes everything it stored for the group (Raft log, bookkeeping, keys, expiry index,
//! snapshot files) to get its disk space back, while its other groups keep serving.
//!
//! Crash safety: a tombstone entry in the group's bookkeeping is made durable before
//! anything is deleted, and removed only once everything else is gone. A node that finds
//! one at start (`tombstoned_groups`) must not open that group: it calls `delete_group`
//! again, which deletes whatever is left.
//!
//! Deletion commits batches of `DELETE_BATCH` keys, each read by a fresh iterator that
//! starts past the last deleted key: no batch grows with the group, no read snapshot pins
//! memtables for the whole run, and the record cache's group lock is held for one batch
//! at a time. The LSM frees the deleted keys' space as compaction merges their
//! tombstones; snapshot files are freed at once.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use fjall::{Keyspace, UserKey};

use crate::engine::Engine;
use crate::keys::{self, GroupId, TAG_TOMBSTONE};
use crate::{Result, StorageError};

/// Keys deleted per committed batch.
const DELETE_BATCH: usize = 4096;

/// What `delete_group` removed, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupDeletion {
    pub log_entries: u64,
    /// Bookkeeping entries (vote, purge point, applied position, snapshot, ...), not
    /// counting the deletion's own tombstone.
    pub meta_entries: u64,
    pub data_keys: u64,
    pub expiry_entries: u64,
    /// Files removed from those passed in, and their total size.
    pub files: u64,
    pub file_bytes: u64,
    /// Batches committed.
    pub batches: u64,
    /// An earlier deletion of this group had been interrupted; this one finished it.
    pub resumed: bool,
}

impl GroupDeletion {
    /// Keys deleted across the keyspaces.
    pub fn keys(&self) -> u64 {
        self.log_entries + self.meta_entries + self.data_keys + self.expiry_entries
    }
}

impl Engine {
    /// Deletes everything this engine stores for `group`, and the files in `files` (the
    /// group's snapshot files, which live outside the engine; missing ones are skipped).
    /// Blocks for as long as the group is large: call it from a blocking thread. The
    /// group's Raft must be stopped first (no log writes, applies or snapshot builds), or
    /// what those write after the deletion passed by would survive it.
    ///
    /// Crash-safe and resumable (see the module doc); the outcome is durable on return.
    /// Afterwards the id is free: a group created with it again starts empty.
    pub fn delete_group(&self, group: GroupId, files: &[PathBuf]) -> Result<GroupDeletion> {
        let inner = &self.inner;
        let mut done = GroupDeletion {
            resumed: self.begin_group_deletion(group)?,
            ..GroupDeletion::default()
        };
        (done.files, done.file_bytes) = remove_files(files)?;
        done.data_keys = self.delete_group_keys(&inner.data, group, &mut done.batches)?;
        done.expiry_entries = self.delete_group_keys(&inner.expiry, group, &mut done.batches)?;
        done.log_entries = self.delete_group_keys(&inner.log, group, &mut done.batches)?;
        // Bookkeeping last, the tombstone very last: until then the group is marked.
        done.meta_entries = self.delete_group_keys(&inner.meta, group, &mut done.batches)?;
        inner.meta.remove(keys::meta_key(group, TAG_TOMBSTONE))?;
        self.sync_now()?;
        Ok(done)
    }

    /// Groups whose deletion was interrupted, ascending. The node must not open them, and
    /// finishes each with `delete_group`.
    pub fn tombstoned_groups(&self) -> Result<Vec<GroupId>> {
        // The tombstone goes last, so a tombstoned group always has bookkeeping.
        self.tombstoned_among(groups_in(&self.inner.meta)?)
    }

    /// Every group with Raft state here (a log or bookkeeping entry), ascending, except the
    /// tombstoned ones: the groups to open at start besides those the cluster map assigns.
    pub fn groups_with_state(&self) -> Result<Vec<GroupId>> {
        let with_meta = groups_in(&self.inner.meta)?;
        let mut groups: BTreeSet<GroupId> = with_meta.iter().copied().collect();
        groups.extend(groups_in(&self.inner.log)?);
        for group in self.tombstoned_among(with_meta)? {
            groups.remove(&group);
        }
        Ok(groups.into_iter().collect())
    }

    fn tombstoned_among(&self, groups: Vec<GroupId>) -> Result<Vec<GroupId>> {
        let mut out = Vec::new();
        for group in groups {
            if self.get_meta(group, TAG_TOMBSTONE)?.is_some() {
                out.push(group);
            }
        }
        Ok(out)
    }

    /// Marks `group` as being deleted, durably, before anything of it is deleted: a crash
    /// midway must never leave a partial group that looks whole. True if it already was.
    fn begin_group_deletion(&self, group: GroupId) -> Result<bool> {
        if self.get_meta(group, TAG_TOMBSTONE)?.is_some() {
            return Ok(true);
        }
        self.put_meta(group, TAG_TOMBSTONE, vec![1])?;
        self.sync_now()?;
        Ok(false)
    }

    /// Deletes `group`'s keys in `keyspace` (but not its tombstone) in bounded batches;
    /// returns how many.
    fn delete_group_keys(
        &self,
        keyspace: &Keyspace,
        group: GroupId,
        batches: &mut u64,
    ) -> Result<u64> {
        let inner = &self.inner;
        let is_data = keyspace == &inner.data;
        let tombstone = keys::meta_key(group, TAG_TOMBSTONE);
        let keep = (keyspace == &inner.meta).then_some(&tombstone[..]);
        let end = group_end(group);
        let mut start = Bound::Included(keys::group_prefix(group).to_vec());
        let mut deleted = 0u64;
        loop {
            let mut batch = inner.db.batch();
            let mut doomed: Vec<UserKey> = Vec::new();
            let mut last = None;
            for item in keyspace
                .range((start.clone(), end.clone()))
                .take(DELETE_BATCH)
            {
                let key = item.key()?;
                if keep != Some(&key[..]) {
                    batch.remove(keyspace, key.clone());
                    if is_data {
                        doomed.push(key.clone());
                    }
                    deleted += 1;
                }
                last = Some(key);
            }
            let Some(last) = last else {
                return Ok(deleted);
            };
            if !batch.is_empty() {
                // Data: commit and cache update together under the group's write lock,
                // as apply does, so no read caches a record this batch deleted.
                let _update = is_data.then(|| inner.records.write_lock(group));
                batch.commit()?;
                for key in &doomed {
                    if let Some((_, user_key)) = keys::split_data_key(key) {
                        inner.records.remove(group, user_key);
                    }
                }
                *batches += 1;
            }
            // Past the deleted keys, so the next seek does not wade through their tombstones.
            start = Bound::Excluded(last.to_vec());
        }
    }
}

/// The end of `group`'s keys in any keyspace (they all start with its prefix).
fn group_end(group: GroupId) -> Bound<Vec<u8>> {
    match group.checked_add(1) {
        Some(next) => Bound::Excluded(keys::group_prefix(next).to_vec()),
        None => Bound::Unbounded,
    }
}

/// Groups with a key in `keyspace`, ascending: one seek per group, to the next group's
/// prefix, rather than a walk over every key.
fn groups_in(keyspace: &Keyspace) -> Result<Vec<GroupId>> {
    let mut out = Vec::new();
    let mut from: GroupId = 0;
    while let Some(item) = keyspace.range(keys::group_prefix(from)..).next() {
        let key = item.key()?;
        let group = key
            .get(..keys::GROUP_PREFIX)
            .and_then(|prefix| prefix.try_into().ok())
            .map(GroupId::from_be_bytes)
            .ok_or_else(|| StorageError::corrupt("the engine's keys", "key without a group"))?;
        out.push(group);
        match group.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(out)
}

/// Removes `files` (missing ones are fine) and makes the removals durable: the tombstone
/// goes after them, and a file that came back after a crash would have no owner left to
/// delete it. Returns the count and bytes removed.
fn remove_files(files: &[PathBuf]) -> Result<(u64, u64)> {
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut dirs = BTreeSet::new();
    for path in files {
        let len = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        match std::fs::remove_file(path) {
            Ok(()) => {
                count += 1;
                bytes += len;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        dirs.insert(dir.unwrap_or(Path::new(".")).to_path_buf());
    }
    for dir in dirs {
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_core::Record;

    use super::*;
    use crate::{DataChange, EngineOptions};

    /// Keys of `group` in each keyspace: (log, meta, data, expiry).
    fn counts(e: &Engine, group: GroupId) -> [usize; 4] {
        let inner = &e.inner;
        let prefix = keys::group_prefix(group);
        [&inner.log, &inner.meta, &inner.data, &inner.expiry].map(|ks| ks.prefix(prefix).count())
    }

    /// Gives `group` a log of `entries`, vote/purge/snapshot bookkeeping, and `n` keys
    /// (every third with an expiry) applied with their applied position. Returns the
    /// number of expiring keys.
    fn fill(e: &Engine, group: GroupId, entries: u64, n: usize) -> usize {
        e.append_log(group, (1..=entries).map(|i| (i, vec![i as u8; 16])))
            .unwrap();
        for tag in [keys::TAG_VOTE, keys::TAG_PURGED, keys::TAG_SNAPSHOT] {
            e.put_meta(group, tag, vec![tag]).unwrap();
        }
        let changes: Vec<_> = (0..n)
            .map(|i| DataChange::Put {
                key: Bytes::from(format!("key{i}")),
                old_expire: None,
                record: Record {
                    value: Bytes::from(format!("value{i}-{group}")),
                    version: i as u64,
                    expire_at: (i % 3 == 0).then_some(1_000 + i as u64),
                },
            })
            .collect();
        for chunk in changes.chunks(1000) {
            e.apply_changes(group, chunk, &[(keys::TAG_APPLIED, b"applied".to_vec())])
                .unwrap();
        }
        n.div_ceil(3)
    }

    #[test]
    fn deleting_a_group_removes_all_it_stored_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let expiring = fill(&e, 1, 50, 300);
        fill(&e, 2, 40, 200);
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let (mine, theirs) = (
            snaps.join("group-1-50-built.snap"),
            snaps.join("group-2-40.snap"),
        );
        e.export_group(1, &mine, keys::TAG_APPLIED).unwrap();
        e.export_group(2, &theirs, keys::TAG_APPLIED).unwrap();
        // Cache some of group 1's records, present and absent.
        assert!(e.get_record(1, b"key7").unwrap().is_some());
        assert!(e.get_record(1, b"nope").unwrap().is_none());
        assert!(e.inner.records.get(1, b"key7").is_some());
        let survivor = counts(&e, 2);
        assert_eq!(e.groups_with_state().unwrap(), vec![1, 2]);

        let done = e.delete_group(1, std::slice::from_ref(&mine)).unwrap();
        assert_eq!(
            (done.log_entries, done.meta_entries, done.data_keys),
            (50, 4, 300)
        );
        assert_eq!(done.expiry_entries, expiring as u64);
        assert_eq!(done.files, 1);
        assert!(done.file_bytes > 0 && !done.resumed);
        assert_eq!(counts(&e, 1), [0; 4]);
        assert!(!mine.exists() && theirs.exists());
        assert_eq!(counts(&e, 2), survivor, "the other group is untouched");
        assert_eq!(e.get_record(2, b"key7").unwrap().unwrap().value, "value7-2");
        assert!(e.inner.records.get(1, b"key7").is_none(), "record uncached");
        assert_eq!(e.get_record(1, b"key7").unwrap(), None);
        assert_eq!(e.groups_with_state().unwrap(), vec![2]);
        assert!(e.tombstoned_groups().unwrap().is_empty());

        // The id can be used again, from empty.
        let put = DataChange::Put {
            key: Bytes::from_static(b"key8"),
            old_expire: None,
            record: Record {
                value: Bytes::from_static(b"new"),
                version: 1,
                expire_at: None,
            },
        };
        e.apply_changes(1, &[put], &[]).unwrap();
        assert_eq!(e.get_record(1, b"key8").unwrap().unwrap().value, "new");
        assert_eq!(e.get_record(1, b"key7").unwrap(), None);

        // Deleting a group with nothing stored is a no-op that succeeds.
        let nothing = e.delete_group(9, &[mine]).unwrap();
        assert_eq!((nothing.keys(), nothing.files), (0, 0));
        e.close().unwrap();
        drop(e);
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert_eq!(e.groups_with_state().unwrap(), vec![2]);
        assert_eq!(counts(&e, 1), [0, 0, 1, 0], "only the re-created key");
    }

    #[test]
    fn an_interrupted_deletion_is_listed_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
            fill(&e, 1, 30, 100);
            fill(&e, 2, 30, 100);
            // A deletion that got as far as the data keys, then the process died.
            assert!(!e.begin_group_deletion(1).unwrap());
            let mut batches = 0;
            let data = e.delete_group_keys(&e.inner.data, 1, &mut batches).unwrap();
            assert_eq!((data, batches), (100, 1));
            // Durable, so the resumed deletion's counts below do not depend on timing.
            e.sync_now().unwrap();
        }
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert_eq!(e.tombstoned_groups().unwrap(), vec![1]);
        assert_eq!(e.groups_with_state().unwrap(), vec![2], "never opened");
        let done = e.delete_group(1, &[]).unwrap();
        assert!(done.resumed);
        assert_eq!(
            (done.data_keys, done.expiry_entries, done.log_entries),
            (0, 34, 30)
        );
        assert_eq!(done.meta_entries, 4);
        assert_eq!(counts(&e, 1), [0; 4]);
        assert!(e.tombstoned_groups().unwrap().is_empty());
        assert_eq!(e.groups_with_state().unwrap(), vec![2]);
    }

    #[test]
    fn a_large_group_is_deleted_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let expiring = fill(&e, 3, 9_000, 12_000);
        fill(&e, 4, 10, 10);
        let done = e.delete_group(3, &[]).unwrap();
        assert_eq!(done.data_keys, 12_000);
        assert_eq!(done.expiry_entries, expiring as u64);
        assert_eq!(done.log_entries, 9_000);
        // 3 batches of data, 1 of expiries, 3 of log, 1 of bookkeeping.
        assert_eq!(done.batches, 8);
        assert_eq!(counts(&e, 3), [0; 4]);
        assert_eq!(counts(&e, 4), [10, 4, 10, 4]);
    }

    #[test]
    fn groups_are_listed_from_either_keyspace_up_to_the_last_id() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert!(e.groups_with_state().unwrap().is_empty());
        e.append_log(7, (1..=100).map(|i| (i, vec![1]))).unwrap();
        e.put_meta(0, keys::TAG_VOTE, vec![1]).unwrap();
        e.put_meta(7, keys::TAG_VOTE, vec![1]).unwrap();
        e.append_log(GroupId::MAX, [(1, vec![1])]).unwrap();
        e.put_meta(300, keys::TAG_APPLIED, vec![1]).unwrap();
        // Data alone is no Raft state.
        e.inner
            .data
            .insert(keys::data_key(5, 0, b"k"), b"v".to_vec())
            .unwrap();
        assert_eq!(
            e.groups_with_state().unwrap(),
            vec![0, 7, 300, GroupId::MAX]
        );
        let done = e.delete_group(GroupId::MAX, &[]).unwrap();
        assert_eq!(done.log_entries, 1);
        assert_eq!(e.groups_with_state().unwrap(), vec![0, 7, 300]);
        assert_eq!(counts(&e, 7)[..2], [100, 1]);
    }
}
