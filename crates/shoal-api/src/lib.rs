//! shoal-api: the front ends. Each translates its protocol into `shoal_core::Command`s,
//! calls `shoal_cluster::Node::execute`, and renders the reply or error. No storage or
//! consensus logic lives here.

mod backend;
pub mod connections;
#[cfg(test)]
mod fake;
pub mod http;
pub mod resp;

pub use connections::{ConnectionLimit, ConnectionPermit};
