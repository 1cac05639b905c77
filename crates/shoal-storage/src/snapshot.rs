//! Shard snapshots as files: a consistent copy of one group's keys, streamed to and from
//! disk so memory stays bounded whatever the shard's size.
//!
//! Format: `SNAPSHOT_MAGIC`, then frames `u32 key_len | key | u32 record_len | record`,
//! then `u32::MAX | u64 count | u64 fnv1a(frames)`. Import checks count and checksum, so a
//! torn or damaged file is refused with a clear error instead of half-installed silently.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use fjall::Readable;

use crate::engine::Engine;
use crate::keys::{self, GroupId};
use crate::{Result, StorageError};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOALSN1";
const END_MARK: u32 = u32::MAX;
/// Keys per import batch: bounds the memory one batch holds.
const IMPORT_BATCH: usize = 4096;
/// Marks a group whose snapshot install did not finish; its data cannot be trusted.
pub const TAG_INSTALLING: u8 = b'i';

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

impl Engine {
    /// Writes a consistent copy of `group`'s keys to `path`, and returns the group's
    /// bookkeeping entry `tag` read from the same point in time, plus the key count.
    pub fn export_group(
        &self,
        group: GroupId,
        path: &Path,
        tag: u8,
    ) -> Result<(Option<Vec<u8>>, u64)> {
        let view = self.inner.db.snapshot();
        let meta = view
            .get(&self.inner.meta, keys::meta_key(group, tag))?
            .map(|v| v.to_vec());
        let tmp = path.with_extension("tmp");
        let mut out = BufWriter::new(File::create(&tmp)?);
        out.write_all(SNAPSHOT_MAGIC)?;
        let mut fnv = Fnv::new();
        let mut count = 0u64;
        for item in view.prefix(&self.inner.data, keys::group_prefix(group)) {
            let (k, v) = item.into_inner()?;
            let key = &k[keys::GROUP_PREFIX..];
            for part in [key, &v[..]] {
                let len = (part.len() as u32).to_le_bytes();
                out.write_all(&len)?;
                out.write_all(part)?;
                fnv.update(&len);
                fnv.update(part);
            }
            count += 1;
        }
        out.write_all(&END_MARK.to_le_bytes())?;
        out.write_all(&count.to_le_bytes())?;
        out.write_all(&fnv.0.to_le_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok((meta, count))
    }

    /// Replaces `group`'s keys with the snapshot at `path`, then writes `meta` entries.
    /// Returns the number of keys installed.
    ///
    /// The file is checked in full first (count and checksum), then its keys, which it
    /// holds in key order, are bulk-ingested: written straight into new tables, not through
    /// the journal and memtables. Measured while nodes joined a loaded cluster, writing them
    /// as batches cost the journal, the memtable flushes and their compaction all at once,
    /// and clients lost most of their throughput while replicas moved.
    pub fn import_group(&self, group: GroupId, path: &Path, meta: &[(u8, Vec<u8>)]) -> Result<u64> {
        let what = || format!("snapshot {}", path.display());
        let expected = check_file(path)?;
        // From here until the end, the group's data is incomplete: say so durably, so a
        // crash mid-install is detected at the next start instead of serving half a shard.
        self.put_meta(group, TAG_INSTALLING, vec![1])?;
        self.sync_now()?;
        self.apply_changes(group, &[crate::DataChange::DeleteAll], &[])?;
        let inner = &self.inner;
        let mut input = BufReader::new(File::open(path)?);
        input.read_exact(&mut [0u8; 8])?;
        let mut ingestion = inner.data.start_ingestion()?;
        let mut expiries = inner.db.batch();
        let mut count = 0u64;
        while let Some((key, record)) = read_frame(&mut input, &what)? {
            let (_, expire_at) = shoal_core::record::decode_header(&record)
                .ok_or_else(|| StorageError::corrupt(what(), "short record"))?;
            if let Some(at) = expire_at {
                let (_, user_key) = keys::split_data_key(&[&[0u8; 4][..], &key].concat())
                    .map(|(s, k)| (s, k.to_vec()))
                    .ok_or_else(|| StorageError::corrupt(what(), "short key"))?;
                expiries.insert(&inner.expiry, keys::expiry_key(group, at, &user_key), []);
            }
            let mut full_key = keys::group_prefix(group).to_vec();
            full_key.extend_from_slice(&key);
            ingestion.write(full_key, record)?;
            count += 1;
            if (count as usize).is_multiple_of(IMPORT_BATCH) {
                std::mem::replace(&mut expiries, inner.db.batch()).commit()?;
            }
        }
        if count != expected {
            return Err(StorageError::corrupt(
                what(),
                "the file changed while installing",
            ));
        }
        ingestion.finish()?;
        for (tag, value) in meta {
            expiries.insert(&inner.meta, keys::meta_key(group, *tag), value.clone());
        }
        expiries.remove(&inner.meta, keys::meta_key(group, TAG_INSTALLING));
        let _update = inner.records.write_lock(group);
        expiries.commit()?;
        // Reads during the install may have cached keys of the half-installed group.
        inner.records.clear();
        self.sync_now()?;
        Ok(count)
    }

    /// Whether a snapshot install into `group` was interrupted.
    pub fn install_interrupted(&self, group: GroupId) -> Result<bool> {
        Ok(self.get_meta(group, TAG_INSTALLING)?.is_some())
    }
}

/// Reads the next `key | record` frame; `None` at the end mark.
fn read_frame(
    input: &mut impl Read,
    what: &dyn Fn() -> String,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let key_len = u32::from_le_bytes(len);
    if key_len == END_MARK {
        return Ok(None);
    }
    let key = read_exact_vec(input, key_len as usize, what)?;
    input.read_exact(&mut len)?;
    let record = read_exact_vec(input, u32::from_le_bytes(len) as usize, what)?;
    Ok(Some((key, record)))
}

/// Checks a snapshot file end to end (magic, frames in ascending key order, count and
/// checksum) without installing anything; returns its key count.
fn check_file(path: &Path) -> Result<u64> {
    let what = || format!("snapshot {}", path.display());
    let mut input = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(StorageError::corrupt(what(), "bad magic"));
    }
    let mut fnv = Fnv::new();
    let mut count = 0u64;
    let mut last: Option<Vec<u8>> = None;
    while let Some((key, record)) = read_frame(&mut input, &what)? {
        fnv.update(&(key.len() as u32).to_le_bytes());
        fnv.update(&key);
        fnv.update(&(record.len() as u32).to_le_bytes());
        fnv.update(&record);
        // Bulk ingestion needs ascending keys (and panics otherwise).
        if last.as_ref().is_some_and(|l| *l >= key) {
            return Err(StorageError::corrupt(what(), "keys out of order"));
        }
        last = Some(key);
        count += 1;
    }
    let mut tail = [0u8; 16];
    input.read_exact(&mut tail)?;
    let expected_count = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
    let expected_sum = u64::from_le_bytes(tail[8..].try_into().expect("8 bytes"));
    if expected_count != count || expected_sum != fnv.0 {
        return Err(StorageError::corrupt(what(), "count or checksum mismatch"));
    }
    Ok(count)
}

fn read_exact_vec(input: &mut impl Read, len: usize, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    // A frame can never exceed key + value limits by much; refuse absurd lengths before
    // allocating them.
    if len > 64 * 1024 * 1024 {
        return Err(StorageError::corrupt(
            what(),
            format!("frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_core::Record;

    use super::*;
    use crate::{DataChange, EngineOptions};

    #[test]
    fn export_import_round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let changes: Vec<_> = (0..100)
            .map(|i| DataChange::Put {
                key: Bytes::from(format!("k{i}")),
                old_expire: None,
                record: Record {
                    value: Bytes::from(format!("v{i}")),
                    version: i,
                    expire_at: (i % 10 == 0).then_some(1_000 + i),
                },
            })
            .collect();
        e.apply_changes(3, &changes, &[(keys::TAG_APPLIED, b"applied".to_vec())])
            .unwrap();
        let path = dir.path().join("snap");
        let (meta, count) = e.export_group(3, &path, keys::TAG_APPLIED).unwrap();
        assert_eq!(meta.as_deref(), Some(&b"applied"[..]));
        assert_eq!(count, 100);
        assert_eq!(e.import_group(5, &path, &[]).unwrap(), 100);
        assert_eq!(
            e.get_record(5, b"k7").unwrap().unwrap().value,
            Bytes::from("v7")
        );
        assert_eq!(e.due_expiries(5, 2_000, 100).unwrap().len(), 10);
        assert!(!e.install_interrupted(5).unwrap());

        // Flip one byte in the middle: the import must refuse it, before touching the
        // group (the file is checked in full before anything is installed).
        e.apply_changes(6, &changes, &[]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(e.import_group(6, &path, &[]).is_err());
        assert!(!e.install_interrupted(6).unwrap());
        assert_eq!(
            e.get_record(6, b"k7").unwrap().unwrap().value,
            Bytes::from("v7"),
            "the group keeps what it had"
        );
    }
}
