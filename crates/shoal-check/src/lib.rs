//! shoal-check: record what a Jepsen-style test did to the store, then decide whether it
//! was correct.
//!
//! - [`history`]: the operation history (invoke/complete pairs with ok/fail/info outcomes)
//!   and a thread-safe [`Recorder`]; histories round-trip through JSON for replay.
//! - [`check_history`]: per-key linearizability of shoal's versioned register, a
//!   Wing–Gong/Lowe search with Porcupine-style memoisation and an explicit state budget.
//! - [`check_counter`] and [`check_set`]: final-state checks for the counter and
//!   append-set workloads.

pub mod checker;
mod explain;
pub mod history;
mod reduce;
mod register;
pub mod sets;

#[cfg(test)]
mod tests;

pub use checker::{CheckOptions, DEFAULT_MAX_STATES, KeyReport, Report, Verdict, check_history};
pub use history::{History, Op, OpId, OpKind, Outcome, Recorder};
pub use sets::{
    CounterCheck, MAX_COUNTER_DP_WORDS, check_counter, check_counter_detailed, check_set,
};
