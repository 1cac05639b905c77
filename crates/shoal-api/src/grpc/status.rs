//! gRPC rendering of errors: the one place a `shoal_core::Error` becomes a `tonic::Status`.
//!
//! The status code says what kind of failure it is (see `proto/shoal/v1/shoal.proto`); the
//! details carry a `google.rpc.ErrorInfo` whose reason is the same code the HTTP API puts
//! in its JSON body (`Error::code`), so clients of either protocol match on one set of names.

use std::collections::HashMap;

use shoal_core::Error;
use shoal_proto::v1::OpError;
use shoal_proto::{ERROR_DOMAIN, LEADER_METADATA};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC status code each core error maps to.
pub fn code_of(err: &Error) -> Code {
    match err {
        Error::EmptyKey
        | Error::KeyTooLarge { .. }
        | Error::ValueTooLarge { .. }
        | Error::Invalid(_)
        | Error::CrossShard => Code::InvalidArgument,
        // The stored value has the wrong type for the op: the system's state, not the
        // request's form, is what stops it.
        Error::NotInteger | Error::NotFloat | Error::Overflow | Error::NanOrInfinity => {
            Code::FailedPrecondition
        }
        Error::NoSuchKey => Code::NotFound,
        Error::KeyExists => Code::AlreadyExists,
        Error::VersionMismatch { .. } | Error::KeyMissing | Error::Disabled(..) => {
            Code::FailedPrecondition
        }
        // The node serves nothing: the client should go to another one.
        Error::Removed { .. } | Error::Replaced { .. } => Code::Unavailable,
        Error::NoLeader { .. } | Error::NotLeader { .. } | Error::ShuttingDown => Code::Unavailable,
        Error::Overloaded { .. } | Error::DiskFull { .. } => Code::ResourceExhausted,
        Error::Timeout(_) => Code::DeadlineExceeded,
        // "may or may not have been applied": gRPC's UNKNOWN, never retried blindly.
        Error::Indeterminate(_) => Code::Unknown,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::Denied(_) => Code::PermissionDenied,
        Error::Storage(_) | Error::Internal(_) => Code::Internal,
    }
}

/// `err` as a status: code, message, and an `ErrorInfo` with the HTTP code name as reason.
pub fn status_of(err: &Error) -> Status {
    let mut metadata = HashMap::new();
    match err {
        Error::NotLeader { leader, .. } => {
            metadata.insert("leader".to_string(), leader.to_string());
        }
        Error::VersionMismatch { actual, .. } => {
            let actual = actual.map_or_else(|| "absent".to_string(), |v| v.to_string());
            metadata.insert("actual_version".to_string(), actual);
        }
        _ => {}
    }
    let mut status = with_reason(code_of(err), err.code(), err.to_string(), metadata);
    if let Error::NotLeader { leader, .. } = err {
        status
            .metadata_mut()
            .insert(LEADER_METADATA, leader.to_string().parse().expect("digits"));
    }
    status
}

/// A status with an `ErrorInfo` of `reason`, for errors only the gRPC front end has
/// (`compare_failed`, malformed messages).
pub fn with_reason(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message.into(), details)
}

/// A malformed request (`invalid_argument`, as `Error::Invalid`).
pub fn invalid(message: impl Into<String>) -> Status {
    status_of(&Error::Invalid(message.into()))
}

/// The node answered with a reply of the wrong shape: a bug, never the client's fault.
pub fn unexpected_reply(what: &str, reply: &impl std::fmt::Debug) -> Status {
    status_of(&Error::Internal(format!(
        "unexpected reply to {what}: {reply:?}"
    )))
}

/// One failed op of a transaction or batch.
pub fn op_error(err: &Error) -> OpError {
    OpError {
        code: err.code().to_string(),
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_the_http_code_and_metadata_names_the_leader() {
        let status = status_of(&Error::NotLeader {
            shard: 3,
            leader: 2,
        });
        assert_eq!(status.code(), Code::Unavailable);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "not_leader");
        assert_eq!(info.domain, "shoal");
        assert_eq!(info.metadata["leader"], "2");
        assert_eq!(status.metadata().get(LEADER_METADATA).unwrap(), "2");

        let status = status_of(&Error::VersionMismatch {
            expected: 4,
            actual: None,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "version_mismatch");
        assert_eq!(info.metadata["actual_version"], "absent");
    }

    #[test]
    fn indeterminate_is_unknown_and_disk_full_is_resource_exhausted() {
        let status = status_of(&Error::Indeterminate("leader changed".into()));
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "indeterminate"
        );
        let full = Error::DiskFull {
            node: 1,
            free_mib: 1,
            threshold_mib: 2,
            reserve_mib: 2,
            what: "writes".into(),
        };
        assert_eq!(code_of(&full), Code::ResourceExhausted);
        assert_eq!(code_of(&Error::NoSuchKey), Code::NotFound);
        assert_eq!(code_of(&Error::KeyExists), Code::AlreadyExists);
    }
}
