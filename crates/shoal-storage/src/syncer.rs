//! Group commit: one thread turns many "make my writes durable" requests into one fsync.
//!
//! Writers put their batch into fjall (journal buffer, no sync) and then hand a callback
//! here. The thread takes every callback queued so far, calls `persist(SyncData)` once,
//! and completes them all: each fsync covers every group's appends made before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use fjall::{Database, PersistMode};

/// Called once the writes made before `Syncer::sync` are durable (or failed to be).
pub type SyncCallback = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

/// Most callbacks completed by one fsync; more wait for the next round. Bounds the
/// latency one round can add to the requests queued behind it.
const MAX_CALLBACKS_PER_SYNC: usize = 16 * 1024;

#[derive(Default)]
pub struct SyncCounters {
    pub fsyncs: AtomicU64,
    pub requests: AtomicU64,
}

pub struct Syncer {
    tx: Option<mpsc::Sender<SyncCallback>>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<SyncCounters>,
}

impl Syncer {
    pub fn start(db: Database) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<SyncCallback>();
        let counters = Arc::new(SyncCounters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-group-commit".into())
            .spawn(move || run(db, rx, &thread_counters))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            counters,
        })
    }

    /// Queues `callback` to run after the next fsync.
    pub fn sync(&self, callback: SyncCallback) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(callback)) = tx.send(callback) {
                    callback(Err(std::io::Error::other("storage is shutting down")));
                }
            }
            None => callback(Err(std::io::Error::other("storage is shutting down"))),
        }
    }

    /// Completes everything queued, then stops the thread.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(db: Database, rx: mpsc::Receiver<SyncCallback>, counters: &SyncCounters) {
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        while pending.len() < MAX_CALLBACKS_PER_SYNC {
            match rx.try_recv() {
                Ok(cb) => pending.push(cb),
                Err(_) => break,
            }
        }
        let result = db.persist(PersistMode::SyncData);
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        counters
            .requests
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "fsync failed; writes waiting on it are failed");
        }
        for cb in pending.drain(..) {
            cb(result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())));
        }
    }
}
