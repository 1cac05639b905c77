//! Test support: the conformance suites shoal's front ends must pass.
//!
//! Each suite drives a server over loopback as a client would (reqwest for HTTP, the
//! `redis` crate and raw bytes for RESP, the generated `shoal.v1` stubs for gRPC) and
//! checks statuses, bodies, reply types and exact error strings. A harness starts a server
//! configured with the suite's constants and hands it over; `http_suite!(start)`,
//! `resp_suite!(start)` and `grpc_suite!(start)` expand to one `#[tokio::test]` per
//! scenario. shoal-api's unit tests run them against its in-memory
//! fake node (`shoal_api::fake`, feature `test-util`), `shoal-api/tests/` against a real
//! node. The helpers (`http::eventually`, `resp::cmd`, ...) serve each harness's own
//! scenarios too.

pub mod grpc;
pub mod http;
pub mod resp;
