//! Per-node quantization choices inside one static model (the tuner's space): recipes per op type
//! and per node (calibration method, per-tensor / per-channel weights, symmetric activations),
//! dynamic int8 MatMul/Gemm, bf16 and fp32 nodes; the config round-trips through JSON and
//! reproduces the model bit for bit.

mod common;
use common::*;
use octet::quantizer::{self, Precision, QuantConfig, Recipe};
use octet_ir::{Graph, Op};

fn digits() -> Graph {
    octet::prepare::load(&fixture("digits_cnn.onnx"), &[])
        .unwrap()
        .graph
}

fn mixed() -> QuantConfig {
    let mut c = QuantConfig {
        quiet: true,
        ..Default::default()
    };
    c.node_recipes.insert(
        "/f/f.3/Conv".into(),
        Recipe {
            calib_method: Some(octet::calibrate::CalibAlgorithm::Entropy),
            per_channel: Some(false),
            symmetric_activations: Some(true),
        },
    );
    c.op_recipes.insert(
        "Gemm".into(),
        Recipe {
            per_channel: Some(false),
            ..Default::default()
        },
    );
    c.precision
        .insert("/f/f.15/Gemm".into(), Precision::Dynamic);
    c.precision.insert("/f/f.7/Conv".into(), Precision::Bf16);
    c
}

fn accuracy(g: Graph) -> (f64, octet::engine::Engine) {
    let test = npz("digits_test.npz");
    let mut g = g;
    let x = get(&test, "input");
    octet::prepare::prepare(&mut g, &[("input".into(), x.shape().to_vec())]).unwrap();
    let e = octet::prepare::engine(g, Some(1)).unwrap();
    let out = e
        .run(&[("input".into(), get(&test, "input"))])
        .unwrap()
        .remove(0)
        .1;
    let labels = get(&test, "label").to_i64_vec();
    let v = out.view::<f32>().unwrap();
    let hits = v
        .chunks(10)
        .zip(&labels)
        .filter(|(r, &l)| {
            let best = (0..10)
                .max_by(|&a, &b| r[a].partial_cmp(&r[b]).unwrap())
                .unwrap();
            best as i64 == l
        })
        .count();
    (hits as f64 / labels.len() as f64, e)
}

#[test]
fn mixed_config_quantizes_each_node_its_own_way() {
    let g = digits();
    let calib = npz("digits_calib.npz");
    let cfg = mixed();
    let (q, report) = quantizer::quantize_static(&g, &calib, &cfg).unwrap();
    println!("{report}");
    let line = |n: &str| report.nodes.iter().find(|l| l.name == n).unwrap().clone();
    assert_eq!(line("/f/f.3/Conv").precision, Precision::Int8);
    assert_eq!(
        line("/f/f.3/Conv").reason,
        "recipe: calibration entropy, per-tensor weights, symmetric activations"
    );
    assert_eq!(line("/f/f.17/Gemm").reason, "recipe: per-tensor weights");
    assert_eq!(line("/f/f.15/Gemm").precision, Precision::Dynamic);
    assert_eq!(line("/f/f.7/Conv").precision, Precision::Bf16);
    assert_eq!(line("/f/f.0/Conv").reason, "default");

    // f.3's output is quantized symmetrically (u8, zero point 128); its weight per tensor.
    let zp = q
        .find("/f/f.3/Conv_output_0_zero_point")
        .map(|n| match &q.node(n).op {
            Op::Const(t) => t.to_i64_vec(),
            _ => vec![],
        })
        .unwrap();
    assert_eq!(zp, vec![128]);
    let ws = q.find("onnx::Conv_57_scale").unwrap();
    match &q.node(ws).op {
        Op::Const(t) => assert_eq!(t.len(), 1, "per-tensor weight scale"),
        _ => panic!(),
    }
    // f.15 became a dynamic MatMulInteger, f.7 a bf16 float conv.
    assert!(q.find("/f/f.15/Gemm_quant").is_some());
    let c7 = q.find("/f/f.7/Conv").unwrap();
    assert!(q.node(c7).bf16 && matches!(q.node(c7).op, Op::Conv(_)));

    let (acc, e) = accuracy(q.clone());
    println!("digits mixed config: top-1 {:.2}%", acc * 100.0);
    assert!(acc >= 0.985, "{acc}");
    let r = e.report();
    println!("{r}");
    assert_eq!(
        r.int8_count(),
        5,
        "f.0, f.3, f.10, f.15 (dynamic), f.17 on int8 kernels"
    );
    assert_eq!(r.bf16_count(), 1, "f.7 on the bf16 kernel");
    let bf = r.nodes.iter().find(|n| n.node == "/f/f.7/Conv").unwrap();
    assert!(bf.kernel.starts_with("conv2d_bf16"), "{}", bf.kernel);

    // The engine's bf16 conv against the reference interpreter (which rounds the node's
    // operands to bf16 and sums in f64): f32 sums of exact bf16 products, so close, and
    // an activation may land one quantization step apart downstream.
    let test = npz("digits_test.npz");
    let x = get(&test, "input");
    let feeds = vec![("input".to_string(), x.clone())];
    let got = e.run(&feeds).unwrap().remove(0).1;
    let want = octet::reference::run_graph(e.graph(), &feeds)
        .unwrap()
        .remove(0)
        .1;
    let (d, m) = max_abs_diff(&got, &want);
    println!("bf16 node: engine vs reference max abs diff {d:.3e} (max {m:.3})");
    assert!(d <= 0.05 * m, "{d} vs {m}");

    // Through an ONNX file (bf16 as Cast<f32>(Cast<bf16>(x)) with bf16-exact weights) and back:
    // the bf16 node is read back as bf16 and the outputs are identical.
    let dir = std::env::temp_dir().join(format!("octet-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mixed.onnx");
    quantizer::export_onnx::write_onnx(&q, &path).unwrap();
    let back = octet::prepare::load(&path, &[("input".into(), x.shape().to_vec())])
        .unwrap()
        .graph;
    let eb = octet::prepare::engine(back, Some(1)).unwrap();
    assert_eq!(eb.report().bf16_count(), 1, "{}", eb.report());
    assert_eq!(eb.run(&feeds).unwrap().remove(0).1, got);
    std::fs::remove_dir_all(&dir).ok();

    // The JSON config reproduces the model exactly.
    let back = QuantConfig::from_json(&cfg.to_json()).unwrap();
    assert_eq!(back, cfg);
    let (q2, _) = quantizer::quantize_static(&g, &calib, &back).unwrap();
    assert_eq!(q.to_text(), q2.to_text());
}

#[test]
fn bad_precision_and_recipe_entries_are_config_errors() {
    let g = digits();
    let calib = npz("digits_calib.npz");
    let mut c = QuantConfig {
        quiet: true,
        ..Default::default()
    };
    c.precision.insert("/f/f.3/Conv".into(), Precision::Dynamic);
    let e = quantizer::quantize_static(&g, &calib, &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("applies to MatMul and Gemm"), "{e}");
    let mut c = QuantConfig {
        quiet: true,
        ..Default::default()
    };
    c.node_recipes.insert("nope".into(), Recipe::default());
    let e = quantizer::quantize_static(&g, &calib, &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'nope'"), "{e}");
    let e = QuantConfig::from_json(r#"{"node_recipes": {"x": {"calib": "kl"}}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
}
