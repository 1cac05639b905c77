//! An in-memory stand-in for the node, for testing the RESP front end alone.
//!
//! Like the node, it orders every command when `execute` is called: the command runs
//! right away (writes through the real `shoal_core::apply`). Its reply is then delivered
//! after a varying delay, so replies of one pipeline complete out of order and the
//! connection has to put them back in order. Scans examine a bounded number of keys per
//! call and may stop mid-slot, like the node's.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use shoal_core::apply::{Change, KeyView, apply};
use shoal_core::command::ScanCursor;
use shoal_core::map::{ClusterView, NodeInfo, NodeView, ShardView};
use shoal_core::{
    Command, Consistency, Error, Limits, Record, Reply, ShardLayout, UnixMillis, WriteOp, key_slot,
};

use super::backend::Backend;
use super::cmd::now_ms;

/// Keys one scan call examines at most.
const SCAN_BUDGET: usize = 25;

pub(crate) struct FakeNode {
    inner: Mutex<Inner>,
    layout: ShardLayout,
    limits: Limits,
    allow_flush: bool,
    max_keys_reply: usize,
    resp_addr: String,
}

#[derive(Default)]
struct Inner {
    /// Ordered by (slot, key): the node's scan order.
    keys: BTreeMap<(u16, Bytes), Record>,
    last_index: u64,
    calls: u64,
}

struct View<'a>(&'a BTreeMap<(u16, Bytes), Record>);

impl KeyView for View<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Error> {
        Ok(self
            .0
            .get(&(key_slot(key), Bytes::copy_from_slice(key)))
            .cloned())
    }
}

impl FakeNode {
    pub fn new(
        shards: u32,
        limits: Limits,
        allow_flush: bool,
        max_keys_reply: usize,
        resp_addr: String,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            layout: ShardLayout::even(shards).expect("valid shard count"),
            limits,
            allow_flush,
            max_keys_reply,
            resp_addr,
        }
    }

    fn one_shard<'a>(&self, keys: impl IntoIterator<Item = &'a Bytes>) -> Result<(), Error> {
        let mut shards = keys.into_iter().map(|k| self.layout.shard_of_key(k));
        let first = shards.next();
        if shards.any(|s| Some(s) != first) {
            Err(Error::CrossShard)
        } else {
            Ok(())
        }
    }

    fn run(&self, inner: &mut Inner, command: Command) -> Result<Reply, Error> {
        let now = now_ms();
        let live = |inner: &Inner, key: &Bytes| {
            inner
                .keys
                .get(&(key_slot(key), key.clone()))
                .filter(|r| !r.is_expired(now))
                .cloned()
        };
        match command {
            Command::Get { key } => Ok(Reply::Record(live(inner, &key))),
            Command::GetMany { keys } => {
                self.one_shard(&keys)?;
                Ok(Reply::Records(
                    keys.iter().map(|k| live(inner, k)).collect(),
                ))
            }
            Command::Scan {
                cursor,
                limit,
                prefix,
                with_values,
            } => Ok(inner.scan(cursor, limit, prefix, with_values, now)),
            Command::Count => Ok(Reply::Count(
                inner.keys.values().filter(|r| !r.is_expired(now)).count() as u64,
            )),
            Command::RandomKey => Ok(Reply::Key(
                inner
                    .keys
                    .iter()
                    .find(|(_, r)| !r.is_expired(now))
                    .map(|((_, k), _)| k.clone()),
            )),
            Command::Write(op) => {
                // Like the node: a flush goes to every shard, anything else to one.
                if matches!(op, WriteOp::Flush) && !self.allow_flush {
                    return Err(Error::Disabled(
                        "FLUSHALL".into(),
                        "start the node with --allow-flush to enable it".into(),
                    ));
                }
                if !matches!(op, WriteOp::Flush) {
                    self.one_shard(op.keys())?;
                }
                inner.last_index += 1;
                let applied = apply(
                    &op,
                    inner.last_index,
                    now,
                    &self.limits,
                    &mut View(&inner.keys),
                );
                for change in applied.changes {
                    match change {
                        Change::Put(key, record) => {
                            inner.keys.insert((key_slot(&key), key), record);
                        }
                        Change::Delete(key) => {
                            inner.keys.remove(&(key_slot(&key), key));
                        }
                        Change::DeleteAll => inner.keys.clear(),
                    }
                }
                applied.reply.map(Reply::Write)
            }
        }
    }
}

impl Inner {
    fn scan(
        &self,
        cursor: ScanCursor,
        limit: usize,
        prefix: Option<Bytes>,
        with_values: bool,
        now: UnixMillis,
    ) -> Reply {
        let start = match cursor.after {
            Some(after) => Bound::Excluded((cursor.slot, after)),
            None => Bound::Included((cursor.slot, Bytes::new())),
        };
        let mut entries = Vec::new();
        let mut last = None;
        for ((slot, key), record) in self.keys.range((start, Bound::Unbounded)).take(SCAN_BUDGET) {
            if entries.len() >= limit.max(1) {
                break;
            }
            last = Some(ScanCursor {
                slot: *slot,
                after: Some(key.clone()),
            });
            if prefix.as_ref().is_none_or(|p| key.starts_with(p)) && !record.is_expired(now) {
                let record = with_values.then(|| record.clone());
                entries.push((key.clone(), record));
            }
        }
        // Finished when nothing lies beyond the last key looked at.
        let next = last.filter(|c| {
            let after = (c.slot, c.after.clone().unwrap_or_default());
            self.keys
                .range((Bound::Excluded(after), Bound::Unbounded))
                .next()
                .is_some()
        });
        Reply::Scan { entries, next }
    }
}

impl Backend for FakeNode {
    fn execute(
        &self,
        command: Command,
        _: Consistency,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        let (result, delay) = {
            let mut inner = self.inner.lock().expect("fake node lock");
            inner.calls += 1;
            // 0 to 2 ms, varying from call to call.
            let delay = Duration::from_micros(inner.calls * 7919 % 3 * 1000);
            (self.run(&mut inner, command), delay)
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            result
        })
    }

    fn id(&self) -> u64 {
        1
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    fn allow_flush(&self) -> bool {
        self.allow_flush
    }

    fn max_keys_reply(&self) -> usize {
        self.max_keys_reply
    }

    fn cluster_view(&self) -> ClusterView {
        let info = NodeInfo {
            id: 1,
            resp_addr: self.resp_addr.clone(),
            http_addr: String::new(),
        };
        ClusterView {
            cluster_id: "fake".into(),
            epoch: 1,
            this_node: 1,
            nodes: vec![NodeView { info, up: true }],
            shards: self
                .layout
                .shards()
                .iter()
                .map(|(id, range)| ShardView {
                    id: *id,
                    range: *range,
                    replicas: vec![1],
                    leader: Some(1),
                    last_applied: 0,
                })
                .collect(),
        }
    }
}
