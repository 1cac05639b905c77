//! Generates the `shoal.v1` messages and stubs from `proto/` with the vendored protoc,
//! and the descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_dir = "../../proto";
    let file = "../../proto/shoal/v1/shoal.proto";
    println!("cargo:rerun-if-changed={file}");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("shoal_v1_descriptor.bin"))
        .bytes(".")
        .compile_protos(&[file], &[proto_dir])?;
    Ok(())
}
