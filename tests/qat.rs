//! Quantization-aware training: finite-difference gradient checks for every differentiable op,
//! and the digits_cnn experiment (QAT recovers most of what 4-bit per-tensor PTQ loses).

use octet::qat::{accuracy, softmax_ce, to_buf, Buf, FqMode, OptimKind, QatConfig, QatModel};
use octet_ir::{
    AutoPad, BinaryOp, ConvAttrs, ConvGeom, DType, Graph, Op, Outlet, PoolAttrs, Tensor, UnaryOp,
    ValueType,
};
use std::path::Path;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(shape, self.vec(n))
    }
}

/// A step of a test chain: the op and its constant operands for slots 1.. (None = absent).
type Step = (Op, Vec<Option<Tensor>>);

/// input -> step -> step -> ... -> output.
fn chain(in_shape: &[usize], steps: Vec<Step>) -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", ValueType::fixed(DType::F32, in_shape));
    let mut cur = Outlet::new(x, 0);
    for (i, (op, consts)) in steps.into_iter().enumerate() {
        let n = g.add_node(&format!("n{i}"), op, vec![format!("v{i}")]);
        g.connect(cur, n, 0);
        for (s, c) in consts.into_iter().enumerate() {
            if let Some(t) = c {
                let k = g.add_const(&format!("c{i}_{s}"), t);
                g.connect(Outlet::new(k, 0), n, s + 1);
            }
        }
        cur = Outlet::new(n, 0);
    }
    g.outputs.push(("y".into(), cur));
    g
}

fn geom(k: &[usize], strides: &[usize], pads: &[usize], dil: &[usize]) -> ConvGeom {
    ConvGeom {
        kernel_shape: k.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dil.to_vec(),
        auto_pad: AutoPad::NotSet,
    }
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let s: f64 =
        a.iter().map(|x| x * x).sum::<f64>().sqrt() + b.iter().map(|x| x * x).sum::<f64>().sqrt();
    d / s.max(1e-12)
}

/// Checks input and parameter gradients of the fp32 graph against central differences of the
/// softmax cross-entropy loss. Returns the worst relative error.
fn grad_check(name: &str, g: &Graph, in_shape: &[usize], seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let x = Buf::new(in_shape.to_vec(), rng.vec(in_shape.iter().product()));
    let cfg = QatConfig {
        batch: 1 << 20,
        ..QatConfig::default()
    };
    let mut m = QatModel::prepare(g, cfg).unwrap();
    let out = m.predict(&x, FqMode::FP32);
    let n = in_shape[0];
    let classes = out.data.len() / n;
    let labels: Vec<i64> = (0..n).map(|i| ((i * 7 + 3) % classes) as i64).collect();
    let (_, grads, dx) = m.loss_and_grads(x.clone(), &labels, FqMode::FP32);
    let eps = 1e-2f32;
    let loss_at = |m: &mut QatModel, x: &Buf| -> f64 {
        let y = m.predict(x, FqMode::FP32);
        softmax_ce(&y, &labels).0 as f64
    };
    // input gradient
    let mut num = vec![];
    for i in 0..x.data.len() {
        let mut xp = x.clone();
        xp.data[i] += eps;
        let lp = loss_at(&mut m, &xp);
        xp.data[i] -= 2.0 * eps;
        let lm = loss_at(&mut m, &xp);
        num.push((lp - lm) / (2.0 * eps as f64));
    }
    let ana: Vec<f64> = dx.data.iter().map(|&v| v as f64).collect();
    let mut worst = rel_err(&ana, &num);
    println!("{name}: input grad rel err {:.2e}", worst);
    #[allow(clippy::needless_range_loop)]
    for p in 0..m.params.len() {
        let mut num = vec![];
        for j in 0..m.params[p].data.len() {
            let orig = m.params[p].data[j];
            m.params[p].data[j] = orig + eps;
            let lp = loss_at(&mut m, &x);
            m.params[p].data[j] = orig - eps;
            let lm = loss_at(&mut m, &x);
            m.params[p].data[j] = orig;
            num.push((lp - lm) / (2.0 * eps as f64));
        }
        let ana: Vec<f64> = grads[p].iter().map(|&v| v as f64).collect();
        let e = rel_err(&ana, &num);
        println!("{name}: param {} grad rel err {:.2e}", m.params[p].name, e);
        worst = worst.max(e);
    }
    assert!(
        worst < 1e-2,
        "{name}: gradient check failed, relative error {worst:.3e}"
    );
    worst
}

#[test]
fn grad_conv_pads_stride_bias() {
    let mut r = Rng(11);
    let op = Op::Conv(ConvAttrs {
        geom: geom(&[], &[2, 2], &[1, 1, 1, 1], &[]),
        group: 1,
    });
    let g = chain(
        &[2, 3, 6, 6],
        vec![(
            op,
            vec![Some(r.tensor(&[4, 3, 3, 3])), Some(r.tensor(&[4]))],
        )],
    );
    grad_check("conv", &g, &[2, 3, 6, 6], 1);
}

#[test]
fn grad_conv_groups_dilation() {
    let mut r = Rng(12);
    let dw = Op::Conv(ConvAttrs {
        geom: geom(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        group: 4,
    });
    let grouped = Op::Conv(ConvAttrs {
        geom: geom(&[], &[1, 1], &[2, 2, 2, 2], &[2, 2]),
        group: 2,
    });
    let g = chain(
        &[2, 4, 5, 5],
        vec![
            (
                dw,
                vec![Some(r.tensor(&[4, 1, 3, 3])), Some(r.tensor(&[4]))],
            ),
            (grouped, vec![Some(r.tensor(&[6, 2, 3, 3])), None]),
        ],
    );
    grad_check("conv groups", &g, &[2, 4, 5, 5], 2);
}

#[test]
fn grad_gemm_matmul() {
    let mut r = Rng(13);
    let gemm_t = Op::Gemm {
        alpha: 0.7,
        beta: 1.3,
        trans_a: false,
        trans_b: true,
    };
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
    };
    let g = chain(
        &[3, 5],
        vec![
            (gemm_t, vec![Some(r.tensor(&[6, 5])), Some(r.tensor(&[6]))]),
            (gemm, vec![Some(r.tensor(&[6, 4])), Some(r.tensor(&[1, 4]))]),
            (Op::MatMul, vec![Some(r.tensor(&[4, 7]))]),
        ],
    );
    grad_check("gemm/matmul", &g, &[3, 5], 3);
}

#[test]
fn grad_add_mul_relu_clip() {
    // y = relu(x) * c1 + clip(x, -0.3, 0.4) * x (two-operand Add/Mul, broadcast constants).
    let mut r = Rng(14);
    let mut g = Graph::new();
    let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 3, 4]));
    let xo = Outlet::new(x, 0);
    let relu = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["r".into()]);
    g.connect(xo, relu, 0);
    let c1 = g.add_const("c1", r.tensor(&[3, 1]));
    let mul1 = g.add_node("mul1", Op::Binary(BinaryOp::Mul), vec!["m1".into()]);
    g.connect(Outlet::new(relu, 0), mul1, 0);
    g.connect(Outlet::new(c1, 0), mul1, 1);
    let lo = g.add_const("lo", Tensor::scalar(-0.3f32));
    let hi = g.add_const("hi", Tensor::scalar(0.4f32));
    let clip = g.add_node("clip", Op::Clip, vec!["c".into()]);
    g.connect(xo, clip, 0);
    g.connect(Outlet::new(lo, 0), clip, 1);
    g.connect(Outlet::new(hi, 0), clip, 2);
    let mul2 = g.add_node("mul2", Op::Binary(BinaryOp::Mul), vec!["m2".into()]);
    g.connect(Outlet::new(clip, 0), mul2, 0);
    g.connect(xo, mul2, 1);
    let add = g.add_node("add", Op::Binary(BinaryOp::Add), vec!["a".into()]);
    g.connect(Outlet::new(mul1, 0), add, 0);
    g.connect(Outlet::new(mul2, 0), add, 1);
    let c2 = g.add_const("c2", r.tensor(&[4]));
    let add2 = g.add_node("add2", Op::Binary(BinaryOp::Add), vec!["y".into()]);
    g.connect(Outlet::new(add, 0), add2, 0);
    g.connect(Outlet::new(c2, 0), add2, 1);
    g.outputs.push(("y".into(), Outlet::new(add2, 0)));
    grad_check("add/mul/relu/clip", &g, &[2, 3, 4], 4);
}

#[test]
fn grad_pools_flatten_reshape() {
    let mut r = Rng(15);
    let pool = |k: usize, s: usize, p: usize, ceil: bool, inc: bool| PoolAttrs {
        geom: geom(&[k, k], &[s, s], &[p, p, p, p], &[1, 1]),
        ceil_mode: ceil,
        count_include_pad: inc,
    };
    let conv = Op::Conv(ConvAttrs {
        geom: geom(&[], &[1, 1], &[0, 0, 0, 0], &[]),
        group: 1,
    });
    let g = chain(
        &[2, 2, 7, 7],
        vec![
            (Op::MaxPool(pool(2, 2, 0, true, false)), vec![]),
            (Op::AveragePool(pool(3, 1, 1, false, false)), vec![]),
            (Op::AveragePool(pool(2, 1, 1, false, true)), vec![]),
            (conv, vec![Some(r.tensor(&[3, 2, 1, 1])), None]),
            (Op::GlobalAveragePool, vec![]),
            (Op::Flatten { axis: 1 }, vec![]),
            (
                Op::Reshape { allowzero: false },
                vec![Some(Tensor::from_vec(&[2], vec![0i64, -1]))],
            ),
        ],
    );
    grad_check("pools/flatten/reshape", &g, &[2, 2, 7, 7], 5);
}

#[test]
fn grad_softmax_ce() {
    let mut r = Rng(16);
    let logits = Buf::new(vec![4, 5], r.vec(20).iter().map(|v| v * 3.0).collect());
    let labels = [0i64, 3, 4, 1];
    let (_, g) = softmax_ce(&logits, &labels);
    let mut num = vec![];
    let eps = 1e-3f32;
    for i in 0..20 {
        let mut p = logits.clone();
        p.data[i] += eps;
        let lp = softmax_ce(&p, &labels).0 as f64;
        p.data[i] -= 2.0 * eps;
        let lm = softmax_ce(&p, &labels).0 as f64;
        num.push((lp - lm) / (2.0 * eps as f64));
    }
    let ana: Vec<f64> = g.data.iter().map(|&v| v as f64).collect();
    let e = rel_err(&ana, &num);
    println!("softmax-ce: rel err {e:.2e}");
    assert!(e < 1e-2);
}

#[test]
fn fake_quant_ste_mask_and_grid() {
    use octet::qat::FqParams;
    let p = FqParams::symmetric(0.7, 4); // [-7, 7] * 0.1
    assert_eq!(p.qmax, 7.0);
    let (y, m) = p.apply(0.25);
    assert!((y - 0.2).abs() < 1e-6 && m, "round half to even: {y}");
    let (y, m) = p.apply(0.9);
    assert!((y - 0.7).abs() < 1e-6 && !m, "clipped: {y} {m}");
    let a = FqParams::asymmetric(-1.0, 3.0, 8);
    assert_eq!(a.qmin, 0.0);
    assert_eq!(a.qmax, 255.0);
    let (y, m) = a.apply(-2.0);
    assert!((y - (-a.zero_point * a.scale)).abs() < 1e-6 && !m);
}

fn npz(name: &str) -> (Buf, Vec<i64>) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let arrays = octet::io::npz::read_npz(&p).unwrap();
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, t)| t.clone());
    let x = to_buf(&get("input").unwrap()).unwrap();
    let l = get("label").map(|t| t.to_i64_vec()).unwrap_or_default();
    (x, l)
}

#[test]
fn digits_cnn_qat_recovers_low_bit_ptq() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/digits_cnn.onnx");
    let model = octet::prepare::load(&path, &[("input".into(), vec![1, 1, 16, 16])]).unwrap();
    let (train_x, train_y) = npz("digits_train.npz");
    let (test_x, test_y) = npz("digits_test.npz");
    let (calib_x, _) = npz("digits_calib.npz");
    let cfg = QatConfig {
        weight_bits: 4,
        per_channel: false,
        reduce_range: false,
        quantize_activations: true,
        lr: 1e-3,
        epochs: 2,
        batch: 32,
        optimizer: OptimKind::adam(),
        ..QatConfig::default()
    };
    let t0 = std::time::Instant::now();
    let mut m = QatModel::prepare(&model.graph, cfg).unwrap();
    let fp32 = m.evaluate(&test_x, &test_y, false);
    m.calibrate(&calib_x);
    let ptq = m.evaluate(&test_x, &test_y, true);
    let hist = m.fit(
        (&train_x, &train_y),
        Some((&test_x, &test_y)),
        &mut octet::qat::NoHooks,
    );
    let qat = m.evaluate(&test_x, &test_y, true);
    println!("digits_cnn 4-bit per-tensor weights, u8 activations: fp32 {:.1}%  PTQ {:.1}%  QAT {:.1}%  ({:.1}s)", fp32 * 100.0, ptq * 100.0, qat * 100.0, t0.elapsed().as_secs_f32());
    for s in &hist {
        println!(
            "  epoch {}: loss {:.4} eval {:?}",
            s.epoch, s.loss, s.eval_accuracy
        );
    }
    assert!(fp32 > 0.97, "fp32 accuracy {fp32}");
    assert!(
        fp32 - ptq > 0.02,
        "PTQ should clearly lose accuracy here: fp32 {fp32} ptq {ptq}"
    );
    assert!(
        qat - ptq >= 0.5 * (fp32 - ptq),
        "QAT must close half the gap: fp32 {fp32} ptq {ptq} qat {qat}"
    );

    // convert(): the baked fake-quant weights give the same fp32 logits as the fake-quant
    // weight path of the tape.
    let g = m.convert(true);
    let x0 = Tensor::from_vec(&[1, 1, 16, 16], test_x.data[..256].to_vec());
    let out = octet::reference::run_graph(&g, &[("input".into(), x0)]).unwrap();
    let ref_logits = to_buf(&out[0].1).unwrap();
    let mode = FqMode {
        weights: true,
        activations: false,
        observe: None,
    };
    let tape_logits = m.predict(
        &Buf::new(vec![1, 1, 16, 16], test_x.data[..256].to_vec()),
        mode,
    );
    for (a, b) in ref_logits.data.iter().zip(&tape_logits.data) {
        assert!(
            (a - b).abs() < 1e-3 * (1.0 + a.abs()),
            "convert mismatch {a} vs {b}"
        );
    }
    let _ = accuracy;
}

fn tiny_mlp(seed: u64) -> Graph {
    let mut r = Rng(seed);
    let gemm = |tb| Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: tb,
    };
    chain(
        &[16, 6],
        vec![
            (
                gemm(true),
                vec![Some(r.tensor(&[8, 6])), Some(r.tensor(&[8]))],
            ),
            (Op::Unary(UnaryOp::Relu), vec![]),
            (
                gemm(false),
                vec![Some(r.tensor(&[8, 3])), Some(r.tensor(&[3]))],
            ),
        ],
    )
}

#[test]
fn optimizers_reduce_loss_with_fake_quant() {
    let mut r = Rng(21);
    let x = Buf::new(vec![16, 6], r.vec(96));
    let y: Vec<i64> = (0..16).map(|i| (i % 3) as i64).collect();
    for opt in [OptimKind::Sgd { momentum: 0.9 }, OptimKind::adam()] {
        let cfg = QatConfig {
            weight_bits: 8,
            lr: if matches!(opt, OptimKind::Sgd { .. }) {
                0.05
            } else {
                0.01
            },
            optimizer: opt,
            batch: 16,
            ..QatConfig::default()
        };
        let mut m = QatModel::prepare(&tiny_mlp(22), cfg).unwrap();
        m.calibrate(&x);
        let first = m.train_step(x.clone(), &y);
        let mut last = first;
        for _ in 0..200 {
            last = m.train_step(x.clone(), &y);
        }
        println!("{opt:?}: loss {first:.4} -> {last:.4}");
        assert!(last < 0.5 * first, "{opt:?}: loss {first} -> {last}");
    }
}

#[test]
fn ste_zeroes_gradient_of_clipped_activations() {
    let mut r = Rng(23);
    let x = Buf::new(vec![16, 6], r.vec(96));
    let y: Vec<i64> = (0..16).map(|i| (i % 3) as i64).collect();
    let mut m = QatModel::prepare(&tiny_mlp(24), QatConfig::default()).unwrap();
    m.calibrate(&x);
    // Narrow the first observer to [-0.5, 0.5]: inputs outside are clipped by the fake quant.
    m.tape.observers[0].min = -0.5;
    m.tape.observers[0].max = 0.5;
    let mode = m.cfg.eval_mode();
    let (_, _, dx) = m.loss_and_grads(x.clone(), &y, mode);
    let (mut clipped, mut passed) = (0, 0);
    for (v, g) in x.data.iter().zip(&dx.data) {
        if *v < -0.51 || *v > 0.51 {
            assert_eq!(*g, 0.0, "clipped input {v} must get no gradient");
            clipped += 1;
        } else if *v > -0.49 && *v < 0.49 {
            passed += (*g != 0.0) as usize;
        }
    }
    assert!(
        clipped > 10 && passed > 10,
        "clipped {clipped} passed {passed}"
    );
}

#[test]
fn grad_gemm_trans_a() {
    let mut r = Rng(17);
    let op = Op::Gemm {
        alpha: 1.0,
        beta: 0.5,
        trans_a: true,
        trans_b: false,
    };
    let g = chain(
        &[5, 3],
        vec![(op, vec![Some(r.tensor(&[5, 4])), Some(r.tensor(&[4]))])],
    );
    grad_check("gemm trans_a", &g, &[5, 3], 6);
}

/// With fake-quantized weights (max-abs grid: nothing clipped) the STE weight gradient is the
/// fp32 gradient evaluated at the fake-quantized weights.
#[test]
fn ste_weight_gradient_is_gradient_at_quantized_weights() {
    let mut r = Rng(25);
    let x = Buf::new(vec![16, 6], r.vec(96));
    let y: Vec<i64> = (0..16).map(|i| (i % 3) as i64).collect();
    let cfg = QatConfig {
        weight_bits: 4,
        per_channel: true,
        quantize_activations: false,
        ..QatConfig::default()
    };
    let mut m = QatModel::prepare(&tiny_mlp(26), cfg.clone()).unwrap();
    let mode = FqMode {
        weights: true,
        activations: false,
        observe: None,
    };
    let (lq, gq, _) = m.loss_and_grads(x.clone(), &y, mode);
    let baked = m.convert(true);
    let mut m2 = QatModel::prepare(&baked, cfg).unwrap();
    let (l2, g2, _) = m2.loss_and_grads(x, &y, FqMode::FP32);
    assert!((lq - l2).abs() < 1e-5);
    for (a, b) in gq.iter().zip(&g2) {
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() < 1e-5, "{u} vs {v}");
        }
    }
}
