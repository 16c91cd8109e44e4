//! Compiles `proto/chimera/v1/*.proto` with the protoc that ships inside the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing but cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "chimera/v1/common.proto",
            "chimera/v1/agent.proto",
            "chimera/v1/operator.proto",
        ],
        &["."],
    )?;
    println!("cargo:rerun-if-changed=chimera");
    Ok(())
}
