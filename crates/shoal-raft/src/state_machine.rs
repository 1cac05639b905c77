//! The state machine of one group: applies committed batches of `WriteOp`s to the
//! group's keyspace with shoal-core's deterministic `apply`, and builds/installs
//! snapshots as files.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use shoal_core::apply::{Change, KeyView, apply};
use shoal_core::{Error, Limits, Record};
use shoal_storage::keys::{GroupId, TAG_APPLIED, TAG_SNAPSHOT};
use shoal_storage::{DataChange, Engine};

use crate::io_err;
use crate::types::{LogId, ShardResponse, SnapshotMeta, StoredMembership, TypeConfig};

/// Entries applied per storage batch during a long catch-up; bounds one batch's memory.
const MAX_ENTRIES_PER_BATCH: usize = 1024;

/// A snapshot on disk (see shoal-storage's snapshot format).
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// Where the group has applied up to, stored atomically with the data it describes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Stored keys (live or expired-but-not-yet-reaped), for DBSIZE.
    key_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta,
    file: String,
}

/// Least time between two warnings that a group's snapshot waits for disk space.
const DEFERRAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// State machine of one group over the shared engine.
pub struct ShardStateMachine {
    engine: Engine,
    group: GroupId,
    limits: Limits,
    snapshot_dir: PathBuf,
    state: AppliedState,
    key_count: Arc<AtomicU64>,
    /// The apply batch, kept between calls so its maps and vectors are reused.
    scratch: PendingBatch,
    /// When a deferred snapshot was last reported, so a low disk is logged, not spammed.
    deferral_logged: Option<std::time::Instant>,
}

impl ShardStateMachine {
    /// Opens the group's state machine. `key_count` is kept current for the node's DBSIZE.
    pub fn open(
        engine: Engine,
        group: GroupId,
        limits: Limits,
        key_count: Arc<AtomicU64>,
    ) -> Result<Self, shoal_storage::StorageError> {
        if engine.install_interrupted(group)? {
            return Err(shoal_storage::StorageError::corrupt(
                format!("shard data of group {group}"),
                "a snapshot install was interrupted by a crash",
            ));
        }
        let snapshot_dir = Self::snapshot_dir(&engine);
        std::fs::create_dir_all(&snapshot_dir)?;
        let state: AppliedState = match engine.get_meta(group, TAG_APPLIED)? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| {
                shoal_storage::StorageError::corrupt(format!("applied state of group {group}"), e)
            })?,
            None => AppliedState::default(),
        };
        key_count.store(state.key_count, Ordering::Relaxed);
        Ok(Self {
            engine,
            group,
            limits,
            snapshot_dir,
            state,
            key_count,
            scratch: PendingBatch::default(),
            deferral_logged: None,
        })
    }

    /// Where the groups' state machines keep their snapshot files.
    pub fn snapshot_dir(engine: &Engine) -> PathBuf {
        engine.dir().join("snapshots")
    }

    /// The files in `dir` that belong to `group`: named `group-{group}-...`, as this
    /// module names the snapshots it builds and installs, and the transport those it
    /// receives. Lists them for `Engine::delete_group`, from `snapshot_dir` and from the
    /// transport's incoming directory. A missing directory holds none.
    pub fn group_snapshot_files(dir: &Path, group: GroupId) -> io::Result<Vec<PathBuf>> {
        let prefix = format!("group-{group}-");
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// Why a snapshot should wait, if it should: a snapshot is a full copy of the shard,
    /// written before the previous one is removed, and a write failing for lack of space
    /// stops the group (openraft treats a failed build as fatal). It needs room for about
    /// the previous snapshot's size plus a quarter, on top of half the reserve.
    fn snapshot_deferral(&self) -> Option<String> {
        let disk = self.engine.disk();
        if disk.reserve_bytes() == 0 {
            return None;
        }
        let previous = self
            .engine
            .get_meta(self.group, TAG_SNAPSHOT)
            .ok()
            .flatten()
            .and_then(|bytes| postcard::from_bytes::<SnapshotRecord>(&bytes).ok())
            .and_then(|record| std::fs::metadata(record.file).ok())
            .map_or(0, |m| m.len());
        let needed = previous + previous / 4 + disk.reserve_bytes() / 2;
        let free = disk.free_bytes();
        (free < needed).then(|| {
            format!(
                "snapshot of group {} deferred: it needs about {} MiB free (the last one was {} MiB, plus half the --min-free-disk-mib reserve), {} MiB are; the log keeps growing until space is freed",
                self.group,
                needed >> 20,
                previous >> 20,
                free >> 20
            )
        })
    }
}

/// The group's keys as of the current batch: this batch's changes over stored data. Reads
/// from storage are remembered, so each key is looked up in the LSM at most once per batch.
struct BatchView<'a> {
    engine: &'a Engine,
    group: GroupId,
    overlay: &'a mut HashMap<Bytes, Option<Record>>,
    cleared: bool,
}

impl KeyView for BatchView<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Error> {
        if let Some(hit) = self.overlay.get(key) {
            return Ok(hit.clone());
        }
        if self.cleared {
            return Ok(None);
        }
        let stored = self
            .engine
            .get_record_for_write(self.group, key)
            .map_err(|e| Error::Storage(e.to_string()))?;
        self.overlay
            .insert(Bytes::copy_from_slice(key), stored.clone());
        Ok(stored)
    }
}

/// Accumulates one storage batch worth of applied entries.
#[derive(Default)]
struct PendingBatch {
    overlay: HashMap<Bytes, Option<Record>>,
    cleared: bool,
    changes: Vec<DataChange>,
    replies: Vec<(openraft::storage::ApplyResponder<TypeConfig>, ShardResponse)>,
    entries: usize,
}

impl PendingBatch {
    fn view<'a>(&'a mut self, engine: &'a Engine, group: GroupId) -> BatchView<'a> {
        BatchView {
            engine,
            group,
            overlay: &mut self.overlay,
            cleared: self.cleared,
        }
    }
}

impl ShardStateMachine {
    fn apply_request(
        &mut self,
        batch: &mut PendingBatch,
        index: u64,
        request: &crate::ShardRequest,
    ) -> Result<ShardResponse, io::Error> {
        let mut results = Vec::with_capacity(request.ops.len());
        for op in &request.ops {
            let applied = {
                let mut view = batch.view(&self.engine, self.group);
                apply(op, index, request.now_ms, &self.limits, &mut view)
            };
            for change in applied.changes {
                match change {
                    Change::Put(key, record) => {
                        let old = batch
                            .view(&self.engine, self.group)
                            .get(&key)
                            .map_err(io_err)?;
                        if old.is_none() {
                            self.state.key_count += 1;
                        }
                        batch.changes.push(DataChange::Put {
                            key: key.clone(),
                            old_expire: old.and_then(|r| r.expire_at),
                            record: record.clone(),
                        });
                        batch.overlay.insert(key, Some(record));
                    }
                    Change::Delete(key) => {
                        if let Some(old) = batch
                            .view(&self.engine, self.group)
                            .get(&key)
                            .map_err(io_err)?
                        {
                            self.state.key_count -= 1;
                            batch.changes.push(DataChange::Delete {
                                key: key.clone(),
                                old_expire: old.expire_at,
                            });
                            batch.overlay.insert(key, None);
                        }
                    }
                    Change::DeleteAll => {
                        // Earlier changes of this batch are void; they are not on disk yet,
                        // so the storage-side delete would not see them.
                        batch.changes.clear();
                        batch.changes.push(DataChange::DeleteAll);
                        batch.overlay.clear();
                        batch.cleared = true;
                        self.state.key_count = 0;
                    }
                }
            }
            results.push(applied.reply);
        }
        Ok(ShardResponse { results })
    }

    /// Commits the batch, answers its entries, and leaves it empty for reuse (keeping its
    /// allocations).
    fn flush(&mut self, batch: &mut PendingBatch) -> Result<(), io::Error> {
        let state = postcard::to_allocvec(&self.state).map_err(io_err)?;
        self.engine
            .apply_changes(self.group, &batch.changes, &[(TAG_APPLIED, state)])
            .map_err(io::Error::from)?;
        self.key_count
            .store(self.state.key_count, Ordering::Relaxed);
        // Reply only once the changes are visible to reads.
        for (responder, response) in batch.replies.drain(..) {
            responder.send(response);
        }
        batch.overlay.clear();
        batch.changes.clear();
        batch.cleared = false;
        batch.entries = 0;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = std::mem::take(&mut self.scratch);
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index;
            let response = match &entry.payload {
                EntryPayload::Blank => ShardResponse::default(),
                EntryPayload::Normal(request) => self.apply_request(&mut batch, index, request)?,
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    ShardResponse::default()
                }
            };
            self.state.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                batch.replies.push((responder, response));
            }
            batch.entries += 1;
            // After a flush, commit at once: a later put of a key the flush deleted must not
            // share a storage batch with that delete.
            if batch.entries >= MAX_ENTRIES_PER_BATCH || batch.cleared {
                self.flush(&mut batch)?;
            }
        }
        if batch.entries > 0 {
            self.flush(&mut batch)?;
        }
        self.scratch = batch;
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<SnapshotBuilder> {
        // `force`: a follower needs this snapshot to catch up; openraft requires one.
        if !force && let Some(why) = self.snapshot_deferral() {
            let now = std::time::Instant::now();
            if self
                .deferral_logged
                .is_none_or(|at| now.duration_since(at) >= DEFERRAL_LOG_INTERVAL)
            {
                tracing::warn!("{why}");
                self.deferral_logged = Some(now);
            }
            return None;
        }
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            engine: self.engine.clone(),
            group: self.group,
            dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // Keep the installed file as our current snapshot, under our own name (a rename:
        // the transport received it in the same data directory). Moving and importing a
        // snapshot takes seconds for a large shard: on a blocking thread, so the group's
        // runtime (which also runs the peer connections) keeps answering meanwhile; a
        // runtime stalled that long had its connections declared dead, and the leader
        // sent the whole snapshot again.
        let path = snapshot_path(&self.snapshot_dir, self.group, meta, "installed");
        let mut state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            key_count: 0,
        };
        // The key count is only known after reading the file; write it in a second step.
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: path.display().to_string(),
        };
        let record = postcard::to_allocvec(&record).map_err(io_err)?;
        let (engine, group, source) = (self.engine.clone(), self.group, snapshot.path.clone());
        let count = tokio::task::spawn_blocking(move || -> Result<u64, io::Error> {
            if source != path && std::fs::rename(&source, &path).is_err() {
                std::fs::copy(&source, &path)?;
            }
            engine
                .import_group(group, &path, &[(TAG_SNAPSHOT, record)])
                .map_err(io::Error::from)
        })
        .await
        .map_err(io_err)??;
        state.key_count = count;
        self.engine
            .apply_changes(
                self.group,
                &[],
                &[(TAG_APPLIED, postcard::to_allocvec(&state).map_err(io_err)?)],
            )
            .map_err(io::Error::from)?;
        self.key_count.store(count, Ordering::Relaxed);
        self.state = state;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        let Some(bytes) = self
            .engine
            .get_meta(self.group, TAG_SNAPSHOT)
            .map_err(io::Error::from)?
        else {
            return Ok(None);
        };
        let record: SnapshotRecord = postcard::from_bytes(&bytes).map_err(io_err)?;
        let path = PathBuf::from(record.file);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: SnapshotFile { path },
        }))
    }
}

fn snapshot_path(dir: &Path, group: GroupId, meta: &SnapshotMeta, origin: &str) -> PathBuf {
    let index = meta.last_log_id.as_ref().map_or(0, |id| id.index);
    dir.join(format!("group-{group}-{index}-{origin}.snap"))
}

/// Builds a snapshot from a consistent point-in-time view, concurrently with applies.
pub struct SnapshotBuilder {
    engine: Engine,
    group: GroupId,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let engine = self.engine.clone();
        let (group, dir) = (self.group, self.dir.clone());
        // Exporting reads the whole shard: keep it off the async workers.
        tokio::task::spawn_blocking(move || -> Result<_, io::Error> {
            let tmp = dir.join(format!("group-{group}-building.snap"));
            let (state, _count) = engine
                .export_group(group, &tmp, TAG_APPLIED)
                .map_err(io::Error::from)?;
            let state: AppliedState = match state {
                Some(bytes) => postcard::from_bytes(&bytes).map_err(io_err)?,
                None => AppliedState::default(),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
            };
            let built_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let path = snapshot_path(&dir, group, &meta, &format!("built{built_at}"));
            std::fs::rename(&tmp, &path)?;
            let previous = engine
                .get_meta(group, TAG_SNAPSHOT)
                .map_err(io::Error::from)?;
            let record = SnapshotRecord {
                meta: meta.clone(),
                file: path.display().to_string(),
            };
            engine
                .put_meta(
                    group,
                    TAG_SNAPSHOT,
                    postcard::to_allocvec(&record).map_err(io_err)?,
                )
                .map_err(io::Error::from)?;
            // Only the newest snapshot is kept.
            if let Some(prev) = previous
                && let Ok(prev) = postcard::from_bytes::<SnapshotRecord>(&prev)
                && prev.file != record.file
            {
                let _ = std::fs::remove_file(prev.file);
            }
            Ok(Snapshot {
                meta,
                snapshot: SnapshotFile { path },
            })
        })
        .await
        .map_err(io_err)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_storage::EngineOptions;

    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn a_snapshot_waits_for_disk_space_unless_a_follower_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let options = EngineOptions {
            min_free_bytes: 64 * MIB,
            ..EngineOptions::default()
        };
        let engine = Engine::open(dir.path(), &options).unwrap();
        let key_count = Arc::new(AtomicU64::new(0));
        let mut sm =
            ShardStateMachine::open(engine.clone(), 1, Limits::default(), key_count).unwrap();
        // Under half the reserve: a policy snapshot waits, a required one does not.
        engine.disk().set_override(Some(20 * MIB));
        assert!(sm.try_create_snapshot_builder(false).await.is_none());
        assert!(sm.try_create_snapshot_builder(true).await.is_some());
        // Room again: snapshots resume.
        engine.disk().set_override(Some(40 * MIB));
        assert!(sm.try_create_snapshot_builder(false).await.is_some());
    }

    #[test]
    fn a_groups_snapshot_files_are_those_named_after_it() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "group-1-5-installed.snap",
            "group-1-building.tmp",
            "group-1-from-3.snap",
            "group-10-5-installed.snap",
            "group-2-5-installed.snap",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<_> = ShardStateMachine::group_snapshot_files(dir.path(), 1)
            .unwrap()
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "group-1-5-installed.snap",
                "group-1-building.tmp",
                "group-1-from-3.snap"
            ]
        );
        let missing = dir.path().join("missing");
        assert!(
            ShardStateMachine::group_snapshot_files(&missing, 1)
                .unwrap()
                .is_empty()
        );
    }
}
