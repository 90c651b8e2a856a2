//! Static quantization as a graph rewrite: insert QuantizeLinear/DequantizeLinear pairs in the
//! standard ONNX QDQ form (as onnxruntime's `quantize_static(quant_format=QDQ)` writes it).
//!
//! For each int8 Conv/Gemm/MatMul (constant weight):
//! - the activation input `x` becomes `DQ(Q(x, s_x, zp_x), s_x, zp_x)` (one pair per tensor,
//!   shared by all consumers);
//! - the weight becomes a Const i8 `<w>_quantized` feeding `DQ(w_q, <w>_scale, <w>_zero_point,
//!   axis)` (per channel: axis 0 for Conv [O,I,kh,kw] and Gemm transB=1, axis 1 for Gemm transB=0
//!   and MatMul [K,N]); the bias stays an f32 Const;
//! - the output gets a Q/DQ pair with its range. When the output's only consumer is Relu or
//!   Clip(min >= 0), the pair goes after the activation with the activation output's range, and
//!   the activation is removed when quantization subsumes it (zero point = the type minimum, and
//!   for Clip the representable maximum within the clip maximum), as ORT does; the conv output
//!   then takes the activation output's name.
//! - MaxPool/Flatten/Reshape/Transpose/Squeeze/Unsqueeze whose input is quantized carry the same
//!   scale/zero point (the same Const nodes) to their output; GlobalAveragePool/AveragePool,
//!   Add and Concat with an already quantized input get QDQ on every input and the output. A
//!   Relu/Clip that is such an output's only consumer is removed under the same rule as after a
//!   conv (ORT's `QDQRemovableActivation`): the output is quantized with the activation output's
//!   range and takes its name (ResNet's `Add -> Relu`).
//!
//! Scale/zero-point Consts are named `<tensor>_scale`/`<tensor>_zero_point` like ORT's
//! initializers. Each QuantizeLinear output's type carries the parameters used.
//! Nodes listed in `fp32` get nothing (an fp32 island) unless a neighbour quantizes a tensor.

use super::fold_batchnorm::disconnect;
use super::PassError;
use crate::calibrate::CalibrationTable;
use crate::quant::{channel_min_max, quantize_slice, QDType, QScheme};
use octet_ir::{
    BinaryOp, DType, Graph, NodeIndex, Op, Outlet, QuantParams, Tensor, UnaryOp, ValueType,
};
use std::collections::{BTreeMap, HashMap};

/// What to quantize and how.
#[derive(Debug, Clone)]
pub struct QdqOptions {
    /// Activation scheme (per tensor).
    pub activation: QScheme,
    /// Weight scheme (per-tensor form; the axis is chosen per node when `per_channel`).
    pub weight: QScheme,
    pub per_channel: bool,
    /// Nodes that stay fp32, with the reason (excluded by name, op type, precision map).
    pub fp32: BTreeMap<String, String>,
    /// Per-node recipe overrides, by node name (the tuner's per-node / per-op-type knobs).
    pub recipes: HashMap<String, NodeRecipe>,
}

/// How one node is quantized when it differs from the defaults: its activation scheme (for the
/// tensors it reads and writes, unless another node planned them first), per-channel weights,
/// and the calibration table its ranges come from.
#[derive(Debug, Clone)]
pub struct NodeRecipe {
    pub activation: QScheme,
    pub per_channel: bool,
    /// None: the default table.
    pub table: Option<std::sync::Arc<CalibrationTable>>,
}

/// The decision taken for one quantizable node.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub node: String,
    pub op: String,
    pub int8: bool,
    pub reason: String,
}

const PASS: &str = "insert_qdq";

fn err(node: &str, op: &str, msg: String) -> PassError {
    PassError::Node {
        pass: PASS,
        node: node.into(),
        op: op.into(),
        msg,
    }
}

fn is_act(g: &Graph, o: Outlet) -> bool {
    !matches!(g.node(o.node).op, Op::Const(_)) && g.ty(o).is_some_and(|t| t.dtype == DType::F32)
}

/// Weight channel axis of a quantizable node (rank of the weight given).
fn weight_axis(op: &Op, rank: usize) -> usize {
    match op {
        Op::Gemm { trans_b: true, .. } => 0,
        Op::Gemm { trans_b: false, .. } => 1,
        Op::MatMul => rank.saturating_sub(1),
        _ => 0,
    }
}

/// Scalar value of a constant operand, if any.
fn const_scalar(g: &Graph, n: NodeIndex, slot: usize) -> Option<Option<f64>> {
    match g.operand(n, slot) {
        None => Some(None),
        Some(_) => {
            let t = g.const_operand(n, slot)?;
            (t.len() == 1).then(|| Some(t.to_f64_vec()[0]))
        }
    }
}

/// The Relu or Clip(min >= 0, constant bounds) that is the only consumer of `out` (and not kept
/// fp32), with its bounds.
fn sole_activation(
    g: &Graph,
    out: Outlet,
    o: &QdqOptions,
) -> Option<(NodeIndex, (Option<f64>, Option<f64>))> {
    let cons = g.consumers(out);
    let [(a, 0)] = cons.as_slice() else {
        return None;
    };
    let bounds = match &g.node(*a).op {
        Op::Unary(UnaryOp::Relu) => (Some(0.0), None),
        Op::Clip => match (const_scalar(g, *a, 1), const_scalar(g, *a, 2)) {
            (Some(Some(lo)), Some(hi)) if lo >= 0.0 => (Some(lo), hi),
            _ => return None,
        },
        _ => return None,
    };
    (!o.fp32.contains_key(&g.node(*a).name)).then_some((*a, bounds))
}

/// Whether quantizing the activation's output with `p` already applies the activation: zero
/// point at the type minimum (`dq_min`), a lower bound of 0 and, for Clip, an upper bound at or
/// above the largest representable value.
fn subsumes((lo, hi): (Option<f64>, Option<f64>), p: &QuantParams, dq_min: i32) -> bool {
    let (s, zp) = (p.scale[0] as f64, p.zero_point[0]);
    let top = s * (dq_min + 255 - zp) as f64;
    zp == dq_min && lo == Some(0.0) && hi.is_none_or(|h| top <= h * (1.0 + 1e-6))
}

/// Removes activation `a` (whose operand 0 is `out`): its consumers read `out`, which takes the
/// activation output's name and type; its constant bound operands go when unused.
fn remove_activation(g: &mut Graph, a: NodeIndex, out: Outlet) {
    let aout = Outlet::new(a, 0);
    let v = g.value(aout).clone();
    let operands: Vec<Outlet> = g.operands(a).into_iter().flatten().skip(1).collect();
    g.replace_uses(aout, out);
    g.remove_node(a);
    for c in operands {
        if matches!(g.node(c.node).op, Op::Const(_)) && g.consumers(c).is_empty() {
            g.remove_node(c.node);
        }
    }
    let ov = &mut g.node_mut(out.node).outputs[out.output];
    ov.name = v.name;
    if v.ty.is_some() {
        ov.ty = v.ty;
    }
}

/// Run the rewrite. Returns one decision per Conv/Gemm/MatMul/ConvTranspose.
pub fn insert_qdq(
    g: &mut Graph,
    table: &CalibrationTable,
    o: &QdqOptions,
) -> Result<Vec<Decision>, PassError> {
    let order = g.topo_order().map_err(|node| PassError::Ir {
        pass: PASS,
        source: octet_ir::IrError::Cycle { node },
    })?;
    // Ranges and activation parameters as seen by node `by` (its recipe, if any).
    let range = |g: &Graph, x: Outlet, by: &str| {
        o.recipes
            .get(by)
            .and_then(|r| r.table.as_deref())
            .unwrap_or(table)
            .range(&g.value(x).name)
    };
    let act_params = |r: (f32, f32), name: &str, by: &str| {
        o.recipes
            .get(by)
            .map_or(o.activation, |r| r.activation)
            .qparams(&[r.0], &[r.1])
            .map_err(|e| err(name, "QuantizeLinear", e.to_string()))
    };
    let per_channel = |by: &str| o.recipes.get(by).map_or(o.per_channel, |r| r.per_channel);

    // A. decisions
    let mut decisions = vec![];
    let mut int8: Vec<NodeIndex> = vec![];
    for &n in &order {
        let node = g.node(n);
        if !node.op.is_quantizable_compute() {
            continue;
        }
        let (name, opn) = (node.name.clone(), node.op.name().to_string());
        let mut decide = |ok: bool, reason: String| {
            decisions.push(Decision {
                node: name.clone(),
                op: opn.clone(),
                int8: ok,
                reason,
            })
        };
        if let Some(r) = o.fp32.get(&name) {
            decide(false, r.clone());
            continue;
        }
        if matches!(node.op, Op::ConvTranspose(_)) {
            decide(false, "unsupported op (ConvTranspose)".into());
            continue;
        }
        let w = g.const_operand(n, 1);
        let Some(w) = w.filter(|w| w.dtype() == DType::F32) else {
            decide(
                false,
                "unsupported pattern: weight is not a constant f32".into(),
            );
            continue;
        };
        if let Op::Gemm { trans_a: true, .. } = node.op {
            decide(false, "unsupported pattern: Gemm with transA".into());
            continue;
        }
        if matches!(node.op, Op::MatMul) && w.rank() != 2 {
            decide(
                false,
                format!("unsupported pattern: MatMul weight of rank {}", w.rank()),
            );
            continue;
        }
        let Some(x) = g.operand(n, 0).filter(|x| is_act(g, *x)) else {
            decide(
                false,
                "unsupported pattern: input is not an f32 activation".into(),
            );
            continue;
        };
        if range(g, x, &name).is_none() {
            let xn = &g.value(x).name;
            decide(
                false,
                match table.non_finite.get(xn) {
                    Some(why) => format!("input '{xn}' {why}: it stays float"),
                    None => format!("no calibration range for input '{xn}'"),
                },
            );
            continue;
        }
        decide(true, "default".into());
        int8.push(n);
    }

    // B. fuse Relu/Clip after Conv/Gemm
    let dq_min = match o.activation.dtype {
        QDType::U8 => 0,
        QDType::I8 => -128,
    };
    let mut out_tensor: HashMap<NodeIndex, Outlet> = HashMap::new();
    let mut act_after: HashMap<NodeIndex, Outlet> = HashMap::new();
    for &n in &int8 {
        let out = Outlet::new(n, 0);
        out_tensor.insert(n, out);
        if matches!(g.node(n).op, Op::MatMul) || g.is_graph_output(out) {
            continue;
        }
        let Some((a, bounds)) = sole_activation(g, out, o) else {
            continue;
        };
        let aout = Outlet::new(a, 0);
        let by = g.node(n).name.clone();
        let Some(r) = range(g, aout, &by) else {
            continue;
        };
        let p = act_params(r, &g.node(a).name, &by)?;
        if !subsumes(bounds, &p, dq_min) {
            // The activation stays a node of its own: quantize the conv's output too (when
            // calibrated), so the conv lowers to an int8 node and the activation runs on
            // quantized values (DequantizeLinear -> Relu/Clip -> QuantizeLinear); otherwise
            // quantize after the activation only.
            if range(g, out, &by).is_some() {
                act_after.insert(n, aout);
            } else {
                out_tensor.insert(n, aout);
            }
            continue;
        }
        remove_activation(g, a, out);
    }

    // C. plan activation tensors: outlet -> (params, share root)
    let order = g.topo_order().map_err(|node| PassError::Ir {
        pass: PASS,
        source: octet_ir::IrError::Cycle { node },
    })?;
    let mut plan: Vec<(Outlet, QuantParams, Option<Outlet>)> = vec![];
    let mut planned: HashMap<Outlet, usize> = HashMap::new();
    let ensure = |g: &Graph,
                  x: Outlet,
                  by: &str,
                  plan: &mut Vec<(Outlet, QuantParams, Option<Outlet>)>,
                  planned: &mut HashMap<Outlet, usize>|
     -> Result<bool, PassError> {
        if planned.contains_key(&x) {
            return Ok(true);
        }
        let Some(r) = range(g, x, by) else {
            return Ok(false);
        };
        let p = act_params(r, &g.value(x).name, by)?;
        planned.insert(x, plan.len());
        plan.push((x, p, None));
        Ok(true)
    };
    let int8_set: std::collections::HashSet<NodeIndex> = int8.iter().copied().collect();
    // Activations folded into the quantized output of the op before them (removed after C).
    let mut fold_after: Vec<(NodeIndex, Outlet)> = vec![];
    for &n in &order {
        let node = g.node(n);
        if o.fp32.contains_key(&node.name) && !int8_set.contains(&n) {
            continue;
        }
        if int8_set.contains(&n) {
            let x = g.operand(n, 0).expect("checked");
            ensure(g, x, &node.name, &mut plan, &mut planned)?;
            let out = out_tensor[&n];
            if is_act(g, out) {
                ensure(g, out, &node.name, &mut plan, &mut planned)?;
            }
            if let Some(&a) = act_after.get(&n) {
                ensure(g, a, &node.name, &mut plan, &mut planned)?;
            }
            continue;
        }
        let out = Outlet::new(n, 0);
        match &node.op {
            Op::MaxPool(_)
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze
            | Op::Unsqueeze => {
                let Some(x) = g.operand(n, 0) else { continue };
                if let (Some(&i), true) = (planned.get(&x), is_act(g, out)) {
                    if let std::collections::hash_map::Entry::Vacant(e) = planned.entry(out) {
                        // The share root is the planned tensor (`x` itself, or the op whose
                        // output a folded activation `x` took over).
                        let (root, p, share) = plan[i].clone();
                        e.insert(plan.len());
                        plan.push((out, p, Some(share.unwrap_or(root))));
                    }
                }
            }
            Op::GlobalAveragePool
            | Op::AveragePool(_)
            | Op::Binary(BinaryOp::Add)
            | Op::Concat { .. } => {
                let ins: Vec<Outlet> = g.operands(n).into_iter().flatten().collect();
                let by = node.name.as_str();
                let all = ins
                    .iter()
                    .all(|x| is_act(g, *x) && range(g, *x, by).is_some());
                let any = ins.iter().any(|x| planned.contains_key(x));
                if all && any && is_act(g, out) && range(g, out, by).is_some() {
                    for x in ins {
                        ensure(g, x, by, &mut plan, &mut planned)?;
                    }
                    // As after a conv (B), and as ORT's `QDQRemovableActivation` does after any
                    // quantized op: a Relu/Clip that is the output's only consumer goes away
                    // when the quantization of its output subsumes it, and the output is
                    // quantized with the activation output's range (ResNet's Add -> Relu: one
                    // rounding instead of two, and no requantization between them).
                    let folded = match sole_activation(g, out, o) {
                        Some((a, bounds)) if !g.is_graph_output(Outlet::new(a, 0)) => {
                            let aout = Outlet::new(a, 0);
                            match range(g, aout, by) {
                                Some(r) => {
                                    let p = act_params(r, &g.value(aout).name, by)?;
                                    subsumes(bounds, &p, dq_min).then_some((a, aout, p))
                                }
                                None => None,
                            }
                        }
                        _ => None,
                    };
                    match folded {
                        Some((a, aout, p)) if !planned.contains_key(&out) => {
                            planned.insert(out, plan.len());
                            planned.insert(aout, plan.len());
                            plan.push((out, p, None));
                            fold_after.push((a, out));
                        }
                        _ => {
                            ensure(g, out, by, &mut plan, &mut planned)?;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    for (a, out) in fold_after {
        remove_activation(g, a, out);
    }

    // D. weights
    let mut wdq: HashMap<(NodeIndex, usize), Outlet> = HashMap::new();
    let mut old_weights = vec![];
    for &n in &int8 {
        let wo = g.operand(n, 1).expect("checked");
        let w = g.const_operand(n, 1).expect("checked").clone();
        let op = g.node(n).op.clone();
        let axis = weight_axis(&op, w.rank());
        let pc = per_channel(&g.node(n).name);
        let key = (wo.node, if pc { axis } else { usize::MAX });
        let dq = match wdq.get(&key) {
            Some(d) => *d,
            None => {
                let name = g.value(wo).name.clone();
                let d = quantize_weight(g, &name, &w, axis, pc, o)?;
                wdq.insert(key, d);
                d
            }
        };
        disconnect(g, n, 1);
        g.connect(dq, n, 1);
        old_weights.push(wo.node);
    }
    for w in old_weights {
        if g.g.contains_node(w) && g.consumers(Outlet::new(w, 0)).is_empty() {
            g.remove_node(w);
        }
    }

    // E. activations
    let zp_dtype = match o.activation.dtype {
        QDType::U8 => DType::U8,
        QDType::I8 => DType::I8,
    };
    let mut consts: HashMap<Outlet, (NodeIndex, NodeIndex)> = HashMap::new();
    for (x, p, share) in plan {
        let tname = g.value(x).name.clone();
        let (sc, zc) = match share.and_then(|s| consts.get(&s)) {
            Some(&c) => c,
            None => {
                let sc = g.add_const(&format!("{tname}_scale"), Tensor::scalar(p.scale[0]));
                let zp = match zp_dtype {
                    DType::U8 => Tensor::scalar(p.zero_point[0] as u8),
                    _ => Tensor::scalar(p.zero_point[0] as i8),
                };
                let zc = g.add_const(&format!("{tname}_zero_point"), zp);
                (sc, zc)
            }
        };
        consts.insert(x, (sc, zc));
        let consumers = g.consumers(x);
        let is_out = g.is_graph_output(x);
        let shape = g.ty(x).map(|t| t.shape.clone());
        let q = g.add_node(
            &format!("{tname}_QuantizeLinear"),
            Op::QuantizeLinear {
                axis: 1,
                saturate: true,
                out_dtype: None,
            },
            vec![format!("{tname}_QuantizeLinear_Output")],
        );
        g.connect(x, q, 0);
        g.connect(Outlet::new(sc, 0), q, 1);
        g.connect(Outlet::new(zc, 0), q, 2);
        if let Some(shape) = shape {
            g.node_mut(q).outputs[0].ty = Some(ValueType {
                dtype: zp_dtype,
                shape,
                quant: Some(p.clone()),
            });
        }
        let dq = g.add_node(
            &format!("{tname}_DequantizeLinear"),
            Op::DequantizeLinear { axis: 1 },
            vec![format!("{tname}_DequantizeLinear_Output")],
        );
        g.connect(Outlet::new(q, 0), dq, 0);
        g.connect(Outlet::new(sc, 0), dq, 1);
        g.connect(Outlet::new(zc, 0), dq, 2);
        let dqo = Outlet::new(dq, 0);
        for (c, slot) in consumers {
            disconnect(g, c, slot);
            g.connect(dqo, c, slot);
        }
        if is_out {
            for (_, out) in g.outputs.iter_mut() {
                if *out == x {
                    *out = dqo;
                }
            }
            g.node_mut(x.node).outputs[x.output].name = format!("{tname}_QuantizeLinear_Input");
            g.node_mut(dq).outputs[0].name = tname;
        }
    }
    g.infer_types()
        .map_err(|source| PassError::Ir { pass: PASS, source })?;
    Ok(decisions)
}

/// Quantize a constant weight and return the DequantizeLinear outlet that replaces it.
fn quantize_weight(
    g: &mut Graph,
    name: &str,
    w: &Tensor,
    axis: usize,
    per_channel: bool,
    o: &QdqOptions,
) -> Result<Outlet, PassError> {
    let e = |m: String| err(name, "DequantizeLinear", m);
    let data = w.view::<f32>().map_err(|x| e(x.to_string()))?;
    let (scheme, (mins, maxs)) = if per_channel {
        let s = o.weight.with_axis(axis);
        (
            s,
            channel_min_max(data, w.shape(), axis).map_err(|x| e(x.to_string()))?,
        )
    } else {
        let mut s = o.weight;
        s.per_channel = None;
        let lo = data.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (s, (vec![lo], vec![hi]))
    };
    let params = scheme.qparams(&mins, &maxs).map_err(|x| e(x.to_string()))?;
    let q = quantize_slice(&scheme, data, w.shape(), &params).map_err(|x| e(x.to_string()))?;
    let qt = Tensor::from_vec(w.shape(), q.iter().map(|&v| v as i8).collect::<Vec<i8>>());
    let qc = g.add_const(&format!("{name}_quantized"), qt);
    if let Some(t) = g.node_mut(qc).outputs[0].ty.as_mut() {
        t.quant = Some(params.clone());
    }
    let (st, zt) = if per_channel {
        let c = params.scale.len();
        (
            Tensor::from_vec(&[c], params.scale.clone()),
            Tensor::from_vec(
                &[c],
                params
                    .zero_point
                    .iter()
                    .map(|&z| z as i8)
                    .collect::<Vec<i8>>(),
            ),
        )
    } else {
        (
            Tensor::scalar(params.scale[0]),
            Tensor::scalar(params.zero_point[0] as i8),
        )
    };
    let sc = g.add_const(&format!("{name}_scale"), st);
    let zc = g.add_const(&format!("{name}_zero_point"), zt);
    let dq = g.add_node(
        &format!("{name}_DequantizeLinear"),
        Op::DequantizeLinear {
            axis: if per_channel { axis as i64 } else { 1 },
        },
        vec![format!("{name}_DequantizeLinear_Output")],
    );
    g.connect(Outlet::new(qc, 0), dq, 0);
    g.connect(Outlet::new(sc, 0), dq, 1);
    g.connect(Outlet::new(zc, 0), dq, 2);
    Ok(Outlet::new(dq, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::CalibAlgorithm;
    use crate::quant::Preset;
    use octet_ir::*;

    /// x[1,1,2,2] -> Conv(1x1, 2 out channels) -> Relu -> y
    fn conv_relu() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[1, 1, 2, 2]));
        let w = g.add_const("w", Tensor::from_vec(&[2, 1, 1, 1], vec![0.5f32, -1.0]));
        let b = g.add_const("b", Tensor::from_vec(&[2], vec![0.1f32, 0.2]));
        let conv = g.add_node(
            "conv",
            Op::Conv(ConvAttrs {
                geom: ConvGeom {
                    kernel_shape: vec![],
                    strides: vec![1, 1],
                    pads: vec![0, 0, 0, 0],
                    dilations: vec![1, 1],
                    auto_pad: AutoPad::NotSet,
                },
                group: 1,
            }),
            vec!["c".into()],
        );
        g.connect(Outlet::new(x, 0), conv, 0);
        g.connect(Outlet::new(w, 0), conv, 1);
        g.connect(Outlet::new(b, 0), conv, 2);
        let r = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["y".into()]);
        g.connect(Outlet::new(conv, 0), r, 0);
        g.outputs.push(("y".into(), Outlet::new(r, 0)));
        g.infer_types().unwrap();
        g
    }

    fn opts() -> QdqOptions {
        QdqOptions {
            activation: QScheme::activation(Preset::Octet),
            weight: QScheme::new(Preset::Octet, QDType::I8, true, false),
            per_channel: true,
            fp32: BTreeMap::new(),
            recipes: HashMap::new(),
        }
    }

    fn table() -> CalibrationTable {
        CalibrationTable {
            ranges: [
                ("x".to_string(), (-1.0f32, 1.0f32)),
                ("y".into(), (0.0, 2.55)),
            ]
            .into_iter()
            .collect(),
            method: CalibAlgorithm::Minmax,
            samples: 1,
            observer_bytes: 0,
            non_finite: Default::default(),
        }
    }

    #[test]
    fn conv_relu_snapshot() {
        let mut g = conv_relu();
        let d = insert_qdq(&mut g, &table(), &opts()).unwrap();
        g.verify().unwrap();
        assert_eq!(d.len(), 1);
        assert!(d[0].int8);
        let text = g.to_text();
        let want = "graph(%x: f32[1,1,2,2]) -> (%y) {
  %x_scale = Const [0.007843137718737125] : f32[]
  %b = Const [0.10000000149011612, 0.20000000298023224] : f32[2]
  %w_quantized = Const [127.0, -127.0] : i8[2,1,1,1] q(axis=0,scale=[3.937008e-3,7.874016e-3],zp=[0,0])
  %w_scale = Const [0.003937007859349251, 0.007874015718698502] : f32[2]
  %w_zero_point = Const [0.0, 0.0] : i8[2]
  %w_DequantizeLinear_Output = DequantizeLinear[axis=0](%w_quantized, %w_scale, %w_zero_point) : f32[2,1,1,1]  # w_DequantizeLinear
  %x_zero_point = Const [128.0] : u8[]
  %x_QuantizeLinear_Output = QuantizeLinear[axis=1 saturate=true out=None](%x, %x_scale, %x_zero_point) : u8[1,1,2,2] q(scale=7.843138e-3,zp=128)  # x_QuantizeLinear
  %x_DequantizeLinear_Output = DequantizeLinear[axis=1](%x_QuantizeLinear_Output, %x_scale, %x_zero_point) : f32[1,1,2,2]  # x_DequantizeLinear
  %y_QuantizeLinear_Input = Conv[kernel=[] strides=[1, 1] pads=[0, 0, 0, 0] dilations=[1, 1] auto_pad=NotSet group=1](%x_DequantizeLinear_Output, %w_DequantizeLinear_Output, %b) : f32[1,2,2,2]  # conv
  %y_scale = Const [0.009999999776482582] : f32[]
  %y_zero_point = Const [0.0] : u8[]
  %y_QuantizeLinear_Output = QuantizeLinear[axis=1 saturate=true out=None](%y_QuantizeLinear_Input, %y_scale, %y_zero_point) : u8[1,2,2,2] q(scale=1e-2,zp=0)  # y_QuantizeLinear
  %y = DequantizeLinear[axis=1](%y_QuantizeLinear_Output, %y_scale, %y_zero_point) : f32[1,2,2,2]  # y_DequantizeLinear
}
";
        if text != want {
            panic!("got:\n{text}");
        }
    }

    /// x -> conv -> c; Add(c, x) -> s -> Relu -> r -> conv2 -> y (a residual block's tail).
    fn add_relu() -> Graph {
        let mut g = conv_relu();
        // conv_relu's Relu becomes the block's Relu after an Add; its conv's output is `c`.
        let r = g.find("relu").unwrap();
        let conv = g.find("conv").unwrap();
        let x = Outlet::new(g.inputs[0], 0);
        g.outputs.clear();
        disconnect(&mut g, r, 0);
        g.node_mut(r).outputs[0].name = "r".into();
        let add = g.add_node("add", Op::Binary(BinaryOp::Add), vec!["s".into()]);
        g.connect(Outlet::new(conv, 0), add, 0);
        g.connect(x, add, 1);
        g.connect(Outlet::new(add, 0), r, 0);
        let w2 = g.add_const("w2", Tensor::from_vec(&[1, 2, 1, 1], vec![0.25f32, 0.75]));
        let conv2 = g.add_node("conv2", g.node(conv).op.clone(), vec!["y".into()]);
        g.connect(Outlet::new(r, 0), conv2, 0);
        g.connect(Outlet::new(w2, 0), conv2, 1);
        g.outputs.push(("y".into(), Outlet::new(conv2, 0)));
        g.node_mut(conv).outputs[0].name = "c".into();
        g.infer_types().unwrap();
        g
    }

    fn add_relu_table() -> CalibrationTable {
        let mut t = table();
        t.ranges.insert("c".into(), (-2.0, 2.0));
        t.ranges.insert("s".into(), (-3.0, 3.0));
        t.ranges.insert("r".into(), (0.0, 2.55));
        t.ranges.insert("y".into(), (-1.0, 1.0));
        t
    }

    #[test]
    fn relu_after_add_folds_into_the_add_output() {
        let mut g = add_relu();
        insert_qdq(&mut g, &add_relu_table(), &opts()).unwrap();
        g.verify().unwrap();
        let text = g.to_text();
        // No Relu; the Add writes `r` (quantized with the Relu output's range: scale 0.01, zero
        // point 0), and the second conv reads its DequantizeLinear. `s` is gone.
        assert!(!text.contains("Relu"), "{text}");
        assert!(!text.contains("%s"), "{text}");
        for want in [
            "%r_QuantizeLinear_Output = QuantizeLinear[axis=1 saturate=true out=None](%r, %r_scale, %r_zero_point) : u8[1,2,2,2] q(scale=1e-2,zp=0)",
            "%r = Add(%c_DequantizeLinear_Output, %x_DequantizeLinear_Output)",
            "(%r_DequantizeLinear_Output, %w2_DequantizeLinear_Output",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn relu_after_add_stays_when_not_subsumed() {
        // The Relu output has no calibration range, or the Relu is kept fp32: it stays, after
        // a quantized Add.
        let mut g = add_relu();
        let mut t = add_relu_table();
        t.ranges.remove("r");
        insert_qdq(&mut g, &t, &opts()).unwrap();
        g.verify().unwrap();
        let t = g.to_text();
        assert!(
            t.contains("Relu(") && t.contains("%s_QuantizeLinear"),
            "{t}"
        );
        let mut g = add_relu();
        let mut o = opts();
        o.fp32.insert("relu".into(), "excluded by name".into());
        insert_qdq(&mut g, &add_relu_table(), &o).unwrap();
        g.verify().unwrap();
        let t = g.to_text();
        assert!(
            t.contains("Relu(") && t.contains("%s_QuantizeLinear"),
            "{t}"
        );
    }

    #[test]
    fn excluded_conv_stays_fp32() {
        let mut g = conv_relu();
        let mut o = opts();
        o.fp32.insert("conv".into(), "excluded by name".into());
        let d = insert_qdq(&mut g, &table(), &o).unwrap();
        assert!(!d[0].int8);
        assert_eq!(d[0].reason, "excluded by name");
        assert!(!g.to_text().contains("Quantize"));
    }

    #[test]
    fn clip_beyond_range_is_kept() {
        // Clip(0, 1) with an observed range up to 2.55: quantization does not subsume it.
        let mut g = conv_relu();
        let r = g.find("relu").unwrap();
        g.node_mut(r).op = Op::Clip;
        let lo = g.add_const("lo", Tensor::scalar(0.0f32));
        let hi = g.add_const("hi", Tensor::scalar(1.0f32));
        g.connect(Outlet::new(lo, 0), r, 1);
        g.connect(Outlet::new(hi, 0), r, 2);
        g.infer_types().unwrap();
        insert_qdq(&mut g, &table(), &opts()).unwrap();
        g.verify().unwrap();
        let t = g.to_text();
        assert!(t.contains("Clip("), "{t}");
        assert!(t.contains("y_QuantizeLinear"), "{t}");
    }
}
