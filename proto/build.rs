//! Compiles the proto with `protox`, a pure-Rust protobuf compiler, so a fresh
//! machine (or a Docker build stage) needs no `protoc` installed. The same
//! descriptor set is written out for gRPC server reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTO: &str = "recommendations/v1/recommendations.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("recommendations_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
