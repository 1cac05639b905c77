//! A shard's keyspace: records by key, the expiry index, scans, and atomic apply batches.

use bytes::Bytes;
use shoal_core::record::{self, Record};
use shoal_core::slot::key_slot;

use crate::engine::Engine;
use crate::keys::{self, GroupId};
use crate::{Result, StorageError};

/// One change to a shard's keys, with the old expiry so the expiry index stays exact.
#[derive(Debug, Clone, PartialEq)]
pub enum DataChange {
    Put {
        key: Bytes,
        old_expire: Option<u64>,
        record: Record,
    },
    Delete {
        key: Bytes,
        old_expire: Option<u64>,
    },
    DeleteAll,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPage {
    pub entries: Vec<(Bytes, Record)>,
    /// Where to resume: (slot, last key returned in it), or `None` if the range is done.
    pub next: Option<(u16, Option<Bytes>)>,
}

impl Engine {
    /// A key's stored record (expired or not), through the record cache; a miss fills it.
    pub fn get_record(&self, group: GroupId, key: &[u8]) -> Result<Option<Record>> {
        let records = &self.inner.records;
        if let Some(hit) = records.get(group, key) {
            return Ok(hit);
        }
        let _fill = records.read_lock(group);
        let record = self.read_record(group, key)?;
        records.put(group, key, record.as_ref());
        Ok(record)
    }

    /// Several keys of one group as of one moment: under the group's read lock, so no
    /// applied batch (a transaction, or a batch of entries) is seen half. A single-key
    /// read needs no lock, but the cache is updated key by key as a batch commits, so
    /// reading several keys without it could see some of a batch and not the rest.
    pub fn get_records(&self, group: GroupId, keys: &[Bytes]) -> Result<Vec<Option<Record>>> {
        let records = &self.inner.records;
        let _moment = records.read_lock(group);
        keys.iter()
            .map(|key| match records.get(group, key) {
                Some(hit) => Ok(hit),
                None => {
                    let record = self.read_record(group, key)?;
                    records.put(group, key, record.as_ref());
                    Ok(record)
                }
            })
            .collect()
    }

    /// Like `get_record`, for apply's look at a key it is about to write: a miss does not
    /// fill the cache, since the write that follows will.
    pub fn get_record_for_write(&self, group: GroupId, key: &[u8]) -> Result<Option<Record>> {
        match self.inner.records.get(group, key) {
            Some(hit) => Ok(hit),
            None => self.read_record(group, key),
        }
    }

    fn read_record(&self, group: GroupId, key: &[u8]) -> Result<Option<Record>> {
        let stored = self
            .inner
            .data
            .get(keys::data_key(group, key_slot(key), key))?;
        stored
            .map(|bytes| {
                Record::decode(&bytes)
                    .ok_or_else(|| StorageError::corrupt("shard data", "short record"))
            })
            .transpose()
    }

    /// Applies `changes` and the given bookkeeping entries in one atomic batch. Not synced:
    /// the Raft log is the durable source, and the applied position moves in this batch.
    pub fn apply_changes(
        &self,
        group: GroupId,
        changes: &[DataChange],
        meta: &[(u8, Vec<u8>)],
    ) -> Result<()> {
        let inner = &self.inner;
        let mut batch = inner.db.batch();
        for change in changes {
            match change {
                DataChange::Put {
                    key,
                    old_expire,
                    record,
                } => {
                    let slot = key_slot(key);
                    batch.insert(
                        &inner.data,
                        keys::data_key(group, slot, key),
                        record.encode(),
                    );
                    if *old_expire != record.expire_at {
                        if let Some(old) = old_expire {
                            batch.remove(&inner.expiry, keys::expiry_key(group, *old, key));
                        }
                        if let Some(at) = record.expire_at {
                            batch.insert(&inner.expiry, keys::expiry_key(group, at, key), []);
                        }
                    }
                }
                DataChange::Delete { key, old_expire } => {
                    batch.remove(&inner.data, keys::data_key(group, key_slot(key), key));
                    if let Some(old) = old_expire {
                        batch.remove(&inner.expiry, keys::expiry_key(group, *old, key));
                    }
                }
                DataChange::DeleteAll => {
                    // Same batch, so a crash never leaves a half-flushed shard.
                    let prefix = keys::group_prefix(group);
                    for item in inner.data.prefix(prefix) {
                        batch.remove(&inner.data, item.key()?);
                    }
                    for item in inner.expiry.prefix(prefix) {
                        batch.remove(&inner.expiry, item.key()?);
                    }
                }
            }
        }
        for (tag, value) in meta {
            batch.insert(&inner.meta, keys::meta_key(group, *tag), value.clone());
        }
        // Commit and cache update happen together under the group's write lock (see cache).
        let _update = inner.records.write_lock(group);
        batch.commit()?;
        for change in changes {
            match change {
                DataChange::Put { key, record, .. } => inner.records.put(group, key, Some(record)),
                DataChange::Delete { key, .. } => inner.records.put(group, key, None),
                DataChange::DeleteAll => inner.records.clear(),
            }
        }
        Ok(())
    }

    /// Keys of `group` whose expiry is at or before `now`, oldest first, at most `limit`.
    pub fn due_expiries(&self, group: GroupId, now: u64, limit: usize) -> Result<Vec<Bytes>> {
        let start = keys::expiry_key(group, 0, b"");
        let end = keys::expiry_key(group, now.saturating_add(1), b"");
        let mut out = Vec::new();
        for item in self.inner.expiry.range(start..end).take(limit) {
            let k = item.key()?;
            let (_, key) = keys::split_expiry_key(&k)
                .ok_or_else(|| StorageError::corrupt("expiry index", "short key"))?;
            out.push(Bytes::copy_from_slice(key));
        }
        Ok(out)
    }

    /// Scans `group` in slot order from `(slot, after)` up to `end_slot` (exclusive),
    /// returning at most `limit` live keys and examining at most `budget` stored keys.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &self,
        group: GroupId,
        slot: u16,
        after: Option<&[u8]>,
        end_slot: u32,
        limit: usize,
        prefix: Option<&[u8]>,
        now: u64,
        budget: usize,
    ) -> Result<ScanPage> {
        let start = match after {
            // Strictly after `after`: the smallest key greater than it is `after + 0x00`.
            Some(after) => {
                let mut k = keys::data_key(group, slot, after);
                k.push(0);
                k
            }
            None => keys::data_slot_prefix(group, slot).to_vec(),
        };
        let end = if end_slot >= 1 << 16 {
            (group + 1).to_be_bytes().to_vec()
        } else {
            keys::data_slot_prefix(group, end_slot as u16).to_vec()
        };
        let mut page = ScanPage::default();
        let mut examined = 0usize;
        for item in self.inner.data.range(start..end) {
            let (k, v) = item.into_inner()?;
            let (slot, key) = keys::split_data_key(&k)
                .ok_or_else(|| StorageError::corrupt("shard data", "short key"))?;
            examined += 1;
            let key = Bytes::copy_from_slice(key);
            let resume = (slot, Some(key.clone()));
            if prefix.is_none_or(|p| key.starts_with(p)) {
                let (version, expire_at) = record::decode_header(&v)
                    .ok_or_else(|| StorageError::corrupt("shard data", "short record"))?;
                if expire_at.is_none_or(|at| at > now) {
                    let value = Bytes::copy_from_slice(&v[record::RECORD_HEADER..]);
                    page.entries.push((
                        key,
                        Record {
                            value,
                            version,
                            expire_at,
                        },
                    ));
                }
            }
            if page.entries.len() >= limit || examined >= budget {
                page.next = Some(resume);
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// The first live key at or after `slot` (wrapping around once), for RANDOMKEY.
    pub fn key_near_slot(&self, group: GroupId, slot: u16, now: u64) -> Result<Option<Bytes>> {
        let prefix = keys::group_prefix(group);
        let from = keys::data_slot_prefix(group, slot).to_vec();
        let end = (group + 1).to_be_bytes().to_vec();
        let tail = self.inner.data.range(from.clone()..end);
        let head = self.inner.data.range(prefix.to_vec()..from);
        for item in tail.chain(head).take(1024) {
            let (k, v) = item.into_inner()?;
            let (_, key) = keys::split_data_key(&k)
                .ok_or_else(|| StorageError::corrupt("shard data", "short key"))?;
            let (_, expire_at) = record::decode_header(&v)
                .ok_or_else(|| StorageError::corrupt("shard data", "short record"))?;
            if expire_at.is_none_or(|at| at > now) {
                return Ok(Some(Bytes::copy_from_slice(key)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;

    fn rec(v: &str, version: u64, expire_at: Option<u64>) -> Record {
        Record {
            value: Bytes::copy_from_slice(v.as_bytes()),
            version,
            expire_at,
        }
    }

    fn put(key: &str, old_expire: Option<u64>, record: Record) -> DataChange {
        DataChange::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            old_expire,
            record,
        }
    }

    #[test]
    fn apply_get_and_expiry_index() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        e.apply_changes(
            1,
            &[
                put("a", None, rec("1", 1, Some(100))),
                put("b", None, rec("2", 1, None)),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(e.get_record(1, b"a").unwrap(), Some(rec("1", 1, Some(100))));
        assert_eq!(e.get_record(2, b"a").unwrap(), None);
        assert_eq!(e.due_expiries(1, 99, 10).unwrap(), Vec::<Bytes>::new());
        assert_eq!(
            e.due_expiries(1, 100, 10).unwrap(),
            vec![Bytes::from_static(b"a")]
        );
        // Moving the expiry moves the index entry.
        e.apply_changes(1, &[put("a", Some(100), rec("1", 2, Some(500)))], &[])
            .unwrap();
        assert!(e.due_expiries(1, 499, 10).unwrap().is_empty());
        e.apply_changes(
            1,
            &[DataChange::Delete {
                key: Bytes::from_static(b"a"),
                old_expire: Some(500),
            }],
            &[],
        )
        .unwrap();
        assert!(e.due_expiries(1, u64::MAX - 1, 10).unwrap().is_empty());
        e.apply_changes(1, &[DataChange::DeleteAll], &[]).unwrap();
        assert_eq!(e.get_record(1, b"b").unwrap(), None);
    }

    #[test]
    fn record_cache_stays_coherent_with_applies() {
        for cache_bytes in [0, 1 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let options = EngineOptions {
                record_cache_bytes: cache_bytes,
                ..EngineOptions::default()
            };
            let e = Engine::open(dir.path(), &options).unwrap();
            // A miss caches "absent"; the put that follows must replace it.
            assert_eq!(e.get_record(1, b"k").unwrap(), None);
            e.apply_changes(1, &[put("k", None, rec("1", 1, None))], &[])
                .unwrap();
            assert_eq!(e.get_record(1, b"k").unwrap(), Some(rec("1", 1, None)));
            assert_eq!(
                e.get_record_for_write(1, b"k").unwrap(),
                Some(rec("1", 1, None))
            );
            // Same key in another group is another record.
            assert_eq!(e.get_record(2, b"k").unwrap(), None);
            e.apply_changes(1, &[put("k", None, rec("2", 2, None))], &[])
                .unwrap();
            assert_eq!(e.get_record(1, b"k").unwrap(), Some(rec("2", 2, None)));
            e.apply_changes(
                1,
                &[DataChange::Delete {
                    key: Bytes::from_static(b"k"),
                    old_expire: None,
                }],
                &[],
            )
            .unwrap();
            assert_eq!(e.get_record(1, b"k").unwrap(), None);
            e.apply_changes(1, &[put("j", None, rec("3", 3, None))], &[])
                .unwrap();
            assert!(e.get_record(1, b"j").unwrap().is_some());
            e.apply_changes(1, &[DataChange::DeleteAll], &[]).unwrap();
            assert_eq!(e.get_record(1, b"j").unwrap(), None, "cache {cache_bytes}");
        }
    }

    #[test]
    fn scan_pages_cover_every_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let changes: Vec<_> = (0..500)
            .map(|i| put(&format!("key{i}"), None, rec("v", 1, None)))
            .collect();
        e.apply_changes(1, &changes, &[]).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let (mut slot, mut after) = (0u16, None::<Bytes>);
        loop {
            let page = e
                .scan(1, slot, after.as_deref(), 16384, 7, None, 0, 1000)
                .unwrap();
            for (k, _) in page.entries {
                assert!(seen.insert(k), "key returned twice");
            }
            match page.next {
                Some((s, a)) => {
                    slot = s;
                    after = a;
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), 500);
        assert!(e.key_near_slot(1, 9000, 0).unwrap().is_some());
        assert!(e.key_near_slot(2, 9000, 0).unwrap().is_none());
    }
}
