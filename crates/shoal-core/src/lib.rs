//! shoal-core: the logic every layer shares, with no I/O.
//!
//! Slot hashing (Redis Cluster compatible), the shard layout, the `Command` every front
//! end translates into, the stored record format, limits, the one `Error` enum, and the
//! deterministic `apply` function that turns a replicated write into key changes.

pub mod apply;
pub mod auth;
pub mod command;
pub mod error;
pub mod limits;
pub mod map;
pub mod placement;
pub mod rebalance;
pub mod record;
pub mod shard;
pub mod slot;
pub mod transaction;

pub use command::{
    Command, Condition, Consistency, Expiry, ExpiryCondition, MAX_EXPIRE_AT, Reply, TtlError,
    WriteOp, WriteReply,
};
pub use error::Error;
pub use limits::Limits;
pub use placement::{Placement, PlacementError, PlacementNode, place};
pub use record::Record;
pub use shard::{ShardId, ShardLayout};
pub use slot::{SLOT_COUNT, key_slot};

/// Milliseconds since the Unix epoch, the clock every expiry is expressed in.
pub type UnixMillis = u64;
