//! File descriptors: at start the node raises its soft open-file limit to the hard limit (as
//! Redis, nginx and most servers do), then splits what it has between the storage engine's
//! table files, a fixed reserve, and client connections.
//!
//! Why it matters: fjall needs a descriptor for every memtable flush and compaction, and a
//! flush that fails with `EMFILE` poisons the engine, which stops every shard on the node
//! until it restarts. Client connections are the only thing an outsider can multiply, so they
//! get only what is left once storage and the reserve are set aside (`--max-connections` is
//! lowered to fit, with a warning, as Redis lowers `maxclients`).

use shoal_storage::{DEFAULT_OPEN_FILES, MIN_OPEN_FILES};

/// Descriptors kept for everything but table files and clients: journals, files being
/// flushed or compacted, snapshots being written, read or received, peer links (two per
/// peer), listeners, logs, the runtimes' own.
pub const RESERVED_FDS: u64 = 256;
/// The fewest client connections a node starts with; under it the limit is too low to run.
pub const MIN_CLIENTS: usize = 16;
/// What an unlimited hard limit is raised to (Linux refuses more than `fs.nr_open`,
/// 1048576 by default).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The process's open-file limit, before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub soft: u64,
}

/// Raises the soft open-file limit as far as the hard limit allows; the result is what the
/// node plans with.
pub fn raise_open_file_limit() -> FdLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let target = limit.maximum.unwrap_or(UNLIMITED_TARGET);
    if target <= before {
        return FdLimit {
            before,
            soft: before,
        };
    }
    for attempt in [target, UNLIMITED_TARGET.min(target)] {
        let raised = Rlimit {
            current: Some(attempt),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return FdLimit {
                before,
                soft: attempt,
            };
        }
    }
    FdLimit {
        before,
        soft: before,
    }
}

/// How a node spends its descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// Table files the storage engine keeps open.
    pub storage_files: usize,
    /// Client connections, RESP and HTTP together.
    pub clients: usize,
}

/// Splits `limit` descriptors: a quarter for table files (between fjall's minimum and its
/// default of 900), [`RESERVED_FDS`], and the rest for clients, up to `requested`.
pub fn plan(limit: u64, requested: usize) -> Result<FdPlan, String> {
    let storage = (limit / 4).clamp(MIN_OPEN_FILES as u64, DEFAULT_OPEN_FILES as u64);
    let available = limit.saturating_sub(storage + RESERVED_FDS);
    if available < MIN_CLIENTS as u64 {
        let needed = storage + RESERVED_FDS + MIN_CLIENTS as u64;
        return Err(format!(
            "the open-file limit is {limit}, too low to run a node: it needs {storage} for storage files, \
             {RESERVED_FDS} in reserve (journals, snapshots, peers) and at least {MIN_CLIENTS} for clients; \
             raise it to at least {needed} (`ulimit -n`, or LimitNOFILE= in a systemd unit)"
        ));
    }
    Ok(FdPlan {
        storage_files: storage as usize,
        clients: requested.min(usize::try_from(available).unwrap_or(usize::MAX)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_what_storage_and_the_reserve_leave() {
        // The common soft limit: a quarter for tables, the reserve, the rest for clients.
        assert_eq!(
            plan(1024, 10_000),
            Ok(FdPlan {
                storage_files: 256,
                clients: 512
            })
        );
        // A generous limit: fjall's default cache, and the clients asked for.
        assert_eq!(
            plan(1 << 20, 10_000),
            Ok(FdPlan {
                storage_files: 900,
                clients: 10_000
            })
        );
        let tight = plan(400, 10_000).unwrap();
        assert_eq!(tight.storage_files, 100);
        assert_eq!(tight.clients, 44);
        assert!(tight.clients >= MIN_CLIENTS);
        let err = plan(300, 10).unwrap_err();
        assert!(err.contains("ulimit -n"), "{err}");
        assert!(err.contains("open-file limit is 300"), "{err}");
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let limit = raise_open_file_limit();
        assert!(limit.soft >= limit.before);
    }
}
