//! Decoding what clients send: arrays of bulk strings (what every client library sends)
//! and inline commands (`PING\r\n` typed in telnet), with Redis's limits and wording.

use bytes::{Buf, Bytes, BytesMut};

use super::{
    MAX_ARRAY_LEN, MAX_INLINE_BYTES, PREALLOC_ELEMENTS, ProtocolError, Step, header_line, parse_int,
};

/// Decodes one client request from the front of `buf`, consuming it.
///
/// Returns the arguments (command name first). An empty list means the request was empty
/// (`*0\r\n`, `*-1\r\n` or a blank inline line), which Redis silently skips. `max_bulk` bounds
/// each argument (see [`super::max_bulk_bytes`]).
pub fn decode_request(buf: &mut BytesMut, max_bulk: usize) -> Step<Vec<Bytes>> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => decode_multibulk(buf, max_bulk),
        Some(_) => decode_inline(buf),
    }
}

fn decode_multibulk(buf: &mut BytesMut, max_bulk: usize) -> Step<Vec<Bytes>> {
    let Some((line, mut pos)) = header_line(buf, 1, "mbulk count string")? else {
        return Ok(None);
    };
    let count = parse_int(line)
        .filter(|n| *n <= MAX_ARRAY_LEN as i64)
        .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
    if count <= 0 {
        buf.advance(pos);
        return Ok(Some(Vec::new()));
    }
    let count = count as usize;
    // Argument positions first; the bytes are split off only once the whole request is here.
    let mut spans = Vec::with_capacity(count.min(PREALLOC_ELEMENTS));
    for _ in 0..count {
        let Some(&tag) = buf.get(pos) else {
            return Ok(None);
        };
        if tag != b'$' {
            return Err(ProtocolError::new(format!(
                "expected '$', got '{}'",
                tag as char
            )));
        }
        let Some((line, start)) = header_line(buf, pos + 1, "bulk count string")? else {
            return Ok(None);
        };
        let len = parse_int(line)
            .filter(|n| *n >= 0 && *n as u64 <= max_bulk as u64)
            .ok_or_else(|| ProtocolError::new("invalid bulk length"))? as usize;
        let end = start + len;
        let Some(terminator) = buf.get(end..end + 2) else {
            return Ok(None);
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::new("bulk string is not terminated by CRLF"));
        }
        spans.push((start, end));
        pos = end + 2;
    }
    // Arguments are slices of the read buffer: no copy for the common read. Anything that
    // outlives the request (a write's keys and values, a client name) is copied out where it
    // is kept (`Ctx::submit`, the session), so no buffer stays pinned.
    let request = buf.split_to(pos).freeze();
    Ok(Some(
        spans
            .into_iter()
            .map(|(start, end)| request.slice(start..end))
            .collect(),
    ))
}

fn decode_inline(buf: &mut BytesMut) -> Step<Vec<Bytes>> {
    let window = &buf[..buf.len().min(MAX_INLINE_BYTES + 1)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE_BYTES {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(None);
    };
    // Telnet sends CRLF, `nc` may send a bare LF: accept both, as Redis does.
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    let args =
        split_args(line).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    buf.advance(newline + 1);
    Ok(Some(args))
}

/// Splits an inline command into arguments the way Redis's `sdssplitargs` does: whitespace
/// separates, `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`, and
/// a closing quote must be followed by whitespace or the end. `None` on unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut double_quoted = false;
        let mut single_quoted = false;
        loop {
            let Some(c) = at(i) else {
                if double_quoted || single_quoted {
                    return None;
                }
                break;
            };
            if double_quoted {
                match (c, at(i + 1)) {
                    (b'\\', Some(b'x'))
                        if at(i + 2).is_some_and(|h| h.is_ascii_hexdigit())
                            && at(i + 3).is_some_and(|h| h.is_ascii_hexdigit()) =>
                    {
                        current.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    (b'\\', Some(escaped)) => {
                        current.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (b'"', next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    _ => current.push(c),
                }
            } else if single_quoted {
                match (c, at(i + 1)) {
                    (b'\\', Some(b'\'')) => {
                        current.push(b'\'');
                        i += 1;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    _ => current.push(c),
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | b'\0' => {
                        i += 1;
                        break;
                    }
                    b'"' => double_quoted = true,
                    b'\'' => single_quoted = true,
                    _ => current.push(c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(current));
    }
}

/// C's `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::resp::frame::{Frame, Protocol};

    const MAX_BULK: usize = 1024;

    fn request(input: &[u8]) -> Step<Vec<Bytes>> {
        decode_request(&mut BytesMut::from(input), MAX_BULK)
    }

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn protocol_error(input: &[u8]) -> String {
        match request(input) {
            Err(e) => e.to_string(),
            other => panic!("expected a protocol error for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn decodes_multibulk_and_consumes_only_one_request() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(
            decode_request(&mut buf, MAX_BULK),
            Ok(Some(args(&["GET", "k"])))
        );
        assert_eq!(
            decode_request(&mut buf, MAX_BULK),
            Ok(Some(args(&["PING"])))
        );
        assert_eq!(decode_request(&mut buf, MAX_BULK), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_prefix_of_a_request_needs_more_data() {
        let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(
                decode_request(&mut buf, MAX_BULK),
                Ok(None),
                "prefix of {cut} bytes"
            );
            assert_eq!(buf.len(), cut, "a partial request consumes nothing");
        }
        assert_eq!(request(full), Ok(Some(args(&["SET", "k", "va\r\nl"]))));
    }

    #[test]
    fn empty_requests_are_skipped() {
        assert_eq!(request(b"*0\r\n"), Ok(Some(vec![])));
        assert_eq!(request(b"*-1\r\n"), Ok(Some(vec![])));
        assert_eq!(request(b"\r\n"), Ok(Some(vec![])));
        assert_eq!(request(b"   \n"), Ok(Some(vec![])));
    }

    #[test]
    fn malformed_requests_use_redis_wording() {
        assert_eq!(
            protocol_error(b"*x\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            protocol_error(b"*01\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            protocol_error(b"*1048577\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            protocol_error(b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            protocol_error(b"*1\r\n$-1\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            protocol_error(b"*1\r\n$abc\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            protocol_error(b"*1\r\n$1025\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            protocol_error(b"*1\r\n$1\r\nab\r\n"),
            "Protocol error: bulk string is not terminated by CRLF"
        );
        assert_eq!(
            protocol_error(b"SET \"k v\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            protocol_error(b"SET \"k\"v\n"),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn limits_are_enforced_before_the_data_arrives() {
        // The declared length alone is enough to refuse: nothing waits for 1 GiB of data.
        assert!(request(b"*1\r\n$1073741824\r\n").is_err());
        assert_eq!(request(b"*1048576\r\n"), Ok(None));
        let line = vec![b'a'; MAX_INLINE_BYTES + 1];
        assert_eq!(
            decode_request(&mut BytesMut::from(&line[..]), MAX_BULK).map_err(|e| e.to_string()),
            Err("Protocol error: too big inline request".to_string())
        );
        let mut header = b"*".to_vec();
        header.extend(vec![b'1'; MAX_INLINE_BYTES + 1]);
        assert_eq!(
            decode_request(&mut BytesMut::from(&header[..]), MAX_BULK).map_err(|e| e.to_string()),
            Err("Protocol error: too big mbulk count string".to_string())
        );
        let mut bulk = b"*1\r\n$".to_vec();
        bulk.extend(vec![b'1'; MAX_INLINE_BYTES + 1]);
        assert_eq!(
            decode_request(&mut BytesMut::from(&bulk[..]), MAX_BULK).map_err(|e| e.to_string()),
            Err("Protocol error: too big bulk count string".to_string())
        );
        // Exactly at the bulk limit is fine.
        let mut exact = format!("*1\r\n${MAX_BULK}\r\n").into_bytes();
        exact.extend(vec![b'x'; MAX_BULK]);
        exact.extend_from_slice(b"\r\n");
        assert!(matches!(request(&exact), Ok(Some(a)) if a[0].len() == MAX_BULK));
    }

    #[test]
    fn inline_commands_split_like_redis() {
        assert_eq!(request(b"PING\r\n"), Ok(Some(args(&["PING"]))));
        assert_eq!(request(b"set  k   v\n"), Ok(Some(args(&["set", "k", "v"]))));
        assert_eq!(
            request(b"SET k \"a b\\n\\x41\"\r\n"),
            Ok(Some(args(&["SET", "k", "a b\nA"])))
        );
        assert_eq!(
            request(b"SET k 'it\\'s'\r\n"),
            Ok(Some(args(&["SET", "k", "it's"])))
        );
        assert_eq!(
            request(b"SET k \"\"\r\n"),
            Ok(Some(args(&["SET", "k", ""])))
        );
        assert_eq!(request(b"PING"), Ok(None));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = request(&input);
            // Also with a plausible start, so the fuzzing gets past the first byte.
            let mut framed = b"*3\r\n$3\r\nSET\r\n".to_vec();
            framed.extend_from_slice(&input);
            let _ = request(&framed);
        }

        #[test]
        fn requests_round_trip(list in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 1..8)
        ) {
            let frame = Frame::Array(list.iter().map(|a| Frame::Bulk(Bytes::copy_from_slice(a))).collect());
            let mut bytes = BytesMut::new();
            frame.encode(Protocol::Resp2, &mut bytes);
            for cut in 0..bytes.len() {
                prop_assert_eq!(request(&bytes[..cut]), Ok(None));
            }
            let decoded = request(&bytes)?.unwrap_or_default();
            prop_assert_eq!(decoded.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), list);
        }
    }
}
