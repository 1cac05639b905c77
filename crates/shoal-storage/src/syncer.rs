//! Group commit: one thread turns many "make my writes durable" requests into one fsync.
//!
//! Writers put their batch into fjall (journal buffer, no sync) and then hand a callback
//! here. The thread takes every callback queued so far, makes the journal durable once,
//! and completes them all: each fsync covers every group's appends made before it.
//!
//! fjall's own `persist(SyncData)` holds the journal lock for the whole fdatasync, which
//! stalls every other write (and the async workers doing them) for the fsync's duration.
//! So the thread only flushes fjall's buffer under the lock (`PersistMode::Buffer`) and then
//! calls fdatasync on its own handle to the active journal file, outside the lock.
//! fdatasync acts on the file, not the descriptor, so it covers writes made through fjall's
//! handle. If fjall rotated to a new journal meanwhile, the old one was fully synced by the
//! rotation itself (fjall seals a journal with `SyncAll`), and we move to the newest file.
//!
//! When to sync: at once, appends spread over time got about 1.3 appends per fsync and a
//! thread wake-up or two each. The threads that append (the Raft runtime's workers) report
//! through [`WriterActivity`] when they go idle; a round waits until none is busy (they have
//! handed over everything they had to append) or `max_hold` has passed, whichever is first.
//! Waiting for idle adds no latency that a fixed delay would: a busy writer is still
//! producing appends this fsync can cover.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// How many of the threads that append to the journal are busy. They start busy, and call
/// `idle`/`busy` as they park and wake (a tokio runtime's `on_thread_park`/`unpark`).
#[derive(Debug)]
pub struct WriterActivity {
    busy: Mutex<usize>,
    became_idle: Condvar,
    max_hold: Duration,
}

impl WriterActivity {
    /// `writers` threads, all busy now; a sync round waits at most `max_hold` for them.
    pub fn new(writers: usize, max_hold: Duration) -> Self {
        Self {
            busy: Mutex::new(writers),
            became_idle: Condvar::new(),
            max_hold,
        }
    }

    /// A writer thread is about to park: it has nothing more to append for now.
    pub fn idle(&self) {
        let mut busy = self.busy.lock().expect("activity lock");
        *busy = busy.saturating_sub(1);
        if *busy == 0 {
            self.became_idle.notify_one();
        }
    }

    /// A writer thread woke up and may append again.
    pub fn busy(&self) {
        *self.busy.lock().expect("activity lock") += 1;
    }

    /// Blocks until no writer is busy, or `max_hold` from now.
    fn wait_idle(&self) {
        let busy = self.busy.lock().expect("activity lock");
        drop(
            self.became_idle
                .wait_timeout_while(busy, self.max_hold, |busy| *busy > 0)
                .expect("activity lock"),
        );
    }
}

pub struct Syncer {
    tx: Option<mpsc::Sender<SyncCallback>>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<SyncCounters>,
}

impl Syncer {
    /// `db_dir` is the fjall database directory, where its `<id>.jnl` journals live.
    /// `activity`: the appending threads a round waits for (None: sync at once).
    pub fn start(
        db: Database,
        db_dir: PathBuf,
        activity: Option<Arc<WriterActivity>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<SyncCallback>();
        let counters = Arc::new(SyncCounters::default());
        let thread_counters = counters.clone();
        let journal = ActiveJournal::open(db_dir)?;
        let thread = std::thread::Builder::new()
            .name("shoal-group-commit".into())
            .spawn(move || run(db, journal, rx, activity.as_deref(), &thread_counters))?;
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

/// Our own handle to fjall's newest journal file.
struct ActiveJournal {
    dir: PathBuf,
    id: u64,
    file: File,
}

fn journal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.jnl"))
}

impl ActiveJournal {
    fn open(dir: PathBuf) -> std::io::Result<Self> {
        let newest = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".jnl")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .ok_or_else(|| {
                std::io::Error::other(format!("no journal file in {}", dir.display()))
            })?;
        let file = File::open(journal_path(&dir, newest))?;
        Ok(Self {
            dir,
            id: newest,
            file,
        })
    }

    /// Makes everything fjall has written to its journal so far durable.
    fn sync(&mut self, db: &Database) -> std::io::Result<()> {
        db.persist(PersistMode::Buffer)
            .map_err(std::io::Error::other)?;
        // Move to the newest journal if fjall rotated; rotation synced the older ones.
        while journal_path(&self.dir, self.id + 1).exists() {
            self.id += 1;
            self.file = File::open(journal_path(&self.dir, self.id))?;
        }
        self.file.sync_data()
    }
}

fn run(
    db: Database,
    mut journal: ActiveJournal,
    rx: mpsc::Receiver<SyncCallback>,
    activity: Option<&WriterActivity>,
    counters: &SyncCounters,
) {
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        if let Some(activity) = activity {
            activity.wait_idle();
        }
        while pending.len() < MAX_CALLBACKS_PER_SYNC {
            match rx.try_recv() {
                Ok(cb) => pending.push(cb),
                Err(_) => break,
            }
        }
        let result = journal.sync(&db);
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
                .map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
        }
    }
}
