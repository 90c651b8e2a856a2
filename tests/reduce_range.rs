//! reduce_range, end to end: quantized with `--reduce-range auto` on a CPU capped to AVX2
//! (OCTET_ISA=avx2, a pre-VNNI Xeon), octet's models use 7-bit weights, so the AVX2 kernels
//! (vpmaddubsw, saturating int16 pairs) are exact: outputs equal the scalar reference's bit for
//! bit, with no node falling back. With `--reduce-range off` the same CPU would saturate, and
//! the engine says so and runs those nodes on the exact scalar kernel instead.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn octet(isa: &str, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_octet"))
        .env("OCTET_ISA", isa)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "octet {args:?} failed: {err}");
    err
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("octet-rr-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn check(model: &str, calib: &str, data: &str) {
    if !octet_kernels::Isa::supported()
        .unwrap()
        .contains(&octet_kernels::Isa::Avx2)
    {
        println!("{model}: AVX2 not available on this CPU, nothing to compare");
        return;
    }
    let q = tmp(&format!("{model}.auto.onnx"));
    octet(
        "avx2",
        &[
            "quantize",
            s(&fixture(model)),
            "--calib",
            s(&fixture(calib)),
            "--reduce-range",
            "auto",
            "-q",
            "-o",
            s(&q),
        ],
    );
    let (a, r) = (
        tmp(&format!("{model}.avx2.npz")),
        tmp(&format!("{model}.ref.npz")),
    );
    let report = octet(
        "avx2",
        &[
            "run",
            s(&q),
            "--input",
            s(&fixture(data)),
            "--report",
            "-o",
            s(&a),
        ],
    );
    octet(
        "scalar",
        &[
            "run",
            s(&q),
            "--input",
            s(&fixture(data)),
            "--reference",
            "-o",
            s(&r),
        ],
    );
    println!("{model} quantized for AVX2 (reduce_range auto):\n{report}");
    assert!(
        report.contains("[avx2]") && !report.contains("would saturate"),
        "{report}"
    );
    // Every Conv/Gemm/MatMul runs an int8 kernel: "N of N ... run int8 kernels".
    let line = report
        .lines()
        .find(|l| l.contains("Conv/Gemm/MatMul nodes run int8 kernels"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        nums[0], nums[2],
        "{model}: not every compute node is int8:\n{report}"
    );
    let (ga, gr) = (
        octet::io::npz::read_npz(&a).unwrap(),
        octet::io::npz::read_npz(&r).unwrap(),
    );
    assert_eq!(
        ga[0].1, gr[0].1,
        "{model}: AVX2 int8 kernels differ from the scalar reference"
    );

    // Full-range weights on the same CPU would saturate: the engine refuses the AVX2 kernel.
    let q8 = tmp(&format!("{model}.off.onnx"));
    octet(
        "avx2",
        &[
            "quantize",
            s(&fixture(model)),
            "--calib",
            s(&fixture(calib)),
            "--reduce-range",
            "off",
            "-q",
            "-o",
            s(&q8),
        ],
    );
    let report = octet(
        "avx2",
        &[
            "run",
            s(&q8),
            "--input",
            s(&fixture(data)),
            "--report",
            "-o",
            s(&a),
        ],
    );
    assert!(report.contains("would saturate"), "{report}");
}

#[test]
fn digits_cnn_avx2_exact_with_reduce_range() {
    check("digits_cnn.onnx", "digits_calib.npz", "digits_test.npz");
}

#[test]
fn resnet8_avx2_exact_with_reduce_range() {
    check("resnet8.onnx", "resnet8_inputs.npz", "resnet8_inputs.npz");
}

#[test]
fn mobilenetv2_avx2_exact_with_reduce_range() {
    check(
        "mobilenetv2_035.onnx",
        "mobilenetv2_035_inputs.npz",
        "mobilenetv2_035_inputs.npz",
    );
}
