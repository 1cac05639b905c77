//! The peer router: one link per peer, each keeping one connection to it, shared by every
//! Raft group and by forwarded client requests in both directions, with a bounded queue in
//! front of it and reconnection with backoff behind it.
//!
//! Either node of a pair may open the connection (whichever needs it first); the other
//! adopts it. When both open one at the same moment, both keep the one the lower id
//! opened, so a pair settles on one connection without a round of negotiation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use shoal_core::ShardId;
use tokio::sync::{mpsc, oneshot};

use super::connection::{
    ConnectionContext, Dialer, Ended, Offer, Outgoing, SharedResponder, run_connection,
};
use super::faults::Faults;
use super::server::Responder;
use super::stream::{PeerStream, dial};
use super::wire::{
    Frame, Hello, HelloReply, MAX_HELLO_BYTES, PROTOCOL_VERSION, Request, RequestFrame, Response,
    decode, encode, read_frame_within, write_frame,
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
    /// Least time an AppendEntries call waits for its answer. openraft asks for its
    /// heartbeat interval (100 ms by default), but a follower answers only after its
    /// fsync, and a disk busy with a memtable flush delays an fsync for hundreds of ms
    /// (measured up to 700 ms on the 2-core VM). A call timed out at 100 ms makes the
    /// leader back off (200 ms) and resend entries the follower is about to acknowledge:
    /// writes waited 300-400 ms where 150 would have done. A peer that is really gone is
    /// found by `silence_timeout` or the connection's reset, not by this.
    pub append_timeout_min: Duration,
    /// AppendEntries each group keeps in flight to each follower (1: wait for each answer
    /// before sending the next, openraft's default). More lets a leader send new entries
    /// while a follower is still syncing the previous ones.
    pub append_pipeline: usize,
    /// How long a commit-index-only AppendEntries waits for one with entries to replace
    /// it (zero: sent at once). See `group_network`.
    pub commit_update_delay: Duration,
    /// Snapshot bytes per second this node sends, all transfers together (replica moves
    /// and lagging followers); 0: as fast as the network and disks go.
    pub snapshot_bytes_per_sec: u64,
    /// Mutual TLS between peers, when the node has a cluster CA: each end presents a
    /// certificate the CA signed, and one without is refused in the handshake.
    pub tls: Option<shoal_tls::Tls>,
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
            append_timeout_min: Duration::from_secs(1),
            append_pipeline: DEFAULT_APPEND_PIPELINE,
            commit_update_delay: Duration::from_millis(2),
            snapshot_bytes_per_sec: DEFAULT_SNAPSHOT_BYTES_PER_SEC,
            tls: None,
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

/// Default `TransportOptions::append_pipeline` (see `benchmarks.md`, "The write path").
pub const DEFAULT_APPEND_PIPELINE: usize = 8;

/// Default pace of outgoing snapshots (see `benchmarks.md`, "Growing a cluster").
pub const DEFAULT_SNAPSHOT_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

/// How many connections a peer may have opened that its link has not taken up yet.
const MAX_WAITING_OFFERS: usize = 4;

/// How long a connection may take to introduce itself, or to be answered.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The router's handle on one peer's link. Dropping it (at shutdown) closes both queues,
/// which ends the link's task and its connection.
struct Link {
    tx: mpsc::Sender<Outgoing>,
    offers: mpsc::Sender<Offer>,
    health: Arc<LinkHealth>,
}

/// What the router reads of a link's connection, written by the link's task.
struct LinkHealth {
    state: AtomicU8,
    last_error: Mutex<String>,
}

/// Sends requests to peers and answers theirs. Cheap to clone; one per node.
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
    /// Connections that came up, whichever node opened them.
    connections_up: AtomicU64,
    /// Set by `shutdown`: no connection is opened or taken up after it.
    closed: AtomicBool,
    /// Answers the peers' requests, once this node serves them (`serve`).
    /// Shared with every connection, which looks it up per request: connections opened
    /// before `serve` starts answer once it has. Cleared at shutdown (it holds the node's
    /// groups, which hold this router).
    responder: SharedResponder,
    /// Where connection tasks run.
    runtime: tokio::runtime::Handle,
    /// Outgoing snapshots: paced, and tracked for `cluster status`.
    snapshots: super::snapshots::SnapshotTraffic,
    counters: Arc<TransportCounters>,
}

/// What the transport counts, for INFO.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// AppendEntries this node received as a follower, with or without entries.
    pub append_entries_received: AtomicU64,
    /// Of those, the ones without entries (heartbeats and commit-index updates).
    pub append_entries_empty: AtomicU64,
    /// Of those, the ones answered with a conflict: the log before them did not match.
    /// A new leader's first request to each follower may be one; under steady writes
    /// there are none, unless requests overtake each other.
    pub append_entries_conflicts: AtomicU64,
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
                faults,
                links: Mutex::new(HashMap::new()),
                addrs: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                connections_up: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                responder: SharedResponder::default(),
                runtime,
                snapshots: super::snapshots::SnapshotTraffic::new(options.snapshot_bytes_per_sec),
                counters: Arc::default(),
                options,
            }),
        }
    }

    pub fn me(&self) -> u64 {
        self.inner.me
    }

    pub(super) fn snapshots(&self) -> &super::snapshots::SnapshotTraffic {
        &self.inner.snapshots
    }

    /// The snapshot this node is streaming to `target` for `group`, if any.
    pub fn snapshot_progress(
        &self,
        target: u64,
        group: ShardId,
    ) -> Option<super::TransferProgress> {
        self.inner.snapshots.progress(target, group)
    }

    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    pub fn counters(&self) -> &Arc<TransportCounters> {
        &self.inner.counters
    }

    pub(super) fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// Records (or changes) where `node` listens for peers.
    pub fn set_addr(&self, node: u64, addr: String) {
        self.inner
            .addrs
            .write()
            .expect("addrs lock")
            .insert(node, addr);
    }

    /// Records where `node` listens for peers unless an address is already known for it
    /// (that one stays); true when it was new. For nodes learned from a newer cluster map:
    /// from then on this node calls them and takes up the connections they open.
    pub fn learn_addr(&self, node: u64, addr: &str) -> bool {
        let mut addrs = self.inner.addrs.write().expect("addrs lock");
        if addrs.contains_key(&node) {
            return false;
        }
        addrs.insert(node, addr.to_string());
        true
    }

    /// Where `node` listens for peers, if known.
    /// Every node whose peer address this router knows, with it.
    pub fn addrs(&self) -> Vec<(u64, String)> {
        let addrs = self.inner.addrs.read().expect("addrs lock");
        addrs
            .iter()
            .map(|(node, addr)| (*node, addr.clone()))
            .collect()
    }

    pub fn addr(&self, node: u64) -> Option<String> {
        self.inner
            .addrs
            .read()
            .expect("addrs lock")
            .get(&node)
            .cloned()
    }

    pub(super) fn knows(&self, node: u64) -> bool {
        self.inner
            .addrs
            .read()
            .expect("addrs lock")
            .contains_key(&node)
    }

    /// Whether the connection to `node` is up (false while connecting or after a failure).
    pub fn is_connected(&self, node: u64) -> bool {
        self.inner
            .links
            .lock()
            .expect("links lock")
            .get(&node)
            .is_some_and(|l| l.health.state.load(Ordering::Relaxed) == UP)
    }

    /// Whether the last attempt to reach `node` failed and it is not connected again yet:
    /// calls to it fail at once until it is. False while a first connection is being made.
    pub fn is_down(&self, node: u64) -> bool {
        self.inner
            .links
            .lock()
            .expect("links lock")
            .get(&node)
            .is_some_and(|l| l.health.state.load(Ordering::Relaxed) == DOWN)
    }

    /// How many peer connections came up since start, whichever node opened them: one per
    /// peer plus one per reconnection.
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections_up.load(Ordering::Relaxed)
    }

    /// Closes every connection; calls waiting on them fail as lost, later calls as not
    /// sent. Peers see the connections close at once instead of waiting for silence.
    pub fn shutdown(&self) {
        let mut links = self.inner.links.lock().expect("links lock");
        self.inner.closed.store(true, Ordering::SeqCst);
        links.clear();
        *self.inner.responder.write().expect("responder lock") = None;
    }

    /// Sends `request` to `target`. The request is queued (and so ordered after every
    /// earlier call to the same peer) before this returns; the future waits for the answer
    /// for at most `timeout`.
    pub fn call(
        &self,
        target: u64,
        request: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, CallError>> + Send + use<> {
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

    /// Who answers the peers' requests now (none before `serve` or after shutdown).
    pub(super) fn responder(&self) -> Option<Arc<Responder>> {
        self.inner.responder.read().expect("responder lock").clone()
    }

    /// From here on the peers' requests are answered by `responder`; before, they are
    /// refused as "not serving yet".
    pub(super) fn set_responder(&self, responder: Arc<Responder>) {
        *self.inner.responder.write().expect("responder lock") = Some(responder);
    }

    /// Hands a connection `from` opened (its hello already checked) to the link to `from`,
    /// which adopts or refuses it.
    pub(super) fn offer(&self, from: u64, offer: Offer) {
        let link = {
            let mut links = self.inner.links.lock().expect("links lock");
            match links.get(&from) {
                Some(link) => link.clone(),
                None => {
                    // A link made for the peer's own connection takes it without dialing
                    // (after shutdown the connection is simply dropped).
                    self.new_link(&mut links, from, Some(offer));
                    return;
                }
            }
        };
        if let Err(e) = link.offers.try_send(offer) {
            let offer = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            tokio::spawn(refuse(
                offer,
                format!(
                    "node {} is busy taking up earlier connections from node {from}",
                    self.inner.me
                ),
            ));
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
        if link.health.state.load(Ordering::Relaxed) == DOWN {
            let why = link.health.last_error.lock().expect("error lock").clone();
            return Err(CallError::NotSent(format!(
                "node {target} is unreachable: {why}"
            )));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(&Frame::Request(RequestFrame { id, body: request }))
            .map_err(CallError::NotSent)?;
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
        if !self.knows(target) {
            return Err(CallError::NotSent(format!(
                "no peer address known for node {target}"
            )));
        }
        self.new_link(&mut links, target, None)
            .ok_or_else(|| CallError::NotSent("peer transport is shut down".into()))
    }

    /// A new link to `target`, or `None` once the router is shut down.
    fn new_link(
        &self,
        links: &mut HashMap<u64, Arc<Link>>,
        target: u64,
        first: Option<Offer>,
    ) -> Option<Arc<Link>> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.inner.options.max_queued_per_peer);
        let (offers, offers_rx) = mpsc::channel(MAX_WAITING_OFFERS);
        let health = Arc::new(LinkHealth {
            state: AtomicU8::new(CONNECTING),
            last_error: Mutex::new(String::new()),
        });
        let link = Arc::new(Link {
            tx,
            offers,
            health: health.clone(),
        });
        links.insert(target, link.clone());
        self.inner.runtime.spawn(run_link(
            Arc::downgrade(&self.inner),
            target,
            health,
            LinkQueues {
                calls: rx,
                offers: offers_rx,
                first,
            },
        ));
        Some(link)
    }
}

struct LinkQueues {
    calls: mpsc::Receiver<Outgoing>,
    offers: mpsc::Receiver<Offer>,
    /// A connection the peer opened before the link existed.
    first: Option<Offer>,
}

/// Keeps one connection to `target` alive while the router exists: adopts the peer's,
/// or opens one itself.
async fn run_link(
    router: std::sync::Weak<RouterInner>,
    target: u64,
    link: Arc<LinkHealth>,
    queues: LinkQueues,
) {
    let LinkQueues {
        mut calls,
        mut offers,
        first,
    } = queues;
    let mut next_offer = first;
    let mut backoff = Duration::ZERO;
    loop {
        let Some(inner) = router.upgrade() else {
            return;
        };
        let me = inner.me;
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
            from: me,
            to: target,
        };
        let connect_timeout = inner.options.connect_timeout;
        let tls = inner.options.tls.clone();
        let silence_timeout = inner.options.silence_timeout;
        let max_inflight = inner.options.max_inflight_per_connection;
        let responder = inner.responder.clone();
        drop(inner);
        let established = match next_offer.take() {
            Some(offer) => welcome(offer).await.map(|s| (s, Dialer::Peer)),
            None => {
                let dial = connect(&addr, &hello, tls.as_ref(), connect_timeout);
                tokio::pin!(dial);
                let dialed = loop {
                    tokio::select! {
                        dialed = &mut dial => break dialed,
                        offer = offers.recv() => {
                            let Some(offer) = offer else { return };
                            // Both connecting at once: the lower id's connection is kept.
                            if target < me {
                                break Ok(Dialed::Adopted(offer));
                            }
                            tokio::spawn(answer(offer, HelloReply::Crossed));
                        }
                    }
                };
                match dialed {
                    Ok(Dialed::Up(stream)) => Ok((stream, Dialer::Me)),
                    Ok(Dialed::Adopted(offer)) => welcome(offer).await.map(|s| (s, Dialer::Peer)),
                    Ok(Dialed::Crossed) => {
                        // The peer's own connection is on its way; calls stay queued.
                        let wait = tokio::time::timeout(connect_timeout, offers.recv());
                        match wait.await {
                            Ok(Some(offer)) => welcome(offer).await.map(|s| (s, Dialer::Peer)),
                            Ok(None) => return,
                            Err(_) => Err(format!(
                                "node {target} said it was connecting to node {me}, but its \
                                 connection did not come within {} ms",
                                connect_timeout.as_millis()
                            )),
                        }
                    }
                    Err(why) => Err(why),
                }
            }
        };
        let failure = match established {
            Ok((stream, dialer)) => {
                link.state.store(UP, Ordering::Relaxed);
                if let Some(inner) = router.upgrade() {
                    inner.connections_up.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(peer = target, ?dialer, "peer connection up");
                backoff = Duration::ZERO;
                let cx = ConnectionContext {
                    me,
                    peer: target,
                    dialer,
                    silence_timeout,
                    max_inflight,
                    responder,
                    calls: &mut calls,
                    offers: &mut offers,
                };
                match run_connection(stream, cx).await {
                    Ended::Shutdown => return,
                    Ended::Replaced(offer) => {
                        tracing::debug!(peer = target, "peer replaced its connection");
                        next_offer = Some(offer);
                        continue;
                    }
                    Ended::Failed(why) => {
                        tracing::info!(peer = target, %addr, error = %why, "peer connection lost");
                        why
                    }
                }
            }
            Err(why) => why,
        };
        *link.last_error.lock().expect("error lock") = failure.clone();
        link.state.store(DOWN, Ordering::Relaxed);
        backoff = (backoff * 2).clamp(min, max);
        // Fail what is queued now and what arrives while waiting: callers retry elsewhere
        // or later instead of waiting behind a dead peer. A connection from the peer ends
        // the wait at once.
        let deadline = tokio::time::sleep(backoff);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                offer = offers.recv() => match offer {
                    Some(offer) => {
                        next_offer = Some(offer);
                        break;
                    }
                    None => return,
                },
                out = calls.recv() => match out {
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

/// How a link's attempt to connect ended.
enum Dialed {
    /// This node's connection is up.
    Up(PeerStream),
    /// The peer opened one at the same time, and the peer's is kept.
    Adopted(Offer),
    /// The peer answered that its own connection, opened at the same time, is kept.
    Crossed,
}

/// Opens a connection to `addr` and introduces this node.
async fn connect(
    addr: &str,
    hello: &Hello,
    tls: Option<&shoal_tls::Tls>,
    timeout: Duration,
) -> Result<Dialed, String> {
    let attempt = async {
        let mut stream = dial(addr, tls).await?;
        write_frame(&mut stream, &encode(hello)?)
            .await
            .map_err(|e| format!("handshake with {addr} failed: {e}"))?;
        let reply = read_frame_within(&mut stream, MAX_HELLO_BYTES)
            .await
            .map_err(|e| format!("handshake with {addr} failed: {e}"))?
            .ok_or_else(|| format!("{addr} closed the connection during the handshake"))?;
        match decode::<HelloReply>(&reply)? {
            HelloReply::Welcome => Ok(Dialed::Up(stream)),
            HelloReply::Crossed => Ok(Dialed::Crossed),
            HelloReply::Refused(why) => Err(format!("{addr} refused the connection: {why}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
}

/// Asks node `addr` one administration question as a guest (a node that is not a member
/// yet, or does not know the cluster's members): `cluster_id` may be empty when the caller
/// does not know it; `tls` must be given when the cluster's peers use TLS. Returns the
/// answer's payload.
pub async fn guest_call(
    addr: &str,
    from: u64,
    cluster_id: &str,
    tls: Option<&shoal_tls::Tls>,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<bytes::Bytes, String> {
    let attempt = async {
        let mut stream = dial(addr, tls).await?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            from,
            to: super::wire::GUEST,
        };
        write_frame(&mut stream, &encode(&hello)?)
            .await
            .map_err(|e| format!("handshake with {addr} failed: {e}"))?;
        let reply = read_frame_within(&mut stream, MAX_HELLO_BYTES)
            .await
            .map_err(|e| format!("handshake with {addr} failed: {e}"))?
            .ok_or_else(|| format!("{addr} closed the connection during the handshake"))?;
        match decode::<HelloReply>(&reply)? {
            HelloReply::Welcome => {}
            HelloReply::Refused(why) => return Err(format!("{addr} refused: {why}")),
            HelloReply::Crossed => return Err(format!("{addr} answered out of turn")),
        }
        let request = super::wire::RequestFrame {
            id: 1,
            body: Request::Admin(payload),
        };
        write_frame(&mut stream, &encode(&super::wire::Frame::Request(request))?)
            .await
            .map_err(|e| format!("sending to {addr} failed: {e}"))?;
        let frame = read_frame_within(&mut stream, super::wire::MAX_FRAME_BYTES)
            .await
            .map_err(|e| format!("reading {addr}'s answer failed: {e}"))?
            .ok_or_else(|| format!("{addr} closed the connection before answering"))?;
        match decode::<super::wire::Frame>(&frame)? {
            super::wire::Frame::Response(super::wire::ResponseFrame {
                body: Ok(Response::Admin(answer)),
                ..
            }) => Ok(answer),
            super::wire::Frame::Response(super::wire::ResponseFrame { body: Err(e), .. }) => {
                Err(format!("{addr}: {e}"))
            }
            _ => Err(format!("{addr} answered with an unexpected message")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("{addr} did not answer within {} s", timeout.as_secs()))?
}

/// Takes up a connection the peer opened.
async fn welcome(offer: Offer) -> Result<PeerStream, String> {
    let mut stream = offer.stream;
    let reply = encode(&HelloReply::Welcome)?;
    tokio::time::timeout(HELLO_TIMEOUT, write_frame(&mut stream, &reply))
        .await
        .map_err(|_| "answering the peer's hello timed out".to_string())?
        .map_err(|e| format!("answering the peer's hello failed: {e}"))?;
    Ok(stream)
}

/// Turns down a connection the peer opened, telling it why.
pub(super) async fn refuse(offer: Offer, why: String) {
    answer(offer, HelloReply::Refused(why)).await
}

async fn answer(offer: Offer, reply: HelloReply) {
    let mut stream = offer.stream;
    if let Ok(reply) = encode(&reply) {
        let _ = tokio::time::timeout(HELLO_TIMEOUT, write_frame(&mut stream, &reply)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::wire::read_frame;
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
