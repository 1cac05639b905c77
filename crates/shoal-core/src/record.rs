//! The stored form of one key: its value, version and optional expiry.
//!
//! Encoding: `version u64 LE | expire_at u64 LE (0 = never) | value bytes`. Fixed-width header
//! so a read decodes without allocation beyond the value itself.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// Size of the fixed header in front of the value.
pub const RECORD_HEADER: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: Bytes,
    /// Raft log index of the write that last changed this key.
    pub version: u64,
    /// Absolute expiry; `None` means the key never expires.
    pub expire_at: Option<UnixMillis>,
}

impl Record {
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expire_at.is_some_and(|at| at <= now)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_parts(&self.value, self.version, self.expire_at)
    }

    /// Decodes a stored record; `None` if the bytes are too short to be one.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let (version, expire_at) = decode_header(bytes)?;
        Some(Record {
            value: Bytes::copy_from_slice(&bytes[RECORD_HEADER..]),
            version,
            expire_at,
        })
    }
}

pub fn encode_parts(value: &[u8], version: u64, expire_at: Option<UnixMillis>) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&expire_at.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Reads `(version, expire_at)` from a stored record without touching the value.
pub fn decode_header(bytes: &[u8]) -> Option<(u64, Option<UnixMillis>)> {
    if bytes.len() < RECORD_HEADER {
        return None;
    }
    let version = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let expire = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    Some((version, (expire != 0).then_some(expire)))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn round_trips(value in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
                       version in 0u64.., expire in proptest::option::of(1u64..)) {
            let rec = Record { value: Bytes::from(value), version, expire_at: expire };
            proptest::prop_assert_eq!(Record::decode(&rec.encode()), Some(rec));
        }
    }

    #[test]
    fn short_input_is_not_a_record() {
        assert_eq!(Record::decode(&[0; 15]), None);
    }
}
