//! shoal-api: the front ends (RESP, HTTP/JSON, gRPC). Each translates its protocol into `shoal_core::Command`s,
//! calls `shoal_cluster::Node::execute`, and renders the reply or error. No storage or
//! consensus logic lives here.

pub mod auth;
pub mod backend;
pub mod connections;
/// An in-memory stand-in for the node (`FakeNode`), to test a front end alone: this crate's
/// unit tests use it, other crates with the `test-util` feature.
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod grpc;
pub mod http;
pub mod resp;
pub mod secure;

pub use connections::{ConnectionLimit, ConnectionPermit};

/// Milliseconds since the Unix epoch by this node's clock (expiry times are computed from it;
/// the one copy every front end uses).
pub(crate) fn now_ms() -> shoal_core::UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as shoal_core::UnixMillis)
}
