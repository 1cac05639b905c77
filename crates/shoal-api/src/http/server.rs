//! The HTTP accept loop and connections (hyper, HTTP/1.1), instead of `axum::serve`, for
//! what a public listener needs and `axum::serve` does not give:
//! - the node's one client connection limit (shared with RESP): over it, a JSON 503 and close;
//! - a header-read timeout (a slowloris sending a byte a second cannot hold a connection; it
//!   also closes keep-alive connections idle that long), a body-read deadline (an endless
//!   chunked body trickled under the size limit), and a no-progress timeout (a client that
//!   stops reading its response);
//! - the errors hyper answers by itself before any handler runs (a raw 0xFF or a space in the
//!   path, a negative or duplicate Content-Length, an over-long URI or header block) get the
//!   same JSON error body as every other error, instead of an empty one;
//! - accept errors (out of descriptors) back off instead of spinning.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use shoal_tls::Channel;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::HttpConfig;
use crate::connections::{self, ConnectionPermit};
use crate::secure::{ClientStream, secure};

/// Largest request head (request line and headers) read; over it hyper answers 431.
/// Above hyper's URI limit (64 KiB), so an over-long URI still gets its precise 414.
const MAX_HEAD_BYTES: usize = 96 * 1024;

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets each
/// connection finish its in-flight request, and returns.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let timeouts = Timeouts::from(config);
    tracing::info!(addr = %local_addr, "HTTP listening");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = connections::accept(&listener, "HTTP") => {
                let Some((stream, peer)) = accepted else {
                    continue;
                };
                let Some(permit) = config.connections.try_admit() else {
                    // Never blocks the accept loop: a fresh socket's send buffer has room.
                    // A TLS client could not read it before its handshake: just closed.
                    if config.tls.is_none() {
                        let _ = stream.try_write(&too_many_connections(config.connections.max()));
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (router, mut stop_rx, tls) = (router.clone(), stop_rx.clone(), config.tls.clone());
                connections.spawn(async move {
                    let refusal = plaintext_refusal();
                    let stream = tokio::select! {
                        secured = secure(stream, peer, tls.as_ref(), Channel::Http, &refusal) => secured,
                        _ = stop_rx.wait_for(|stop| *stop) => None,
                    };
                    let Some(stream) = stream else {
                        return;
                    };
                    serve_connection(stream, peer, router, timeouts, permit, stop_rx).await
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    tracing::info!(addr = %local_addr, "HTTP stopped");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

impl From<&HttpConfig> for Timeouts {
    fn from(config: &HttpConfig) -> Self {
        Self {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
        }
    }
}

async fn serve_connection(
    stream: ClientStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    _permit: ConnectionPermit,
    mut stop: watch::Receiver<bool>,
) {
    let progress = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched::new(stream, progress.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_header_size(MAX_HEAD_BYTES);
    // Handlers see the client's address (failed logins are counted per address).
    let router = tower::ServiceExt::map_request(
        router,
        move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        },
    );
    let conn = builder.serve_connection(io, TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    let mut seen = progress.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let check = (timeouts.idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, %err, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(check) => {
                let now = progress.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= timeouts.idle {
                    tracing::debug!(%peer, idle_s = timeouts.idle.as_secs(), "closing an HTTP connection that moved no bytes");
                    return;
                }
            }
        }
    }
}

/// The reply to a connection over the limit, before closing it.
/// What a plaintext client of an HTTPS node is told.
fn plaintext_refusal() -> Vec<u8> {
    raw_error(
        400,
        "Bad Request",
        "tls_required",
        "this node serves HTTPS only: use an https:// URL (curl --cacert <the cluster CA> https://...)",
    )
}

fn too_many_connections(max: usize) -> Vec<u8> {
    raw_error(
        503,
        "Service Unavailable",
        "too_many_connections",
        &format!(
            "this node already has its maximum of {max} client connections (RESP and HTTP together, --max-connections); retry later or reuse connections"
        ),
    )
}

/// A whole HTTP/1.1 error response with the API's JSON body, closing the connection.
fn raw_error(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = json!({ "error": { "code": code, "message": message } }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The JSON response replacing hyper's empty automatic answer to a request it could not
/// parse, if `head` is one. Handlers always answer errors with a JSON body, so an error
/// head with `content-length: 0` can only come from hyper itself.
fn rewrite_automatic_error(head: &[u8]) -> Option<Vec<u8>> {
    // Every response passes here: reject anything but a small 4xx head before allocating.
    if head.len() > 512
        || head.get(9) != Some(&b'4')
        || !head.starts_with(b"HTTP/1.")
        || !head.ends_with(b"\r\n\r\n")
    {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (status, reason, code, message) = match text.get(9..12)? {
        "400" => (
            400,
            "Bad Request",
            "malformed_request",
            "malformed HTTP request: the request line, a header or Content-Length could not be parsed (bytes outside the URI alphabet, such as a space or 0xFF, must be percent-encoded: a space is %20); the connection is closed".to_string(),
        ),
        "414" => (
            414,
            "URI Too Long",
            "uri_too_long",
            "the request's path and query are too long to parse; keys are limited by --max-key-bytes, send large data in the body".to_string(),
        ),
        "431" => (
            431,
            "Request Header Fields Too Large",
            "headers_too_large",
            format!("the request line and headers are over the {MAX_HEAD_BYTES} bytes this node reads; send fewer or shorter headers"),
        ),
        _ => return None,
    };
    Some(raw_error(status, reason, code, &message))
}

/// A client connection's socket that counts bytes moved (for the no-progress timeout) and
/// swaps hyper's empty automatic error responses for JSON ones.
struct Watched {
    inner: ClientStream,
    progress: Arc<AtomicU64>,
    /// A replacement response being written, how much of it is out, and the length of the
    /// write it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl Watched {
    fn new(inner: ClientStream, progress: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            progress,
            replacing: None,
        }
    }

    fn moved(&self, n: usize) {
        if n > 0 {
            self.progress.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Writes the rest of a replacement; `Ready(Ok(len))` reports the replaced write done.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let Some((bytes, written, stands_for)) = self.replacing.as_mut() else {
                return Poll::Ready(Ok(0));
            };
            if *written == bytes.len() {
                let stands_for = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(stands_for));
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            self.progress.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.moved(buf.filled().len() - before);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && let Some(replacement) = rewrite_automatic_error(buf)
        {
            this.replacing = Some((replacement, 0, buf.len()));
        }
        if this.replacing.is_some() {
            return this.poll_replacement(cx);
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.moved(n);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // An automatic error response is a lone head, written as one slice.
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let first = nonempty.next().map_or(&[][..], |b| &b[..]);
        let lone = nonempty.next().is_none();
        if this.replacing.is_some() || (lone && rewrite_automatic_error(first).is_some()) {
            return Pin::new(this).poll_write(cx, first);
        }
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.moved(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The body-read deadline: a request whose body has not fully arrived this long after its
/// head fails with [`BodyTimedOut`] (a 408 from the handler), so a body trickled forever
/// under the size limit cannot hold a connection and a handler.
pub(crate) async fn body_deadline(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    // Most requests (GET, DELETE) carry no body: no timer for them.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, limit))))
        .await
}

/// The error a body read fails with once the deadline passes.
#[derive(Debug)]
pub(crate) struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s of its headers",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(inner: Body, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_heads_are_rewritten() {
        let auto = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 07:00:00 GMT\r\n\r\n";
        let rewritten = String::from_utf8(rewrite_automatic_error(auto).unwrap()).unwrap();
        assert!(
            rewritten.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{rewritten}"
        );
        assert!(
            rewritten.contains("\"code\":\"malformed_request\""),
            "{rewritten}"
        );
        let body = rewritten.split("\r\n\r\n").nth(1).unwrap();
        assert!(rewritten.contains(&format!("content-length: {}\r\n", body.len())));
        for status in ["414 URI Too Long", "431 Request Header Fields Too Large"] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(
                rewrite_automatic_error(head.as_bytes()).is_some(),
                "{status}"
            );
        }
        // A handler's error carries its body; a success is never touched.
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(rewrite_automatic_error(head).is_none());
        }
    }
}
