//! Float models on the engine's fp32 kernels match onnxruntime as closely as the reference does.

mod common;
use common::*;
use octet_ir::Tensor;

fn check(model: &str, feeds: Vec<(String, Tensor)>, reference: &str, float_kernel_nodes: usize) {
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let m = octet::prepare::load(&fixture(model), &shapes).unwrap();
    let engine = octet::prepare::engine(m.graph, None).unwrap();
    let fp32 = engine
        .report()
        .nodes
        .iter()
        .filter(|r| r.exec == "fp32")
        .count();
    print!("{model}:\n{}", engine.report());
    assert_eq!(
        fp32, float_kernel_nodes,
        "{model}: compute nodes on fp32 kernels"
    );
    let outs = engine.run(&feeds).unwrap();
    for (name, w) in npz(reference) {
        let got = &outs.iter().find(|(n, _)| *n == name).unwrap().1;
        let (d, m) = max_abs_diff(got, &w);
        println!("{model}: {name} max abs err {d:.3e} of max {m:.3e}");
        assert!(d <= 1e-4 * m, "{model}: {d} > 1e-4 x {m}");
    }
}

#[test]
fn digits_cnn_fp32_kernels() {
    let x = take_batch(&get(&npz("digits_test.npz"), "input"), 16);
    check(
        "digits_cnn.onnx",
        vec![("input".into(), x)],
        "digits_cnn_ref.npz",
        6,
    );
}

#[test]
fn resnet8_fp32_kernels() {
    check(
        "resnet8.onnx",
        npz("resnet8_inputs.npz"),
        "resnet8_ref.npz",
        10,
    );
}

#[test]
fn mobilenetv2_fp32_kernels() {
    check(
        "mobilenetv2_035.onnx",
        npz("mobilenetv2_035_inputs.npz"),
        "mobilenetv2_035_ref.npz",
        53,
    );
}

#[test]
fn tiny_bert_fp32_kernels() {
    check(
        "tiny_bert.onnx",
        npz("tiny_bert_inputs.npz"),
        "tiny_bert_ref.npz",
        12,
    );
}
