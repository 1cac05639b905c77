//! The deterministic state transition: one replicated `WriteOp` at one log index turns
//! into key changes and a reply.
//!
//! Every replica runs this with the same inputs (the op, the entry's index as the new
//! version, and the leader's clock captured at proposal time), so replicas never differ.
//! Expired keys are treated as absent here exactly as reads treat them.

use bytes::{Bytes, BytesMut};

use crate::UnixMillis;
use crate::command::{Condition, Expiry, ExpiryCondition, MAX_EXPIRE_AT, WriteOp, WriteReply};
use crate::error::Error;
use crate::limits::Limits;
use crate::record::Record;

/// Read access to a shard's current keys, including writes earlier in the same batch.
pub trait KeyView {
    /// The stored record, expired or not.
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Error>;
}

/// One change to a shard's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Bytes, Record),
    Delete(Bytes),
    /// Remove every key of the shard.
    DeleteAll,
}

/// The result of applying one op.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// `Ok` also for a transaction some of whose ops failed: those are in its reply.
    pub reply: Result<WriteReply, Error>,
    pub changes: Vec<Change>,
}

impl Applied {
    fn reply(reply: WriteReply, changes: Vec<Change>) -> Self {
        Self {
            reply: Ok(reply),
            changes,
        }
    }
    fn error(err: Error) -> Self {
        Self {
            reply: Err(err),
            changes: Vec::new(),
        }
    }
}

/// Applies `op` as the write at log index `version`, proposed at time `now`.
pub fn apply(
    op: &WriteOp,
    version: u64,
    now: UnixMillis,
    limits: &Limits,
    view: &mut dyn KeyView,
) -> Applied {
    match run(op, version, now, limits, view) {
        Ok(applied) => applied,
        Err(err) => Applied::error(err),
    }
}

pub(crate) fn live(
    view: &mut dyn KeyView,
    key: &[u8],
    now: UnixMillis,
) -> Result<Option<Record>, Error> {
    Ok(view.get(key)?.filter(|r| !r.is_expired(now)))
}

fn resolve_expiry(expiry: Expiry, old: Option<&Record>, now: UnixMillis) -> Option<UnixMillis> {
    match expiry {
        Expiry::Clear => None,
        Expiry::Keep => old.and_then(|r| r.expire_at),
        // Front ends refuse times past MAX_EXPIRE_AT; the clamp keeps an entry from an older
        // or misbehaving proposer from storing a time that reads back as a negative TTL.
        Expiry::AfterMillis(ms) => Some(now.saturating_add(ms).min(MAX_EXPIRE_AT)),
        Expiry::At(at) => Some(at.min(MAX_EXPIRE_AT)),
    }
}

/// A put of `record`, or a delete if its expiry is already past.
fn put_or_expire(key: &Bytes, record: Record, now: UnixMillis) -> Change {
    if record.is_expired(now) {
        Change::Delete(key.clone())
    } else {
        Change::Put(key.clone(), record)
    }
}

/// EXPIRE, PERSIST and their conditional forms: `Applied(true)` when the expiry changed.
fn set_expiry(
    view: &mut dyn KeyView,
    key: &Bytes,
    expiry: Expiry,
    condition: Option<ExpiryCondition>,
    version: u64,
    now: UnixMillis,
) -> Result<Applied, Error> {
    let Some(old) = live(view, key, now)? else {
        return Ok(Applied::reply(WriteReply::Applied(false), vec![]));
    };
    let expire_at = match expiry {
        Expiry::Keep => return Err(Error::Invalid("expiry 'keep' changes nothing".into())),
        Expiry::Clear if condition.is_some() => {
            return Err(Error::Invalid("a conditional expiry needs a time".into()));
        }
        Expiry::Clear if old.expire_at.is_none() => {
            return Ok(Applied::reply(WriteReply::Applied(false), vec![]));
        }
        other => resolve_expiry(other, Some(&old), now),
    };
    if let (Some(condition), Some(new)) = (condition, expire_at)
        && !condition.allows(old.expire_at, new)
    {
        return Ok(Applied::reply(WriteReply::Applied(false), vec![]));
    }
    let record = Record {
        value: old.value,
        version,
        expire_at,
    };
    Ok(Applied::reply(
        WriteReply::Applied(true),
        vec![put_or_expire(key, record, now)],
    ))
}

fn run(
    op: &WriteOp,
    version: u64,
    now: UnixMillis,
    limits: &Limits,
    view: &mut dyn KeyView,
) -> Result<Applied, Error> {
    for key in op.keys() {
        limits.check_key(key)?;
    }
    Ok(match op {
        WriteOp::Put {
            key,
            value,
            condition,
            expiry,
            return_old,
        } => {
            limits.check_value_len(value.len())?;
            let old = live(view, key, now)?;
            let allowed = match condition {
                Condition::None => true,
                Condition::IfAbsent => old.is_none(),
                Condition::IfPresent => old.is_some(),
                Condition::IfVersion(expected) => {
                    let actual = old.as_ref().map(|r| r.version);
                    if actual.unwrap_or(0) != *expected {
                        return Err(Error::VersionMismatch {
                            expected: *expected,
                            actual,
                        });
                    }
                    true
                }
            };
            let old_value = if *return_old {
                old.as_ref().map(|r| r.value.clone())
            } else {
                None
            };
            if !allowed {
                return Ok(Applied::reply(
                    WriteReply::Put {
                        version: None,
                        old: old_value,
                    },
                    vec![],
                ));
            }
            let expire_at = resolve_expiry(*expiry, old.as_ref(), now);
            let record = Record {
                value: value.clone(),
                version,
                expire_at,
            };
            Applied::reply(
                WriteReply::Put {
                    version: Some(version),
                    old: old_value,
                },
                vec![put_or_expire(key, record, now)],
            )
        }
        WriteOp::Delete { keys, if_version } => {
            if let Some(expected) = if_version {
                if keys.len() != 1 {
                    return Err(Error::Invalid("if_version needs exactly one key".into()));
                }
                let actual = live(view, &keys[0], now)?.map(|r| r.version);
                if actual != Some(*expected) {
                    return Err(Error::VersionMismatch {
                        expected: *expected,
                        actual,
                    });
                }
            }
            let mut changes = Vec::new();
            for key in keys {
                // A duplicate key in one DEL counts once, as in Redis.
                if live(view, key, now)?.is_some()
                    && !changes.contains(&Change::Delete(key.clone()))
                {
                    changes.push(Change::Delete(key.clone()));
                }
            }
            Applied::reply(WriteReply::Deleted(changes.len() as u64), changes)
        }
        WriteOp::IncrBy { key, delta } => {
            let old = live(view, key, now)?;
            let current = match &old {
                Some(r) => parse_i64(&r.value)?,
                None => 0,
            };
            let next = current.checked_add(*delta).ok_or(Error::Overflow)?;
            let record = Record {
                value: Bytes::from(next.to_string()),
                version,
                expire_at: old.as_ref().and_then(|r| r.expire_at),
            };
            Applied::reply(
                WriteReply::Int(next),
                vec![Change::Put(key.clone(), record)],
            )
        }
        WriteOp::IncrByFloat { key, delta } => {
            let old = live(view, key, now)?;
            let current = match &old {
                Some(r) => parse_f64(&r.value)?,
                None => 0.0,
            };
            let next = current + delta;
            if !next.is_finite() {
                return Err(Error::NanOrInfinity);
            }
            let text = format_float(next);
            let record = Record {
                value: Bytes::from(text.clone()),
                version,
                expire_at: old.as_ref().and_then(|r| r.expire_at),
            };
            Applied::reply(
                WriteReply::Float(text),
                vec![Change::Put(key.clone(), record)],
            )
        }
        WriteOp::Append { key, value } => {
            let old = live(view, key, now)?;
            let old_len = old.as_ref().map_or(0, |r| r.value.len());
            limits.check_value_len(old_len + value.len())?;
            let mut buf = BytesMut::with_capacity(old_len + value.len());
            if let Some(r) = &old {
                buf.extend_from_slice(&r.value);
            }
            buf.extend_from_slice(value);
            let len = buf.len() as u64;
            let record = Record {
                value: buf.freeze(),
                version,
                expire_at: old.and_then(|r| r.expire_at),
            };
            Applied::reply(WriteReply::Len(len), vec![Change::Put(key.clone(), record)])
        }
        WriteOp::SetRange { key, offset, value } => {
            let old = live(view, key, now)?;
            let old_len = old.as_ref().map_or(0, |r| r.value.len());
            if value.is_empty() {
                // Redis: an empty write creates nothing and reports the current length.
                return Ok(Applied::reply(WriteReply::Len(old_len as u64), vec![]));
            }
            let end = offset
                .checked_add(value.len() as u64)
                .filter(|end| *end <= limits.max_value_bytes as u64)
                .ok_or(Error::ValueTooLarge {
                    len: offset.saturating_add(value.len() as u64) as usize,
                    limit: limits.max_value_bytes,
                })? as usize;
            let mut buf = BytesMut::zeroed(old_len.max(end));
            if let Some(r) = &old {
                buf[..old_len].copy_from_slice(&r.value);
            }
            buf[*offset as usize..end].copy_from_slice(value);
            let len = buf.len() as u64;
            let record = Record {
                value: buf.freeze(),
                version,
                expire_at: old.and_then(|r| r.expire_at),
            };
            Applied::reply(WriteReply::Len(len), vec![Change::Put(key.clone(), record)])
        }
        WriteOp::SetExpiry { key, expiry } => set_expiry(view, key, *expiry, None, version, now)?,
        WriteOp::SetExpiryIf {
            key,
            expiry,
            condition,
        } => set_expiry(view, key, *expiry, Some(*condition), version, now)?,
        WriteOp::Read { keys } => {
            let records = keys
                .iter()
                .map(|key| live(view, key, now))
                .collect::<Result<_, _>>()?;
            Applied::reply(WriteReply::Records(records), vec![])
        }
        WriteOp::Transaction { ops, watched } => {
            crate::transaction::apply_transaction(ops, watched, version, now, limits, view)?
        }
        WriteOp::GetDel { key } => match live(view, key, now)? {
            Some(old) => Applied::reply(
                WriteReply::Value(Some(old.value)),
                vec![Change::Delete(key.clone())],
            ),
            None => Applied::reply(WriteReply::Value(None), vec![]),
        },
        WriteOp::GetEx { key, expiry } => match live(view, key, now)? {
            Some(old) => {
                let value = old.value.clone();
                let changes = if *expiry == Expiry::Keep {
                    vec![]
                } else {
                    let expire_at = resolve_expiry(*expiry, Some(&old), now);
                    vec![put_or_expire(
                        key,
                        Record {
                            value: old.value,
                            version,
                            expire_at,
                        },
                        now,
                    )]
                };
                Applied::reply(WriteReply::Value(Some(value)), changes)
            }
            None => Applied::reply(WriteReply::Value(None), vec![]),
        },
        WriteOp::PutMany {
            pairs,
            if_none_exist,
        } => {
            for (_, value) in pairs {
                limits.check_value_len(value.len())?;
            }
            if *if_none_exist {
                for (key, _) in pairs {
                    if live(view, key, now)?.is_some() {
                        return Ok(Applied::reply(WriteReply::Applied(false), vec![]));
                    }
                }
            }
            let changes = pairs
                .iter()
                .map(|(k, v)| {
                    Change::Put(
                        k.clone(),
                        Record {
                            value: v.clone(),
                            version,
                            expire_at: None,
                        },
                    )
                })
                .collect();
            Applied::reply(WriteReply::Applied(true), changes)
        }
        WriteOp::Rename {
            from,
            to,
            if_target_absent,
        } => {
            let Some(source) = live(view, from, now)? else {
                return Err(Error::NoSuchKey);
            };
            if *if_target_absent && live(view, to, now)?.is_some() {
                return Ok(Applied::reply(WriteReply::Applied(false), vec![]));
            }
            if from == to {
                return Ok(Applied::reply(WriteReply::Applied(true), vec![]));
            }
            let record = Record {
                value: source.value,
                version,
                expire_at: source.expire_at,
            };
            Applied::reply(
                WriteReply::Applied(true),
                vec![
                    Change::Delete(from.clone()),
                    Change::Put(to.clone(), record),
                ],
            )
        }
        WriteOp::Reap { keys } => {
            let mut changes = Vec::new();
            for key in keys {
                if view.get(key)?.is_some_and(|r| r.is_expired(now)) {
                    changes.push(Change::Delete(key.clone()));
                }
            }
            Applied::reply(WriteReply::Deleted(changes.len() as u64), changes)
        }
        WriteOp::Flush => Applied::reply(WriteReply::Ok, vec![Change::DeleteAll]),
    })
}

/// Parses a value as Redis does for INCR: optional '-', decimal digits, fits in i64.
/// Like Redis's `string2ll`: only the canonical form, so "007", "-0", "+1" and " 1" are
/// not integers (they would not print back as themselves).
pub fn parse_i64(bytes: &[u8]) -> Result<i64, Error> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical || bytes.len() > 20 {
        return Err(Error::NotInteger);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or(Error::NotInteger)
}

pub fn parse_f64(bytes: &[u8]) -> Result<f64, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::NotFloat)?;
    if text.is_empty() || text.trim() != text {
        return Err(Error::NotFloat);
    }
    let value = text.parse::<f64>().map_err(|_| Error::NotFloat)?;
    if value.is_nan() {
        return Err(Error::NotFloat);
    }
    Ok(value)
}

/// Formats a float the way Redis prints INCRBYFLOAT results: no exponent, no trailing zeros.
pub fn format_float(value: f64) -> String {
    // Rust's Display for f64 is the shortest exact round-trip form and never uses exponents.
    let text = format!("{value}");
    if text == "-0" { "0".to_string() } else { text }
}

/// A shard in a map, for tests of apply and of transactions.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    pub(crate) struct MapView(pub(crate) BTreeMap<Bytes, Record>);

    impl KeyView for MapView {
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Error> {
            Ok(self.0.get(key).cloned())
        }
    }

    impl MapView {
        /// Applies `op` and keeps its changes; returns its reply.
        pub(crate) fn run(
            &mut self,
            op: WriteOp,
            version: u64,
            now: u64,
        ) -> Result<WriteReply, Error> {
            let applied = apply(&op, version, now, &Limits::default(), self);
            for change in applied.changes {
                match change {
                    Change::Put(k, r) => {
                        self.0.insert(k, r);
                    }
                    Change::Delete(k) => {
                        self.0.remove(&k);
                    }
                    Change::DeleteAll => self.0.clear(),
                }
            }
            applied.reply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MapView;
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(key: &str, value: &str, condition: Condition) -> WriteOp {
        WriteOp::Put {
            key: b(key),
            value: b(value),
            condition,
            expiry: Expiry::Clear,
            return_old: false,
        }
    }

    #[test]
    fn put_conditions() {
        let mut v = MapView::default();
        assert_eq!(
            v.run(put("k", "1", Condition::IfPresent), 1, 0),
            Ok(WriteReply::Put {
                version: None,
                old: None
            })
        );
        assert_eq!(
            v.run(put("k", "1", Condition::IfAbsent), 2, 0),
            Ok(WriteReply::Put {
                version: Some(2),
                old: None
            })
        );
        assert_eq!(
            v.run(put("k", "2", Condition::IfAbsent), 3, 0),
            Ok(WriteReply::Put {
                version: None,
                old: None
            })
        );
        assert_eq!(
            v.run(put("k", "2", Condition::IfVersion(1)), 4, 0),
            Err(Error::VersionMismatch {
                expected: 1,
                actual: Some(2)
            })
        );
        assert_eq!(
            v.run(put("k", "2", Condition::IfVersion(2)), 5, 0),
            Ok(WriteReply::Put {
                version: Some(5),
                old: None
            })
        );
        assert_eq!(v.0[&b("k")].value, b("2"));
        // IfVersion(0) means "only if absent".
        assert_eq!(
            v.run(put("new", "x", Condition::IfVersion(0)), 6, 0),
            Ok(WriteReply::Put {
                version: Some(6),
                old: None
            })
        );
    }

    #[test]
    fn expired_keys_are_absent_and_ttl_resolves_at_proposal_time() {
        let mut v = MapView::default();
        let op = WriteOp::Put {
            key: b("t"),
            value: b("v"),
            condition: Condition::None,
            expiry: Expiry::AfterMillis(100),
            return_old: false,
        };
        v.run(op, 1, 1_000).unwrap();
        assert_eq!(v.0[&b("t")].expire_at, Some(1_100));
        // At 1_100 the key is expired, so NX succeeds.
        assert_eq!(
            v.run(put("t", "w", Condition::IfAbsent), 2, 1_100),
            Ok(WriteReply::Put {
                version: Some(2),
                old: None
            })
        );
        assert_eq!(v.0[&b("t")].expire_at, None);
    }

    #[test]
    fn incr_rules() {
        let mut v = MapView::default();
        assert_eq!(
            v.run(
                WriteOp::IncrBy {
                    key: b("n"),
                    delta: 5
                },
                1,
                0
            ),
            Ok(WriteReply::Int(5))
        );
        assert_eq!(
            v.run(
                WriteOp::IncrBy {
                    key: b("n"),
                    delta: -7
                },
                2,
                0
            ),
            Ok(WriteReply::Int(-2))
        );
        v.run(put("s", "abc", Condition::None), 3, 0).unwrap();
        assert_eq!(
            v.run(
                WriteOp::IncrBy {
                    key: b("s"),
                    delta: 1
                },
                4,
                0
            ),
            Err(Error::NotInteger)
        );
        v.run(put("m", &i64::MAX.to_string(), Condition::None), 5, 0)
            .unwrap();
        assert_eq!(
            v.run(
                WriteOp::IncrBy {
                    key: b("m"),
                    delta: 1
                },
                6,
                0
            ),
            Err(Error::Overflow)
        );
        assert_eq!(
            v.run(
                WriteOp::IncrByFloat {
                    key: b("f"),
                    delta: 10.5
                },
                7,
                0
            ),
            Ok(WriteReply::Float("10.5".into()))
        );
        assert_eq!(
            v.run(
                WriteOp::IncrByFloat {
                    key: b("f"),
                    delta: -0.5
                },
                8,
                0
            ),
            Ok(WriteReply::Float("10".into()))
        );
        assert_eq!(
            v.run(
                WriteOp::IncrByFloat {
                    key: b("s"),
                    delta: 1.0
                },
                9,
                0
            ),
            Err(Error::NotFloat)
        );
    }

    #[test]
    fn append_and_setrange_respect_limits() {
        let mut v = MapView::default();
        assert_eq!(
            v.run(
                WriteOp::Append {
                    key: b("a"),
                    value: b("he")
                },
                1,
                0
            ),
            Ok(WriteReply::Len(2))
        );
        assert_eq!(
            v.run(
                WriteOp::Append {
                    key: b("a"),
                    value: b("llo")
                },
                2,
                0
            ),
            Ok(WriteReply::Len(5))
        );
        assert_eq!(
            v.run(
                WriteOp::SetRange {
                    key: b("a"),
                    offset: 7,
                    value: b("x")
                },
                3,
                0
            ),
            Ok(WriteReply::Len(8))
        );
        assert_eq!(v.0[&b("a")].value, Bytes::from_static(b"hello\0\0x"));
        let limits = Limits {
            max_key_bytes: 16,
            max_value_bytes: 8,
        };
        let applied = apply(
            &WriteOp::Append {
                key: b("a"),
                value: b("y"),
            },
            4,
            0,
            &limits,
            &mut v,
        );
        assert_eq!(
            applied.reply,
            Err(Error::ValueTooLarge { len: 9, limit: 8 })
        );
        assert!(applied.changes.is_empty());
        let applied = apply(
            &put("a-very-long-key-indeed", "v", Condition::None),
            5,
            0,
            &limits,
            &mut v,
        );
        assert_eq!(
            applied.reply,
            Err(Error::KeyTooLarge { len: 22, limit: 16 })
        );
    }

    #[test]
    fn delete_with_version_and_rename() {
        let mut v = MapView::default();
        v.run(put("a", "1", Condition::None), 1, 0).unwrap();
        assert_eq!(
            v.run(
                WriteOp::Delete {
                    keys: vec![b("a")],
                    if_version: Some(9)
                },
                2,
                0
            ),
            Err(Error::VersionMismatch {
                expected: 9,
                actual: Some(1)
            })
        );
        assert_eq!(
            v.run(
                WriteOp::Rename {
                    from: b("a"),
                    to: b("b"),
                    if_target_absent: false
                },
                3,
                0
            ),
            Ok(WriteReply::Applied(true))
        );
        assert!(!v.0.contains_key(&b("a")));
        assert_eq!(v.0[&b("b")].version, 3);
        assert_eq!(
            v.run(
                WriteOp::Rename {
                    from: b("a"),
                    to: b("b"),
                    if_target_absent: false
                },
                4,
                0
            ),
            Err(Error::NoSuchKey)
        );
        assert_eq!(
            v.run(
                WriteOp::Delete {
                    keys: vec![b("b"), b("b"), b("zz")],
                    if_version: None
                },
                5,
                0
            ),
            Ok(WriteReply::Deleted(1))
        );
    }

    #[test]
    fn an_out_of_range_expiry_is_clamped_not_wrapped() {
        // Front ends refuse these; an entry carrying one must still not store a time that
        // reads back as a negative TTL.
        let mut v = MapView::default();
        for (i, expiry) in [Expiry::AfterMillis(u64::MAX), Expiry::At(u64::MAX)]
            .into_iter()
            .enumerate()
        {
            let op = WriteOp::Put {
                key: b("k"),
                value: b("v"),
                condition: Condition::None,
                expiry,
                return_old: false,
            };
            v.run(op, i as u64 + 1, 1_000).unwrap();
            assert_eq!(v.0[&b("k")].expire_at, Some(MAX_EXPIRE_AT));
        }
    }

    #[test]
    fn reap_only_deletes_expired() {
        let mut v = MapView::default();
        let op = |k: &str, ms| WriteOp::Put {
            key: b(k),
            value: b("v"),
            condition: Condition::None,
            expiry: Expiry::AfterMillis(ms),
            return_old: false,
        };
        v.run(op("short", 10), 1, 0).unwrap();
        v.run(op("long", 1_000), 2, 0).unwrap();
        assert_eq!(
            v.run(
                WriteOp::Reap {
                    keys: vec![b("short"), b("long")]
                },
                3,
                50
            ),
            Ok(WriteReply::Deleted(1))
        );
        assert!(v.0.contains_key(&b("long")));
    }

    #[test]
    fn conditional_expiry_compares_with_the_stored_one_at_apply_time() {
        use crate::command::ExpiryCondition::*;
        let mut v = MapView::default();
        v.run(put("k", "v", Condition::None), 1, 100).unwrap();
        let at = |v: &mut MapView, when, condition, version| {
            v.run(
                WriteOp::SetExpiryIf {
                    key: b("k"),
                    expiry: Expiry::At(when),
                    condition,
                },
                version,
                100,
            )
        };
        // No expiry yet: counts as "never".
        assert_eq!(
            at(&mut v, 5_000, HasExpiry, 2),
            Ok(WriteReply::Applied(false))
        );
        assert_eq!(at(&mut v, 5_000, Later, 3), Ok(WriteReply::Applied(false)));
        assert_eq!(
            at(&mut v, 5_000, HasExpiryAndEarlier, 4),
            Ok(WriteReply::Applied(false))
        );
        assert_eq!(
            at(&mut v, 5_000, NoExpiry, 5),
            Ok(WriteReply::Applied(true))
        );
        assert_eq!(v.0[&b("k")].expire_at, Some(5_000));
        assert_eq!(v.0[&b("k")].version, 5, "a change that applies is a write");
        assert_eq!(
            at(&mut v, 6_000, NoExpiry, 6),
            Ok(WriteReply::Applied(false))
        );
        assert_eq!(at(&mut v, 4_000, Later, 7), Ok(WriteReply::Applied(false)));
        assert_eq!(
            at(&mut v, 6_000, Earlier, 8),
            Ok(WriteReply::Applied(false))
        );
        assert_eq!(at(&mut v, 6_000, Later, 9), Ok(WriteReply::Applied(true)));
        assert_eq!(
            at(&mut v, 3_000, HasExpiryAndEarlier, 10),
            Ok(WriteReply::Applied(true))
        );
        assert_eq!(v.0[&b("k")].expire_at, Some(3_000));
        assert_eq!(
            at(&mut v, 9_000, HasExpiry, 11),
            Ok(WriteReply::Applied(true))
        );
        assert_eq!(v.0[&b("k")].version, 11);
        // A time already past deletes the key when the condition holds.
        assert_eq!(at(&mut v, 50, Earlier, 12), Ok(WriteReply::Applied(true)));
        assert!(!v.0.contains_key(&b("k")));
        assert_eq!(
            at(&mut v, 9_000, Earlier, 13),
            Ok(WriteReply::Applied(false))
        );
    }

    #[test]
    fn expire_in_past_deletes_and_persist_reports() {
        let mut v = MapView::default();
        v.run(put("k", "v", Condition::None), 1, 100).unwrap();
        assert_eq!(
            v.run(
                WriteOp::SetExpiry {
                    key: b("k"),
                    expiry: Expiry::Clear
                },
                2,
                100
            ),
            Ok(WriteReply::Applied(false))
        );
        assert_eq!(
            v.run(
                WriteOp::SetExpiry {
                    key: b("k"),
                    expiry: Expiry::At(50)
                },
                3,
                100
            ),
            Ok(WriteReply::Applied(true))
        );
        assert!(v.0.is_empty());
    }

    #[test]
    fn integers_must_be_canonical_as_in_redis() {
        for ok in [
            "0",
            "7",
            "-7",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert!(parse_i64(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "007",
            "-0",
            "+1",
            " 1",
            "1 ",
            "1a",
            "9223372036854775808",
            "0x10",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), Err(Error::NotInteger), "{bad}");
        }
    }

    #[test]
    fn float_format_matches_redis() {
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(10.5), "10.5");
        assert_eq!(format_float(5.0e3), "5000");
        assert_eq!(format_float(-0.0), "0");
    }
}
