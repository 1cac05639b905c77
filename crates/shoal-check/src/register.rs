//! The versioned-register model of one key: its state and how each op changes it.
//!
//! The key is absent or holds `(value, version)`. A successful write or CAS creates a new
//! version, strictly greater than the current one (versions are Raft log indices: they
//! increase per key but need not be consecutive). A read returns the current state. The
//! op that returned version `v` is the one that created `v`, so no two ok ops may return
//! the same version.
//!
//! `Info` writes/CAS did not report a version. If one takes effect, the version it created
//! is unknown until a read (or a CAS expecting it) observes it; the state then records
//! only a lower bound, and the first observation binds it.

use std::collections::HashMap;

/// Index of an op in [`KeyModel::ops`].
pub(crate) type Ix = u32;

/// The register's state, as small as possible because the search memoises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum State {
    Absent,
    /// Holds the value written by `op`, at `version`.
    Known {
        op: Ix,
        version: u64,
    },
    /// Holds the value written by the `Info` op `op`, at some version `>= min` not yet seen.
    Unbound {
        op: Ix,
        min: u64,
    },
}

impl State {
    /// The smallest version the next write could create.
    fn next_min(self) -> u64 {
        match self {
            State::Absent => 1,
            State::Known { version, .. } => version.saturating_add(1),
            State::Unbound { min, .. } => min.saturating_add(1),
        }
    }
}

/// What an op does, with values interned. `version: None` marks an `Info` write/CAS.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action {
    Read {
        observed: Option<(Ix, u64)>,
    },
    Write {
        value: Ix,
        version: Option<u64>,
    },
    Cas {
        expected: u64,
        value: Ix,
        version: Option<u64>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct ModelOp {
    /// Index into `History::ops`, for explanations.
    pub source: usize,
    pub invoke: u64,
    /// `None` for `Info` ops, which the search may leave out.
    pub complete: Option<u64>,
    pub action: Action,
}

impl Action {
    /// The version an ok write/CAS created.
    pub fn created(&self) -> Option<u64> {
        match *self {
            Action::Write { version, .. } | Action::Cas { version, .. } => version,
            Action::Read { .. } => None,
        }
    }
}

/// Why an op cannot be the next one linearized from some state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// A read returned "absent" but the key holds a value.
    ReadAbsent,
    /// A read returned a value but the key is absent.
    ReadPresent,
    /// A read returned a version other than the current one.
    WrongVersion,
    /// A read returned a value other than the current one.
    WrongValue,
    /// A read or CAS would bind an `Info` write to a version that is too old or belongs to
    /// another op.
    CannotBind,
    /// A write returned a version not greater than the current one.
    VersionNotIncreasing,
    /// A CAS succeeded but the current version is not the one it expected.
    CasMismatch,
}

/// One key's history, reduced to the ops the search considers, sorted by invocation
/// (built by [`KeyModel::build`] in `reduce`).
#[derive(Debug)]
pub(crate) struct KeyModel {
    pub ops: Vec<ModelOp>,
    pub values: Vec<String>,
    /// Version -> the ok op that created it.
    pub claimed: HashMap<u64, Ix>,
}

impl KeyModel {
    /// The value an op writes, if it writes.
    pub fn value_of(&self, op: &ModelOp) -> Option<Ix> {
        match op.action {
            Action::Read { .. } => None,
            Action::Write { value, .. } | Action::Cas { value, .. } => Some(value),
        }
    }

    fn written_by(&self, op: Ix) -> Ix {
        self.value_of(&self.ops[op as usize])
            .expect("only writes create states")
    }

    /// Linearizes op `ix` after `state`: the state it leaves, or why it cannot go here.
    pub fn step(&self, state: State, ix: Ix) -> Result<State, Reject> {
        match self.ops[ix as usize].action {
            Action::Read { observed: None } => match state {
                State::Absent => Ok(state),
                _ => Err(Reject::ReadAbsent),
            },
            Action::Read {
                observed: Some((value, version)),
            } => match state {
                State::Absent => Err(Reject::ReadPresent),
                State::Known { op, version: cur } => {
                    if cur != version {
                        Err(Reject::WrongVersion)
                    } else if self.written_by(op) != value {
                        Err(Reject::WrongValue)
                    } else {
                        Ok(state)
                    }
                }
                State::Unbound { op, min } => {
                    if self.written_by(op) != value {
                        Err(Reject::WrongValue)
                    } else if version < min || self.claimed.contains_key(&version) {
                        Err(Reject::CannotBind)
                    } else {
                        Ok(State::Known { op, version })
                    }
                }
            },
            Action::Write { version, .. } => install(ix, state.next_min(), version),
            Action::Cas {
                expected, version, ..
            } => {
                let matches = match state {
                    State::Absent => expected == 0,
                    State::Known { version: cur, .. } => cur == expected,
                    State::Unbound { min, .. } => {
                        expected >= min && !self.claimed.contains_key(&expected)
                    }
                };
                if !matches {
                    return Err(Reject::CasMismatch);
                }
                install(ix, expected.saturating_add(1), version)
            }
        }
    }

    /// Human-readable state for explanations.
    pub fn describe_state(&self, state: State) -> String {
        match state {
            State::Absent => "absent".into(),
            State::Known { op, version } => format!(
                "{:?} at version {version} (written by #{})",
                self.values[self.written_by(op) as usize],
                self.ops[op as usize].source
            ),
            State::Unbound { op, min } => format!(
                "{:?} at an unobserved version >= {min} (written by #{}, outcome unknown)",
                self.values[self.written_by(op) as usize],
                self.ops[op as usize].source
            ),
        }
    }
}

/// A write that created `version` (or, if `None`, an unknown one) no lower than `min`.
fn install(ix: Ix, min: u64, version: Option<u64>) -> Result<State, Reject> {
    match version {
        Some(v) if v >= min => Ok(State::Known { op: ix, version: v }),
        Some(_) => Err(Reject::VersionNotIncreasing),
        None => Ok(State::Unbound { op: ix, min }),
    }
}

/// Why an op could not follow `state`, for explanations.
pub(crate) fn describe_reject(model: &KeyModel, state: State, reject: Reject) -> String {
    let now = model.describe_state(state);
    match reject {
        Reject::ReadAbsent => format!("read saw the key absent, but it holds {now}"),
        Reject::ReadPresent => "read saw a value, but the key is absent".into(),
        Reject::WrongVersion | Reject::WrongValue => format!("the key holds {now}"),
        Reject::CannotBind => format!(
            "the key holds {now}, and the version read is older or belongs to another write"
        ),
        Reject::VersionNotIncreasing => {
            format!("the key holds {now}; the returned version must be newer")
        }
        Reject::CasMismatch => format!("CAS expected another version: the key holds {now}"),
    }
}
