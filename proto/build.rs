//! Compiles `proto/chimera/v1/*.proto` with the protoc that ships inside the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing but cargo.
//! The messages are always generated; the tonic service stubs only with the
//! `grpc` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_with_config(
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
