//! The one cap on client connections, shared by every front end (RESP and HTTP count
//! together), so that clients can never take the file descriptors the storage engine, snapshots
//! and peer links need: a node that runs out of descriptors in the middle of a memtable flush
//! poisons its engine and stops every shard until restarted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long an accept loop pauses after a failed accept (out of descriptors, out of memory),
/// so it does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The next connection on `listener`; `None` after a failed accept, logged and waited out
/// for [`ACCEPT_BACKOFF`]. Cancel-safe, for a `select!` arm.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
    front_end: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(err) => {
            tracing::warn!(%err, "{front_end} accept failed");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            None
        }
    }
}

/// Counts open client connections against one maximum. Clones share the count.
#[derive(Clone)]
pub struct ConnectionLimit(Arc<Shared>);

struct Shared {
    max: usize,
    open: AtomicUsize,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Shared {
            max,
            open: AtomicUsize::new(0),
        }))
    }

    /// The most client connections open at once.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// Client connections open now, over every front end sharing this limit.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Admits one more connection if under the limit; it counts until the permit is dropped.
    pub fn try_admit(&self) -> Option<ConnectionPermit> {
        let max = self.0.max;
        self.0
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionPermit(self.0.clone()))
    }
}

impl fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionLimit({}/{})", self.open(), self.max())
    }
}

/// Two limits are equal when they are the same shared counter.
impl PartialEq for ConnectionLimit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConnectionLimit {}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionPermit(Arc<Shared>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionPermit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_until_dropped_across_clones() {
        let limit = ConnectionLimit::new(2);
        let other = limit.clone();
        let a = limit.try_admit().expect("first");
        let b = other.try_admit().expect("second");
        assert!(limit.try_admit().is_none());
        assert_eq!(limit.open(), 2);
        drop(a);
        assert_eq!(other.open(), 1);
        let _c = other.try_admit().expect("a freed place");
        drop(b);
        assert_eq!(limit.open(), 1);
        assert_eq!(limit, other);
        assert_ne!(limit, ConnectionLimit::new(2));
    }
}
