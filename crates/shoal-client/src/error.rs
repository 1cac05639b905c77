//! The client's error: what the server said (with its stable code), or what went wrong on
//! the way, and above all whether a write may have been applied (`Indeterminate`).

use tonic::Code;
use tonic_types::StatusExt;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The server refused the request: `code` is the same name the HTTP API uses
    /// (`version_mismatch`, `key_exists`, `cross_slot`, `disk_full`, ...).
    #[error("{code}: {message}")]
    Refused {
        code: String,
        message: String,
        /// For `version_mismatch`: the key's version now (`None`: absent).
        actual_version: Option<Option<u64>>,
    },
    /// A write may or may not have been applied: its leader changed, or the connection
    /// broke after it was sent, or its deadline passed. It is never retried on its own;
    /// read the key to find out.
    #[error(
        "outcome unknown: {0}; the write may or may not have been applied, read the key to find out"
    )]
    Indeterminate(String),
    /// No node could be reached, or none could serve the request in the retries allowed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The address given is not one the client can use.
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
}

impl Error {
    /// The server's code for a refusal (`None` for the client's own errors).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => Some(code),
            Error::Indeterminate(_) => Some("indeterminate"),
            _ => None,
        }
    }

    /// Whether the outcome of the write is unknown.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate(_))
    }
}

/// What the client makes of one failed call, before deciding to retry.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with a shoal error (`ErrorInfo` of domain "shoal").
    Server {
        status: tonic::Status,
        reason: String,
        leader: Option<u64>,
        actual_version: Option<Option<u64>>,
    },
    /// The connection could not be made: the request was never sent.
    NotSent(String),
    /// The call failed in transport after it may have been sent (reset, broken stream,
    /// deadline).
    Lost(String),
}

impl Failure {
    pub(crate) fn from_status(status: tonic::Status) -> Failure {
        if let Some(info) = status.get_details_error_info()
            && info.domain == shoal_proto::ERROR_DOMAIN
        {
            let leader = info.metadata.get("leader").and_then(|l| l.parse().ok());
            let actual_version = info
                .metadata
                .get("actual_version")
                .map(|v| v.parse::<u64>().ok());
            return Failure::Server {
                reason: info.reason.clone(),
                leader,
                actual_version,
                status,
            };
        }
        if never_sent(&status) {
            return Failure::NotSent(describe(&status));
        }
        Failure::Lost(describe(&status))
    }

    /// Whether a request that failed so may be sent again (to the same node or another):
    /// a read always after a lost answer, a write only when certainly not applied.
    pub(crate) fn safe_to_resend(&self, write: bool) -> bool {
        match self {
            // Refused before being proposed: no leader, not the leader, too busy.
            Failure::Server { reason, .. } => {
                matches!(
                    reason.as_str(),
                    "no_leader"
                        | "not_leader"
                        | "overloaded"
                        | "shutting_down"
                        | "node_removed"
                        | "node_replaced"
                ) || (!write && reason == "timeout")
            }
            Failure::NotSent(_) => true,
            // A read changes nothing: sending it again is always safe.
            Failure::Lost(_) => !write,
        }
    }

    /// The error a caller sees when the call is not retried (more).
    pub(crate) fn into_error(self, write: bool) -> Error {
        match self {
            Failure::Server {
                status,
                reason,
                actual_version,
                ..
            } => {
                if reason == "indeterminate" {
                    Error::Indeterminate(status.message().to_string())
                } else if status.code() == Code::Unavailable {
                    Error::Unavailable(status.message().to_string())
                } else {
                    Error::Refused {
                        code: reason,
                        message: status.message().to_string(),
                        actual_version,
                    }
                }
            }
            Failure::NotSent(message) => Error::Unavailable(message),
            Failure::Lost(message) if write => Error::Indeterminate(message),
            Failure::Lost(message) => Error::Unavailable(message),
        }
    }
}

/// True when the status comes from a connection that could not be made (refused,
/// unreachable, timed out connecting): then no byte of the request left this process.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        // hyper cancels a request it never handed to a connection (the connection closed
        // first); one already sent fails with an h2 error instead.
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        // tonic wraps every failure to connect (a connect timeout too) in its private
        // `ConnectError`, visible only by name.
        if err.downcast_ref::<tonic::transport::Error>().is_some()
            && format!("{err:?}").contains("ConnectError")
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
