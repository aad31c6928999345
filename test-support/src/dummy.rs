//! `dummy.v1`: a test-only gRPC service whose requests choose the answer (OK, an
//! error code, a panic, no answer), for platform's gRPC middleware tests.

/// Generated from `test-support/proto/dummy/v1/dummy.proto`.
pub mod v1 {
    tonic::include_proto!("dummy.v1");

    /// The encoded `FileDescriptorSet` of `dummy.v1`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/dummy_descriptor.bin"));
}
