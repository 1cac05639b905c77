//! The gRPC front end (package `shoal.v1`, `proto/shoal/v1/shoal.proto`): the `KV` and
//! `Cluster` services, server reflection (so `grpcurl` needs no .proto file) and the
//! standard health service (`grpc.health.v1`, for Kubernetes probes), on one listener.
//!
//! Like RESP and HTTP it only translates: requests become `shoal_core::Command`s run by the
//! node (which forwards to the shard leader), replies and errors become messages and
//! statuses (`status`). Limits: client connections count against the node's shared
//! `ConnectionLimit`; each connection may carry `max_concurrent_streams` calls at once;
//! messages are capped at `max_message_bytes`; a call's `grpc-timeout` is honoured, and no
//! call runs longer than `max_call_duration`.

mod cluster;
mod kv;
mod ops;
pub mod status;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_cluster::Node;
use shoal_core::Limits;
use shoal_proto::v1::cluster_server::ClusterServer;
use shoal_proto::v1::kv_server::KvServer;
use shoal_tls::Channel;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};

pub use cluster::ClusterService;
pub use kv::KvService;

use crate::backend::Backend;
use crate::connections::{ConnectionLimit, ConnectionPermit, accept};
use crate::secure::{ClientStream, secure};

/// The gRPC listener's limits.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Client connections open at once, shared with RESP and HTTP; over it a new
    /// connection is closed at once.
    pub connections: ConnectionLimit,
    /// Calls one connection may have in flight (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Largest request or response message; raised to fit one key and value at their
    /// limits, so a value the node accepts can always be sent.
    pub max_message_bytes: usize,
    /// Longest any call runs, whatever its `grpc-timeout` asks.
    pub max_call_duration: Duration,
    /// Page size of a Scan that gives no `limit`.
    pub default_scan_limit: usize,
    /// Largest `limit` a Scan accepts (and the page size of ScanStream).
    pub max_scan_limit: usize,
    /// Node scans one Scan call makes while filling a short page.
    pub max_scan_calls: usize,
    /// Most ops one Batch carries.
    pub max_batch_ops: usize,
    /// The node's key and value limits (read from the backend by `serve_backend`).
    pub limits: Limits,
    /// TLS: when set, every client must connect over it.
    pub tls: Option<shoal_tls::Tls>,
    /// Users and logins (`authorization: Basic ...` metadata), shared with the other front
    /// ends.
    pub auth: Arc<crate::auth::Authenticator>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            connections: ConnectionLimit::new(crate::resp::DEFAULT_MAX_CONNECTIONS),
            max_concurrent_streams: 256,
            max_message_bytes: 4 * 1024 * 1024,
            max_call_duration: Duration::from_secs(60),
            default_scan_limit: 100,
            max_scan_limit: 1000,
            max_scan_calls: 8,
            max_batch_ops: 4096,
            limits: Limits::default(),
            tls: None,
            auth: Default::default(),
        }
    }
}

/// The rights of the caller of `request`: its `authorization` metadata (`Basic
/// base64(user:password)`, as HTTP), or none while the node serves anonymous clients.
pub(crate) async fn caller<T>(
    auth: &crate::auth::Authenticator,
    request: &tonic::Request<T>,
) -> Result<shoal_core::auth::Grant, tonic::Status> {
    use shoal_core::Error;
    let refuse = |message: String| status::status_of(&Error::Unauthenticated(message));
    let Some(value) = request.metadata().get("authorization") else {
        return auth.anonymous().ok_or_else(|| {
            refuse(
                "this node requires a user name and password: send `authorization: Basic \
                 base64(user:password)` metadata"
                    .to_string(),
            )
        });
    };
    let (user, password) = crate::auth::parse_basic(value.as_bytes())
        .map_err(|why| refuse(format!("the authorization metadata {why}")))?;
    let peer = request
        .remote_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    auth.login(peer, &user, &password)
        .await
        .map_err(|err| refuse(format!("{err} (user {user:?})")))
}

/// Serves gRPC on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    config: GrpcConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_backend(listener, Arc::new(node), config, shutdown).await
}

/// [`serve`] over any [`Backend`]: tests use the in-memory fake (`crate::fake`).
pub async fn serve_backend(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    mut config: GrpcConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    config.limits = backend.limits();
    // A key and a value at their limits, plus framing, always fit.
    let message_bytes = config
        .max_message_bytes
        .max(config.limits.max_key_bytes + config.limits.max_value_bytes + 4096);
    let kv = KvServer::new(KvService::new(backend.clone(), config.clone()))
        .max_decoding_message_size(message_bytes)
        .max_encoding_message_size(message_bytes);
    let cluster = ClusterServer::new(ClusterService::new(backend, config.auth.clone()))
        .max_decoding_message_size(message_bytes)
        .max_encoding_message_size(message_bytes);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    health.set_serving::<ClusterServer<ClusterService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shoal_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(io::Error::other)?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shoal_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(io::Error::other)?;
    let addr = listener.local_addr()?;
    let incoming = incoming(listener, config.connections.clone(), config.tls.clone());
    // Tell probes we are going away before the listener stops.
    let shutdown = async move {
        shutdown.await;
        health.set_not_serving::<KvServer<KvService>>().await;
        health
            .set_not_serving::<ClusterServer<ClusterService>>()
            .await;
    };
    tracing::info!(%addr, "gRPC listening");
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .timeout(config.max_call_duration)
        // Finds clients that vanished without closing (a pulled cable, a frozen VM).
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(kv)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(io::Error::other);
    tracing::info!(%addr, "gRPC stopped");
    served
}

/// Accepted connections that fit under `limit`, after their TLS handshake when `tls` is
/// on (each in its own task, so a slow client holds up no other); the others are closed at
/// once (a gRPC client's call then fails unsent, UNAVAILABLE or CANCELLED, and may go to
/// another node). The listener closes when the server drops the stream.
fn incoming(
    listener: tokio::net::TcpListener,
    limit: ConnectionLimit,
    tls: Option<shoal_tls::Tls>,
) -> impl futures_util::Stream<Item = io::Result<Limited>> {
    let (ready_tx, ready) = tokio::sync::mpsc::channel::<Limited>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = ready_tx.closed() => return,
                accepted = accept(&listener, "gRPC") => accepted,
            };
            let Some((stream, peer)) = accepted else {
                continue;
            };
            let Some(permit) = limit.try_admit() else {
                tracing::warn!(
                    %peer,
                    max = limit.max(),
                    "gRPC connection refused: the node is at its client connection limit \
                     (--max-connections)"
                );
                continue;
            };
            let _ = stream.set_nodelay(true);
            let info = TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(peer),
            };
            let (ready_tx, tls) = (ready_tx.clone(), tls.clone());
            tokio::spawn(async move {
                // A plaintext client gets no answer it could read: HTTP/2 has no way to say
                // "use TLS" before the handshake it skipped. It sees the connection close.
                let Some(stream) = secure(stream, peer, tls.as_ref(), Channel::Grpc, b"").await
                else {
                    return;
                };
                let _ = ready_tx
                    .send(Limited {
                        stream,
                        info,
                        _permit: permit,
                    })
                    .await;
            });
        }
    });
    futures_util::stream::unfold(ready, |mut ready| async move {
        let conn = ready.recv().await?;
        Some((Ok(conn), ready))
    })
}

/// A client connection holding its place under the connection limit until it closes.
pub struct Limited {
    stream: ClientStream,
    info: TcpConnectInfo,
    _permit: ConnectionPermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
