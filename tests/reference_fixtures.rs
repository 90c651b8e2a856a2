//! The shared fixture models run on the reference interpreter and match onnxruntime's outputs.

mod common;
use common::*;
use octet_ir::{Op, Tensor};

fn run(model: &str, feeds: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let m = octet::prepare::load(&fixture(model), &shapes).unwrap();
    m.graph.verify().unwrap();
    octet::reference::run_graph(&m.graph, &feeds).unwrap()
}

fn check_float(model: &str, feeds: Vec<(String, Tensor)>, reference: &str) {
    let outs = run(model, feeds);
    let want = npz(reference);
    for (name, w) in &want {
        let got = &outs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{model}: no output {name}"))
            .1;
        let (d, m) = max_abs_diff(got, w);
        println!(
            "{model}: output {name} {:?}: max abs err {d:.3e}, max |ref| {m:.3e}, ratio {:.3e}",
            w.shape(),
            d / m
        );
        assert!(
            d <= 1e-4 * m,
            "{model}: max abs error {d} exceeds 1e-4 x {m}"
        );
    }
}

fn digits16() -> Vec<(String, Tensor)> {
    let t = get(&npz("digits_test.npz"), "input");
    vec![("input".into(), take_batch(&t, 16))]
}

#[test]
fn digits_cnn_matches_onnxruntime() {
    check_float("digits_cnn.onnx", digits16(), "digits_cnn_ref.npz");
}

#[test]
fn resnet8_matches_onnxruntime() {
    check_float("resnet8.onnx", npz("resnet8_inputs.npz"), "resnet8_ref.npz");
}

#[test]
fn mobilenetv2_035_matches_onnxruntime() {
    check_float(
        "mobilenetv2_035.onnx",
        npz("mobilenetv2_035_inputs.npz"),
        "mobilenetv2_035_ref.npz",
    );
}

#[test]
fn tiny_bert_matches_onnxruntime() {
    check_float(
        "tiny_bert.onnx",
        npz("tiny_bert_inputs.npz"),
        "tiny_bert_ref.npz",
    );
}

/// Quantized models: within one step of the output quantization (the scale of the final
/// DequantizeLinear).
fn check_quantized(model: &str, reference: &str) {
    let m = octet::frontend::onnx::load(fixture(model)).unwrap();
    let g = &m.graph;
    let (_, out) = &g.outputs[0];
    assert!(matches!(g.node(out.node).op, Op::DequantizeLinear { .. }));
    let step = g.const_operand(out.node, 1).unwrap().to_f64_vec()[0];
    let outs = run(model, digits16());
    let want = get(&npz(reference), "logits");
    let (d, _) = max_abs_diff(&outs[0].1, &want);
    let steps = d / step;
    println!(
        "{model}: max abs err {d:.3e} = {steps:.3} output quantization steps (step {step:.3e})"
    );
    assert!(
        d <= step * 1.0001,
        "{model}: error {d} exceeds one quantization step {step}"
    );
}

#[test]
fn qdq_digits_matches_onnxruntime_within_one_step() {
    check_quantized("digits_cnn_qdq_ort.onnx", "digits_cnn_qdq_ort_ref.npz");
}

#[test]
fn qoperator_digits_matches_onnxruntime_within_one_step() {
    check_quantized(
        "digits_cnn_qoperator_ort.onnx",
        "digits_cnn_qoperator_ort_ref.npz",
    );
}
