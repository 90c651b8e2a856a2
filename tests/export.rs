//! `octet export`: QDQ and QOperator ONNX files of octet-quantized models re-import into octet
//! and give exactly the outputs of the in-process quantized model. (`.ci/run` also runs them in
//! onnxruntime, see tests/ort/check_exports.py.)

mod common;
use common::*;
use std::process::Command;

fn octet(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_octet"))
        .args(args)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "octet {args:?}: {e}");
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn check(model: &str, calib: &str, data: &str) {
    let dir = std::env::temp_dir().join(format!("octet-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut outs = vec![];
    for format in ["qdq", "qoperator"] {
        let f = dir.join(format!("{model}.{format}.onnx"));
        octet(&[
            "export",
            fixture(model).to_str().unwrap(),
            "--calib",
            fixture(calib).to_str().unwrap(),
            "--format",
            format,
            "-o",
            f.to_str().unwrap(),
        ]);
        let o = dir.join(format!("{model}.{format}.npz"));
        octet(&[
            "run",
            f.to_str().unwrap(),
            "--input",
            fixture(data).to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ]);
        outs.push(octet::io::npz::read_npz(&o).unwrap().remove(0).1);
    }
    // In process: quantize, lower, run.
    let feeds: Vec<(String, octet_ir::Tensor)> = npz(data)
        .into_iter()
        .filter(|(n, _)| n != "label")
        .collect();
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let mut m = octet::frontend::onnx::load(fixture(model)).unwrap();
    octet::prepare::prepare(&mut m.graph, &[]).unwrap();
    let cfg = octet::quantizer::QuantConfig {
        quiet: true,
        ..Default::default()
    };
    let (mut q, _) = octet::quantizer::quantize_static(&m.graph, &npz(calib), &cfg).unwrap();
    octet::prepare::prepare(&mut q, &shapes).unwrap();
    let want = octet::prepare::engine(q, None)
        .unwrap()
        .run(&feeds)
        .unwrap()
        .remove(0)
        .1;
    assert_eq!(outs[0], want, "{model}: QDQ export re-imported differs");
    assert_eq!(
        outs[1], want,
        "{model}: QOperator export re-imported differs"
    );
    println!("{model}: QDQ and QOperator exports re-import bit-identically");
}

#[test]
fn digits_exports_round_trip() {
    check("digits_cnn.onnx", "digits_calib.npz", "digits_test.npz");
}

#[test]
fn resnet8_exports_round_trip() {
    check("resnet8.onnx", "resnet8_inputs.npz", "resnet8_inputs.npz");
}

#[test]
fn unquantized_model_needs_calibration() {
    let o = Command::new(env!("CARGO_BIN_EXE_octet"))
        .args([
            "export",
            fixture("digits_cnn.onnx").to_str().unwrap(),
            "-o",
            "/tmp/never.onnx",
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("not quantized"), "{e}");
}
