//! One established peer connection, used in both directions: this node's calls and the
//! peer's answers to them, and the peer's calls and this node's answers, share it.
//!
//! A writer loop sends this node's queued calls and its answers, coalescing whatever is
//! ready into one flush; a reader task takes answers to this node's calls back to their
//! callers and hands the peer's calls to the node's `Responder`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::client::CallError;
use super::server::Responder;
use super::stream::PeerStream;
use super::wire::{Frame, READ_BUFFER_BYTES, Response, ResponseFrame, decode, encode, read_frame};

/// The node's answerer of peer requests, once it serves them.
pub(super) type SharedResponder = Arc<std::sync::RwLock<Option<Arc<Responder>>>>;

pub(super) type ReplySender = oneshot::Sender<Result<Response, CallError>>;

/// A call queued for a peer, already encoded.
pub(super) struct Outgoing {
    pub id: u64,
    pub frame: Vec<u8>,
    pub reply: ReplySender,
}

/// Which end opened the connection: decides which one survives when both connect at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialer {
    Me,
    Peer,
}

/// A connection the peer opened and this node's accept loop checked, waiting for the link
/// to take it (or turn it down).
pub(super) struct Offer {
    pub stream: PeerStream,
}

/// Why a connection stopped being used.
pub(super) enum Ended {
    /// Broke: the peer closed it, went silent, or sent garbage.
    Failed(String),
    /// The peer opened a new connection that replaces this one.
    Replaced(Offer),
    /// This node's transport is shutting down.
    Shutdown,
}

/// What a connection needs to know besides its stream.
pub(super) struct ConnectionContext<'a> {
    pub me: u64,
    pub peer: u64,
    pub dialer: Dialer,
    pub silence_timeout: Duration,
    pub max_inflight: usize,
    pub responder: SharedResponder,
    pub calls: &'a mut mpsc::Receiver<Outgoing>,
    pub offers: &'a mut mpsc::Receiver<Offer>,
}

/// Calls written to a connection and not answered yet.
struct Waiting {
    replies: HashMap<u64, ReplySender>,
    /// When `replies` last went from empty to not empty.
    busy_since: Instant,
    /// When the connection last read anything.
    last_read: Instant,
}

type Pending = Arc<Mutex<Waiting>>;

/// Runs one established connection until it fails, is replaced or the transport shuts
/// down. Calls still waiting for an answer then fail as lost.
pub(super) async fn run_connection(stream: PeerStream, cx: ConnectionContext<'_>) -> Ended {
    let ConnectionContext {
        me,
        peer,
        dialer,
        silence_timeout,
        max_inflight,
        responder,
        calls,
        offers,
    } = cx;
    let (read_half, write_half) = tokio::io::split(stream);
    let pending: Pending = Arc::new(Mutex::new(Waiting {
        replies: HashMap::new(),
        busy_since: Instant::now(),
        last_read: Instant::now(),
    }));
    let max_inflight = max_inflight.max(1);
    // Answers are bounded by the permits their requests hold, plus refusals the reader
    // waits to queue: the writer drains this whatever the reader does.
    let (answers_tx, mut answers) = mpsc::channel::<Vec<u8>>(max_inflight);
    let mut reader = tokio::spawn(read_frames(
        read_half,
        Reader {
            me,
            peer,
            pending: pending.clone(),
            responder,
            answers: answers_tx,
            permits: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
        },
    ));
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    let mut silence_check = tokio::time::interval(silence_timeout / 4);
    silence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            biased;
            ended = &mut reader => {
                break Ended::Failed(
                    ended.unwrap_or_else(|e| format!("connection reader failed: {e}")),
                );
            }
            offer = offers.recv() => {
                let Some(offer) = offer else { break Ended::Shutdown };
                // The peer only connects when it has no connection of its own: the one it
                // opened last replaces this one. Both connecting at once is settled for the
                // connection the lower id opened, on both sides alike.
                if dialer == Dialer::Peer || peer < me {
                    break Ended::Replaced(offer);
                }
                tokio::spawn(super::client::refuse(offer, format!(
                    "node {me} already has a connection it opened to node {peer}; \
                     the lower id's connection is kept"
                )));
            }
            _ = silence_check.tick() => {
                let waiting = pending.lock().expect("pending lock");
                let quiet_since = waiting.busy_since.max(waiting.last_read);
                if !waiting.replies.is_empty() && quiet_since.elapsed() >= silence_timeout {
                    break Ended::Failed(format!(
                        "no answer at all for {} ms while {} requests waited \
                         (the peer is down, paused or cut off)",
                        quiet_since.elapsed().as_millis(),
                        waiting.replies.len()
                    ));
                }
            }
            answer = answers.recv() => {
                // The reader holds a sender until it ends, which the first branch sees.
                let Some(answer) = answer else { continue };
                if let Err(e) = write_ready(&mut writer, &pending, Some(answer), None, calls, &mut answers).await {
                    break Ended::Failed(e);
                }
            }
            call = calls.recv() => {
                let Some(call) = call else { break Ended::Shutdown };
                if let Err(e) = write_ready(&mut writer, &pending, None, Some(call), calls, &mut answers).await {
                    break Ended::Failed(e);
                }
            }
        }
    };
    reader.abort();
    let why = match &ended {
        Ended::Failed(why) => why.clone(),
        Ended::Replaced(_) => "the peer replaced the connection".to_string(),
        Ended::Shutdown => "the transport is shutting down".to_string(),
    };
    let lost: Vec<ReplySender> = pending
        .lock()
        .expect("pending lock")
        .replies
        .drain()
        .map(|(_, tx)| tx)
        .collect();
    for tx in lost {
        let _ = tx.send(Err(CallError::Lost(format!(
            "connection to node {peer} lost before an answer: {why}"
        ))));
    }
    ended
}

/// Writes `answer` and `call`, then everything else already queued, in one flush.
async fn write_ready(
    writer: &mut BufWriter<WriteHalf<PeerStream>>,
    pending: &Pending,
    answer: Option<Vec<u8>>,
    call: Option<Outgoing>,
    calls: &mut mpsc::Receiver<Outgoing>,
    answers: &mut mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("write failed: {e}");
    if let Some(answer) = answer {
        writer.write_all(&answer).await.map_err(fail)?;
    }
    if let Some(call) = call {
        write_call(writer, pending, call).await?;
    }
    // Let the other groups' tasks that are ready run first: what they send joins this flush.
    tokio::task::yield_now().await;
    loop {
        let mut wrote = false;
        while let Ok(answer) = answers.try_recv() {
            writer.write_all(&answer).await.map_err(fail)?;
            wrote = true;
        }
        while let Ok(call) = calls.try_recv() {
            write_call(writer, pending, call).await?;
            wrote = true;
        }
        if !wrote {
            break;
        }
    }
    writer.flush().await.map_err(fail)
}

async fn write_call(
    writer: &mut BufWriter<WriteHalf<PeerStream>>,
    pending: &Pending,
    call: Outgoing,
) -> Result<(), String> {
    if call.reply.is_closed() {
        return Ok(()); // the caller gave up; don't send what nobody waits for
    }
    {
        let mut waiting = pending.lock().expect("pending lock");
        if waiting.replies.is_empty() {
            waiting.busy_since = Instant::now();
        }
        waiting.replies.insert(call.id, call.reply);
    }
    writer
        .write_all(&call.frame)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

struct Reader {
    me: u64,
    peer: u64,
    pending: Pending,
    responder: SharedResponder,
    answers: mpsc::Sender<Vec<u8>>,
    /// Bounds the peer's calls in progress here.
    permits: Arc<Semaphore>,
    max_inflight: usize,
}

/// Reads frames until the connection fails; returns why.
async fn read_frames(read_half: ReadHalf<PeerStream>, cx: Reader) -> String {
    // Buffered: a frame read straight off the socket costs two reads or more (length, then
    // body); under load one read takes every frame that has arrived.
    let mut read_half = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    loop {
        let frame = match read_frame(&mut read_half).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return "peer closed the connection".into(),
            Err(e) => return format!("read failed: {e}"),
        };
        let frame: Frame = match decode(&frame) {
            Ok(f) => f,
            Err(e) => return e,
        };
        match frame {
            Frame::Response(ResponseFrame { id, body }) => {
                let waiter = {
                    let mut waiting = cx.pending.lock().expect("pending lock");
                    waiting.last_read = Instant::now();
                    waiting.replies.remove(&id)
                };
                if let Some(tx) = waiter {
                    let _ = tx.send(body.map_err(CallError::Refused));
                }
            }
            Frame::Request(request) => {
                cx.pending.lock().expect("pending lock").last_read = Instant::now();
                let responder = cx.responder.read().expect("responder lock").clone();
                let refusal = match (responder, cx.permits.clone().try_acquire_owned()) {
                    (Some(responder), Ok(permit)) => {
                        responder.dispatch(cx.peer, request, cx.answers.clone(), permit);
                        continue;
                    }
                    (None, _) => format!("node {} does not serve peers yet", cx.me),
                    (Some(_), Err(_)) => format!(
                        "node {} has {} requests from node {} in progress; retry shortly",
                        cx.me, cx.max_inflight, cx.peer
                    ),
                };
                let answer = ResponseFrame {
                    id: request.id,
                    body: Err(refusal),
                };
                match encode(&Frame::Response(answer)) {
                    Ok(frame) => {
                        if cx.answers.send(frame).await.is_err() {
                            return "connection writer ended".into();
                        }
                    }
                    Err(e) => return e,
                }
            }
        }
    }
}
