//! The peer protocol's messages and framing.
//!
//! A connection opens with a `Hello` (protocol version, cluster id, who is calling whom),
//! answered by a `HelloReply`. From then on it carries `Frame`s both ways: either node
//! sends `RequestFrame`s and the other answers each with a `ResponseFrame` carrying the
//! same id, in any order. Every frame is a 4-byte little-endian length followed by that
//! many bytes of postcard.

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_core::map::NodeStatus;
use shoal_core::{Command, Consistency, Error, Reply, ShardId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::types::{SnapshotMeta, TypeConfig, Vote};

/// Bumped on any incompatible change to these messages.
pub const PROTOCOL_VERSION: u32 = 8;

/// The `to` of a guest's hello: a node that is not a member yet (it asks to join, or a
/// restarted node asks for the cluster map). A guest connection carries one `Admin`
/// request of at most [`MAX_GUEST_REQUEST_BYTES`] and its answer, then closes.
pub const GUEST: u64 = 0;

/// Largest request a guest may send.
pub const MAX_GUEST_REQUEST_BYTES: usize = 64 * 1024;

/// Largest frame either side accepts. An AppendEntries carries at most
/// `MAX_PAYLOAD_ENTRIES` entries of at most one 8 MiB value each (or 4 MiB of batched
/// writes), so this bounds the worst case with room for keys and framing.
pub const MAX_FRAME_BYTES: usize = 288 * 1024 * 1024;

/// Largest hello or hello reply: a caller that has not yet said who it is gets no more.
pub const MAX_HELLO_BYTES: usize = 4 * 1024;

/// Bytes set aside for a frame before its bytes arrive; the buffer grows as they do, so a
/// length prefix alone (a caller that sends 4 bytes and stalls) costs this, not the length.
const FRAME_START_CAPACITY: usize = 64 * 1024;

/// Entries per AppendEntries (openraft's `max_payload_entries`), chosen with
/// `MAX_FRAME_BYTES`.
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;

/// First frame of a connection, from the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub cluster_id: String,
    pub from: u64,
    pub to: u64,
}

/// The callee's answer to `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome,
    Refused(String),
    /// The callee is opening a connection to the caller at this very moment, and that
    /// one is kept (the lower id's): the caller waits for it instead of failing.
    Crossed,
}

/// What follows the handshake, in either direction: one connection carries both nodes'
/// requests and both nodes' answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame {
    Request(RequestFrame),
    Response(ResponseFrame),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub body: Request,
}

/// One piece of a snapshot being streamed to a replica. Chunks of one snapshot are sent
/// one at a time, in order; the last has `done` set and installs the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub group: ShardId,
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Bytes,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    AppendEntries {
        group: ShardId,
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    Vote {
        group: ShardId,
        rpc: VoteRequest<TypeConfig>,
    },
    PreVote {
        group: ShardId,
        rpc: VoteRequest<TypeConfig>,
    },
    Snapshot(SnapshotChunk),
    /// A client command for one shard, run by the callee without forwarding it further.
    Forward {
        shard: ShardId,
        command: Command,
        consistency: Consistency,
    },
    /// The callee's addresses, liveness and the shards it leads.
    Status,
    /// A leader hands `group` over to `req`'s target (sent to every voter: the target
    /// campaigns at once, the others drop their lease on the old leader so they vote).
    TransferLeader {
        group: ShardId,
        req: TransferLeaderRequest<TypeConfig>,
    },
    /// A cluster administration request (join, remove a node, change a group's members,
    /// fetch the map): opaque here, encoded and answered by the cluster layer.
    Admin(Bytes),
    /// A gossip message (clusters with TLS carry gossip over these mutually authenticated
    /// connections instead of UDP): opaque here, handed to the cluster layer.
    Gossip(Bytes),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    /// `Some` once the last chunk is installed.
    Snapshot(Option<SnapshotResponse<TypeConfig>>),
    Forward(Result<Reply, Error>),
    Status(NodeStatus),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Admin(Bytes),
    /// Taken (gossip is answered by gossip, not by this).
    Gossip,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    /// `Err` when the callee could not handle the request at all (group not open here,
    /// partitioned by fault injection, ...).
    pub body: Result<Response, String>,
}

/// Encodes `value` as one frame: length prefix and postcard bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(value, std::mem::take(&mut buf))
        .map_err(|e| format!("cannot encode peer message: {e}"))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(format!(
            "peer message of {len} bytes is over the {MAX_FRAME_BYTES}-byte frame limit"
        ));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("malformed peer message: {e}"))
}

/// Read buffer of a peer connection: frames that arrive together are read with one call.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Reads one frame's payload, of at most [`MAX_FRAME_BYTES`]. `Ok(None)` at a clean end of
/// stream.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    read_frame_within(reader, MAX_FRAME_BYTES).await
}

/// Reads one frame's payload of at most `max` bytes (the hello's is [`MAX_HELLO_BYTES`]).
/// Memory follows the bytes that actually arrive, not the length the sender announced.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes is over the {max}-byte limit"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(FRAME_START_CAPACITY));
    let read = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await?;
    if read < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the peer closed the connection {read} bytes into a {len}-byte frame"),
        ));
    }
    Ok(Some(buf))
}

/// Writes one already-encoded frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::raft::AppendEntriesRequest;
    use shoal_core::{Condition, Expiry, WriteOp};

    fn roundtrip<T: Serialize + DeserializeOwned>(value: &T) -> T {
        let frame = encode(value).unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        decode(&frame[4..]).unwrap()
    }

    #[test]
    fn raft_messages_roundtrip() {
        let vote = Vote::new(3, 2);
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let frame = RequestFrame {
            id: 7,
            body: Request::AppendEntries { group: 4, rpc },
        };
        let back = roundtrip(&frame);
        assert_eq!(back.id, 7);
        let Request::AppendEntries { group, rpc } = back.body else {
            panic!("wrong variant")
        };
        assert_eq!(group, 4);
        assert_eq!(rpc.vote, vote);
    }

    #[test]
    fn forwarded_commands_and_replies_roundtrip() {
        let command = Command::Write(WriteOp::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            condition: Condition::IfVersion(9),
            expiry: Expiry::Clear,
            return_old: true,
        });
        let req = RequestFrame {
            id: 1,
            body: Request::Forward {
                shard: 2,
                command: command.clone(),
                consistency: Consistency::Stale,
            },
        };
        let Request::Forward { command: back, .. } = roundtrip(&req).body else {
            panic!("wrong variant")
        };
        assert_eq!(back, command);
        let resp = ResponseFrame {
            id: 1,
            body: Ok(Response::Forward(Err(Error::NotLeader {
                shard: 2,
                leader: 3,
            }))),
        };
        let back = roundtrip(&resp);
        assert!(matches!(
            back.body,
            Ok(Response::Forward(Err(Error::NotLeader {
                shard: 2,
                leader: 3
            })))
        ));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_allocating() {
        let mut bytes = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let err = read_frame(&mut bytes.as_slice()).await.unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");
    }

    #[tokio::test]
    async fn a_announced_length_costs_only_the_bytes_that_arrive() {
        // 200 MiB announced, 10 bytes sent: the buffer holds what came, then the read fails.
        let mut bytes = (200u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[7; 10]);
        let err = read_frame(&mut bytes.as_slice()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string()
                .contains("10 bytes into a 209715200-byte frame"),
            "{err}"
        );
        // A hello over its own limit is refused from the length alone.
        let mut hello = ((MAX_HELLO_BYTES + 1) as u32).to_le_bytes().to_vec();
        hello.extend_from_slice(&[0; 16]);
        let err = read_frame_within(&mut hello.as_slice(), MAX_HELLO_BYTES)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("over the 4096-byte limit"),
            "{err}"
        );
        // A whole frame arrives whole, however it is split.
        let frame = encode(&Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "c".into(),
            from: 1,
            to: 2,
        })
        .unwrap();
        let payload = read_frame_within(&mut frame.as_slice(), MAX_HELLO_BYTES)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decode::<Hello>(&payload).unwrap().to, 2);
    }

    #[tokio::test]
    async fn clean_eof_is_not_an_error_but_a_torn_frame_is() {
        assert!(read_frame(&mut &[][..]).await.unwrap().is_none());
        let torn = [10u8, 0, 0, 0, 1, 2];
        assert!(read_frame(&mut &torn[..]).await.is_err());
    }
}
