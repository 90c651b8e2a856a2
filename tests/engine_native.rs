//! Native engine implementations of ops outside the GEMM kernels, against the reference
//! interpreter on the same graph.

use octet_ir::{DType, Graph, Op, Outlet, ReduceOp, Tensor, UnaryOp, ValueType};

fn reduce_graph(op: ReduceOp, axes: &[i64], keepdims: bool) -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 5, 3, 4]));
    let a = g.add_const("axes", Tensor::from_vec(&[axes.len()], axes.to_vec()));
    let r = g.add_node(
        "reduce",
        Op::Reduce {
            op,
            keepdims,
            noop_with_empty_axes: false,
        },
        vec!["y".into()],
    );
    g.connect(Outlet::new(x, 0), r, 0);
    g.connect(Outlet::new(a, 0), r, 1);
    g.outputs.push(("y".into(), Outlet::new(r, 0)));
    g.infer_types().unwrap();
    g
}

#[test]
fn reduce_sum_and_mean_over_one_axis_match_the_reference() {
    let x: Vec<f32> = (0..120)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37 + 1e-3 * i as f32)
        .collect();
    let feeds = vec![("x".to_string(), Tensor::from_vec(&[2, 5, 3, 4], x))];
    let mut native = 0;
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        for axes in [[0i64], [1], [2], [-1]] {
            for keepdims in [false, true] {
                let g = reduce_graph(op, &axes, keepdims);
                let e = octet::engine::Engine::new(g.clone(), Some(1)).unwrap();
                let st = e.steps();
                assert!(
                    st.iter()
                        .any(|s| s.exec == "native" && s.op.starts_with("Reduce")),
                    "{op:?} {axes:?}: {:?}",
                    st.iter().map(|s| (&s.op, s.exec)).collect::<Vec<_>>()
                );
                native += 1;
                let got = e.run(&feeds).unwrap().remove(0).1;
                let want = octet::reference::run_graph(&g, &feeds).unwrap().remove(0).1;
                assert_eq!(got.shape(), want.shape(), "{op:?} {axes:?} {keepdims}");
                assert_eq!(
                    got.view::<f32>().unwrap(),
                    want.view::<f32>().unwrap(),
                    "{op:?} {axes:?} {keepdims}"
                );
            }
        }
    }
    println!("{native} native reductions identical to the reference");
}

#[test]
fn broadcast_binary_ops_match_the_reference_bitwise() {
    use octet_ir::BinaryOp;
    let shapes: &[(&[usize], &[usize])] = &[
        (&[1, 12, 8, 16], &[1, 1, 1, 16]),
        (&[1, 12, 8, 16], &[1, 1, 8, 16]),
        (&[2, 3, 5], &[3, 1]),
        (&[2, 3, 5], &[]),
        (&[4, 1, 6], &[1, 5, 1]),
        (&[7], &[3, 7]),
        // Large enough to be split over 2 threads (rows of the output per task).
        (&[1, 128, 384], &[384]),
        (&[1, 12, 128, 128], &[1, 1, 128, 128]),
        (&[300, 129], &[300, 1]),
        (&[1, 128, 384], &[1, 128, 384]),
    ];
    let mut cases = 0;
    for (i, (sa, sb)) in shapes.iter().enumerate() {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let mut g = Graph::new();
            let a = g.add_input("a", ValueType::fixed(DType::F32, sa));
            let b = g.add_input("b", ValueType::fixed(DType::F32, sb));
            let n = g.add_node("op", Op::Binary(op), vec!["y".into()]);
            g.connect(Outlet::new(a, 0), n, 0);
            g.connect(Outlet::new(b, 0), n, 1);
            g.outputs.push(("y".into(), Outlet::new(n, 0)));
            g.infer_types().unwrap();
            let t = |s: &[usize], k: usize| {
                let len: usize = s.iter().product();
                Tensor::from_vec(
                    s,
                    (0..len)
                        .map(|j| ((j * 7 + k * 13 + i) % 23) as f32 * 0.731 - 7.9)
                        .collect::<Vec<f32>>(),
                )
            };
            let feeds = vec![("a".to_string(), t(sa, 1)), ("b".to_string(), t(sb, 2))];
            let len: usize = sa.iter().product::<usize>().max(sb.iter().product());
            let threads = if len >= 32 * 1024 { 2 } else { 1 };
            let e = octet::engine::Engine::new(g.clone(), Some(threads)).unwrap();
            assert!(e.steps().iter().any(|s| s.exec == "native"));
            let got = e.run(&feeds).unwrap().remove(0).1;
            let want = octet::reference::run_graph(&g, &feeds).unwrap().remove(0).1;
            assert_eq!(got.shape(), want.shape());
            let (gv, wv) = (got.view::<f32>().unwrap(), want.view::<f32>().unwrap());
            for (x, y) in gv.iter().zip(wv) {
                assert_eq!(x.to_bits(), y.to_bits(), "{op:?} {sa:?} {sb:?}");
            }
            cases += 1;
        }
    }
    println!("{cases} broadcast binary cases bit-identical to the reference");
}

#[test]
fn transposes_match_the_reference() {
    let mut cases = 0;
    // Small shapes, and an attention-sized one ([1, 128, 12, 32]: split over 2 threads).
    for (shape, threads) in [([2usize, 5, 3, 4], 1), ([1, 128, 12, 32], 2)] {
        for dtype in [DType::F32, DType::U8] {
            for perm in [
                vec![0usize, 2, 1, 3],
                vec![0, 2, 3, 1],
                vec![3, 2, 1, 0],
                vec![0, 1, 2, 3],
                vec![1, 0, 3, 2],
            ] {
                let mut g = Graph::new();
                let x = g.add_input("x", ValueType::fixed(dtype, &shape));
                let t = g.add_node("t", Op::Transpose { perm: perm.clone() }, vec!["y".into()]);
                g.connect(Outlet::new(x, 0), t, 0);
                g.outputs.push(("y".into(), Outlet::new(t, 0)));
                g.infer_types().unwrap();
                let len: usize = shape.iter().product();
                let data: Tensor = match dtype {
                    DType::U8 => Tensor::from_vec(
                        &shape,
                        (0..len as u32)
                            .map(|i| (i * 7 % 251) as u8)
                            .collect::<Vec<u8>>(),
                    ),
                    _ => Tensor::from_vec(
                        &shape,
                        (0..len).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<f32>>(),
                    ),
                };
                let feeds = vec![("x".to_string(), data)];
                let e = octet::engine::Engine::new(g.clone(), Some(threads)).unwrap();
                assert!(e
                    .steps()
                    .iter()
                    .any(|s| s.op == "Transpose" && s.exec == "native"));
                let got = e.run(&feeds).unwrap().remove(0).1;
                let want = octet::reference::run_graph(&g, &feeds).unwrap().remove(0).1;
                assert_eq!(got, want, "{dtype} {perm:?} {shape:?}");
                cases += 1;
            }
        }
    }
    println!("{cases} transposes identical to the reference");
}

#[test]
fn residual_adds_of_an_fp32_resnet_stay_channels_last() {
    // Same-shape f32 Add runs in NHWC, so a ResNet's blocks convert layouts only at the model's
    // edges, not around every residual connection.
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resnet8.onnx");
    let g = octet::prepare::load(
        std::path::Path::new(fx),
        &[("input".into(), vec![1, 3, 32, 32])],
    )
    .unwrap()
    .graph;
    let e = octet::engine::Engine::new(g.clone(), Some(1)).unwrap();
    let steps = e.steps();
    let adds: Vec<_> = steps.iter().filter(|s| s.op.contains("Add")).collect();
    assert!(!adds.is_empty());
    assert!(adds.iter().all(|s| s.nhwc), "{steps:?}");
    // ...and each residual Add, with its following Relu, is in the epilogue of the convolution
    // that produces its operand (no separate pass).
    assert!(
        adds.iter()
            .all(|s| s.op == "Conv+Add+Relu" && s.exec == "fp32"),
        "{steps:?}"
    );
    // Bit-identical to running the Add and Relu as separate steps: here, against the graph
    // where every convolution output is also a graph output, which keeps the Adds out of them.
    let mut unfused = g.clone();
    let convs: Vec<_> = unfused
        .g
        .node_indices()
        .filter(|&n| matches!(unfused.node(n).op, octet_ir::Op::Conv(_)))
        .collect();
    for (i, n) in convs.iter().enumerate() {
        unfused
            .outputs
            .push((format!("conv{i}"), octet_ir::Outlet::new(*n, 0)));
    }
    let e2 = octet::engine::Engine::new(unfused, Some(1)).unwrap();
    assert!(e2.steps().iter().all(|s| !s.op.contains("Conv+Add")));
    let x = Tensor::from_vec(
        &[1, 3, 32, 32],
        (0..3072)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect::<Vec<f32>>(),
    );
    let feeds = vec![("input".to_string(), x)];
    let a = e.run(&feeds).unwrap();
    let b = e2.run(&feeds).unwrap();
    assert_eq!(a[0].1, b[0].1, "fused residual adds change the output");
}

/// Model inputs are read in place from the caller's tensors. A step that takes its operand over
/// at its last use (an in-place Relu, a Reshape view) or a graph output that is the input itself
/// must get a copy: the caller's tensor is never modified, and repeated runs give the same outputs.
#[test]
fn inputs_read_in_place_are_never_modified_and_are_copied_when_taken_over() {
    let xs: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
    let feeds = vec![("x".to_string(), Tensor::from_vec(&[2, 6], xs.clone()))];
    for case in ["relu", "reshape", "identity", "all"] {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 6]));
        if case == "relu" || case == "all" {
            let relu = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["r".into()]);
            g.connect(Outlet::new(x, 0), relu, 0);
            g.outputs.push(("r".into(), Outlet::new(relu, 0)));
        }
        if case == "reshape" || case == "all" {
            let shape = g.add_const("shape", Tensor::from_vec(&[1], vec![12i64]));
            let reshape = g.add_node(
                "reshape",
                Op::Reshape { allowzero: false },
                vec!["f".into()],
            );
            g.connect(Outlet::new(x, 0), reshape, 0);
            g.connect(Outlet::new(shape, 0), reshape, 1);
            g.outputs.push(("f".into(), Outlet::new(reshape, 0)));
        }
        if case == "identity" || case == "all" {
            g.outputs.push(("x_out".into(), Outlet::new(x, 0)));
        }
        g.infer_types().unwrap();
        let e = octet::engine::Engine::new(g.clone(), Some(1)).unwrap();
        let want = octet::reference::run_graph(&g, &feeds).unwrap();
        for run in 0..3 {
            let got = e.run(&feeds).unwrap();
            assert_eq!(got.len(), want.len(), "{case}");
            for ((gn, gt), (wn, wt)) in got.iter().zip(&want) {
                assert_eq!(gn, wn);
                assert_eq!(gt.shape(), wt.shape(), "{case} run {run} {gn}");
                assert_eq!(
                    gt.view::<f32>().unwrap(),
                    wt.view::<f32>().unwrap(),
                    "{case} run {run} {gn}"
                );
            }
            assert_eq!(
                feeds[0].1.view::<f32>().unwrap(),
                &xs[..],
                "{case}: the caller's input changed"
            );
        }
    }
}

/// An input nothing reads is still checked: missing or of the wrong shape is an error.
#[test]
fn an_unused_input_is_still_checked() {
    let mut g = Graph::new();
    let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 3]));
    let _unused = g.add_input("unused", ValueType::fixed(DType::F32, &[4]));
    let relu = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["r".into()]);
    g.connect(Outlet::new(x, 0), relu, 0);
    g.outputs.push(("r".into(), Outlet::new(relu, 0)));
    g.infer_types().unwrap();
    let e = octet::engine::Engine::new(g, Some(1)).unwrap();
    let x_t = Tensor::from_vec(&[2, 3], vec![1f32, -2., 3., -4., 5., -6.]);
    let ok = vec![
        ("x".to_string(), x_t.clone()),
        ("unused".to_string(), Tensor::from_vec(&[4], vec![0f32; 4])),
    ];
    assert!(e.run(&ok).is_ok());
    let missing = vec![("x".to_string(), x_t.clone())];
    assert!(e.run(&missing).is_err(), "a missing input must be an error");
    let wrong = vec![
        ("x".to_string(), x_t),
        ("unused".to_string(), Tensor::from_vec(&[5], vec![0f32; 5])),
    ];
    assert!(
        e.run(&wrong).is_err(),
        "a wrongly shaped input must be an error"
    );
}

/// `DequantizeLinear -> [Relu] -> GlobalAveragePool` on an 8-bit NCHW input runs as one native
/// step (channel planes through the dequantize and ReLU kernels, then f64 sums) with the
/// reference's bits, u8 and i8, with and without the Relu, at 1 and 2 threads. (ResNet's NHWC
/// tail is covered by `engine_plan`'s resnet8.)
#[test]
fn dequantize_relu_avgpool_fused_matches_the_reference() {
    for (dtype, relu) in [
        (DType::U8, true),
        (DType::U8, false),
        (DType::I8, true),
        (DType::I8, false),
    ] {
        let shape = [2usize, 5, 7, 9];
        let n: usize = shape.iter().product();
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(dtype, &shape));
        let s = g.add_const("s", Tensor::scalar(0.0371f32));
        let (feed, zp) = if dtype == DType::U8 {
            let v: Vec<u8> = (0..n).map(|i| (i * 73 % 256) as u8).collect();
            (Tensor::from_vec(&shape, v), Tensor::scalar(131u8))
        } else {
            let v: Vec<i8> = (0..n).map(|i| (i * 73 % 256) as u8 as i8).collect();
            (Tensor::from_vec(&shape, v), Tensor::scalar(-9i8))
        };
        let z = g.add_const("z", zp);
        let dq = g.add_node("dq", Op::DequantizeLinear { axis: 1 }, vec!["d".into()]);
        g.connect(Outlet::new(x, 0), dq, 0);
        g.connect(Outlet::new(s, 0), dq, 1);
        g.connect(Outlet::new(z, 0), dq, 2);
        let mut last = dq;
        if relu {
            let r = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["r".into()]);
            g.connect(Outlet::new(last, 0), r, 0);
            last = r;
        }
        let gap = g.add_node("gap", Op::GlobalAveragePool, vec!["y".into()]);
        g.connect(Outlet::new(last, 0), gap, 0);
        g.outputs.push(("y".into(), Outlet::new(gap, 0)));
        g.infer_types().unwrap();
        let feeds = vec![("x".to_string(), feed)];
        let want = octet::reference::run_graph(&g, &feeds).unwrap().remove(0).1;
        for threads in [1, 2] {
            let e = octet::engine::Engine::new(g.clone(), Some(threads)).unwrap();
            let label = if relu {
                "DequantizeLinear+Relu+GlobalAveragePool"
            } else {
                "DequantizeLinear+GlobalAveragePool"
            };
            assert!(
                e.steps()
                    .iter()
                    .any(|s| s.exec == "native" && s.op == label),
                "{dtype} relu {relu}: {:?}",
                e.steps()
                    .iter()
                    .map(|s| (&s.op, s.exec))
                    .collect::<Vec<_>>()
            );
            let got = e.run(&feeds).unwrap().remove(0).1;
            assert_eq!(got.shape(), want.shape());
            let bits = |t: &Tensor| -> Vec<u32> {
                t.view::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(
                bits(&got),
                bits(&want),
                "{dtype} relu {relu} threads {threads}"
            );
        }
    }
}
