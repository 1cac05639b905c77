//! Running a command on this node's own replica of one shard, never forwarding it: the
//! router's local path, and what a peer's forwarded request runs.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use shoal_core::command::ScanCursor;
use shoal_core::{Command, Consistency, Error, Limits, Reply, ShardId, WriteOp};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::executor::Executor;
use crate::group::{Group, WriteResult};
use crate::start_error::storage_err;

enum Submitted {
    Write(oneshot::Receiver<WriteResult>),
    Read(Option<oneshot::Receiver<Result<(), Error>>>, Command),
}

impl Executor {
    /// Runs `command` on this node's replica of `shard`. The command is ordered (queued to
    /// the shard) before this returns. A write or linearizable read on a replica that does
    /// not lead answers `NotLeader` with the leader it knows of; so does a node without a
    /// replica of `shard`.
    pub(crate) fn execute_here(
        self: &Arc<Self>,
        shard: ShardId,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        let submitted = self.submit_here(shard, command, consistency);
        let node = self.clone();
        async move {
            match submitted? {
                Submitted::Write(rx) => rx
                    .await
                    .map_err(|_| {
                        node.local_group(shard)
                            .and_then(|g| g.failure())
                            .unwrap_or(Error::ShuttingDown)
                    })?
                    .map(Reply::Write),
                Submitted::Read(barrier, command) => {
                    if let Some(barrier) = barrier {
                        barrier.await.map_err(|_| Error::ShuttingDown)??;
                    }
                    node.read_here(shard, &command)
                }
            }
        }
    }

    fn submit_here(
        &self,
        shard: ShardId,
        command: Command,
        consistency: Consistency,
    ) -> Result<Submitted, Error> {
        if self.is_stopped() {
            return Err(Error::ShuttingDown);
        }
        let Some(group) = self.local_group(shard) else {
            return Err(self.not_here(shard));
        };
        let limits = self.config.limits;
        match command {
            Command::Write(op) => {
                if !matches!(op, WriteOp::Flush) {
                    validate_write(&op, &limits)?;
                    self.check_shard(shard, op.keys().into_iter())?;
                }
                Ok(Submitted::Write(group.propose(op)?))
            }
            Command::Get { .. } | Command::GetMany { .. } => {
                let keys = point_read_keys(&command);
                keys.iter().try_for_each(|k| limits.check_key(k))?;
                self.check_shard(shard, keys.iter())?;
                Ok(Submitted::Read(barrier(&group, consistency)?, command))
            }
            Command::Scan { .. } => Ok(Submitted::Read(barrier(&group, consistency)?, command)),
            Command::Count | Command::RandomKey => Err(Error::Internal(
                "a whole-node command was sent to one shard".into(),
            )),
        }
    }

    /// The error for a shard this node holds no replica of: where to go instead.
    pub(crate) fn not_here(&self, shard: ShardId) -> Error {
        match self.leader_of(shard) {
            Some(leader) if leader != self.me() => Error::NotLeader { shard, leader },
            _ => Error::NoLeader { shard },
        }
    }

    fn check_shard<'a>(
        &self,
        shard: ShardId,
        keys: impl Iterator<Item = &'a Bytes>,
    ) -> Result<(), Error> {
        if self.shard_of(keys)? == shard {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "a command was routed to shard {shard}, which does not own its keys"
            )))
        }
    }

    /// The one shard all `keys` live in, or `CrossShard`.
    pub(crate) fn shard_of<'a>(
        &self,
        mut keys: impl Iterator<Item = &'a Bytes>,
    ) -> Result<ShardId, Error> {
        let first = keys
            .next()
            .ok_or_else(|| Error::Invalid("no key given".into()))?;
        let shard = self.layout.shard_of_key(first);
        if keys.all(|k| self.layout.shard_of_key(k) == shard) {
            Ok(shard)
        } else {
            Err(Error::CrossShard)
        }
    }

    /// A live record from local applied state.
    pub(crate) fn get_live(
        &self,
        shard: ShardId,
        key: &[u8],
        now: u64,
    ) -> Result<Option<shoal_core::Record>, Error> {
        Ok(self
            .engine
            .get_record(shard, key)
            .map_err(storage_err)?
            .filter(|r| !r.is_expired(now)))
    }

    /// Answers a read from local applied state (after any barrier).
    pub(crate) fn read_here(&self, shard: ShardId, command: &Command) -> Result<Reply, Error> {
        let now = now_ms();
        match command {
            Command::Get { key } => Ok(Reply::Record(self.get_live(shard, key, now)?)),
            Command::GetMany { keys } => Ok(Reply::Records(
                self.engine
                    .get_records(shard, keys)
                    .map_err(storage_err)?
                    .into_iter()
                    .map(|r| r.filter(|r| !r.is_expired(now)))
                    .collect(),
            )),
            Command::Scan {
                cursor,
                limit,
                prefix,
                with_values,
            } => self.scan_here(
                shard,
                cursor.clone(),
                *limit,
                prefix.clone(),
                *with_values,
                now,
            ),
            _ => Err(Error::Internal("not a read".into())),
        }
    }

    /// One page of one shard, from `cursor`. The returned cursor points into this shard if
    /// the page stopped inside it, at the next shard's first slot if this shard is done,
    /// or is `None` after the last shard.
    fn scan_here(
        &self,
        shard: ShardId,
        cursor: ScanCursor,
        limit: usize,
        prefix: Option<Bytes>,
        with_values: bool,
        now: u64,
    ) -> Result<Reply, Error> {
        let range = self
            .layout
            .range_of(shard)
            .ok_or_else(|| Error::Invalid(format!("no shard {shard}")))?;
        if !range.contains(cursor.slot) {
            return Err(Error::Invalid(format!(
                "scan cursor slot {} is not in shard {shard}",
                cursor.slot
            )));
        }
        let page = self
            .engine
            .scan(
                shard,
                cursor.slot,
                cursor.after.as_deref(),
                range.end,
                limit.max(1),
                prefix.as_deref(),
                now,
                self.config.scan_budget,
            )
            .map_err(storage_err)?;
        let entries = page
            .entries
            .into_iter()
            .map(|(key, mut record)| {
                if !with_values {
                    record.value = Bytes::new();
                }
                (key, Some(record))
            })
            .collect();
        let next = match page.next {
            Some((slot, after)) => Some(ScanCursor { slot, after }),
            None if range.end < shoal_core::SLOT_COUNT as u32 => Some(ScanCursor {
                slot: range.end as u16,
                after: None,
            }),
            None => None,
        };
        Ok(Reply::Scan { entries, next })
    }
}

fn barrier(
    group: &Group,
    consistency: Consistency,
) -> Result<Option<oneshot::Receiver<Result<(), Error>>>, Error> {
    match consistency {
        Consistency::Linearizable if !group.local_reads_ok() => group.read_barrier().map(Some),
        _ => Ok(None),
    }
}

pub(crate) fn point_read_keys(command: &Command) -> &[Bytes] {
    match command {
        Command::Get { key } => std::slice::from_ref(key),
        Command::GetMany { keys } => keys,
        _ => &[],
    }
}

/// Size checks before anything is queued; apply checks again, so a replica never stores
/// what a limit forbids even if a front end forgot.
pub(crate) fn validate_write(op: &WriteOp, limits: &Limits) -> Result<(), Error> {
    // A transaction's keys include its ops' keys: each key is checked once, here.
    for key in op.keys() {
        limits.check_key(key)?;
    }
    check_values(op, limits)
}

fn check_values(op: &WriteOp, limits: &Limits) -> Result<(), Error> {
    match op {
        WriteOp::Put { value, .. } | WriteOp::Append { value, .. } => {
            limits.check_value_len(value.len())
        }
        WriteOp::SetRange { offset, value, .. } => {
            limits.check_value_len((*offset as usize).saturating_add(value.len()))
        }
        WriteOp::PutMany { pairs, .. } => pairs
            .iter()
            .try_for_each(|(_, v)| limits.check_value_len(v.len())),
        WriteOp::Reap { .. } => Err(Error::Invalid("reap is internal".into())),
        WriteOp::Read { .. } => Err(Error::Invalid(
            "a read op runs only inside a transaction".into(),
        )),
        WriteOp::Transaction { ops, .. } => {
            shoal_core::transaction::validate(ops)?;
            // Its entry must fit a peer frame like any single write's.
            let bytes = op.payload_bytes();
            if bytes > limits.max_value_bytes {
                return Err(Error::Invalid(format!(
                    "a transaction carrying {bytes} bytes is over the {}-byte limit of one \
                     write (--max-value-bytes)",
                    limits.max_value_bytes
                )));
            }
            ops.iter()
                .filter(|op| !matches!(op, WriteOp::Read { .. }))
                .try_for_each(|op| check_values(op, limits))
        }
        _ => Ok(()),
    }
}
