//! The shard layout: which contiguous range of slots each shard owns.
//!
//! A shard is one Raft group. Group 0 is the metadata group; data shards are groups
//! `1..=n`. Lookups go through a dense slot table so routing a key costs one index.

use serde::{Deserialize, Serialize};

use crate::slot::{SLOT_COUNT, Slot};

/// A Raft group id. `0` is the metadata group; data shards start at 1.
pub type ShardId = u32;

/// The metadata group's id.
pub const META_GROUP: ShardId = 0;

/// Most shards a cluster may have: each shard costs Raft tasks and ticks on every replica.
pub const MAX_SHARDS: u32 = 1024;

/// A half-open range of slots `[start, end)` owned by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRange {
    pub start: Slot,
    /// Exclusive; may equal `SLOT_COUNT`, so stored as u32.
    pub end: u32,
}

impl SlotRange {
    pub fn contains(&self, slot: Slot) -> bool {
        slot >= self.start && (slot as u32) < self.end
    }
    /// Inclusive last slot, as Redis prints ranges.
    pub fn last(&self) -> Slot {
        (self.end - 1) as Slot
    }
}

/// Slot ranges of every data shard, and the reverse table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    ranges: Vec<(ShardId, SlotRange)>,
    slot_to_shard: Vec<ShardId>,
}

impl ShardLayout {
    /// `shards` shards of (nearly) equal contiguous slot ranges, ids `1..=shards`.
    pub fn even(shards: u32) -> Result<Self, String> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(format!(
                "shard count {shards} is out of range: choose 1..={MAX_SHARDS}"
            ));
        }
        let total = SLOT_COUNT as u32;
        let ranges = (0..shards)
            .map(|i| {
                let start = i * total / shards;
                let end = (i + 1) * total / shards;
                (
                    i + 1,
                    SlotRange {
                        start: start as Slot,
                        end,
                    },
                )
            })
            .collect();
        Ok(Self::from_ranges(ranges))
    }

    /// Builds the layout from explicit ranges, which must tile `0..SLOT_COUNT` exactly.
    pub fn from_ranges(mut ranges: Vec<(ShardId, SlotRange)>) -> Self {
        ranges.sort_by_key(|(_, r)| r.start);
        let mut slot_to_shard = vec![0; SLOT_COUNT as usize];
        let mut next = 0u32;
        for (id, range) in &ranges {
            assert_eq!(range.start as u32, next, "slot ranges must be contiguous");
            assert!(range.end > next, "slot range must not be empty");
            for slot in range.start as u32..range.end {
                slot_to_shard[slot as usize] = *id;
            }
            next = range.end;
        }
        assert_eq!(next, SLOT_COUNT as u32, "slot ranges must cover every slot");
        Self {
            ranges,
            slot_to_shard,
        }
    }

    pub fn shard_of_slot(&self, slot: Slot) -> ShardId {
        self.slot_to_shard[slot as usize]
    }

    pub fn shard_of_key(&self, key: &[u8]) -> ShardId {
        self.shard_of_slot(crate::slot::key_slot(key))
    }

    /// Shards in slot order.
    pub fn shards(&self) -> &[(ShardId, SlotRange)] {
        &self.ranges
    }

    pub fn range_of(&self, shard: ShardId) -> Option<SlotRange> {
        self.ranges
            .iter()
            .find(|(id, _)| *id == shard)
            .map(|(_, r)| *r)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_shards_of_1024() {
        let layout = ShardLayout::even(16).unwrap();
        assert_eq!(layout.len(), 16);
        for (i, (id, range)) in layout.shards().iter().enumerate() {
            assert_eq!(*id, i as u32 + 1);
            assert_eq!(range.end - range.start as u32, 1024);
        }
        assert_eq!(layout.shard_of_slot(0), 1);
        assert_eq!(layout.shard_of_slot(1023), 1);
        assert_eq!(layout.shard_of_slot(1024), 2);
        assert_eq!(layout.shard_of_slot(16383), 16);
    }

    #[test]
    fn uneven_counts_tile_every_slot() {
        for n in [1, 3, 7, 100, 1024] {
            let layout = ShardLayout::even(n).unwrap();
            for slot in 0..SLOT_COUNT {
                let id = layout.shard_of_slot(slot);
                assert!(layout.range_of(id).unwrap().contains(slot));
            }
        }
    }

    #[test]
    fn rejects_bad_counts() {
        assert!(ShardLayout::even(0).is_err());
        assert!(ShardLayout::even(MAX_SHARDS + 1).is_err());
    }
}
