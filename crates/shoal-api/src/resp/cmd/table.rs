//! The command table: every command's name, arity, kind and key positions, and its handler.
//!
//! Arity follows Redis: `n > 0` means exactly `n` arguments including the name, `n < 0`
//! at least `-n`. The table also feeds COMMAND / COMMAND COUNT / COMMAND DOCS.

use super::{Handler, cluster, keys, scan, server, session, strings, transaction};

/// How a command interacts with the pipeline ordering rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Answered from connection or node-local state, in order, without touching the node's
    /// keyspace.
    Local,
    /// Reads keys: runs concurrently with the reads next to it, after the writes before it.
    Read,
    /// Writes keys: submitted in order with the writes next to it, after the reads before it.
    Write,
}

pub(crate) struct Spec {
    /// Lower case, as Redis prints it in errors.
    pub name: &'static str,
    pub arity: i32,
    pub kind: Kind,
    /// Redis's command group, for COMMAND DOCS.
    pub group: &'static str,
    /// First key, last key (negative: from the end), step; all 0 without keys.
    pub keys: (i32, i32, i32),
    pub handler: Handler,
}

impl Spec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

macro_rules! spec {
    ($name:literal, $arity:expr, $kind:ident, $group:literal, $keys:expr, $handler:path) => {
        Spec {
            name: $name,
            arity: $arity,
            kind: Kind::$kind,
            group: $group,
            keys: $keys,
            handler: $handler,
        }
    };
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const ONE_KEY: (i32, i32, i32) = (1, 1, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);

pub(crate) static TABLE: &[Spec] = &[
    // Connection.
    spec!("ping", -1, Local, "connection", NO_KEYS, session::ping),
    spec!("echo", 2, Local, "connection", NO_KEYS, session::echo),
    spec!("hello", -1, Local, "connection", NO_KEYS, session::hello),
    spec!("auth", -2, Local, "connection", NO_KEYS, session::auth),
    spec!("select", 2, Local, "connection", NO_KEYS, session::select),
    spec!("client", -2, Local, "connection", NO_KEYS, session::client),
    spec!("quit", -1, Local, "connection", NO_KEYS, session::quit),
    spec!("acl", -2, Local, "server", NO_KEYS, session::acl),
    // Transactions. WATCH reads (so EXEC, a write, waits for it); EXEC writes.
    spec!(
        "multi",
        1,
        Local,
        "transactions",
        NO_KEYS,
        transaction::multi
    ),
    spec!("exec", 1, Write, "transactions", NO_KEYS, transaction::exec),
    spec!(
        "discard",
        1,
        Local,
        "transactions",
        NO_KEYS,
        transaction::discard
    ),
    spec!(
        "watch",
        -2,
        Read,
        "transactions",
        ALL_KEYS,
        transaction::watch
    ),
    spec!(
        "unwatch",
        1,
        Local,
        "transactions",
        NO_KEYS,
        transaction::unwatch
    ),
    // Server.
    spec!("command", -1, Local, "server", NO_KEYS, server::command),
    spec!("config", -2, Local, "server", NO_KEYS, server::config),
    spec!("info", -1, Read, "server", NO_KEYS, server::info),
    spec!("dbsize", 1, Read, "server", NO_KEYS, server::dbsize),
    spec!("flushall", -1, Write, "server", NO_KEYS, server::flushall),
    spec!("flushdb", -1, Write, "server", NO_KEYS, server::flushdb),
    // Cluster.
    spec!("cluster", -2, Local, "cluster", NO_KEYS, cluster::cluster),
    spec!("readonly", 1, Local, "cluster", NO_KEYS, cluster::readonly),
    spec!(
        "readwrite",
        1,
        Local,
        "cluster",
        NO_KEYS,
        cluster::readwrite
    ),
    spec!("asking", 1, Local, "cluster", NO_KEYS, cluster::asking),
    // Strings.
    spec!("get", 2, Read, "string", ONE_KEY, strings::get),
    spec!("mget", -2, Read, "string", ALL_KEYS, strings::mget),
    spec!("strlen", 2, Read, "string", ONE_KEY, strings::strlen),
    spec!("getrange", 4, Read, "string", ONE_KEY, strings::getrange),
    spec!("set", -3, Write, "string", ONE_KEY, strings::set),
    spec!("setnx", 3, Write, "string", ONE_KEY, strings::setnx),
    spec!("setex", 4, Write, "string", ONE_KEY, strings::setex),
    spec!("psetex", 4, Write, "string", ONE_KEY, strings::psetex),
    spec!("getset", 3, Write, "string", ONE_KEY, strings::getset),
    spec!("getdel", 2, Write, "string", ONE_KEY, strings::getdel),
    spec!("getex", -2, Write, "string", ONE_KEY, strings::getex),
    spec!("mset", -3, Write, "string", (1, -1, 2), strings::mset),
    spec!("msetnx", -3, Write, "string", (1, -1, 2), strings::msetnx),
    spec!("incr", 2, Write, "string", ONE_KEY, strings::incr),
    spec!("decr", 2, Write, "string", ONE_KEY, strings::decr),
    spec!("incrby", 3, Write, "string", ONE_KEY, strings::incrby),
    spec!("decrby", 3, Write, "string", ONE_KEY, strings::decrby),
    spec!(
        "incrbyfloat",
        3,
        Write,
        "string",
        ONE_KEY,
        strings::incrbyfloat
    ),
    spec!("append", 3, Write, "string", ONE_KEY, strings::append),
    spec!("setrange", 4, Write, "string", ONE_KEY, strings::setrange),
    // Generic (keys).
    spec!("exists", -2, Read, "generic", ALL_KEYS, keys::exists),
    spec!("touch", -2, Read, "generic", ALL_KEYS, keys::exists),
    spec!("ttl", 2, Read, "generic", ONE_KEY, keys::ttl),
    spec!("pttl", 2, Read, "generic", ONE_KEY, keys::pttl),
    spec!("expiretime", 2, Read, "generic", ONE_KEY, keys::expiretime),
    spec!(
        "pexpiretime",
        2,
        Read,
        "generic",
        ONE_KEY,
        keys::pexpiretime
    ),
    spec!("type", 2, Read, "generic", ONE_KEY, keys::key_type),
    spec!("object", -2, Read, "generic", (2, 2, 1), keys::object),
    spec!("randomkey", 1, Read, "generic", NO_KEYS, keys::randomkey),
    spec!("scan", -2, Read, "generic", NO_KEYS, scan::scan),
    spec!("keys", 2, Read, "generic", NO_KEYS, scan::keys),
    spec!("del", -2, Write, "generic", ALL_KEYS, keys::del),
    spec!("unlink", -2, Write, "generic", ALL_KEYS, keys::unlink),
    spec!("expire", -3, Write, "generic", ONE_KEY, keys::expire),
    spec!("pexpire", -3, Write, "generic", ONE_KEY, keys::pexpire),
    spec!("expireat", -3, Write, "generic", ONE_KEY, keys::expireat),
    spec!("pexpireat", -3, Write, "generic", ONE_KEY, keys::pexpireat),
    spec!("persist", 2, Write, "generic", ONE_KEY, keys::persist),
    spec!("rename", 3, Write, "generic", (1, 2, 1), keys::rename),
    spec!("renamenx", 3, Write, "generic", (1, 2, 1), keys::renamenx),
];

/// The command named `name`, case-insensitively.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    TABLE
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_names_are_unique() {
        assert_eq!(lookup(b"GeT").map(|s| s.name), Some("get"));
        assert!(lookup(b"nosuch").is_none());
        let mut names: Vec<_> = TABLE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        assert!(
            TABLE
                .iter()
                .all(|s| s.name.bytes().all(|b| !b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
    }
}
