//! Generic key commands: DEL, EXISTS, the EXPIRE family, TTL, PERSIST, TYPE, RENAME and
//! RANDOMKEY. (SCAN and KEYS, which walk the keyspace, live in `scan`.)

use bytes::Bytes;
use shoal_core::record::Record;
use shoal_core::{Command, Expiry, ExpiryCondition, Reply, WriteOp, key_slot};

use super::args::{self, Unit, err, is, now_ms};
use super::{Ctx, Outcome, Session, applied_reply, count_reply, ok_reply, unexpected};
use crate::resp::frame::Frame;

fn delete(ctx: &Ctx, session: &Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let (keys, slot) = ctx.keys_in_one_shard(&args[1..])?;
    Ok(ctx.write(
        session,
        WriteOp::Delete {
            keys,
            if_version: None,
        },
        slot,
        count_reply,
    ))
}

pub(super) fn del(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    delete(ctx, session, args)
}

/// Deletion is already cheap for the caller (the node frees nothing the client waits on
/// beyond the Raft round), so UNLINK is DEL.
pub(super) fn unlink(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    delete(ctx, session, args)
}

/// EXISTS (and TOUCH): how many of the keys exist, a key named twice counting twice.
pub(super) fn exists(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let (mut keys, slot) = ctx.keys_in_one_shard(&args[1..])?;
    if keys.len() == 1 {
        let key = keys.remove(0);
        return Ok(ctx.get(session, key, |record| {
            Ok(Frame::Integer(i64::from(record.is_some())))
        }));
    }
    Ok(ctx.read(
        session,
        Command::GetMany { keys },
        slot,
        |reply| match reply {
            Reply::Records(records) => Ok(Frame::Integer(
                records.iter().filter(|r| r.is_some()).count() as i64,
            )),
            _ => Err(unexpected()),
        },
    ))
}

/// `EXPIRE key time [NX|XX|GT|LT]` and its millisecond / absolute variants.
fn set_expiry(
    ctx: &Ctx,
    session: &Session,
    args: &[Bytes],
    unit: Unit,
    relative: bool,
    command: &str,
) -> Result<Outcome, Frame> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for word in &args[3..] {
        if is(word, "NX") {
            nx = true;
        } else if is(word, "XX") {
            xx = true;
        } else if is(word, "GT") {
            gt = true;
        } else if is(word, "LT") {
            lt = true;
        } else {
            return Err(err(format!("Unsupported option {}", args::lossy(word))));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(err("GT and LT options at the same time are not compatible"));
    }
    // Judged at apply time against the stored expiry, so the check and the change are one
    // atomic write. GT already needs an expiry, so XX adds nothing to it; LT treats "no
    // expiry" as "never", so XX narrows it.
    let condition = match (nx, xx, gt, lt) {
        (true, ..) => Some(ExpiryCondition::NoExpiry),
        (_, _, true, _) => Some(ExpiryCondition::Later),
        (_, true, _, true) => Some(ExpiryCondition::HasExpiryAndEarlier),
        (_, _, _, true) => Some(ExpiryCondition::Earlier),
        (_, true, ..) => Some(ExpiryCondition::HasExpiry),
        _ => None,
    };
    let expiry = args::any_expiry(&args[2], unit, relative, command, now_ms())?;
    let key = ctx.key(&args[1])?;
    let slot = Some(key_slot(&key));
    let op = match condition {
        Some(condition) => WriteOp::SetExpiryIf {
            key,
            expiry,
            condition,
        },
        None => WriteOp::SetExpiry { key, expiry },
    };
    Ok(ctx.write(session, op, slot, applied_reply))
}

pub(super) fn expire(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    set_expiry(ctx, session, args, Unit::Seconds, true, "expire")
}

pub(super) fn pexpire(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    set_expiry(ctx, session, args, Unit::Millis, true, "pexpire")
}

pub(super) fn expireat(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    set_expiry(ctx, session, args, Unit::Seconds, false, "expireat")
}

pub(super) fn pexpireat(
    ctx: &Ctx,
    session: &mut Session,
    args: &[Bytes],
) -> Result<Outcome, Frame> {
    set_expiry(ctx, session, args, Unit::Millis, false, "pexpireat")
}

pub(super) fn persist(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let key = ctx.key(&args[1])?;
    let slot = Some(key_slot(&key));
    Ok(ctx.write(
        session,
        WriteOp::SetExpiry {
            key,
            expiry: Expiry::Clear,
        },
        slot,
        applied_reply,
    ))
}

/// Reads one key's expiry and renders it: -2 absent, -1 no expiry, else `render(expire_at)`.
fn read_expiry(
    ctx: &Ctx,
    session: &Session,
    args: &[Bytes],
    render: fn(u64) -> i64,
) -> Result<Outcome, Frame> {
    let key = ctx.key(&args[1])?;
    Ok(ctx.get(session, key, move |record: Option<Record>| {
        Ok(Frame::Integer(match record {
            None => -2,
            Some(Record {
                expire_at: None, ..
            }) => -1,
            Some(Record {
                expire_at: Some(at),
                ..
            }) => render(at),
        }))
    }))
}

/// Milliseconds left, never negative (the key may expire between the read and now).
fn remaining_ms(at: u64) -> i64 {
    at.saturating_sub(now_ms()).min(i64::MAX as u64) as i64
}

pub(super) fn ttl(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    // Rounded to the nearest second, as Redis does.
    read_expiry(ctx, session, args, |at| (remaining_ms(at) + 500) / 1000)
}

pub(super) fn pttl(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    read_expiry(ctx, session, args, remaining_ms)
}

pub(super) fn expiretime(
    ctx: &Ctx,
    session: &mut Session,
    args: &[Bytes],
) -> Result<Outcome, Frame> {
    read_expiry(ctx, session, args, |at| (at / 1000) as i64)
}

pub(super) fn pexpiretime(
    ctx: &Ctx,
    session: &mut Session,
    args: &[Bytes],
) -> Result<Outcome, Frame> {
    read_expiry(ctx, session, args, |at| at.min(i64::MAX as u64) as i64)
}

/// Every shoal value is a string.
pub(super) fn key_type(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let key = ctx.key(&args[1])?;
    Ok(ctx.get(session, key, |record| {
        Ok(Frame::simple(if record.is_some() {
            "string"
        } else {
            "none"
        }))
    }))
}

/// `OBJECT ENCODING|REFCOUNT|IDLETIME|FREQ key` and `OBJECT HELP`. Every value is a
/// string, so ENCODING answers what Redis would for the same bytes (`int`, `embstr` up to
/// 44 bytes, `raw`); REFCOUNT is 1. Access times and frequencies are not tracked, so
/// IDLETIME and FREQ answer an error, as Redis does when its eviction policy does not
/// track them.
pub(super) fn object(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let sub = args[1].to_ascii_lowercase();
    if sub == b"help" {
        if args.len() != 2 {
            return Err(args::wrong_args("object|help"));
        }
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Not tracked by shoal: answers an error.",
            "IDLETIME <key>",
            "    Not tracked by shoal: answers an error.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key> (always 1 in shoal).",
            "HELP",
            "    Print this help.",
        ];
        return Ok(Outcome::Now(Frame::Array(
            lines.iter().map(|l| Frame::simple(*l)).collect(),
        )));
    }
    let (query, name) = match sub.as_slice() {
        b"encoding" => (ObjectQuery::Encoding, "object|encoding"),
        b"refcount" => (ObjectQuery::Refcount, "object|refcount"),
        b"idletime" => (ObjectQuery::IdleTime, "object|idletime"),
        b"freq" => (ObjectQuery::Freq, "object|freq"),
        _ => return Err(args::unknown_subcommand(&args[1], "OBJECT")),
    };
    if args.len() != 3 {
        return Err(args::wrong_args(name));
    }
    let key = ctx.key(&args[2])?;
    Ok(ctx.get(session, key, move |record| {
        let Some(record) = record else {
            return Ok(Frame::Null);
        };
        Ok(match query {
            ObjectQuery::Encoding => {
                Frame::bulk(Bytes::from_static(encoding_of(&record.value).as_bytes()))
            }
            ObjectQuery::Refcount => Frame::Integer(1),
            ObjectQuery::IdleTime => {
                err("shoal does not track key access times, so OBJECT IDLETIME has no answer")
            }
            ObjectQuery::Freq => {
                err("shoal does not track access frequency, so OBJECT FREQ has no answer")
            }
        })
    }))
}

/// What an `OBJECT <subcommand> key` asks about the key.
#[derive(Clone, Copy)]
enum ObjectQuery {
    Encoding,
    Refcount,
    IdleTime,
    Freq,
}

/// Redis's string encoding for `value`: `int` when it is the canonical decimal form of an
/// i64, `embstr` up to 44 bytes, `raw` beyond.
fn encoding_of(value: &[u8]) -> &'static str {
    let canonical_int = value.len() <= 20
        && std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|n| n.to_string().as_bytes() == value);
    if canonical_int {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

fn rename_op(
    ctx: &Ctx,
    session: &Session,
    args: &[Bytes],
    if_target_absent: bool,
) -> Result<Outcome, Frame> {
    let (mut keys, slot) = ctx.keys_in_one_shard(&args[1..3])?;
    let (Some(to), Some(from)) = (keys.pop(), keys.pop()) else {
        return Err(args::wrong_args(if if_target_absent {
            "renamenx"
        } else {
            "rename"
        }));
    };
    let op = WriteOp::Rename {
        from,
        to,
        if_target_absent,
    };
    Ok(ctx.write(
        session,
        op,
        slot,
        if if_target_absent {
            applied_reply
        } else {
            ok_reply
        },
    ))
}

/// RENAME answers `-ERR no such key` (the node's NoSuchKey) when the source is absent.
pub(super) fn rename(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    rename_op(ctx, session, args, false)
}

pub(super) fn renamenx(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    rename_op(ctx, session, args, true)
}

pub(super) fn randomkey(ctx: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    Ok(
        ctx.read(session, Command::RandomKey, None, |reply| match reply {
            Reply::Key(key) => Ok(Frame::bulk_or_null(key)),
            _ => Err(unexpected()),
        }),
    )
}
