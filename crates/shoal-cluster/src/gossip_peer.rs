//! Gossip over the peer transport, for clusters with TLS: chitchat's messages travel as
//! `Request::Gossip` on the members' mutual-TLS connections instead of as plaintext UDP,
//! so only a cluster member can speak gossip, and nobody on the network can read it or
//! forge a member's liveness or addresses.
//!
//! chitchat 0.13 keeps its message codec to itself; its UDP socket is the only public way
//! to turn a message into bytes and back. So each node runs chitchat's own UDP socket on
//! a loopback port as a codec, next to a relay socket on another: a message to send is
//! sent by the codec socket to the relay, which takes its bytes off the loopback and hands
//! them to the router; bytes received from a peer are sent by the relay to the codec
//! socket, which decodes them. Only datagrams from the relay are taken.
//!
//! A chitchat socket addresses peers by their gossip address; each message carries the
//! sender's, and the receiver learns which node (authenticated by its certificate) stands
//! behind it. A seed's address is matched against the peer addresses the router knows.
//! Sending never waits on the peer: a message is handed to the router and forgotten, as
//! a datagram would be, and at most `MAX_IN_FLIGHT` are outstanding.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use shoal_raft::transport::wire::Request;
use shoal_raft::transport::{Faults, PeerRouter};
use tokio::sync::{Semaphore, mpsc};

use crate::gossip::AddressBook;

/// Gossip messages received and not yet read by chitchat; more are dropped (as a full UDP
/// receive buffer would).
const INBOX: usize = 256;
/// Gossip messages sent and not yet answered; more are dropped.
const MAX_IN_FLIGHT: usize = 64;
/// How long a gossip message may wait for its peer.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a datagram may take across the loopback codec before it is given up on.
const CODEC_TIMEOUT: Duration = Duration::from_millis(200);
/// Largest datagram chitchat makes (its UDP payload limit).
const MAX_DATAGRAM: usize = 65_507;

/// Gossip messages from members: who sent it, and what.
type Inbound = mpsc::Receiver<(u64, Bytes)>;

/// Where the peer transport delivers gossip messages until chitchat reads them.
#[derive(Clone)]
pub(crate) struct GossipInbox {
    tx: mpsc::Sender<(u64, Bytes)>,
    rx: Arc<Mutex<Option<Inbound>>>,
}

impl Default for GossipInbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(INBOX);
        Self {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl GossipInbox {
    /// Takes a message from member `from` (never waits).
    pub(crate) fn deliver(&self, from: u64, payload: Bytes) {
        let _ = self.tx.try_send((from, payload));
    }

    fn take(&self) -> Option<Inbound> {
        self.rx.lock().expect("inbox lock").take()
    }
}

/// chitchat's transport over the peer router.
pub(crate) struct PeerGossip {
    pub router: PeerRouter,
    pub inbox: GossipInbox,
    pub book: AddressBook,
    pub faults: Faults,
}

#[async_trait]
impl Transport for PeerGossip {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inbox = self
            .inbox
            .take()
            .ok_or_else(|| anyhow::anyhow!("gossip over the peer transport opened twice"))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let codec = UdpSocket::open(loopback).await?;
        let relay = tokio::net::UdpSocket::bind(loopback).await?;
        Ok(Box::new(PeerSocket {
            me: listen_addr,
            router: self.router.clone(),
            inbox,
            book: self.book.clone(),
            faults: self.faults.clone(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            codec_addr: codec.local_addr()?,
            codec,
            relay_addr: relay.local_addr()?,
            relay,
            relay_buf: vec![0u8; MAX_DATAGRAM],
            injected: VecDeque::new(),
        }))
    }
}

struct PeerSocket {
    me: SocketAddr,
    router: PeerRouter,
    inbox: Inbound,
    book: AddressBook,
    faults: Faults,
    in_flight: Arc<Semaphore>,
    /// chitchat's own UDP socket on loopback, used only to encode and decode.
    codec: UdpSocket,
    codec_addr: SocketAddr,
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    relay_buf: Vec<u8>,
    /// The senders of the datagrams handed to the codec and not yet read back, in order.
    injected: VecDeque<SocketAddr>,
}

impl PeerSocket {
    /// The member at gossip address `to`: known from its messages, or a seed's peer address.
    async fn node_at(&self, to: SocketAddr) -> Option<u64> {
        if let Some(node) = self.book.node_at(&to) {
            return Some(node);
        }
        for (node, addr) in self.router.addrs() {
            let Ok(mut resolved) = tokio::net::lookup_host(addr.as_str()).await else {
                continue;
            };
            if resolved.any(|a| a == to) {
                self.book.learn(to, node);
                return Some(node);
            }
        }
        None
    }
}

/// A message: the sender's gossip address (length-prefixed text), then the datagram.
fn encode(from: SocketAddr, datagram: &[u8]) -> Bytes {
    let addr = from.to_string();
    let mut buf = BytesMut::with_capacity(2 + addr.len() + datagram.len());
    buf.put_u16_le(addr.len() as u16);
    buf.put_slice(addr.as_bytes());
    buf.put_slice(datagram);
    buf.freeze()
}

fn decode(payload: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let len = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let addr = std::str::from_utf8(payload.get(2..2 + len)?)
        .ok()?
        .parse()
        .ok()?;
    let datagram = payload.get(2 + len..)?;
    (!datagram.is_empty() && datagram.len() <= MAX_DATAGRAM).then_some((addr, datagram))
}

impl PeerSocket {
    /// `envelope` as chitchat puts it on the wire.
    async fn encode_envelope(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.codec.send(self.relay_addr, envelope).await?;
        loop {
            let (n, from) =
                tokio::time::timeout(CODEC_TIMEOUT, self.relay.recv_from(&mut self.relay_buf))
                    .await
                    .map_err(|_| anyhow::anyhow!("the loopback gossip codec did not answer"))??;
            if from == self.codec_addr {
                return Ok(self.relay_buf[..n].to_vec());
            }
        }
    }
}

#[async_trait]
impl Socket for PeerSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.me)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let dropped = SendOutcome { num_bytes_sent: 0 };
        let Some(node) = self.node_at(to).await else {
            return Ok(dropped);
        };
        if self.faults.is_blocked(node) {
            return Ok(dropped);
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return Ok(dropped);
        };
        let datagram = match self.encode_envelope(envelope).await {
            Ok(datagram) => datagram,
            Err(err) => {
                tracing::debug!(%err, "dropped a gossip message");
                return Ok(dropped);
            }
        };
        let payload = encode(self.me, &datagram);
        let num_bytes_sent = payload.len();
        let call = self
            .router
            .call(node, Request::Gossip(payload), SEND_TIMEOUT);
        tokio::spawn(async move {
            let _ = call.await;
            drop(permit);
        });
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe, as chitchat needs: the awaits are the inbox and the codec socket, and
    /// what was handed to the codec stays queued in it (and in `injected`) until read.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if !self.injected.is_empty() {
                match tokio::time::timeout(CODEC_TIMEOUT, self.codec.recv()).await {
                    Ok(got) => {
                        let got = got?;
                        if got.from_addr != self.relay_addr {
                            continue; // not ours: only the relay speaks to the codec
                        }
                        let from_addr = self.injected.pop_front().expect("not empty");
                        return Ok(RecvOutcome { from_addr, ..got });
                    }
                    // A datagram the codec refused: the queue no longer lines up.
                    Err(_) => {
                        self.injected.clear();
                        continue;
                    }
                }
            }
            let Some((node, payload)) = self.inbox.recv().await else {
                return Err(anyhow::anyhow!("the peer transport stopped"));
            };
            if self.faults.is_blocked(node) {
                continue;
            }
            let Some((from_addr, datagram)) = decode(&payload) else {
                tracing::debug!(node, "dropped a gossip message that does not decode");
                continue;
            };
            self.book.learn(from_addr, node);
            // Not awaited, so a cancelled recv never loses track of what it handed over.
            if self.relay.try_send_to(datagram, self.codec_addr).is_ok() {
                self.injected.push_back(from_addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_sender_and_carries_the_datagram() {
        let from: SocketAddr = "10.0.0.7:7000".parse().unwrap();
        let payload = encode(from, b"datagram");
        assert_eq!(decode(&payload), Some((from, &b"datagram"[..])));
        assert!(decode(&payload[..3]).is_none(), "a torn message is dropped");
        assert!(
            decode(&encode(from, b"")).is_none(),
            "an empty datagram is dropped"
        );
        assert!(decode(b"\xff\xff").is_none());
    }
}
