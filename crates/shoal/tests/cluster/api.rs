//! The cluster's HTTP API as tests use it: typed calls (`Api`), the errors a user sees
//! (`HttpError`), and the cluster view of `GET /v1/cluster`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::HTTP_TIMEOUT;

/// A node's view of the cluster (`GET /v1/cluster`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterView {
    pub this_node: u64,
    pub epoch: u64,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
    /// Voters of the metadata group, and its leader (when the answering node knows it).
    pub meta: Vec<u64>,
    #[serde(default)]
    pub meta_leader: Option<u64>,
    /// Replica moves in flight, and moves still needed to reach the target placement.
    pub moves: Vec<Value>,
    pub moves_pending: u64,
    /// Groups with fewer healthy voters than they should have, and why dead nodes are not
    /// being replaced when they are not.
    #[serde(default)]
    pub under_replicated: Vec<u32>,
    #[serde(default)]
    pub healing_held: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub resp_addr: String,
    pub http_addr: String,
    #[serde(default)]
    pub grpc_addr: String,
    pub up: bool,
    /// joining, active, draining, dead.
    pub state: String,
    /// How long it has been unreachable, as the answering node sees it.
    #[serde(default)]
    pub down_for_ms: Option<u64>,
    /// Free space under its data directory, by its last report.
    #[serde(default)]
    pub disk: Option<DiskView>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct DiskView {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShardView {
    pub id: u32,
    pub range: SlotRange,
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SlotRange {
    pub start: u32,
    /// Exclusive.
    pub end: u32,
}

/// A failed HTTP request as a user sees it: the status and error code of the JSON error
/// body, or no status when the request got no answer at all.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: Option<u16>,
    /// The body's `error.code`; "connect" when no connection could be made (the request
    /// was never sent), "transport" when a sent request got no answer.
    pub code: String,
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{status} {}: {}", self.code, self.message),
            None => write!(f, "no answer: {}", self.message),
        }
    }
}

impl HttpError {
    fn transport(e: reqwest::Error) -> Self {
        HttpError {
            status: None,
            // "connect": no connection, so the request was never sent (a node down).
            code: if e.is_connect() {
                "connect"
            } else {
                "transport"
            }
            .into(),
            message: e.to_string(),
        }
    }

    async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v["error"][name].as_str())
                .map(str::to_string)
        };
        HttpError {
            status: Some(status),
            code: field("code").unwrap_or_else(|| "(not a JSON error)".into()),
            message: field("message").unwrap_or(body),
        }
    }
}

/// A value read back with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: String,
    pub version: u64,
}

/// An `Authorization: Basic` header.
fn basic(user: &str, password: &str) -> reqwest::header::HeaderValue {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}").parse().expect("a header value")
}

/// The cluster's HTTP API, cheap to clone into writer tasks. Node ids index `urls`.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    urls: BTreeMap<u64, String>,
}

/// The tests' HTTP client: HTTPS trusting what `tls` trusts when given, basic auth as
/// `login` (user, password) on every request when given.
fn client(
    tls: Option<shoal_tls::rustls::ClientConfig>,
    login: Option<(&str, &str)>,
) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((user, password)) = login {
        headers.insert(reqwest::header::AUTHORIZATION, basic(user, password));
    }
    let mut builder = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .default_headers(headers);
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls);
    }
    builder.build().expect("HTTP client")
}

impl Api {
    pub(super) fn new(urls: BTreeMap<u64, String>) -> Api {
        Api {
            http: client(None, None),
            urls,
        }
    }

    /// Over HTTPS, trusting what `tls` trusts, logged in as `login` (user, password).
    pub(super) fn with_tls(
        urls: BTreeMap<u64, String>,
        tls: shoal_tls::rustls::ClientConfig,
        login: Option<(String, String)>,
    ) -> Api {
        let login = login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        Api {
            http: client(Some(tls), login),
            urls,
        }
    }

    /// This API as `user` (HTTP basic auth on every request; plaintext clusters).
    pub fn as_user(&self, user: &str, password: &str) -> Api {
        Api {
            http: client(None, Some((user, password))),
            urls: self.urls.clone(),
        }
    }

    /// `POST /v1/users` through `via`: adds a user.
    pub async fn add_user(
        &self,
        via: u64,
        user: &str,
        password: &str,
        role: &str,
        prefix: Option<&str>,
    ) -> Result<(), HttpError> {
        let body = serde_json::json!({
            "name": user, "password": password, "role": role, "prefix": prefix,
        });
        let response = self
            .http
            .post(format!("{}/v1/users", self.url(via)))
            .json(&body)
            .send()
            .await
            .map_err(HttpError::transport)?;
        if !response.status().is_success() {
            return Err(HttpError::from_response(response).await);
        }
        Ok(())
    }

    /// Adds node `node`'s base URL (a node that joined later).
    pub(super) fn add(&mut self, node: u64, url: String) {
        self.urls.insert(node, url);
    }

    /// `POST /v1/cluster/nodes/{id}/remove` through `via`: starts draining `id`.
    pub async fn remove_node(&self, via: u64, id: u64) -> Result<ClusterView, HttpError> {
        let response = self
            .http
            .post(format!("{}/v1/cluster/nodes/{id}/remove", self.url(via)))
            .send()
            .await
            .map_err(HttpError::transport)?;
        if !response.status().is_success() {
            return Err(HttpError::from_response(response).await);
        }
        response.json().await.map_err(HttpError::transport)
    }

    pub fn url(&self, node: u64) -> &str {
        self.urls
            .get(&node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    fn kv_url(&self, node: u64, key: &str) -> String {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.{}".contains(&b)),
            "test keys stay plain, so they need no percent-encoding: {key:?}"
        );
        format!("{}/v1/kv/{key}", self.url(node))
    }

    /// `PUT /v1/kv/{key}` through `node`: the version written.
    pub async fn put(&self, node: u64, key: &str, value: &str) -> Result<u64, HttpError> {
        self.put_to(self.kv_url(node, key), value).await
    }

    /// `PUT /v1/kv/{key}?if_version=N` through `node`.
    pub async fn put_if_version(
        &self,
        node: u64,
        key: &str,
        value: &str,
        if_version: u64,
    ) -> Result<u64, HttpError> {
        let url = format!("{}?if_version={if_version}", self.kv_url(node, key));
        self.put_to(url, value).await
    }

    /// `PUT /v1/kv/{key}?ttl=S` through `node`: the key expires `ttl_secs` from now.
    pub async fn put_ttl(
        &self,
        node: u64,
        key: &str,
        value: &str,
        ttl_secs: u64,
    ) -> Result<u64, HttpError> {
        let url = format!("{}?ttl={ttl_secs}", self.kv_url(node, key));
        self.put_to(url, value).await
    }

    async fn put_to(&self, url: String, value: &str) -> Result<u64, HttpError> {
        let response = self
            .http
            .put(url)
            .body(value.to_string())
            .send()
            .await
            .map_err(HttpError::transport)?;
        if !response.status().is_success() {
            return Err(HttpError::from_response(response).await);
        }
        let body: Value = response.json().await.map_err(HttpError::transport)?;
        Ok(body["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("PUT answered {body} without a version")))
    }

    /// Linearizable `GET /v1/kv/{key}` through `node`; `None` on 404.
    pub async fn get(&self, node: u64, key: &str) -> Result<Option<Versioned>, HttpError> {
        self.get_from(self.kv_url(node, key)).await
    }

    /// `GET /v1/kv/{key}?consistency=stale` through `node`; `None` on 404.
    pub async fn get_stale(&self, node: u64, key: &str) -> Result<Option<Versioned>, HttpError> {
        let url = format!("{}?consistency=stale", self.kv_url(node, key));
        self.get_from(url).await
    }

    async fn get_from(&self, url: String) -> Result<Option<Versioned>, HttpError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(HttpError::transport)?;
        match response.status().as_u16() {
            200 => {
                let version = response
                    .headers()
                    .get("x-shoal-version")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("a 200 GET has a numeric X-Shoal-Version header");
                let value = response.text().await.map_err(HttpError::transport)?;
                Ok(Some(Versioned { value, version }))
            }
            404 => {
                let error = HttpError::from_response(response).await;
                assert_eq!(error.code, "not_found", "a 404 GET: {error}");
                Ok(None)
            }
            _ => Err(HttpError::from_response(response).await),
        }
    }

    /// `GET /v1/cluster` from `node`.
    pub async fn view(&self, node: u64) -> Result<ClusterView, HttpError> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", self.url(node)))
            .send()
            .await
            .map_err(HttpError::transport)?;
        if !response.status().is_success() {
            return Err(HttpError::from_response(response).await);
        }
        response.json().await.map_err(HttpError::transport)
    }

    /// Makes `node` drop all traffic to and from `peers` (empty: heal).
    pub async fn set_blocked_peers(&self, node: u64, peers: &[u64]) -> Result<(), HttpError> {
        self.inject(node, "blocked-peers", json!({ "peers": peers }))
            .await
    }

    /// Makes `node` report `bytes` of free disk space (None: the real figure again).
    pub async fn set_disk_free(&self, node: u64, bytes: Option<u64>) -> Result<(), HttpError> {
        self.inject(node, "disk-free", json!({ "bytes": bytes }))
            .await
    }

    /// `PUT /v1/debug/{fault}` with `body` on `node` (fault injection).
    async fn inject(&self, node: u64, fault: &str, body: Value) -> Result<(), HttpError> {
        let response = self
            .http
            .put(format!("{}/v1/debug/{fault}", self.url(node)))
            .json(&body)
            .send()
            .await
            .map_err(HttpError::transport)?;
        if !response.status().is_success() {
            return Err(HttpError::from_response(response).await);
        }
        Ok(())
    }

    /// Deletes `key` through `node`; true if it existed.
    pub async fn delete(&self, node: u64, key: &str) -> Result<bool, HttpError> {
        let response = self
            .http
            .delete(self.kv_url(node, key))
            .send()
            .await
            .map_err(HttpError::transport)?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(HttpError::from_response(response).await),
        }
    }

    /// True once `node` answers `GET /health` as itself.
    pub(super) async fn healthy(&self, node: u64) -> bool {
        let answer = self
            .http
            .get(format!("{}/health", self.url(node)))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.unwrap_or_default();
                body["status"] == "ok" && body["node_id"] == node
            }
            _ => false,
        }
    }
}
