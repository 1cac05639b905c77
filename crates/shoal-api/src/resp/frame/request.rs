//! Decoding what clients send: arrays of bulk strings (what every client library sends)
//! and inline commands (`PING\r\n` typed in telnet), with Redis's limits and wording.
//!
//! Decoding is incremental: a [`RequestDecoder`] remembers how far it got into a request that
//! has not fully arrived (the arguments already seen, where the search for a line end
//! stopped), so a request trickled in over many reads is examined once in all, not once per
//! read. Without that, an MSET of 100k arguments sent 20 at a time cost its parser quadratic
//! work: seconds of CPU for one slow client.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::{MAX_ARRAY_LEN, MAX_INLINE_BYTES, PREALLOC_ELEMENTS, ProtocolError, Step, parse_int};

/// Decodes one client request from the front of `buf`, consuming it.
///
/// Returns the arguments (command name first). An empty list means the request was empty
/// (`*0\r\n`, `*-1\r\n` or a blank inline line), which Redis silently skips. `max_bulk` bounds
/// each argument (see [`super::max_bulk_bytes`]). One-shot: a connection keeps a
/// [`RequestDecoder`] instead, so partial requests are not parsed again from their start.
pub fn decode_request(buf: &mut BytesMut, max_bulk: usize) -> Step<Vec<Bytes>> {
    RequestDecoder::new(max_bulk).decode(buf)
}

/// A connection's request decoder: [`decode_request`] with memory of a partial request.
///
/// Use one decoder per input buffer, and only append to that buffer between calls (the
/// decoder holds positions into it); `decode` consumes a request from the front only when it
/// is complete. After an error the decoder starts afresh, but the connection is expected to
/// close.
#[derive(Debug)]
pub struct RequestDecoder {
    max_bulk: usize,
    /// The multibulk request being received, if its header has arrived.
    partial: Option<Partial>,
    /// Where the search for the current line's end resumes: bytes before it hold none.
    line_scanned: usize,
    /// Bytes looked at so far, in all: lets tests bound the parse work per byte received.
    examined: u64,
}

#[derive(Debug)]
struct Partial {
    /// Arguments the header declared.
    count: usize,
    /// Positions of the arguments complete so far.
    spans: Vec<Range<usize>>,
    /// Where the next argument's `$` header starts.
    pos: usize,
    /// The argument whose header was read but whose bytes have not all arrived.
    body: Option<Range<usize>>,
}

impl RequestDecoder {
    pub fn new(max_bulk: usize) -> Self {
        Self {
            max_bulk,
            partial: None,
            line_scanned: 0,
            examined: 0,
        }
    }

    /// Bytes of input examined since the decoder was made (a parse-work counter).
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// Decodes the request at the front of `buf` if all of it has arrived, consuming it.
    /// `Ok(None)`: not yet; nothing is consumed, and the next call resumes where this stopped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Step<Vec<Bytes>> {
        let result = match (&self.partial, buf.first()) {
            (None, None) => return Ok(None),
            (None, Some(b'*')) => self.multibulk_header(buf),
            (None, Some(_)) => self.inline(buf),
            (Some(_), _) => self.multibulk_args(buf),
        };
        if !matches!(result, Ok(None)) {
            self.partial = None;
            self.line_scanned = 0;
        }
        result
    }

    /// The `*<n>` line; then the arguments, as far as they have arrived.
    fn multibulk_header(&mut self, buf: &mut BytesMut) -> Step<Vec<Bytes>> {
        let Some((line, pos)) = self.line(buf, 1, "mbulk count string")? else {
            return Ok(None);
        };
        let count = parse_int(&buf[line])
            .filter(|n| *n <= MAX_ARRAY_LEN as i64)
            .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
        if count <= 0 {
            buf.advance(pos);
            return Ok(Some(Vec::new()));
        }
        let count = count as usize;
        self.partial = Some(Partial {
            count,
            spans: Vec::with_capacity(count.min(PREALLOC_ELEMENTS)),
            pos,
            body: None,
        });
        self.multibulk_args(buf)
    }

    fn multibulk_args(&mut self, buf: &mut BytesMut) -> Step<Vec<Bytes>> {
        let mut partial = self
            .partial
            .take()
            .expect("a multibulk request in progress");
        let step = self.advance_args(buf, &mut partial);
        match step {
            Ok(true) => {}
            Ok(false) => {
                self.partial = Some(partial);
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        // Arguments are slices of the read buffer: no copy for the common read. Anything that
        // outlives the request (a write's keys and values, a client name) is copied out where
        // it is kept (`Ctx::submit`, the session), so no buffer stays pinned.
        let request = buf.split_to(partial.pos).freeze();
        Ok(Some(
            partial
                .spans
                .into_iter()
                .map(|span| request.slice(span))
                .collect(),
        ))
    }

    /// Takes in every argument that has fully arrived. `Ok(true)` once all have.
    fn advance_args(
        &mut self,
        buf: &BytesMut,
        partial: &mut Partial,
    ) -> Result<bool, ProtocolError> {
        while partial.spans.len() < partial.count {
            let body = match partial.body.clone() {
                Some(body) => body,
                None => {
                    let Some(&tag) = buf.get(partial.pos) else {
                        return Ok(false);
                    };
                    if tag != b'$' {
                        return Err(ProtocolError::new(format!(
                            "expected '$', got '{}'",
                            tag as char
                        )));
                    }
                    let Some((line, start)) =
                        self.line(buf, partial.pos + 1, "bulk count string")?
                    else {
                        return Ok(false);
                    };
                    let len = parse_int(&buf[line])
                        .filter(|n| *n >= 0 && *n as u64 <= self.max_bulk as u64)
                        .ok_or_else(|| ProtocolError::new("invalid bulk length"))?
                        as usize;
                    let body = start..start + len;
                    partial.body = Some(body.clone());
                    body
                }
            };
            let Some(terminator) = buf.get(body.end..body.end + 2) else {
                return Ok(false);
            };
            self.examined += 2;
            if terminator != b"\r\n" {
                return Err(ProtocolError::new("bulk string is not terminated by CRLF"));
            }
            partial.pos = body.end + 2;
            partial.spans.push(body);
            partial.body = None;
        }
        Ok(true)
    }

    /// The `*<n>` / `$<n>` header line starting at `from`: its span and the position after its
    /// CRLF. The search resumes where the last call for this line stopped.
    fn line(&mut self, buf: &[u8], from: usize, what: &str) -> Step<(Range<usize>, usize)> {
        let window_end = buf.len().min(from + MAX_INLINE_BYTES + 2);
        let start = self.line_scanned.clamp(from, window_end.max(from));
        let window = buf.get(start..window_end).unwrap_or_default();
        let found = window.windows(2).position(|w| w == b"\r\n");
        self.examined += found.map_or(window.len(), |at| at + 2) as u64;
        match found {
            Some(at) => {
                self.line_scanned = 0;
                let end = start + at;
                if end - from > MAX_INLINE_BYTES {
                    return Err(ProtocolError::new(format!("too big {what}")));
                }
                Ok(Some((from..end, end + 2)))
            }
            None if buf.len().saturating_sub(from) > MAX_INLINE_BYTES => {
                Err(ProtocolError::new(format!("too big {what}")))
            }
            None => {
                // The last byte may be the CR of a CRLF split across reads.
                self.line_scanned = window_end.saturating_sub(1).max(from);
                Ok(None)
            }
        }
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Step<Vec<Bytes>> {
        let window_end = buf.len().min(MAX_INLINE_BYTES + 1);
        let start = self.line_scanned.min(window_end);
        let window = &buf[start..window_end];
        let found = window.iter().position(|&b| b == b'\n');
        self.examined += found.map_or(window.len(), |at| at + 1) as u64;
        let Some(at) = found else {
            if buf.len() > MAX_INLINE_BYTES {
                return Err(ProtocolError::new("too big inline request"));
            }
            self.line_scanned = window_end;
            return Ok(None);
        };
        let newline = start + at;
        // Telnet sends CRLF, `nc` may send a bare LF: accept both, as Redis does.
        let line = buf[..newline]
            .strip_suffix(b"\r")
            .unwrap_or(&buf[..newline]);
        let args =
            split_args(line).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
        buf.advance(newline + 1);
        Ok(Some(args))
    }
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

    /// An MSET of many arguments, as a client library encodes it.
    fn big_mset(args: usize) -> Vec<u8> {
        let mut out = format!("*{}\r\n$4\r\nMSET\r\n", args + 1).into_bytes();
        for i in 0..args {
            let arg = format!("key:{i:08}");
            out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        out
    }

    #[test]
    fn a_trickled_request_is_parsed_once_not_once_per_read() {
        // 100k arguments arriving 20 at a time: 5,000 reads. Re-parsing from the start on
        // every read examined ~1.4 GB here; resuming examines each byte about once.
        let full = big_mset(100_000);
        let piece = full.len() / 5_000;
        let mut decoder = RequestDecoder::new(MAX_BULK);
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for chunk in full.chunks(piece) {
            buf.extend_from_slice(chunk);
            if let Some(args) = decoder.decode(&mut buf).unwrap() {
                decoded = Some(args);
            }
        }
        let args = decoded.expect("the whole request decoded");
        assert_eq!(args.len(), 100_001);
        assert_eq!(&args[100_000][..], b"key:00099999");
        assert!(buf.is_empty());
        let examined = decoder.bytes_examined();
        assert!(
            examined <= 2 * full.len() as u64,
            "examined {examined} bytes for a {}-byte request",
            full.len()
        );
    }

    #[test]
    fn a_trickled_header_or_inline_line_is_scanned_once() {
        for input in [
            format!("*1\r\n${}\r\n", "1".repeat(10)).into_bytes(),
            format!("SET k {}\r\n", "v".repeat(60_000)).into_bytes(),
        ] {
            let mut decoder = RequestDecoder::new(MAX_BULK);
            let mut buf = BytesMut::new();
            for byte in &input {
                buf.extend_from_slice(&[*byte]);
                let _ = decoder.decode(&mut buf);
            }
            assert!(decoder.bytes_examined() <= 2 * input.len() as u64 + 8);
        }
    }

    /// Decodes `input` fed in pieces cut at `cuts`, as a connection would.
    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<Vec<Bytes>>, Option<String>) {
        let mut decoder = RequestDecoder::new(MAX_BULK);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort_unstable();
        let mut fed = 0;
        for bound in bounds {
            buf.extend_from_slice(&input[fed..bound]);
            fed = bound;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(args)) => out.push(args),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
        }
        (out, None)
    }

    proptest! {
        #[test]
        fn pieces_decode_like_the_whole(
            list in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            noise in proptest::collection::vec(any::<u8>(), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut input = BytesMut::new();
            for arg in &list {
                let frame = Frame::Array(vec![Frame::bulk(b"SET".to_vec()), Frame::Bulk(Bytes::copy_from_slice(arg))]);
                frame.encode(Protocol::Resp2, &mut input);
            }
            input.extend_from_slice(b"PING\r\n");
            input.extend_from_slice(&noise);
            prop_assert_eq!(decode_in_pieces(&input, &cuts), decode_in_pieces(&input, &[]));
        }

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
