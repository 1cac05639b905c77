//! Applying a MULTI/EXEC transaction: its ops run one after another against a view that
//! includes the changes of the ones before, and their changes come out as one list, so the
//! state machine stores them together and nothing else runs in between.

use std::collections::HashMap;

use bytes::Bytes;

use crate::UnixMillis;
use crate::apply::{Applied, Change, KeyView, apply, live};
use crate::command::{MAX_TRANSACTION_OPS, WriteOp, WriteReply};
use crate::error::Error;
use crate::limits::Limits;
use crate::record::Record;

/// The shard's keys as the transaction's earlier ops left them.
struct TransactionView<'a> {
    below: &'a mut dyn KeyView,
    /// Keys the transaction changed so far (`None`: deleted).
    changed: HashMap<Bytes, Option<Record>>,
}

impl KeyView for TransactionView<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Error> {
        match self.changed.get(key) {
            Some(record) => Ok(record.clone()),
            None => self.below.get(key),
        }
    }
}

/// Why `op` may not be part of a transaction, if it may not.
pub fn refuse_inside(op: &WriteOp) -> Option<&'static str> {
    match op {
        WriteOp::Transaction { .. } => Some("a transaction cannot contain another"),
        WriteOp::Flush => Some("FLUSHALL/FLUSHDB cannot run inside a transaction"),
        WriteOp::Reap { .. } => Some("reaping is internal"),
        _ => None,
    }
}

/// Checks a transaction's shape before it is proposed (apply checks again).
pub fn validate(ops: &[WriteOp]) -> Result<(), Error> {
    if ops.len() > MAX_TRANSACTION_OPS {
        return Err(Error::Invalid(format!(
            "a transaction of {} commands is over the limit of {MAX_TRANSACTION_OPS}",
            ops.len()
        )));
    }
    match ops.iter().find_map(refuse_inside) {
        Some(why) => Err(Error::Invalid(why.to_string())),
        None => Ok(()),
    }
}

/// Applies `ops` at log index `version` unless a `watched` key changed.
pub(crate) fn apply_transaction(
    ops: &[WriteOp],
    watched: &[(Bytes, Option<u64>)],
    version: u64,
    now: UnixMillis,
    limits: &Limits,
    view: &mut dyn KeyView,
) -> Result<Applied, Error> {
    validate(ops)?;
    for (key, expected) in watched {
        if live(view, key, now)?.map(|r| r.version) != *expected {
            return Ok(Applied {
                reply: Ok(WriteReply::Transaction(None)),
                changes: Vec::new(),
            });
        }
    }
    let mut view = TransactionView {
        below: view,
        changed: HashMap::new(),
    };
    let mut changes = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let applied = apply(op, version, now, limits, &mut view);
        for change in &applied.changes {
            match change {
                Change::Put(key, record) => {
                    view.changed.insert(key.clone(), Some(record.clone()));
                }
                Change::Delete(key) => {
                    view.changed.insert(key.clone(), None);
                }
                Change::DeleteAll => unreachable!("flush is refused inside a transaction"),
            }
        }
        changes.extend(applied.changes);
        results.push(applied.reply);
    }
    Ok(Applied {
        reply: Ok(WriteReply::Transaction(Some(results))),
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::MapView;
    use crate::command::{Condition, Expiry};

    const NOW: u64 = 1_000;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(key: &str, value: &str) -> WriteOp {
        WriteOp::Put {
            key: b(key),
            value: b(value),
            condition: Condition::None,
            expiry: Expiry::Clear,
            return_old: false,
        }
    }

    fn incr(key: &str) -> WriteOp {
        WriteOp::IncrBy {
            key: b(key),
            delta: 1,
        }
    }

    fn read(key: &str) -> WriteOp {
        WriteOp::Read { keys: vec![b(key)] }
    }

    fn value(reply: &Result<WriteReply, Error>) -> Option<Bytes> {
        match reply {
            Ok(WriteReply::Records(records)) => records[0].as_ref().map(|r| r.value.clone()),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn ops_see_the_ones_before_them_and_a_failing_one_undoes_nothing() {
        let mut store = MapView::default();
        let ops = vec![
            read("k"),
            set("k", "1"),
            incr("k"),
            read("k"),
            set("s", "text"),
            incr("s"),
            WriteOp::Delete {
                keys: vec![b("k")],
                if_version: None,
            },
            read("k"),
        ];
        let reply = store.run(
            WriteOp::Transaction {
                ops,
                watched: vec![],
            },
            7,
            NOW,
        );
        let Ok(WriteReply::Transaction(Some(results))) = reply else {
            panic!("expected results, got {reply:?}");
        };
        assert_eq!(value(&results[0]), None);
        assert_eq!(results[2], Ok(WriteReply::Int(2)));
        assert_eq!(value(&results[3]), Some(b("2")));
        assert!(results[5].is_err(), "INCR of text fails: {:?}", results[5]);
        assert_eq!(results[6], Ok(WriteReply::Deleted(1)));
        assert_eq!(value(&results[7]), None);
        // The failing INCR undid nothing: "s" stays, "k" is gone, all at version 7.
        assert_eq!(store.0.get(&b("s")).map(|r| r.version), Some(7));
        assert!(!store.0.contains_key(&b("k")));
    }

    #[test]
    fn a_changed_watched_key_applies_nothing() {
        let mut store = MapView::default();
        store.run(set("w", "a"), 3, NOW).unwrap();
        let transaction = |expected| WriteOp::Transaction {
            ops: vec![set("x", "1")],
            watched: vec![(b("w"), expected), (b("absent"), None)],
        };
        assert_eq!(
            store.run(transaction(Some(2)), 10, NOW),
            Ok(WriteReply::Transaction(None))
        );
        assert!(!store.0.contains_key(&b("x")));
        let applied = store.run(transaction(Some(3)), 11, NOW);
        assert!(matches!(applied, Ok(WriteReply::Transaction(Some(_)))));
        assert_eq!(store.0.get(&b("x")).map(|r| r.version), Some(11));
    }

    #[test]
    fn nesting_flushes_and_oversized_transactions_are_refused() {
        let mut store = MapView::default();
        let nested = WriteOp::Transaction {
            ops: vec![WriteOp::Transaction {
                ops: vec![],
                watched: vec![],
            }],
            watched: vec![],
        };
        assert!(matches!(store.run(nested, 1, NOW), Err(Error::Invalid(_))));
        let flush = WriteOp::Transaction {
            ops: vec![set("a", "1"), WriteOp::Flush],
            watched: vec![],
        };
        assert!(matches!(store.run(flush, 2, NOW), Err(Error::Invalid(_))));
        assert!(store.0.is_empty(), "a refused transaction applies nothing");
        let big = vec![incr("n"); MAX_TRANSACTION_OPS + 1];
        let err = validate(&big).unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
    }
}
