//! Why a node did not start. Start-up keeps the error that caused a failure as its source
//! (a storage engine that cannot open, a runtime that cannot start) instead of flattening it
//! into the wire `Error`, which front ends render for clients; a refusal that is the
//! operator's to fix (a flag, a data directory of another cluster, a removed node, a join the
//! cluster turned down) carries that `Error`, whose message says what to do.

use shoal_core::Error;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The flags, the data directory or the cluster refused this start.
    #[error(transparent)]
    Refused(#[from] Error),
    /// The storage engine failed while `what`.
    #[error("{what}: {source}")]
    Storage {
        what: &'static str,
        #[source]
        source: shoal_storage::StorageError,
    },
    /// The runtime that runs the Raft groups could not start.
    #[error("cannot start the raft runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl StartError {
    pub(crate) fn storage(what: &'static str) -> impl FnOnce(shoal_storage::StorageError) -> Self {
        move |source| StartError::Storage { what, source }
    }
}

/// A storage engine error as the wire error of a request.
pub(crate) fn storage_err(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let io = std::io::Error::other("disk on fire");
        let err =
            StartError::storage("opening the storage engine")(shoal_storage::StorageError::Io(io));
        assert!(
            err.to_string().starts_with("opening the storage engine: "),
            "{err}"
        );
        assert!(err.source().is_some());
        let refused = StartError::from(Error::Invalid("pass --id".into()));
        assert_eq!(refused.to_string(), "invalid argument: pass --id");
    }
}
