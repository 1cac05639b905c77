//! Key layouts inside the shared fjall keyspaces. Big-endian integers so that byte order
//! is numeric order and one group's keys form one contiguous range.

/// A Raft group id (0 = metadata group, 1.. = data shards).
pub type GroupId = u32;

pub const GROUP_PREFIX: usize = 4;

pub fn group_prefix(group: GroupId) -> [u8; 4] {
    group.to_be_bytes()
}

/// Log keyspace: `group | index`.
pub fn log_key(group: GroupId, index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

pub fn log_index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(4..12)?.try_into().ok()?))
}

/// Meta keyspace: `group | tag`.
pub fn meta_key(group: GroupId, tag: u8) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4] = tag;
    k
}

pub const TAG_VOTE: u8 = b'v';
pub const TAG_PURGED: u8 = b'p';
pub const TAG_APPLIED: u8 = b'a';
pub const TAG_SNAPSHOT: u8 = b's';
/// Marks a group being deleted (see `drop_group`): its state is partial, never open it.
pub const TAG_TOMBSTONE: u8 = b't';

/// Data keyspace: `group | slot | user key`, so a shard's keys sort by slot, which is
/// what SCAN cursors and future slot migration walk.
pub fn data_key(group: GroupId, slot: u16, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + key.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(&slot.to_be_bytes());
    k.extend_from_slice(key);
    k
}

pub fn data_slot_prefix(group: GroupId, slot: u16) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..].copy_from_slice(&slot.to_be_bytes());
    k
}

/// Splits a data key into (slot, user key).
pub fn split_data_key(key: &[u8]) -> Option<(u16, &[u8])> {
    let slot = u16::from_be_bytes(key.get(4..6)?.try_into().ok()?);
    Some((slot, &key[6..]))
}

/// Expiry index keyspace: `group | expire_at | user key`, so due keys are a prefix range.
pub fn expiry_key(group: GroupId, at: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + key.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(key);
    k
}

pub fn split_expiry_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let at = u64::from_be_bytes(key.get(4..12)?.try_into().ok()?);
    Some((at, &key[12..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_numerically_within_group() {
        assert!(log_key(1, 255) < log_key(1, 256));
        assert!(log_key(1, u64::MAX) < log_key(2, 0));
        assert_eq!(log_index_of(&log_key(7, 12345)), Some(12345));
    }

    #[test]
    fn data_and_expiry_keys_split() {
        let k = data_key(3, 12182, b"foo");
        assert_eq!(split_data_key(&k), Some((12182, &b"foo"[..])));
        let e = expiry_key(3, 99, b"bar");
        assert_eq!(split_expiry_key(&e), Some((99, &b"bar"[..])));
    }
}
