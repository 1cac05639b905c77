//! A bounded cache of shard records in front of the LSM, for reads and for the lookups
//! apply makes before every write.
//!
//! A skiplist memtable lookup costs about a microsecond of pointer chasing per key; a hash
//! hit costs a fraction of that. Coherence: apply commits its batch and updates the cache
//! while holding the group's write lock; a read that misses reads the LSM and fills the
//! cache under the read lock, so it can never install a value older than one apply already
//! put there. A hit needs no lock: the cache changes only together with a commit, before
//! that write is acknowledged. Absent keys are cached too (as `None`), which is what a
//! SET of a new key looks up.

use std::hash::{Hash, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use shoal_core::Record;

use crate::keys::GroupId;

/// Lock stripes; groups map onto them by id.
const STRIPES: usize = 64;
/// Bookkeeping bytes charged per entry on top of key and value.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    group: GroupId,
    key: Bytes,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef {
            group: self.group,
            key: &self.key,
        }
        .hash(state)
    }
}

/// Borrowed form used for lookups, so a hit allocates nothing.
struct KeyRef<'a> {
    group: GroupId,
    key: &'a [u8],
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.group);
        state.write(self.key);
    }
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, other: &CacheKey) -> bool {
        self.group == other.group && self.key == &other.key[..]
    }
}

#[derive(Clone)]
struct RecordWeight;

impl Weighter<CacheKey, Option<Record>> for RecordWeight {
    fn weight(&self, key: &CacheKey, value: &Option<Record>) -> u64 {
        ENTRY_OVERHEAD + key.key.len() as u64 + value.as_ref().map_or(0, |r| r.value.len() as u64)
    }
}

pub(crate) struct RecordCache {
    cache: Option<Cache<CacheKey, Option<Record>, RecordWeight>>,
    stripes: Vec<RwLock<()>>,
}

impl RecordCache {
    /// A cache of at most `capacity_bytes` (0 disables it).
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let cache = (capacity_bytes > 0).then(|| {
            // Sized for ~1 KiB records: a table sized for tiny ones is mostly empty, and
            // a sparse table costs a cache miss per lookup.
            let estimated_items = (capacity_bytes / 1024).max(1024) as usize;
            Cache::with_weighter(estimated_items, capacity_bytes, RecordWeight)
        });
        Self {
            cache,
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }

    fn stripe(&self, group: GroupId) -> &RwLock<()> {
        &self.stripes[group as usize % STRIPES]
    }

    /// The cached state of a key: `Some(None)` means known absent.
    pub(crate) fn get(&self, group: GroupId, key: &[u8]) -> Option<Option<Record>> {
        self.cache.as_ref()?.get(&KeyRef { group, key })
    }

    /// Held while reading the LSM on a miss and filling the cache.
    pub(crate) fn read_lock(&self, group: GroupId) -> RwLockReadGuard<'_, ()> {
        self.stripe(group).read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while committing a batch that changes `group` and updating the cache.
    pub(crate) fn write_lock(&self, group: GroupId) -> RwLockWriteGuard<'_, ()> {
        self.stripe(group)
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn put(&self, group: GroupId, key: Bytes, value: Option<Record>) {
        if let Some(cache) = &self.cache {
            cache.insert(CacheKey { group, key }, value);
        }
    }

    /// Forgets everything (after a flush or a snapshot install replaced a whole group).
    pub(crate) fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }
}
