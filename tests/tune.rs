//! Accuracy-aware tuning on the engine.

mod common;
use common::*;
use octet::quantizer::QuantConfig;
use octet::tuner::{self, metric::Metric, Criterion, Strategy, Tolerance, TuneOptions};
use octet_ir::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// x[N,8] -> Gemm0 -> Relu -> Gemm1 -> h1 -> Gemm2 -> y[N,4]. One channel of h1 is scaled by
/// 2000 and ignored by Gemm2, so per-tensor int8 of h1 wipes out every other channel: full int8
/// fails any reasonable goal, and falling back the two nodes around h1 rescues it.
fn outlier_model() -> Graph {
    let mut s = 7u64;
    let w = |r: usize, c: usize, f: &dyn Fn(usize, usize) -> f32, s: &mut u64| {
        let v: Vec<f32> = (0..r * c).map(|i| lcg(s) * f(i / c, i % c)).collect();
        Tensor::from_vec(&[r, c], v)
    };
    let w0 = w(8, 16, &|_, _| 0.5, &mut s);
    let w1 = w(16, 16, &|_, c| if c == 0 { 2000.0 } else { 0.5 }, &mut s);
    let w2 = w(16, 4, &|r, _| if r == 0 { 0.0 } else { 1.0 }, &mut s);
    let mut g = Graph::new();
    let x = g.add_input(
        "x",
        ValueType::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(8)])),
    );
    let mut prev = Outlet::new(x, 0);
    for (i, wt) in [w0, w1, w2].into_iter().enumerate() {
        let wc = g.add_const(&format!("w{i}"), wt);
        let n = g.add_node(
            &format!("gemm{i}"),
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            vec![format!("h{i}")],
        );
        g.connect(prev, n, 0);
        g.connect(Outlet::new(wc, 0), n, 1);
        prev = Outlet::new(n, 0);
        if i == 0 {
            let r = g.add_node("relu0", Op::Unary(UnaryOp::Relu), vec!["r0".into()]);
            g.connect(prev, r, 0);
            prev = Outlet::new(r, 0);
        }
    }
    g.outputs.push(("y".into(), prev));
    g.infer_types().unwrap();
    g
}

fn data(n: usize, seed: u64) -> Vec<(String, Tensor)> {
    let mut s = seed;
    vec![(
        "x".into(),
        Tensor::from_vec(&[n, 8], (0..n * 8).map(|_| lcg(&mut s) * 2.0).collect()),
    )]
}

fn run_tune(g: &Graph, strategy: Strategy, max_trials: usize) -> tuner::TuneResult {
    run_tune_with(g, strategy, max_trials, true)
}

fn run_tune_with(
    g: &Graph,
    strategy: Strategy,
    max_trials: usize,
    bf16: bool,
) -> tuner::TuneResult {
    let calib = data(64, 11);
    let eval_set = data(128, 99);
    let shapes = vec![("x".to_string(), vec![128, 8])];
    let mut bound = g.clone();
    octet::prepare::prepare(&mut bound, &shapes).unwrap();
    let reference = octet::engine::Engine::new(bound, None)
        .unwrap()
        .run(&eval_set)
        .unwrap()
        .remove(0)
        .1;
    let eval = tuner::builtin_eval(&eval_set, Metric::Cosine, None, Some(&reference));
    let opts = TuneOptions {
        strategy,
        criterion: Criterion {
            tolerance: Tolerance::Relative(0.01),
            higher_is_better: true,
        },
        max_trials,
        timeout: None,
        base: QuantConfig {
            quiet: true,
            ..QuantConfig::default()
        },
        threads: None,
        eval_shapes: shapes,
        verbose: true,
        bf16,
    };
    tuner::tune(g, &calib, &eval, opts).unwrap()
}

#[test]
fn outlier_model_is_rescued_and_sensitivity_needs_fewer_trials() {
    let g = outlier_model();
    let basic = run_tune(&g, Strategy::Basic, 100);
    let sens = run_tune(&g, Strategy::Sensitivity, 100);
    for (name, r) in [("basic", &basic), ("sensitivity", &sens)] {
        println!(
            "{name}: {}",
            r.summary(
                "cosine",
                &Criterion {
                    tolerance: Tolerance::Relative(0.01),
                    higher_is_better: true
                }
            )
        );
        for t in &r.trials {
            println!(
                "  trial {}: {} -> {:.4} {}",
                t.index,
                t.change,
                t.accuracy,
                if t.passed { "PASS" } else { "fail" }
            );
        }
        assert!(
            !r.trials[0].passed,
            "{name}: full int8 should fail the goal (cosine {})",
            r.trials[0].accuracy
        );
        assert!(r.met, "{name}: no passing mixed-precision model");
        let b = r.best_trial();
        assert!(
            b.fp32_nodes.len() < 3,
            "{name}: everything fell back: {:?}",
            b.fp32_nodes
        );
        // The log names the nodes that fell back.
        assert!(b.change.contains("gemm") || !b.fp32_nodes.is_empty());
    }
    println!(
        "trials: basic {}, sensitivity {}",
        basic.trials.len(),
        sens.trials.len()
    );
    assert!(sens.trials.len() <= basic.trials.len());
}

#[test]
fn saved_config_reproduces_the_tuned_model_bit_exactly() {
    let g = outlier_model();
    let r = run_tune(&g, Strategy::Sensitivity, 100);
    let cfg_json = r.best_trial().config.to_json();
    let cfg = QuantConfig::from_json(&cfg_json).unwrap();
    let (again, _) = octet::quantizer::quantize_static(&g, &data(64, 11), &cfg).unwrap();
    let feeds = data(16, 5);
    let run = |q: &Graph| {
        let mut b = q.clone();
        octet::prepare::prepare(&mut b, &[("x".into(), vec![16, 8])]).unwrap();
        octet::prepare::engine(b, None)
            .unwrap()
            .run(&feeds)
            .unwrap()
            .remove(0)
            .1
    };
    assert_eq!(run(&r.best_graph), run(&again));
}

#[test]
fn no_passing_config_keeps_the_best_effort() {
    let g = outlier_model();
    let r = run_tune(&g, Strategy::Basic, 1);
    assert!(!r.met);
    assert_eq!(r.trials.len(), 1);
    let s = r.summary(
        "cosine",
        &Criterion {
            tolerance: Tolerance::Relative(0.01),
            higher_is_better: true,
        },
    );
    assert!(s.contains("NO configuration met the accuracy goal"), "{s}");
}

#[test]
fn digits_default_config_passes_at_trial_one() {
    let g = {
        let mut m = octet::frontend::onnx::load(fixture("digits_cnn.onnx")).unwrap();
        octet::prepare::prepare(&mut m.graph, &[]).unwrap();
        m.graph
    };
    let test = npz("digits_test.npz");
    let labels = get(&test, "label").to_i64_vec();
    let feeds = vec![("input".to_string(), get(&test, "input"))];
    let eval = tuner::builtin_eval(&feeds, Metric::Top1, Some(&labels), None);
    let t0 = std::time::Instant::now();
    let r = tuner::tune(
        &g,
        &npz("digits_calib.npz"),
        &eval,
        TuneOptions {
            strategy: Strategy::Basic,
            criterion: Criterion {
                tolerance: Tolerance::Relative(0.01),
                higher_is_better: true,
            },
            max_trials: 100,
            timeout: None,
            base: QuantConfig {
                quiet: true,
                ..QuantConfig::default()
            },
            threads: None,
            eval_shapes: vec![("input".into(), vec![500, 1, 16, 16])],
            verbose: true,
            bf16: true,
        },
    )
    .unwrap();
    println!(
        "digits tuning took {:.2} s: {}",
        t0.elapsed().as_secs_f64(),
        r.summary(
            "top1",
            &Criterion {
                tolerance: Tolerance::Relative(0.01),
                higher_is_better: true
            }
        )
    );
    assert!(r.met && r.best == 0 && r.trials.len() == 1);
}

#[test]
fn tune_cli_writes_model_and_config_and_fails_plainly() {
    let dir = std::env::temp_dir().join(format!("octet-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("digits_tuned.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_octet"))
        .args([
            "tune",
            fixture("digits_cnn.onnx").to_str().unwrap(),
            "--calib",
            fixture("digits_calib.npz").to_str().unwrap(),
        ])
        .args([
            "--eval",
            fixture("digits_test.npz").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{so}{se}");
    assert!(so.contains("best int8 top1"), "{so}");
    assert!(out.exists() && dir.join("digits_tuned.json").exists());
    // The saved config through `octet quantize --config` gives the same model outputs.
    let q = dir.join("again.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_octet"))
        .args([
            "quantize",
            fixture("digits_cnn.onnx").to_str().unwrap(),
            "--calib",
            fixture("digits_calib.npz").to_str().unwrap(),
        ])
        .args([
            "--config",
            dir.join("digits_tuned.json").to_str().unwrap(),
            "-q",
            "-o",
            q.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = |m: &std::path::Path| {
        let mut mm = octet::prepare::load(m, &[("input".into(), vec![500, 1, 16, 16])]).unwrap();
        let _ = &mut mm;
        octet::prepare::engine(mm.graph, None)
            .unwrap()
            .run(&[("input".into(), get(&npz("digits_test.npz"), "input"))])
            .unwrap()
            .remove(0)
            .1
    };
    assert_eq!(run(&out), run(&q));
    // An impossible goal: plain message, non-zero exit, best effort still written.
    let out2 = dir.join("impossible.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_octet"))
        .args([
            "tune",
            fixture("digits_cnn.onnx").to_str().unwrap(),
            "--calib",
            fixture("digits_calib.npz").to_str().unwrap(),
        ])
        .args([
            "--eval",
            fixture("digits_test.npz").to_str().unwrap(),
            "--metric",
            "mse",
            "--tolerance",
            "0",
            "--max-trials",
            "2",
        ])
        .args(["-o", out2.to_str().unwrap(), "-q"])
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && se.contains("no configuration met the accuracy goal"),
        "{se}"
    );
    assert!(out2.exists());
}

#[test]
fn exhaustive_finds_the_smallest_fallback_and_conservative_reports_failure() {
    let g = outlier_model();
    let r = run_tune(&g, Strategy::Exhaustive, 100);
    assert!(r.met);
    let mut fb = r.best_trial().fp32_nodes.clone();
    fb.sort();
    assert_eq!(fb, vec!["gemm1".to_string(), "gemm2".to_string()]);
    // Conservative enables whole op types: all three nodes are Gemm, so no mixed model exists.
    let r = run_tune(&g, Strategy::Conservative, 100);
    assert!(!r.met);
}

#[test]
fn fallback_goes_to_bf16_before_fp32_where_the_cpu_has_it() {
    let g = outlier_model();
    let native = octet_kernels::Kernel::best().is_ok_and(|k| k.has_bf16_dot());
    let with = run_tune_with(&g, Strategy::Sensitivity, 100, true);
    let without = run_tune_with(&g, Strategy::Sensitivity, 100, false);
    assert!(with.met && without.met);
    let (b, n) = (with.best_trial(), without.best_trial());
    println!(
        "bf16 allowed (CPU has vdpbf16ps: {native}): fp32 {:?}, bf16 {:?}, cosine {:.5}; bf16 off: fp32 {:?}, cosine {:.5}",
        b.fp32_nodes, b.bf16_nodes, b.accuracy, n.fp32_nodes, n.accuracy
    );
    assert!(n.bf16_nodes.is_empty() && !n.fp32_nodes.is_empty());
    if native {
        assert!(b.fp32_nodes.is_empty(), "{:?}", b.fp32_nodes);
        assert!(!b.bf16_nodes.is_empty());
        // The tuned graph runs those nodes on the bf16 kernel.
        let mut bg = with.best_graph.clone();
        octet::prepare::prepare(&mut bg, &[("x".into(), vec![16, 8])]).unwrap();
        let e = octet::prepare::engine(bg, None).unwrap();
        assert_eq!(
            e.report().bf16_count(),
            b.bf16_nodes.len(),
            "{}",
            e.report()
        );
    } else {
        println!("this CPU lacks AVX512-BF16: nodes fall back to fp32 only");
        assert!(b.bf16_nodes.is_empty());
    }
}

#[test]
fn basic_tries_recipes_per_op_type_and_dynamic_matmuls() {
    let g = outlier_model();
    let r = run_tune(&g, Strategy::Basic, 100);
    let changes: Vec<&str> = r.trials.iter().map(|t| t.change.as_str()).collect();
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("recipe for Gemm: calibration")),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("recipe for Gemm: symmetric activations")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|c| c.contains("to dynamic int8")),
        "{changes:?}"
    );
    assert!(r.met);
}

#[test]
fn dynamic_tuning_tries_smoothquant_and_its_config_reproduces_the_model() {
    let data = npz("tiny_bert_inputs.npz");
    let shapes: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let g = octet::prepare::load(&fixture("tiny_bert.onnx"), &shapes)
        .unwrap()
        .graph;
    let mut bound = g.clone();
    octet::prepare::prepare(&mut bound, &shapes).unwrap();
    let reference = octet::engine::Engine::new(bound, None)
        .unwrap()
        .run(&data)
        .unwrap()
        .remove(0)
        .1;
    let eval = tuner::builtin_eval(&data, Metric::Cosine, None, Some(&reference));
    let r = tuner::tune(
        &g,
        &data,
        &eval,
        TuneOptions {
            strategy: Strategy::Basic,
            // An unreachable goal, so that the recipe trials run.
            criterion: Criterion {
                tolerance: Tolerance::Absolute(0.0),
                higher_is_better: true,
            },
            max_trials: 3,
            timeout: None,
            base: QuantConfig {
                approach: octet::quantizer::Approach::Dynamic,
                quiet: true,
                ..QuantConfig::default()
            },
            threads: None,
            eval_shapes: shapes.clone(),
            verbose: true,
            bf16: true,
        },
    )
    .unwrap();
    let changes: Vec<&str> = r.trials.iter().map(|t| t.change.as_str()).collect();
    assert_eq!(
        changes,
        vec![
            "default int8 config",
            "recipe: SmoothQuant alpha 0.5",
            "recipe: SmoothQuant alpha 0.6"
        ]
    );
    let best = r.best_trial();
    let cfg = QuantConfig::from_json(&best.config.to_json()).unwrap();
    assert_eq!(cfg.approach, octet::quantizer::Approach::Dynamic);
    let (again, _) = octet::quantizer::quantize_dynamic_with(&g, Some(&data), &cfg).unwrap();
    let run = |q: &Graph| {
        let mut b = q.clone();
        octet::prepare::prepare(&mut b, &shapes).unwrap();
        octet::prepare::engine(b, None)
            .unwrap()
            .run(&data)
            .unwrap()
            .remove(0)
            .1
    };
    assert_eq!(run(&r.best_graph), run(&again));
}
