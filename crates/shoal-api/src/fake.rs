//! An in-memory stand-in for the node, for testing either front end alone.
//!
//! Like the node, it orders every command when `execute` is called: the command runs right
//! away, writes through the real `shoal_core::apply`, so conditions and expiry behave as on
//! a node. Scans examine a bounded number of keys per call and may stop mid-slot, like the
//! node's, so paging and short pages get exercised. With `jitter`, replies are delivered
//! after a varying delay, so replies of one pipeline complete out of order. Keys can be
//! rigged to fail or to answer slowly, and every consistency level asked for is recorded.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use shoal_core::apply::{Change, KeyView, apply};
use shoal_core::command::ScanCursor;
use shoal_core::map::{ClusterView, NodeInfo, NodeView, ShardView};
use shoal_core::{
    Command, Consistency, Error, Limits, Record, Reply, ShardId, ShardLayout, UnixMillis, WriteOp,
    key_slot,
};

use crate::backend::Backend;

/// How a [`FakeNode`] is set up.
pub struct FakeConfig {
    pub id: u64,
    pub shards: u32,
    pub limits: Limits,
    pub allow_flush: bool,
    pub max_keys_reply: usize,
    /// The RESP address `cluster_view` reports for this node.
    pub resp_addr: String,
    /// Keys one scan call examines at most.
    pub scan_budget: usize,
    /// Delay every reply by 0 to 2 ms, varying from call to call.
    pub jitter: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            id: 1,
            shards: 1,
            limits: Limits::default(),
            allow_flush: false,
            max_keys_reply: 1000,
            resp_addr: String::new(),
            scan_budget: 25,
            jitter: false,
        }
    }
}

pub struct FakeNode {
    config: FakeConfig,
    layout: ShardLayout,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Ordered by (slot, key): the node's scan order.
    keys: BTreeMap<(u16, Bytes), Record>,
    last_index: u64,
    calls: u64,
    failures: HashMap<Bytes, Error>,
    /// Failures that stop after a number of commands (the count left).
    failures_for: HashMap<Bytes, (Error, u32)>,
    /// Commands executed, per key (to count how often a client sent one).
    executed: HashMap<Bytes, u32>,
    slow: HashMap<Bytes, Duration>,
    /// Every consistency level requested, to check the front end passes it through.
    consistencies: Vec<Consistency>,
    /// Groups reported as stopped on this node.
    failed_groups: Vec<(ShardId, Error)>,
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

use crate::now_ms;

/// The keys `command` names, for rigged failures and delays.
fn keys_of(command: &Command) -> Vec<&Bytes> {
    match command {
        Command::Get { key } => vec![key],
        Command::GetMany { keys } => keys.iter().collect(),
        Command::Write(op) => op.keys(),
        Command::Scan { .. } | Command::Count | Command::RandomKey => Vec::new(),
    }
}

impl FakeNode {
    pub fn new(config: FakeConfig) -> Self {
        Self {
            layout: ShardLayout::even(config.shards).expect("valid shard count"),
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake node lock")
    }

    /// Every command touching `key` fails with `err`.
    pub fn fail(&self, key: &str, err: Error) {
        self.state()
            .failures
            .insert(Bytes::copy_from_slice(key.as_bytes()), err);
    }

    /// The next `times` commands touching `key` fail with `err`; later ones run.
    pub fn fail_times(&self, key: &str, err: Error, times: u32) {
        self.state()
            .failures_for
            .insert(Bytes::copy_from_slice(key.as_bytes()), (err, times));
    }

    /// How many commands touching `key` reached the node (failed ones included).
    pub fn executed(&self, key: &str) -> u32 {
        self.state()
            .executed
            .get(key.as_bytes())
            .copied()
            .unwrap_or(0)
    }

    /// Reports `shard` as stopped on this node for `err` (a storage failure).
    pub fn fail_group(&self, shard: ShardId, err: Error) {
        self.state().failed_groups.push((shard, err));
    }

    /// Every command touching `key` takes `delay` to answer.
    pub fn slow(&self, key: &str, delay: Duration) {
        self.state()
            .slow
            .insert(Bytes::copy_from_slice(key.as_bytes()), delay);
    }

    /// The consistency level of every command so far, in order.
    pub fn consistencies(&self) -> Vec<Consistency> {
        self.state().consistencies.clone()
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

    fn run(&self, state: &mut State, command: Command) -> Result<Reply, Error> {
        let now = now_ms();
        let live = |state: &State, key: &Bytes| {
            state
                .keys
                .get(&(key_slot(key), key.clone()))
                .filter(|r| !r.is_expired(now))
                .cloned()
        };
        match command {
            Command::Get { key } => Ok(Reply::Record(live(state, &key))),
            Command::GetMany { keys } => {
                self.one_shard(&keys)?;
                Ok(Reply::Records(
                    keys.iter().map(|k| live(state, k)).collect(),
                ))
            }
            Command::Scan {
                cursor,
                limit,
                prefix,
                with_values,
            } => Ok(state.scan(
                cursor,
                limit,
                prefix,
                with_values,
                now,
                self.config.scan_budget,
            )),
            Command::Count => Ok(Reply::Count(
                state.keys.values().filter(|r| !r.is_expired(now)).count() as u64,
            )),
            Command::RandomKey => Ok(Reply::Key(
                state
                    .keys
                    .iter()
                    .find(|(_, r)| !r.is_expired(now))
                    .map(|((_, k), _)| k.clone()),
            )),
            Command::Write(op) => {
                // Like the node: a flush goes to every shard, anything else to one.
                if matches!(op, WriteOp::Flush) && !self.config.allow_flush {
                    return Err(Error::Disabled(
                        "FLUSHALL".into(),
                        "start the node with --allow-flush to enable it".into(),
                    ));
                }
                if !matches!(op, WriteOp::Flush) {
                    self.one_shard(op.keys())?;
                }
                state.last_index += 1;
                let applied = apply(
                    &op,
                    state.last_index,
                    now,
                    &self.config.limits,
                    &mut View(&state.keys),
                );
                for change in applied.changes {
                    match change {
                        Change::Put(key, record) => {
                            state.keys.insert((key_slot(&key), key), record);
                        }
                        Change::Delete(key) => {
                            state.keys.remove(&(key_slot(&key), key));
                        }
                        Change::DeleteAll => state.keys.clear(),
                    }
                }
                applied.reply.map(Reply::Write)
            }
        }
    }
}

impl State {
    /// Like the node's scan: examines at most `budget` keys, stops at `limit` entries, and
    /// without values keeps each record's version and expiry but not its value.
    fn scan(
        &self,
        cursor: ScanCursor,
        limit: usize,
        prefix: Option<Bytes>,
        with_values: bool,
        now: UnixMillis,
        budget: usize,
    ) -> Reply {
        let start = match cursor.after {
            Some(after) => Bound::Excluded((cursor.slot, after)),
            None => Bound::Included((cursor.slot, Bytes::new())),
        };
        let mut entries = Vec::new();
        let mut last = None;
        for ((slot, key), record) in self.keys.range((start, Bound::Unbounded)).take(budget) {
            if entries.len() >= limit.max(1) {
                break;
            }
            last = Some(ScanCursor {
                slot: *slot,
                after: Some(key.clone()),
            });
            if prefix.as_ref().is_none_or(|p| key.starts_with(p)) && !record.is_expired(now) {
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
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        let (result, delay) = {
            let mut state = self.state();
            state.calls += 1;
            state.consistencies.push(consistency);
            let keys = keys_of(&command);
            let owned: Vec<Bytes> = keys.iter().map(|k| (*k).clone()).collect();
            for key in &owned {
                *state.executed.entry(key.clone()).or_default() += 1;
            }
            let mut failure = owned.iter().find_map(|k| state.failures.get(k).cloned());
            for key in &owned {
                if let Some((err, left)) = state.failures_for.get_mut(key)
                    && *left > 0
                {
                    *left -= 1;
                    failure = failure.or(Some(err.clone()));
                }
            }
            let keys = keys_of(&command);
            let slow = keys.iter().find_map(|k| state.slow.get(*k).copied());
            // 0 to 2 ms, varying from call to call.
            let jitter = self
                .config
                .jitter
                .then(|| Duration::from_micros(state.calls * 7919 % 3 * 1000));
            let result = match failure {
                Some(err) => Err(err),
                None => self.run(&mut state, command),
            };
            (result, slow.or(jitter))
        };
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            result
        })
    }

    fn failed_groups(&self) -> Vec<(ShardId, Error)> {
        self.state().failed_groups.clone()
    }

    fn id(&self) -> u64 {
        self.config.id
    }

    fn limits(&self) -> Limits {
        self.config.limits
    }

    fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    fn allow_flush(&self) -> bool {
        self.config.allow_flush
    }

    fn max_keys_reply(&self) -> usize {
        self.config.max_keys_reply
    }

    fn cluster_view(&self) -> ClusterView {
        let id = self.config.id;
        let info = NodeInfo {
            id,
            peer_addr: String::new(),
            resp_addr: self.config.resp_addr.clone(),
            http_addr: String::new(),
            grpc_addr: String::new(),
        };
        ClusterView {
            cluster_id: "fake".into(),
            epoch: 1,
            this_node: id,
            nodes: vec![NodeView {
                info,
                up: true,
                state: Default::default(),
                disk: None,
                memory: None,
                down_for_ms: None,
                suspect: false,
            }],
            shards: self
                .layout
                .shards()
                .iter()
                .map(|(shard, range)| ShardView {
                    id: *shard,
                    range: *range,
                    replicas: vec![id],
                    learners: Vec::new(),
                    leader: Some(id),
                    last_applied: 0,
                })
                .collect(),
            replication: 1,
            meta: vec![id],
            meta_learners: Vec::new(),
            meta_leader: Some(id),
            moves: Vec::new(),
            rebalance_paused: false,
            moves_pending: 0,
            rebalance_limits: Default::default(),
            ..Default::default()
        }
    }
}
