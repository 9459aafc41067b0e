//! Generates the gRPC code for `proto/paygate/v1` and `proto/paygate/admin/v1` with protox (no protoc needed) and writes the
//! encoded descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files([
        "paygate/v1/common.proto",
        "paygate/v1/refund_service.proto",
        "paygate/v1/subscription_service.proto",
        "paygate/v1/event_service.proto",
        "paygate/admin/v1/admin_service.proto",
    ])?;
    std::fs::write(
        out.join("paygate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
