//! The peer protocol as a remote node (or anything that reaches the peer port) sends it:
//! the framing (`read_frame_within`: the hello under `MAX_HELLO_BYTES`, frames after it
//! under `MAX_FRAME_BYTES`), the `Hello` that opens a connection and the `Frame`s after it.
//!
//! Input layout: byte 0 picks what to decode, byte 1 the number of cuts `n` (mod 16), the
//! next `n` bytes the size of each read the socket returns, the rest is the bytes.
//!
//! Properties: no panic; a message that decodes re-encodes to bytes that decode to the same
//! message (compared in its encoded form: the wire types have no `PartialEq`); and a stream
//! read as the server reads it yields the same frames and the same end (clean, error) whether
//! the socket hands over everything at once or in small reads with `Pending` in between.
#![no_main]

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_raft::transport::wire::{self, Frame, Hello, HelloReply};
use tokio::io::{AsyncRead, ReadBuf};

/// Most frames read from one input: each costs at least its 4-byte header.
const MAX_FRAMES: usize = 64;

/// A socket that returns `data` in reads of the given sizes, each after a `Pending`.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: std::iter::Cycle<std::slice::Iter<'a, u8>>,
    ready: bool,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        let size = self
            .sizes
            .next()
            .map_or(usize::MAX, |&s| (s as usize).max(1));
        let n = size.min(buf.remaining()).min(self.data.len());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose reader always wakes it (no timers, no other tasks).
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("read_frame made no progress");
}

/// Every frame payload of a stream, then how it ended: the hello under its own limit, then
/// frames, as the peer server reads a connection.
fn read_all<R: AsyncRead + Unpin>(mut reader: R) -> (Vec<Vec<u8>>, Result<(), String>) {
    let mut frames = Vec::new();
    while frames.len() < MAX_FRAMES {
        let limit = if frames.is_empty() {
            wire::MAX_HELLO_BYTES
        } else {
            wire::MAX_FRAME_BYTES
        };
        match run(wire::read_frame_within(&mut reader, limit)) {
            Ok(Some(payload)) => {
                assert!(payload.len() <= limit, "a frame over its limit was read");
                frames.push(payload);
            }
            Ok(None) => return (frames, Ok(())),
            Err(e) => return (frames, Err(e.kind().to_string())),
        }
    }
    (frames, Ok(()))
}

/// Decodes `bytes` as a `T`; if that works, checks the message survives re-encoding.
fn decode_checked<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let message: T = wire::decode(bytes).ok()?;
    let encoded = wire::encode(&message).expect("a decoded message encodes");
    let again: T = wire::decode(&encoded[4..]).expect("a re-encoded message decodes");
    assert_eq!(
        wire::encode(&again).expect("encodes"),
        encoded,
        "encoding is not stable"
    );
    Some(message)
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, rest)) = input.split_first() else {
        return;
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let cuts = (cuts % 16) as usize;
    let (sizes, data) = rest.split_at(cuts.min(rest.len()));
    match which % 4 {
        0 => {
            decode_checked::<Hello>(data);
        }
        1 => {
            decode_checked::<HelloReply>(data);
        }
        2 => {
            decode_checked::<Frame>(data);
        }
        _ => {
            // A connection as the server reads it: the hello, then frames.
            let at_once = read_all(data);
            let trickled = read_all(Trickle {
                data,
                sizes: sizes.iter().cycle(),
                ready: false,
            });
            assert_eq!(
                at_once, trickled,
                "read sizes {sizes:?} changed what was read"
            );
            let mut payloads = at_once.0.iter();
            if let Some(hello) = payloads.next() {
                decode_checked::<Hello>(hello);
            }
            for payload in payloads {
                decode_checked::<Frame>(payload);
            }
        }
    }
});
