//! Compiles proto/silo/v1 with protox (no protoc needed) and keeps the file descriptor
//! set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("silo/v1/job.proto"),
        root.join("silo/v1/runtime.proto"),
        root.join("silo/v1/workflow.proto"),
        root.join("silo/v1/node.proto"),
        root.join("silo/v1/schedule.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("silo_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Log data is sliced out of the log file's read buffer without a copy.
        .bytes(".silo.v1.LogRecord.data")
        // A secret's value must never reach a log through `{:?}` of a spec or request:
        // its Debug (in lib.rs) shows the name only.
        .skip_debug([".silo.v1.SecretVar"])
        .compile_fds(fds)?;
    Ok(())
}
