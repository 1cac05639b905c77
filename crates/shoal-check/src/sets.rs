//! Final-state checkers for the counter and append-set workloads.
//!
//! Both workloads only compare what the store ends with against what clients were told:
//! acknowledged operations must be there, operations with unknown outcome may or may not
//! be, and nothing else may appear.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Bound on the exact counter check: the subset sums of the unknown increments are
/// computed as a bitset over their range, costing `unknown.len() * range / 64` word
/// operations. Above this, only the range `[sum of negatives, sum of positives]` is checked.
pub const MAX_COUNTER_DP_WORDS: u64 = 1 << 26;

/// How many offending elements a set error lists per category.
const MAX_LISTED: usize = 10;

/// How thoroughly [`check_counter_detailed`] could check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterCheck {
    /// Every read is the acknowledged sum plus an exact subset sum of the unknowns.
    Exact,
    /// Too many unknowns for subset-sum: every read is only within the possible range.
    RangeOnly { reason: String },
}

/// Every final read must equal `sum(acknowledged) + sum(S)` for some subset `S` of
/// `unknown_increments`. Falls back to a range check beyond [`MAX_COUNTER_DP_WORDS`]
/// (use [`check_counter_detailed`] to learn whether it did).
pub fn check_counter(
    final_reads: &[i64],
    acknowledged_increments: &[i64],
    unknown_increments: &[i64],
) -> Result<(), String> {
    check_counter_detailed(final_reads, acknowledged_increments, unknown_increments).map(|_| ())
}

/// [`check_counter`], also saying whether the check was exact or only a range check.
pub fn check_counter_detailed(
    final_reads: &[i64],
    acknowledged_increments: &[i64],
    unknown_increments: &[i64],
) -> Result<CounterCheck, String> {
    // i128: sums of many i64 increments cannot overflow.
    let base: i128 = acknowledged_increments.iter().map(|&v| i128::from(v)).sum();
    let lo: i128 = unknown_increments
        .iter()
        .map(|&v| i128::from(v.min(0)))
        .sum();
    let hi: i128 = unknown_increments
        .iter()
        .map(|&v| i128::from(v.max(0)))
        .sum();
    let width = hi - lo + 1;
    let words = width.div_euclid(64) + 1;
    let work = words.saturating_mul(unknown_increments.len() as i128);
    let what = format!(
        "{} acknowledged increments sum to {base}; {} unknown increments add between {lo} \
         and {hi}",
        acknowledged_increments.len(),
        unknown_increments.len()
    );

    if work > i128::from(MAX_COUNTER_DP_WORDS) {
        let reason = format!(
            "range check only: exact subset-sum over {} unknown increments would take {work} \
             word operations, over MAX_COUNTER_DP_WORDS = {MAX_COUNTER_DP_WORDS}",
            unknown_increments.len()
        );
        for &read in final_reads {
            let extra = i128::from(read) - base;
            if extra < lo || extra > hi {
                return Err(format!(
                    "final read {read} is impossible: {what} ({reason})"
                ));
            }
        }
        return Ok(CounterCheck::RangeOnly { reason });
    }

    // Bit `i` set: some subset of the unknowns sums to `lo + i`.
    let words = usize::try_from(words).expect("bounded by MAX_COUNTER_DP_WORDS");
    let mut reachable = vec![0u64; words];
    let zero = usize::try_from(-lo).expect("bounded by MAX_COUNTER_DP_WORDS");
    reachable[zero / 64] |= 1 << (zero % 64);
    for &inc in unknown_increments {
        let shift = usize::try_from(inc.unsigned_abs()).expect("bounded by MAX_COUNTER_DP_WORDS");
        if inc > 0 {
            or_shifted_up(&mut reachable, shift);
        } else if inc < 0 {
            or_shifted_down(&mut reachable, shift);
        }
    }
    for &read in final_reads {
        let extra = i128::from(read) - base;
        let ok = (lo..=hi).contains(&extra) && {
            let i = usize::try_from(extra - lo).expect("within the range");
            reachable[i / 64] & (1 << (i % 64)) != 0
        };
        if !ok {
            return Err(format!(
                "final read {read} is impossible: {what}, and no subset of the unknown \
                 increments adds {extra}"
            ));
        }
    }
    Ok(CounterCheck::Exact)
}

/// `bits |= bits << shift`, in place (high words first, so sources are still unmodified).
fn or_shifted_up(bits: &mut [u64], shift: usize) {
    let (q, r) = (shift / 64, shift % 64);
    for i in (q..bits.len()).rev() {
        let mut v = bits[i - q] << r;
        if r > 0 && i > q {
            v |= bits[i - q - 1] >> (64 - r);
        }
        bits[i] |= v;
    }
}

/// `bits |= bits >> shift`, in place (low words first, so sources are still unmodified).
fn or_shifted_down(bits: &mut [u64], shift: usize) {
    let (q, r) = (shift / 64, shift % 64);
    let n = bits.len();
    for i in 0..n.saturating_sub(q) {
        let mut v = bits[i + q] >> r;
        if r > 0 && i + q + 1 < n {
            v |= bits[i + q + 1] << (64 - r);
        }
        bits[i] |= v;
    }
}

/// The final set must contain every acknowledged element, each element at most once, and
/// only elements some client tried to add (acknowledged or unknown outcome).
pub fn check_set(
    final_elements: &[String],
    acknowledged: &[String],
    unknown: &[String],
) -> Result<(), String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in final_elements {
        *seen.entry(e.as_str()).or_default() += 1;
    }
    let attempted: HashSet<&str> = acknowledged
        .iter()
        .chain(unknown)
        .map(String::as_str)
        .collect();

    let mut lost: Vec<&str> = acknowledged
        .iter()
        .map(String::as_str)
        .filter(|e| !seen.contains_key(e))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut duplicated: Vec<&str> = seen
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&e, _)| e)
        .collect();
    let mut unexpected: Vec<&str> = seen
        .keys()
        .copied()
        .filter(|e| !attempted.contains(e))
        .collect();

    let mut problems = String::new();
    for (what, list) in [
        ("acknowledged but missing", &mut lost),
        ("present more than once", &mut duplicated),
        ("present but never added by any client", &mut unexpected),
    ] {
        if list.is_empty() {
            continue;
        }
        list.sort_unstable();
        let shown: Vec<_> = list.iter().take(MAX_LISTED).collect();
        let more = list.len().saturating_sub(MAX_LISTED);
        let _ = write!(
            problems,
            "{}{} {what}: {shown:?}",
            sep(&problems),
            list.len()
        );
        if more > 0 {
            let _ = write!(problems, " and {more} more");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "set of {} elements ({} acknowledged, {} unknown): {problems}",
            final_elements.len(),
            acknowledged.len(),
            unknown.len()
        ))
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "; " }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn counter_accepts_acknowledged_plus_any_subset_of_unknowns() {
        assert_eq!(
            check_counter_detailed(&[6], &[1, 2, 3], &[]),
            Ok(CounterCheck::Exact)
        );
        // 10 + {} / {5} / {7} / {5, 7}
        assert!(check_counter(&[10, 15, 17, 22], &[4, 6], &[5, 7]).is_ok());
        assert!(check_counter(&[0], &[], &[]).is_ok());
        // Negative increments (decrements) with unknown outcome.
        assert!(check_counter(&[7, 10, 4, 1], &[10], &[-3, -6]).is_ok());
        assert!(check_counter(&[i64::MAX], &[i64::MAX, 1], &[-1]).is_ok());
    }

    #[test]
    fn counter_rejects_reads_no_subset_explains() {
        // 11 is between 10 and 22 but no subset of {5, 7} adds 1.
        let err = check_counter(&[10, 11], &[4, 6], &[5, 7]).unwrap_err();
        assert!(err.contains("final read 11"), "{err}");
        // Lost acknowledged increment.
        assert!(check_counter(&[5], &[1, 2, 3], &[]).is_err());
        // Counted twice.
        assert!(check_counter(&[12], &[1, 2, 3], &[]).is_err());
        assert!(check_counter(&[9], &[10], &[-3, -6]).is_err());
    }

    #[test]
    fn counter_exact_with_shifts_across_words_and_many_unknowns() {
        // Subset sums of {70, 70, 130}: 0, 70, 130, 140, 200, 270 (shifts span words).
        let unknown = [70, 130, 70];
        for extra in [0, 70, 130, 140, 200, 270] {
            assert!(
                check_counter(&[5 + extra], &[5], &unknown).is_ok(),
                "{extra}"
            );
        }
        for extra in [1, 69, 71, 139, 141, 269] {
            assert!(
                check_counter(&[5 + extra], &[5], &unknown).is_err(),
                "{extra}"
            );
        }
        let ones = vec![1; 1000];
        assert_eq!(
            check_counter_detailed(&[0, 999, 1000], &[], &ones),
            Ok(CounterCheck::Exact)
        );
        assert!(check_counter(&[1001], &[], &ones).is_err());
    }

    #[test]
    fn counter_falls_back_to_a_range_check_and_says_so() {
        let unknown: Vec<i64> = (0..64).map(|i| 1_000_000_007 * (i + 1)).collect();
        let total: i64 = unknown.iter().sum();
        match check_counter_detailed(&[1], &[1], &unknown) {
            Ok(CounterCheck::RangeOnly { reason }) => {
                assert!(reason.contains("MAX_COUNTER_DP_WORDS"), "{reason}")
            }
            other => panic!("expected a range-only pass, got {other:?}"),
        }
        // Inside the range: passes the weaker check even though no subset adds 2.
        assert!(check_counter(&[3], &[1], &unknown).is_ok());
        let err = check_counter(&[total + 2], &[1], &unknown).unwrap_err();
        assert!(err.contains("range check only"), "{err}");
        assert!(check_counter(&[0], &[1], &unknown).is_err());
    }

    #[test]
    fn set_accepts_acknowledged_and_some_unknown_elements() {
        let acked = strings(&["a", "b", "c"]);
        let unknown = strings(&["x", "y"]);
        assert!(check_set(&strings(&["c", "a", "b"]), &acked, &unknown).is_ok());
        assert!(check_set(&strings(&["a", "y", "b", "c", "x"]), &acked, &unknown).is_ok());
        assert!(check_set(&[], &[], &unknown).is_ok());
    }

    #[test]
    fn set_rejects_lost_duplicated_and_invented_elements() {
        let acked = strings(&["a", "b", "c"]);
        let unknown = strings(&["x"]);
        let err = check_set(&strings(&["a", "c"]), &acked, &unknown).unwrap_err();
        assert!(err.contains("missing: [\"b\"]"), "{err}");
        let err = check_set(&strings(&["a", "b", "c", "a"]), &acked, &unknown).unwrap_err();
        assert!(err.contains("more than once: [\"a\"]"), "{err}");
        let err = check_set(&strings(&["a", "b", "c", "x", "x"]), &acked, &unknown).unwrap_err();
        assert!(err.contains("more than once: [\"x\"]"), "{err}");
        let err = check_set(&strings(&["a", "b", "c", "zz"]), &acked, &unknown).unwrap_err();
        assert!(err.contains("never added by any client: [\"zz\"]"), "{err}");
        // All three at once are all reported.
        let err = check_set(&strings(&["a", "a", "q"]), &acked, &unknown).unwrap_err();
        assert!(err.contains("2 acknowledged but missing"), "{err}");
        assert!(
            err.contains("more than once") && err.contains("never added"),
            "{err}"
        );
    }
}
