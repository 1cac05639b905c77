//! Commands that walk the keyspace through the node's slot-ordered `Command::Scan`: SCAN
//! and KEYS.
//!
//! Redis cursors are integers, but a node cursor is a slot plus the key to resume after.
//! SCAN therefore only stops at slot boundaries and returns the next slot number as the
//! cursor (0 = start / finished), so the integer cursor never has to carry a key. It keeps
//! Redis's guarantee: every key present for the whole iteration is returned at least once.

use bytes::Bytes;
use shoal_core::command::ScanCursor;
use shoal_core::{Command, Consistency, Error, Reply, SLOT_COUNT};

use super::args::{self, err, is, syntax_error};
use super::{Ctx, Outcome, Session, node_error, unexpected};
use crate::backend::Backend;
use crate::resp::frame::Frame;
use crate::resp::glob;

/// SCAN's COUNT when none is given (Redis's default).
const DEFAULT_COUNT: usize = 10;
/// COUNT is clamped to this: it is a hint, and one SCAN call must stay bounded.
const MAX_COUNT: usize = 10_000;
/// Node calls after which SCAN stops at the next slot boundary even without COUNT keys
/// (a MATCH prefix can make pages sparse). The reply may then be empty, which Redis
/// clients handle: the cursor is not 0, so they call again.
const MAX_CALLS: usize = 64;
/// Keys one SCAN call may examine. SCAN must finish the slot it is in, so a single slot
/// holding more keys than this (one very hot hash tag) cannot be scanned with an integer
/// cursor; the error says so rather than building an unbounded reply.
const MAX_EXAMINED: usize = 100_000;
/// Keys asked of the node per call when finishing a slot, and by KEYS.
const PAGE: usize = 1_000;

/// Redis type names SCAN TYPE accepts; only `string` exists in shoal.
const TYPE_NAMES: &[&str] = &["string", "list", "set", "zset", "hash", "stream"];

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub(super) fn scan(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let start = crate::resp::frame::parse_int(&args[1])
        .filter(|c| (0..i64::from(SLOT_COUNT)).contains(c))
        .ok_or_else(|| err("invalid cursor"))? as u16;
    let mut pattern = None;
    let mut count = DEFAULT_COUNT;
    let mut strings_only = true;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return Err(syntax_error());
        };
        if is(&args[i], "COUNT") {
            let n = args::int(value)?;
            if n < 1 {
                return Err(syntax_error());
            }
            count = usize::try_from(n).unwrap_or(MAX_COUNT).min(MAX_COUNT);
        } else if is(&args[i], "MATCH") {
            // `*` matches everything: skip the filtering work.
            pattern = (value.as_ref() != b"*").then(|| value.clone());
        } else if is(&args[i], "TYPE") {
            let name = args::lossy(value).to_ascii_lowercase();
            if !TYPE_NAMES.contains(&name.as_str()) {
                return Err(err(format!("unknown type name '{}'", args::lossy(value))));
            }
            strings_only = name == "string";
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    if !strings_only {
        // No key of another type exists anywhere: the iteration is complete.
        return Ok(Outcome::Now(scan_reply(0, Vec::new())));
    }
    ctx.allowed(session, &listing(pattern.as_ref()))?;
    let node = ctx.node.clone();
    let consistency = session.consistency;
    Ok(Outcome::Later(Box::pin(async move {
        match scan_slots(&*node, consistency, start, count, pattern).await {
            Ok((next, keys)) => scan_reply(next, keys),
            Err(frame) => frame,
        }
    })))
}

fn scan_reply(next: u16, keys: Vec<Bytes>) -> Frame {
    Frame::Array(vec![
        Frame::bulk(next.to_string()),
        Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
    ])
}

/// Gathers keys from slot `start` on until at least `count` were examined (or the call
/// budget is spent) and a slot boundary is reached. Returns the next slot (0 when done) and
/// the keys matching `pattern`.
async fn scan_slots(
    node: &dyn Backend,
    consistency: Consistency,
    start: u16,
    count: usize,
    pattern: Option<Bytes>,
) -> Result<(u16, Vec<Bytes>), Frame> {
    let prefix = prefix_of(pattern.as_deref());
    let mut cursor = ScanCursor {
        slot: start,
        after: None,
    };
    let (mut examined, mut calls, mut keys) = (0usize, 0usize, Vec::new());
    loop {
        if cursor.after.is_none() && (examined >= count || calls >= MAX_CALLS) {
            return Ok((cursor.slot, keys));
        }
        if examined >= MAX_EXAMINED {
            return Err(err(format!(
                "SCAN examined {MAX_EXAMINED} keys without reaching the end of hash slot {}: \
                 a slot this large cannot be iterated with SCAN; use KEYS with a narrower pattern",
                cursor.slot
            )));
        }
        let limit = if examined < count {
            count - examined
        } else {
            PAGE
        };
        let (page, next) = page(node, consistency, cursor.clone(), limit, prefix.clone())
            .await
            .map_err(|e| node_error(node, &e, None))?;
        calls += 1;
        examined += page.len();
        keys.extend(
            page.into_iter()
                .filter(|key| matches(pattern.as_deref(), key)),
        );
        match next {
            None => return Ok((0, keys)),
            Some(next) => {
                cursor = advance(&cursor, next).map_err(|e| node_error(node, &e, None))?
            }
        }
    }
}

/// `KEYS pattern`: every matching key, refused past the node's `max_keys_reply`.
pub(super) fn keys(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let node = ctx.node.clone();
    let max = node.max_keys_reply();
    let consistency = session.consistency;
    let pattern = (args[1].as_ref() != b"*").then(|| args[1].clone());
    ctx.allowed(session, &listing(pattern.as_ref()))?;
    Ok(Outcome::Later(Box::pin(async move {
        let prefix = prefix_of(pattern.as_deref());
        let mut cursor = ScanCursor::default();
        let mut keys = Vec::new();
        loop {
            let (page, next) =
                match page(&*node, consistency, cursor.clone(), PAGE, prefix.clone()).await {
                    Ok(page) => page,
                    Err(e) => return node_error(&*node, &e, None),
                };
            keys.extend(
                page.into_iter()
                    .filter(|key| matches(pattern.as_deref(), key)),
            );
            if keys.len() > max {
                return err(format!(
                    "KEYS matched more than {max} keys, this node's limit (--max-keys-reply); \
                     use SCAN to iterate over a large keyspace"
                ));
            }
            match next.map(|next| advance(&cursor, next)) {
                None => return Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
                Some(Ok(next)) => cursor = next,
                Some(Err(e)) => return node_error(&*node, &e, None),
            }
        }
    })))
}

/// The scans a SCAN or KEYS with `pattern` makes, as far as permissions care: a user
/// confined to a key prefix may list only under it.
fn listing(pattern: Option<&Bytes>) -> Command {
    Command::Scan {
        cursor: ScanCursor::default(),
        limit: 0,
        prefix: prefix_of(pattern.map(|p| p.as_ref())),
        with_values: false,
    }
}

/// One node scan call: up to `limit` keys from `cursor`.
async fn page(
    node: &dyn Backend,
    consistency: Consistency,
    cursor: ScanCursor,
    limit: usize,
    prefix: Option<Bytes>,
) -> Result<(Vec<Bytes>, Option<ScanCursor>), Error> {
    let command = Command::Scan {
        cursor,
        limit,
        prefix,
        with_values: false,
    };
    match node.execute(command, consistency).await? {
        Reply::Scan { entries, next } => {
            Ok((entries.into_iter().map(|(key, _)| key).collect(), next))
        }
        _ => Err(unexpected()),
    }
}

/// The node's next cursor, checked to be past `from`: a cursor that does not move forward
/// would loop forever.
fn advance(from: &ScanCursor, next: ScanCursor) -> Result<ScanCursor, Error> {
    let forward = match (next.slot.cmp(&from.slot), &from.after, &next.after) {
        (std::cmp::Ordering::Greater, _, _) => true,
        (std::cmp::Ordering::Equal, None, Some(_)) => true,
        (std::cmp::Ordering::Equal, Some(before), Some(after)) => after > before,
        _ => false,
    };
    if forward {
        Ok(next)
    } else {
        Err(Error::Internal(format!(
            "scan cursor did not advance (slot {} to slot {})",
            from.slot, next.slot
        )))
    }
}

/// The literal prefix of a glob, for the node to filter by; `None` when there is none.
fn prefix_of(pattern: Option<&[u8]>) -> Option<Bytes> {
    let prefix = glob::literal_prefix(pattern?);
    (!prefix.is_empty()).then(|| Bytes::from(prefix))
}

fn matches(pattern: Option<&[u8]>, key: &[u8]) -> bool {
    pattern.is_none_or(|pattern| glob::matches(pattern, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(slot: u16, after: Option<&'static str>) -> ScanCursor {
        ScanCursor {
            slot,
            after: after.map(|a| Bytes::from_static(a.as_bytes())),
        }
    }

    #[test]
    fn cursors_must_move_forward() {
        assert!(advance(&at(3, None), at(4, None)).is_ok());
        assert!(advance(&at(3, None), at(3, Some("k"))).is_ok());
        assert!(advance(&at(3, Some("a")), at(3, Some("b"))).is_ok());
        assert!(advance(&at(3, Some("a")), at(5, None)).is_ok());
        assert!(advance(&at(3, None), at(3, None)).is_err());
        assert!(advance(&at(3, Some("b")), at(3, Some("a"))).is_err());
        assert!(advance(&at(3, Some("b")), at(3, None)).is_err());
        assert!(advance(&at(3, None), at(0, None)).is_err());
    }

    #[test]
    fn prefixes_and_matching() {
        assert_eq!(
            prefix_of(Some(b"user:*")),
            Some(Bytes::from_static(b"user:"))
        );
        assert_eq!(prefix_of(Some(b"*")), None);
        assert_eq!(prefix_of(None), None);
        assert!(matches(None, b"anything"));
        assert!(matches(Some(b"a?c"), b"abc"));
        assert!(!matches(Some(b"a?c"), b"ac"));
    }
}
