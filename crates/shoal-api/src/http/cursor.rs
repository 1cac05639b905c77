//! The listing cursor: a `ScanCursor` rendered as an opaque, URL-safe string.
//!
//! Format: the slot as exactly 4 lowercase hex digits, then the hex of the key to resume
//! after (nothing when the scan resumes at the slot's first key). Clients must treat it as
//! opaque; it is documented here so a decode error can say precisely what is wrong.

use std::fmt;

use bytes::Bytes;
use shoal_core::SLOT_COUNT;
use shoal_core::command::ScanCursor;

use super::encoding::{HexError, hex_decode, hex_encode};

/// Why a client-supplied cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorError {
    /// Shorter than the 4 hex digits of the slot.
    TooShort,
    /// The slot digits are not hex.
    BadSlot,
    /// The slot is not below `SLOT_COUNT`.
    SlotOutOfRange(u16),
    /// The key part is not valid hex.
    BadKey(HexError),
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed cursor (pass back `next_cursor` exactly as received): ")?;
        match self {
            CursorError::TooShort => f.write_str("too short"),
            CursorError::BadSlot => f.write_str("slot part is not hex"),
            CursorError::SlotOutOfRange(slot) => {
                write!(f, "slot {slot} is out of range 0..{SLOT_COUNT}")
            }
            CursorError::BadKey(err) => write!(f, "key part: {err}"),
        }
    }
}

/// Renders a cursor for the `next_cursor` field.
pub fn encode_cursor(cursor: &ScanCursor) -> String {
    let mut out = format!("{:04x}", cursor.slot);
    if let Some(after) = &cursor.after {
        out.push_str(&hex_encode(after));
    }
    out
}

/// Parses a cursor a client passed back.
pub fn decode_cursor(text: &str) -> Result<ScanCursor, CursorError> {
    if text.len() < 4 {
        return Err(CursorError::TooShort);
    }
    // Checked on bytes first: this also rules out a multi-byte character at the boundary
    // and the leading `+` that `from_str_radix` would accept.
    if !text.as_bytes()[..4].iter().all(u8::is_ascii_hexdigit) {
        return Err(CursorError::BadSlot);
    }
    let (slot_hex, key_hex) = text.split_at(4);
    let slot = u16::from_str_radix(slot_hex, 16).map_err(|_| CursorError::BadSlot)?;
    if slot >= SLOT_COUNT {
        return Err(CursorError::SlotOutOfRange(slot));
    }
    let after = hex_decode(key_hex).map_err(CursorError::BadKey)?;
    // Keys are never empty, so "no key part" unambiguously means "start of the slot".
    let after = (!after.is_empty()).then(|| Bytes::from(after));
    Ok(ScanCursor { slot, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(slot: u16, after: Option<&[u8]>) -> ScanCursor {
        ScanCursor {
            slot,
            after: after.map(Bytes::copy_from_slice),
        }
    }

    #[test]
    fn round_trips() {
        for c in [
            cursor(0, None),
            cursor(16383, None),
            cursor(12182, Some(b"foo")),
            cursor(1, Some(&[0, 0xff, b'/'])),
        ] {
            let text = encode_cursor(&c);
            assert!(
                text.bytes().all(|b| b.is_ascii_hexdigit()),
                "{text} must be URL-safe"
            );
            assert_eq!(decode_cursor(&text), Ok(c));
        }
    }

    #[test]
    fn documented_format() {
        assert_eq!(encode_cursor(&cursor(0x2f96, Some(b"foo"))), "2f96666f6f");
        assert_eq!(
            decode_cursor("2F96666F6F"),
            Ok(cursor(0x2f96, Some(b"foo")))
        );
        assert_eq!(encode_cursor(&cursor(5, None)), "0005");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode_cursor(""), Err(CursorError::TooShort));
        assert_eq!(decode_cursor("abc"), Err(CursorError::TooShort));
        assert_eq!(decode_cursor("zzzz"), Err(CursorError::BadSlot));
        assert_eq!(decode_cursor("+fff"), Err(CursorError::BadSlot));
        assert_eq!(
            decode_cursor("4000"),
            Err(CursorError::SlotOutOfRange(0x4000))
        );
        assert_eq!(
            decode_cursor("ffff"),
            Err(CursorError::SlotOutOfRange(0xffff))
        );
        assert_eq!(
            decode_cursor("0000abc"),
            Err(CursorError::BadKey(HexError::OddLength))
        );
        assert_eq!(
            decode_cursor("0000zz"),
            Err(CursorError::BadKey(HexError::NotHex { at: 0 }))
        );
        assert_eq!(decode_cursor("000é"), Err(CursorError::BadSlot));
        assert_eq!(
            decode_cursor("0000é"),
            Err(CursorError::BadKey(HexError::NotHex { at: 0 }))
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(text in ".{0,40}") {
            let _ = decode_cursor(&text);
        }

        #[test]
        fn any_cursor_round_trips(slot in 0..SLOT_COUNT,
                                  after in proptest::option::of(
                                      proptest::collection::vec(proptest::num::u8::ANY, 1..64))) {
            let c = ScanCursor { slot, after: after.map(Bytes::from) };
            proptest::prop_assert_eq!(decode_cursor(&encode_cursor(&c)), Ok(c));
        }
    }
}
