//! String commands: GET, SET and its options, the SET variants, MGET/MSET, counters,
//! APPEND and ranges. Each becomes one node command.

use bytes::Bytes;
use shoal_core::{Command, Condition, Error, Expiry, Reply, WriteOp, WriteReply, key_slot};

use super::args::{self, Unit, err, is, now_ms, syntax_error, wrong_args};
use super::{
    Ctx, Outcome, Session, applied_reply, count_reply, error_frame, int_reply, ok_reply,
    unexpected, value_reply,
};
use crate::resp::frame::Frame;

/// Which command's options are being parsed: SET and GETEX share Redis's parser but accept
/// different words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Set,
    GetEx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timed {
    Ex,
    Px,
    ExAt,
    PxAt,
}

impl Timed {
    fn parse(word: &[u8]) -> Option<Timed> {
        [
            ("EX", Timed::Ex),
            ("PX", Timed::Px),
            ("EXAT", Timed::ExAt),
            ("PXAT", Timed::PxAt),
        ]
        .into_iter()
        .find_map(|(name, timed)| is(word, name).then_some(timed))
    }

    fn unit(self) -> Unit {
        match self {
            Timed::Ex | Timed::ExAt => Unit::Seconds,
            Timed::Px | Timed::PxAt => Unit::Millis,
        }
    }

    fn relative(self) -> bool {
        matches!(self, Timed::Ex | Timed::Px)
    }
}

/// Options of SET / GETEX after Redis's `parseExtendedStringArgumentsOrReply`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Options {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    /// The expiry option and its (not yet validated) argument.
    timed: Option<(Timed, Bytes)>,
}

impl Options {
    /// Parses the words after the key (and value). Conflicting or unknown options are a
    /// syntax error; the same expiry option twice is allowed, the last one wins, as in Redis.
    /// The expiry number is checked later, so a syntax error anywhere takes precedence.
    fn parse(words: &[Bytes], family: Family) -> Result<Options, Frame> {
        let set = family == Family::Set;
        let mut o = Options::default();
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            let other_timed = |o: &Options, this: Timed| {
                o.keep_ttl || o.persist || o.timed.as_ref().is_some_and(|(t, _)| *t != this)
            };
            if set && is(word, "NX") && !o.xx {
                o.nx = true;
            } else if set && is(word, "XX") && !o.nx {
                o.xx = true;
            } else if set && is(word, "GET") {
                o.get = true;
            } else if set && is(word, "KEEPTTL") && !o.persist && o.timed.is_none() {
                o.keep_ttl = true;
            } else if !set && is(word, "PERSIST") && !o.keep_ttl && o.timed.is_none() {
                o.persist = true;
            } else if let Some(timed) = Timed::parse(word)
                && let Some(arg) = words.get(i + 1)
                && !other_timed(&o, timed)
            {
                o.timed = Some((timed, arg.clone()));
                i += 1;
            } else {
                return Err(syntax_error());
            }
            i += 1;
        }
        Ok(o)
    }

    /// The validated expiry option, if one was given.
    fn expiry(&self, command: &str) -> Result<Option<Expiry>, Frame> {
        self.timed
            .as_ref()
            .map(|(timed, arg)| {
                args::positive_expiry(arg, timed.unit(), timed.relative(), command, now_ms())
            })
            .transpose()
    }
}

pub(super) fn get(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let key = ctx.key(&args[1])?;
    Ok(ctx.get(session, key, |record| {
        Ok(Frame::bulk_or_null(record.map(|r| r.value)))
    }))
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
pub(super) fn set(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let options = Options::parse(&args[3..], Family::Set)?;
    let expiry = match options.expiry("set")? {
        Some(expiry) => expiry,
        None if options.keep_ttl => Expiry::Keep,
        None => Expiry::Clear,
    };
    let condition = if options.nx {
        Condition::IfAbsent
    } else if options.xx {
        Condition::IfPresent
    } else {
        Condition::None
    };
    let key = ctx.key(&args[1])?;
    let value = ctx.value(&args[2])?;
    let slot = Some(key_slot(&key));
    let get = options.get;
    let op = WriteOp::Put {
        key,
        value,
        condition,
        expiry,
        return_old: get,
    };
    Ok(ctx.write(session, op, slot, move |reply| match reply {
        // With GET the old value is the answer whether or not NX/XX let the write happen.
        WriteReply::Put { old, .. } if get => Ok(Frame::bulk_or_null(old)),
        WriteReply::Put {
            version: Some(_), ..
        } => Ok(Frame::ok()),
        WriteReply::Put { version: None, .. } => Ok(Frame::Null),
        _ => Err(unexpected()),
    }))
}

/// A put rendered by `render`: the SET variants that differ only in options and reply.
fn put(
    ctx: &Ctx,
    session: &Session,
    key: &Bytes,
    value: &Bytes,
    (condition, expiry, return_old): (Condition, Expiry, bool),
    render: fn(WriteReply) -> Result<Frame, Error>,
) -> Result<Outcome, Frame> {
    let key = ctx.key(key)?;
    let value = ctx.value(value)?;
    let slot = Some(key_slot(&key));
    Ok(ctx.write(
        session,
        WriteOp::Put {
            key,
            value,
            condition,
            expiry,
            return_old,
        },
        slot,
        render,
    ))
}

pub(super) fn setnx(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    put(
        ctx,
        session,
        &args[1],
        &args[2],
        (Condition::IfAbsent, Expiry::Clear, false),
        applied_reply,
    )
}

pub(super) fn setex(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let expiry = args::positive_expiry(&args[2], Unit::Seconds, true, "setex", now_ms())?;
    put(
        ctx,
        session,
        &args[1],
        &args[3],
        (Condition::None, expiry, false),
        ok_reply,
    )
}

pub(super) fn psetex(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let expiry = args::positive_expiry(&args[2], Unit::Millis, true, "psetex", now_ms())?;
    put(
        ctx,
        session,
        &args[1],
        &args[3],
        (Condition::None, expiry, false),
        ok_reply,
    )
}

pub(super) fn getset(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    put(
        ctx,
        session,
        &args[1],
        &args[2],
        (Condition::None, Expiry::Clear, true),
        value_reply,
    )
}

/// A single-key write built from the validated key.
fn write_key(
    ctx: &Ctx,
    session: &Session,
    key: &Bytes,
    op: impl FnOnce(Bytes) -> WriteOp,
    render: fn(WriteReply) -> Result<Frame, Error>,
) -> Result<Outcome, Frame> {
    let key = ctx.key(key)?;
    let slot = Some(key_slot(&key));
    Ok(ctx.write(session, op(key), slot, render))
}

pub(super) fn getdel(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    write_key(
        ctx,
        session,
        &args[1],
        |key| WriteOp::GetDel { key },
        value_reply,
    )
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`: without an option the expiry is kept.
pub(super) fn getex(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let options = Options::parse(&args[2..], Family::GetEx)?;
    let expiry = match options.expiry("getex")? {
        Some(expiry) => expiry,
        None if options.persist => Expiry::Clear,
        None => Expiry::Keep,
    };
    write_key(
        ctx,
        session,
        &args[1],
        |key| WriteOp::GetEx { key, expiry },
        value_reply,
    )
}

pub(super) fn mget(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let (keys, slot) = ctx.keys_in_one_shard(&args[1..])?;
    Ok(ctx.read(
        session,
        Command::GetMany { keys },
        slot,
        |reply| match reply {
            Reply::Records(records) => Ok(Frame::Array(
                records
                    .into_iter()
                    .map(|r| Frame::bulk_or_null(r.map(|r| r.value)))
                    .collect(),
            )),
            _ => Err(unexpected()),
        },
    ))
}

/// Key-value pairs of MSET / MSETNX.
type Pairs = Vec<(Bytes, Bytes)>;

/// The pairs of MSET / MSETNX, all keys in one shard, and the first key's slot.
fn pairs(ctx: &Ctx, args: &[Bytes], name: &str) -> Result<(Pairs, Option<u16>), Frame> {
    if args.len().is_multiple_of(2) {
        return Err(wrong_args(name));
    }
    let (keys, slot) = ctx.keys_in_one_shard(args[1..].iter().step_by(2))?;
    let values = args[2..]
        .iter()
        .step_by(2)
        .map(|v| ctx.value(v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((keys.into_iter().zip(values).collect(), slot))
}

pub(super) fn mset(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let (pairs, slot) = pairs(ctx, args, "mset")?;
    Ok(ctx.write(
        session,
        WriteOp::PutMany {
            pairs,
            if_none_exist: false,
        },
        slot,
        ok_reply,
    ))
}

pub(super) fn msetnx(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let (pairs, slot) = pairs(ctx, args, "msetnx")?;
    Ok(ctx.write(
        session,
        WriteOp::PutMany {
            pairs,
            if_none_exist: true,
        },
        slot,
        applied_reply,
    ))
}

fn incr_by(ctx: &Ctx, session: &Session, key: &Bytes, delta: i64) -> Result<Outcome, Frame> {
    write_key(
        ctx,
        session,
        key,
        |key| WriteOp::IncrBy { key, delta },
        int_reply,
    )
}

pub(super) fn incr(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    incr_by(ctx, session, &args[1], 1)
}

pub(super) fn decr(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    incr_by(ctx, session, &args[1], -1)
}

pub(super) fn incrby(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let delta = args::int(&args[2])?;
    incr_by(ctx, session, &args[1], delta)
}

pub(super) fn decrby(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let delta = args::int(&args[2])?;
    // -i64::MIN does not exist; Redis refuses it with this message.
    let delta = delta
        .checked_neg()
        .ok_or_else(|| err("decrement would overflow"))?;
    incr_by(ctx, session, &args[1], delta)
}

pub(super) fn incrbyfloat(
    ctx: &Ctx,
    session: &mut Session,
    args: &[Bytes],
) -> Result<Outcome, Frame> {
    let delta = args::float(&args[2])?;
    write_key(
        ctx,
        session,
        &args[1],
        |key| WriteOp::IncrByFloat { key, delta },
        |reply| match reply {
            WriteReply::Float(text) => Ok(Frame::bulk(text)),
            _ => Err(unexpected()),
        },
    )
}

pub(super) fn append(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let value = ctx.value(&args[2])?;
    write_key(
        ctx,
        session,
        &args[1],
        |key| WriteOp::Append { key, value },
        count_reply,
    )
}

pub(super) fn strlen(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let key = ctx.key(&args[1])?;
    Ok(ctx.get(session, key, |record| {
        Ok(Frame::Integer(record.map_or(0, |r| r.value.len() as i64)))
    }))
}

pub(super) fn getrange(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let start = args::int(&args[2])?;
    let end = args::int(&args[3])?;
    let key = ctx.key(&args[1])?;
    Ok(ctx.get(session, key, move |record| {
        let value = record.map(|r| r.value).unwrap_or_default();
        Ok(Frame::Bulk(substring(&value, start, end)))
    }))
}

/// GETRANGE's index rules: negative indexes count from the end, both ends inclusive and
/// clamped to the string.
fn substring(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return Bytes::new();
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

pub(super) fn setrange(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let offset = args::int(&args[2])?;
    if offset < 0 {
        return Err(err("offset is out of range"));
    }
    let value = args[3].clone();
    let end = (offset as u64).saturating_add(value.len() as u64);
    if !value.is_empty() && end > ctx.limits.max_value_bytes as u64 {
        let limit = ctx.limits.max_value_bytes;
        return Err(error_frame(&Error::ValueTooLarge {
            len: end.min(usize::MAX as u64) as usize,
            limit,
        }));
    }
    let offset = offset as u64;
    write_key(
        ctx,
        session,
        &args[1],
        |key| WriteOp::SetRange { key, offset, value },
        count_reply,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn set_options(list: &[&str]) -> Result<Options, Frame> {
        Options::parse(&words(list), Family::Set)
    }

    #[test]
    fn set_options_parse() {
        let o = set_options(&["nx", "GET", "Ex", "10"]).unwrap();
        assert!(o.nx && o.get && !o.xx);
        assert_eq!(o.timed, Some((Timed::Ex, Bytes::from_static(b"10"))));
        assert_eq!(o.expiry("set"), Ok(Some(Expiry::AfterMillis(10_000))));
        assert!(set_options(&["KEEPTTL", "XX"]).unwrap().keep_ttl);
        // The same expiry option twice: the last wins.
        assert_eq!(
            set_options(&["PX", "5", "PX", "7"]).unwrap().timed,
            Some((Timed::Px, Bytes::from_static(b"7")))
        );
        assert_eq!(
            set_options(&["PXAT", "123"]).unwrap().expiry("set"),
            Ok(Some(Expiry::At(123)))
        );
        assert_eq!(
            set_options(&["EXAT", "2"]).unwrap().expiry("set"),
            Ok(Some(Expiry::At(2_000)))
        );
    }

    #[test]
    fn set_option_conflicts_are_syntax_errors() {
        for bad in [
            &["NX", "XX"][..],
            &["XX", "NX"],
            &["EX", "1", "PX", "1"],
            &["EX", "1", "KEEPTTL"],
            &["KEEPTTL", "EXAT", "1"],
            &["EX"],
            &["PERSIST"],
            &["BOGUS"],
        ] {
            assert_eq!(set_options(bad), Err(syntax_error()), "{bad:?}");
        }
    }

    #[test]
    fn syntax_errors_come_before_bad_numbers() {
        assert_eq!(set_options(&["EX", "abc", "NX", "XX"]), Err(syntax_error()));
        let o = set_options(&["EX", "abc"]).unwrap();
        assert_eq!(o.expiry("set"), Err(args::not_integer()));
        assert_eq!(
            set_options(&["EX", "0"]).unwrap().expiry("set"),
            Err(args::invalid_expire("set"))
        );
        assert_eq!(
            set_options(&["PX", "-1"]).unwrap().expiry("set"),
            Err(args::invalid_expire("set"))
        );
    }

    #[test]
    fn getex_options() {
        let parse = |list: &[&str]| Options::parse(&words(list), Family::GetEx);
        assert!(parse(&["PERSIST"]).unwrap().persist);
        assert_eq!(parse(&["PERSIST", "EX", "1"]), Err(syntax_error()));
        assert_eq!(parse(&["NX"]), Err(syntax_error()));
        assert_eq!(parse(&["KEEPTTL"]), Err(syntax_error()));
        assert_eq!(parse(&["GET"]), Err(syntax_error()));
        assert_eq!(
            parse(&["EX", "5"]).unwrap().expiry("getex"),
            Ok(Some(Expiry::AfterMillis(5_000)))
        );
        assert_eq!(
            parse(&["EX", "0"]).unwrap().expiry("getex"),
            Err(args::invalid_expire("getex"))
        );
    }

    #[test]
    fn getrange_indexes() {
        let v = Bytes::from_static(b"This is a string");
        let s = |a, b| substring(&v, a, b);
        assert_eq!(s(0, 3), "This");
        assert_eq!(s(-3, -1), "ing");
        assert_eq!(s(0, -1), "This is a string");
        assert_eq!(s(10, 100), "string");
        assert_eq!(s(5, 3), "");
        assert_eq!(s(-1, -5), "");
        assert_eq!(s(-100, 2), "Thi");
        assert_eq!(s(100, 200), "");
        assert_eq!(substring(&Bytes::new(), 0, -1), "");
    }
}
