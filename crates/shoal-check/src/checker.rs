//! Per-key linearizability checking of the versioned register.
//!
//! Keys are independent registers, so the history is split by key (linearizability is
//! compositional) and each key is searched on its own. The search is Wing–Gong/Lowe's
//! depth-first search as Porcupine runs it: repeatedly pick an op that may go next (one
//! invoked no later than the earliest completion among ops not yet linearized), apply it
//! to the model, and backtrack when the earliest-completing op cannot be placed. Each
//! (set of linearized ops, model state) pair is explored once. `Info` ops may be placed
//! anywhere after their invocation or left out; `Fail` ops are dropped.
//!
//! The number of memoised states is bounded by [`CheckOptions::max_states`]; running out
//! gives [`Verdict::Unknown`], never a false "linearizable".

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::explain::explain;
use crate::history::{History, Op};
use crate::reduce::BuildError;
use crate::register::{Ix, KeyModel, State};

/// Default bound on memoised search states per key. Memory is roughly
/// `max_states * (ops_on_the_key / 8 + 64)` bytes.
pub const DEFAULT_MAX_STATES: usize = 5_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Per key: stop with [`Verdict::Unknown`] after memoising this many search states.
    pub max_states: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_states: DEFAULT_MAX_STATES,
        }
    }
}

/// The verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: String,
        explanation: String,
    },
    /// The checker could not decide (search budget exhausted, or a malformed history).
    Unknown {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    pub key: String,
    /// Ops the search considered (after dropping `Fail` ops and unobservable `Info` ops).
    pub ops: usize,
    /// Search states memoised.
    pub states: usize,
    pub verdict: Verdict,
}

/// Verdicts for every key in the history, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// True only if every key is linearizable; `Unknown` is not ok.
    pub fn is_ok(&self) -> bool {
        self.keys.iter().all(|k| k.verdict == Verdict::Linearizable)
    }

    /// The report for `key`, if the history touched it.
    pub fn key(&self, key: &str) -> Option<&KeyReport> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// Keys that are not (known to be) linearizable.
    pub fn failures(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|k| k.verdict != Verdict::Linearizable)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bad = self.failures().count();
        writeln!(
            f,
            "{} keys checked, {} linearizable, {bad} not",
            self.keys.len(),
            self.keys.len() - bad
        )?;
        for k in self.failures() {
            match &k.verdict {
                Verdict::NotLinearizable { explanation, .. } => {
                    writeln!(f, "key {:?}: NOT linearizable\n{explanation}", k.key)?
                }
                Verdict::Unknown { reason } => writeln!(f, "key {:?}: unknown: {reason}", k.key)?,
                Verdict::Linearizable => {}
            }
        }
        Ok(())
    }
}

/// Checks every key of `history` for linearizability of the versioned register.
pub fn check_history(history: &History, options: &CheckOptions) -> Report {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, members)| check_key(key, &history.ops, &members, options, true))
        .collect();
    Report { keys }
}

/// Checks one key; `prechecks: false` leaves every violation to the search (for tests).
pub(crate) fn check_key(
    key: &str,
    history: &[Op],
    members: &[usize],
    options: &CheckOptions,
    prechecks: bool,
) -> KeyReport {
    let report = |ops, states, verdict| KeyReport {
        key: key.to_owned(),
        ops,
        states,
        verdict,
    };
    let model = match KeyModel::build(history, members, prechecks) {
        Ok(model) => model,
        Err(BuildError::Malformed(why)) => {
            let reason = format!("malformed history: {why}");
            return report(members.len(), 0, Verdict::Unknown { reason });
        }
        Err(BuildError::Violation(explanation)) => {
            let explanation = format!("key {key:?}: {explanation}");
            let key = key.to_owned();
            return report(
                members.len(),
                0,
                Verdict::NotLinearizable { key, explanation },
            );
        }
    };
    let ops = model.ops.len();
    match search(&model, options.max_states) {
        Search::Linearizable { states } => report(ops, states, Verdict::Linearizable),
        Search::Violation { states, best } => {
            let explanation = explain(key, &model, history, &best);
            let key = key.to_owned();
            report(ops, states, Verdict::NotLinearizable { key, explanation })
        }
        Search::OutOfBudget { states } => {
            let reason = format!(
                "search budget exhausted: {states} states explored on {ops} ops, over \
                 CheckOptions::max_states = {}; the key may or may not be linearizable",
                options.max_states
            );
            report(ops, states, Verdict::Unknown { reason })
        }
    }
}

/// The furthest the search got: linearized ops in order, and the state they leave.
#[derive(Debug)]
pub(crate) struct Partial {
    pub order: Vec<Ix>,
    pub state: State,
}

pub(crate) enum Search {
    Linearizable { states: usize },
    Violation { states: usize, best: Partial },
    OutOfBudget { states: usize },
}

struct Frame {
    op: Ix,
    before: State,
}

/// Depth-first search for a linearization of `model.ops`.
pub(crate) fn search(model: &KeyModel, max_states: usize) -> Search {
    let ops = &model.ops;
    let n = ops.len();
    // Ops that must be linearized, by completion; the first one not yet linearized is
    // the deadline: nothing invoked after it completed may go before it.
    let mut due: Vec<usize> = (0..n).filter(|&i| ops[i].complete.is_some()).collect();
    due.sort_by_key(|&i| (ops[i].complete, i));
    let mut rank = vec![usize::MAX; n];
    for (r, &i) in due.iter().enumerate() {
        rank[i] = r;
    }

    let mut done = vec![0u64; n.div_ceil(64)];
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    let mut first_open = 0; // lowest op index not linearized
    let mut next_due = 0; // lowest rank in `due` not linearized
    let mut state = State::Absent;
    let mut stack: Vec<Frame> = Vec::new();
    let mut memo = Memo::default();
    let mut best = Partial {
        order: Vec::new(),
        state,
    };
    let mut best_due = 0;
    let mut due_done = 0; // required ops on the stack
    let mut resume = 0;

    loop {
        let Some(&deadline_op) = due.get(next_due) else {
            return Search::Linearizable { states: memo.len };
        };
        let deadline = ops[deadline_op].complete.unwrap_or(u64::MAX);
        let mut chosen = None;
        let mut i = resume.max(first_open);
        while i < n && ops[i].invoke <= deadline {
            if !is_done(&done, i)
                && let Ok(next) = model.step(state, i as Ix)
            {
                done[i / 64] |= 1 << (i % 64);
                if memo.insert(&done, next) {
                    chosen = Some((i, next));
                    break;
                }
                done[i / 64] &= !(1 << (i % 64));
            }
            i += 1;
        }
        if memo.len > max_states {
            return Search::OutOfBudget { states: memo.len };
        }
        match chosen {
            Some((i, next)) => {
                stack.push(Frame {
                    op: i as Ix,
                    before: state,
                });
                state = next;
                while first_open < n && is_done(&done, first_open) {
                    first_open += 1;
                }
                while next_due < due.len() && is_done(&done, due[next_due]) {
                    next_due += 1;
                }
                if rank[i] != usize::MAX {
                    due_done += 1;
                }
                if due_done > best_due {
                    best_due = due_done;
                    best = Partial {
                        order: stack.iter().map(|f| f.op).collect(),
                        state,
                    };
                }
                resume = 0;
            }
            None => {
                let Some(frame) = stack.pop() else {
                    return Search::Violation {
                        states: memo.len,
                        best,
                    };
                };
                let i = frame.op as usize;
                done[i / 64] &= !(1 << (i % 64));
                state = frame.before;
                first_open = first_open.min(i);
                if rank[i] != usize::MAX {
                    due_done -= 1;
                    next_due = next_due.min(rank[i]);
                }
                resume = i + 1;
            }
        }
    }
}

/// Visited (linearized set, state) pairs, bucketed by a fingerprint so a lookup does not
/// copy the bitset; full keys are compared, so a collision cannot prune a new state.
#[derive(Default)]
struct Memo {
    table: HashMap<u64, Vec<MemoKey>, BuildHasherDefault<PassThrough>>,
    len: usize,
}

/// Linearized-ops bitset and the state they leave.
type MemoKey = (Box<[u64]>, State);

impl Memo {
    /// Records the pair; false if it was already there.
    fn insert(&mut self, done: &[u64], state: State) -> bool {
        let mut h = FxHasher::default();
        for &word in done {
            h.write_u64(word);
        }
        state.hash(&mut h);
        let bucket = self.table.entry(h.finish()).or_default();
        if bucket.iter().any(|(d, s)| *s == state && **d == *done) {
            return false;
        }
        bucket.push((done.into(), state));
        self.len += 1;
        true
    }
}

/// Fast multiplicative hash (as in rustc's FxHasher) with a final avalanche, since the
/// table uses the result directly.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The memo's keys are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
