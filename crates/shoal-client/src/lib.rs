//! An async Rust client for shoal, over its gRPC API (`shoal.v1`), that routes by itself.
//!
//! Connect to any node: the client fetches the cluster map (`Cluster.Map`), computes each
//! key's slot as the nodes do, and sends the request straight to the leader of the key's
//! shard over one HTTP/2 connection per node, skipping the forwarding hop. Responses name
//! the leader when it was another node, so a stale leader is corrected after one request;
//! the map is fetched again when a response carries a newer map epoch than the client's
//! (`x-shoal-epoch`; in the background, once per epoch), when a hint names a node it does
//! not know, or when a node stops answering.
//!
//! Retries are bounded (`ClientConfig::max_attempts`, exponential backoff with jitter) and
//! only ever safe: reads are retried on any failure, writes only when they certainly were
//! not applied (the connection was never made, or the node refused before proposing:
//! `no_leader`, `not_leader`, `overloaded`). A write whose outcome is unknown (the
//! connection broke after sending, the deadline passed, the leader changed under it)
//! returns [`Error::Indeterminate`] and is never sent again.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_client::Error> {
//! use shoal_client::{Client, PutOptions};
//! use std::time::Duration;
//!
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let version = client.put("greeting", "hello").await?;
//! let value = client.get("greeting").await?.expect("just written");
//! assert_eq!(value.value, "hello");
//! assert_eq!(value.version, version);
//!
//! // Compare-and-set: only if nobody wrote it since.
//! client.cas("greeting", version, "hello again").await?;
//! // A session key that expires in an hour, only if not there yet.
//! let options = PutOptions::new().ttl(Duration::from_secs(3600)).if_absent();
//! client.put_with("session:42", "alice", options).await?;
//! # Ok(()) }
//! ```

mod error;
mod ops;
mod routing;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use shoal_proto::v1 as pb;
use shoal_proto::v1::cluster_client::ClusterClient;
use shoal_proto::v1::kv_client::KvClient;
use shoal_proto::{EPOCH_METADATA, LEADER_METADATA};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

pub use error::Error;
pub use ops::{Entry, Op, OpOutcome, Page, PutOptions, ScanOptions, Txn, Value};

use error::Failure;
use routing::Routing;

/// How the client connects, waits and retries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Longest a call may take, per attempt; the server is told too (`grpc-timeout`).
    pub request_timeout: Duration,
    /// Longest a connection attempt to a node may take.
    pub connect_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// First backoff between attempts; doubled each time, with full jitter.
    pub backoff_base: Duration,
    /// Longest backoff between attempts.
    pub backoff_max: Duration,
    /// Largest message the client sends or accepts.
    pub max_message_bytes: usize,
    /// TLS, for a cluster started with `--tls-cert`: every node's certificate is checked
    /// against the CA, and the client certificate, if any, is presented.
    pub tls: Option<ClientTls>,
    /// A user and password, for a cluster with users (sent as `authorization` metadata
    /// with every call; use TLS, or the password crosses the network in the clear).
    pub credentials: Option<Credentials>,
}

/// A user name and password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the password.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `authorization` metadata value: `Basic base64(user:password)`.
    fn header(&self) -> Result<tonic::metadata::AsciiMetadataValue, Error> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        format!("Basic {encoded}")
            .parse()
            .map_err(|_| Error::InvalidAddress {
                addr: String::new(),
                reason: "the credentials cannot be sent as metadata".into(),
            })
    }
}

/// What every request carries: its deadline and the credentials.
#[derive(Clone)]
struct Stamp {
    timeout: Duration,
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl Stamp {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.untimed(message);
        request.set_timeout(self.timeout);
        request
    }

    /// For streams, which last as long as their reader wants.
    fn untimed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }
}

/// The client's TLS material, in PEM.
#[derive(Clone)]
pub struct ClientTls {
    /// The CA that signed the nodes' certificates.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, for nodes that ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the key.
        f.debug_struct("ClientTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA file, and the certificate and key files when given.
    pub fn from_files(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> std::io::Result<Self> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
            })
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            identity: match identity {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
        })
    }

    /// As tonic's TLS settings, for a channel of one's own.
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 8,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_message_bytes: 64 * 1024 * 1024,
            tls: None,
            credentials: None,
        }
    }
}

/// A handle to a shoal cluster. Cheap to clone; clones share connections and the map.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Addresses given at connect: where to go when no node of the map answers.
    seeds: Vec<String>,
    config: ClientConfig,
    routing: RwLock<Arc<Routing>>,
    /// One channel (one HTTP/2 connection, reconnecting by itself) per node address.
    channels: Mutex<HashMap<String, Channel>>,
    /// Serialises map fetches (see `refresh_after_failure`).
    refreshing: tokio::sync::Mutex<()>,
    /// The newest map epoch a response announced (see `note_epoch`).
    wanted_epoch: AtomicU64,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    retries: AtomicU64,
    refreshes: AtomicU64,
    leader_hints: AtomicU64,
}

/// What the client has done to find its way, since it connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent again after a failure that left them certainly unapplied.
    pub retries: u64,
    /// Times the cluster map was fetched (the first included).
    pub map_refreshes: u64,
    /// Responses that named another node as the shard's leader (a redirect followed on
    /// the next request).
    pub leader_hints: u64,
}

/// What a call is, for routing and retrying.
#[derive(Clone, Copy)]
struct Call<'a> {
    /// The key whose shard leader should serve it (`None`: any node).
    key: Option<&'a [u8]>,
    /// Whether it writes: then it is resent only when certainly not applied.
    write: bool,
}

impl Client {
    /// Connects to the cluster through the node at `addr` (`host:port` of its gRPC
    /// listener, `http://` optional) and fetches the cluster map.
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        Client::connect_with(&[addr], ClientConfig::default()).await
    }

    /// Connects through any of `addrs` (tried in order) with `config`.
    pub async fn connect_with(addrs: &[&str], config: ClientConfig) -> Result<Client, Error> {
        if addrs.is_empty() {
            return Err(Error::InvalidAddress {
                addr: String::new(),
                reason: "give at least one node's gRPC address".into(),
            });
        }
        let seeds = addrs
            .iter()
            .map(|a| normalise(a))
            .collect::<Result<Vec<_>, _>>()?;
        let client = Client {
            inner: Arc::new(Inner {
                seeds,
                config: ClientConfig {
                    max_attempts: config.max_attempts.max(1),
                    ..config
                },
                routing: RwLock::new(Arc::new(Routing::default())),
                channels: Mutex::new(HashMap::new()),
                refreshing: tokio::sync::Mutex::new(()),
                wanted_epoch: AtomicU64::new(0),
                stats: Counters::default(),
            }),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// Fetches the cluster map again from the first node that answers.
    pub async fn refresh(&self) -> Result<(), Error> {
        let _one = self.inner.refreshing.lock().await;
        self.fetch_map().await
    }

    /// After a failure: fetches the map unless another request fetched it while this one
    /// waited its turn, so a burst of failing requests costs one fetch, not one each.
    async fn refresh_after_failure(&self) {
        let seen = self.inner.stats.refreshes.load(Ordering::Acquire);
        let _one = self.inner.refreshing.lock().await;
        if self.inner.stats.refreshes.load(Ordering::Acquire) != seen {
            return;
        }
        if let Err(e) = self.fetch_map().await {
            tracing::debug!(error = %e, "map refresh failed");
        }
    }

    /// Fetches the map; the caller holds `refreshing`.
    async fn fetch_map(&self) -> Result<(), Error> {
        let mut candidates = self.routing().addrs();
        candidates.extend(self.inner.seeds.iter().cloned());
        let mut last = String::from("no address to ask");
        for addr in candidates {
            let mut cluster = ClusterClient::new(self.channel(&addr)?);
            let request = self.stamp()?.request(pb::MapRequest {});
            let answer =
                tokio::time::timeout(self.inner.config.request_timeout, cluster.map(request)).await;
            match answer {
                Ok(Ok(map)) => {
                    let routing = Routing::from_map(map.get_ref());
                    *self.inner.routing.write().expect("routing lock") = Arc::new(routing);
                    self.inner.stats.refreshes.fetch_add(1, Ordering::Release);
                    return Ok(());
                }
                Ok(Err(status)) => last = format!("{addr}: {}", status.message()),
                Err(_) => {
                    last = format!(
                        "{addr}: no answer in {:?}",
                        self.inner.config.request_timeout
                    )
                }
            }
        }
        Err(Error::Unavailable(format!(
            "could not fetch the cluster map from any node (last: {last})"
        )))
    }

    /// Counts of retries, map fetches and leader hints so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.stats;
        ClientStats {
            retries: c.retries.load(Ordering::Relaxed),
            map_refreshes: c.refreshes.load(Ordering::Relaxed),
            leader_hints: c.leader_hints.load(Ordering::Relaxed),
        }
    }

    /// The cluster map's epoch the client routes by.
    pub fn map_epoch(&self) -> u64 {
        self.routing().epoch
    }

    /// `key`'s value, read linearizably from its shard's leader; `None` when absent.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Value>, Error> {
        self.get_with(key.into(), pb::Consistency::Linearizable)
            .await
    }

    /// `key`'s value from whichever replica answers, possibly behind the leader.
    pub async fn get_stale(&self, key: impl Into<Bytes>) -> Result<Option<Value>, Error> {
        self.get_with(key.into(), pb::Consistency::Stale).await
    }

    async fn get_with(
        &self,
        key: Bytes,
        consistency: pb::Consistency,
    ) -> Result<Option<Value>, Error> {
        let message = pb::GetRequest {
            key: key.clone(),
            consistency: consistency as i32,
        };
        let call = Call {
            key: Some(&key),
            write: false,
        };
        match self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.get(stamp.request(message)).await }
            })
            .await
        {
            Ok(v) => Ok(Some(Value {
                value: v.value,
                version: v.version,
                expire_at_ms: v.expire_at_ms,
            })),
            Err(Error::Refused { code, .. }) if code == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `key`; answers its new version.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64, Error> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Writes `key` under `options` (conditions, time to live); answers its new version.
    pub async fn put_with(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: PutOptions,
    ) -> Result<u64, Error> {
        let key = key.into();
        let message = options.request(key.clone(), value.into());
        let call = Call {
            key: Some(&key),
            write: true,
        };
        let put = self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.put(stamp.request(message)).await }
            })
            .await?;
        Ok(put.version)
    }

    /// Writes `key` only if its version is still `expected` (0: only if absent); else
    /// `Error::Refused` with code `version_mismatch` and the actual version.
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expected: u64,
        value: impl Into<Bytes>,
    ) -> Result<u64, Error> {
        self.put_with(key, value, PutOptions::new().if_version(expected))
            .await
    }

    /// Deletes `key`; answers whether it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, Error> {
        self.delete_if(key, None).await
    }

    /// Deletes `key` only if its version is `if_version` (when given; else the error's
    /// code is `version_mismatch`); answers whether it existed.
    pub async fn delete_if(
        &self,
        key: impl Into<Bytes>,
        if_version: Option<u64>,
    ) -> Result<bool, Error> {
        let key = key.into();
        let message = pb::DeleteRequest {
            key: key.clone(),
            if_version,
        };
        let call = Call {
            key: Some(&key),
            write: true,
        };
        match self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.delete(stamp.request(message)).await }
            })
            .await
        {
            Ok(d) => Ok(d.deleted),
            Err(Error::Refused { code, .. }) if code == "not_found" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `by` to the integer in `key` (absent: 0); answers the new value.
    pub async fn incr(&self, key: impl Into<Bytes>, by: i64) -> Result<i64, Error> {
        let key = key.into();
        let message = pb::IncrRequest {
            key: key.clone(),
            by: Some(by),
        };
        let call = Call {
            key: Some(&key),
            write: true,
        };
        let incr = self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.incr(stamp.request(message)).await }
            })
            .await?;
        Ok(incr.value)
    }

    /// Appends to `key`'s value; answers the new length.
    pub async fn append(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, Error> {
        let key = key.into();
        let message = pb::AppendRequest {
            key: key.clone(),
            value: value.into(),
        };
        let call = Call {
            key: Some(&key),
            write: true,
        };
        let append = self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.append(stamp.request(message)).await }
            })
            .await?;
        Ok(append.length)
    }

    /// One page of keys in slot order, as `options` says (prefix, cursor, size).
    pub async fn scan_page(&self, options: &ScanOptions) -> Result<Page, Error> {
        let message = options.request();
        let call = Call {
            key: None,
            write: false,
        };
        let page = self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.scan(stamp.request(message)).await }
            })
            .await?;
        Ok(Page::from_message(page))
    }

    /// Every key starting with `prefix`, at most `limit` (0: all), streamed from one node
    /// page by page. Not retried part-way: a failure mid-stream is returned.
    ///
    /// ```no_run
    /// # async fn demo(client: shoal_client::Client) -> Result<(), shoal_client::Error> {
    /// for entry in client.scan("user:", 0, false).await? {
    ///     println!("{:?} at version {}", entry.key, entry.version);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn scan(
        &self,
        prefix: impl Into<Bytes>,
        limit: u32,
        with_values: bool,
    ) -> Result<Vec<Entry>, Error> {
        let message = pb::ScanRequest {
            prefix: prefix.into(),
            cursor: String::new(),
            limit,
            consistency: 0,
            with_values,
        };
        let call = Call {
            key: None,
            write: false,
        };
        let pages = self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.scan_stream(stamp.untimed(message)).await }
            })
            .await?;
        let mut pages = pages;
        let mut entries = Vec::new();
        loop {
            match pages.message().await {
                Ok(Some(page)) => entries.extend(Page::from_message(page).entries),
                Ok(None) => return Ok(entries),
                Err(status) => return Err(Failure::from_status(status).into_error(false)),
            }
        }
    }

    /// Runs `txn` atomically on its shard's leader: one result per op, in order. If a
    /// compared key changed, nothing is applied and the error's code is `compare_failed`.
    pub async fn txn(&self, txn: Txn) -> Result<Vec<OpOutcome>, Error> {
        let message = txn.message();
        let key = txn.first_key().cloned();
        let call = Call {
            key: key.as_deref(),
            write: txn.ops.iter().any(Op::is_write),
        };
        let response = self
            .call(call, |mut kv, stamp| {
                let message = message.clone();
                async move { kv.txn(stamp.request(message)).await }
            })
            .await?;
        Ok(response
            .results
            .into_iter()
            .map(OpOutcome::from_message)
            .collect())
    }

    /// Runs independent `ops` on any keys: grouped by the node leading each key's shard,
    /// one Batch call per node, concurrently. One outcome per op, in order; not atomic,
    /// and two ops on one key have no order between them (use [`Client::txn`]).
    ///
    /// ```no_run
    /// # async fn demo(client: shoal_client::Client) -> Result<(), shoal_client::Error> {
    /// use shoal_client::{Op, OpOutcome};
    ///
    /// let ops = (0..100).map(|i| Op::put(format!("user:{i}"), "new")).collect();
    /// let outcomes = client.batch(ops).await?;
    /// let failed = outcomes.iter().filter(|o| matches!(o, OpOutcome::Failed { .. }));
    /// assert_eq!(failed.count(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpOutcome>, Error> {
        let routing = self.routing();
        let mut groups: HashMap<Option<String>, Vec<usize>> = HashMap::new();
        for (index, op) in ops.iter().enumerate() {
            let leader = routing
                .shard_of(op.key())
                .and_then(|s| routing.leader_addr(s))
                .map(str::to_string);
            groups.entry(leader).or_default().push(index);
        }
        let calls = groups.into_values().map(|indexes| {
            let group: Vec<Op> = indexes.iter().map(|&i| ops[i].clone()).collect();
            async move {
                let message = pb::BatchRequest {
                    ops: group.iter().map(Op::message).collect(),
                    consistency: 0,
                };
                let call = Call {
                    key: group.first().map(|op| &op.key()[..]),
                    write: group.iter().any(Op::is_write),
                };
                let response = self
                    .call(call, |mut kv, stamp| {
                        let message = message.clone();
                        async move { kv.batch(stamp.request(message)).await }
                    })
                    .await?;
                Ok::<_, Error>((indexes, response.results))
            }
        });
        let mut outcomes = vec![None; ops.len()];
        for group in futures_util::future::join_all(calls).await {
            let (indexes, results) = group?;
            for (index, result) in indexes.into_iter().zip(results) {
                outcomes[index] = Some(OpOutcome::from_message(result));
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| OpOutcome::Failed {
                    code: "internal".into(),
                    message: "the server sent fewer results than ops".into(),
                })
            })
            .collect())
    }

    fn routing(&self) -> Arc<Routing> {
        self.inner.routing.read().expect("routing lock").clone()
    }

    fn stamp(&self) -> Result<Stamp, Error> {
        Ok(Stamp {
            timeout: self.inner.config.request_timeout,
            authorization: self
                .inner
                .config
                .credentials
                .as_ref()
                .map(Credentials::header)
                .transpose()?,
        })
    }

    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let mut channels = self.inner.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let scheme = match self.inner.config.tls {
            Some(_) => "https",
            None => "http",
        };
        let invalid = |e: tonic::transport::Error| Error::InvalidAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(invalid)?;
        if let Some(tls) = &self.inner.config.tls {
            endpoint = endpoint.tls_config(tls.tonic()).map_err(invalid)?;
        }
        let endpoint = endpoint
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Where attempt `attempt` of `call` goes: the leader of its key's shard when known,
    /// else the nodes in turn.
    fn target(&self, call: Call<'_>, attempt: u32) -> (Option<u32>, String) {
        let routing = self.routing();
        let shard = call.key.and_then(|k| routing.shard_of(k));
        if let Some(addr) = shard.and_then(|s| routing.leader_addr(s)) {
            return (shard, addr.to_string());
        }
        let mut addrs = routing.addrs();
        if addrs.is_empty() {
            addrs = self.inner.seeds.clone();
        }
        (shard, addrs[attempt as usize % addrs.len()].clone())
    }

    fn learn_leader(&self, shard: Option<u32>, leader: u64) -> bool {
        self.inner
            .stats
            .leader_hints
            .fetch_add(1, Ordering::Relaxed);
        let Some(shard) = shard else { return true };
        let mut routing = self.inner.routing.write().expect("routing lock");
        Arc::make_mut(&mut routing).set_leader(shard, leader)
    }

    /// A node answered with map `epoch`: when it is newer than the client's, fetch the map
    /// in the background, once per epoch seen (a node still on an older map must not set
    /// off a fetch on every response).
    fn note_epoch(&self, epoch: u64) {
        if epoch <= self.routing().epoch {
            return;
        }
        if self.inner.wanted_epoch.fetch_max(epoch, Ordering::AcqRel) >= epoch {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move { client.refresh_after_failure().await });
    }

    fn forget_leader(&self, shard: Option<u32>) {
        let Some(shard) = shard else { return };
        let mut routing = self.inner.routing.write().expect("routing lock");
        Arc::make_mut(&mut routing).forget_leader(shard);
    }

    /// Runs `send` against the right node, retrying what is safe to retry.
    async fn call<T, F, Fut>(&self, call: Call<'_>, send: F) -> Result<T, Error>
    where
        F: Fn(KvClient<Channel>, Stamp) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let config = &self.inner.config;
        let mut attempt = 0;
        loop {
            let (shard, addr) = self.target(call, attempt);
            let kv = KvClient::new(self.channel(&addr)?)
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes);
            let failure =
                match tokio::time::timeout(config.request_timeout, send(kv, self.stamp()?)).await {
                    Ok(Ok(response)) => {
                        if let Some(leader) = leader_hint(response.metadata())
                            && !self.learn_leader(shard, leader)
                        {
                            // A leader the map has no address for: the map is old.
                            self.refresh_after_failure().await;
                        }
                        if let Some(epoch) = metadata_u64(response.metadata(), EPOCH_METADATA) {
                            self.note_epoch(epoch);
                        }
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => Failure::from_status(status),
                    Err(_) => Failure::Lost(format!(
                        "no answer from {addr} in {:?}",
                        config.request_timeout
                    )),
                };
            attempt += 1;
            let retry = failure.safe_to_resend(call.write);
            if !retry || attempt >= config.max_attempts {
                return Err(failure.into_error(call.write));
            }
            tracing::debug!(%addr, attempt, ?failure, "retrying");
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            match &failure {
                Failure::Server {
                    leader: Some(leader),
                    ..
                } => {
                    if !self.learn_leader(shard, *leader) {
                        self.refresh_after_failure().await;
                    }
                }
                // The node is gone or has no leader for the shard: ask the others.
                _ => {
                    self.forget_leader(shard);
                    self.refresh_after_failure().await;
                }
            }
            tokio::time::sleep(backoff(config, attempt)).await;
        }
    }
}

/// Full-jitter exponential backoff before attempt `attempt` (1-based).
fn backoff(config: &ClientConfig, attempt: u32) -> Duration {
    let exp = config
        .backoff_base
        .saturating_mul(1 << attempt.min(16))
        .min(config.backoff_max);
    let nanos = exp.as_nanos() as u64;
    Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos.max(1)))
}

fn leader_hint(metadata: &tonic::metadata::MetadataMap) -> Option<u64> {
    metadata_u64(metadata, LEADER_METADATA)
}

fn metadata_u64(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<u64> {
    metadata.get(key)?.to_str().ok()?.parse().ok()
}

/// `addr` as `host:port`, whether given with `http://`, `https://` or neither.
fn normalise(addr: &str) -> Result<String, Error> {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let bare = bare.trim_end_matches('/');
    if bare.is_empty() || !bare.contains(':') || bare.contains('/') {
        return Err(Error::InvalidAddress {
            addr: addr.to_string(),
            reason: "expected HOST:PORT of a node's gRPC listener (--grpc-addr)".into(),
        });
    }
    Ok(bare.to_string())
}

#[cfg(test)]
mod tests;
