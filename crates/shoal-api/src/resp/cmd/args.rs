//! Argument parsing shared by the command families, and Redis's exact error replies.
//!
//! Every check returns the error frame Redis would send, so handlers just use `?`.

use std::fmt::Display;

use bytes::Bytes;
use shoal_core::slot::Slot;
use shoal_core::{Expiry, UnixMillis};

use super::Ctx;
use super::error_frame;
use crate::resp::frame::{self, Frame};

pub(crate) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// How much of the command name and arguments an unknown-command error quotes (Redis: 128).
const QUOTE_LIMIT: usize = 128;

/// `-ERR <msg>`.
pub(crate) fn err(msg: impl Display) -> Frame {
    Frame::error(format!("ERR {msg}"))
}

pub(crate) fn syntax_error() -> Frame {
    err("syntax error")
}

pub(crate) fn not_integer() -> Frame {
    err("value is not an integer or out of range")
}

/// `name` is Redis's lower-case full name: `get`, `client|setname`.
pub(crate) fn wrong_args(name: &str) -> Frame {
    err(format!("wrong number of arguments for '{name}' command"))
}

/// `-ERR unknown subcommand 'x'. Try CLIENT HELP.`
pub(crate) fn unknown_subcommand(arg: &[u8], command: &str) -> Frame {
    err(format!(
        "unknown subcommand '{}'. Try {command} HELP.",
        lossy(&arg[..arg.len().min(QUOTE_LIMIT)])
    ))
}

/// Redis's unknown-command error, quoting the name and the first arguments up to 128 bytes:
/// `-ERR unknown command 'foo', with args beginning with: 'a' 'b' `.
pub(crate) fn unknown_command(args: &[Bytes]) -> Frame {
    let name = args
        .first()
        .map(|n| lossy(&n[..n.len().min(QUOTE_LIMIT)]))
        .unwrap_or_default();
    let mut quoted = String::new();
    for arg in args.iter().skip(1) {
        if quoted.len() >= QUOTE_LIMIT {
            break;
        }
        let room = QUOTE_LIMIT - quoted.len();
        quoted.push_str(&format!("'{}' ", lossy(&arg[..arg.len().min(room)])));
    }
    err(format!(
        "unknown command '{name}', with args beginning with: {quoted}"
    ))
}

pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Case-insensitive keyword comparison (`ex`, `EX`, `Ex`).
pub(crate) fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// A signed integer argument, parsed as strictly as Redis does.
pub(crate) fn int(arg: &[u8]) -> Result<i64, Frame> {
    frame::parse_int(arg).ok_or_else(not_integer)
}

/// A float argument (INCRBYFLOAT), parsed as the node parses stored values.
pub(crate) fn float(arg: &[u8]) -> Result<f64, Frame> {
    shoal_core::apply::parse_f64(arg).map_err(|e| error_frame(&e))
}

pub(crate) use crate::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Millis,
}

/// `-ERR invalid expire time in '<command>' command`.
pub(crate) fn invalid_expire(command: &str) -> Frame {
    err(format!("invalid expire time in '{command}' command"))
}

/// The expiry argument of SET, SETEX, PSETEX and GETEX, validated as Redis's
/// `getExpireMillisecondsOrReply` does: must be a positive integer whose absolute time in
/// milliseconds fits in an i64. Relative times become `AfterMillis`, resolved by the node
/// at proposal time.
pub(crate) fn positive_expiry(
    arg: &[u8],
    unit: Unit,
    relative: bool,
    command: &str,
    now: UnixMillis,
) -> Result<Expiry, Frame> {
    let n = int(arg)?;
    if n <= 0 {
        return Err(invalid_expire(command));
    }
    let millis = match unit {
        Unit::Seconds => n.checked_mul(1000).ok_or_else(|| invalid_expire(command))?,
        Unit::Millis => n,
    };
    if relative {
        Expiry::after_millis(millis as u64, now).map_err(|_| invalid_expire(command))
    } else {
        Ok(Expiry::At(millis as u64))
    }
}

/// The time argument of EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT, as Redis's
/// `expireGenericCommand` validates it: any integer, but neither the unit conversion nor
/// adding the base time may overflow. A time not in the future deletes the key.
pub(crate) fn any_expiry(
    arg: &[u8],
    unit: Unit,
    relative: bool,
    command: &str,
    now: UnixMillis,
) -> Result<Expiry, Frame> {
    let n = int(arg)?;
    let millis = match unit {
        Unit::Seconds => n.checked_mul(1000).ok_or_else(|| invalid_expire(command))?,
        Unit::Millis => n,
    };
    let base = if relative { now as i64 } else { 0 };
    let at = millis
        .checked_add(base)
        .ok_or_else(|| invalid_expire(command))?;
    Ok(if relative && millis > 0 {
        Expiry::after_millis(millis as u64, now).map_err(|_| invalid_expire(command))?
    } else if at > now as i64 {
        Expiry::At(at as u64)
    } else {
        // Already past: any past instant deletes the key. 1, not 0, since a stored expiry of
        // 0 means "never".
        Expiry::At(1)
    })
}

impl Ctx {
    /// A key argument within the key size limit.
    pub(crate) fn key(&self, arg: &Bytes) -> Result<Bytes, Frame> {
        self.limits.check_key(arg).map_err(|e| error_frame(&e))?;
        Ok(arg.clone())
    }

    /// A value argument within the value size limit.
    pub(crate) fn value(&self, arg: &Bytes) -> Result<Bytes, Frame> {
        self.limits
            .check_value_len(arg.len())
            .map_err(|e| error_frame(&e))?;
        Ok(arg.clone())
    }

    /// Key arguments that must all live in one shard (multi-key commands are atomic only
    /// within a shard, and Redis Cluster rejects them across slots too). Returns the keys
    /// and the first key's slot.
    pub(crate) fn keys_in_one_shard<'a>(
        &self,
        args: impl IntoIterator<Item = &'a Bytes>,
    ) -> Result<(Vec<Bytes>, Option<Slot>), Frame> {
        let layout = self.node.layout();
        let mut keys = Vec::new();
        let mut first: Option<(Slot, u32)> = None;
        for arg in args {
            let key = self.key(arg)?;
            let slot = shoal_core::key_slot(&key);
            let shard = layout.shard_of_slot(slot);
            match first {
                None => first = Some((slot, shard)),
                Some((_, expected)) if expected != shard => return Err(Frame::error(CROSSSLOT)),
                Some(_) => {}
            }
            keys.push(key);
        }
        Ok((keys, first.map(|(slot, _)| slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: Frame) -> String {
        match frame {
            Frame::Error(text) => text,
            other => panic!("not an error: {other:?}"),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn unknown_command_quotes_like_redis() {
        assert_eq!(
            text(unknown_command(&[b("foo"), b("a"), b("b")])),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            text(unknown_command(&[b("foo")])),
            "ERR unknown command 'foo', with args beginning with: "
        );
        let long = "x".repeat(300);
        let quoted = text(unknown_command(&[b("foo"), b(&long), b("next")]));
        assert!(
            quoted.ends_with(&format!("'{}' ", "x".repeat(128))),
            "{quoted}"
        );
    }

    #[test]
    fn positive_expiry_rules() {
        let now = 1_000;
        assert_eq!(
            positive_expiry(b"10", Unit::Seconds, true, "set", now),
            Ok(Expiry::AfterMillis(10_000))
        );
        assert_eq!(
            positive_expiry(b"10", Unit::Millis, false, "set", now),
            Ok(Expiry::At(10))
        );
        assert_eq!(
            text(positive_expiry(b"0", Unit::Seconds, true, "set", now).unwrap_err()),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            text(positive_expiry(b"-5", Unit::Millis, true, "setex", now).unwrap_err()),
            "ERR invalid expire time in 'setex' command"
        );
        assert_eq!(
            text(
                positive_expiry(b"9223372036854775", Unit::Seconds, true, "set", now).unwrap_err()
            ),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            text(
                positive_expiry(b"9223372036854775807", Unit::Millis, true, "set", now)
                    .unwrap_err()
            ),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            text(positive_expiry(b"ten", Unit::Seconds, true, "set", now).unwrap_err()),
            "ERR value is not an integer or out of range"
        );
    }

    #[test]
    fn any_expiry_rules() {
        let now = 5_000;
        assert_eq!(
            any_expiry(b"2", Unit::Seconds, true, "expire", now),
            Ok(Expiry::AfterMillis(2_000))
        );
        assert_eq!(
            any_expiry(b"-1", Unit::Seconds, true, "expire", now),
            Ok(Expiry::At(1))
        );
        assert_eq!(
            any_expiry(b"0", Unit::Millis, true, "pexpire", now),
            Ok(Expiry::At(1))
        );
        assert_eq!(
            any_expiry(b"6", Unit::Seconds, false, "expireat", now),
            Ok(Expiry::At(6_000))
        );
        assert_eq!(
            any_expiry(b"4", Unit::Seconds, false, "expireat", now),
            Ok(Expiry::At(1))
        );
        assert_eq!(
            text(
                any_expiry(b"9223372036854775807", Unit::Seconds, true, "expire", now).unwrap_err()
            ),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(
            text(
                any_expiry(b"9223372036854775807", Unit::Millis, true, "pexpire", now).unwrap_err()
            ),
            "ERR invalid expire time in 'pexpire' command"
        );
    }
}
