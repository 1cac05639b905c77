//! Client connections over TLS: the handshake each listener runs, in the connection's own
//! task, before its protocol reads a byte, and the stream type every protocol then uses.
//!
//! A node with TLS refuses plaintext. A client that speaks plaintext to it is told so in
//! its own protocol (a RESP error, an HTTP 400) instead of seeing a reset.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_tls::{Channel, Tls};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection's byte stream.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// Reads what is already available without waiting; `WouldBlock` when nothing is.
    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_read_buf(buf),
            ClientStream::Tls(s) => {
                // One poll with a waker that is never woken: the next real read registers
                // the connection's own.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let fut = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(s.as_mut(), buf));
                match fut.poll(&mut cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes what fits in the socket's buffer now, without waiting (used only to tell a
    /// client it is turned away).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_write(buf),
            ClientStream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
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
        return Some(ClientStream::Plain(stream));
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
        Ok(Ok(stream)) => Some(ClientStream::Tls(Box::new(stream))),
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

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
