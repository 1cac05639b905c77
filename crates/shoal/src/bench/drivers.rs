//! How `shoal bench` sends one round of requests over each protocol: HTTP (reqwest, to each
//! shard's leader or one node), gRPC (the `shoal-client` smart client, or plain stubs to one
//! node) and RESP (the `redis` crate, to one address: shoal's RESP port or any Redis
//! server). A round is `--pipeline` requests: concurrent calls for HTTP and gRPC, one
//! pipeline for RESP; each answer's latency is what its caller waited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_core::map::ClusterView;
use shoal_core::slot::{SLOT_COUNT, key_slot};
use shoal_proto::v1 as pb;
use shoal_proto::v1::kv_client::KvClient;
use tonic::transport::Channel;

use super::{Route, Workload};
use crate::client::base_url;

/// One request of a round.
#[derive(Debug, Clone)]
pub struct Request {
    pub write: bool,
    pub key: String,
}

/// A connection's way of sending rounds.
pub enum Driver {
    Http {
        http: reqwest::Client,
        targets: Arc<HttpTargets>,
        value: Bytes,
        stale: bool,
    },
    /// Routes by itself (`--route leader`).
    GrpcSmart {
        client: shoal_client::Client,
        value: Bytes,
        stale: bool,
    },
    /// Everything to one node, which forwards (`--route node`).
    GrpcNode {
        kv: KvClient<Channel>,
        value: Bytes,
        stale: bool,
    },
    Resp {
        connection: redis::aio::MultiplexedConnection,
        value: Bytes,
    },
}

/// A round's answers: each request's latency, or why it failed.
pub type Answers = Vec<Result<Duration, String>>;

impl Driver {
    pub async fn round(&mut self, requests: &[Request]) -> Answers {
        match self {
            Driver::Http {
                http,
                targets,
                value,
                stale,
            } => {
                let calls = requests.iter().map(|r| {
                    let url = targets.url(&r.key, r.write, *stale);
                    timed(http_request(http, url, r.write, value))
                });
                futures_util::future::join_all(calls).await
            }
            Driver::GrpcSmart {
                client,
                value,
                stale,
            } => {
                let calls = requests.iter().map(|r| {
                    let client = client.clone();
                    let (key, value, write, stale) =
                        (r.key.clone(), value.clone(), r.write, *stale);
                    timed(async move {
                        let result = match (write, stale) {
                            (true, _) => client.put(key, value).await.map(drop),
                            (false, false) => client.get(key).await.map(drop),
                            (false, true) => client.get_stale(key).await.map(drop),
                        };
                        result.map_err(|e| e.to_string())
                    })
                });
                futures_util::future::join_all(calls).await
            }
            Driver::GrpcNode { kv, value, stale } => {
                let calls = requests.iter().map(|r| {
                    let mut kv = kv.clone();
                    let (key, value, write, stale) =
                        (Bytes::from(r.key.clone()), value.clone(), r.write, *stale);
                    timed(async move { grpc_request(&mut kv, key, value, write, stale).await })
                });
                futures_util::future::join_all(calls).await
            }
            Driver::Resp { connection, value } => {
                let mut pipe = redis::pipe();
                for r in requests {
                    if r.write {
                        pipe.cmd("SET").arg(&r.key).arg(value.as_ref()).ignore();
                    } else {
                        pipe.cmd("GET").arg(&r.key).ignore();
                    }
                }
                let sent = Instant::now();
                let result: redis::RedisResult<()> = pipe.query_async(connection).await;
                let waited = sent.elapsed();
                let answer = result.map(|()| waited).map_err(|e| e.to_string());
                vec![answer; requests.len()]
            }
        }
    }
}

async fn timed(call: impl Future<Output = Result<(), String>>) -> Result<Duration, String> {
    let sent = Instant::now();
    call.await.map(|()| sent.elapsed())
}

/// One HTTP request; a GET of an absent key (404) is an answer, not a failure.
pub async fn http_request(
    http: &reqwest::Client,
    url: String,
    write: bool,
    value: &Bytes,
) -> Result<(), String> {
    let response = if write {
        http.put(url).body(value.clone()).send().await
    } else {
        http.get(url).send().await
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read the whole body: the connection is reused only once it has been drained.
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() || (!write && status == reqwest::StatusCode::NOT_FOUND) {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ))
    }
}

async fn grpc_request(
    kv: &mut KvClient<Channel>,
    key: Bytes,
    value: Bytes,
    write: bool,
    stale: bool,
) -> Result<(), String> {
    let result = if write {
        let put = pb::PutRequest {
            key,
            value,
            ..pb::PutRequest::default()
        };
        kv.put(put).await.map(drop)
    } else {
        let consistency = if stale {
            pb::Consistency::Stale
        } else {
            pb::Consistency::Linearizable
        };
        let get = pb::GetRequest {
            key,
            consistency: consistency as i32,
        };
        match kv.get(get).await {
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            other => other.map(drop),
        }
    };
    result.map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// Where each slot's HTTP requests go: an index into `bases`.
pub struct HttpTargets {
    bases: Vec<String>,
    by_slot: Vec<u16>,
}

impl HttpTargets {
    pub fn new(route: Route, default_base: &str, view: &ClusterView) -> HttpTargets {
        let mut bases = vec![default_base.to_string()];
        let mut by_slot = vec![0u16; SLOT_COUNT as usize];
        if route == Route::Leader {
            for shard in &view.shards {
                let Some(leader) = shard.leader else { continue };
                let Some(node) = view.nodes.iter().find(|n| n.info.id == leader) else {
                    continue;
                };
                let Ok(base) = base_url(&node.info.http_addr) else {
                    continue;
                };
                let index = match bases.iter().position(|b| *b == base) {
                    Some(i) => i,
                    None => {
                        bases.push(base);
                        bases.len() - 1
                    }
                };
                for slot in shard.range.start as u32..shard.range.end {
                    by_slot[slot as usize] = index as u16;
                }
            }
        }
        HttpTargets { bases, by_slot }
    }

    /// How many nodes requests go to.
    pub fn in_use(&self) -> usize {
        let mut used: Vec<u16> = self.by_slot.clone();
        used.sort_unstable();
        used.dedup();
        used.len()
    }

    pub fn url(&self, key: &str, write: bool, stale: bool) -> String {
        let base = &self.bases[self.by_slot[key_slot(key.as_bytes()) as usize] as usize];
        let query = if !write && stale {
            "?consistency=stale"
        } else {
            ""
        };
        format!("{base}/v1/kv/{key}{query}")
    }
}

/// A smart client (routing to shard leaders) through the node at `addr`.
pub async fn smart_client(
    addr: &str,
    tls: Option<shoal_client::ClientTls>,
    credentials: Option<shoal_client::Credentials>,
) -> Result<shoal_client::Client, String> {
    let config = shoal_client::ClientConfig {
        tls,
        credentials,
        ..Default::default()
    };
    shoal_client::Client::connect_with(&[addr], config)
        .await
        .map_err(|e| format!("cannot connect over gRPC to {addr}: {e}"))
}

/// What every connection's driver is made from.
pub enum Setup {
    Http {
        http: reqwest::Client,
        targets: Arc<HttpTargets>,
    },
    Grpc {
        addr: String,
        route: Route,
        /// With `--shared-client`: the one smart client every connection uses.
        shared: Option<shoal_client::Client>,
        tls: Option<shoal_client::ClientTls>,
        credentials: Option<shoal_client::Credentials>,
    },
    Resp {
        url: String,
    },
}

impl Setup {
    /// A driver with its own connection(s), so `--connections` means as many TCP
    /// connections per node for every protocol.
    pub async fn driver(&self, workload: &Workload) -> Result<Driver, String> {
        let value = workload.value.clone();
        let stale = workload.stale;
        match self {
            Setup::Http { http, targets } => Ok(Driver::Http {
                http: http.clone(),
                targets: targets.clone(),
                value,
                stale,
            }),
            Setup::Grpc {
                addr,
                route: Route::Leader,
                shared,
                tls,
                credentials,
            } => {
                let client = match shared {
                    Some(client) => client.clone(),
                    None => smart_client(addr, tls.clone(), credentials.clone()).await?,
                };
                Ok(Driver::GrpcSmart {
                    client,
                    value,
                    stale,
                })
            }
            Setup::Grpc {
                addr,
                route: Route::Node,
                tls,
                credentials,
                ..
            } => {
                if credentials.is_some() {
                    return Err("--user with --protocol grpc needs --route leader".into());
                }
                let scheme = if tls.is_some() { "https" } else { "http" };
                let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
                    .map_err(|e| format!("--addr {addr}: {e}"))?;
                if let Some(tls) = tls {
                    endpoint = endpoint
                        .tls_config(tls.tonic())
                        .map_err(|e| format!("--tls-ca: {e}"))?;
                }
                let channel = endpoint
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect over gRPC to {addr}: {e}"))?;
                Ok(Driver::GrpcNode {
                    kv: KvClient::new(channel),
                    value,
                    stale,
                })
            }
            Setup::Resp { url } => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| format!("--addr {url}: {e}"))?;
                let connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("cannot connect over RESP to {url}: {e}"))?;
                Ok(Driver::Resp { connection, value })
            }
        }
    }
}
