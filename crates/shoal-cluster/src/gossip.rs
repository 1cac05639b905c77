//! Gossip: which peers are alive, and what each says about itself, spread over UDP by
//! chitchat (scuttlebutt anti-entropy with a phi-accrual failure detector).
//!
//! Every node publishes one key, `status`: its `NodeStatus` as JSON (addresses, the leaders
//! and applied indexes of its replicas, free disk, memory, the map epoch it knows). Each
//! round this node gossips with three peers, so news reaches everyone in O(log n) rounds
//! and a node's cost stays flat as the cluster grows, where asking every peer for its status
//! grew with the square of the cluster. Each round the service reads back every member's
//! liveness and status into `Peers` (routing hints, `cluster status`, the dead-node rules),
//! adopts a newer cluster map from a peer that knows one, and re-checks the disk quorums.
//!
//! Advisory only: the metadata group is the truth for membership, Raft for leadership.
//! The cluster id is checked on every gossip handshake (chitchat refuses another
//! cluster's), which keeps clusters on one network apart; it is not authentication. With
//! TLS, gossip rides the members' mutual-TLS peer connections instead of UDP
//! (`gossip_peer`), which is. A restarted node gossips under a new generation (its start time), so
//! peers never mistake its fresh heartbeat for an old one; for each node id only the
//! newest generation counts.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion, spawn_chitchat,
};
use shoal_core::Error;
use shoal_core::map::NodeStatus;
use shoal_raft::transport::{Faults, PeerRouter};
use shoal_storage::DiskSpace;
use tokio_util::sync::CancellationToken;

use crate::cluster_map::{MapCell, MapRx};
use crate::group::Groups;
use crate::handler::StatusSource;
use crate::peers::Peers;

/// A live peer whose heartbeat has not grown for this many rounds is suspect: the failure
/// detector has not given up on it yet, but it has gone quiet.
const SUSPECT_AFTER_ROUNDS: u32 = 4;

/// The one key every node publishes.
pub(crate) const STATUS_KEY: &str = "status";

/// How this node gossips (`--gossip-addr`, and tunables for tests and simulations).
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// UDP address to gossip on; `None`: the peer address (same host and port, UDP).
    pub addr: Option<String>,
    /// How often this node starts a gossip round (with three peers).
    pub interval: Duration,
    /// The failure detector's threshold: a peer is down once the time since its last
    /// heartbeat exceeds this many mean heartbeat intervals (chitchat's phi).
    pub phi_threshold: f64,
}

impl Default for GossipOptions {
    fn default() -> Self {
        Self {
            addr: None,
            interval: Duration::from_millis(250),
            phi_threshold: 8.0,
        }
    }
}

/// chitchat's configuration for node `me` of `cluster_id`, listening (and advertised) on
/// `listen`, introduced to the cluster by `seeds`.
pub fn chitchat_config(
    me: u64,
    generation: u64,
    cluster_id: &str,
    listen: SocketAddr,
    seeds: Vec<String>,
    options: &GossipOptions,
) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: ChitchatId::new(me.to_string(), generation, listen),
        cluster_id: cluster_id.to_string(),
        gossip_interval: options.interval,
        listen_addr: listen,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: options.phi_threshold,
            // The prior mean heartbeat interval: chitchat's default (5 s) would make a
            // young cluster take ~40 s to notice a death; one round is what it observes.
            initial_interval: options.interval,
            // Dead generations stop being gossiped after half of this and are forgotten
            // after all of it, so restarts do not grow every digest for a day.
            dead_node_grace_period: Duration::from_secs(3600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        // Digests compressed: every node starts on this version, so all can decode it.
        protocol_version: ProtocolVersion::V1,
    }
}

/// Resolves a `host:port` to the first socket address it names.
pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr, Error> {
    tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "cannot resolve gossip address {addr} (--gossip-addr, or --peer-addr)"
            ))
        })
}

/// What gossip travels over.
pub(crate) struct Carrier {
    /// Gossip with the peers fault injection cuts off is dropped.
    pub faults: Faults,
    /// With TLS: the peer transport, and where it delivers gossip.
    pub over_peers: Option<(PeerRouter, crate::gossip_peer::GossipInbox)>,
}

/// Starts gossiping: binds the UDP socket (an error names the flag), or with `over_peers`
/// (TLS) rides the peer transport, and joins through `seeds` (the members' peer addresses).
pub(crate) async fn start(
    me: u64,
    cluster_id: &str,
    listen: SocketAddr,
    seeds: Vec<String>,
    options: &GossipOptions,
    carrier: Carrier,
    first: &NodeStatus,
) -> Result<(ChitchatHandle, AddressBook), Error> {
    let Carrier { faults, over_peers } = carrier;
    let generation = crate::clock::now_ms();
    let config = chitchat_config(me, generation, cluster_id, listen, seeds, options);
    let book = AddressBook::default();
    let status = serde_json::to_string(first).map_err(|e| Error::Internal(e.to_string()))?;
    let initial = vec![(STATUS_KEY.to_string(), status)];
    let spawned = match over_peers {
        Some((router, inbox)) => {
            let transport = crate::gossip_peer::PeerGossip {
                router,
                inbox,
                book: book.clone(),
                faults,
            };
            spawn_chitchat(config, initial, &transport).await
        }
        None => {
            let transport = FaultyUdp {
                faults,
                book: book.clone(),
            };
            spawn_chitchat(config, initial, &transport).await
        }
    };
    let handle = spawned.map_err(|e| {
        Error::Invalid(format!(
            "cannot gossip on {listen}/udp: {e:#}; free the port or pick another with \
                 --gossip-addr"
        ))
    })?;
    Ok((handle, book))
}

/// Which node gossips from which address: lets fault injection drop gossip with the
/// peers it cuts off, as it drops their peer connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressBook(Arc<RwLock<HashMap<SocketAddr, u64>>>);

impl AddressBook {
    pub(crate) fn node_at(&self, addr: &SocketAddr) -> Option<u64> {
        self.0.read().expect("address book").get(addr).copied()
    }

    pub(crate) fn learn(&self, addr: SocketAddr, node: u64) {
        let known = self.0.read().expect("address book").get(&addr) == Some(&node);
        if !known {
            self.0.write().expect("address book").insert(addr, node);
        }
    }
}

/// UDP, minus the datagrams to and from peers that fault injection cuts off.
struct FaultyUdp {
    faults: Faults,
    book: AddressBook,
}

#[async_trait]
impl Transport for FaultyUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(FaultySocket {
            inner: UdpTransport.open(listen_addr).await?,
            faults: self.faults.clone(),
            book: self.book.clone(),
        }))
    }
}

struct FaultySocket {
    inner: Box<dyn Socket>,
    faults: Faults,
    book: AddressBook,
}

impl FaultySocket {
    fn cut(&self, addr: &SocketAddr) -> bool {
        self.book
            .node_at(addr)
            .is_some_and(|node| self.faults.is_blocked(node))
    }
}

#[async_trait]
impl Socket for FaultySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if self.cut(&to) {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let got = self.inner.recv().await?;
            if !self.cut(&got.from_addr) {
                return Ok(got);
            }
        }
    }
}

/// One member as gossip sees it: alive or not, and its last published status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heard {
    pub live: bool,
    /// Its heartbeat counter, which grows while it gossips.
    pub heartbeat: u64,
    pub status: Option<NodeStatus>,
    pub addr: SocketAddr,
}

/// Every node id's newest generation in `chitchat`, with its liveness and status.
pub(crate) fn members(chitchat: &chitchat::Chitchat) -> BTreeMap<u64, Heard> {
    let live: std::collections::BTreeSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut newest: BTreeMap<u64, &ChitchatId> = BTreeMap::new();
    for id in chitchat.node_states().keys() {
        let Ok(node) = id.node_id.parse::<u64>() else {
            continue;
        };
        match newest.get(&node) {
            Some(seen) if seen.generation_id >= id.generation_id => {}
            _ => {
                newest.insert(node, id);
            }
        }
    }
    newest
        .into_iter()
        .map(|(node, id)| {
            let state = chitchat.node_state(id);
            let status = state
                .and_then(|s| s.get(STATUS_KEY))
                .and_then(|json| serde_json::from_str(json).ok());
            let heard = Heard {
                live: live.contains(&id),
                heartbeat: state.map_or(0, |s| u64::from(s.heartbeat())),
                status,
                addr: id.gossip_advertise_addr,
            };
            (node, heard)
        })
        .collect()
}

/// The service: publishes this node's status and reads everyone's, each round.
pub(crate) struct GossipService {
    pub me: u64,
    pub handle: ChitchatHandle,
    pub book: AddressBook,
    pub source: StatusSource,
    pub interval: Duration,
    /// The cluster map: its members are the nodes `Peers` tracks.
    pub map: MapRx,
    /// Where a newer map learned from a peer goes.
    pub cell: Arc<MapCell>,
    pub router: PeerRouter,
    pub peers: Arc<Peers>,
    pub groups: Arc<Groups>,
    pub disk: Arc<DiskSpace>,
}

impl GossipService {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if cancel.run_until_cancelled(self.round()).await.is_none() {
                break;
            }
        }
        if let Err(e) = self.handle.shutdown().await {
            tracing::debug!(error = %e, "gossip did not stop cleanly");
        }
    }

    async fn round(&self) {
        let status = self.source.status();
        let json = serde_json::to_string(&status).unwrap_or_default();
        let heard = self
            .handle
            .with_chitchat(|chitchat| {
                chitchat.self_node_state().set(STATUS_KEY, &json);
                members(chitchat)
            })
            .await;
        let map = self.map.borrow().clone();
        let mut newest: Option<(u64, u64)> = None;
        for (node, heard) in heard {
            if node == self.me {
                continue;
            }
            self.book.learn(heard.addr, node);
            if map.node(node).is_none() {
                continue;
            }
            self.peers.set_live(node, heard.live);
            self.peers
                .heartbeat(node, heard.heartbeat, self.interval * SUSPECT_AFTER_ROUNDS);
            if let Some(status) = heard.status.filter(|_| heard.live) {
                if newest.is_none_or(|(_, e)| status.map_epoch > e) {
                    newest = Some((node, status.map_epoch));
                }
                self.peers.record(node, status);
            }
        }
        // A peer knows a newer map (this node has no metadata replica, or its replica
        // lags): ask that peer for it.
        if let Some((peer, epoch)) = newest
            && epoch > self.cell.current().epoch
        {
            adopt_map_of(&self.router, &self.cell, peer, epoch, self.interval * 4).await;
        }
        crate::disk_guard::check_quorums(self.me, self.disk.status(), &self.groups, &self.peers);
    }
}

/// Asks `peer` for its cluster map (epoch `epoch`) and offers it to `cell`.
async fn adopt_map_of(
    router: &PeerRouter,
    cell: &MapCell,
    peer: u64,
    epoch: u64,
    timeout: Duration,
) {
    use shoal_raft::transport::wire::{Request, Response};
    let ask = Request::Admin(crate::admin::encode(&crate::admin::AdminRequest::Map));
    if let Ok(Response::Admin(answer)) = router.call(peer, ask, timeout).await
        && let Ok(Ok(crate::admin::AdminReply::Map(map))) =
            crate::admin::decode::<Result<crate::admin::AdminReply, Error>>(&answer)
        && cell.offer(map)
    {
        tracing::info!(
            epoch,
            from = peer,
            "adopted a newer cluster map from a peer"
        );
    }
}
