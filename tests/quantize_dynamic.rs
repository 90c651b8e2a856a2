//! Dynamic quantization of tiny_bert on the reference interpreter.

mod common;
use common::*;
use octet::quantizer::{self, Approach, Precision, QuantConfig};
use octet_ir::{Graph, Op, Tensor};

fn load_bert() -> (Graph, Vec<(String, Tensor)>) {
    let data = npz("tiny_bert_inputs.npz");
    let shapes: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let g = octet::prepare::load(&fixture("tiny_bert.onnx"), &shapes)
        .unwrap()
        .graph;
    (g, data)
}

fn per_token_cosine(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let h = *a.shape().last().unwrap();
    let (a, b) = (a.view::<f32>().unwrap(), b.view::<f32>().unwrap());
    let cs: Vec<f64> = a
        .chunks(h)
        .zip(b.chunks(h))
        .map(|(x, y)| {
            let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
            for (&p, &q) in x.iter().zip(y) {
                ab += p as f64 * q as f64;
                aa += p as f64 * p as f64;
                bb += q as f64 * q as f64;
            }
            ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
        })
        .collect();
    (
        cs.iter().sum::<f64>() / cs.len() as f64,
        cs.iter().copied().fold(1.0, f64::min),
    )
}

#[test]
fn tiny_bert_dynamic_int8() {
    let (g, data) = load_bert();
    let matmuls =
        g.g.node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::MatMul | Op::Gemm { .. }))
            .count();
    let attention =
        g.g.node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::MatMul) && g.const_operand(n, 1).is_none())
            .count();
    assert_eq!(
        attention, 4,
        "tiny_bert has two attention MatMuls per layer"
    );
    let cfg = QuantConfig {
        approach: Approach::Dynamic,
        quiet: true,
        ..Default::default()
    };
    let (q, report) = quantizer::quantize_dynamic(&g, &cfg).unwrap();
    println!("{report}");
    let int8: Vec<_> = report
        .nodes
        .iter()
        .filter(|n| n.precision == Precision::Int8)
        .collect();
    assert_eq!(
        int8.len(),
        matmuls,
        "every MatMul, attention's included, is quantized"
    );
    let left =
        q.g.node_indices()
            .filter(|&n| matches!(q.node(n).op, Op::MatMul | Op::Gemm { .. }))
            .count();
    assert_eq!(left, 0);
    // Attention's MatMuls quantize both run-time operands.
    let runtime = q
        .g
        .node_indices()
        .filter(|&n| matches!(q.node(n).op, Op::MatMulInteger) && q.const_operand(n, 1).is_none())
        .count();
    assert_eq!(runtime, attention);
    // Activations reached through Transpose/Reshape chains are quantized before the chain,
    // which then moves u8 values (tiny_bert: the attention context before the output dense).
    let u8_moves =
        q.g.node_indices()
            .filter(|&n| {
                matches!(q.node(n).op, Op::Transpose { .. } | Op::Reshape { .. })
                    && q.operand(n, 0)
                        .and_then(|o| q.ty(o))
                        .is_some_and(|t| t.dtype == octet_ir::DType::U8)
            })
            .count();
    assert!(u8_moves >= 2, "{u8_moves}");
    let a = octet::reference::run_graph(&g, &data).unwrap();
    let b = octet::reference::run_graph(&q, &data).unwrap();
    let (mean, min) = per_token_cosine(&a[0].1, &b[0].1);
    println!(
        "tiny_bert dynamic int8: {} MatMul/Gemm quantized; per-token cosine of {} to fp32: mean {mean:.6}, min {min:.6}",
        int8.len(),
        a[0].0
    );
    assert!(mean >= 0.995, "mean per-token cosine {mean}");

    // The exported file re-imports and runs with identical outputs.
    let dir = std::env::temp_dir().join(format!("octet-dyn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bert_dyn.onnx");
    quantizer::export_onnx::write_onnx(&q, &path).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let back = octet::prepare::load(&path, &shapes).unwrap().graph;
    let c = octet::reference::run_graph(&back, &data).unwrap();
    assert_eq!(b[0].1.view::<f32>().unwrap(), c[0].1.view::<f32>().unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dynamic_exclusion_is_reported() {
    let (g, _) = load_bert();
    let first =
        g.g.node_indices()
            .find(|&n| matches!(g.node(n).op, Op::MatMul) && g.const_operand(n, 1).is_some())
            .map(|n| g.node(n).name.clone())
            .unwrap();
    let cfg = QuantConfig {
        approach: Approach::Dynamic,
        exclude_nodes: vec![first.clone()],
        quiet: true,
        ..Default::default()
    };
    let (_, r) = quantizer::quantize_dynamic(&g, &cfg).unwrap();
    let n = r.nodes.iter().find(|n| n.name == first).unwrap();
    assert_eq!(n.precision, Precision::Fp32);
    assert_eq!(n.reason, "excluded by name");
}

#[test]
fn smooth_quant_moves_activation_ranges_into_the_weights() {
    let (g, data) = load_bert();
    // The smoothing alone (no quantization) keeps the float model's outputs.
    let targets = octet::passes::smooth_quant::targets(&g, &Default::default());
    assert!(!targets.is_empty());
    let outlets: Vec<_> = targets.iter().map(|(x, _)| *x).collect();
    let stats = octet::calibrate::channels::channel_absmax(&g, &data, &outlets, 16).unwrap();
    assert_eq!(stats.len(), targets.len());
    let mut s = g.clone();
    let smoothed = octet::passes::smooth_quant::smooth(&mut s, &targets, &stats, 0.5);
    s.verify().unwrap();
    let a = octet::reference::run_graph(&g, &data).unwrap();
    let b = octet::reference::run_graph(&s, &data).unwrap();
    let (d, m) = max_abs_diff(&a[0].1, &b[0].1);
    println!(
        "SmoothQuant: {} MatMuls smoothed over {} activations; float outputs differ by {d:.2e} (max {m:.2})",
        smoothed.len(),
        targets.len()
    );
    assert!(d <= 1e-4 * m.max(1.0), "{d}");

    // Through the quantizer: the report names the smoothed nodes, accuracy holds.
    let cfg = QuantConfig {
        approach: Approach::Dynamic,
        smooth_quant: Some(0.5),
        quiet: true,
        ..Default::default()
    };
    let (q, report) = quantizer::quantize_dynamic_with(&g, Some(&data), &cfg).unwrap();
    let n = report
        .nodes
        .iter()
        .filter(|l| l.reason.contains("SmoothQuant alpha 0.5"))
        .count();
    assert_eq!(n, smoothed.len(), "{report}");
    let c = octet::reference::run_graph(&q, &data).unwrap();
    let (mean, _) = per_token_cosine(&a[0].1, &c[0].1);
    println!("tiny_bert dynamic int8 with SmoothQuant: per-token cosine {mean:.6}");
    assert!(mean >= 0.995);

    // Without calibration data it is a clear configuration error.
    let e = quantizer::quantize_dynamic(&g, &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("SmoothQuant needs calibration data"), "{e}");
    let bad = QuantConfig {
        smooth_quant: Some(1.5),
        ..cfg
    };
    let e = quantizer::quantize_dynamic_with(&g, Some(&data), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside (0, 1]"), "{e}");
}
