//! The `llmroute.v1` gRPC API (see `proto/llmroute/v1/router.proto`).

/// The protobuf runtime the messages are generated for (to decode them outside tonic).
pub use prost;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("llmroute.v1");

    /// Encoded `FileDescriptorSet` for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("llmroute_v1_descriptor");
}
