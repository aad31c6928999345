//! The `recommendations.v1` contract: messages, client, server and the file
//! descriptor set that feeds gRPC reflection.

/// Generated from `proto/recommendations/v1/recommendations.proto`.
pub mod v1 {
    tonic::include_proto!("recommendations.v1");

    /// The encoded `FileDescriptorSet` of the contract, for tonic-reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/recommendations_descriptor.bin"));
}
