//! Compiles the dummy proto with `protox` (no `protoc` needed), as proto/build.rs
//! does for the real contract, and keeps the descriptor set for the tests.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTO: &str = "dummy/v1/dummy.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/{PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("dummy_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
