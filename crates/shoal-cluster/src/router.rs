//! The router: any node accepts any command and gets it to the replica that must answer.
//!
//! A keyed command goes to its shard's leader: run here if this node leads, else forwarded
//! over the peer transport in one hop (the callee never forwards again). A redirect
//! (`NotLeader` with a hint) or an election in progress (`NoLeader`) is retried, with
//! backoff for elections and for redirects that come round again (a leader transfer in
//! progress), until `Tuning::route_timeout` or `MAX_ROUTE_ATTEMPTS`. A request
//! that may have taken effect (a forwarded write whose answer was lost) is never retried:
//! the client gets `Indeterminate`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use shoal_core::{Command, Consistency, Error, Reply, ShardId, WriteOp, WriteReply};
use shoal_raft::transport::CallError;
use shoal_raft::transport::wire::{Request, Response};

use crate::clock::now_ms;
use crate::executor::Executor;
use crate::local::point_read_keys;
use crate::start_error::storage_err;

/// Most tries a request makes to find its shard's leader. News of a new leader restarts
/// the backoff, so a failover (two changes of leader: none, then the new one) spends
/// more tries than backoff alone would; `Tuning::route_timeout` bounds the time in all.
pub const MAX_ROUTE_ATTEMPTS: u32 = 32;
/// Most shards one SCAN call visits before it returns a cursor.
pub const MAX_SHARDS_PER_SCAN: usize = 4;
/// Backoff between tries while a shard elects a leader: doubles from the first to the last.
const ELECTION_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(400));

/// Where one try of a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Here,
    Peer(u64),
}

/// How one try ended.
enum Attempt {
    Done(Result<Reply, Error>),
    /// Not executed; try again, at `hint` if given, after a pause if `wait`.
    Retry {
        error: Error,
        hint: Option<u64>,
        avoid: Option<u64>,
        wait: bool,
    },
}

impl Executor {
    /// Executes a command wherever it must run. The command is ordered at call time,
    /// before the returned future is polled: two writes submitted in sequence from one task
    /// are applied in that order (unless a leader change makes the first one retry).
    pub fn execute(
        self: &Arc<Self>,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        self.execute_routed(command, consistency, true)
    }

    /// Like `execute`, but a keyed command whose shard is led elsewhere is not forwarded:
    /// it fails with `NotLeader` (RESP's `-MOVED`) for clients that route by themselves.
    pub fn execute_direct(
        self: &Arc<Self>,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        self.execute_routed(command, consistency, false)
    }

    fn execute_routed(
        self: &Arc<Self>,
        command: Command,
        consistency: Consistency,
        forward: bool,
    ) -> BoxFuture<'static, Result<Reply, Error>> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        if self.is_stopped() {
            return Box::pin(async { Err(Error::ShuttingDown) });
        }
        if self.is_removed() {
            return Box::pin(std::future::ready(Err(self.removed_error())));
        }
        // A write's keys and values live on in the Raft log, the record cache and the
        // memtable: give them their own allocations so they never pin a front end's read
        // buffer (RESP's, or hyper's 8 KiB+ one: under HTTP PUTs a node's RSS grew 20 MB/s
        // and faulting that memory in was 13% of the cluster's CPU).
        let command = match command {
            Command::Write(op) => Command::Write(op.into_owned()),
            other => other,
        };
        let consistency = self.read_consistency(&command, consistency);
        let shard = match &command {
            Command::Write(WriteOp::Flush) => return self.flush(),
            Command::Count => return Box::pin(std::future::ready(Ok(self.count()))),
            Command::RandomKey => {
                let node = self.clone();
                return Box::pin(async move { node.random_key().await });
            }
            Command::Scan { .. } => {
                let node = self.clone();
                return Box::pin(async move { node.scan(command, consistency).await });
            }
            Command::GetMany { keys } if keys.is_empty() => {
                return Box::pin(std::future::ready(Ok(Reply::Records(Vec::new()))));
            }
            Command::Get { .. } | Command::GetMany { .. } => {
                let keys = point_read_keys(&command);
                if let Err(e) = keys
                    .iter()
                    .try_for_each(|k| self.config.limits.check_key(k))
                {
                    return Box::pin(std::future::ready(Err(e)));
                }
                self.shard_of(keys.iter())
            }
            Command::Write(op) => self.shard_of(op.keys().into_iter()),
        };
        match shard {
            Ok(shard) if forward => Box::pin(self.run_on_shard(shard, command, consistency)),
            Ok(shard) => match self.choose(shard, &command, consistency, None, &[]) {
                Some(Target::Here) => Box::pin(self.execute_here(shard, command, consistency)),
                Some(Target::Peer(leader)) => {
                    Box::pin(std::future::ready(Err(Error::NotLeader { shard, leader })))
                }
                None => Box::pin(std::future::ready(Err(Error::NoLeader { shard }))),
            },
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// Answers a point read (GET, MGET) right away when nothing needs to be awaited: the
    /// read is stale by request and this node holds a replica, or this node may serve it
    /// linearizably from local state (`Group::local_reads_ok`). `None` means "use
    /// `execute`". Saves the future, the queueing and the wake-up of the commonest request.
    pub fn try_read_now(
        &self,
        command: &Command,
        consistency: Consistency,
    ) -> Option<Result<Reply, Error>> {
        if self.is_stopped() || self.is_removed() {
            return None;
        }
        let consistency = self.read_consistency(command, consistency);
        let keys = point_read_keys(command);
        if keys.is_empty() {
            return None;
        }
        let limits = self.config.limits;
        if let Err(e) = keys.iter().try_for_each(|k| limits.check_key(k)) {
            return Some(Err(e));
        }
        let shard = match self.shard_of(keys.iter()) {
            Ok(shard) => shard,
            Err(e) => return Some(Err(e)),
        };
        let group = self.local_group(shard)?;
        if consistency == Consistency::Linearizable && !group.local_reads_ok() {
            return None;
        }
        self.commands.fetch_add(1, Ordering::Relaxed);
        Some(self.read_here(shard, command))
    }

    /// The consistency a command really gets: as asked, except in the deliberately broken
    /// test mode (`Tuning::unsafe_unconfirmed_reads`) where every read is a stale one.
    fn read_consistency(&self, command: &Command, asked: Consistency) -> Consistency {
        if self.config.unsafe_unconfirmed_reads && !matches!(command, Command::Write(_)) {
            Consistency::Stale
        } else {
            asked
        }
    }

    /// Where the next try of `command` on `shard` goes.
    fn choose(
        &self,
        shard: ShardId,
        command: &Command,
        consistency: Consistency,
        hint: Option<u64>,
        avoid: &[u64],
    ) -> Option<Target> {
        let me = self.me();
        let target = |id: u64| {
            if id == me {
                Target::Here
            } else {
                Target::Peer(id)
            }
        };
        if let Some(hint) = hint.filter(|h| !avoid.contains(h)) {
            return Some(target(hint));
        }
        let hosted = self.local_group(shard).is_some();
        let is_read = !matches!(command, Command::Write(_));
        if is_read && consistency == Consistency::Stale && hosted {
            return Some(Target::Here);
        }
        // A leader known to be unreachable (killed, cut off) is being replaced: asking it
        // again only fails; the replica here, if any, knows when the election is over.
        if let Some(leader) = self
            .leader_of(shard)
            .filter(|l| !avoid.contains(l) && (*l == me || !self.router.is_down(*l)))
        {
            return Some(target(leader));
        }
        if hosted {
            // Here answers NoLeader or a fresh hint.
            return Some(Target::Here);
        }
        let replicas = self.replicas(shard);
        let usable = |r: &&u64| !avoid.contains(*r) && **r != me;
        replicas
            .iter()
            .filter(usable)
            .find(|r| self.peers.is_up(**r))
            .or_else(|| replicas.iter().find(usable))
            .map(|r| Target::Peer(*r))
    }

    /// Runs `command` on `shard`'s leader (or any replica for a stale read), retrying
    /// redirects and elections. The first try is dispatched before this returns.
    fn run_on_shard(
        self: &Arc<Self>,
        shard: ShardId,
        command: Command,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        let first = self.attempt(shard, command.clone(), consistency, None, &[]);
        let node = self.clone();
        let is_write = matches!(command, Command::Write(_));
        async move {
            let started = Instant::now();
            let deadline = started + node.config.route_timeout;
            let give_up = tokio::time::Instant::from_std(started + node.config.request_timeout);
            let mut pending = first;
            let mut tries = 1u32;
            let mut backoff = ELECTION_BACKOFF.0;
            // Leaders this request was redirected to. A second redirect to one of them
            // means the replicas disagree for now (a leader handing over to a node that
            // has not won yet, or a stale hint during an election): wait before following
            // it, or the redirects ping-pong through every attempt in a few milliseconds.
            let mut hinted: Vec<u64> = Vec::new();
            loop {
                // A leader cut off from its majority neither commits nor confirms reads;
                // the request must still end.
                let Ok(outcome) = tokio::time::timeout_at(give_up, pending).await else {
                    let waited = node.config.request_timeout.as_millis() as u64;
                    return Err(if is_write {
                        Error::Indeterminate(format!(
                            "shard {shard} did not commit the write within {waited} ms"
                        ))
                    } else {
                        Error::Timeout(waited)
                    });
                };
                match outcome {
                    Attempt::Done(result) => return result,
                    Attempt::Retry {
                        error,
                        hint,
                        avoid,
                        wait,
                    } => {
                        if tries >= MAX_ROUTE_ATTEMPTS || Instant::now() >= deadline {
                            // The client asked this node to route for it: a redirect it
                            // is not expected to follow (a plain RESP client would get
                            // MOVED) is no answer; "no leader, retry" is.
                            return Err(match error {
                                Error::NotLeader { shard, .. } => Error::NoLeader { shard },
                                other => other,
                            });
                        }
                        // A replica that has not heard of the election yet still names
                        // the dead leader: following that hint only costs a round of
                        // backoff (measured: a failover's first write came 400 ms after
                        // the new leader, 1.8 s instead of 1.4 s after the kill).
                        let (hint, wait) = match hint {
                            Some(h) if node.router.is_down(h) => (None, true),
                            _ => (hint, wait),
                        };
                        let seen_before = match hint {
                            Some(h) if hinted.contains(&h) => true,
                            Some(h) => {
                                hinted.push(h);
                                false
                            }
                            None => false,
                        };
                        if wait || seen_before {
                            // A replica here hears of a new leader first: go then, and
                            // start the backoff over, since the news may be a step ahead of
                            // the leader itself (it has our vote, not yet everyone's).
                            let news = match node.local_group(shard).map(|g| g.known_leader()) {
                                Some(leader) => tokio::select! {
                                    () = tokio::time::sleep(backoff) => false,
                                    () = leader.changed() => true,
                                },
                                None => {
                                    tokio::time::sleep(backoff).await;
                                    false
                                }
                            };
                            backoff = if news {
                                ELECTION_BACKOFF.0
                            } else {
                                (backoff * 2).min(ELECTION_BACKOFF.1)
                            };
                        }
                        tries += 1;
                        pending = node.attempt(
                            shard,
                            command.clone(),
                            consistency,
                            hint,
                            avoid.as_slice(),
                        );
                    }
                }
            }
        }
    }

    /// One try: picks the target and sends the command there, now.
    fn attempt(
        self: &Arc<Self>,
        shard: ShardId,
        command: Command,
        consistency: Consistency,
        hint: Option<u64>,
        avoid: &[u64],
    ) -> BoxFuture<'static, Attempt> {
        let me = self.me();
        let is_write = matches!(command, Command::Write(_));
        match self.choose(shard, &command, consistency, hint, avoid) {
            None => Box::pin(std::future::ready(Attempt::Retry {
                error: Error::NoLeader { shard },
                hint: None,
                avoid: None,
                wait: true,
            })),
            Some(Target::Here) => {
                let run = self.execute_here(shard, command, consistency);
                Box::pin(async move { classify(run.await, me, None) })
            }
            Some(Target::Peer(peer)) => {
                let call = self.router.call(
                    peer,
                    Request::Forward {
                        shard,
                        command,
                        consistency,
                    },
                    self.config.forward_timeout,
                );
                Box::pin(async move {
                    match call.await {
                        Ok(Response::Forward(result)) => classify(result, me, Some(peer)),
                        Ok(_) => Attempt::Done(Err(Error::Internal(format!(
                            "node {peer} answered a forwarded command with the wrong message"
                        )))),
                        Err(CallError::NotSent(why) | CallError::Refused(why)) => {
                            tracing::debug!(shard, peer, %why, "forward not delivered; retrying");
                            Attempt::Retry {
                                error: Error::NoLeader { shard },
                                hint: None,
                                avoid: Some(peer),
                                wait: true,
                            }
                        }
                        Err(CallError::Lost(why)) if is_write => Attempt::Done(Err(
                            Error::Indeterminate(format!("forwarded to node {peer}: {why}")),
                        )),
                        Err(CallError::Lost(_)) => Attempt::Retry {
                            error: Error::NoLeader { shard },
                            hint: None,
                            avoid: Some(peer),
                            wait: true,
                        },
                    }
                })
            }
        }
    }

    /// FLUSHALL: every shard, each through its leader.
    fn flush(self: &Arc<Self>) -> BoxFuture<'static, Result<Reply, Error>> {
        if !self.config.allow_flush {
            return Box::pin(std::future::ready(Err(Error::Disabled(
                "FLUSHALL".into(),
                "start the node with --allow-flush to enable it".into(),
            ))));
        }
        let runs: Vec<_> = self
            .layout
            .shards()
            .iter()
            .map(|(shard, _)| {
                self.run_on_shard(
                    *shard,
                    Command::Write(WriteOp::Flush),
                    Consistency::Linearizable,
                )
            })
            .collect();
        Box::pin(async move {
            for result in join_all(runs).await {
                result?;
            }
            Ok(Reply::Write(WriteReply::Ok))
        })
    }

    /// DBSIZE: this node's replicas' counts, and peers' latest reports for other shards.
    fn count(&self) -> Reply {
        let total = self
            .layout
            .shards()
            .iter()
            .map(|(shard, _)| match self.local_group(*shard) {
                Some(g) => g.key_count.load(Ordering::Relaxed),
                None => self
                    .replicas(*shard)
                    .iter()
                    .filter_map(|r| self.peers.replica(*r, *shard))
                    .max_by_key(|r| r.last_applied)
                    .map_or(0, |r| r.key_count),
            })
            .sum();
        Reply::Count(total)
    }

    /// RANDOMKEY: the first live key at or after a random slot, going round the shards.
    /// A shard with a replica here is read in place; any other is asked for one key by a
    /// stale scan through one of its replicas (not skipped on the strength of peer status,
    /// which lags writes by up to a status interval). Stale either way: a random key needs
    /// no leader's confirmation.
    async fn random_key(self: &Arc<Self>) -> Result<Reply, Error> {
        let now = now_ms();
        let start = rand::random_range(0..shoal_core::SLOT_COUNT);
        let shards = self.layout.shards();
        let first = self.layout.shard_of_slot(start);
        if shards.is_empty() {
            return Ok(Reply::Key(None));
        }
        let pos = shards.iter().position(|(id, _)| *id == first).unwrap_or(0);
        // One more step than there are shards: a scan of the first shard (when remote)
        // started mid-range, so its lower slots are visited at the end.
        for i in 0..=shards.len() {
            let (id, range) = shards[(pos + i) % shards.len()];
            let slot = if i == 0 { start } else { range.start };
            let key = if self.local_group(id).is_some() {
                if i == shards.len() {
                    break; // read in full (wrapping) at i = 0
                }
                self.engine
                    .key_near_slot(id, slot, now)
                    .map_err(storage_err)?
            } else {
                let page = Command::Scan {
                    cursor: shoal_core::command::ScanCursor { slot, after: None },
                    limit: 1,
                    prefix: None,
                    with_values: false,
                };
                match self.run_on_shard(id, page, Consistency::Stale).await? {
                    Reply::Scan { entries, .. } => entries.into_iter().next().map(|(key, _)| key),
                    _ => return Err(Error::Internal("scan answered with another reply".into())),
                }
            };
            if key.is_some() {
                return Ok(Reply::Key(key));
            }
        }
        Ok(Reply::Key(None))
    }

    /// SCAN across shards in slot order, each shard through its leader (or any replica
    /// for a stale scan), visiting at most `MAX_SHARDS_PER_SCAN` shards per call.
    async fn scan(
        self: &Arc<Self>,
        command: Command,
        consistency: Consistency,
    ) -> Result<Reply, Error> {
        let Command::Scan {
            mut cursor,
            limit,
            prefix,
            with_values,
        } = command
        else {
            return Err(Error::Internal("not a scan".into()));
        };
        let limit = limit.max(1);
        let mut entries = Vec::new();
        let slot_count = shoal_core::SLOT_COUNT;
        for _ in 0..MAX_SHARDS_PER_SCAN {
            if cursor.slot >= slot_count {
                return Ok(Reply::Scan {
                    entries,
                    next: None,
                });
            }
            let shard = self.layout.shard_of_slot(cursor.slot);
            let page = Command::Scan {
                cursor: cursor.clone(),
                limit: limit - entries.len(),
                prefix: prefix.clone(),
                with_values,
            };
            let Reply::Scan {
                entries: found,
                next,
            } = self.run_on_shard(shard, page, consistency).await?
            else {
                return Err(Error::Internal("scan answered with another reply".into()));
            };
            entries.extend(found);
            let Some(next) = next else {
                return Ok(Reply::Scan {
                    entries,
                    next: None,
                });
            };
            let same_shard = self.layout.shard_of_slot(next.slot) == shard;
            cursor = next;
            if same_shard || entries.len() >= limit {
                break;
            }
        }
        Ok(Reply::Scan {
            entries,
            next: Some(cursor),
        })
    }
}

/// Sorts a try's result into "done" and "not executed, try again".
fn classify(result: Result<Reply, Error>, me: u64, from: Option<u64>) -> Attempt {
    match result {
        Err(Error::NotLeader { leader, shard }) if leader != me && Some(leader) != from => {
            Attempt::Retry {
                error: Error::NotLeader { shard, leader },
                hint: Some(leader),
                avoid: None,
                wait: false,
            }
        }
        Err(error @ (Error::NotLeader { .. } | Error::NoLeader { .. })) => Attempt::Retry {
            error,
            hint: None,
            avoid: None,
            wait: true,
        },
        other => Attempt::Done(other),
    }
}
