//! RESP (Redis protocol) front end: lets Redis clients, `redis-cli` and `redis-benchmark`
//! talk to a shoal node.
//!
//! Layers, bottom up:
//! - [`frame`]: the wire format (RESP2/RESP3 decoding and encoding), knows no commands.
//! - `cmd`: one request in, one reply out; translates Redis commands into
//!   `shoal_core::Command`s and renders `Reply`/`Error` the way Redis would.
//! - `connection`: one client; pipelined requests run concurrently but in Redis order.
//! - `listener`: the accept loop, the connection limit and graceful shutdown ([`serve`]).
//!
//! The node is reached through the crate's `Backend` trait so `tests` can run the whole
//! stack over real TCP against the crate's in-memory fake node; the scenarios are the
//! `shoal-conformance` crate's, which `tests/resp.rs` runs against a real node.

mod cmd;
mod connection;
pub mod frame;
mod glob;
mod listener;

#[cfg(test)]
mod tests;

pub use frame::{Frame, Protocol};
pub use listener::{serve, serve_backend};

use crate::connections::ConnectionLimit;

/// Settings of the RESP listener.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Most clients connected at once, shared with the HTTP front end when the node passes
    /// both the same limit; the next one gets `-ERR max number of clients reached` and is
    /// closed. Redis's default `maxclients` unless the node lowers it to fit its file
    /// descriptor limit.
    pub connections: ConnectionLimit,
    /// Most bytes one incomplete request may occupy in a connection's input buffer (an MSET
    /// of many large values can legitimately be big; a client that never finishes its
    /// request must not hold memory without bound). Over it: a protocol error and close.
    pub max_request_bytes: usize,
    /// TLS: when set, every client must connect over it (`redis-cli --tls`).
    pub tls: Option<shoal_tls::Tls>,
    /// Users and logins (AUTH, HELLO AUTH), shared with the other front ends.
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
}

/// Default size of [`RespConfig::connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`RespConfig::max_request_bytes`]: 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            connections: ConnectionLimit::new(DEFAULT_MAX_CONNECTIONS),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            tls: None,
            auth: Default::default(),
        }
    }
}
