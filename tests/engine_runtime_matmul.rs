//! The int8 MatMul of two run-time operands (dynamic quantization of attention): the engine's
//! batched kernel gives exactly the reference interpreter's outputs, for broadcast batch shapes,
//! with the dequantization fused (`MatMul(a, b)` quantized dynamically) and unfused (raw i32
//! `MatMulInteger` as a graph output).

use octet::quantizer::{self, Approach, QuantConfig};
use octet_ir::{DType, Graph, Op, Outlet, Tensor, ValueType};

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
}

fn matmul_graph(sa: &[usize], sb: &[usize]) -> Graph {
    let mut g = Graph::new();
    let a = g.add_input("a", ValueType::fixed(DType::F32, sa));
    let b = g.add_input("b", ValueType::fixed(DType::F32, sb));
    let m = g.add_node("mm", Op::MatMul, vec!["y".into()]);
    g.connect(Outlet::new(a, 0), m, 0);
    g.connect(Outlet::new(b, 0), m, 1);
    g.outputs.push(("y".into(), Outlet::new(m, 0)));
    g.infer_types().unwrap();
    g
}

fn feeds(sa: &[usize], sb: &[usize], seed: u64) -> Vec<(String, Tensor)> {
    let mut s = seed;
    let mut t = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            shape,
            (0..n).map(|_| lcg(&mut s) * scale).collect::<Vec<f32>>(),
        )
    };
    vec![("a".into(), t(sa, 3.0)), ("b".into(), t(sb, 0.7))]
}

fn run_engine(
    g: &Graph,
    f: &[(String, Tensor)],
    threads: usize,
) -> (Vec<(String, Tensor)>, Vec<String>) {
    let e = octet::engine::Engine::new(g.clone(), Some(threads)).unwrap();
    let ops = e
        .steps()
        .iter()
        .map(|s| format!("{} {}", s.op, s.exec))
        .collect();
    (e.run(f).unwrap(), ops)
}

#[test]
fn runtime_matmul_matches_reference_bitwise() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[5, 7], &[7, 3]),
        (&[1, 4, 16, 32], &[1, 4, 32, 16]),
        (&[2, 3, 9, 17], &[3, 17, 65]),
        (&[2, 1, 4, 8], &[1, 3, 8, 5]),
        (&[3, 1, 40], &[40, 130]),
    ];
    let cfg = QuantConfig {
        approach: Approach::Dynamic,
        quiet: true,
        ..Default::default()
    };
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let g = matmul_graph(sa, sb);
        let (q, report) = quantizer::quantize_dynamic(&g, &cfg).unwrap();
        assert_eq!(report.nodes.len(), 1);
        assert_eq!(report.nodes[0].precision, quantizer::Precision::Int8);
        let f = feeds(sa, sb, 7 + i as u64);
        let want = octet::reference::run_graph(&q, &f).unwrap();
        let (one, ops) = run_engine(&q, &f, 1);
        let (two, _) = run_engine(&q, &f, 2);
        assert!(
            ops.iter().any(|o| o == "MatMulInteger+Cast+Mul+Mul int8"),
            "fused int8 step expected, plan: {ops:?}"
        );
        assert_eq!(want[0].1.shape(), one[0].1.shape());
        assert_eq!(
            want[0].1.view::<f32>().unwrap(),
            one[0].1.view::<f32>().unwrap(),
            "{sa:?} x {sb:?}"
        );
        assert_eq!(one, two, "threads 1 and 2 differ");
        // Unfused: the raw i32 MatMulInteger as an output of its own.
        let mut raw = q.clone();
        let mmi = raw
            .g
            .node_indices()
            .find(|&n| matches!(raw.node(n).op, Op::MatMulInteger))
            .unwrap();
        raw.outputs.push(("acc".into(), Outlet::new(mmi, 0)));
        let want = octet::reference::run_graph(&raw, &f).unwrap();
        let (got, ops) = run_engine(&raw, &f, 1);
        assert!(ops.iter().any(|o| o == "MatMulInteger int8"), "{ops:?}");
        assert_eq!(
            want[1].1.view::<i32>().unwrap(),
            got[1].1.view::<i32>().unwrap()
        );
        println!(
            "{sa:?} x {sb:?}: int8 batched MatMul bit-identical to the reference (fused and raw)"
        );
    }
}

/// `MatMul(q, k) + mask` (attention scores plus the attention mask): the Add is fused into the
/// int8 step (a mask row as the epilogue's f32 bias, a mask matrix added per batch while in
/// cache), bit-identical to the reference, for 1 and 2 threads; masks that broadcast over
/// more than the batches (a per-row column) stay a separate Add.
#[test]
fn attention_mask_add_fuses_into_the_runtime_matmul() {
    let (sa, sb) = ([1usize, 4, 16, 32], [1usize, 4, 32, 16]);
    let cases: &[(&[usize], bool)] = &[
        (&[1, 1, 1, 16], true),
        (&[1, 1, 16, 16], true),
        (&[16], true),
        (&[16, 16], true),
        (&[1, 1, 16, 1], false),
        (&[1, 4, 16, 16], false),
    ];
    for (i, &(ms, fused)) in cases.iter().enumerate() {
        let mut g = Graph::new();
        let a = g.add_input("a", ValueType::fixed(DType::F32, &sa));
        let b = g.add_input("b", ValueType::fixed(DType::F32, &sb));
        let mk = g.add_input("mask", ValueType::fixed(DType::F32, ms));
        let m = g.add_node("mm", Op::MatMul, vec!["s".into()]);
        g.connect(Outlet::new(a, 0), m, 0);
        g.connect(Outlet::new(b, 0), m, 1);
        let add = g.add_node("add", Op::Binary(octet_ir::BinaryOp::Add), vec!["y".into()]);
        // The mask as operand 0 in half the cases: either order fuses.
        let (s0, s1) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        g.connect(Outlet::new(m, 0), add, s0);
        g.connect(Outlet::new(mk, 0), add, s1);
        g.outputs.push(("y".into(), Outlet::new(add, 0)));
        g.infer_types().unwrap();
        let cfg = QuantConfig {
            approach: Approach::Dynamic,
            quiet: true,
            ..Default::default()
        };
        let (q, _) = quantizer::quantize_dynamic(&g, &cfg).unwrap();
        let mut f = feeds(&sa, &sb, 40 + i as u64);
        let n: usize = ms.iter().product();
        let mask: Vec<f32> = (0..n)
            .map(|j| if j % 3 == 0 { -1e4 } else { 0.25 * j as f32 })
            .collect();
        f.push(("mask".into(), Tensor::from_vec(ms, mask)));
        let want = octet::reference::run_graph(&q, &f).unwrap();
        let (one, ops) = run_engine(&q, &f, 1);
        let (two, _) = run_engine(&q, &f, 2);
        assert_eq!(
            ops.iter()
                .any(|o| o == "MatMulInteger+Cast+Mul+Mul+Add int8"),
            fused,
            "mask {ms:?}: plan {ops:?}"
        );
        assert_eq!(
            want[0].1.view::<f32>().unwrap(),
            one[0].1.view::<f32>().unwrap(),
            "mask {ms:?}"
        );
        assert_eq!(one, two, "threads 1 and 2 differ");
        println!("mask {ms:?}: fused {fused}, bit-identical to the reference");
    }
}
