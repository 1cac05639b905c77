//! The calling side of the peer transport: one connection per peer, shared by every Raft
//! group and by forwarded client requests, with a bounded queue in front of it and
//! reconnection with backoff behind it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};

use super::faults::Faults;
use super::wire::{
    Hello, HelloReply, PROTOCOL_VERSION, READ_BUFFER_BYTES, Request, RequestFrame, Response,
    ResponseFrame, decode, encode, read_frame, write_frame,
};

/// Limits and timings of the peer transport.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    pub connect_timeout: Duration,
    /// Requests queued for one peer before further calls fail at once.
    pub max_queued_per_peer: usize,
    /// Requests one incoming connection may have in progress at once.
    pub max_inflight_per_connection: usize,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// Bytes per snapshot chunk: bounds the memory a snapshot transfer holds.
    pub snapshot_chunk_bytes: usize,
    /// How long one snapshot chunk may take to be written (and the last to be installed).
    pub snapshot_chunk_timeout: Duration,
    /// A connection with requests waiting that reads nothing at all for this long is
    /// declared dead: its waiting calls fail as lost and new ones fail at once while it
    /// reconnects. A live peer always answers something sooner (the status exchange asks
    /// every peer several times a second), but a peer behind a silent partition or a
    /// paused process answers nothing, and without this every forwarded request would
    /// wait out its own full timeout.
    pub silence_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            max_queued_per_peer: 8192,
            max_inflight_per_connection: 4096,
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_chunk_timeout: Duration::from_secs(60),
            silence_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a call failed, and therefore whether it may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Never handed to the peer: safe to retry, here or elsewhere.
    NotSent(String),
    /// Sent, but no answer came back (connection lost, timeout): it may have taken effect.
    Lost(String),
    /// The peer answered that it could not handle it (group not open there, partitioned).
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(m) | CallError::Lost(m) | CallError::Refused(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CallError {}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

type ReplySender = oneshot::Sender<Result<Response, CallError>>;

struct Outgoing {
    id: u64,
    frame: Vec<u8>,
    reply: ReplySender,
}

struct Link {
    tx: mpsc::Sender<Outgoing>,
    state: AtomicU8,
    last_error: Mutex<String>,
}

/// Sends requests to peers. Cheap to clone; one per node.
#[derive(Clone)]
pub struct PeerRouter {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    me: u64,
    cluster_id: String,
    options: TransportOptions,
    faults: Faults,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    addrs: RwLock<HashMap<u64, String>>,
    next_id: AtomicU64,
    /// Where connection tasks run.
    runtime: tokio::runtime::Handle,
}

impl PeerRouter {
    pub fn new(
        me: u64,
        cluster_id: String,
        options: TransportOptions,
        faults: Faults,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            inner: Arc::new(RouterInner {
                me,
                cluster_id,
                options,
                faults,
                links: Mutex::new(HashMap::new()),
                addrs: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                runtime,
            }),
        }
    }

    pub fn me(&self) -> u64 {
        self.inner.me
    }

    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    /// Records (or changes) where `node` listens for peers.
    pub fn set_addr(&self, node: u64, addr: String) {
        self.inner
            .addrs
            .write()
            .expect("addrs lock")
            .insert(node, addr);
    }

    /// Whether the connection to `node` is up (false while connecting or after a failure).
    pub fn is_connected(&self, node: u64) -> bool {
        self.inner
            .links
            .lock()
            .expect("links lock")
            .get(&node)
            .is_some_and(|l| l.state.load(Ordering::Relaxed) == UP)
    }

    /// Sends `request` to `target`. The request is queued (and so ordered after every
    /// earlier call to the same peer) before this returns; the future waits for the answer
    /// for at most `timeout`.
    pub fn call(
        &self,
        target: u64,
        request: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, CallError>> + Send + 'static {
        let queued = self.enqueue(target, request);
        async move {
            let rx = queued?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(CallError::Lost(format!(
                    "connection to node {target} closed before it answered"
                ))),
                Err(_) => Err(CallError::Lost(format!(
                    "node {target} did not answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        }
    }

    fn enqueue(
        &self,
        target: u64,
        request: Request,
    ) -> Result<oneshot::Receiver<Result<Response, CallError>>, CallError> {
        if self.inner.faults.is_blocked(target) {
            return Err(CallError::NotSent(format!(
                "node {target} is cut off by fault injection"
            )));
        }
        if target == self.inner.me {
            return Err(CallError::NotSent("a node does not call itself".into()));
        }
        let link = self.link(target)?;
        if link.state.load(Ordering::Relaxed) == DOWN {
            let why = link.last_error.lock().expect("error lock").clone();
            return Err(CallError::NotSent(format!(
                "node {target} is unreachable: {why}"
            )));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(&RequestFrame { id, body: request }).map_err(CallError::NotSent)?;
        let (reply, rx) = oneshot::channel();
        link.tx
            .try_send(Outgoing { id, frame, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CallError::NotSent(format!(
                    "queue to node {target} is full ({} requests); retry shortly",
                    self.inner.options.max_queued_per_peer
                )),
                mpsc::error::TrySendError::Closed(_) => {
                    CallError::NotSent("peer transport is shut down".into())
                }
            })?;
        Ok(rx)
    }

    fn link(&self, target: u64) -> Result<Arc<Link>, CallError> {
        let mut links = self.inner.links.lock().expect("links lock");
        if let Some(link) = links.get(&target) {
            return Ok(link.clone());
        }
        if !self
            .inner
            .addrs
            .read()
            .expect("addrs lock")
            .contains_key(&target)
        {
            return Err(CallError::NotSent(format!(
                "no peer address known for node {target}"
            )));
        }
        let (tx, rx) = mpsc::channel(self.inner.options.max_queued_per_peer);
        let link = Arc::new(Link {
            tx,
            state: AtomicU8::new(CONNECTING),
            last_error: Mutex::new(String::new()),
        });
        links.insert(target, link.clone());
        self.inner.runtime.spawn(run_link(
            Arc::downgrade(&self.inner),
            target,
            link.clone(),
            rx,
        ));
        Ok(link)
    }
}

/// Keeps one connection to `target` alive while the router exists.
async fn run_link(
    router: std::sync::Weak<RouterInner>,
    target: u64,
    link: Arc<Link>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut backoff = Duration::ZERO;
    loop {
        let Some(inner) = router.upgrade() else {
            return;
        };
        let (min, max) = (
            inner.options.reconnect_backoff_min,
            inner.options.reconnect_backoff_max,
        );
        let addr = inner
            .addrs
            .read()
            .expect("addrs lock")
            .get(&target)
            .cloned()
            .unwrap_or_default();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster_id: inner.cluster_id.clone(),
            from: inner.me,
            to: target,
        };
        let connect_timeout = inner.options.connect_timeout;
        let silence_timeout = inner.options.silence_timeout;
        drop(inner);
        let failure = match connect(&addr, &hello, connect_timeout).await {
            Ok(stream) => {
                link.state.store(UP, Ordering::Relaxed);
                tracing::debug!(peer = target, %addr, "peer connection up");
                backoff = Duration::ZERO;
                let why = run_connection(stream, &mut rx, silence_timeout).await;
                if rx.is_closed() {
                    return;
                }
                tracing::info!(peer = target, %addr, error = %why, "peer connection lost");
                why
            }
            Err(why) => why,
        };
        *link.last_error.lock().expect("error lock") = failure.clone();
        link.state.store(DOWN, Ordering::Relaxed);
        backoff = (backoff * 2).clamp(min, max);
        // Fail what is queued now and what arrives while waiting: callers retry elsewhere
        // or later instead of waiting behind a dead peer.
        let deadline = tokio::time::sleep(backoff);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                out = rx.recv() => match out {
                    Some(out) => {
                        let _ = out.reply.send(Err(CallError::NotSent(format!(
                            "node {target} is unreachable: {failure}"
                        ))));
                    }
                    None => return,
                },
            }
        }
    }
}

async fn connect(addr: &str, hello: &Hello, timeout: Duration) -> Result<TcpStream, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        write_frame(&mut stream, &encode(hello)?)
            .await
            .map_err(|e| format!("handshake with {addr} failed: {e}"))?;
        let reply = read_frame(&mut stream)
            .await
            .map_err(|e| format!("handshake with {addr} failed: {e}"))?
            .ok_or_else(|| format!("{addr} closed the connection during the handshake"))?;
        match decode::<HelloReply>(&reply)? {
            HelloReply::Welcome => Ok(stream),
            HelloReply::Refused(why) => Err(format!("{addr} refused the connection: {why}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
}

/// Calls written to a connection and not answered yet.
struct Waiting {
    replies: HashMap<u64, ReplySender>,
    /// When `replies` last went from empty to not empty.
    busy_since: Instant,
    /// When the connection last read a response.
    last_read: Instant,
}

type Pending = Arc<Mutex<Waiting>>;

/// Runs one established connection until it fails; returns why.
async fn run_connection(
    stream: TcpStream,
    rx: &mut mpsc::Receiver<Outgoing>,
    silence_timeout: Duration,
) -> String {
    let (read_half, write_half) = stream.into_split();
    let pending: Pending = Arc::new(Mutex::new(Waiting {
        replies: HashMap::new(),
        busy_since: Instant::now(),
        last_read: Instant::now(),
    }));
    let mut reader = tokio::spawn(read_responses(read_half, pending.clone()));
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    let mut silence_check = tokio::time::interval(silence_timeout / 4);
    silence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            biased;
            ended = &mut reader => {
                break ended.unwrap_or_else(|e| format!("response reader failed: {e}"));
            }
            _ = silence_check.tick() => {
                let waiting = pending.lock().expect("pending lock");
                let quiet_since = waiting.busy_since.max(waiting.last_read);
                if !waiting.replies.is_empty() && quiet_since.elapsed() >= silence_timeout {
                    break format!(
                        "no answer at all for {} ms while {} requests waited \
                         (the peer is down, paused or cut off)",
                        quiet_since.elapsed().as_millis(),
                        waiting.replies.len()
                    );
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break "router shut down".to_string() };
                if let Err(e) = write_one(&mut writer, &pending, out).await {
                    break e;
                }
                // Everything already queued goes out in the same flush.
                let mut failed = None;
                while let Ok(out) = rx.try_recv() {
                    if let Err(e) = write_one(&mut writer, &pending, out).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
                if let Err(e) = writer.flush().await {
                    break format!("write failed: {e}");
                }
            }
        }
    };
    reader.abort();
    let lost: Vec<ReplySender> = pending
        .lock()
        .expect("pending lock")
        .replies
        .drain()
        .map(|(_, tx)| tx)
        .collect();
    for tx in lost {
        let _ = tx.send(Err(CallError::Lost(format!(
            "connection lost before an answer: {why}"
        ))));
    }
    why
}

async fn write_one(
    writer: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    pending: &Pending,
    out: Outgoing,
) -> Result<(), String> {
    if out.reply.is_closed() {
        return Ok(()); // the caller gave up; don't send what nobody waits for
    }
    {
        let mut waiting = pending.lock().expect("pending lock");
        if waiting.replies.is_empty() {
            waiting.busy_since = Instant::now();
        }
        waiting.replies.insert(out.id, out.reply);
    }
    writer
        .write_all(&out.frame)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

async fn read_responses(read_half: OwnedReadHalf, pending: Pending) -> String {
    let mut read_half = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    loop {
        let frame = match read_frame(&mut read_half).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return "peer closed the connection".into(),
            Err(e) => return format!("read failed: {e}"),
        };
        let response: ResponseFrame = match decode(&frame) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let waiter = {
            let mut waiting = pending.lock().expect("pending lock");
            waiting.last_read = Instant::now();
            waiting.replies.remove(&response.id)
        };
        if let Some(tx) = waiter {
            let _ = tx.send(response.body.map_err(CallError::Refused));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A peer that completes the handshake, then reads everything and answers nothing, as
    /// a node behind a silent partition or a paused process looks from outside.
    async fn silent_peer() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let _hello = read_frame(&mut stream).await;
                    write_frame(&mut stream, &encode(&HelloReply::Welcome).unwrap())
                        .await
                        .unwrap();
                    while let Ok(Some(_)) = read_frame(&mut stream).await {}
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_silent_peer_fails_waiting_calls_as_lost_before_their_timeout() {
        let options = TransportOptions {
            silence_timeout: Duration::from_millis(200),
            ..TransportOptions::default()
        };
        let router = PeerRouter::new(
            1,
            "test".into(),
            options,
            Faults::default(),
            tokio::runtime::Handle::current(),
        );
        router.set_addr(2, silent_peer().await);
        let call = router.call(2, Request::Status, Duration::from_secs(3600));
        // The bound only keeps a broken build from hanging the test suite.
        let result = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the silent connection is declared dead long before the call's timeout");
        match result {
            Err(CallError::Lost(why)) => assert!(why.contains("no answer at all"), "{why}"),
            other => panic!("expected a lost call, got {other:?}"),
        }
    }
}
