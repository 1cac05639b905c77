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
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use shoal_core::Record;

use crate::keys::GroupId;

/// Lock stripes; groups map onto them by id.
const STRIPES: usize = 64;
/// Bookkeeping bytes charged per entry on top of key and value.
const ENTRY_OVERHEAD: u64 = 64;
/// Values up to this size are copied into the key's allocation. A hit then touches one
/// block of memory for key and value (GET -P 16 spent a third of its time on cache misses
/// walking key, refcount and value in three places); larger values get an allocation of
/// their own (see `pack`), since copying them twice on a hit would cost more than the
/// misses save.
pub(crate) const MAX_PACKED_VALUE: usize = 1024;

/// A cached key: `packed[..key_len]` is the key; a small value follows it in the same
/// allocation (see `MAX_PACKED_VALUE`).
#[derive(Clone)]
struct CacheKey {
    group: GroupId,
    key_len: u32,
    packed: Arc<[u8]>,
}

impl CacheKey {
    fn key(&self) -> &[u8] {
        &self.packed[..self.key_len as usize]
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group && self.key() == other.key()
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef {
            group: self.group,
            key: self.key(),
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
        self.group == other.group && self.key == other.key()
    }
}

/// A cached record; `None` in the cache means known absent.
#[derive(Clone)]
struct CachedRecord {
    version: u64,
    expire_at: Option<u64>,
    value: CachedValue,
}

#[derive(Clone)]
enum CachedValue {
    /// The value is `packed[start..]`, the same allocation as the key.
    Packed {
        packed: Arc<[u8]>,
        start: u32,
    },
    Shared(Bytes),
}

impl CachedRecord {
    fn to_record(&self) -> Record {
        let value = match &self.value {
            CachedValue::Packed { packed, start } => {
                Bytes::copy_from_slice(&packed[*start as usize..])
            }
            CachedValue::Shared(value) => value.clone(),
        };
        Record {
            value,
            version: self.version,
            expire_at: self.expire_at,
        }
    }

    fn value_len(&self) -> usize {
        match &self.value {
            CachedValue::Packed { packed, start } => packed.len() - *start as usize,
            CachedValue::Shared(value) => value.len(),
        }
    }
}

#[derive(Clone)]
struct RecordWeight;

impl Weighter<CacheKey, Option<CachedRecord>> for RecordWeight {
    fn weight(&self, key: &CacheKey, value: &Option<CachedRecord>) -> u64 {
        ENTRY_OVERHEAD + key.key_len as u64 + value.as_ref().map_or(0, |r| r.value_len() as u64)
    }
}

/// Builds the cache's entry for `key`: one allocation for the key and a small value.
/// `None` for a key too long to describe (never, with any sane `--max-key-bytes`): such a
/// key is simply not cached.
fn pack(
    group: GroupId,
    key: &[u8],
    record: Option<&Record>,
) -> Option<(CacheKey, Option<CachedRecord>)> {
    let key_len = u32::try_from(key.len()).ok()?;
    let inline = record.filter(|r| r.value.len() <= MAX_PACKED_VALUE);
    let packed: Arc<[u8]> = match inline {
        Some(r) => {
            let mut buf = Vec::with_capacity(key.len() + r.value.len());
            buf.extend_from_slice(key);
            buf.extend_from_slice(&r.value);
            Arc::from(buf)
        }
        None => Arc::from(key),
    };
    let cached = record.map(|r| CachedRecord {
        version: r.version,
        expire_at: r.expire_at,
        value: if inline.is_some() {
            CachedValue::Packed {
                packed: packed.clone(),
                start: key_len,
            }
        } else {
            // Copied: a value straight from a request is a view into the connection's
            // read buffer, which the cache would otherwise keep whole while charging
            // only the value's length.
            CachedValue::Shared(Bytes::copy_from_slice(&r.value))
        },
    });
    let cache_key = CacheKey {
        group,
        key_len,
        packed,
    };
    Some((cache_key, cached))
}

pub(crate) struct RecordCache {
    cache: Option<Cache<CacheKey, Option<CachedRecord>, RecordWeight>>,
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
        let hit = self.cache.as_ref()?.get(&KeyRef { group, key })?;
        Some(hit.map(|r| r.to_record()))
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

    /// Caches `key`'s state (`None`: absent). Copies the key, so `key` may be a view into
    /// a larger buffer without the cache pinning that buffer.
    pub(crate) fn put(&self, group: GroupId, key: &[u8], value: Option<&Record>) {
        if let Some(cache) = &self.cache
            && let Some((key, value)) = pack(group, key, value)
        {
            cache.insert(key, value);
        }
    }

    /// Forgets `key`'s state (its group is being deleted). Call under the group's write
    /// lock, together with the commit that deletes it, like `put`.
    pub(crate) fn remove(&self, group: GroupId, key: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.remove(&KeyRef { group, key });
        }
    }

    /// Bytes the cached entries are charged (see `RecordWeight`).
    pub(crate) fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| cache.weight())
    }

    /// Forgets everything (after a flush or a snapshot install replaced a whole group).
    pub(crate) fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8], version: u64) -> Record {
        Record {
            value: Bytes::copy_from_slice(value),
            version,
            expire_at: Some(99),
        }
    }

    #[test]
    fn small_and_large_values_come_back_whole() {
        let cache = RecordCache::new(64 << 20);
        let small = record(b"v", 3);
        let large = record(&vec![7u8; MAX_PACKED_VALUE + 1], 4);
        let at_limit = record(&vec![9u8; MAX_PACKED_VALUE], 5);
        cache.put(1, b"small", Some(&small));
        cache.put(1, b"large", Some(&large));
        cache.put(1, b"limit", Some(&at_limit));
        cache.put(1, b"gone", None);
        assert_eq!(cache.get(1, b"small"), Some(Some(small)));
        assert_eq!(cache.get(1, b"large"), Some(Some(large)));
        assert_eq!(cache.get(1, b"limit"), Some(Some(at_limit)));
        assert_eq!(cache.get(1, b"gone"), Some(None));
        assert_eq!(cache.get(1, b"never"), None);
    }

    #[test]
    fn groups_do_not_share_keys_and_updates_replace() {
        let cache = RecordCache::new(64 << 20);
        cache.put(1, b"k", Some(&record(b"one", 1)));
        cache.put(2, b"k", Some(&record(b"two", 2)));
        assert_eq!(cache.get(1, b"k").unwrap().unwrap().value, "one");
        assert_eq!(cache.get(2, b"k").unwrap().unwrap().value, "two");
        cache.put(1, b"k", None);
        assert_eq!(cache.get(1, b"k"), Some(None));
        assert_eq!(cache.get(2, b"k").unwrap().unwrap().version, 2);
    }

    #[test]
    fn a_cached_key_does_not_keep_the_callers_buffer_alive() {
        let cache = RecordCache::new(64 << 20);
        let buffer = Bytes::from(vec![b'k'; 4096]);
        let key = buffer.slice(0..8);
        cache.put(1, &key, Some(&record(b"v", 1)));
        drop(key);
        // The only owner left is `buffer` itself: the cache copied the key.
        assert!(buffer.is_unique());
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let cache = RecordCache::new(0);
        cache.put(1, b"k", Some(&record(b"v", 1)));
        assert_eq!(cache.get(1, b"k"), None);
    }
}
