//! What Raft stores and streams, decoded from bytes a damaged disk or a peer could hand us:
//! a log entry as the log store keeps it (postcard `Entry`), the vote and purge point kept
//! beside it, a streamed `SnapshotChunk`, and a snapshot file as `import_group` reads it.
//!
//! Input layout: byte 0 picks the decoder, the rest is its input.
//!
//! Properties: no panic; whatever decodes re-encodes to bytes that decode to the same value
//! (compared in encoded form); a snapshot file is either installed whole or refused with an
//! error before the install begins (the whole file is checked first), never half-installed.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_raft::TypeConfig;
use shoal_raft::transport::wire::SnapshotChunk;
use shoal_storage::{Engine, EngineOptions};

type Entry = openraft::alias::EntryOf<TypeConfig>;
type Vote = openraft::alias::VoteOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;

/// Decodes `bytes` as a `T` the way the log store does; if that works, checks the value
/// survives re-encoding.
fn decode_checked<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = postcard::from_bytes(bytes).ok()?;
    let encoded = postcard::to_allocvec(&value).expect("a decoded value encodes");
    let again: T = postcard::from_bytes(&encoded).expect("a re-encoded value decodes");
    assert_eq!(
        postcard::to_allocvec(&again).expect("encodes"),
        encoded,
        "encoding is not stable"
    );
    Some(value)
}

/// One engine for every snapshot import (opening one per input would dominate the run),
/// on tmpfs where there is one so the import's fsyncs cost little.
fn engine() -> &'static (Engine, tempfile::TempDir) {
    static ENGINE: OnceLock<(Engine, tempfile::TempDir)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let options = EngineOptions {
            cache_bytes: 1 << 20,
            record_cache_bytes: 1 << 20,
            min_free_bytes: 0,
            ..EngineOptions::default()
        };
        let engine = Engine::open(dir.path(), &options).expect("open engine");
        (engine, dir)
    })
}

fn import_snapshot(file: &[u8]) {
    // A fresh group each time, so one input's outcome cannot hide another's.
    static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);
    let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    let (engine, dir) = engine();
    let path = dir.path().join("fuzzed.snap");
    std::fs::write(&path, file).expect("write snapshot file");
    let result = engine.import_group(group, &path, &[(b'a', b"applied".to_vec())]);
    let marked = engine.install_interrupted(group).expect("read meta");
    match result {
        Ok(_) => assert!(!marked, "an installed snapshot left the group marked"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            // The whole file is checked before the install begins, so a refused file never
            // touched the group (an I/O failure mid-install would leave it marked, but a
            // fuzzed file on a healthy disk cannot cause one).
            assert!(!marked, "a refused snapshot left the group marked: {text}");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, rest)) = input.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Some(entry) = decode_checked::<Entry>(rest) {
                // What LogStore::open and try_get_log_entries do next with it.
                let _ = entry.log_id.index;
                let _ = format!("{entry}");
            }
        }
        1 => {
            decode_checked::<SnapshotChunk>(rest);
        }
        2 => {
            decode_checked::<Vote>(rest);
        }
        3 => {
            decode_checked::<LogId>(rest);
        }
        _ => import_snapshot(rest),
    }
});
