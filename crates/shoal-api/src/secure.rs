//! Client connections over TLS: the handshake each listener runs, in the connection's own
//! task, before its protocol reads a byte, and the stream type every protocol then uses.
//!
//! A node with TLS refuses plaintext. A client that speaks plaintext to it is told so in
//! its own protocol (a RESP error, an HTTP 400) instead of seeing a reset.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_tls::{Channel, Tls};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection's byte stream: plain TCP, or TLS over it.
pub type ClientStream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Reads what is already available on `stream` without waiting; `WouldBlock` when
/// nothing is.
pub fn try_read_buf(stream: &mut ClientStream, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    match stream {
        Either::Left(s) => s.try_read_buf(buf),
        Either::Right(s) => {
            // One poll with a waker that is never woken: the next real read registers the
            // connection's own.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let fut = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(s.as_mut(), buf));
            match fut.poll(&mut cx) {
                Poll::Ready(result) => result,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }
}

/// Runs the TLS handshake of a freshly accepted connection when `tls` is on. `plaintext`
/// is what a client that skipped TLS is sent before it is closed. `None`: the connection
/// is closed (the reason is logged at debug).
pub async fn secure(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&Tls>,
    channel: Channel,
    plaintext: &[u8],
) -> Option<ClientStream> {
    let Some(acceptor) = tls.and_then(|tls| tls.acceptor(channel)) else {
        return Some(Either::Left(stream));
    };
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err("closed before the TLS handshake".to_string()),
            Ok(_) if first[0] != TLS_HANDSHAKE => {
                let mut stream = stream;
                let _ = stream.write_all(plaintext).await;
                let _ = stream.shutdown().await;
                return Err("a plaintext client: this node accepts only TLS".to_string());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        acceptor
            .accept(stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => Some(Either::Right(Box::new(stream))),
        Ok(Err(why)) => {
            tracing::debug!(%peer, ?channel, reason = %why, "refused a client connection");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?channel, "refused a client connection: no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
            None
        }
    }
}
