//! Hand-written histories whose verdict is known: each bad one breaks a specific rule of
//! the versioned register, each good one exercises a legal but easily mis-modelled case.

use super::*;

#[test]
fn stale_read_is_rejected() {
    let why = assert_rejected(&[
        write(1, "a", [0, 10], 1),
        write(2, "b", [20, 30], 2),
        read(3, [40, 50], Some(("a", 1))),
    ]);
    // Points at the read, with the state it should have seen.
    assert!(why.contains("no linearization explains #2"), "{why}");
    assert!(why.contains("\"b\" at version 2 (written by #1)"), "{why}");
}

#[test]
fn lost_write_is_rejected() {
    assert_rejected(&[
        write(1, "a", [0, 10], 1),
        write(2, "b", [20, 30], 5),
        // Concurrent with the write: may legally see the old value...
        read(3, [25, 60], Some(("a", 1))),
        // ...but after the acknowledged write completed, "b" must be visible.
        read(3, [70, 80], Some(("a", 1))),
    ]);
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    // At a version some write created, but with another value.
    let why = assert_rejected(&[
        write(1, "a", [0, 10], 1),
        read(2, [20, 30], Some(("zz", 1))),
    ]);
    assert!(why.contains("different value"), "{why}");
    // At a version nobody created.
    let why = assert_rejected(&[
        write(1, "a", [0, 10], 1),
        read(2, [20, 30], Some(("zz", 7))),
    ]);
    assert!(
        why.contains("no write that could precede the read produced"),
        "{why}"
    );
    // Something from nothing.
    assert_rejected(&[read(2, [20, 30], Some(("zz", 7)))]);
}

#[test]
fn two_ok_writes_with_the_same_version_are_rejected() {
    let why = assert_rejected(&[write(1, "a", [0, 10], 3), write(2, "b", [20, 30], 3)]);
    assert!(why.contains("two ops created version 3"), "{why}");
    // Even when concurrent, and even with the same value.
    assert_rejected(&[write(1, "a", [0, 30], 3), write(2, "a", [10, 20], 3)]);
}

#[test]
fn cas_on_an_already_overwritten_version_is_rejected() {
    assert_rejected(&[
        write(1, "a", [0, 10], 1),
        write(2, "b", [20, 30], 2),
        cas(3, 1, "c", [40, 50], Some(3)),
    ]);
}

#[test]
fn reads_that_contradict_real_time_are_rejected() {
    // A read that completed before the write it observed was invoked.
    let why = assert_rejected(&[read(1, [0, 10], Some(("a", 1))), write(2, "a", [20, 30], 1)]);
    assert!(why.contains("before #1"), "{why}");
    // "Absent" after a completed write.
    assert_rejected(&[write(1, "a", [0, 10], 1), read(2, [20, 30], None)]);
    // Going back to an older version after seeing the newer one.
    assert_rejected(&[
        write(1, "a", [0, 10], 1),
        write(2, "b", [20, 100], 2),
        read(3, [30, 40], Some(("b", 2))),
        read(3, [50, 60], Some(("a", 1))),
    ]);
}

#[test]
fn versions_going_backwards_in_real_time_are_rejected() {
    assert_rejected(&[write(1, "a", [0, 10], 5), write(2, "b", [20, 30], 3)]);
}

#[test]
fn unknown_outcome_write_creates_one_version_after_its_invocation() {
    // Not two versions.
    assert_rejected(&[
        write_info(1, "b", 0),
        read(2, [10, 20], Some(("b", 7))),
        read(2, [30, 40], Some(("b", 8))),
    ]);
    // Not one older than a version that existed when it was invoked, whether its value
    // is unique...
    assert_rejected(&[
        write(1, "a", [0, 10], 5),
        write_info(2, "b", 20),
        read(3, [30, 40], Some(("b", 3))),
    ]);
    // ...or also written by another op (so the search must bind the version itself).
    assert_rejected(&[
        write(1, "b", [0, 5], 1),
        write(1, "a", [10, 20], 5),
        write_info(2, "b", 30),
        read(3, [40, 50], Some(("b", 3))),
    ]);
    // Once seen, it is placed by its version: not after a newer one.
    assert_rejected(&[
        write_info(1, "b", 0),
        read(2, [10, 20], Some(("b", 7))),
        write(1, "c", [30, 40], 9),
        read(2, [50, 60], Some(("b", 7))),
    ]);
    // A value nobody wrote cannot be pinned on one of another value (here "c", written
    // twice, so which write created version 5 stays open).
    assert_rejected(&[
        write(1, "c", [0, 10], 1),
        write_info(2, "c", 20),
        read(3, [30, 40], Some(("d", 5))),
        read(3, [50, 60], Some(("c", 5))),
    ]);
    // Two different values seen at one version.
    assert_rejected(&[
        write_info(1, "b", 0),
        write_info(2, "c", 0),
        read(3, [10, 20], Some(("b", 7))),
        read(3, [30, 40], Some(("c", 7))),
    ]);
}

#[test]
fn concurrent_writes_may_be_seen_in_either_order() {
    // Versions say "a" went first on this key...
    assert_linearizable(&[
        write(1, "a", [0, 100], 1),
        write(2, "b", [0, 100], 2),
        read(3, [0, 50], None),
        read(3, [60, 70], Some(("a", 1))),
        read(4, [20, 95], Some(("b", 2))),
        read(3, [110, 120], Some(("b", 2))),
    ]);
    // ...and "b" first here, with the same intervals.
    assert_linearizable(&[
        write(1, "a", [0, 100], 4),
        write(2, "b", [0, 100], 3),
        read(3, [10, 50], Some(("b", 3))),
        read(4, [20, 95], Some(("a", 4))),
        read(3, [110, 120], Some(("a", 4))),
    ]);
}

#[test]
fn read_concurrent_with_a_write_may_see_the_old_value() {
    assert_linearizable(&[
        write(1, "a", [0, 10], 1),
        write(2, "b", [20, 40], 2),
        read(3, [25, 35], Some(("a", 1))),
        read(4, [30, 45], Some(("b", 2))),
        read(3, [50, 60], Some(("b", 2))),
    ]);
}

#[test]
fn equal_timestamps_count_as_concurrent() {
    // The recorder cannot order events within one clock tick, so neither does the checker.
    assert_linearizable(&[write(1, "a", [0, 10], 1), read(2, [10, 20], None)]);
    assert_rejected(&[write(1, "a", [0, 10], 1), read(2, [11, 20], None)]);
}

#[test]
fn info_write_may_appear_later() {
    assert_linearizable(&[
        write(1, "a", [0, 10], 1),
        write_info(2, "b", 20),
        read(3, [30, 40], Some(("a", 1))),
        read(3, [100, 110], Some(("b", 7))),
        read(4, [105, 130], Some(("b", 7))),
        write(1, "c", [140, 150], 9),
        read(3, [160, 170], Some(("c", 9))),
    ]);
}

#[test]
fn info_write_of_a_value_also_written_elsewhere_may_appear() {
    assert_linearizable(&[
        write(1, "b", [0, 10], 3),
        write_info(2, "b", 20),
        read(3, [30, 40], Some(("b", 3))),
        read(3, [50, 60], Some(("b", 7))),
    ]);
}

#[test]
fn info_write_may_never_appear() {
    assert_linearizable(&[
        write(1, "a", [0, 10], 1),
        write_info(2, "b", 20),
        read(3, [100, 110], Some(("a", 1))),
        write(1, "c", [120, 130], 2),
        read(3, [140, 150], Some(("c", 2))),
    ]);
}

#[test]
fn failed_ops_are_ignored() {
    let mut failed_write = write(2, "zz", [15, 25], 2);
    failed_write.outcome = Outcome::Fail;
    assert_linearizable(&[
        write(1, "a", [0, 10], 1),
        failed_write,
        cas(2, 99, "x", [20, 30], None),
        cas(2, 0, "y", [20, 30], None),
        read(3, [40, 50], Some(("a", 1))),
    ]);
}

#[test]
fn successful_cas_chain_is_accepted() {
    assert_linearizable(&[
        read(1, [0, 5], None),
        cas(1, 0, "a", [10, 20], Some(1)),
        cas(2, 1, "b", [30, 40], Some(4)),
        // Races the next CAS and loses.
        cas(3, 1, "lost", [35, 65], None),
        cas(1, 4, "c", [50, 60], Some(9)),
        read(2, [70, 80], Some(("c", 9))),
    ]);
}

#[test]
fn unknown_outcome_cas_and_writes_can_be_observed_through_cas() {
    let mut info_cas = cas(2, 2, "b", [20, 0], None);
    info_cas.outcome = Outcome::Info;
    info_cas.complete_ns = None;
    assert_linearizable(&[
        write(1, "a", [0, 10], 2),
        info_cas,
        read(3, [50, 60], Some(("b", 5))),
        cas(1, 5, "c", [70, 80], Some(6)),
    ]);
    // A CAS expecting a version no ok op created: only the info write can have made it.
    assert_linearizable(&[
        write(1, "a", [0, 10], 1),
        write_info(2, "b", 20),
        cas(3, 4, "c", [50, 60], Some(6)),
        read(1, [70, 80], Some(("c", 6))),
    ]);
    assert_rejected(&[write(1, "a", [0, 10], 1), cas(3, 4, "c", [50, 60], Some(6))]);
}

#[test]
fn keys_are_checked_independently() {
    let mut ops = vec![write(1, "a", [0, 10], 1), read(2, [20, 30], Some(("a", 1)))];
    let mut bad = vec![write(1, "a", [0, 10], 1), read(2, [20, 30], None)];
    for op in &mut bad {
        op.key = "z".into();
    }
    ops.append(&mut bad);
    let report = check(&ops);
    assert!(!report.is_ok());
    assert_eq!(report.keys.len(), 2);
    assert_eq!(report.key("k").unwrap().verdict, Verdict::Linearizable);
    assert!(matches!(
        report.key("z").unwrap().verdict,
        Verdict::NotLinearizable { ref key, .. } if key == "z"
    ));
    assert_eq!(report.failures().count(), 1);
}

#[test]
fn exhausted_budget_is_unknown_never_ok() {
    let ops: Vec<Op> = (0..20)
        .map(|i| write(i, "a", [10 * i, 10 * i + 5], i + 1))
        .collect();
    let tight = CheckOptions { max_states: 5 };
    let report = check_history(&History::new(ops.clone()), &tight);
    assert!(!report.is_ok());
    let Verdict::Unknown { reason } = &report.keys[0].verdict else {
        panic!("{report:?}");
    };
    assert!(reason.contains("CheckOptions::max_states = 5"), "{reason}");
    assert!(check(&ops).is_ok());
}

#[test]
fn malformed_histories_are_unknown() {
    let mut no_version = write(1, "a", [0, 10], 1);
    no_version.outcome = Outcome::read_ok(None);
    let report = check(&[no_version]);
    assert!(
        matches!(&report.keys[0].verdict, Verdict::Unknown { reason } if reason.contains("malformed")),
        "{report:?}"
    );
    let backwards = write(1, "a", [10, 5], 1);
    assert!(!check(&[backwards]).is_ok());
}

#[test]
fn ok_op_without_completion_time_is_still_required() {
    let mut open = write(1, "a", [0, 10], 1);
    open.complete_ns = None;
    assert_linearizable(&[open, read(2, [20, 30], Some(("a", 1)))]);
    // Unlike an `Info` op it cannot be left out: this CAS fits nowhere.
    let mut open = cas(1, 7, "c", [20, 30], Some(8));
    open.complete_ns = None;
    assert_rejected(&[write(2, "a", [0, 10], 1), open]);
}
