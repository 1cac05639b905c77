//! An in-memory stand-in for the node, for testing the HTTP layer alone.
//!
//! Writes go through the real `shoal_core::apply`, so conditions and expiry behave as on a
//! node. Scans look at only a few keys per call, like the node's bounded scans, so paging
//! and short pages get exercised. Keys can be rigged to fail or to answer slowly.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shoal_core::apply::{Change, KeyView, apply};
use shoal_core::command::ScanCursor;
use shoal_core::map::ClusterView;
use shoal_core::{Command, Consistency, Error, Limits, Record, Reply, UnixMillis, key_slot};

use super::backend::Backend;

/// Keys the fake's scan looks at per call: small, so pages need several calls.
pub const SCAN_BUDGET: usize = 7;

#[derive(Clone, Default)]
pub struct FakeNode {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    limits: Limits,
    /// Ordered by (slot, key), the node's scan order.
    keys: BTreeMap<(u16, Bytes), Record>,
    last_index: u64,
    failures: HashMap<Bytes, Error>,
    slow: HashMap<Bytes, Duration>,
    /// Every consistency level requested, to check the front end passes it through.
    consistencies: Vec<Consistency>,
}

fn now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
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
    pub fn new(limits: Limits) -> Self {
        let node = Self::default();
        node.inner.lock().unwrap().limits = limits;
        node
    }

    /// Every command touching `key` fails with `err`.
    pub fn fail(&self, key: &str, err: Error) {
        self.inner
            .lock()
            .unwrap()
            .failures
            .insert(Bytes::copy_from_slice(key.as_bytes()), err);
    }

    /// Every command touching `key` takes `delay` to answer.
    pub fn slow(&self, key: &str, delay: Duration) {
        self.inner
            .lock()
            .unwrap()
            .slow
            .insert(Bytes::copy_from_slice(key.as_bytes()), delay);
    }

    pub fn consistencies(&self) -> Vec<Consistency> {
        self.inner.lock().unwrap().consistencies.clone()
    }

    fn run(&self, command: Command, consistency: Consistency) -> Result<Reply, Error> {
        let mut inner = self.inner.lock().unwrap();
        inner.consistencies.push(consistency);
        let now = now();
        match command {
            Command::Get { key } => {
                let record = inner.keys.get(&(key_slot(&key), key)).cloned();
                Ok(Reply::Record(record.filter(|r| !r.is_expired(now))))
            }
            Command::Scan {
                cursor,
                limit,
                prefix,
                with_values,
            } => Ok(inner.scan(cursor, limit, prefix, with_values, now)),
            Command::Write(op) => {
                inner.last_index += 1;
                let version = inner.last_index;
                let limits = inner.limits;
                let applied = apply(&op, version, now, &limits, &mut View(&inner.keys));
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
            other => Err(Error::Internal(format!("the fake does not do {other:?}"))),
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
        for ((slot, key), record) in self
            .keys
            .range((start, Bound::Unbounded))
            .take(SCAN_BUDGET.min(limit.max(1)))
        {
            last = Some(ScanCursor {
                slot: *slot,
                after: Some(key.clone()),
            });
            let wanted = prefix.as_ref().is_none_or(|p| key.starts_with(p));
            if wanted && !record.is_expired(now) {
                let mut record = record.clone();
                if !with_values {
                    record.value = Bytes::new();
                }
                entries.push((key.clone(), Some(record)));
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
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        let keys: Vec<Bytes> = match &command {
            Command::Get { key } => vec![key.clone()],
            Command::Write(op) => op.keys().into_iter().cloned().collect(),
            _ => vec![],
        };
        let (failure, delay) = {
            let inner = self.inner.lock().unwrap();
            let failure = keys.iter().find_map(|k| inner.failures.get(k).cloned());
            let delay = keys.iter().find_map(|k| inner.slow.get(k).copied());
            (failure, delay)
        };
        let node = self.clone();
        async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match failure {
                Some(err) => Err(err),
                None => node.run(command, consistency),
            }
        }
    }

    fn node_id(&self) -> u64 {
        7
    }

    fn limits(&self) -> Limits {
        self.inner.lock().unwrap().limits
    }

    fn cluster_view(&self) -> ClusterView {
        ClusterView {
            cluster_id: "fake".into(),
            epoch: 1,
            this_node: 7,
            nodes: vec![],
            shards: vec![],
        }
    }
}
