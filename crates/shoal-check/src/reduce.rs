//! Reduces one key's slice of a history to a [`KeyModel`] the search can run on.
//!
//! Drops what cannot matter (`Fail` ops, `Info` reads, `Info` writes nothing can observe),
//! turns `Info` writes that reads prove happened into ok writes, indexes versions, and
//! optionally reports violations visible op by op, with a clearer explanation than the
//! search could give.

use std::collections::{HashMap, HashSet};

use crate::history::{Op, OpKind, Outcome};
use crate::register::{Action, Ix, KeyModel, ModelOp};

/// Why a key's history could not even be searched.
#[derive(Debug)]
pub(crate) enum BuildError {
    /// The history itself is inconsistent (a harness bug): no verdict is possible.
    Malformed(String),
    /// A definite violation found without searching.
    Violation(String),
}

impl KeyModel {
    /// Reduces the ops `members` (indices into `history`) of one key. With `prechecks`,
    /// also reports violations that need no search, with a clearer explanation.
    pub fn build(history: &[Op], members: &[usize], prechecks: bool) -> Result<Self, BuildError> {
        let mut model = KeyModel {
            ops: Vec::with_capacity(members.len()),
            values: Vec::new(),
            claimed: HashMap::new(),
        };
        let mut interned: HashMap<String, Ix> = HashMap::new();
        let mut intern = |values: &mut Vec<String>, s: &str| -> Ix {
            *interned.entry(s.to_owned()).or_insert_with(|| {
                values.push(s.to_owned());
                Ix::try_from(values.len() - 1).expect("fewer than 2^32 values per key")
            })
        };
        for &source in members {
            let op = &history[source];
            let malformed =
                |why: &str| Err(BuildError::Malformed(format!("op #{source} {why}: {op}")));
            let complete = match op.outcome {
                // Did not happen.
                Outcome::Fail => continue,
                // Had no effect and observed nothing.
                Outcome::Info if op.kind == OpKind::Read => continue,
                Outcome::Info => None,
                Outcome::Ok { .. } => match op.complete_ns {
                    Some(end) if end < op.invoke_ns => {
                        return malformed("completes before it is invoked");
                    }
                    end => Some(end.unwrap_or(u64::MAX)),
                },
            };
            // What a write created: `None` for `Info`, which reported nothing.
            let version = match op.outcome {
                Outcome::Ok { version: None, .. } if op.kind != OpKind::Read => {
                    return malformed("succeeded without reporting a version");
                }
                Outcome::Ok { version, .. } => version,
                _ => None,
            };
            let action = match &op.kind {
                OpKind::Read => {
                    let Outcome::Ok { read, .. } = &op.outcome else {
                        unreachable!("only ok reads get here");
                    };
                    let observed = read
                        .as_ref()
                        .map(|(value, v)| (intern(&mut model.values, value), *v));
                    Action::Read { observed }
                }
                OpKind::Write { value } => Action::Write {
                    value: intern(&mut model.values, value),
                    version,
                },
                OpKind::Cas {
                    expected_version,
                    value,
                } => Action::Cas {
                    expected: *expected_version,
                    value: intern(&mut model.values, value),
                    version,
                },
            };
            model.ops.push(ModelOp {
                source,
                invoke: op.invoke_ns,
                complete,
                action,
            });
        }
        model.promote_observed_info_writes();
        // Invocation order lets the search find the ops that may go next with one scan.
        model.ops.sort_by_key(|op| (op.invoke, op.source));
        model.index_versions(history)?;
        if prechecks {
            model.precheck(history)?;
        }
        model.drop_unobservable_info_ops(history);
        Ok(model)
    }

    /// Fills `claimed`; two ops creating one version is a violation.
    fn index_versions(&mut self, history: &[Op]) -> Result<(), BuildError> {
        self.claimed.clear();
        for (ix, op) in self.ops.iter().enumerate() {
            let Some(v) = op.action.created() else {
                continue;
            };
            let ix = Ix::try_from(ix).expect("fewer than 2^32 ops per key");
            if let Some(&other) = self.claimed.get(&v) {
                let first = self.ops[other as usize].source;
                return Err(BuildError::Violation(format!(
                    "two ops created version {v}: #{first} ({}) and #{} ({})",
                    history[first], op.source, history[op.source]
                )));
            }
            self.claimed.insert(v, ix);
        }
        Ok(())
    }

    /// An `Info` write whose value no other op writes, seen by reads at a version no ok op
    /// created, certainly happened: only it can have created what those reads saw. It
    /// becomes an ok write of that version, completing by the first such read's
    /// completion (it precedes that read, so it precedes everything the read precedes).
    /// This keeps it from being optional at every later point of the search.
    fn promote_observed_info_writes(&mut self) {
        let ok_versions: HashSet<u64> = self
            .ops
            .iter()
            .filter_map(|op| op.action.created())
            .collect();
        let mut writers = vec![0usize; self.values.len()];
        let mut info_writer = vec![None; self.values.len()];
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(value) = self.value_of(op) {
                writers[value as usize] += 1;
                if op.complete.is_none() {
                    info_writer[value as usize] = Some(i);
                }
            }
        }
        // Per value: the one version reads saw it at and the earliest such completion,
        // or `None` if reads disagree (left to the search, which will reject it).
        let mut seen: HashMap<Ix, Option<(u64, u64)>> = HashMap::new();
        for op in &self.ops {
            let Action::Read {
                observed: Some((value, version)),
            } = op.action
            else {
                continue;
            };
            if writers[value as usize] != 1
                || info_writer[value as usize].is_none()
                || ok_versions.contains(&version)
            {
                continue;
            }
            let end = op.complete.unwrap_or(u64::MAX);
            seen.entry(value)
                .and_modify(|e| {
                    *e = e.and_then(|(v, first)| (v == version).then_some((v, first.min(end))))
                })
                .or_insert(Some((version, end)));
        }
        for (value, observed) in seen {
            let (Some((version, end)), Some(i)) = (observed, info_writer[value as usize]) else {
                continue;
            };
            let op = &mut self.ops[i];
            op.complete = Some(end);
            match &mut op.action {
                Action::Write { version: v, .. } | Action::Cas { version: v, .. } => {
                    *v = Some(version)
                }
                Action::Read { .. } => unreachable!("only writes have values"),
            }
        }
    }

    /// Definite violations visible op by op; the search would find each of them too.
    fn precheck(&self, history: &[Op]) -> Result<(), BuildError> {
        let describe = |op: &ModelOp| format!("#{} ({})", op.source, history[op.source]);
        for op in &self.ops {
            match op.action {
                Action::Write {
                    version: Some(0), ..
                }
                | Action::Cas {
                    version: Some(0), ..
                } => {
                    return Err(BuildError::Violation(format!(
                        "{} returned version 0, which means \"absent\"",
                        describe(op)
                    )));
                }
                Action::Cas {
                    expected,
                    version: Some(v),
                    ..
                } if v <= expected => {
                    return Err(BuildError::Violation(format!(
                        "{} returned version {v}, not greater than the version {expected} it replaced",
                        describe(op)
                    )));
                }
                Action::Read {
                    observed: Some((value, version)),
                } => self.precheck_read(op, value, version, &describe)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn precheck_read(
        &self,
        read: &ModelOp,
        value: Ix,
        version: u64,
        describe: &dyn Fn(&ModelOp) -> String,
    ) -> Result<(), BuildError> {
        let end = read.complete.unwrap_or(u64::MAX);
        let violation =
            |why: String| Err(BuildError::Violation(format!("{} {why}", describe(read))));
        if version == 0 {
            return violation("returned a value at version 0, which means \"absent\"".into());
        }
        if let Some(&creator) = self.claimed.get(&version) {
            let creator = &self.ops[creator as usize];
            if self.value_of(creator) != Some(value) {
                return violation(format!(
                    "saw version {version}, but {} created that version with a different value",
                    describe(creator)
                ));
            }
            if creator.invoke > end {
                return violation(format!(
                    "saw version {version} before {} created it: the read completed first",
                    describe(creator)
                ));
            }
            return Ok(());
        }
        // No ok op created this version: only an `Info` write of the same value could have.
        let possible = self.ops.iter().any(|op| {
            op.complete.is_none() && op.invoke <= end && self.value_of(op) == Some(value)
        });
        if !possible {
            return violation(format!(
                "saw {:?} at version {version}, which no write that could precede the read \
                 produced",
                self.values[value as usize]
            ));
        }
        Ok(())
    }

    /// Leaves out `Info` writes and CAS nothing can observe. Linearized, such a write leaves the
    /// key at an unobserved version, which only a read of its value or a CAS expecting a
    /// version no ok op created can follow (anything else just overwrites it, and
    /// without it the next version is less constrained). So dropping the ones no such
    /// read or CAS can follow loses no linearization, and keeps the search from trying
    /// them at every later point.
    fn drop_unobservable_info_ops(&mut self, history: &[Op]) {
        let unclaimed = |v: u64| v != 0 && !self.claimed.contains_key(&v);
        let mut read_unclaimed = vec![false; self.values.len()];
        // Latest completion of an ok CAS that expects an unclaimed version.
        let mut blind_cas_end = None;
        for op in &self.ops {
            match op.action {
                Action::Read {
                    observed: Some((value, version)),
                } if unclaimed(version) => read_unclaimed[value as usize] = true,
                Action::Cas {
                    expected,
                    version: Some(_),
                    ..
                } if unclaimed(expected) => {
                    blind_cas_end = blind_cas_end.max(op.complete);
                }
                _ => {}
            }
        }
        let observable = |op: &ModelOp| {
            op.complete.is_none()
                && (self
                    .value_of(op)
                    .is_some_and(|v| read_unclaimed[v as usize])
                    || blind_cas_end.is_some_and(|end| op.invoke <= end))
        };
        // An observable unknown-outcome CAS expecting an unclaimed version can follow
        // any unknown-outcome write: then all of them stay.
        let chained = self.ops.iter().any(|op| {
            observable(op)
                && matches!(op.action, Action::Cas { expected, .. } if unclaimed(expected))
        });
        let keep: Vec<bool> = self
            .ops
            .iter()
            .map(|op| op.complete.is_some() || chained || observable(op))
            .collect();
        if keep.iter().all(|&k| k) {
            return;
        }
        let mut keep = keep.into_iter();
        self.ops.retain(|_| keep.next().unwrap_or(true));
        self.index_versions(history)
            .expect("dropping ops cannot create duplicate versions");
    }
}
