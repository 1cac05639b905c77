//! Hash slots exactly as Redis Cluster computes them, so cluster clients agree with us.
//!
//! `slot = crc16_xmodem(hashtag(key)) % 16384`. The hash tag is the part between the first
//! `{` and the next `}` when that part is non-empty; otherwise the whole key is hashed.

/// Number of hash slots. Fixed forever: changing it would move every key.
pub const SLOT_COUNT: u16 = 16384;

/// A hash slot number in `0..SLOT_COUNT`.
pub type Slot = u16;

const CRC16_TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    // CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC16-XMODEM of `data`.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[(((crc >> 8) as u8) ^ b) as usize]
    })
}

/// The part of `key` that is hashed: its `{hash tag}` if it has a non-empty one.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key`.
pub fn key_slot(key: &[u8]) -> Slot {
    crc16_xmodem(hash_tag(key)) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn matches_redis_cluster_keyslot() {
        // Values printed by `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        // Empty tag: the whole key is hashed.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        // Only the first `{` counts, up to the next `}`.
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        // No closing brace: the whole key.
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
    }

    proptest::proptest! {
        #[test]
        fn slot_in_range(key in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            proptest::prop_assert!(key_slot(&key) < SLOT_COUNT);
        }
    }
}
