//! Generate the runtime.v1 messages and the ImageService server from the
//! vendored CRI proto. Needs `protoc` (Debian's `protobuf-compiler`).
fn main() {
    println!("cargo:rerun-if-changed=proto/api.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(&["proto/api.proto"], &["proto"])
        .expect("compile proto/api.proto (is protoc installed? Debian: protobuf-compiler)");
}
