//! Turns a failed search into an explanation a person can act on.
//!
//! The search remembers its longest partial linearization (by required ops placed). From
//! there, the op with the earliest completion that is still unplaced is the smallest op no
//! linearization explains; the explanation shows the state at that point, the last ops
//! placed before it, and why each op that could come next does not fit.

use std::fmt::Write;

use crate::checker::Partial;
use crate::history::Op;
use crate::register::{Ix, KeyModel, describe_reject};

/// How many recent ops of the partial linearization to show.
const TAIL: usize = 5;
/// How many candidate ops to list before summarising the rest.
const MAX_CANDIDATES: usize = 12;

pub(crate) fn explain(key: &str, model: &KeyModel, history: &[Op], best: &Partial) -> String {
    let ops = &model.ops;
    let mut placed = vec![false; ops.len()];
    for &i in &best.order {
        placed[i as usize] = true;
    }
    let required = ops.iter().filter(|op| op.complete.is_some()).count();
    let placed_required = best
        .order
        .iter()
        .filter(|&&i| ops[i as usize].complete.is_some())
        .count();
    let describe = |i: usize| format!("#{} {}", ops[i].source, history[ops[i].source]);

    let Some(stuck) = (0..ops.len())
        .filter(|&i| !placed[i])
        .filter_map(|i| ops[i].complete.map(|end| (end, ops[i].invoke, i)))
        .min()
        .map(|(_, _, i)| i)
    else {
        // Cannot happen: the search only fails while a required op is unplaced.
        return format!("key {key:?}: no linearization found");
    };
    let deadline = ops[stuck].complete.unwrap_or(u64::MAX);

    let mut out = format!(
        "key {key:?}: no linearization explains {}\n\
         longest explainable prefix: {placed_required} of {required} completed ops; the key \
         then holds {}\n",
        describe(stuck),
        model.describe_state(best.state)
    );
    if !best.order.is_empty() {
        let from = best.order.len().saturating_sub(TAIL);
        let _ = writeln!(out, "last ops linearized:");
        for &i in &best.order[from..] {
            let _ = writeln!(out, "  {}", describe(i as usize));
        }
    }
    let _ = writeln!(out, "ops that could go next, and why none fits:");
    let candidates: Vec<usize> = (0..ops.len())
        .filter(|&i| !placed[i] && ops[i].invoke <= deadline)
        .collect();
    for &i in candidates.iter().take(MAX_CANDIDATES) {
        let why = match model.step(best.state, i as Ix) {
            Err(reject) => describe_reject(model, best.state, reject),
            Ok(_) => "fits here, but nothing can follow it".into(),
        };
        let _ = writeln!(out, "  {}: {why}", describe(i));
    }
    if candidates.len() > MAX_CANDIDATES {
        let _ = writeln!(out, "  ... and {} more", candidates.len() - MAX_CANDIDATES);
    }
    out
}
