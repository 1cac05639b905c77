//! Property tests over simulated runs: clients issue overlapping ops against a real
//! in-memory versioned register, each op taking effect at one instant inside its interval
//! (unknown-outcome ops at any instant after invocation, or never). Such histories are
//! linearizable by construction; one read mutated into a provably impossible result is not.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use proptest::prelude::*;

use super::*;

/// splitmix64, so a failing case is reproducible from its proptest-chosen seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug)]
struct Sim {
    seed: u64,
    clients: u64,
    ops_per_client: u64,
    keys: u64,
    info_percent: u64,
    /// Writes drawing from a few shared values, which makes unknown outcomes ambiguous.
    shared_percent: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Invoke { client: u64 },
    Effect { op: usize },
    Complete { op: usize },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    /// Outcome unknown to the client; the effect may or may not happen.
    Info,
    /// An error that guarantees no effect.
    Error,
}

fn simulate(sim: Sim) -> History {
    let mut rng = Rng(sim.seed);
    let mut store: HashMap<String, (String, u64)> = HashMap::new();
    // One counter for all keys, like a Raft log index: per key increasing, with gaps.
    let mut last_version = 0u64;
    let mut ops: Vec<Op> = Vec::new();
    let mut fates: Vec<Fate> = Vec::new();
    let mut results: Vec<Option<Outcome>> = Vec::new();
    // The version each (client, key) last learned from its own ok results.
    let mut knows: HashMap<(u64, String), u64> = HashMap::new();
    let mut remaining = vec![sim.ops_per_client; sim.clients as usize];
    let mut events = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<_>, time: u64, event: Event| {
        // `seq` breaks ties: an effect scheduled at its op's completion time runs first.
        events.push(Reverse((time, seq, event)));
        seq += 1;
    };
    for client in 0..sim.clients {
        push(&mut events, rng.below(20), Event::Invoke { client });
    }
    while let Some(Reverse((now, _, event))) = events.pop() {
        match event {
            Event::Invoke { client } => {
                let left = &mut remaining[client as usize];
                if *left == 0 {
                    continue;
                }
                *left -= 1;
                let key = format!("k{}", rng.below(sim.keys));
                let known = knows.get(&(client, key.clone())).copied().unwrap_or(0);
                let value = if rng.chance(sim.shared_percent) {
                    format!("shared-{}", rng.below(3))
                } else {
                    format!("c{client}-{}", ops.len())
                };
                let kind = match rng.below(10) {
                    0..=3 => OpKind::Read,
                    4..=6 => OpKind::Write { value },
                    // Like a real client: mostly the version it last saw (possibly stale by
                    // now), sometimes a guess.
                    _ => OpKind::Cas {
                        expected_version: if rng.chance(85) {
                            known
                        } else {
                            rng.below(known + 3)
                        },
                        value,
                    },
                };
                let fate = if rng.chance(sim.info_percent) {
                    Fate::Info
                } else if rng.chance(5) {
                    Fate::Error
                } else {
                    Fate::Normal
                };
                let op = ops.len();
                let duration = 1 + rng.below(40);
                match fate {
                    Fate::Normal => push(
                        &mut events,
                        now + rng.below(duration + 1),
                        Event::Effect { op },
                    ),
                    // Possibly long after the client gave up.
                    Fate::Info if kind != OpKind::Read && rng.chance(50) => push(
                        &mut events,
                        now + rng.below(3 * duration + 1),
                        Event::Effect { op },
                    ),
                    Fate::Info | Fate::Error => {}
                }
                push(&mut events, now + duration, Event::Complete { op });
                ops.push(Op {
                    client,
                    key,
                    kind,
                    invoke_ns: now,
                    complete_ns: None,
                    outcome: Outcome::Info,
                });
                fates.push(fate);
                results.push(None);
            }
            Event::Effect { op } => {
                let (key, kind) = (&ops[op].key, &ops[op].kind);
                let result = match kind {
                    OpKind::Read => Outcome::read_ok(store.get(key).cloned()),
                    OpKind::Write { value } => {
                        last_version += 1 + rng.below(3);
                        store.insert(key.clone(), (value.clone(), last_version));
                        Outcome::write_ok(last_version)
                    }
                    OpKind::Cas {
                        expected_version,
                        value,
                    } => {
                        if store.get(key).map_or(0, |(_, v)| *v) == *expected_version {
                            last_version += 1 + rng.below(3);
                            store.insert(key.clone(), (value.clone(), last_version));
                            Outcome::write_ok(last_version)
                        } else {
                            Outcome::Fail
                        }
                    }
                };
                results[op] = Some(result);
            }
            Event::Complete { op } => {
                let client = ops[op].client;
                if fates[op] != Fate::Info {
                    ops[op].complete_ns = Some(now);
                    ops[op].outcome = match fates[op] {
                        Fate::Error => Outcome::Fail,
                        _ => results[op].take().expect("effect precedes completion"),
                    };
                    let learned = match &ops[op].outcome {
                        Outcome::Ok {
                            read: Some((_, v)), ..
                        }
                        | Outcome::Ok {
                            version: Some(v), ..
                        } => Some(*v),
                        Outcome::Ok { .. } => Some(0),
                        _ => None,
                    };
                    if let Some(v) = learned {
                        knows.insert((client, ops[op].key.clone()), v);
                    }
                }
                push(&mut events, now + rng.below(10), Event::Invoke { client });
            }
        }
    }
    History::new(ops)
}

/// The version an ok write/CAS created, with its value.
fn created(op: &Op) -> Option<(String, u64)> {
    match (&op.kind, &op.outcome) {
        (
            OpKind::Write { value } | OpKind::Cas { value, .. },
            Outcome::Ok {
                version: Some(v), ..
            },
        ) => Some((value.clone(), *v)),
        _ => None,
    }
}

/// The value a write or CAS (tries to) write.
fn written(op: &Op) -> Option<&str> {
    match &op.kind {
        OpKind::Write { value } | OpKind::Cas { value, .. } => Some(value),
        OpKind::Read => None,
    }
}

fn is_ok_read(op: &Op) -> bool {
    op.kind == OpKind::Read && matches!(op.outcome, Outcome::Ok { .. })
}

/// Makes one ok read return something no linearization allows; returns its key and the
/// kind of mutation applied. `kind`: 0 = a value only written after the read completed,
/// 1 = a stale version overwritten (in real time) before the read began, 2 = a value never
/// written (also the fallback when the asked-for kind has no candidate).
fn mutate(history: &mut History, kind: u8, pick: usize) -> Option<(String, u8)> {
    let ops = &history.ops;
    let ends = |op: &Op| op.complete_ns.unwrap_or(u64::MAX);
    let reads: Vec<usize> = (0..ops.len()).filter(|&i| is_ok_read(&ops[i])).collect();
    let writes: Vec<usize> = (0..ops.len())
        .filter(|&i| created(&ops[i]).is_some())
        .collect();
    let same_key = |a: usize, b: usize| ops[a].key == ops[b].key;
    let mut choices: Vec<(usize, (String, u64))> = Vec::new();
    match kind {
        0 => {
            // Any write (also unknown-outcome ones, then at an unused version) whose value
            // only ops invoked after the read completed write.
            let unused = 1000
                + ops
                    .iter()
                    .filter_map(created)
                    .map(|c| c.1)
                    .max()
                    .unwrap_or(0);
            for &r in &reads {
                for (w, op) in ops.iter().enumerate() {
                    let Some(value) = written(op) else { continue };
                    // Nothing that could precede the read writes this value.
                    let only_later = ops
                        .iter()
                        .filter(|other| other.key == op.key && written(other) == Some(value))
                        .all(|other| other.invoke_ns > ends(&ops[r]));
                    if same_key(r, w) && only_later && op.outcome != Outcome::Fail {
                        let version = created(op).map_or(unused, |c| c.1);
                        choices.push((r, (value.to_owned(), version)));
                    }
                }
            }
        }
        1 => {
            for &r in &reads {
                for &old in &writes {
                    let newer_before_read = writes.iter().any(|&new| {
                        same_key(new, r)
                            && same_key(old, r)
                            && ends(&ops[old]) < ops[new].invoke_ns
                            && ends(&ops[new]) < ops[r].invoke_ns
                    });
                    if newer_before_read {
                        choices.push((r, created(&ops[old]).unwrap()));
                    }
                }
            }
        }
        _ => {}
    }
    let mut applied = kind;
    if choices.is_empty() {
        let &r = reads.get(pick % reads.len().max(1))?;
        let version = ops[r].invoke_ns + 1;
        choices.push((r, ("never-written".to_owned(), version)));
        applied = 2;
    }
    let (r, observed) = choices.swap_remove(pick % choices.len());
    history.ops[r].outcome = Outcome::read_ok(Some(observed));
    Some((history.ops[r].key.clone(), applied))
}

fn sim_strategy(min_clients: u64, min_ops: u64) -> impl Strategy<Value = Sim> {
    (
        any::<u64>(),
        min_clients..=6u64,
        min_ops..=15u64,
        1..=3u64,
        0..=30u64,
        prop_oneof![Just(0u64), 1..=40u64],
    )
        .prop_map(
            |(seed, clients, ops_per_client, keys, info_percent, shared_percent)| Sim {
                seed,
                clients,
                ops_per_client,
                keys,
                info_percent,
                shared_percent,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn simulated_histories_are_linearizable(sim in sim_strategy(1, 1)) {
        let history = simulate(sim);
        let report = check_history(&history, &CheckOptions::default());
        prop_assert!(report.is_ok(), "{sim:?}\n{report}\n{}", history.to_json());
    }

    #[test]
    fn impossible_reads_are_rejected(
        sim in sim_strategy(2, 4),
        kind in 0u8..3,
        pick in any::<usize>(),
    ) {
        let mut history = simulate(sim);
        let mutated = mutate(&mut history, kind, pick);
        prop_assume!(mutated.is_some());
        let (key, kind) = mutated.unwrap();
        let report = check_history(&history, &CheckOptions::default());
        let verdict = &report.key(&key).unwrap().verdict;
        prop_assert!(
            matches!(verdict, Verdict::NotLinearizable { .. }),
            "{sim:?} kind {kind}: {verdict:?}\n{}", history.to_json()
        );
        // The search must find it on its own too, not only the prechecks.
        let bare = search_only(&history.ops, &key, &CheckOptions::default());
        prop_assert!(matches!(bare, Verdict::NotLinearizable { .. }), "search alone: {bare:?}");
    }
}

#[test]
fn mutations_of_each_kind_are_available() {
    // Guards the property test against silently falling back to one mutation.
    let mut found = [0; 3];
    for seed in 0..200 {
        let sim = Sim {
            seed,
            clients: 4,
            ops_per_client: 10,
            keys: 2,
            info_percent: 10,
            shared_percent: 10,
        };
        for (kind, count) in found.iter_mut().enumerate() {
            let mut history = simulate(sim);
            let before = history.clone();
            let mutated = mutate(&mut history, kind as u8, seed as usize);
            if mutated.is_some_and(|(_, applied)| applied == kind as u8) && history != before {
                *count += 1;
            }
        }
    }
    assert!(found.iter().all(|&n| n > 50), "{found:?}");
}

#[test]
fn large_simulated_history_is_checked_within_budget() {
    let sim = Sim {
        seed: 7,
        clients: 10,
        ops_per_client: 400,
        keys: 3,
        info_percent: 5,
        shared_percent: 0,
    };
    let history = simulate(sim);
    let start = Instant::now();
    let report = check_history(&history, &CheckOptions::default());
    let states: usize = report.keys.iter().map(|k| k.states).sum();
    eprintln!(
        "{} ops, {states} states, checked in {:?}",
        history.ops.len(),
        start.elapsed()
    );
    assert!(report.is_ok(), "{report}");
}

#[test]
fn stale_read_in_a_large_history_is_found_within_budget() {
    // Many unknown outcomes: the case where the search could blow up.
    let sim = Sim {
        seed: 11,
        clients: 10,
        ops_per_client: 100,
        keys: 1,
        info_percent: 25,
        shared_percent: 0,
    };
    let mut history = simulate(sim);
    assert!(check_history(&history, &CheckOptions::default()).is_ok());
    let (key, kind) = mutate(&mut history, 1, 4242).unwrap();
    assert_eq!(kind, 1);
    let report = check_history(&history, &CheckOptions::default());
    let k = report.key(&key).unwrap();
    eprintln!("{} ops, {} states", k.ops, k.states);
    assert!(
        matches!(k.verdict, Verdict::NotLinearizable { .. }),
        "{report}"
    );
}
