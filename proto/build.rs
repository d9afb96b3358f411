//! Generates the llmroute.v1 code with a vendored protoc (no system protoc needed) and writes the
//! file descriptor set that the gRPC reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("llmroute_v1_descriptor.bin"))
        .compile_protos(&["proto/llmroute/v1/router.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
