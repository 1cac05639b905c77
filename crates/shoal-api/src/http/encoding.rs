//! Byte-level text codecs the HTTP front end needs: percent-decoding of paths and query
//! strings (keys are bytes, so we decode to bytes rather than to `String`), hex for
//! cursors, and base64 for rendering keys and values that are not UTF-8.
//!
//! Small and dependency-free on purpose; the CLI reuses `bytes_field` and
//! `percent_encode_key` so both sides agree on the encodings.

use std::fmt;

/// A `%` escape that is not followed by two hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEscape {
    /// Byte offset of the offending `%` in the input.
    pub at: usize,
}

impl fmt::Display for BadEscape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed percent-escape at byte {}: `%` must be followed by two hex digits",
            self.at
        )
    }
}

/// Decodes `%XX` escapes into bytes. `+` stays `+` (this is the rule for URL paths).
pub fn percent_decode(input: &str) -> Result<Vec<u8>, BadEscape> {
    decode(input, false)
}

/// Decodes an `application/x-www-form-urlencoded` component: `%XX` escapes, and `+` is a
/// space (the rule for query strings, which browsers and HTML forms produce).
pub fn form_decode(input: &str) -> Result<Vec<u8>, BadEscape> {
    decode(input, true)
}

fn decode(input: &str, plus_is_space: bool) -> Result<Vec<u8>, BadEscape> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(BadEscape { at: i }),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Percent-encodes every byte of a key except RFC 3986 unreserved characters, so any key
/// (including one containing `/`, `?`, `#`, `%` or non-UTF-8 bytes) fits in one path segment.
pub fn percent_encode_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[(b >> 4) as usize] as char);
            out.push(HEX_UPPER[(b & 0xf) as usize] as char);
        }
    }
    out
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX_LOWER[(b >> 4) as usize] as char);
        out.push(HEX_LOWER[(b & 0xf) as usize] as char);
    }
    out
}

/// Why a hex string did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HexError {
    OddLength,
    NotHex { at: usize },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::OddLength => f.write_str("odd number of hex digits"),
            HexError::NotHex { at } => write!(f, "character {at} is not a hex digit"),
        }
    }
}

/// Decodes hex (either case).
pub fn hex_decode(input: &str) -> Result<Vec<u8>, HexError> {
    let bytes = input.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(HexError::OddLength);
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(pair, chunk)| {
            let hi = hex_value(chunk[0]).ok_or(HexError::NotHex { at: pair * 2 })?;
            let lo = hex_value(chunk[1]).ok_or(HexError::NotHex { at: pair * 2 + 1 })?;
            Ok(hi << 4 | lo)
        })
        .collect()
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `{"<name>": text}` for UTF-8 bytes, else `{"<name>_base64": ...}`: keys and values are
/// bytes, and this keeps them lossless in JSON. Shared by the HTTP API and the CLI.
pub fn bytes_field(name: &str, bytes: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    match std::str::from_utf8(bytes) {
        Ok(text) => map.insert(name.into(), text.into()),
        Err(_) => map.insert(format!("{name}_base64"), base64_encode(bytes).into()),
    };
    map
}

/// Standard base64 (RFC 4648 section 4) with `=` padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        // A chunk of k bytes yields k + 1 significant characters; the rest is padding.
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(BASE64_ALPHABET[(s & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64_encode(input.as_bytes()), expected, "input {input:?}");
        }
        assert_eq!(base64_encode(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)).unwrap(), bytes);
        assert_eq!(hex_decode("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(hex_decode("abc"), Err(HexError::OddLength));
        assert_eq!(hex_decode("zz"), Err(HexError::NotHex { at: 0 }));
        assert_eq!(hex_decode("0g"), Err(HexError::NotHex { at: 1 }));
    }

    #[test]
    fn percent_decoding_paths_and_forms() {
        assert_eq!(percent_decode("a%2Fb+c").unwrap(), b"a/b+c");
        assert_eq!(form_decode("a%2Fb+c").unwrap(), b"a/b c");
        assert_eq!(percent_decode("%ff%FE").unwrap(), vec![0xff, 0xfe]);
        assert_eq!(percent_decode("ab%2"), Err(BadEscape { at: 2 }));
        assert_eq!(percent_decode("%zz"), Err(BadEscape { at: 0 }));
        assert_eq!(percent_decode("100%"), Err(BadEscape { at: 3 }));
    }

    #[test]
    fn key_encoding_round_trips_every_byte() {
        let key: Vec<u8> = (0..=255).collect();
        let encoded = percent_encode_key(&key);
        assert!(!encoded.contains('/') && !encoded.contains('?') && !encoded.contains('#'));
        assert_eq!(percent_decode(&encoded).unwrap(), key);
    }
}
