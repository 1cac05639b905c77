//! HTTP/JSON front end (axum): translates requests into `Command`s for the node and renders
//! replies as raw values or JSON, and every error as `{"error": {"code", "message"}}`.
//!
//! Endpoints:
//! - `GET /v1/kv/{key}[?consistency=stale|linearizable]`: the raw value, with
//!   `X-Shoal-Version` and (if it expires) `X-Shoal-Expire-At` (Unix ms).
//! - `PUT`/`POST /v1/kv/{key}[?ttl=S|ttl_ms=MS][&if_version=N|&if_absent]`: body is the
//!   value; answers `{"version": N}`.
//! - `DELETE /v1/kv/{key}[?if_version=N]`: `{"deleted": true}`, or 404.
//! - `GET /v1/kv?prefix=&limit=&cursor=&consistency=`: a page of keys, see `list`.
//! - `POST /v1/txn`: atomic operations on keys of one shard, optionally conditional on
//!   their versions; see `txn`.
//! - `GET /health`, `GET /v1/cluster`.
//! - `/v1/users`: the cluster's users (admins); see `users`.
//!
//! Every endpoint but `/health` needs a login (HTTP basic auth) once the cluster has users
//! or TLS is on; see `auth`.
//! - `PUT /v1/debug/blocked-peers` with `{"peers": [2, 3]}`: cut this node off from those
//!   peers (fault injection for tests; refused unless the node runs with it).
//! - `GET /v1/debug/raft-stats`: openraft's runtime statistics (batch sizes, per-stage
//!   latencies) of each group this node leads, as text.
//! - `PUT /v1/debug/disk-free` with `{"bytes": N}` or `{"bytes": null}`: report N bytes of
//!   free disk space instead of the real figure (fault injection, likewise).
//!
//! Keys are the percent-decoded rest of the path after `/v1/kv/`: any bytes, `/` included.

mod auth;
mod browser;
pub mod cursor;
pub mod encoding;
pub mod error;
mod kv;
mod list;
pub mod params;
mod server;
mod txn;
mod users;

#[doc(hidden)]
pub use txn::parse_txn_body;

#[cfg(test)]
mod listener_tests;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, Uri};
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};
use shoal_cluster::Node;
use shoal_core::Limits;
use shoal_core::map::ClusterView;

use crate::backend::Backend;
use crate::connections::ConnectionLimit;
pub use error::ApiError;
pub use kv::{EXPIRE_AT_HEADER, VERSION_HEADER};

/// Tunables of the HTTP front end. Size limits come from the node (`Node::limits`).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Client connections open at once, shared with RESP when the node passes both the same
    /// limit; over it a connection gets a JSON 503 and is closed.
    pub connections: ConnectionLimit,
    /// Longest wait for a request's line and headers, counted from the moment the connection
    /// is ready for a request: it also closes keep-alive connections idle this long.
    pub header_read_timeout: Duration,
    /// Longest wait for a request's whole body once its headers arrived; then a 408.
    pub body_read_timeout: Duration,
    /// A connection that moves no bytes either way this long is closed (a client that stops
    /// reading its response). Longer than any request the node runs.
    pub idle_timeout: Duration,
    /// Page size of a listing when the request gives no `limit`.
    pub default_list_limit: usize,
    /// Largest `limit` a listing accepts; more is a 400 (page with the cursor instead).
    pub max_list_limit: usize,
    /// Most node scans one listing request makes while filling a short page; bounds the
    /// work of a request over a sparse prefix.
    pub max_scan_calls: usize,
    /// HTTPS: when set, every client must connect over TLS.
    pub tls: Option<shoal_tls::Tls>,
    /// Browser origins (`https://app.example`) allowed to call the API; `*` allows any.
    /// Requests from other origins are refused (see `browser`).
    pub allowed_origins: Vec<String>,
    /// Serve `/v1/debug/*` (fault injection and Raft statistics): only for tests and
    /// tuning, set by `--fault-injection`.
    pub debug_routes: bool,
    /// Users and logins (HTTP basic auth), shared with the other front ends.
    pub auth: Arc<crate::auth::Authenticator>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connections: ConnectionLimit::new(crate::resp::DEFAULT_MAX_CONNECTIONS),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            default_list_limit: 100,
            max_list_limit: 1000,
            max_scan_calls: 8,
            tls: None,
            allowed_origins: Vec::new(),
            debug_routes: false,
            auth: Default::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    backend: Arc<dyn Backend>,
    /// Read once at startup: limits are node configuration and do not change at runtime.
    limits: Limits,
    config: Arc<HttpConfig>,
}

/// The HTTP API of `node` as an axum router, ready to serve or to nest.
pub fn router(node: Node, config: HttpConfig) -> Router {
    router_for(Arc::new(node), config)
}

/// Serves the HTTP API on `listener` until `shutdown` completes, then stops accepting
/// connections and returns once in-flight requests have finished.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_backend(listener, Arc::new(node), config, shutdown).await
}

/// [`serve`] over any [`Backend`]: tests use the in-memory fake (`crate::fake`).
pub async fn serve_backend(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router_for(backend, config.clone());
    server::serve_router(listener, router, &config, shutdown).await
}

pub(crate) fn router_for(backend: Arc<dyn Backend>, config: HttpConfig) -> Router {
    let limits = backend.limits();
    let body_read_timeout = config.body_read_timeout;
    let browsers = browser::BrowserPolicy::new(&config.allowed_origins, config.tls.is_none());
    let debug_routes = config.debug_routes;
    let auth = config.auth.clone();
    let state = AppState {
        backend,
        limits,
        config: Arc::new(config),
    };
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/v1/cluster", get(cluster))
        .route(
            "/v1/cluster/nodes/{id}/remove",
            axum::routing::post(remove_node),
        )
        .route(
            "/v1/cluster/rebalance/{action}",
            axum::routing::post(rebalance),
        )
        .route("/v1/users", get(users::list).post(users::create))
        .route(
            "/v1/users/{name}",
            axum::routing::put(users::change).delete(users::remove),
        )
        .route("/v1/kv", get(list::list_keys))
        .route("/v1/txn", axum::routing::post(txn::transaction))
        // `/v1/kv/` is the empty key: routed so it gets a precise `empty_key` error.
        .route("/v1/kv/", key_routes())
        .route("/v1/kv/{*key}", key_routes());
    if debug_routes {
        router = router
            .route("/v1/debug/blocked-peers", axum::routing::put(blocked_peers))
            .route("/v1/debug/disk-free", axum::routing::put(disk_free))
            .route("/v1/debug/raft-stats", get(raft_stats));
    }
    router
        // Must come after the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_route)
        // Enforced while reading the body, so an oversized value is refused before it is
        // buffered; the handler turns the rejection into a JSON 413.
        .layer(DefaultBodyLimit::max(limits.max_value_bytes))
        .layer(axum::middleware::from_fn_with_state(
            body_read_timeout,
            server::body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
        // Outermost: a refused browser request runs nothing else.
        .layer(axum::middleware::from_fn_with_state(
            browsers,
            browser::guard,
        ))
        .with_state(state)
}

fn key_routes() -> MethodRouter<AppState> {
    get(kv::get_key)
        .put(kv::put_key)
        .post(kv::put_key)
        .delete(kv::delete_key)
}

/// 200 while every shard this node hosts can serve; 503 naming each shard Raft stopped
/// here (after a storage failure), since such a node answers every request for it with an
/// error until restarted, and a load balancer or orchestrator must see that.
async fn health(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let failed = state.backend.failed_groups();
    if failed.is_empty() {
        return Json(json!({ "status": "ok", "node_id": state.backend.id() })).into_response();
    }
    let shards: Vec<Value> = failed
        .iter()
        .map(|(shard, err)| json!({ "shard": shard, "error": err.to_string() }))
        .collect();
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unhealthy",
            "node_id": state.backend.id(),
            "failed_shards": shards,
        })),
    )
        .into_response()
}

async fn cluster(State(state): State<AppState>, _caller: auth::Caller) -> Json<ClusterView> {
    Json(state.backend.cluster_view())
}

/// `POST /v1/cluster/nodes/{id}/remove`: starts draining node `id`; answers the cluster
/// view, which shows the node draining and the moves taking its replicas away.
async fn remove_node(
    State(state): State<AppState>,
    caller: auth::Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    caller.require(shoal_core::auth::Access::Admin)?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError::from(shoal_core::Error::Invalid(format!(
            "{id:?} is not a node id: use a positive integer, as `shoal cluster status` lists them"
        )))
    })?;
    state.backend.remove_node(id).await?;
    Ok(Json(state.backend.cluster_view()))
}

/// `POST /v1/cluster/rebalance/pause` and `.../resume`.
async fn rebalance(
    State(state): State<AppState>,
    caller: auth::Caller,
    axum::extract::Path(action): axum::extract::Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    caller.require(shoal_core::auth::Access::Admin)?;
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(ApiError::from(shoal_core::Error::Invalid(format!(
                "unknown rebalance action {other:?}: use pause or resume"
            ))));
        }
    };
    state.backend.set_rebalance_paused(paused).await?;
    Ok(Json(state.backend.cluster_view()))
}

#[derive(serde::Deserialize)]
struct BlockedPeers {
    peers: Vec<u64>,
}

/// A fault-injection request body, or an error saying what was expected.
fn debug_body<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::from(shoal_core::Error::Invalid(format!(
            "expected {expected}: {e}"
        )))
    })
}

async fn blocked_peers(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: BlockedPeers = debug_body(&body, "{\"peers\": [node ids]}")?;
    state.backend.set_blocked_peers(request.peers.clone())?;
    Ok(Json(json!({ "blocked": request.peers })))
}

#[derive(serde::Deserialize)]
struct DiskFree {
    bytes: Option<u64>,
}

async fn disk_free(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: DiskFree = debug_body(&body, "{\"bytes\": free bytes or null}")?;
    state.backend.set_disk_free_override(request.bytes)?;
    Ok(Json(json!({ "disk_free_override": request.bytes })))
}

async fn raft_stats(State(state): State<AppState>) -> String {
    state.backend.raft_stats().await
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::unknown_route(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}
