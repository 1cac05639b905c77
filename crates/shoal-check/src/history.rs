//! Operation histories as a Jepsen-style test records them, and a thread-safe recorder.
//!
//! Each operation is an invocation (client, key, what it asked for, when) plus how it
//! ended: `Ok` (it happened, with what the store returned), `Fail` (it definitely did not
//! happen) or `Info` (unknown: it may take effect at any time after its invocation, or
//! never). Histories serialise to JSON so a failing run can be dumped and replayed.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked the store to do to one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    /// Read the current `(value, version)`, or "absent".
    Read,
    /// Unconditionally set the value; the store assigns a new version.
    Write { value: String },
    /// Set the value only if the key's current version is `expected_version`
    /// (0 means "the key is absent").
    Cas {
        expected_version: u64,
        value: String,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// It happened. Reads fill `read` (`None` = key absent); writes and successful CAS
    /// fill `version` with the version the store created.
    Ok {
        read: Option<(String, u64)>,
        version: Option<u64>,
    },
    /// It definitely did not happen (a CAS whose version mismatched, or an error that
    /// guarantees no effect).
    Fail,
    /// Unknown: it may or may not have happened, at any time after its invocation.
    Info,
}

impl Outcome {
    /// A successful read; `None` means the key was absent.
    pub fn read_ok(observed: Option<(String, u64)>) -> Self {
        Outcome::Ok {
            read: observed,
            version: None,
        }
    }

    /// A successful write or CAS that created `version`.
    pub fn write_ok(version: u64) -> Self {
        Outcome::Ok {
            read: None,
            version: Some(version),
        }
    }
}

/// One operation of a history. Times are nanoseconds since the recorder started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    pub invoke_ns: u64,
    /// `None` for `Info` (its completion is "never"). An `Ok` op without a completion
    /// time is checked as if it completed at the end of time.
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    /// One line for explanations: `client 3 write "b" -> ok v7 [100..250ns]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match &self.kind {
            OpKind::Read => write!(f, "read")?,
            OpKind::Write { value } => write!(f, "write {value:?}")?,
            OpKind::Cas {
                expected_version,
                value,
            } => write!(f, "cas v{expected_version}->{value:?}")?,
        }
        match (&self.outcome, &self.kind) {
            (Outcome::Ok { read: None, .. }, OpKind::Read) => write!(f, " -> absent")?,
            (
                Outcome::Ok {
                    read: Some((value, version)),
                    ..
                },
                OpKind::Read,
            ) => write!(f, " -> {value:?} v{version}")?,
            (
                Outcome::Ok {
                    version: Some(v), ..
                },
                _,
            ) => write!(f, " -> ok v{v}")?,
            (Outcome::Ok { version: None, .. }, _) => write!(f, " -> ok (no version)")?,
            (Outcome::Fail, _) => write!(f, " -> fail")?,
            (Outcome::Info, _) => write!(f, " -> info")?,
        }
        match self.complete_ns {
            Some(end) => write!(f, " [{}..{}ns]", self.invoke_ns, end),
            None => write!(f, " [{}..never]", self.invoke_ns),
        }
    }
}

/// A complete history: every operation in invocation order (as recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    pub fn new(ops: Vec<Op>) -> Self {
        Self { ops }
    }

    pub fn to_json(&self) -> String {
        // Only strings, integers and enums: serialisation cannot fail.
        serde_json::to_string_pretty(self).expect("history serialises to JSON")
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Dump to a JSON file, e.g. when a check fails, so the run can be replayed.
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    pub fn load(path: impl AsRef<Path>) -> io::Result<Self> {
        let json = std::fs::read_to_string(path)?;
        Self::from_json(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Handle to one invoked operation, for [`Recorder::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(usize);

impl OpId {
    /// Position of the operation in the recorded history.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Records a history from many client threads or tasks. Cloning shares the recording.
///
/// Call [`invoke`](Self::invoke) before sending the request and
/// [`complete`](Self::complete) after the response arrived: then each recorded interval
/// contains the real one, which is what makes the checker's real-time order sound.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    origin: Instant,
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    ops: Vec<Op>,
    completed: Vec<bool>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(RecorderInner {
                origin: Instant::now(),
                log: Mutex::new(Log::default()),
            }),
        }
    }

    /// Records an invocation. Until completed, the op counts as `Info`.
    pub fn invoke(&self, client: u64, key: impl Into<String>, kind: OpKind) -> OpId {
        let key = key.into();
        let mut log = self.lock();
        // Stamped under the lock so ids (history order) agree with invocation times.
        let invoke_ns = self.now_ns();
        log.ops.push(Op {
            client,
            key,
            kind,
            invoke_ns,
            complete_ns: None,
            outcome: Outcome::Info,
        });
        log.completed.push(false);
        OpId(log.ops.len() - 1)
    }

    /// Records how an invoked op ended. `Info` keeps "never" as its completion time.
    ///
    /// # Panics
    /// If `id` is not from this recorder or the op was already completed: both are
    /// harness bugs that would make the history meaningless.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let mut log = self.lock();
        let complete_ns = self.now_ns();
        let Log { ops, completed } = &mut *log;
        let (Some(op), Some(done)) = (ops.get_mut(id.0), completed.get_mut(id.0)) else {
            panic!("op id {} was not issued by this recorder", id.0);
        };
        assert!(!*done, "op {} completed twice: {op}", id.0);
        *done = true;
        op.complete_ns = (outcome != Outcome::Info).then_some(complete_ns);
        op.outcome = outcome;
    }

    /// Number of ops invoked so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the history so far; ops still in flight appear as `Info`.
    pub fn snapshot(&self) -> History {
        History::new(self.lock().ops.clone())
    }

    /// The recorded history; ops never completed are `Info`.
    pub fn into_history(self) -> History {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => History::new(
                inner
                    .log
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ops,
            ),
            Err(shared) => Recorder { inner: shared }.snapshot(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A client thread that panicked mid-test must not hide the history from the checker.
        self.inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_orders_times_and_marks_unfinished_ops_info() {
        let rec = Recorder::new();
        let w = rec.invoke(1, "k", OpKind::Write { value: "a".into() });
        let r = rec.invoke(2, "k", OpKind::Read);
        let lost = rec.invoke(3, "k", OpKind::Write { value: "b".into() });
        let timed_out = rec.invoke(4, "k", OpKind::Write { value: "c".into() });
        rec.complete(w, Outcome::write_ok(5));
        rec.complete(r, Outcome::read_ok(Some(("a".into(), 5))));
        rec.complete(timed_out, Outcome::Info);
        let h = rec.into_history();
        assert_eq!(h.ops.len(), 4);
        let (w, r) = (&h.ops[w.index()], &h.ops[r.index()]);
        assert!(w.invoke_ns <= r.invoke_ns);
        assert!(w.complete_ns.unwrap() >= w.invoke_ns);
        assert_eq!(w.outcome, Outcome::write_ok(5));
        assert_eq!(h.ops[lost.index()].outcome, Outcome::Info);
        assert_eq!(h.ops[lost.index()].complete_ns, None);
        assert_eq!(h.ops[timed_out.index()].complete_ns, None);
    }

    #[test]
    fn recorder_is_shared_across_threads() {
        let rec = Recorder::new();
        let threads: Vec<_> = (0..4u64)
            .map(|client| {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    for i in 0..100u64 {
                        let id = rec.invoke(client, format!("k{}", i % 3), OpKind::Read);
                        rec.complete(id, Outcome::read_ok(None));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let h = rec.into_history();
        assert_eq!(h.ops.len(), 400);
        assert!(h.ops.windows(2).all(|w| w[0].invoke_ns <= w[1].invoke_ns));
        assert!(h.ops.iter().all(|op| op.complete_ns >= Some(op.invoke_ns)));
    }

    #[test]
    #[should_panic(expected = "completed twice")]
    fn completing_twice_is_a_harness_bug() {
        let rec = Recorder::new();
        let id = rec.invoke(1, "k", OpKind::Read);
        rec.complete(id, Outcome::Fail);
        rec.complete(id, Outcome::Fail);
    }

    #[test]
    fn history_round_trips_through_json_and_files() {
        let rec = Recorder::new();
        let a = rec.invoke(
            7,
            "k",
            OpKind::Cas {
                expected_version: 0,
                value: "x".into(),
            },
        );
        rec.complete(a, Outcome::write_ok(3));
        rec.invoke(8, "k", OpKind::Read);
        let h = rec.snapshot();
        assert_eq!(History::from_json(&h.to_json()).unwrap(), h);

        let path = std::env::temp_dir().join(format!("shoal-check-{}.json", std::process::id()));
        h.save(&path).unwrap();
        let loaded = History::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), h);
        assert!(History::from_json("{\"ops\": [{}]}").is_err());
    }
}
