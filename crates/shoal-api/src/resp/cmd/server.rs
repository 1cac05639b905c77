//! Server commands: COMMAND, CONFIG, INFO, DBSIZE, FLUSHALL/FLUSHDB. Enough of each for
//! `redis-cli`, `redis-benchmark` and client libraries to be happy, and honest about the rest.

use bytes::Bytes;
use shoal_core::{Command, Error, Reply, WriteOp};

use super::args::{self, err, is, syntax_error, unknown_subcommand, wrong_args};
use super::session::REDIS_COMPAT_VERSION;
use super::table::{Kind, Spec, TABLE, lookup};
use super::{Ctx, Outcome, Session, error_frame, ok_reply, unexpected};
use crate::resp::frame::Frame;
use crate::resp::glob;

const COMMAND_HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all commands.",
    "COUNT",
    "    Return the total number of commands in this server.",
    "LIST",
    "    Return a list of all commands in this server.",
    "INFO [<command-name> ...]",
    "    Return details about the given commands, or all commands if none is given.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about the given commands, or all if none is given.",
    "HELP",
    "    Print this help.",
];

/// `COMMAND [COUNT | LIST | INFO name... | DOCS name... | HELP]`.
pub(super) fn command(_: &Ctx, _: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let Some(sub) = args.get(1) else {
        return Ok(Outcome::Now(Frame::Array(
            TABLE.iter().map(command_entry).collect(),
        )));
    };
    let named = || args[2..].iter().filter_map(|name| lookup(name));
    let reply = if is(sub, "COUNT") {
        if args.len() != 2 {
            return Err(wrong_args("command|count"));
        }
        Frame::Integer(TABLE.len() as i64)
    } else if is(sub, "LIST") {
        Frame::Array(TABLE.iter().map(|spec| Frame::bulk(spec.name)).collect())
    } else if is(sub, "INFO") {
        if args.len() == 2 {
            Frame::Array(TABLE.iter().map(command_entry).collect())
        } else {
            Frame::Array(
                args[2..]
                    .iter()
                    .map(|name| lookup(name).map_or(Frame::Null, command_entry))
                    .collect(),
            )
        }
    } else if is(sub, "DOCS") {
        let docs = |spec: &Spec| (Frame::bulk(spec.name), command_doc(spec));
        if args.len() == 2 {
            Frame::Map(TABLE.iter().map(docs).collect())
        } else {
            Frame::Map(named().map(docs).collect())
        }
    } else if is(sub, "HELP") {
        Frame::Array(
            COMMAND_HELP
                .iter()
                .map(|line| Frame::simple(*line))
                .collect(),
        )
    } else {
        return Err(unknown_subcommand(sub, "COMMAND"));
    };
    Ok(Outcome::Now(reply))
}

/// A COMMAND INFO entry in Redis 7's layout: name, arity, flags, first key, last key,
/// step, ACL categories, tips, key specs, subcommands.
fn command_entry(spec: &Spec) -> Frame {
    let flags: &[&str] = match spec.kind {
        Kind::Local => &["fast", "loading", "stale"],
        Kind::Read => &["readonly"],
        Kind::Write => &["write"],
    };
    let (first, last, step) = spec.keys;
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity.into()),
        Frame::Set(flags.iter().map(|f| Frame::simple(*f)).collect()),
        Frame::Integer(first.into()),
        Frame::Integer(last.into()),
        Frame::Integer(step.into()),
        Frame::Set(vec![Frame::simple(format!("@{}", spec.group))]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
    ])
}

fn command_doc(spec: &Spec) -> Frame {
    Frame::Map(vec![
        (
            Frame::bulk("summary"),
            Frame::bulk(format!("Redis-compatible {}", spec.name.to_uppercase())),
        ),
        (Frame::bulk("group"), Frame::bulk(spec.group)),
    ])
}

/// The configuration CONFIG GET reports: what clients and tools ask about, with shoal's
/// actual behaviour (no RDB snapshots or AOF: durability comes from the Raft log).
fn config_params(ctx: &Ctx) -> Vec<(&'static str, String)> {
    vec![
        ("appendonly", "no".to_string()),
        ("cluster-enabled", "yes".to_string()),
        ("databases", "1".to_string()),
        ("maxclients", ctx.config.connections.max().to_string()),
        ("port", ctx.local_addr.port().to_string()),
        ("proto-max-bulk-len", ctx.max_bulk.to_string()),
        ("save", String::new()),
        ("timeout", "0".to_string()),
    ]
}

/// `CONFIG GET pattern...`; CONFIG SET is refused: shoal is configured at start-up.
pub(super) fn config(ctx: &Ctx, _: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let sub = &args[1];
    let reply = if is(sub, "GET") {
        if args.len() < 3 {
            return Err(wrong_args("config|get"));
        }
        let patterns: Vec<Vec<u8>> = args[2..].iter().map(|p| p.to_ascii_lowercase()).collect();
        Frame::Map(
            config_params(ctx)
                .into_iter()
                .filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name.as_bytes())))
                .map(|(name, value)| (Frame::bulk(name), Frame::bulk(value)))
                .collect(),
        )
    } else if is(sub, "SET") {
        if args.len() < 4 || !args.len().is_multiple_of(2) {
            return Err(wrong_args("config|set"));
        }
        return Err(err(format!(
            "Unknown option or number of arguments for CONFIG SET - '{}'",
            args::lossy(&args[2])
        )));
    } else if is(sub, "RESETSTAT") {
        Frame::ok()
    } else if is(sub, "REWRITE") {
        return Err(err("The server is running without a config file"));
    } else if is(sub, "HELP") {
        Frame::Array(
            [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "HELP",
            ]
            .into_iter()
            .map(Frame::simple)
            .collect(),
        )
    } else {
        return Err(unknown_subcommand(sub, "CONFIG"));
    };
    Ok(Outcome::Now(reply))
}

pub(super) fn dbsize(ctx: &Ctx, session: &mut Session, _: &[Bytes]) -> Result<Outcome, Frame> {
    Ok(
        ctx.read(session, Command::Count, None, |reply| match reply {
            Reply::Count(n) => Ok(Frame::Integer(n.min(i64::MAX as u64) as i64)),
            _ => Err(unexpected()),
        }),
    )
}

const INFO_SECTIONS: &[&str] = &[
    "server", "clients", "memory", "stats", "cluster", "keyspace",
];

/// `INFO [section ...]`: server, clients, memory, stats, cluster and keyspace. The keyspace section needs
/// the key count from the node; the others are answered at once.
pub(super) fn info(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    let asked: Vec<String> = args[1..]
        .iter()
        .map(|a| args::lossy(a).to_ascii_lowercase())
        .collect();
    let all = asked.is_empty()
        || asked
            .iter()
            .any(|a| matches!(a.as_str(), "all" | "default" | "everything"));
    let sections: Vec<&'static str> = INFO_SECTIONS
        .iter()
        .copied()
        .filter(|s| all || asked.iter().any(|a| a == s))
        .collect();
    let text = info_text(ctx, &sections);
    if !sections.contains(&"keyspace") {
        return Ok(Outcome::Now(Frame::Verbatim(text)));
    }
    Ok(
        ctx.read(session, Command::Count, None, move |reply| match reply {
            Reply::Count(keys) => {
                let mut text = text;
                text.push_str("# Keyspace\r\n");
                // Redis lists a database only when it holds keys.
                if keys > 0 {
                    text.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
                }
                Ok(Frame::Verbatim(text))
            }
            _ => Err(unexpected()),
        }),
    )
}

/// Every requested section except keyspace, which comes last and needs the node.
fn info_text(ctx: &Ctx, sections: &[&str]) -> String {
    let mut text = String::new();
    for section in sections {
        match *section {
            "server" => {
                let uptime = ctx.started.elapsed().as_secs();
                text.push_str(&format!(
                    "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nshoal_version:{}\r\n\
                     redis_mode:cluster\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
                     run_id:{:040x}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
                     uptime_in_days:{}\r\n\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::env::consts::OS,
                    std::env::consts::ARCH,
                    usize::BITS,
                    std::process::id(),
                    ctx.node.id(),
                    ctx.local_addr.port(),
                    uptime / 86_400,
                ));
            }
            "clients" => text.push_str(&format!(
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                ctx.connected_clients(),
                ctx.config.connections.max(),
            )),
            "cluster" => text.push_str("# Cluster\r\ncluster_enabled:1\r\n\r\n"),
            "memory" => {
                text.push_str("# Memory\r\n");
                for (name, bytes) in ctx.node.memory() {
                    text.push_str(&format!("{name}:{bytes}\r\n"));
                    if matches!(name, "used_memory" | "used_memory_rss" | "maxmemory") {
                        text.push_str(&format!("{name}_human:{}\r\n", human_bytes(bytes)));
                    }
                    if name == "maxmemory" {
                        // Writes are never refused for memory: the budget sizes caches.
                        text.push_str("maxmemory_policy:noeviction\r\n");
                    }
                }
                text.push_str("\r\n");
            }
            "stats" => {
                text.push_str("# Stats\r\n");
                for (name, value) in ctx.node.stats() {
                    text.push_str(&format!("{name}:{value}\r\n"));
                }
                // Redis's name for failed logins (shared by RESP, HTTP and gRPC here).
                text.push_str(&format!(
                    "acl_access_denied_auth:{}\r\n",
                    ctx.config.auth.failed_logins()
                ));
                text.push_str("\r\n");
            }
            _ => {}
        }
    }
    text
}

/// Bytes as Redis's `*_human` fields write them: 1.50M, 512.00K, 100B.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)];
    let (unit, size) = UNITS
        .into_iter()
        .find(|(_, size)| bytes >= *size)
        .unwrap_or(("B", 1));
    if size == 1 {
        format!("{bytes}B")
    } else {
        format!("{:.2}{unit}", bytes as f64 / size as f64)
    }
}

/// `FLUSHALL [ASYNC|SYNC]`, only on nodes started with `--allow-flush`.
pub(super) fn flushall(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    flush(ctx, session, args, "FLUSHALL")
}

/// One database per cluster, so FLUSHDB is FLUSHALL.
pub(super) fn flushdb(ctx: &Ctx, session: &mut Session, args: &[Bytes]) -> Result<Outcome, Frame> {
    flush(ctx, session, args, "FLUSHDB")
}

/// One `WriteOp::Flush`, which the node proposes to every shard when it is submitted: it is
/// ordered like any write, after the commands before it and before the ones after it.
fn flush(ctx: &Ctx, session: &Session, args: &[Bytes], name: &str) -> Result<Outcome, Frame> {
    match args {
        [_] => {}
        [_, mode] if is(mode, "ASYNC") || is(mode, "SYNC") => {}
        _ => return Err(syntax_error()),
    }
    if !ctx.node.allow_flush() {
        // Checked here too so FLUSHDB is named as such; same wording as the node's.
        let reason = "start the node with --allow-flush to enable it".to_string();
        return Err(error_frame(&Error::Disabled(name.to_string(), reason)));
    }
    Ok(ctx.write(session, WriteOp::Flush, None, ok_reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_like_redis() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(100), "100B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(1024 << 20), "1.00G");
    }

    #[test]
    fn command_entries_have_redis7_shape() {
        let Frame::Array(entry) = command_entry(lookup(b"get").unwrap()) else {
            panic!("not an array")
        };
        assert_eq!(entry.len(), 10);
        assert_eq!(entry[0], Frame::bulk("get"));
        assert_eq!(entry[1], Frame::Integer(2));
        assert_eq!(
            entry[3..6],
            [Frame::Integer(1), Frame::Integer(1), Frame::Integer(1)]
        );
    }
}
