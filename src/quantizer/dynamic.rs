//! Dynamic quantization (BERT-class models): every MatMul/Gemm with a constant weight gets int8
//! symmetric weights offline (per output column when per-channel) and quantizes its activation
//! at run time, in the standard ONNX form (as onnxruntime's `quantize_dynamic` writes it):
//!
//! ```text
//! x_q, x_scale, x_zp = DynamicQuantizeLinear(x)        # one per activation tensor, shared
//! acc = MatMulInteger(x_q, <w>_quantized [K,N] i8, x_zp, <w>_zero_point)
//! y   = Mul(Cast<f32>(acc), Mul(x_scale, <w>_scale))     # <w>_scale: [N] (per column) or scalar
//! y   = Add(y, beta * C)                                 # Gemm with C only
//! ```
//! A MatMul of two run-time tensors (attention) gets both operands quantized at run time (see
//! [`quantize_runtime_matmul`]).
//! A MatMul followed by an Add of a bias keeps that Add after the Mul. Gemm's transB is applied to
//! the stored weight (always [K,N]); alpha is folded into the weight scale. The original output
//! name moves to the last node, so consumers and graph outputs keep their names.

use super::{NodeReport, Precision, QuantizeError};
use crate::passes::fold_batchnorm::disconnect;
use crate::quant::{channel_min_max, quantize_slice, QScheme};
use octet_ir::{BinaryOp, DType, Graph, NodeIndex, Op, Outlet, Tensor};
use std::collections::{BTreeMap, HashMap};

fn transpose2(t: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut o = vec![0f32; t.len()];
    for i in 0..r {
        for j in 0..c {
            o[j * r + i] = t[i * c + j];
        }
    }
    o
}

/// A run-time quantized activation: its u8 values, scale and zero point.
#[derive(Clone, Copy)]
struct Quantized {
    q: Outlet,
    scale: Outlet,
    zp: Outlet,
}

/// Data-movement ops (per-tensor quantization commutes with them).
fn is_movement(op: &Op) -> bool {
    matches!(
        op,
        Op::Transpose { .. }
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze
    )
}

/// The run-time quantization of `x`, shared by every quantized consumer of `x`. When `x` is the
/// end of a chain of data-movement ops (Transpose/Reshape/...) used only here, the source of the
/// chain is quantized and the chain is replayed on the u8 values: the same bytes (per-tensor
/// parameters do not depend on the order of the elements), a quarter of the data moved.
fn dynamic_quantize(g: &mut Graph, dql: &mut HashMap<Outlet, Quantized>, x: Outlet) -> Quantized {
    if let Some(&d) = dql.get(&x) {
        return d;
    }
    let mut chain = vec![];
    let mut src = x;
    while is_movement(&g.node(src.node).op)
        && src.output == 0
        && g.consumers(src).len() == 1
        && !g.is_graph_output(src)
    {
        let Some(prev) = g.operand(src.node, 0) else {
            break;
        };
        if !g.ty(prev).is_some_and(|t| t.dtype == DType::F32) {
            break;
        }
        chain.push(src.node);
        src = prev;
    }
    chain.reverse();
    let xn = g.value(src).name.clone();
    let d = g.add_node(
        &format!("{xn}_QuantizeLinear"),
        Op::DynamicQuantizeLinear,
        vec![
            format!("{xn}_quantized"),
            format!("{xn}_scale"),
            format!("{xn}_zero_point"),
        ],
    );
    g.connect(src, d, 0);
    let mut q = Outlet::new(d, 0);
    for n in chain {
        let node = g.node(n).clone();
        let out = format!("{}_quantized", node.outputs[0].name);
        let m = g.add_node(&format!("{}_quantized", node.name), node.op, vec![out]);
        g.connect(q, m, 0);
        for (slot, o) in g.operands(n).into_iter().enumerate().skip(1) {
            if let Some(o) = o {
                g.connect(o, m, slot);
            }
        }
        q = Outlet::new(m, 0);
    }
    let r = Quantized {
        q,
        scale: Outlet::new(d, 1),
        zp: Outlet::new(d, 2),
    };
    dql.insert(x, r);
    r
}

/// Remove the float data-movement chain ending at `x` once nothing reads it, and forget its
/// quantization (the removed node's index may be reused).
fn prune_movement(g: &mut Graph, dql: &mut HashMap<Outlet, Quantized>, x: Outlet) {
    if is_movement(&g.node(x.node).op) && g.consumers(x).is_empty() && !g.is_graph_output(x) {
        dql.remove(&x);
        prune_chain(g, x);
    }
}

fn prune_chain(g: &mut Graph, mut x: Outlet) {
    while is_movement(&g.node(x.node).op) && g.consumers(x).is_empty() && !g.is_graph_output(x) {
        let prev = g.operand(x.node, 0);
        let consts: Vec<Outlet> = g.operands(x.node).into_iter().flatten().skip(1).collect();
        g.remove_node(x.node);
        for c in consts {
            if matches!(g.node(c.node).op, Op::Const(_)) && g.consumers(c).is_empty() {
                g.remove_node(c.node);
            }
        }
        match prev {
            Some(p) => x = p,
            None => break,
        }
    }
}

/// A MatMul of two run-time f32 tensors (attention's `Q K^T` and `P V`), as onnxruntime's
/// `quantize_dynamic` writes it: both operands through DynamicQuantizeLinear (u8, per tensor),
///
/// ```text
/// acc = MatMulInteger(a_q, b_q, a_zp, b_zp)          # batched, broadcast like MatMul
/// y   = Mul(Cast<f32>(acc), Mul(a_scale, b_scale))
/// ```
/// Err = why the node stays fp32.
fn quantize_runtime_matmul(
    g: &mut Graph,
    n: NodeIndex,
    dql: &mut HashMap<Outlet, Quantized>,
) -> Result<(), String> {
    let (Some(a), Some(b)) = (g.operand(n, 0), g.operand(n, 1)) else {
        return Err("unsupported pattern: MatMul without two operands".into());
    };
    for o in [a, b] {
        match g.ty(o) {
            Some(t) if t.dtype == DType::F32 && t.shape.rank() >= 2 => {}
            Some(t) if t.dtype == DType::F32 => {
                return Err(format!(
                    "unsupported pattern: operand of rank {} (int8 MatMul needs rank >= 2)",
                    t.shape.rank()
                ))
            }
            _ => return Err("unsupported pattern: operand is not an f32 tensor".into()),
        }
    }
    let name = g.node(n).name.clone();
    let out = Outlet::new(n, 0);
    let out_name = g.value(out).name.clone();
    let da = dynamic_quantize(g, dql, a);
    let db = dynamic_quantize(g, dql, b);
    let mul = integer_matmul(
        g,
        &name,
        &out_name,
        [da.q, db.q, da.zp, db.zp],
        [da.scale, db.scale],
        out_name.clone(),
    );
    g.replace_uses(out, Outlet::new(mul, 0));
    for s in 0..2 {
        disconnect(g, n, s);
    }
    g.remove_node(n);
    prune_movement(g, dql, a);
    if b != a {
        prune_movement(g, dql, b);
    }
    Ok(())
}

/// `Mul(Cast<f32>(MatMulInteger(a, b, a_zp, b_zp)), Mul(a_scale, b_scale))` for node `name`
/// (output `out_name`), the scale product added first so that a topological order computes it
/// before the MatMul (the engine then fuses the dequantization into the kernel). Returns the
/// final Mul, whose output is named `mul_out`.
fn integer_matmul(
    g: &mut Graph,
    name: &str,
    out_name: &str,
    operands: [Outlet; 4],
    [sa, sb]: [Outlet; 2],
    mul_out: String,
) -> NodeIndex {
    let smul = g.add_node(
        &format!("{name}_scales_mul"),
        Op::Binary(BinaryOp::Mul),
        vec![format!("{out_name}_scales_mul_output")],
    );
    g.connect(sa, smul, 0);
    g.connect(sb, smul, 1);
    let mmi = g.add_node(
        &format!("{name}_quant"),
        Op::MatMulInteger,
        vec![format!("{out_name}_output_quantized")],
    );
    for (slot, o) in operands.into_iter().enumerate() {
        g.connect(o, mmi, slot);
    }
    let cast = g.add_node(
        &format!("{name}_output_quantized_cast"),
        Op::Cast { to: DType::F32 },
        vec![format!("{out_name}_output_quantized_cast_output")],
    );
    g.connect(Outlet::new(mmi, 0), cast, 0);
    let mul = g.add_node(
        &format!("{name}_output_scale_mul"),
        Op::Binary(BinaryOp::Mul),
        vec![mul_out],
    );
    g.connect(Outlet::new(cast, 0), mul, 0);
    g.connect(Outlet::new(smul, 0), mul, 1);
    mul
}

/// Rewrite `g` in place; returns one report line per MatMul/Gemm/Conv (only those in `only`, if
/// given: the static quantizer's per-node dynamic MatMuls).
pub fn quantize_dynamic_graph(
    g: &mut Graph,
    weight: QScheme,
    per_channel: bool,
    fp32: &BTreeMap<String, String>,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<Vec<NodeReport>, QuantizeError> {
    let order = g
        .topo_order()
        .map_err(|node| octet_ir::IrError::Cycle { node })?;
    let mut report = vec![];
    let mut dql: HashMap<Outlet, Quantized> = HashMap::new();
    for n in order {
        let node = g.node(n);
        if !node.op.is_quantizable_compute() || only.is_some_and(|o| !o.contains(&node.name)) {
            continue;
        }
        let (name, opn) = (node.name.clone(), node.op.name().to_string());
        let mut line = |p: Precision, r: &str| {
            report.push(NodeReport {
                name: name.clone(),
                op_type: opn.clone(),
                precision: p,
                reason: r.to_string(),
            })
        };
        if let Some(r) = fp32.get(&name) {
            line(Precision::Fp32, r);
            continue;
        }
        let (alpha, beta, trans_b) = match node.op {
            Op::MatMul => (1.0f32, 1.0f32, false),
            Op::Gemm {
                alpha,
                beta,
                trans_a: false,
                trans_b,
            } => (alpha, beta, trans_b),
            Op::Gemm { .. } => {
                line(Precision::Fp32, "unsupported pattern: Gemm with transA");
                continue;
            }
            _ => {
                line(
                    Precision::Fp32,
                    "dynamic quantization covers MatMul/Gemm only",
                );
                continue;
            }
        };
        let Some(w) = g.const_operand(n, 1).filter(|w| w.dtype() == DType::F32) else {
            if matches!(node.op, Op::MatMul) {
                match quantize_runtime_matmul(g, n, &mut dql) {
                    Ok(()) => line(
                        Precision::Int8,
                        "default (both operands quantized at run time)",
                    ),
                    Err(why) => line(Precision::Fp32, &why),
                }
            } else {
                line(
                    Precision::Fp32,
                    "unsupported pattern: weight is not a constant f32",
                );
            }
            continue;
        };
        if w.rank() != 2 {
            line(
                Precision::Fp32,
                &format!("unsupported pattern: weight of rank {}", w.rank()),
            );
            continue;
        }
        let Some(x) = g
            .operand(n, 0)
            .filter(|x| g.ty(*x).is_some_and(|t| t.dtype == DType::F32))
        else {
            line(
                Precision::Fp32,
                "unsupported pattern: input is not an f32 tensor",
            );
            continue;
        };
        let wo = g.operand(n, 1).expect("const");
        let wname = g.value(wo).name.clone();
        let (r, c) = (w.shape()[0], w.shape()[1]);
        let data = w.view::<f32>().expect("f32");
        let (wkn, k, ncol) = if trans_b {
            (transpose2(data, r, c), c, r)
        } else {
            (data.to_vec(), r, c)
        };
        let shape = [k, ncol];
        let (scheme, (mins, maxs)) = if per_channel {
            (weight.with_axis(1), channel_min_max(&wkn, &shape, 1)?)
        } else {
            let mut s = weight;
            s.per_channel = None;
            let lo = wkn.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = wkn.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (s, (vec![lo], vec![hi]))
        };
        let params = scheme.qparams(&mins, &maxs)?;
        let q = quantize_slice(&scheme, &wkn, &shape, &params)?;
        let qt = Tensor::from_vec(&shape, q.iter().map(|&v| v as i8).collect::<Vec<i8>>());
        let scales: Vec<f32> = params.scale.iter().map(|s| s * alpha).collect();
        let zps: Vec<i8> = params.zero_point.iter().map(|&z| z as i8).collect();
        let (st, zt) = if per_channel {
            (
                Tensor::from_vec(&[ncol], scales),
                Tensor::from_vec(&[ncol], zps),
            )
        } else {
            (Tensor::scalar(scales[0]), Tensor::scalar(zps[0]))
        };
        let bias = g.operand(n, 2);
        let bias_t = g.const_operand(n, 2).cloned();
        let out = Outlet::new(n, 0);
        let out_name = g.value(out).name.clone();

        // run-time activation quantization, shared per tensor
        let d = dynamic_quantize(g, &mut dql, x);
        let wq = g.add_const(&format!("{wname}_quantized"), qt);
        if let Some(t) = g.node_mut(wq).outputs[0].ty.as_mut() {
            t.quant = Some(params.clone());
        }
        let ws = g.add_const(&format!("{wname}_scale"), st);
        let wz = g.add_const(&format!("{wname}_zero_point"), zt);
        let has_bias = bias.is_some();
        let mul = integer_matmul(
            g,
            &name,
            &out_name,
            [d.q, Outlet::new(wq, 0), d.zp, Outlet::new(wz, 0)],
            [d.scale, Outlet::new(ws, 0)],
            if has_bias {
                format!("{out_name}_output_scale_mul_output")
            } else {
                out_name.clone()
            },
        );
        let mut last = Outlet::new(mul, 0);
        if let Some(b) = bias {
            let b = match (&bias_t, beta) {
                (_, 1.0) => b,
                (Some(t), beta) if t.dtype() == DType::F32 => {
                    let v: Vec<f32> = t
                        .view::<f32>()
                        .expect("f32")
                        .iter()
                        .map(|x| x * beta)
                        .collect();
                    let c = g.add_const(
                        &format!("{}_beta", g.value(b).name),
                        Tensor::from_vec(t.shape(), v),
                    );
                    Outlet::new(c, 0)
                }
                _ => {
                    let bc = g.add_const(&format!("{name}_beta"), Tensor::scalar(beta));
                    let m = g.add_node(
                        &format!("{name}_bias_beta"),
                        Op::Binary(BinaryOp::Mul),
                        vec![format!("{out_name}_bias_beta")],
                    );
                    g.connect(b, m, 0);
                    g.connect(Outlet::new(bc, 0), m, 1);
                    Outlet::new(m, 0)
                }
            };
            let add = g.add_node(
                &format!("{name}_bias_add"),
                Op::Binary(BinaryOp::Add),
                vec![out_name.clone()],
            );
            g.connect(last, add, 0);
            g.connect(b, add, 1);
            last = Outlet::new(add, 0);
        }
        g.replace_uses(out, last);
        for s in 0..3 {
            disconnect(g, n, s);
        }
        g.remove_node(n);
        prune_movement(g, &mut dql, x);
        for o in [Some(wo), bias].into_iter().flatten() {
            if g.g.contains_node(o.node)
                && matches!(g.node(o.node).op, Op::Const(_))
                && g.consumers(o).is_empty()
            {
                g.remove_node(o.node);
            }
        }
        line(Precision::Int8, "default");
    }
    g.infer_types()?;
    Ok(report)
}
