//! Recovery of a node's storage from damaged files: a data directory with known contents
//! (records, Raft log entries and a vote, some in fjall's tables and some only in its
//! journal) is copied, bytes of its files are flipped, overwritten or cut off at places the
//! fuzzer picks, and the engine is opened again the way a node starts: `Engine::open`, then
//! the Raft log's verification (`LogStore::open`), then reads.
//!
//! Input layout: up to 4 mutations of 6 bytes each: file (index into the sorted file list),
//! kind (low 2 bits: flip a bit / set a byte / zero 16 bytes / truncate; the next 3 bits:
//! which bit, or the byte value), and a little-endian u32 offset (modulo the file's length).
//!
//! Acceptable: the open fails with an error, or it succeeds and every record, log entry and
//! the vote read back is either exactly what was written, absent, or an error. Never a
//! panic, never a different value.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use openraft::entry::RaftEntry;
use shoal_core::{Condition, Expiry, Record, WriteOp};
use shoal_raft::{LogStore, ShardRequest, TypeConfig};
use shoal_storage::keys::TAG_VOTE;
use shoal_storage::{DataChange, Engine, EngineOptions};

type Entry = openraft::alias::EntryOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;

const GROUP: u32 = 1;
/// Records and log entries per phase: the first phase ends up in tables, the second only in
/// the journal.
const PER_PHASE: u64 = 12;

struct Template {
    dir: PathBuf,
    /// Files under `dir`, relative, sorted: what a mutation's file byte indexes.
    files: Vec<PathBuf>,
    records: Vec<(Bytes, Record)>,
    log: Vec<(u64, Vec<u8>)>,
    vote: Vec<u8>,
}

fn options() -> EngineOptions {
    EngineOptions {
        cache_bytes: 1 << 20,
        record_cache_bytes: 0,
        min_free_bytes: 0,
        ..EngineOptions::default()
    }
}

/// Scratch space: tmpfs where there is one, so copies and fsyncs are cheap.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn record(i: u64) -> (Bytes, Record) {
    let key = Bytes::from(format!("key-{i}"));
    let record = Record {
        value: Bytes::from(format!("value-{i}-").repeat(1 + i as usize % 5)),
        version: 100 + i,
        expire_at: (i % 3 == 0).then_some(4_000_000_000_000 + i),
    };
    (key, record)
}

fn log_entry(index: u64) -> Vec<u8> {
    let log_id = LogId::new(
        openraft::vote::leader_id_adv::CommittedLeaderId {
            term: 2,
            node_id: 1,
        },
        index,
    );
    let (key, record) = record(index);
    let entry = Entry::new_normal(
        log_id,
        ShardRequest {
            now_ms: 1_700_000_000_000 + index,
            ops: vec![WriteOp::Put {
                key,
                value: record.value,
                condition: Condition::None,
                expiry: Expiry::AfterMillis(60_000),
                return_old: false,
            }],
        },
    );
    postcard::to_allocvec(&entry).expect("encode entry")
}

/// Writes one phase through the engine: records, log entries, the vote.
fn write_phase(engine: &Engine, template: &mut Template, range: std::ops::Range<u64>) {
    let changes: Vec<DataChange> = range
        .clone()
        .map(|i| {
            let (key, record) = record(i);
            template.records.push((key.clone(), record.clone()));
            DataChange::Put {
                key,
                old_expire: None,
                record,
            }
        })
        .collect();
    engine
        .apply_changes(GROUP, &changes, &[])
        .expect("apply changes");
    let entries: Vec<(u64, Vec<u8>)> = range.map(|i| (i + 1, log_entry(i + 1))).collect();
    template.log.extend(entries.iter().cloned());
    engine.append_log(GROUP, entries).expect("append log");
    engine
        .put_meta(GROUP, TAG_VOTE, template.vote.clone())
        .expect("put vote");
    engine.sync_now().expect("sync");
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Removes templates left by fuzzer processes that are gone (libFuzzer exits without
/// running destructors).
fn remove_stale_templates(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("shoal-fuzz-storage-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        // libFuzzer's panic hook aborts even on a panic that is caught, but `Engine::open`
        // deliberately catches fjall's debug assertions on a damaged journal and reports a
        // corrupt journal: back to the default hook, so only a panic that escapes the target
        // (which libfuzzer-sys still turns into an abort) is a crash. One line per panic.
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
        let parent = scratch();
        remove_stale_templates(&parent);
        let dir = parent.join(format!("shoal-fuzz-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut template = Template {
            dir: dir.clone(),
            files: Vec::new(),
            records: Vec::new(),
            log: Vec::new(),
            vote: b"vote: term 2, node 1, committed".to_vec(),
        };
        // Phase 1, then flushed into tables: fjall replays the journal into memtables at
        // open, and a raw open of the same database flushes every keyspace.
        let engine = Engine::open(&dir, &options()).expect("open engine");
        write_phase(&engine, &mut template, 0..PER_PHASE);
        engine.close().expect("close");
        drop(engine);
        {
            let db = fjall::Database::builder(dir.join("db"))
                .open()
                .expect("raw open");
            for name in ["raft_log", "raft_meta", "shard_data", "shard_expiry"] {
                let keyspace = db
                    .keyspace(name, fjall::KeyspaceCreateOptions::default)
                    .expect("keyspace");
                keyspace.rotate_memtable_and_wait().expect("flush");
            }
            db.persist(fjall::PersistMode::SyncAll).expect("persist");
        }
        // Phase 2 stays in the journal.
        let engine = Engine::open(&dir, &options()).expect("reopen engine");
        write_phase(&engine, &mut template, PER_PHASE..2 * PER_PHASE);
        engine.close().expect("close");
        drop(engine);
        files_under(&dir, &dir, &mut template.files);
        template.files.sort();
        template
    })
}

fn mutate(file: &Path, kind: u8, offset: u32) {
    let mut bytes = std::fs::read(file).expect("read file");
    if bytes.is_empty() {
        return;
    }
    let at = offset as usize % bytes.len();
    let arg = (kind >> 2) & 7;
    match kind & 3 {
        0 => bytes[at] ^= 1 << arg,
        1 => bytes[at] = bytes[at].wrapping_add((1 + arg) * 31),
        2 => {
            let end = (at + 16).min(bytes.len());
            bytes[at..end].fill(0);
        }
        _ => bytes.truncate(at),
    }
    std::fs::write(file, bytes).expect("write file");
}

/// Opens the damaged copy as a node would and checks everything it serves. With
/// `SHOAL_FUZZ_OUTCOMES` set, prints one line per input saying what happened.
fn check(dir: &Path, template: &Template) {
    let report = std::env::var_os("SHOAL_FUZZ_OUTCOMES").is_some();
    let engine = match Engine::open(dir, &options()) {
        Ok(engine) => engine,
        Err(e) => {
            if report {
                let text = e.to_string();
                eprintln!("outcome: open refused: {}", &text[..text.len().min(100)]);
            }
            return;
        }
    };
    let (mut same, mut absent, mut errors) = (0, 0, 0);
    for (key, written) in &template.records {
        match engine.get_record(GROUP, key) {
            Ok(Some(read)) => {
                assert_eq!(&read, written, "record {key:?} came back different");
                same += 1;
            }
            Ok(None) => absent += 1,
            Err(_) => errors += 1,
        }
    }
    if let Ok(Some(vote)) = engine.get_meta(GROUP, TAG_VOTE) {
        assert_eq!(
            &vote[..],
            &template.vote[..],
            "the vote came back different"
        );
    }
    let log = match LogStore::open(engine.clone(), GROUP) {
        Err(e) => format!(
            "log refused ({})",
            e.to_string().chars().take(60).collect::<String>()
        ),
        Ok(_) => match engine.read_log(GROUP, 0, u64::MAX) {
            Err(_) => "log read error".to_string(),
            Ok(entries) => {
                let n = entries.len();
                for (index, bytes) in entries {
                    let written = template
                        .log
                        .iter()
                        .find(|(i, _)| *i == index)
                        .unwrap_or_else(|| panic!("log entry {index} was never written"));
                    assert_eq!(
                        &bytes[..],
                        &written.1[..],
                        "log entry {index} came back different"
                    );
                }
                format!("log ok, {n} of {} entries", template.log.len())
            }
        },
    };
    if report {
        eprintln!(
            "outcome: opened: records {same} intact, {absent} absent, {errors} errors; {log}"
        );
    }
    let _ = engine.close();
}

fuzz_target!(|input: &[u8]| {
    let template = template();
    let work = tempfile::tempdir_in(scratch()).expect("temp dir");
    let dir = work.path().join("node");
    copy_dir(&template.dir, &dir);
    for mutation in input.chunks_exact(6).take(4) {
        let file = &template.files[mutation[0] as usize % template.files.len()];
        let offset = u32::from_le_bytes(mutation[2..6].try_into().expect("4 bytes"));
        mutate(&dir.join(file), mutation[1], offset);
    }
    check(&dir, template);
});
