//! One runner for the node's background services (the disk sampler, and in time the TTL
//! reaper, the status exchange, leader balancing and the map publisher).
//!
//! Each service is a future that returns once its `CancellationToken` is cancelled. The
//! supervisor spawns them on one runtime and tracks them in a `TaskTracker`; `shutdown`
//! cancels the token they share and waits for all of them to return, up to a deadline, so
//! `Node::shutdown` stops the groups only once nothing in the background still uses them.
//! Dropping the supervisor cancels the services too, without waiting.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Longest `Node::shutdown` waits for background services before it stops the groups anyway.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Starts the node's background services on one runtime; stops them together.
pub(crate) struct Supervisor {
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Supervisor {
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Spawns `run(token)` on the supervisor's runtime, under a span naming the service.
    /// The future must return once the token is cancelled. Started after `shutdown`, it
    /// gets a token that is already cancelled.
    pub(crate) fn start<F, Fut>(&self, name: &'static str, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let service = run(self.cancel.clone()).instrument(tracing::info_span!("service", name));
        self.tracker.spawn_on(service, &self.runtime);
    }

    /// Cancels every service and waits for them to return, at most `deadline`. `true` if
    /// all returned. Calling it again is harmless.
    pub(crate) async fn shutdown(&self, deadline: Duration) -> bool {
        self.cancel.cancel();
        // `wait` resolves only once the tracker is closed and empty.
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!(
            running = self.running(),
            deadline_ms = deadline.as_millis() as u64,
            "background services still running after the shutdown deadline; stopping anyway"
        );
        false
    }

    /// Services started and not yet returned.
    pub(crate) fn running(&self) -> usize {
        self.tracker.len()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    use tokio::sync::oneshot;

    fn supervisor() -> Supervisor {
        Supervisor::new(tokio::runtime::Handle::current())
    }

    /// A service that ticks until cancelled, then sets `done`.
    async fn ticking(cancel: CancellationToken, done: Arc<AtomicBool>) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        done.store(true, Ordering::SeqCst);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shutdown_cancels_and_waits() {
        let services = supervisor();
        let flags = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        for done in &flags {
            let done = done.clone();
            services.start("ticking", |c| ticking(c, done));
        }
        assert_eq!(services.running(), 2);
        assert!(services.shutdown(Duration::from_secs(1)).await);
        assert!(flags.iter().all(|f| f.load(Ordering::SeqCst)));
        assert_eq!(services.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_service_that_ignores_cancel_hits_the_deadline() {
        let services = supervisor();
        let (started_tx, started_rx) = oneshot::channel();
        services.start("stubborn", |_cancel| async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        started_rx.await.unwrap();
        let begun = Instant::now();
        assert!(!services.shutdown(Duration::from_millis(50)).await);
        let took = begun.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(services.running(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_the_supervisor_cancels() {
        let services = supervisor();
        let (tx, rx) = oneshot::channel();
        services.start("waiting", |cancel| async move {
            cancel.cancelled().await;
            let _ = tx.send(());
        });
        drop(services);
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the service saw the cancellation")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shutdown_twice_is_harmless() {
        let services = supervisor();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        services.start("ticking", |c| ticking(c, flag));
        assert!(services.shutdown(Duration::from_secs(1)).await);
        assert!(services.shutdown(Duration::from_secs(1)).await);
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(services.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn start_after_shutdown_gets_a_cancelled_token() {
        let services = supervisor();
        assert!(services.shutdown(Duration::from_secs(1)).await);
        let (tx, rx) = oneshot::channel();
        services.start("late", |cancel| async move {
            let _ = tx.send(cancel.is_cancelled());
        });
        let cancelled = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the late service ran")
            .unwrap();
        assert!(cancelled);
        assert!(services.shutdown(Duration::from_secs(1)).await);
        assert_eq!(services.running(), 0);
    }
}
