//! shoal-storage: the node's one embedded engine (fjall) and everything stored in it.
//!
//! One fjall database per node holds, for every Raft group, its log, its vote and
//! bookkeeping, and its shard keyspace. Keys are prefixed by group id inside four fjall
//! keyspaces (not a keyspace per group), so one journal fsync covers every group's log
//! appends: that is group commit (see `syncer`). Apply batches are atomic with the
//! group's applied position, so a crash never leaves data and position out of step.

mod cache;
pub mod disk;
mod drop_group;
mod engine;
pub mod keys;
mod shard_data;
mod snapshot;
mod syncer;

pub use disk::{DiskLow, DiskSpace, DiskUse};
pub use drop_group::GroupDeletion;
pub use engine::{
    DEFAULT_MIN_FREE_BYTES, DEFAULT_OPEN_FILES, Engine, EngineMemory, EngineOptions, LogBounds,
    MIN_OPEN_FILES, MemtableSizes, StorageStats, recovering_dir,
};
pub use keys::GroupId;
pub use shard_data::{DataChange, ScanPage};
pub use snapshot::SNAPSHOT_MAGIC;
pub use syncer::WriterActivity;

/// Errors from the storage layer. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine error: {0}")]
    Engine(#[from] fjall::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "corrupt data in {what}: {detail}; the data directory is damaged, restore it from a replica or backup"
    )]
    Corrupt { what: String, detail: String },
    #[error("storage is closed")]
    Closed,
}

impl StorageError {
    pub fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        StorageError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
