//! Compiles the protocol's .proto files with protox (pure Rust, no protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/machine/driver/v1/driver.proto",
        "proto/plugin/controller.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
