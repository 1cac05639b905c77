//! Tests of the register checker: hand-written histories with known verdicts, and
//! histories simulated from a real linearizable register (plus provably bad mutations).

mod known;
mod simulated;

use crate::checker::check_key;
use crate::{CheckOptions, History, Op, OpKind, Outcome, Report, Verdict, check_history};

fn op(client: u64, kind: OpKind, at: [u64; 2], outcome: Outcome) -> Op {
    let complete_ns = (outcome != Outcome::Info).then_some(at[1]);
    Op {
        client,
        key: "k".into(),
        kind,
        invoke_ns: at[0],
        complete_ns,
        outcome,
    }
}

/// An acknowledged write of `value` that created `version`, on key "k".
fn write(client: u64, value: &str, at: [u64; 2], version: u64) -> Op {
    let kind = OpKind::Write {
        value: value.into(),
    };
    op(client, kind, at, Outcome::write_ok(version))
}

/// A write with unknown outcome, invoked at `start`.
fn write_info(client: u64, value: &str, start: u64) -> Op {
    let kind = OpKind::Write {
        value: value.into(),
    };
    op(client, kind, [start, 0], Outcome::Info)
}

fn read(client: u64, at: [u64; 2], observed: Option<(&str, u64)>) -> Op {
    let observed = observed.map(|(v, ver)| (v.to_owned(), ver));
    op(client, OpKind::Read, at, Outcome::read_ok(observed))
}

/// A CAS expecting `expected`; `created: None` means it failed.
fn cas(client: u64, expected: u64, value: &str, at: [u64; 2], created: Option<u64>) -> Op {
    let kind = OpKind::Cas {
        expected_version: expected,
        value: value.into(),
    };
    op(
        client,
        kind,
        at,
        created.map_or(Outcome::Fail, Outcome::write_ok),
    )
}

fn check(ops: &[Op]) -> Report {
    check_history(&History::new(ops.to_vec()), &CheckOptions::default())
}

/// The search alone (no prechecks) on one key: linearizable or not.
fn search_only(ops: &[Op], key: &str, options: &CheckOptions) -> Verdict {
    let members: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].key == key).collect();
    check_key(key, ops, &members, options, false).verdict
}

fn assert_linearizable(ops: &[Op]) {
    let report = check(ops);
    assert!(
        report.is_ok(),
        "{report}\n{}",
        History::new(ops.to_vec()).to_json()
    );
}

/// Asserts both the full check and the bare search reject key "k"; returns the
/// full check's explanation.
fn assert_rejected(ops: &[Op]) -> String {
    let report = check(ops);
    let Some(Verdict::NotLinearizable { key, explanation }) =
        report.key("k").map(|k| k.verdict.clone())
    else {
        panic!("expected a violation, got {report:?}");
    };
    assert_eq!(key, "k");
    let bare = search_only(ops, "k", &CheckOptions::default());
    assert!(
        matches!(bare, Verdict::NotLinearizable { .. }),
        "search alone: {bare:?}"
    );
    explanation
}
