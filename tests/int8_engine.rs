//! Pre-quantized models (onnxruntime's QDQ and QOperator digits models) lowered onto the int8
//! kernels: every Conv/Gemm runs an int8 kernel, outputs are bit-identical to the reference
//! interpreter on the same integer graph, and within one output quantization step of
//! onnxruntime.

mod common;
use common::*;
use octet::passes::{qdq_to_qlinear::QdqToQLinear, run_pipeline};
use octet_ir::{Op, Tensor};

fn digits16() -> Vec<(String, Tensor)> {
    vec![(
        "input".into(),
        take_batch(&get(&npz("digits_test.npz"), "input"), 16),
    )]
}

fn check(model: &str, reference: &str) {
    let feeds = digits16();
    let m =
        octet::prepare::load(&fixture(model), &[("input".into(), vec![16, 1, 16, 16])]).unwrap();
    let mut g = m.graph;
    let lower = QdqToQLinear::default();
    run_pipeline(&mut g, &[&lower], true).unwrap();
    for n in g.g.node_indices() {
        assert!(
            !matches!(g.node(n).op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul),
            "{model}: float compute node {} left:\n{}",
            g.node(n).name,
            g.to_text()
        );
    }
    let oracle = octet::reference::run_graph(&g, &feeds).unwrap();
    let engine = octet::engine::Engine::new(g, None).unwrap();
    let report = engine.report();
    print!("{model}:\n{report}");
    assert!(
        report.compute_not_int8().is_empty(),
        "{model}: compute nodes not on int8 kernels: {:?}",
        report.compute_not_int8()
    );
    assert_eq!(report.nodes.iter().filter(|r| r.is_compute()).count(), 6);
    let outs = engine.run(&feeds).unwrap();
    assert_eq!(
        outs[0].1, oracle[0].1,
        "{model}: int8 kernels differ from the reference interpreter"
    );
    // Within one output quantization step of onnxruntime.
    let want = get(&npz(reference), "logits");
    let (d, _) = max_abs_diff(&outs[0].1, &want);
    let step = {
        let m = octet::frontend::onnx::load(fixture(model)).unwrap();
        let (_, o) = &m.graph.outputs[0];
        m.graph.const_operand(o.node, 1).unwrap().to_f64_vec()[0]
    };
    println!(
        "{model}: max abs err vs onnxruntime {d:.3e} = {:.3} steps",
        d / step
    );
    assert!(d <= step * 1.0001);
}

#[test]
fn qdq_digits_runs_on_int8_kernels() {
    check("digits_cnn_qdq_ort.onnx", "digits_cnn_qdq_ort_ref.npz");
}

#[test]
fn qoperator_digits_runs_on_int8_kernels() {
    check(
        "digits_cnn_qoperator_ort.onnx",
        "digits_cnn_qoperator_ort_ref.npz",
    );
}

#[test]
fn lowered_qdq_graph_matches_qoperator_structure() {
    let m = octet::prepare::load(
        &fixture("digits_cnn_qdq_ort.onnx"),
        &[("input".into(), vec![1, 1, 16, 16])],
    )
    .unwrap();
    let mut g = m.graph;
    run_pipeline(&mut g, &[&QdqToQLinear::default()], true).unwrap();
    let text = g.to_text();
    let count = |op: &str| text.matches(&format!(" = {op}")).count();
    assert_eq!(count("QLinearConv["), 4, "{text}");
    assert_eq!(count("QGemm["), 2, "{text}");
    assert_eq!(count("QLinearGlobalAveragePool["), 1, "{text}");
    assert_eq!(count("QuantizeLinear["), 1, "{text}");
    assert_eq!(count("DequantizeLinear["), 1, "{text}");
    // Quantized values carry their parameters in their types.
    assert!(text.contains("u8[1,16,16,16] q(scale="), "{text}");
}

fn octet_run(isa: Option<&str>, model: &str, out: &std::path::Path) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_octet"));
    cmd.args([
        "run",
        fixture(model).to_str().unwrap(),
        "--input",
        fixture("digits_test.npz").to_str().unwrap(),
        "--report",
        "-o",
    ])
    .arg(out);
    match isa {
        Some(i) => cmd.env("OCTET_ISA", i),
        None => cmd.env_remove("OCTET_ISA"),
    };
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    (o.status.success(), err)
}

/// The same model gives bit-identical outputs on every ISA the CPU supports (OCTET_ISA caps the
/// choice, emulating older CPUs); on pre-VNNI paths full-range weights run the exact scalar kernel
/// and the report says why.
#[test]
fn every_isa_gives_identical_outputs() {
    let dir = std::env::temp_dir().join(format!("octet-isa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let supported = octet_kernels::Isa::supported().unwrap();
    let mut outputs = vec![];
    for isa in &supported {
        let out = dir.join(format!("{}.npz", isa.name()));
        let (ok, err) = octet_run(Some(isa.name()), "digits_cnn_qdq_ort.onnx", &out);
        assert!(ok, "{}: {err}", isa.name());
        assert!(
            err.contains("6 of 6 Conv/Gemm/MatMul nodes run int8 kernels"),
            "{err}"
        );
        if !octet_kernels::gemm_u8s8_is_exact(*isa) {
            assert!(err.contains("would saturate"), "{err}");
        }
        outputs.push((isa.name(), octet::io::npz::read_npz(&out).unwrap()));
    }
    println!(
        "ISA paths compared: {:?}",
        supported.iter().map(|i| i.name()).collect::<Vec<_>>()
    );
    for (name, o) in &outputs[1..] {
        assert_eq!(
            o[0].1, outputs[0].1[0].1,
            "{name} differs from {}",
            outputs[0].0
        );
    }
}

#[test]
fn unknown_or_unavailable_isa_is_a_clear_error() {
    let out = std::env::temp_dir().join("octet-isa-bad.npz");
    let (ok, err) = octet_run(Some("avx9000"), "digits_cnn_qdq_ort.onnx", &out);
    assert!(!ok && err.contains("avx9000"), "{err}");
}

/// Models quantized by octet (static: resnet8; dynamic: tiny_bert) run their Conv/Gemm/MatMul
/// on int8 kernels with outputs bit-identical to the reference interpreter on the same graph
/// (static); dynamic BERT's float ops (LayerNorm, Softmax, Erf, attention MatMul) run f32 SIMD
/// kernels where the reference computes in f64, so it matches to float rounding (< 2e-6
/// relative; see tests/engine_plan.rs).
#[test]
fn octet_quantized_models_on_int8_kernels_match_the_reference_exactly() {
    use octet::quantizer::{quantize_dynamic, quantize_static, Approach, QuantConfig};
    let cfg = QuantConfig {
        quiet: true,
        ..QuantConfig::default()
    };
    // static
    let feeds = npz("resnet8_inputs.npz");
    let m = octet::prepare::load(
        &fixture("resnet8.onnx"),
        &[("input".into(), feeds[0].1.shape().to_vec())],
    )
    .unwrap();
    let (q, _) = quantize_static(&m.graph, &feeds, &cfg).unwrap();
    let engine = octet::prepare::engine(q, None).unwrap();
    print!("resnet8 static:\n{}", engine.report());
    assert!(engine.report().compute_not_int8().is_empty());
    let oracle = octet::reference::run_graph(engine.graph(), &feeds).unwrap();
    assert_eq!(engine.run(&feeds).unwrap()[0].1, oracle[0].1);
    // dynamic
    let feeds = npz("tiny_bert_inputs.npz");
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let m = octet::prepare::load(&fixture("tiny_bert.onnx"), &shapes).unwrap();
    let (q, _) = quantize_dynamic(
        &m.graph,
        &QuantConfig {
            approach: Approach::Dynamic,
            ..cfg
        },
    )
    .unwrap();
    let engine = octet::prepare::engine(q, None).unwrap();
    let r = engine.report();
    let mmi = r.nodes.iter().filter(|n| n.op == "MatMulInteger").count();
    println!(
        "tiny_bert dynamic: {mmi} MatMulInteger nodes, {} on int8 kernels",
        r.int8_count()
    );
    // 12 weight MatMuls + 4 attention MatMuls of two run-time operands.
    assert_eq!(mmi, 16);
    assert_eq!(r.int8_count(), 16, "{r}");
    let oracle = octet::reference::run_graph(engine.graph(), &feeds).unwrap();
    let (d, m) = max_abs_diff(&engine.run(&feeds).unwrap()[0].1, &oracle[0].1);
    // The integer GEMMs are exact; the float ops between them (Softmax, LayerNorm, Erf) run in
    // f32 here and in f64 in the reference, and since attention's probabilities are quantized at
    // run time too, one of them can land a quantization step (1/255) apart: observed 6.8e-5.
    assert!(d <= 1e-3 * m, "tiny_bert dynamic: {d} vs max {m}");
}
