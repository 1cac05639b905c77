//! RESP wire frames: what a client sends is decoded here, what the server answers is encoded
//! here, and nothing in this module knows what a command means.
//!
//! Two decoders share one set of limits:
//! - [`decode_request`] parses what clients send: an array of bulk strings
//!   (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or an inline line typed in telnet (`PING\r\n`), with
//!   Redis's own limits and error wording.
//! - [`decode_frame`] parses any RESP2 or RESP3 value (what a server sends); tests and tools
//!   use it to read replies.
//!
//! Both are incremental: on partial input they return `Ok(None)` and consume nothing, so the
//! caller reads more and tries again. Neither panics on any input. A connection decodes with a
//! [`RequestDecoder`], which also remembers how far it got, so a request that arrives slowly
//! is parsed once, not once per read.

mod request;

use std::fmt;
use std::fmt::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use request::{RequestDecoder, decode_request};

/// Most elements a request array may declare (Redis allows this many from an unauthenticated
/// client too). A larger count is a protocol error, so a client cannot make us reserve memory
/// for an array it never sends.
pub const MAX_ARRAY_LEN: usize = 1024 * 1024;
/// Longest inline command, and longest `*<n>` / `$<n>` header line (Redis's
/// `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// How far a bulk string may exceed the value size limit: arguments also carry keys and
/// options, and an oversized value deserves the precise "value is N bytes" error from the
/// command layer rather than a protocol error, as long as it is only a little too big.
pub const BULK_SLACK_BYTES: usize = 64 * 1024;
/// Deepest nesting [`decode_frame`] follows; bounds recursion on hostile input.
pub const MAX_NESTING: usize = 32;

/// Elements reserved up front for a declared array; the rest grow as data actually arrives.
const PREALLOC_ELEMENTS: usize = 1024;

/// The largest bulk string a request may carry given the node's value size limit.
pub fn max_bulk_bytes(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_add(BULK_SLACK_BYTES)
}

/// The reply protocol a connection speaks; `HELLO 3` switches to RESP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One RESP value. RESP3-only types are downgraded when encoded for RESP2 the way Redis
/// does it (maps become flat arrays, booleans integers, doubles and verbatim text bulk
/// strings, null `$-1`).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(String),
    /// An error line without the leading `-`, e.g. `ERR syntax error`.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    Null,
    Array(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    Double(f64),
    Boolean(bool),
    /// Verbatim text (RESP3 `=` with format `txt`); INFO and CLUSTER NODES reply with it.
    Verbatim(String),
}

impl Frame {
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_string())
    }

    pub fn simple(text: impl Into<String>) -> Frame {
        Frame::Simple(text.into())
    }

    /// An error reply; `text` starts with the error code (`ERR`, `CROSSSLOT`, ...).
    pub fn error(text: impl Into<String>) -> Frame {
        Frame::Error(text.into())
    }

    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// A bulk string, or null when absent.
    pub fn bulk_or_null(data: Option<Bytes>) -> Frame {
        data.map_or(Frame::Null, Frame::Bulk)
    }

    /// Appends the wire form of this frame for `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(text) => put_line(out, b'+', text),
            Frame::Error(text) => put_line(out, b'-', text),
            Frame::Integer(n) => put_header(out, b':', *n),
            Frame::Bulk(data) => put_bulk(out, b'$', data),
            Frame::Null if resp3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::Array(items) => {
                put_header(out, b'*', items.len() as i64);
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Frame::Set(items) => {
                put_header(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Frame::Map(pairs) => {
                if resp3 {
                    put_header(out, b'%', pairs.len() as i64);
                } else {
                    put_header(out, b'*', pairs.len() as i64 * 2);
                }
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
            Frame::Double(value) if resp3 => put_line(out, b',', &format_double(*value)),
            Frame::Double(value) => put_bulk(out, b'$', format_double(*value).as_bytes()),
            Frame::Boolean(value) if resp3 => {
                out.put_slice(if *value { b"#t\r\n" } else { b"#f\r\n" })
            }
            Frame::Boolean(value) => put_header(out, b':', i64::from(*value)),
            Frame::Verbatim(text) if resp3 => {
                put_header(out, b'=', text.len() as i64 + 4);
                out.put_slice(b"txt:");
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim(text) => put_bulk(out, b'$', text.as_bytes()),
        }
    }
}

/// Doubles as RESP3 spells them: `inf`, `-inf`, `nan`, otherwise the shortest exact decimal.
fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{value}")
    }
}

/// A one-line frame. CR and LF would end the line early and desynchronise the client, so
/// they become spaces (Redis does the same to error messages).
fn put_line(out: &mut BytesMut, tag: u8, text: &str) {
    out.put_u8(tag);
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.put_slice(text.as_bytes());
    }
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    // Writing to a BytesMut cannot fail: it grows as needed.
    let _ = write!(out, "{n}");
    out.put_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, tag: u8, data: &[u8]) {
    put_header(out, tag, data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A malformed frame. The connection answers `-ERR <this>` and closes, since after a framing
/// error there is no telling where the next request starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(String);

impl ProtocolError {
    fn new(what: impl Into<String>) -> Self {
        ProtocolError(what.into())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// `Ok(None)`: not enough data yet.
type Step<T> = Result<Option<T>, ProtocolError>;

/// The line of a `*<n>` / `$<n>` header starting at `from`, and the position after its CRLF.
fn header_line<'a>(buf: &'a [u8], from: usize, what: &str) -> Step<(&'a [u8], usize)> {
    let rest = buf.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_INLINE_BYTES + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(len) if len <= MAX_INLINE_BYTES => Ok(Some((&rest[..len], from + len + 2))),
        Some(_) => Err(ProtocolError::new(format!("too big {what}"))),
        None if rest.len() > MAX_INLINE_BYTES => Err(ProtocolError::new(format!("too big {what}"))),
        None => Ok(None),
    }
}

/// Parses a signed decimal exactly as Redis's `string2ll` does: no sign `+`, no leading
/// zeros, no spaces, at most 20 characters, within `i64`.
pub fn parse_int(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        if magnitude > i64::MAX as u64 + 1 {
            return None;
        }
        Some((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Decodes one RESP2/RESP3 value of any type from the front of `buf`, consuming it.
/// `max_bulk` bounds each bulk string. Push frames (`>`) decode as arrays and `$-1`/`*-1`
/// as [`Frame::Null`].
pub fn decode_frame(buf: &mut BytesMut, max_bulk: usize) -> Step<Frame> {
    match parse_value(buf, 0, max_bulk, 0)? {
        Some((frame, end)) => {
            buf.advance(end);
            Ok(Some(frame))
        }
        None => Ok(None),
    }
}

fn parse_value(buf: &[u8], pos: usize, max_bulk: usize, depth: usize) -> Step<(Frame, usize)> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, next)) = header_line(buf, pos + 1, "line")? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let frame = match tag {
        b'+' => Frame::Simple(text()),
        b'-' => Frame::Error(text()),
        b':' => {
            Frame::Integer(parse_int(line).ok_or_else(|| ProtocolError::new("invalid integer"))?)
        }
        b'_' if line.is_empty() => Frame::Null,
        b'#' => match line {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(ProtocolError::new("invalid boolean")),
        },
        b',' => {
            Frame::Double(parse_double(line).ok_or_else(|| ProtocolError::new("invalid double"))?)
        }
        b'$' | b'=' => {
            let len = parse_int(line).ok_or_else(|| ProtocolError::new("invalid bulk length"))?;
            if len == -1 && tag == b'$' {
                return Ok(Some((Frame::Null, next)));
            }
            if len < 0 || len as u64 > max_bulk as u64 {
                return Err(ProtocolError::new("invalid bulk length"));
            }
            let end = next + len as usize;
            let Some(terminator) = buf.get(end..end + 2) else {
                return Ok(None);
            };
            if terminator != b"\r\n" {
                return Err(ProtocolError::new("bulk string is not terminated by CRLF"));
            }
            let data = &buf[next..end];
            let frame = if tag == b'$' {
                Frame::Bulk(Bytes::copy_from_slice(data))
            } else {
                // `=<len>\r\nfmt:<text>`: three bytes of format, a colon, then the text.
                match data.get(3) {
                    Some(b':') => Frame::Verbatim(String::from_utf8_lossy(&data[4..]).into_owned()),
                    _ => return Err(ProtocolError::new("invalid verbatim string")),
                }
            };
            return Ok(Some((frame, end + 2)));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count =
                parse_int(line).ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
            if count == -1 && tag == b'*' {
                return Ok(Some((Frame::Null, next)));
            }
            if count < 0 || count as u64 > MAX_ARRAY_LEN as u64 {
                return Err(ProtocolError::new("invalid multibulk length"));
            }
            if depth >= MAX_NESTING {
                return Err(ProtocolError::new("too deeply nested"));
            }
            let elements = if tag == b'%' {
                count as usize * 2
            } else {
                count as usize
            };
            let mut items = Vec::with_capacity(elements.min(PREALLOC_ELEMENTS));
            let mut at = next;
            for _ in 0..elements {
                let Some((item, end)) = parse_value(buf, at, max_bulk, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = end;
            }
            let frame = match tag {
                b'~' => Frame::Set(items),
                b'%' => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut items = items.into_iter();
                    while let (Some(key), Some(value)) = (items.next(), items.next()) {
                        pairs.push((key, value));
                    }
                    Frame::Map(pairs)
                }
                _ => Frame::Array(items),
            };
            return Ok(Some((frame, at)));
        }
        other => {
            return Err(ProtocolError::new(format!(
                "unexpected type byte '{}'",
                other as char
            )));
        }
    };
    Ok(Some((frame, next)))
}

fn parse_double(line: &[u8]) -> Option<f64> {
    match line {
        b"inf" | b"+inf" => Some(f64::INFINITY),
        b"-inf" => Some(f64::NEG_INFINITY),
        b"nan" => Some(f64::NAN),
        _ => std::str::from_utf8(line).ok()?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX_BULK: usize = 1024;

    fn encoded(frame: &Frame, protocol: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(protocol, &mut out);
        out.to_vec()
    }

    #[test]
    fn parse_int_matches_string2ll() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1.0",
            b"-",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resp2_downgrades_resp3_types() {
        let map = Frame::Map(vec![(Frame::simple("a"), Frame::Integer(1))]);
        assert_eq!(encoded(&map, Protocol::Resp2), b"*2\r\n+a\r\n:1\r\n");
        assert_eq!(encoded(&map, Protocol::Resp3), b"%1\r\n+a\r\n:1\r\n");
        assert_eq!(encoded(&Frame::Null, Protocol::Resp2), b"$-1\r\n");
        assert_eq!(encoded(&Frame::Null, Protocol::Resp3), b"_\r\n");
        assert_eq!(encoded(&Frame::Boolean(true), Protocol::Resp2), b":1\r\n");
        assert_eq!(
            encoded(&Frame::Double(1.5), Protocol::Resp2),
            b"$3\r\n1.5\r\n"
        );
        assert_eq!(encoded(&Frame::Double(1.5), Protocol::Resp3), b",1.5\r\n");
        assert_eq!(
            encoded(&Frame::Verbatim("hi".into()), Protocol::Resp3),
            b"=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            encoded(&Frame::Verbatim("hi".into()), Protocol::Resp2),
            b"$2\r\nhi\r\n"
        );
    }

    #[test]
    fn line_breaks_in_errors_cannot_break_framing() {
        assert_eq!(
            encoded(&Frame::error("ERR a\r\nb"), Protocol::Resp2),
            b"-ERR a  b\r\n"
        );
    }

    #[test]
    fn decode_frame_reads_nulls_and_nesting() {
        let mut buf = BytesMut::from(&b"*-1\r\n$-1\r\n*1\r\n%1\r\n+k\r\n~1\r\n#f\r\n"[..]);
        assert_eq!(decode_frame(&mut buf, MAX_BULK), Ok(Some(Frame::Null)));
        assert_eq!(decode_frame(&mut buf, MAX_BULK), Ok(Some(Frame::Null)));
        let nested = Frame::Array(vec![Frame::Map(vec![(
            Frame::simple("k"),
            Frame::Set(vec![Frame::Boolean(false)]),
        )])]);
        assert_eq!(decode_frame(&mut buf, MAX_BULK), Ok(Some(nested)));
        let deep = b"*1\r\n".repeat(MAX_NESTING + 1);
        assert!(decode_frame(&mut BytesMut::from(&deep[..]), MAX_BULK).is_err());
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 :_-]{0,16}"
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            text().prop_map(Frame::Simple),
            text().prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(|v| Frame::Bulk(v.into())),
            Just(Frame::Null),
            any::<f64>()
                .prop_filter("NaN never equals itself", |d| !d.is_nan())
                .prop_map(Frame::Double),
            any::<bool>().prop_map(Frame::Boolean),
            text().prop_map(Frame::Verbatim),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Set),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&mut BytesMut::from(&input[..]), MAX_BULK);
        }

        #[test]
        fn resp3_frames_round_trip(frame in frame()) {
            let bytes = encoded(&frame, Protocol::Resp3);
            let mut buf = BytesMut::from(&bytes[..]);
            prop_assert_eq!(decode_frame(&mut buf, MAX_BULK), Ok(Some(frame)));
            prop_assert!(buf.is_empty());
        }
    }
}
