//! shoal's gRPC API, package `shoal.v1`: the messages and the client and server stubs that
//! tonic generates from `proto/shoal/v1/shoal.proto` (the contract; read it for semantics),
//! shared by the server (shoal-api) and the Rust client (shoal-client).

#![allow(clippy::all, missing_docs)]

/// Generated from `proto/shoal/v1/shoal.proto`.
pub mod v1 {
    tonic::include_proto!("shoal.v1");

    /// The encoded `FileDescriptorSet` of `shoal.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("shoal_v1_descriptor");
}

/// The `ErrorInfo` domain of every shoal error.
pub const ERROR_DOMAIN: &str = "shoal";
/// Metadata key naming the node id that leads the shard a call went to, when it is not the
/// node that answered.
pub const LEADER_METADATA: &str = "x-shoal-leader";
/// Metadata key carrying the epoch of the answering node's cluster map, on every KV
/// response: a client whose map is older fetches it again.
pub const EPOCH_METADATA: &str = "x-shoal-epoch";
