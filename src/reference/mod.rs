//! The reference interpreter: a plain, obviously-correct implementation of every op in
//! `octet_ir::Op`, the oracle that every faster path is compared against. Speed is not its job.
//!
//! This file owns the op dispatch (`eval_op`), operand access helpers and the graph runner
//! (`run_graph`, `run_graph_with`). Op semantics live in the sibling files, one per concept.

mod broadcast;
mod cast;
mod conv;
mod elementwise;
mod matmul;
pub mod mlas_order;
mod norm;
mod pool;
mod quant;
mod reduce;
mod resize;
mod shape_ops;

use octet_ir::{Graph, NodeIndex, Op, Outlet, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;

pub use cast::cast_tensor;
pub use elementwise::erf;

/// Result type of the op implementations: errors are plain messages.
pub(crate) type R<T> = Result<T, String>;

/// Required operand `i`.
pub(crate) fn req<'a>(inputs: &[Option<&'a Tensor>], i: usize, what: &str) -> R<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("required operand {i} ({what}) is missing"))
}

/// Optional operand `i` (absent when unconnected).
pub(crate) fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Optional operand `i`, treating an empty tensor as absent (ONNX uses empty inputs that way).
pub(crate) fn opt_nonempty<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    opt(inputs, i).filter(|t| !t.is_empty())
}

/// Evaluate one op on concrete operands (indexed by slot; `None` = absent optional operand).
/// Returns one tensor per op output. Errors are plain messages; callers add the node name.
pub fn eval_op(op: &Op, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
    let (min, max) = op.arity();
    if inputs.len() > max {
        return Err(format!(
            "{} takes at most {max} operands, got {}",
            op.name(),
            inputs.len()
        ));
    }
    for i in 0..min {
        if opt(inputs, i).is_none() {
            return Err(format!(
                "{} needs {min} operands; operand {i} is missing",
                op.name()
            ));
        }
    }
    let one = |t: R<Tensor>| t.map(|t| vec![t]);
    use Op::*;
    match op {
        Input => Err("graph inputs have no evaluation rule (feed them to run_graph)".into()),
        Const(t) => Ok(vec![t.clone()]),
        Unary(u) => one(elementwise::unary(*u, req(inputs, 0, "X")?)),
        Act(a) => one(elementwise::act(*a, req(inputs, 0, "X")?)),
        Clip => one(elementwise::clip(inputs)),
        Binary(b) => one(elementwise::binary(
            *b,
            req(inputs, 0, "A")?,
            req(inputs, 1, "B")?,
        )),
        Variadic(v) => one(elementwise::variadic(*v, inputs)),
        Where => one(elementwise::where_op(
            req(inputs, 0, "condition")?,
            req(inputs, 1, "X")?,
            req(inputs, 2, "Y")?,
        )),
        Cast { to } => one(cast::cast_tensor(req(inputs, 0, "input")?, *to)),
        CastLike => one(cast::cast_tensor(
            req(inputs, 0, "input")?,
            req(inputs, 1, "target_type")?.dtype(),
        )),
        Conv(a) => one(conv::conv(a, inputs)),
        ConvTranspose(a) => one(conv::conv_transpose(a, inputs)),
        Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(matmul::gemm(*alpha, *beta, *trans_a, *trans_b, inputs)),
        MatMul => one(matmul::matmul(req(inputs, 0, "A")?, req(inputs, 1, "B")?)),
        Einsum { equation } => one(matmul::einsum(equation, inputs)),
        Softmax { axis, legacy } => one(norm::softmax(
            req(inputs, 0, "input")?,
            *axis,
            *legacy,
            norm::SoftmaxKind::Softmax,
        )),
        LogSoftmax { axis, legacy } => one(norm::softmax(
            req(inputs, 0, "input")?,
            *axis,
            *legacy,
            norm::SoftmaxKind::LogSoftmax,
        )),
        Hardmax { axis, legacy } => one(norm::softmax(
            req(inputs, 0, "input")?,
            *axis,
            *legacy,
            norm::SoftmaxKind::Hardmax,
        )),
        LayerNorm { axis, epsilon } => one(norm::layer_norm(*axis, *epsilon, inputs)),
        BatchNorm { epsilon } => one(norm::batch_norm(*epsilon, inputs)),
        InstanceNorm { epsilon } => one(norm::instance_norm(*epsilon, inputs)),
        Lrn {
            alpha,
            beta,
            bias,
            size,
        } => one(norm::lrn(req(inputs, 0, "X")?, *alpha, *beta, *bias, *size)),
        MaxPool(p) => one(pool::pool(pool::PoolKind::Max, p, req(inputs, 0, "X")?)),
        AveragePool(p) => one(pool::pool(pool::PoolKind::Avg, p, req(inputs, 0, "X")?)),
        LpPool { attrs, p } => one(pool::pool(
            pool::PoolKind::Lp(*p),
            attrs,
            req(inputs, 0, "X")?,
        )),
        GlobalAveragePool => one(pool::global_pool(false, req(inputs, 0, "X")?)),
        GlobalMaxPool => one(pool::global_pool(true, req(inputs, 0, "X")?)),
        Flatten { axis } => one(shape_ops::flatten(req(inputs, 0, "input")?, *axis)),
        Reshape { allowzero } => one(shape_ops::reshape(
            req(inputs, 0, "data")?,
            req(inputs, 1, "shape")?,
            *allowzero,
        )),
        Transpose { perm } => one(shape_ops::transpose(req(inputs, 0, "data")?, perm)),
        Squeeze => one(shape_ops::squeeze(req(inputs, 0, "data")?, opt(inputs, 1))),
        Unsqueeze => one(shape_ops::unsqueeze(
            req(inputs, 0, "data")?,
            req(inputs, 1, "axes")?,
        )),
        Concat { axis } => one(shape_ops::concat(inputs, *axis)),
        Split { axis, num_outputs } => shape_ops::split(
            req(inputs, 0, "input")?,
            opt(inputs, 1),
            *axis,
            *num_outputs,
        ),
        Slice => one(shape_ops::slice(inputs)),
        Gather { axis } => one(shape_ops::gather(
            req(inputs, 0, "data")?,
            req(inputs, 1, "indices")?,
            *axis,
        )),
        GatherElements { axis } => one(shape_ops::gather_elements(
            req(inputs, 0, "data")?,
            req(inputs, 1, "indices")?,
            *axis,
        )),
        Shape { start, end } => one(shape_ops::shape_of(req(inputs, 0, "data")?, *start, *end)),
        Size => one(Ok(Tensor::scalar(req(inputs, 0, "data")?.len() as i64))),
        Expand => one(shape_ops::expand(
            req(inputs, 0, "input")?,
            req(inputs, 1, "shape")?,
        )),
        Tile => one(shape_ops::tile(
            req(inputs, 0, "input")?,
            req(inputs, 1, "repeats")?,
        )),
        Reduce {
            op,
            keepdims,
            noop_with_empty_axes,
        } => one(reduce::reduce(
            *op,
            req(inputs, 0, "data")?,
            opt(inputs, 1),
            *keepdims,
            *noop_with_empty_axes,
        )),
        ArgMax {
            axis,
            keepdims,
            select_last_index,
        } => one(reduce::arg_ext(
            req(inputs, 0, "data")?,
            *axis,
            *keepdims,
            *select_last_index,
            true,
        )),
        ArgMin {
            axis,
            keepdims,
            select_last_index,
        } => one(reduce::arg_ext(
            req(inputs, 0, "data")?,
            *axis,
            *keepdims,
            *select_last_index,
            false,
        )),
        ConstantOfShape { value } => one(shape_ops::constant_of_shape(
            req(inputs, 0, "input")?,
            value,
        )),
        Range => one(shape_ops::range(
            req(inputs, 0, "start")?,
            req(inputs, 1, "limit")?,
            req(inputs, 2, "delta")?,
        )),
        Pad { mode } => one(shape_ops::pad(*mode, inputs)),
        Resize(a) => one(resize::resize(a, inputs)),
        DepthToSpace { blocksize, crd } => one(shape_ops::depth_to_space(
            req(inputs, 0, "input")?,
            *blocksize,
            *crd,
        )),
        SpaceToDepth { blocksize, crd } => one(shape_ops::space_to_depth(
            req(inputs, 0, "input")?,
            *blocksize,
            *crd,
        )),
        TopK {
            axis,
            largest,
            sorted,
        } => reduce::top_k(
            req(inputs, 0, "X")?,
            req(inputs, 1, "K")?,
            *axis,
            *largest,
            *sorted,
        ),
        CumSum { exclusive, reverse } => one(reduce::cumsum(
            req(inputs, 0, "x")?,
            req(inputs, 1, "axis")?,
            *exclusive,
            *reverse,
        )),
        Trilu { upper } => one(shape_ops::trilu(
            req(inputs, 0, "input")?,
            opt(inputs, 1),
            *upper,
        )),
        QuantizeLinear {
            axis, out_dtype, ..
        } => one(quant::quantize_linear(*axis, *out_dtype, inputs)),
        DequantizeLinear { axis } => one(quant::dequantize_linear(*axis, inputs)),
        DynamicQuantizeLinear => quant::dynamic_quantize_linear(req(inputs, 0, "x")?),
        QLinearConv(a) => one(quant::qlinear_conv(a, inputs)),
        QLinearMatMul => one(quant::qlinear_matmul(inputs)),
        MatMulInteger => one(quant::matmul_integer(inputs)),
        ConvInteger(a) => one(quant::conv_integer(a, inputs)),
        QLinearGlobalAveragePool { channels_last } => {
            one(quant::qlinear_global_average_pool(*channels_last, inputs))
        }
        QGemm {
            alpha,
            trans_a,
            trans_b,
        } => one(quant::qgemm(*alpha, *trans_a, *trans_b, inputs)),
        QLinearBinary(b) => one(quant::qlinear_binary(*b, inputs)),
    }
}

/// A failure while running a graph: which node (name and op) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node '{node}' ({op}): {msg}")]
pub struct RunError {
    pub node: String,
    pub op: &'static str,
    pub msg: String,
}

/// Run a whole graph on named inputs; returns the graph outputs in order with their names.
pub fn run_graph(
    graph: &Graph,
    inputs: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor)>, RunError> {
    run_graph_with(graph, inputs, |_, _| {})
}

/// How the interpreter rounds float Conv / Gemm / MatMul sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatOrder {
    /// Sum in f64, round once (the reference's own, order-independent result).
    #[default]
    Exact,
    /// f32 fused multiply-adds in onnxruntime's MLAS order ([`mlas_order`]), where covered.
    Mlas,
}

/// Like [`run_graph`], and calls `observe(node, outputs)` after every evaluated node (including
/// inputs and constants), e.g. for calibration observers or debugging dumps.
pub fn run_graph_with<F>(
    graph: &Graph,
    inputs: &[(String, Tensor)],
    observe: F,
) -> Result<Vec<(String, Tensor)>, RunError>
where
    F: FnMut(NodeIndex, &[Tensor]),
{
    run_graph_ordered(graph, inputs, FloatOrder::Exact, observe)
}

/// [`run_graph_with`] with a choice of float summation order.
pub fn run_graph_ordered<F>(
    graph: &Graph,
    inputs: &[(String, Tensor)],
    order_mode: FloatOrder,
    mut observe: F,
) -> Result<Vec<(String, Tensor)>, RunError>
where
    F: FnMut(NodeIndex, &[Tensor]),
{
    let graph_err = |msg: String| RunError {
        node: String::new(),
        op: "Graph",
        msg,
    };
    let order = graph
        .topo_order()
        .map_err(|n| graph_err(format!("graph has a cycle through node '{n}'")))?;

    // Remaining uses of every outlet, so intermediates can be freed after their last use.
    let mut uses: HashMap<Outlet, usize> = HashMap::new();
    for &n in &order {
        for o in graph.operands(n).into_iter().flatten() {
            *uses.entry(o).or_default() += 1;
        }
    }
    let keep = |o: &Outlet| graph.is_graph_output(*o);

    let mut values: HashMap<Outlet, Cow<'_, Tensor>> = HashMap::new();
    for &n in &order {
        let node = graph.node(n);
        let node_err = |msg: String| RunError {
            node: node.name.clone(),
            op: node.op.name(),
            msg,
        };
        let outs: Vec<Cow<'_, Tensor>> = match &node.op {
            Op::Input => {
                let name = node
                    .outputs
                    .first()
                    .map(|v| v.name.as_str())
                    .unwrap_or(node.name.as_str());
                let t = inputs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, t)| t)
                    .ok_or_else(|| node_err(format!("graph input '{name}' was not provided")))?;
                if let Some(ty) = node.outputs.first().and_then(|v| v.ty.as_ref()) {
                    check_input(name, t, ty).map_err(node_err)?;
                }
                vec![Cow::Borrowed(t)]
            }
            Op::Const(t) => vec![Cow::Borrowed(t)],
            op => {
                let slots = graph.operands(n);
                let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(slots.len());
                for s in &slots {
                    match s {
                        None => args.push(None),
                        Some(o) => {
                            let v = values.get(o).ok_or_else(|| {
                                node_err(format!(
                                    "operand '{}' has not been computed",
                                    graph.value(*o).name
                                ))
                            })?;
                            args.push(Some(v.as_ref()));
                        }
                    }
                }
                // A bf16 node sees its data operands (input and weight) rounded to bfloat16.
                let rounded: Vec<Tensor> = if node.bf16 {
                    args.iter()
                        .take(2)
                        .flatten()
                        .map(|t| round_to_bf16(t))
                        .collect()
                } else {
                    vec![]
                };
                for (i, t) in rounded.iter().enumerate() {
                    args[i] = Some(t);
                }
                let res = match order_mode {
                    FloatOrder::Mlas => mlas_order::eval(graph, n, &args),
                    FloatOrder::Exact => None,
                }
                .unwrap_or_else(|| eval_op(op, &args))
                .map_err(node_err)?;
                if res.len() != op.num_outputs() {
                    return Err(node_err(format!(
                        "produced {} outputs, expected {}",
                        res.len(),
                        op.num_outputs()
                    )));
                }
                // Free operands whose last use this was.
                for o in slots.into_iter().flatten() {
                    if let Some(u) = uses.get_mut(&o) {
                        *u -= 1;
                        if *u == 0 && !keep(&o) {
                            values.remove(&o);
                        }
                    }
                }
                res.into_iter().map(Cow::Owned).collect()
            }
        };
        {
            let plain: Vec<&Tensor> = outs.iter().map(|c| c.as_ref()).collect();
            // The observer sees owned-or-borrowed tensors alike as a slice.
            if plain.len() == 1 {
                observe(n, std::slice::from_ref(plain[0]));
            } else {
                let v: Vec<Tensor> = plain.iter().map(|t| (*t).clone()).collect();
                observe(n, &v);
            }
        }
        for (i, t) in outs.into_iter().enumerate() {
            let o = Outlet::new(n, i);
            if uses.get(&o).copied().unwrap_or(0) > 0 || keep(&o) {
                values.insert(o, t);
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|(name, o)| {
            values
                .get(o)
                .map(|t| (name.clone(), t.as_ref().clone()))
                .ok_or_else(|| graph_err(format!("graph output '{name}' was not computed")))
        })
        .collect()
}

/// f32 values rounded to the nearest bfloat16 (ties to even), kept as f32; other dtypes as is.
pub fn round_to_bf16(t: &Tensor) -> Tensor {
    match t.view::<f32>() {
        Ok(v) if t.dtype() == octet_ir::DType::F32 => Tensor::from_vec(
            t.shape(),
            v.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect::<Vec<f32>>(),
        ),
        _ => t.clone(),
    }
}

/// Check a fed input against its declared type: dtype, rank and fixed extents.
fn check_input(name: &str, t: &Tensor, ty: &octet_ir::ValueType) -> R<()> {
    if t.dtype() != ty.dtype {
        return Err(format!(
            "input '{name}' is {} but the graph declares {}",
            t.dtype(),
            ty.dtype
        ));
    }
    let bad = t.rank() != ty.shape.rank()
        || ty
            .shape
            .0
            .iter()
            .zip(t.shape())
            .any(|(d, &x)| d.fixed().is_some_and(|f| f != x));
    if bad {
        return Err(format!(
            "input '{name}' has shape {:?} but the graph declares {}",
            t.shape(),
            ty.shape
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::{BinaryOp, DType, UnaryOp, ValueType};

    fn small_graph() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2]));
        let c = g.add_const("c", Tensor::from_vec(&[2], vec![1.0f32, 2.0]));
        let add = g.add_node("add", Op::Binary(BinaryOp::Add), vec!["s".into()]);
        g.connect(Outlet::new(x, 0), add, 0);
        g.connect(Outlet::new(c, 0), add, 1);
        let neg = g.add_node("neg", Op::Unary(UnaryOp::Neg), vec!["y".into()]);
        g.connect(Outlet::new(add, 0), neg, 0);
        g.outputs.push(("y".into(), Outlet::new(neg, 0)));
        g.outputs.push(("s".into(), Outlet::new(add, 0)));
        g
    }

    #[test]
    fn runs_a_small_graph_and_observes_nodes() {
        let g = small_graph();
        let x = Tensor::from_vec(&[2], vec![10.0f32, 20.0]);
        let mut seen = 0;
        let out = run_graph_with(&g, &[("x".into(), x)], |_, ts| seen += ts.len()).unwrap();
        assert_eq!(seen, 4);
        assert_eq!(out[0].0, "y");
        assert_eq!(out[0].1.view::<f32>().unwrap(), &[-11.0, -22.0]);
        assert_eq!(out[1].1.view::<f32>().unwrap(), &[11.0, 22.0]);
    }

    #[test]
    fn missing_input_and_bad_op_are_named() {
        let g = small_graph();
        let e = run_graph(&g, &[]).unwrap_err();
        assert!(e.to_string().contains("'x'"), "{e}");
        let e = run_graph(&g, &[("x".into(), Tensor::from_vec(&[2], vec![1i64, 2]))]).unwrap_err();
        assert!(e.msg.contains("i64"), "{e}");
        let e = eval_op(&Op::MatMul, &[None, None]).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
