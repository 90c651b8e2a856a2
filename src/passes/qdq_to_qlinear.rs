//! Lower a QDQ graph (QuantizeLinear/DequantizeLinear pairs around float ops, as onnxruntime's
//! quantizer and PyTorch exports write them, and as octet's own static quantizer emits) to
//! integer ops whose quantization parameters are folded into one fused kernel each:
//!
//! - `DQ(x) -> Conv(., DQ(w), b) -> Q` becomes `QLinearConv` (bias quantized to int32 with scale
//!   `s_x * s_w`, rounded half to even as onnxruntime does);
//! - `DQ(a) -> Gemm(., DQ(w), c) -> Q` becomes `QGemm` (com.microsoft form, int32 bias);
//! - `DQ(a) -> MatMul(., DQ(w)) -> Q` becomes `QLinearMatMul`;
//! - `DQ(a), DQ(b) -> Add -> Q` becomes `QLinearAdd`; `DQ -> GlobalAveragePool -> Q` becomes
//!   `QLinearGlobalAveragePool`;
//! - scale-preserving ops (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze) between a DQ
//!   and a Q with the same parameters run directly on the integers;
//! - `Q(DQ(x))` with identical parameters is `x`.
//!
//! The quantized values this creates carry their scale and zero point in their type. Nodes that
//! do not match stay float (an fp32 island), and [`QdqToQLinear::run`] records why in the
//! report for the Conv/Gemm/MatMul nodes it could not lower.

use super::{Pass, PassError};
use octet_ir::{BinaryOp, DType, Graph, NodeIndex, Op, Outlet, QuantParams, Tensor};
use std::cell::RefCell;

/// The lowering pass. `skipped` collects (node, op, reason) for compute nodes left in float.
#[derive(Default)]
pub struct QdqToQLinear {
    pub skipped: RefCell<Vec<(String, String, String)>>,
}

/// A DequantizeLinear or QuantizeLinear whose scale and zero point are constants.
#[derive(Clone)]
struct QNode {
    node: NodeIndex,
    /// The data operand (quantized for DQ, float for Q).
    input: Outlet,
    scale: Outlet,
    zp: Option<Outlet>,
    scales: Vec<f32>,
    zps: Vec<i64>,
    axis: i64,
}

fn qnode(g: &Graph, n: NodeIndex) -> Option<QNode> {
    let axis = match g.node(n).op {
        Op::DequantizeLinear { axis } => axis,
        Op::QuantizeLinear { axis, .. } => axis,
        _ => return None,
    };
    let input = g.operand(n, 0)?;
    let scale = g.operand(n, 1)?;
    let st = g.const_operand(n, 1)?;
    if st.dtype() != DType::F32 {
        return None;
    }
    let scales: Vec<f32> = st.view::<f32>().ok()?.to_vec();
    let zp = g.operand(n, 2);
    let zps = match zp {
        Some(_) => g.const_operand(n, 2)?.to_i64_vec(),
        None => vec![0; scales.len()],
    };
    if zps.len() != scales.len() || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return None;
    }
    Some(QNode {
        node: n,
        input,
        scale,
        zp,
        scales,
        zps,
        axis,
    })
}

/// The DQ producing `o`, if `o` is a DequantizeLinear output.
fn dq_of(g: &Graph, o: Outlet) -> Option<QNode> {
    match g.node(o.node).op {
        Op::DequantizeLinear { .. } => qnode(g, o.node),
        _ => None,
    }
}

/// The single consumer of `o` if it is a QuantizeLinear (and `o` is not a graph output).
fn sole_q(g: &Graph, o: Outlet) -> Option<QNode> {
    let c = g.consumers(o);
    if c.len() != 1 || c[0].1 != 0 || g.is_graph_output(o) {
        return None;
    }
    match g.node(c[0].0).op {
        Op::QuantizeLinear { .. } => qnode(g, c[0].0),
        _ => None,
    }
}

fn same_params(a: &QNode, b: &QNode) -> bool {
    a.scales == b.scales && a.zps == b.zps && (a.scales.len() == 1 || a.axis == b.axis)
}

/// Zero point operand: the node's own, or a new zero constant of the quantized dtype.
fn zp_or_zero(g: &mut Graph, q: &QNode, dtype: DType, name: &str) -> Outlet {
    match q.zp {
        Some(z) => z,
        None => {
            let t = Tensor::from_f64(dtype, &[], &[0.0]);
            let t = if q.scales.len() > 1 {
                Tensor::from_f64(dtype, &[q.scales.len()], &vec![0.0; q.scales.len()])
            } else {
                t
            };
            Outlet::new(g.add_const(name, t), 0)
        }
    }
}

fn quant_params(q: &QNode, rank: usize) -> QuantParams {
    if q.scales.len() == 1 {
        QuantParams::per_tensor(q.scales[0], q.zps[0] as i32)
    } else {
        let axis = if q.axis < 0 {
            q.axis + rank as i64
        } else {
            q.axis
        } as usize;
        QuantParams::per_axis(
            axis,
            q.scales.clone(),
            q.zps.iter().map(|&z| z as i32).collect(),
        )
    }
}

/// Replace the Q node's output by `new` and drop the Q; mark `new`'s type with Q's parameters.
fn finish(g: &mut Graph, q: &QNode, new: NodeIndex) {
    let old = Outlet::new(q.node, 0);
    let rank = g.ty(old).map(|t| t.shape.rank()).unwrap_or(0);
    let mut ty = g.ty(old).cloned();
    if let Some(t) = ty.as_mut() {
        t.quant = Some(quant_params(q, rank));
    }
    g.node_mut(new).outputs[0].ty = ty;
    g.replace_uses(old, Outlet::new(new, 0));
    g.remove_node(q.node);
}

/// int32 bias = round_half_even(b / (s_x * s_w[j])) in f32, as onnxruntime's quantizer does.
fn quantize_bias(b: &[f32], sx: f32, sw: &[f32]) -> Option<Vec<i32>> {
    b.iter()
        .enumerate()
        .map(|(j, &v)| {
            let s = sx * if sw.len() == 1 { sw[0] } else { *sw.get(j)? };
            let q = (v / s).round_ties_even();
            (q.is_finite() && q.abs() < 2147483520.0).then_some(q as i32)
        })
        .collect()
}

enum Bias {
    None,
    Int(Outlet),
    Float(Vec<f32>),
}

fn bias_operand(g: &Graph, n: NodeIndex, slot: usize) -> Option<Bias> {
    let Some(o) = g.operand(n, slot) else {
        return Some(Bias::None);
    };
    if let Some(t) = g.const_operand(n, slot) {
        return (t.dtype() == DType::F32).then(|| Bias::Float(t.view::<f32>().unwrap().to_vec()));
    }
    // DQ(int32 bias) with zero point 0.
    let d = dq_of(g, o)?;
    let t = match &g.node(d.input.node).op {
        Op::Const(t) if t.dtype() == DType::I32 && d.zps.iter().all(|&z| z == 0) => t,
        _ => return None,
    };
    let _ = t;
    Some(Bias::Int(d.input))
}

impl QdqToQLinear {
    fn skip(&self, g: &Graph, n: NodeIndex, why: &str) {
        let node = g.node(n);
        self.skipped.borrow_mut().push((
            node.name.clone(),
            node.op.name().to_string(),
            why.to_string(),
        ));
    }

    /// Conv / Gemm / MatMul with quantized activation and constant quantized weight.
    fn lower_compute(&self, g: &mut Graph, n: NodeIndex) -> bool {
        let op = g.node(n).op.clone();
        let name = g.node(n).name.clone();
        let Some(xo) = g.operand(n, 0) else {
            return false;
        };
        let Some(wo) = g.operand(n, 1) else {
            return false;
        };
        let Some(dx) = dq_of(g, xo) else {
            self.skip(
                g,
                n,
                "activation input is not dequantized from int8 (no QDQ)",
            );
            return false;
        };
        let Some(dw) = dq_of(g, wo) else {
            self.skip(g, n, "weight is not a dequantized int8 tensor (no QDQ)");
            return false;
        };
        let Some(q) = sole_q(g, Outlet::new(n, 0)) else {
            self.skip(
                g,
                n,
                "output is not quantized (no single QuantizeLinear consumer)",
            );
            return false;
        };
        if dx.scales.len() != 1 || q.scales.len() != 1 {
            self.skip(
                g,
                n,
                "per-channel activation quantization is not supported by the int8 kernels",
            );
            return false;
        }
        let wconst = matches!(g.node(dw.input.node).op, Op::Const(_));
        let (xdt, wdt) = (
            g.ty(dx.input).map(|t| t.dtype),
            g.ty(dw.input).map(|t| t.dtype),
        );
        if !matches!(xdt, Some(DType::U8 | DType::I8))
            || !matches!(wdt, Some(DType::U8 | DType::I8))
        {
            self.skip(g, n, "operands are not 8-bit");
            return false;
        }
        let ydt = g
            .ty(Outlet::new(q.node, 0))
            .map(|t| t.dtype)
            .unwrap_or(DType::U8);
        let sx = dx.scales[0];
        // Bias operand (slot 2 for Conv and Gemm).
        let bias = match &op {
            Op::Conv(_) | Op::Gemm { .. } => match bias_operand(g, n, 2) {
                Some(b) => b,
                None => {
                    self.skip(
                        g,
                        n,
                        "bias is neither a float constant nor a dequantized int32 constant",
                    );
                    return false;
                }
            },
            _ => Bias::None,
        };
        let new_op = match &op {
            Op::Conv(a) => {
                if dw.scales.len() > 1 && dw.axis != 0 {
                    self.skip(
                        g,
                        n,
                        "per-channel weight scales must be along the output channels",
                    );
                    return false;
                }
                Op::QLinearConv(a.clone())
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let has_c = !matches!(bias, Bias::None);
                if *trans_a || *alpha != 1.0 || (has_c && *beta != 1.0) {
                    self.skip(
                        g,
                        n,
                        "Gemm with transA, alpha != 1 or beta != 1 is left in float",
                    );
                    return false;
                }
                let want_axis = if *trans_b { 0 } else { 1 };
                if dw.scales.len() > 1 && dw.axis != want_axis {
                    self.skip(
                        g,
                        n,
                        "per-channel weight scales must be along the output columns",
                    );
                    return false;
                }
                Op::QGemm {
                    alpha: 1.0,
                    trans_a: false,
                    trans_b: *trans_b,
                }
            }
            Op::MatMul => {
                let wrank = g.ty(dw.input).map(|t| t.shape.rank()).unwrap_or(0);
                if dw.scales.len() > 1 && !(wrank == 2 && (dw.axis == 1 || dw.axis == -1)) {
                    self.skip(
                        g,
                        n,
                        "per-channel MatMul weights must be 2-D with scales per column",
                    );
                    return false;
                }
                Op::QLinearMatMul
            }
            _ => return false,
        };
        let _ = wconst;
        let bias_out: Option<Outlet> = match bias {
            Bias::None => None,
            Bias::Int(o) => Some(o),
            Bias::Float(b) => match quantize_bias(&b, sx, &dw.scales) {
                Some(v) => {
                    let len = v.len();
                    Some(Outlet::new(
                        g.add_const(
                            &format!("{name}_bias_quantized"),
                            Tensor::from_vec(&[len], v),
                        ),
                        0,
                    ))
                }
                None => {
                    self.skip(g, n, "bias does not fit int32 at scale s_x * s_w");
                    return false;
                }
            },
        };
        let out_name = g.node(q.node).outputs[0].name.clone();
        let new = g.add_node(&name, new_op.clone(), vec![out_name]);
        let zx = zp_or_zero(g, &dx, xdt.unwrap(), &format!("{name}_x_zero_point"));
        let zw = zp_or_zero(g, &dw, wdt.unwrap(), &format!("{name}_w_zero_point"));
        let zy = zp_or_zero(g, &q, ydt, &format!("{name}_y_zero_point"));
        let mut args: Vec<Option<Outlet>> = vec![
            Some(dx.input),
            Some(dx.scale),
            Some(zx),
            Some(dw.input),
            Some(dw.scale),
            Some(zw),
        ];
        match new_op {
            Op::QLinearConv(_) => args.extend([Some(q.scale), Some(zy), bias_out]),
            Op::QGemm { .. } => args.extend([bias_out, Some(q.scale), Some(zy)]),
            _ => args.extend([Some(q.scale), Some(zy)]),
        }
        for (slot, a) in args.into_iter().enumerate() {
            if let Some(a) = a {
                g.connect(a, new, slot);
            }
        }
        finish(g, &q, new);
        g.remove_node(n);
        true
    }

    /// GlobalAveragePool and Add on dequantized inputs with a quantized output.
    fn lower_elementwise(&self, g: &mut Graph, n: NodeIndex) -> bool {
        let name = g.node(n).name.clone();
        let Some(q) = sole_q(g, Outlet::new(n, 0)) else {
            return false;
        };
        if q.scales.len() != 1 {
            return false;
        }
        let ydt = match g.ty(Outlet::new(q.node, 0)) {
            Some(t) => t.dtype,
            None => return false,
        };
        let out_name = g.node(q.node).outputs[0].name.clone();
        match g.node(n).op.clone() {
            Op::GlobalAveragePool => {
                let Some(d) = g.operand(n, 0).and_then(|o| dq_of(g, o)) else {
                    return false;
                };
                let Some(xdt) = g.ty(d.input).map(|t| t.dtype) else {
                    return false;
                };
                if d.scales.len() != 1 {
                    return false;
                }
                let new = g.add_node(
                    &name,
                    Op::QLinearGlobalAveragePool {
                        channels_last: false,
                    },
                    vec![out_name],
                );
                let zx = zp_or_zero(g, &d, xdt, &format!("{name}_x_zero_point"));
                let zy = zp_or_zero(g, &q, ydt, &format!("{name}_y_zero_point"));
                for (slot, o) in [d.input, d.scale, zx, q.scale, zy].into_iter().enumerate() {
                    g.connect(o, new, slot);
                }
                finish(g, &q, new);
            }
            Op::Binary(BinaryOp::Add) => {
                let (Some(a), Some(b)) = (
                    g.operand(n, 0).and_then(|o| dq_of(g, o)),
                    g.operand(n, 1).and_then(|o| dq_of(g, o)),
                ) else {
                    return false;
                };
                if a.scales.len() != 1 || b.scales.len() != 1 {
                    return false;
                }
                let (Some(adt), Some(bdt)) = (
                    g.ty(a.input).map(|t| t.dtype),
                    g.ty(b.input).map(|t| t.dtype),
                ) else {
                    return false;
                };
                if adt != ydt || bdt != ydt {
                    return false;
                }
                let new = g.add_node(&name, Op::QLinearBinary(BinaryOp::Add), vec![out_name]);
                let za = zp_or_zero(g, &a, adt, &format!("{name}_a_zero_point"));
                let zb = zp_or_zero(g, &b, bdt, &format!("{name}_b_zero_point"));
                let zy = zp_or_zero(g, &q, ydt, &format!("{name}_y_zero_point"));
                for (slot, o) in [a.input, a.scale, za, b.input, b.scale, zb, q.scale, zy]
                    .into_iter()
                    .enumerate()
                {
                    g.connect(o, new, slot);
                }
                finish(g, &q, new);
            }
            _ => return false,
        }
        g.remove_node(n);
        true
    }

    /// Scale-preserving ops between a DQ and a Q with identical parameters run on the integers.
    fn lower_passthrough(&self, g: &mut Graph, n: NodeIndex) -> bool {
        let Some(xo) = g.operand(n, 0) else {
            return false;
        };
        let Some(d) = dq_of(g, xo) else { return false };
        let Some(q) = sole_q(g, Outlet::new(n, 0)) else {
            return false;
        };
        if !same_params(&d, &q) || d.scales.len() != 1 {
            return false;
        }
        // Rewire the op's data operand to the integers.
        g.set_operand(n, 0, d.input);
        // The op now yields integers of the input's dtype.
        let mut ty = g.ty(Outlet::new(q.node, 0)).cloned();
        if let (Some(t), Some(dt)) = (ty.as_mut(), g.ty(d.input).map(|t| t.dtype)) {
            t.dtype = dt;
        }
        g.node_mut(n).outputs[0].ty = ty;
        let qname = g.node(q.node).outputs[0].name.clone();
        g.node_mut(n).outputs[0].name = qname;
        finish(g, &q, n);
        true
    }
}

impl Pass for QdqToQLinear {
    fn name(&self) -> &'static str {
        "qdq_to_qlinear"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let err = |source| PassError::Ir {
            pass: "qdq_to_qlinear",
            source,
        };
        let mut changed = false;
        let order = g
            .topo_order()
            .map_err(|node| err(octet_ir::IrError::Cycle { node }))?;
        for n in order {
            if !g.g.contains_node(n) {
                continue;
            }
            let did = match g.node(n).op {
                Op::Conv(_) | Op::Gemm { .. } | Op::MatMul => self.lower_compute(g, n),
                Op::GlobalAveragePool | Op::Binary(BinaryOp::Add) => self.lower_elementwise(g, n),
                Op::MaxPool(_)
                | Op::Flatten { .. }
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Squeeze
                | Op::Unsqueeze => self.lower_passthrough(g, n),
                _ => false,
            };
            changed |= did;
        }
        // Q(DQ(x)) with identical parameters is x.
        let qs: Vec<NodeIndex> =
            g.g.node_indices()
                .filter(|&n| matches!(g.node(n).op, Op::QuantizeLinear { .. }))
                .collect();
        for qn in qs {
            let Some(q) = qnode(g, qn) else { continue };
            let Some(d) = dq_of(g, q.input) else { continue };
            if same_params(&d, &q)
                && g.ty(d.input).map(|t| t.dtype) == g.ty(Outlet::new(qn, 0)).map(|t| t.dtype)
            {
                g.replace_uses(Outlet::new(qn, 0), d.input);
                g.remove_node(qn);
                changed = true;
            }
        }
        g.prune_dead();
        g.infer_types().map_err(err)?;
        Ok(changed)
    }
}
