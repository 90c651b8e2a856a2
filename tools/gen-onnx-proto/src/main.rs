fn main() {
    let fds = protox::compile(["onnx.proto"], ["."]).unwrap();
    let mut cfg = prost_build::Config::new();
    // TensorProto.raw_data as bytes::Bytes: decoding from a Bytes buffer (a mapped file)
    // then slices it instead of copying, so loading holds the weights once, not twice.
    cfg.bytes([".onnx.TensorProto.raw_data"]);
    cfg.out_dir("out");
    std::fs::create_dir_all("out").unwrap();
    cfg.compile_fds(fds).unwrap();
}
