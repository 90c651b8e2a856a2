//! The compiled execution plan against the reference interpreter: quantized fixtures (static
//! QDQ lowered to QLinear ops, dynamic BERT) and fp32 fixtures; outputs identical across thread
//! counts and repeated runs; the plan's native ops replace the reference on the hot path.

mod common;
use common::*;
use octet::passes::{qdq_to_qlinear::QdqToQLinear, run_pipeline};
use octet::quantizer::{self, QuantConfig};
use octet_ir::{Graph, Tensor};

fn shapes(feeds: &[(String, Tensor)]) -> Vec<(String, Vec<usize>)> {
    feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect()
}

fn cfg() -> QuantConfig {
    QuantConfig {
        quiet: true,
        ..Default::default()
    }
}

/// Quantize statically with `calib`, bind shapes, lower QDQ.
fn static_int8(model: &str, calib: &str, feeds: &[(String, Tensor)]) -> Graph {
    let g = octet::prepare::load(&fixture(model), &[]).unwrap().graph;
    let (mut q, _) = quantizer::quantize_static(&g, &npz(calib), &cfg()).unwrap();
    octet::prepare::prepare(&mut q, &shapes(feeds)).unwrap();
    run_pipeline(&mut q, &[&QdqToQLinear::default()], true).unwrap();
    q
}

fn engine_outputs(g: &Graph, threads: usize, feeds: &[(String, Tensor)]) -> Vec<Tensor> {
    let e = octet::engine::Engine::new(g.clone(), Some(threads)).unwrap();
    let a = e.run(feeds).unwrap();
    let b = e.run(feeds).unwrap();
    assert_eq!(a, b, "repeated runs differ");
    a.into_iter().map(|(_, t)| t).collect()
}

fn no_reference_on(g: &Graph, ops: &[&str]) {
    let e = octet::engine::Engine::new(g.clone(), Some(1)).unwrap();
    for s in e.steps() {
        assert!(
            !(s.exec == "reference" && ops.iter().any(|o| s.op == *o)),
            "{} ({}) runs on the reference",
            s.node,
            s.op
        );
    }
}

fn check_static(model: &str, calib: &str, feeds: Vec<(String, Tensor)>) {
    let g = static_int8(model, calib, &feeds);
    let oracle = octet::reference::run_graph(&g, &feeds).unwrap();
    let one = engine_outputs(&g, 1, &feeds);
    let two = engine_outputs(&g, 2, &feeds);
    assert_eq!(one, two, "{model}: threads 1 and 2 differ");
    for ((name, want), got) in oracle.iter().zip(&one) {
        assert_eq!(
            got, want,
            "{model}: output {name} differs from the reference interpreter"
        );
    }
    no_reference_on(
        &g,
        &[
            "QuantizeLinear",
            "DequantizeLinear",
            "QLinearAdd",
            "QLinearGlobalAveragePool",
            "Relu",
            "Clip",
            "Add",
            "Flatten",
        ],
    );
}

#[test]
fn digits_cnn_static_int8_matches_reference() {
    let x = take_batch(&get(&npz("digits_test.npz"), "input"), 16);
    check_static(
        "digits_cnn.onnx",
        "digits_calib.npz",
        vec![("input".into(), x)],
    );
}

#[test]
fn resnet8_static_int8_matches_reference() {
    check_static(
        "resnet8.onnx",
        "resnet8_inputs.npz",
        npz("resnet8_inputs.npz"),
    );
    // Every Relu after a residual Add was folded into the Add's output quantization (as ORT's
    // quantizer does), so the quantized graph has none left, and the tail pools the 8-bit
    // tensor natively (`QLinearGlobalAveragePool`) in the bit-identical comparison above.
    let feeds = npz("resnet8_inputs.npz");
    let g = static_int8("resnet8.onnx", "resnet8_inputs.npz", &feeds);
    let relus = g
        .topo_order()
        .unwrap()
        .into_iter()
        .filter(|&n| g.node(n).op.name() == "Relu")
        .count();
    assert_eq!(relus, 0, "a Relu was left in the quantized resnet8");
    let e = octet::engine::Engine::new(g, Some(1)).unwrap();
    assert!(
        e.steps()
            .iter()
            .any(|s| s.op == "QLinearGlobalAveragePool" && s.exec == "native"),
        "the native 8-bit pooling step is missing"
    );
}

#[test]
fn resnet8_residual_adds_fuse_into_convs_bit_identically() {
    let feeds = npz("resnet8_inputs.npz");
    let g = static_int8("resnet8.onnx", "resnet8_inputs.npz", &feeds);
    let adds = g
        .topo_order()
        .unwrap()
        .into_iter()
        .filter(|&n| g.node(n).op.name() == "QLinearAdd")
        .count();
    let e = octet::engine::Engine::new(g.clone(), Some(1)).unwrap();
    let steps = e.steps();
    let fused: Vec<_> = steps
        .iter()
        .filter(|s| s.op.starts_with("QLinearConv+QLinearAdd"))
        .collect();
    assert!(adds > 0, "resnet8 has no QLinearAdd");
    assert_eq!(
        fused.len(),
        adds,
        "every residual add should fuse into its conv: {:?}",
        steps.iter().map(|s| &s.op).collect::<Vec<_>>()
    );
    assert!(fused.iter().all(|s| s.exec == "int8"));
    assert!(!steps.iter().any(|s| s.op.starts_with("QLinearAdd")));
    let oracle = octet::reference::run_graph(&g, &feeds).unwrap();
    for threads in [1, 2] {
        let got = engine_outputs(&g, threads, &feeds);
        for ((name, want), got) in oracle.iter().zip(&got) {
            assert_eq!(got, want, "{threads} threads: output {name} differs");
        }
    }
}

#[test]
fn mobilenetv2_static_int8_matches_reference() {
    check_static(
        "mobilenetv2_035.onnx",
        "mobilenetv2_035_inputs.npz",
        npz("mobilenetv2_035_inputs.npz"),
    );
}

fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    let (d, m) = max_abs_diff(got, want);
    d / m.max(1e-30)
}

#[test]
fn tiny_bert_dynamic_int8_close_to_reference() {
    let feeds = npz("tiny_bert_inputs.npz");
    let mut g = octet::prepare::load(&fixture("tiny_bert.onnx"), &shapes(&feeds))
        .unwrap()
        .graph;
    g = quantizer::quantize_dynamic(&g, &cfg()).unwrap().0;
    octet::prepare::prepare(&mut g, &shapes(&feeds)).unwrap();
    let oracle = octet::reference::run_graph(&g, &feeds).unwrap();
    let one = engine_outputs(&g, 1, &feeds);
    let two = engine_outputs(&g, 2, &feeds);
    assert_eq!(one, two, "threads 1 and 2 differ");
    let e = octet::engine::Engine::new(g.clone(), Some(1)).unwrap();
    let fused = e
        .steps()
        .iter()
        .filter(|s| s.op.starts_with("MatMulInteger+Cast+Mul"))
        .count();
    assert_eq!(
        fused, 16,
        "dynamic MatMul pattern fused into the int8 GEMM (12 weight MatMuls, 4 attention MatMuls)"
    );
    let attention = e
        .steps()
        .iter()
        .filter(|s| s.op == "MatMulInteger+Cast+Mul+Mul" && s.exec == "int8")
        .count();
    assert_eq!(
        attention, 4,
        "attention's two run-time operands on the int8 kernel"
    );
    no_reference_on(
        &g,
        &[
            "MatMul",
            "Softmax",
            "LayerNormalization",
            "Erf",
            "Where",
            "DynamicQuantizeLinear",
            "Transpose",
            "Add",
            "Mul",
        ],
    );
    for ((name, want), got) in oracle.iter().zip(&one) {
        // Float ops (LayerNorm, Softmax, Erf) are f32 here, f64 in the reference: an activation
        // may land one quantization step apart.
        let r = rel_err(got, want);
        println!("tiny_bert dynamic {name}: max abs err / max = {r:.3e}");
        assert!(r < 2e-2, "{name}: {r}");
    }
}

fn check_fp32(model: &str, feeds: Vec<(String, Tensor)>) {
    let g = octet::prepare::load(&fixture(model), &shapes(&feeds))
        .unwrap()
        .graph;
    let oracle = octet::reference::run_graph(&g, &feeds).unwrap();
    let one = engine_outputs(&g, 1, &feeds);
    for ((name, want), got) in oracle.iter().zip(&one) {
        let r = rel_err(got, want);
        println!("{model} fp32 {name}: max abs err / max = {r:.3e}");
        assert!(r < 1e-5, "{model} {name}: {r}");
    }
}

#[test]
fn fp32_fixtures_match_reference() {
    check_fp32("resnet8.onnx", npz("resnet8_inputs.npz"));
    check_fp32("mobilenetv2_035.onnx", npz("mobilenetv2_035_inputs.npz"));
    check_fp32("tiny_bert.onnx", npz("tiny_bert_inputs.npz"));
}
