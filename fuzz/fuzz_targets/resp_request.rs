//! The RESP request parser, fed all at once and fed in pieces.
//!
//! Input layout: byte 0 picks the bulk-string limit, byte 1 the number of cuts `n` (mod 16),
//! the next `n` bytes the length of each piece, and the rest is what a client sends.
//!
//! Property: a connection's `RequestDecoder`, fed the bytes in those pieces (append a piece,
//! decode until it needs more or fails, append the next...), yields exactly the requests,
//! and the same error or no error, as one-shot `decode_request` over all the bytes at once;
//! and neither ever panics, nor answers a request without consuming input.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shoal_api::resp::frame::{RequestDecoder, decode_request, max_bulk_bytes};

/// What decoding a byte stream came to: the requests, then either an error or "needs more"
/// with the bytes left over.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Vec<Bytes>>,
    error: Option<String>,
    left: Option<Vec<u8>>,
}

/// Decodes every complete request in `buf` with `next`, until it needs more or fails.
/// Returns the error, if any.
fn drain(
    buf: &mut BytesMut,
    requests: &mut Vec<Vec<Bytes>>,
    mut next: impl FnMut(&mut BytesMut) -> Result<Option<Vec<Bytes>>, String>,
) -> Option<String> {
    loop {
        let before = buf.len();
        match next(buf) {
            Ok(Some(request)) => {
                assert!(buf.len() < before, "a request was decoded from no input");
                requests.push(request);
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&limit, rest)) = input.split_first() else {
        return;
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let cuts = (cuts % 16) as usize;
    let (pieces, data) = rest.split_at(cuts.min(rest.len()));
    let max_bulk = match limit % 3 {
        0 => 4,
        1 => 100,
        _ => max_bulk_bytes(8 * 1024 * 1024),
    };

    // All at once, one fresh decode per request.
    let mut whole = BytesMut::from(data);
    let mut requests = Vec::new();
    let error = drain(&mut whole, &mut requests, |buf| {
        decode_request(buf, max_bulk).map_err(|e| e.to_string())
    });
    let one_shot = Outcome {
        left: error.is_none().then(|| whole.to_vec()),
        requests,
        error,
    };

    // In pieces, through one decoder that remembers a partial request.
    let mut decoder = RequestDecoder::new(max_bulk);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut error = None;
    let mut offset = 0;
    let mut sizes = pieces.iter().map(|&b| b as usize);
    while error.is_none() && offset < data.len() {
        let size = sizes.next().unwrap_or(data.len()).min(data.len() - offset);
        buf.extend_from_slice(&data[offset..offset + size]);
        offset += size;
        error = drain(&mut buf, &mut requests, |buf| {
            decoder.decode(buf).map_err(|e| e.to_string())
        });
    }
    let pieced = Outcome {
        left: error.is_none().then(|| buf.to_vec()),
        requests,
        error,
    };

    assert_eq!(
        one_shot, pieced,
        "feeding in pieces of {pieces:?} changed the outcome"
    );
});
