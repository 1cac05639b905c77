//! Writes the structured seeds of the fuzz corpora: real encoded peer frames, Raft entries,
//! snapshot chunks and snapshot files, prefixed with each target's selector byte. The text
//! seeds (RESP, HTTP) are plain files written by hand.
//!
//! `cargo +nightly run --example seeds` (from `fuzz/`); it only adds files.

use std::path::Path;

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use shoal_core::{Command, Condition, Consistency, Error, Expiry, Reply, WriteOp};
use shoal_raft::transport::wire::{
    self, Frame, Hello, HelloReply, Request, RequestFrame, Response, ResponseFrame, SnapshotChunk,
};
use shoal_raft::{ShardRequest, TypeConfig};
use shoal_storage::{DataChange, Engine, EngineOptions};

type Entry = openraft::alias::EntryOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;
type Vote = openraft::alias::VoteOf<TypeConfig>;

fn write(target: &str, name: &str, selector: &[u8], body: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), [selector, body].concat()).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        openraft::vote::leader_id_adv::CommittedLeaderId { term, node_id: 1 },
        index,
    )
}

fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::Put {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        condition: Condition::IfVersion(3),
        expiry: Expiry::AfterMillis(5000),
        return_old: true,
    }
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::new_blank(log_id(1, 1)),
        Entry::new_normal(
            log_id(2, 7),
            ShardRequest {
                now_ms: 1_700_000_000_000,
                ops: vec![
                    put("user:{1}", "alice"),
                    WriteOp::Delete {
                        keys: vec![Bytes::from_static(b"old")],
                        if_version: None,
                    },
                    WriteOp::IncrBy {
                        key: Bytes::from_static(b"counter"),
                        delta: -5,
                    },
                ],
            },
        ),
    ]
}

fn main() {
    let payload = |v: &dyn erased::Encode| v.encode_payload();
    // peer_frame: selector 0 Hello, 1 HelloReply, 2 Frame, 3 a stream (cut count 0 or 3).
    let hello = Hello {
        version: wire::PROTOCOL_VERSION,
        cluster_id: "e12e6b7db5381a70".into(),
        from: 1,
        to: 2,
    };
    write("peer_frame", "hello", &[0, 0], &payload(&hello));
    for (i, reply) in [
        HelloReply::Welcome,
        HelloReply::Refused("cluster id mismatch".into()),
        HelloReply::Crossed,
    ]
    .iter()
    .enumerate()
    {
        write(
            "peer_frame",
            &format!("hello-reply-{i}"),
            &[1, 0],
            &payload(reply),
        );
    }
    let vote = Vote::new(3, 2);
    let frames = vec![
        Frame::Request(RequestFrame {
            id: 1,
            body: Request::AppendEntries {
                group: 4,
                rpc: AppendEntriesRequest::<TypeConfig> {
                    vote,
                    prev_log_id: Some(log_id(2, 6)),
                    entries: entries(),
                    leader_commit: Some(log_id(2, 6)),
                },
            },
        }),
        Frame::Request(RequestFrame {
            id: 2,
            body: Request::Vote {
                group: 0,
                rpc: VoteRequest::<TypeConfig>::new(vote, Some(log_id(2, 9))),
            },
        }),
        Frame::Request(RequestFrame {
            id: 3,
            body: Request::Forward {
                shard: 2,
                command: Command::Write(put("k", "v")),
                consistency: Consistency::Linearizable,
            },
        }),
        Frame::Request(RequestFrame {
            id: 4,
            body: Request::Status,
        }),
        Frame::Request(RequestFrame {
            id: 5,
            body: Request::Snapshot(chunk()),
        }),
        Frame::Response(ResponseFrame {
            id: 3,
            body: Ok(Response::Forward(Err(Error::NotLeader {
                shard: 2,
                leader: 3,
            }))),
        }),
        Frame::Response(ResponseFrame {
            id: 3,
            body: Ok(Response::Forward(Ok(Reply::Count(7)))),
        }),
        Frame::Response(ResponseFrame {
            id: 9,
            body: Err("group 9 is not open here".into()),
        }),
    ];
    let mut stream = wire::encode(&hello).unwrap();
    for (i, frame) in frames.iter().enumerate() {
        write(
            "peer_frame",
            &format!("frame-{i}"),
            &[2, 0],
            &payload(frame),
        );
        stream.extend(wire::encode(frame).unwrap());
    }
    write("peer_frame", "stream", &[3, 0], &stream);
    write("peer_frame", "stream-trickled", &[3, 3, 1, 7, 200], &stream);
    let mut torn = wire::encode(&hello).unwrap();
    torn.extend(&wire::encode(&frames[0]).unwrap()[..20]);
    write("peer_frame", "stream-torn", &[3, 2, 3, 5], &torn);

    // raft_entry: 0 Entry, 1 SnapshotChunk, 2 Vote, 3 LogId, 4 snapshot file.
    for (i, entry) in entries().iter().enumerate() {
        write(
            "raft_entry",
            &format!("entry-{i}"),
            &[0],
            &postcard::to_allocvec(entry).unwrap(),
        );
    }
    write(
        "raft_entry",
        "chunk",
        &[1],
        &postcard::to_allocvec(&chunk()).unwrap(),
    );
    write(
        "raft_entry",
        "vote",
        &[2],
        &postcard::to_allocvec(&vote).unwrap(),
    );
    write(
        "raft_entry",
        "log-id",
        &[3],
        &postcard::to_allocvec(&log_id(7, 42)).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        &EngineOptions {
            min_free_bytes: 0,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    for (n, name) in [(0u64, "snapshot-empty"), (3, "snapshot-3-keys")] {
        let changes: Vec<DataChange> = (0..n)
            .map(|i| DataChange::Put {
                key: Bytes::from(format!("k{i}")),
                old_expire: None,
                record: shoal_core::Record {
                    value: Bytes::from(format!("v{i}")),
                    version: i + 1,
                    expire_at: (i == 1).then_some(2_000_000_000_000),
                },
            })
            .collect();
        engine.apply_changes(n as u32 + 1, &changes, &[]).unwrap();
        let path = dir.path().join(name);
        engine.export_group(n as u32 + 1, &path, b'a').unwrap();
        write("raft_entry", name, &[4], &std::fs::read(&path).unwrap());
    }
    engine.close().unwrap();
}

fn chunk() -> SnapshotChunk {
    SnapshotChunk {
        group: 3,
        vote: Vote::new(3, 2),
        meta: Default::default(),
        offset: 0,
        data: Bytes::from_static(b"SHOALSN1\x02\x00\x00\x00k1"),
        done: false,
    }
}

mod erased {
    /// Postcard payload of a message, without the frame's length prefix.
    pub trait Encode {
        fn encode_payload(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode_payload(&self) -> Vec<u8> {
            postcard::to_allocvec(self).unwrap()
        }
    }
}
