//! The accept loop: admits clients up to the connection limit, and on shutdown stops
//! accepting, lets every connection finish what it is running, then returns.

use std::future::Future;
use std::io;
use std::sync::Arc;

use shoal_cluster::Node;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::RespConfig;
use super::cmd::Ctx;
use super::connection;
use crate::backend::Backend;
use crate::connections;
use crate::secure::secure;
use shoal_tls::Channel;

/// The line a client over the limit receives before it is closed (Redis's wording).
const TOO_MANY_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";
/// What a plaintext client of a TLS node is told.
const PLAINTEXT: &[u8] =
    b"-ERR this node accepts only TLS connections: connect with TLS (redis-cli --tls --cacert <the cluster CA>)\r\n";

/// Serves RESP on `listener` until `shutdown` completes.
///
/// On shutdown: stops accepting (the listener is closed), tells every connection to stop
/// reading, waits until each has finished the commands it already read and written their
/// replies, then returns. Errors only if the listener itself is unusable.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    config: RespConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_backend(listener, Arc::new(node), config, shutdown).await
}

/// [`serve`] over any [`Backend`]: tests use the in-memory fake (`crate::fake`).
pub async fn serve_backend(
    listener: TcpListener,
    node: Arc<dyn Backend>,
    config: RespConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let tls = config.tls.clone();
    let ctx = Arc::new(Ctx::new(node, config, local_addr));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(addr = %local_addr, "RESP listening");

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = done {
                    tracing::error!(%err, "RESP connection task failed");
                }
            }
            accepted = connections::accept(&listener, "RESP") => {
                let Some((stream, peer)) = accepted else {
                    continue;
                };
                let Some(guard) = ctx.admit() else {
                    // Never blocks the accept loop: a fresh socket's send buffer has room
                    // for one line, and if it does not the client misses only the message.
                    // A TLS client could not read it before its handshake: just closed.
                    if tls.is_none() {
                        let _ = stream.try_write(TOO_MANY_CLIENTS);
                    }
                    continue;
                };
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(%err, %peer, "could not set TCP_NODELAY");
                }
                let (ctx, mut stop_rx, tls) = (ctx.clone(), stop_rx.clone(), tls.clone());
                connections.spawn(async move {
                    let stream = tokio::select! {
                        secured = secure(stream, peer, tls.as_ref(), Channel::Resp, PLAINTEXT) => secured,
                        _ = stop_rx.wait_for(|stop| *stop) => None,
                    };
                    let Some(stream) = stream else {
                        return;
                    };
                    connection::serve(stream, peer, ctx, guard, stop_rx).await
                });
            }
        }
    }

    drop(listener);
    // Receivers see the change even if they are busy now: they check it between batches.
    let _ = stop_tx.send(true);
    while let Some(done) = connections.join_next().await {
        if let Err(err) = done {
            tracing::error!(%err, "RESP connection task failed");
        }
    }
    tracing::info!(addr = %local_addr, "RESP stopped");
    Ok(())
}
