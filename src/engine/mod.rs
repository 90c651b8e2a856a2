//! The execution engine: compiles a (lowered) graph into an execution plan and runs it.
//!
//! Compilation (`Engine::new`):
//! - every node gets an implementation chosen for the CPU's best ISA: the int8 SIMD kernels of
//!   `octet-kernels` for integer Conv / Gemm / MatMul (weights prepacked once), the fp32 kernels
//!   for float Conv / Gemm / MatMul with constant weights, native implementations
//!   ([`native`]) for the element-wise, normalisation, quantization and data-movement ops
//!   quantized CNN / BERT graphs run, and the reference interpreter for the rest (reported);
//! - fusion: dynamic quantization's `MatMulInteger -> Cast -> Mul(a_scale * w_scale) -> Add(bias)`
//!   becomes one int8 GEMM with a dequantizing f32 epilogue; a Relu after an fp32 Conv / Gemm goes
//!   into the kernel; a residual QLinearAdd (with its folded DQ-[Relu]-Q table) whose other
//!   operand is ready runs inside the int8 convolution producing its first operand, tile by tile
//!   (`conv2d_u8s8_add`, same bytes as conv then add);
//! - layout: 4-D values produced by convolutions stay NHWC (the kernels' layout) through
//!   element-wise followers (QLinearAdd, Quantize/DequantizeLinear, Relu, Clip) into the next
//!   convolution or global pooling, so conv chains convert NCHW <-> NHWC only at region
//!   boundaries;
//! - values live in numbered slots freed after their last use (liveness precomputed).
//!
//! Integer paths give bit-identical results for any thread count (kernels guarantee it).

pub mod conv_layout;
pub mod fp32;
pub mod int8;
mod layout;
pub mod matmul_runtime;
pub mod native;
mod pool;
pub mod report;

use crate::reference::{eval_op, RunError};
use octet_ir::{BinaryOp, DType, Graph, NodeIndex, Op, Outlet, Tensor, UnaryOp};
use octet_kernels::Kernel;
use report::{NodeReport, Report};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Kernel(#[from] octet_kernels::KernelError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Input(String),
}

enum Kind {
    Input,
    Int8(int8::Int8Node),
    /// Fused dynamic-quantization MatMul: args 0..4 of the MatMulInteger, arg 4 the activation
    /// scale.
    DynGemm {
        node: int8::Int8Node,
        w_scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        /// GELU fused into the epilogue (the BERT intermediate layer).
        gelu: bool,
        /// A per-column constant Mul after it (SmoothQuant's `1 / s`), fused too.
        post_scale: Option<Vec<f32>>,
    },
    /// MatMulInteger of two run-time operands + `Cast -> Mul(Mul(sa, sb))`: args 0..4 of the
    /// MatMulInteger, args 4 and 5 the (run-time, scalar) scales.
    RuntimeDeq(int8::Int8Node),
    F32 {
        node: fp32::F32Node,
        relu: bool,
        /// A fused residual Add's other operand (an index into `args`), added before the ReLU.
        res_arg: Option<usize>,
    },
    Native(native::NativeOp),
    /// A convolution whose only consumer is a QLinearAdd (with its folded DQ-[Relu]-Q tables):
    /// the add runs on each output tile right after the convolution's epilogue
    /// (`conv2d_u8s8_add`); `args[res_arg]` is the add's other operand.
    ConvAdd {
        node: int8::Int8Node,
        add: octet_kernels::QAdd,
        res_arg: usize,
    },
    Ref,
}

#[derive(Clone, Copy)]
enum Arg {
    Const(NodeIndex),
    Slot(usize),
}

struct Step {
    node: NodeIndex,
    /// Op label, e.g. "QLinearConv" or "MatMulInteger+Cast+Mul+Add".
    op: String,
    exec: &'static str,
    kind: Kind,
    args: Vec<Option<Arg>>,
    outs: Vec<Option<usize>>,
    free: Vec<usize>,
    in_nhwc: bool,
    out_nhwc: bool,
}

/// One step of the compiled plan, for profiling.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepInfo {
    pub node: String,
    pub op: String,
    pub exec: &'static str,
    /// The step's output is in NHWC (channels-last) layout.
    pub nhwc: bool,
}

/// A graph compiled to an execution plan.
pub struct Engine {
    graph: Graph,
    steps: Vec<Step>,
    n_slots: usize,
    outputs: Vec<(String, Arg)>,
    kernel: Kernel,
    report: Report,
    pool: Option<rayon::ThreadPool>,
    /// Idle workers spin (yielding) during a run instead of sleeping between parallel kernel
    /// calls; `OCTET_NO_SPIN=1` turns it off (e.g. on a machine with more threads than cores).
    spin: bool,
    /// Buffers recycled across runs (taken by a run, returned at its end).
    buffers: std::sync::Mutex<pool::Pool>,
}

fn only_consumer(g: &Graph, o: Outlet, outs: &HashSet<Outlet>) -> Option<(NodeIndex, usize)> {
    let c = g.consumers(o);
    (c.len() == 1 && !outs.contains(&o)).then(|| c[0])
}

fn const_f32(g: &Graph, o: Option<Outlet>) -> Option<Vec<f32>> {
    let o = o?;
    match &g.node(o.node).op {
        Op::Const(t) if t.dtype() == DType::F32 => t.view::<f32>().ok().map(|v| v.to_vec()),
        _ => None,
    }
}

/// Match the dequantization after an integer MatMul `m`: `Cast(f32) -> Mul(., sm)` with `sm`
/// itself a Mul (of scales). Returns (cast, mul, the cast's slot in mul, sm).
fn match_cast_mul_mul(
    g: &Graph,
    m: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(NodeIndex, NodeIndex, usize, Outlet)> {
    let (c, _) = only_consumer(g, Outlet::new(m, 0), outs)?;
    if !matches!(g.node(c).op, Op::Cast { to: DType::F32 }) {
        return None;
    }
    let (mul, slot) = only_consumer(g, Outlet::new(c, 0), outs)?;
    if !matches!(g.node(mul).op, Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let sm = g.operand(mul, 1 - slot)?;
    matches!(g.node(sm.node).op, Op::Binary(BinaryOp::Mul)).then_some((c, mul, slot, sm))
}

/// Match `MatMulInteger(q, W, zp) -> Cast(f32) -> Mul(., Mul(s, w_scale)) [-> Add(bias)]` where
/// s and zp come from one DynamicQuantizeLinear. Returns (nodes fused after `m`, final node,
/// scale outlet, w_scale, bias).
#[allow(clippy::type_complexity)]
fn match_dyn_matmul(
    g: &Graph,
    m: NodeIndex,
    n_cols: usize,
    outs: &HashSet<Outlet>,
) -> Option<(
    Vec<NodeIndex>,
    NodeIndex,
    Outlet,
    Vec<f32>,
    Option<Vec<f32>>,
)> {
    // The activation's scale and zero point come from one DynamicQuantizeLinear (its u8 values
    // may have been moved since: transposed, reshaped).
    let zp = g.operand(m, 2)?;
    if !matches!(g.node(zp.node).op, Op::DynamicQuantizeLinear) || zp.output != 2 {
        return None;
    }
    let scale = Outlet::new(zp.node, 1);
    let (c, mul, slot, sm) = match_cast_mul_mul(g, m, outs)?;
    if only_consumer(g, sm, outs)? != (mul, 1 - slot) {
        return None;
    }
    let (s0, s1) = (g.operand(sm.node, 0)?, g.operand(sm.node, 1)?);
    let ws = if s0 == scale {
        const_f32(g, Some(s1))?
    } else if s1 == scale {
        const_f32(g, Some(s0))?
    } else {
        return None;
    };
    if !(ws.len() == 1 || ws.len() == n_cols) {
        return None;
    }
    let mut fused = vec![c, sm.node, mul];
    let mut last = mul;
    let mut bias = None;
    if let Some((add, aslot)) = only_consumer(g, Outlet::new(mul, 0), outs) {
        if matches!(g.node(add).op, Op::Binary(BinaryOp::Add)) {
            if let Some(b) = const_f32(g, g.operand(add, 1 - aslot)) {
                let bshape = g.const_operand(add, 1 - aslot).unwrap().shape().to_vec();
                if b.len() == n_cols && bshape == [n_cols] {
                    bias = Some(b);
                    fused.push(add);
                    last = add;
                }
            }
        }
    }
    Some((fused, last, scale, ws, bias))
}

/// After a fused dynamic MatMul ending at `last` (N columns): the GELU chain reading it
/// (`Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5`), if any, and then, optionally, a Mul
/// by a constant scalar or `[N]` vector (SmoothQuant's `1 / s`, attention's query/key scale):
/// (fused nodes, new last node, GELU?, post-scale per column). None if neither is there.
#[allow(clippy::type_complexity)]
fn match_gemm_post(
    g: &Graph,
    last: NodeIndex,
    n_cols: usize,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex, bool, Option<Vec<f32>>)> {
    let x = Outlet::new(last, 0);
    if outs.contains(&x) {
        return None;
    }
    let mut fused = vec![];
    let mut end = last;
    let mut gelu = false;
    let cons = g.consumers(x);
    if cons.len() == 2 {
        if let Some(div) = cons
            .iter()
            .find(|(n, s)| *s == 0 && matches!(g.node(*n).op, Op::Binary(BinaryOp::Div)))
            .map(|c| c.0)
        {
            if let Some((more, m2)) = match_gelu(g, div, outs) {
                // The GELU's `Mul x` must be the other consumer.
                if cons.iter().all(|(n, _)| *n == div || more.contains(n)) {
                    fused.push(div);
                    fused.extend(more);
                    end = m2;
                    gelu = true;
                }
            }
        }
    }
    let mut post = None;
    if let Some((mul, slot)) = only_consumer(g, Outlet::new(end, 0), outs) {
        if matches!(g.node(mul).op, Op::Binary(BinaryOp::Mul)) {
            if let (Some(v), Some(t)) = (
                const_f32(g, g.operand(mul, 1 - slot)),
                g.const_operand(mul, 1 - slot),
            ) {
                let shape =
                    |o: Outlet| g.ty(o).and_then(|t| t.shape.as_fixed()).map(|s| s.to_vec());
                let same = shape(Outlet::new(end, 0)).is_some()
                    && shape(Outlet::new(end, 0)) == shape(Outlet::new(mul, 0));
                if same && v.len() == 1 && t.shape().iter().all(|&d| d == 1) {
                    post = Some(vec![v[0]; n_cols]);
                } else if same && v.len() == n_cols && t.shape() == [n_cols] {
                    post = Some(v);
                }
                if post.is_some() {
                    fused.push(mul);
                    end = mul;
                }
            }
        }
    }
    (gelu || post.is_some()).then_some((fused, end, gelu, post))
}

/// Match `Add(x, mask)` (either order) as the only consumer of `last`, where `mask` is an f32
/// value already computed that is one row `[1, .., 1, N]` or one matrix `[1, .., 1, M, N]` for
/// every batch of x (`[.., M, N]`), and the Add keeps x's shape: (the Add, mask).
fn match_row_bias_add(
    g: &Graph,
    last: NodeIndex,
    slot_of: &HashMap<Outlet, usize>,
    outs: &HashSet<Outlet>,
) -> Option<(NodeIndex, Outlet)> {
    let x = Outlet::new(last, 0);
    let (add, slot) = only_consumer(g, x, outs)?;
    if !matches!(g.node(add).op, Op::Binary(BinaryOp::Add)) {
        return None;
    }
    let m = g.operand(add, 1 - slot)?;
    if m == x || !slot_of.contains_key(&m) {
        return None;
    }
    let shape = |o: Outlet| g.ty(o).and_then(|t| t.shape.as_fixed()).map(|s| s.to_vec());
    let (xs, ms, os) = (shape(x)?, shape(m)?, shape(Outlet::new(add, 0))?);
    // A row [.., 1, N] or a matrix [.., M, N], the same for every batch (leading dims 1).
    let r = xs.len();
    if r < 2 || ms.is_empty() || ms.len() > r {
        return None;
    }
    let tail = &xs[r - ms.len().min(2)..];
    let lead = &ms[..ms.len() - ms.len().min(2)];
    let mine = &ms[ms.len() - ms.len().min(2)..];
    let fits = lead.iter().all(|&d| d == 1)
        && mine.last() == tail.last()
        && (mine.len() == 1 || mine[0] == 1 || mine[0] == tail[0]);
    (g.ty(m)?.dtype == DType::F32 && fits && os == xs).then_some((add, m))
}

/// Match `MatMulInteger -> Cast(f32) -> Mul(., Mul(sa, sb))` with `sa`, `sb` one-element f32
/// values (e.g. the two DynamicQuantizeLinear scales): (fused nodes, final node, [sa, sb]). The
/// scale product is fused too when the final Mul is its only consumer.
fn match_runtime_dequant(
    g: &Graph,
    m: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex, [Outlet; 2])> {
    let (c, mul, slot, sm) = match_cast_mul_mul(g, m, outs)?;
    let scalar = |o: Outlet| {
        g.ty(o).is_some_and(|t| {
            t.dtype == DType::F32
                && t.shape
                    .as_fixed()
                    .is_some_and(|s| s.iter().product::<usize>() == 1)
        })
    };
    let (sa, sb) = (g.operand(sm.node, 0)?, g.operand(sm.node, 1)?);
    if !(scalar(sa) && scalar(sb) && scalar(sm)) {
        return None;
    }
    // The product keeps the MatMul's shape only if the scale does not add dimensions.
    let (mo, mu) = (g.ty(Outlet::new(m, 0))?, g.ty(Outlet::new(mul, 0))?);
    if mo.shape.as_fixed()? != mu.shape.as_fixed()? {
        return None;
    }
    let mut fused = vec![c, mul];
    if only_consumer(g, sm, outs) == Some((mul, 1 - slot)) {
        fused.insert(1, sm.node);
    }
    Some((fused, mul, [sa, sb]))
}

fn const_scalar(g: &Graph, o: Option<Outlet>) -> Option<f32> {
    const_f32(g, o).filter(|v| v.len() == 1).map(|v| v[0])
}

/// The other operand of binary node `n` given one operand outlet.
fn other(g: &Graph, n: NodeIndex, o: Outlet) -> Option<Outlet> {
    let (a, b) = (g.operand(n, 0)?, g.operand(n, 1)?);
    if a == o {
        Some(b)
    } else if b == o {
        Some(a)
    } else {
        None
    }
}

/// Match `Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)` at the Div `d`: (fused nodes, last).
fn match_gelu(
    g: &Graph,
    d: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex)> {
    if !matches!(g.node(d).op, Op::Binary(BinaryOp::Div)) {
        return None;
    }
    let x = g.operand(d, 0)?;
    let c = const_scalar(g, g.operand(d, 1))?;
    if (c - std::f32::consts::SQRT_2).abs() > 1e-6 {
        return None;
    }
    let (e, _) = only_consumer(g, Outlet::new(d, 0), outs)?;
    if !matches!(g.node(e).op, Op::Unary(UnaryOp::Erf)) {
        return None;
    }
    let (a, _) = only_consumer(g, Outlet::new(e, 0), outs)?;
    if !matches!(g.node(a).op, Op::Binary(BinaryOp::Add))
        || const_scalar(g, other(g, a, Outlet::new(e, 0)))? != 1.0
    {
        return None;
    }
    let (m1, _) = only_consumer(g, Outlet::new(a, 0), outs)?;
    if !matches!(g.node(m1).op, Op::Binary(BinaryOp::Mul)) || other(g, m1, Outlet::new(a, 0))? != x
    {
        return None;
    }
    let (m2, _) = only_consumer(g, Outlet::new(m1, 0), outs)?;
    if !matches!(g.node(m2).op, Op::Binary(BinaryOp::Mul))
        || const_scalar(g, other(g, m2, Outlet::new(m1, 0)))? != 0.5
    {
        return None;
    }
    let shape = |o: Outlet| g.ty(o).and_then(|t| t.shape.as_fixed()).map(|s| s.to_vec());
    if shape(x)? != shape(Outlet::new(m2, 0))? {
        return None;
    }
    Some((vec![e, a, m1, m2], m2))
}

/// The start of a chain at the DQ `d`: `DequantizeLinear` (per tensor) of an 8-bit value,
/// then an optional `Relu`, each the only consumer of the one before: (the input's type, the
/// (scale, zero point), the Relu if any, the node after them).
fn dq_relu_head(
    g: &Graph,
    d: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(octet_ir::ValueType, (f32, i32), Vec<NodeIndex>, NodeIndex)> {
    if !matches!(g.node(d).op, Op::DequantizeLinear { .. }) {
        return None;
    }
    let x = g.ty(g.operand(d, 0)?)?.clone();
    if !matches!(x.dtype, DType::U8 | DType::I8) {
        return None;
    }
    let dq = native::NativeOp::build(g, d)?.qparams()?;
    let (mut c, _) = only_consumer(g, Outlet::new(d, 0), outs)?;
    let mut relu = vec![];
    if matches!(g.node(c).op, Op::Unary(UnaryOp::Relu)) {
        relu.push(c);
        c = only_consumer(g, Outlet::new(c, 0), outs)?.0;
    }
    Some((x, dq, relu, c))
}

/// Match `DequantizeLinear -> [Relu] -> QuantizeLinear` (per tensor, 8-bit) at the DQ `d`:
/// (fused nodes, last node, table, output dtype).
fn match_requant_chain(
    g: &Graph,
    d: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex, Vec<u8>, DType)> {
    let (x, dq, mut fused, c) = dq_relu_head(g, d, outs)?;
    if !matches!(g.node(c).op, Op::QuantizeLinear { .. }) {
        return None;
    }
    let q = native::NativeOp::build(g, c)?.qparams()?;
    let out_dt = g.ty(Outlet::new(c, 0))?.dtype;
    if !matches!(out_dt, DType::U8 | DType::I8) {
        return None;
    }
    let relu = !fused.is_empty();
    fused.push(c);
    let lut = native::requant_table(x.dtype == DType::I8, dq, relu, q, out_dt == DType::I8);
    Some((fused, c, lut, out_dt))
}

/// Match `DequantizeLinear (8-bit, per tensor, 4-D) -> [Relu] -> GlobalAveragePool` at the DQ
/// `d`: (fused nodes, last node, the fused op).
fn match_dq_gap(
    g: &Graph,
    d: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex, native::NativeOp)> {
    let (x, (scale, zp), mut fused, c) = dq_relu_head(g, d, outs)?;
    if x.shape.rank() != 4 || !matches!(native::NativeOp::build(g, c)?, native::NativeOp::Gap) {
        return None;
    }
    let relu = !fused.is_empty();
    fused.push(c);
    Some((fused, c, native::NativeOp::DqGap { scale, zp, relu }))
}

/// Match a residual `QLinearAdd(conv, other)` (either operand order) [`-> DequantizeLinear ->
/// [Relu] -> QuantizeLinear`] after the int8 convolution `n`, where `other` is already computed
/// (`slot_of`) and the add's SIMD kernel form exists: (fused nodes, last node, other, the add
/// with the convolution as operand A).
#[allow(clippy::type_complexity)]
fn match_residual(
    g: &Graph,
    n: NodeIndex,
    k: &int8::Int8Node,
    slot_of: &HashMap<Outlet, usize>,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex, Outlet, octet_kernels::QAdd)> {
    if !k.is_conv() || !matches!(k.out_dtype(), DType::U8 | DType::I8) {
        return None;
    }
    let (add, slot) = only_consumer(g, Outlet::new(n, 0), outs)?;
    if !matches!(g.node(add).op, Op::QLinearBinary(BinaryOp::Add)) || !(slot == 0 || slot == 3) {
        return None;
    }
    let other = g.operand(add, 3 - slot)?;
    if !slot_of.contains_key(&other) {
        return None;
    }
    let mut op = native::NativeOp::build(g, add)?;
    let mut fused = vec![add];
    let mut last = add;
    if let Some((d, _)) = only_consumer(g, Outlet::new(add, 0), outs) {
        if let Some((more, l, lut, dt)) = match_requant_chain(g, d, outs) {
            if op.compose(&lut, dt) {
                fused.push(d);
                fused.extend(more);
                last = l;
            }
        }
    }
    let (q, out_dt) = op.residual_add(slot)?;
    (out_dt == k.out_dtype()).then_some((fused, last, other, q))
}

/// Match `Add(conv, other)` (either order) as the only consumer of the fp32 convolution `n`,
/// where `other` is an f32 value already computed and conv, other and sum have one fixed shape:
/// (the Add, other).
fn match_f32_residual(
    g: &Graph,
    n: NodeIndex,
    slot_of: &HashMap<Outlet, usize>,
    outs: &HashSet<Outlet>,
) -> Option<(NodeIndex, Outlet)> {
    let x = Outlet::new(n, 0);
    let (add, slot) = only_consumer(g, x, outs)?;
    if !matches!(g.node(add).op, Op::Binary(BinaryOp::Add)) || slot > 1 {
        return None;
    }
    let other = g.operand(add, 1 - slot)?;
    if other == x || !slot_of.contains_key(&other) {
        return None;
    }
    let ty = |o: Outlet| {
        g.ty(o)
            .filter(|t| t.dtype == DType::F32)
            .and_then(|t| t.shape.as_fixed())
            .map(|s| s.to_vec())
    };
    let s = ty(x)?;
    (ty(other)? == s && ty(Outlet::new(add, 0))? == s).then_some((add, other))
}

/// Match `Where(IsNaN(s), c, s)` after the Softmax `s`: (fused nodes, last node, c).
fn match_softmax_nan(
    g: &Graph,
    s: NodeIndex,
    outs: &HashSet<Outlet>,
) -> Option<(Vec<NodeIndex>, NodeIndex, f32)> {
    let so = Outlet::new(s, 0);
    if outs.contains(&so) {
        return None;
    }
    let cons = g.consumers(so);
    if cons.len() != 2 {
        return None;
    }
    let isnan = cons
        .iter()
        .find(|(n, _)| matches!(g.node(*n).op, Op::Unary(UnaryOp::IsNaN)))?
        .0;
    let (w, wslot) = *cons.iter().find(|(n, _)| *n != isnan)?;
    if !matches!(g.node(w).op, Op::Where)
        || wslot != 2
        || only_consumer(g, Outlet::new(isnan, 0), outs)? != (w, 0)
    {
        return None;
    }
    let c = const_scalar(g, g.operand(w, 1))?;
    Some((vec![isnan, w], w, c))
}

impl Engine {
    /// Compile a static graph (shapes bound, constants folded). `threads` = None uses rayon's
    /// global pool (all cores).
    pub fn new(graph: Graph, threads: Option<usize>) -> Result<Engine, EngineError> {
        let kernel = Kernel::best()?;
        let g = &graph;
        let order = g
            .topo_order()
            .map_err(|n| EngineError::Input(format!("graph has a cycle through node '{n}'")))?;
        let graph_outs: HashSet<Outlet> = g.outputs.iter().map(|(_, o)| *o).collect();
        let mut slot_of: HashMap<Outlet, usize> = HashMap::new();
        let mut n_slots = 0usize;
        let mut skip: HashSet<NodeIndex> = HashSet::new();
        let mut steps: Vec<Step> = vec![];
        let mut nodes = vec![];
        let mut new_slot = |o: Outlet, slot_of: &mut HashMap<Outlet, usize>| {
            slot_of.insert(o, n_slots);
            n_slots += 1;
            n_slots - 1
        };
        for &n in &order {
            let node = g.node(n);
            if matches!(node.op, Op::Const(_)) || skip.contains(&n) {
                continue;
            }
            let operands = g.operands(n);
            let resolve = |o: &Option<Outlet>,
                           slot_of: &HashMap<Outlet, usize>|
             -> Result<Option<Arg>, EngineError> {
                match o {
                    None => Ok(None),
                    Some(o) => match &g.node(o.node).op {
                        Op::Const(_) => Ok(Some(Arg::Const(o.node))),
                        _ => slot_of.get(o).map(|&s| Some(Arg::Slot(s))).ok_or_else(|| {
                            EngineError::Input(format!("operand of '{}' not computed", node.name))
                        }),
                    },
                }
            };
            let mut args = operands
                .iter()
                .map(|o| resolve(o, &slot_of))
                .collect::<Result<Vec<_>, _>>()?;
            let mut out_node = n;
            let mut op_label = node.op.name().to_string();
            // A chain of nodes from this one that runs as one native op (its first operand in,
            // the last node's output out).
            let native_chain = match_dq_gap(g, n, &graph_outs)
                .or_else(|| {
                    match_requant_chain(g, n, &graph_outs).map(|(more, last, lut, out_dtype)| {
                        (more, last, native::NativeOp::Lut { lut, out_dtype })
                    })
                })
                .or_else(|| {
                    match_gelu(g, n, &graph_outs)
                        .map(|(more, last)| (more, last, native::NativeOp::Gelu))
                });
            let (kind, exec) = if matches!(node.op, Op::Input) {
                (Kind::Input, "input")
            } else if let Some((more, last, op)) = native_chain {
                for &f in &more {
                    skip.insert(f);
                    op_label.push('+');
                    op_label.push_str(g.node(f).op.name());
                }
                args.truncate(1);
                out_node = last;
                nodes.push(NodeReport::native(node, op.describe(), kernel.isa().name()));
                (Kind::Native(op), "native")
            } else {
                match int8::Int8Node::build(g, n, kernel) {
                    Ok(Some(k)) => {
                        nodes.push(NodeReport::int8(
                            node,
                            k.describe(),
                            k.kernel().isa().name(),
                        ));
                        // Fused only when the scales are computed before this step.
                        let runtime = k
                            .runtime()
                            .and_then(|_| match_runtime_dequant(g, n, &graph_outs))
                            .filter(|(_, _, s)| s.iter().all(|o| slot_of.contains_key(o)));
                        let fused = k
                            .gemm()
                            .filter(|x| x.is_integer_out())
                            .and_then(|x| match_dyn_matmul(g, n, x.n(), &graph_outs));
                        if let Some((mut more, mut last, scale)) = runtime {
                            // An attention mask added right after (one row broadcast over
                            // every batch and row): the epilogue's f32 bias.
                            let mask = match_row_bias_add(g, last, &slot_of, &graph_outs);
                            if let Some((add, _)) = mask {
                                more.push(add);
                                last = add;
                            }
                            for &f in &more {
                                skip.insert(f);
                                op_label.push('+');
                                op_label.push_str(g.node(f).op.name());
                            }
                            while args.len() < 4 {
                                args.push(None);
                            }
                            args.truncate(4);
                            for o in scale {
                                args.push(Some(Arg::Slot(slot_of[&o])));
                            }
                            if let Some((_, m)) = mask {
                                args.push(Some(Arg::Slot(slot_of[&m])));
                            }
                            out_node = last;
                            (Kind::RuntimeDeq(k), "int8")
                        } else {
                            match fused {
                                Some((mut more, mut last, scale, w_scale, bias)) => {
                                    let (gelu, post_scale) = match match_gemm_post(
                                        g,
                                        last,
                                        k.gemm().map_or(0, |x| x.n()),
                                        &graph_outs,
                                    ) {
                                        Some((m2, l2, gelu, post)) => {
                                            more.extend(m2);
                                            last = l2;
                                            (gelu, post)
                                        }
                                        None => (false, None),
                                    };
                                    for &f in &more {
                                        skip.insert(f);
                                        op_label.push('+');
                                        op_label.push_str(g.node(f).op.name());
                                    }
                                    while args.len() < 4 {
                                        args.push(None);
                                    }
                                    args.push(Some(Arg::Slot(slot_of[&scale])));
                                    out_node = last;
                                    (
                                        Kind::DynGemm {
                                            node: k,
                                            w_scale,
                                            bias,
                                            gelu,
                                            post_scale,
                                        },
                                        "int8",
                                    )
                                }
                                None => match match_residual(g, n, &k, &slot_of, &graph_outs) {
                                    Some((more, last, other, add)) => {
                                        for &f in &more {
                                            skip.insert(f);
                                            op_label.push('+');
                                            op_label.push_str(g.node(f).op.name());
                                        }
                                        if let Some(r) = nodes.last_mut() {
                                            r.kernel.push_str(" + fused residual qlinear_add");
                                        }
                                        out_node = last;
                                        let res_arg = args.len();
                                        args.push(Some(Arg::Slot(slot_of[&other])));
                                        (
                                            Kind::ConvAdd {
                                                node: k,
                                                add,
                                                res_arg,
                                            },
                                            "int8",
                                        )
                                    }
                                    None => (Kind::Int8(k), "int8"),
                                },
                            }
                        }
                    }
                    Err(why) => {
                        nodes.push(NodeReport::reference(node, Some(why)));
                        (Kind::Ref, "reference")
                    }
                    Ok(None) => match fp32::F32Node::build(g, n, kernel) {
                        Ok(Some(k)) => {
                            nodes.push(if k.is_bf16() {
                                NodeReport::bf16(node, k.describe(), k.kernel().isa().name())
                            } else {
                                NodeReport::fp32(node, k.describe(), k.kernel().isa().name())
                            });
                            let mut relu = false;
                            // A residual Add right after an fp32 convolution (the other operand
                            // already computed, every shape equal) goes into its epilogue.
                            let mut res_arg = None;
                            if k.is_conv() && !k.is_bf16() {
                                if let Some((add, other)) =
                                    match_f32_residual(g, n, &slot_of, &graph_outs)
                                {
                                    skip.insert(add);
                                    out_node = add;
                                    op_label.push_str("+Add");
                                    res_arg = Some(args.len());
                                    args.push(Some(Arg::Slot(slot_of[&other])));
                                    if let Some(r) = nodes.last_mut() {
                                        r.kernel.push_str(" + fused residual add");
                                    }
                                }
                            }
                            if let Some((r, _)) =
                                only_consumer(g, Outlet::new(out_node, 0), &graph_outs)
                            {
                                if matches!(g.node(r).op, Op::Unary(UnaryOp::Relu)) {
                                    skip.insert(r);
                                    out_node = r;
                                    relu = true;
                                    op_label.push_str("+Relu");
                                }
                            }
                            let exec = if k.is_bf16() { "bf16" } else { "fp32" };
                            (
                                Kind::F32 {
                                    node: k,
                                    relu,
                                    res_arg,
                                },
                                exec,
                            )
                        }
                        Ok(None) => match native::NativeOp::build(g, n) {
                            Some(native::NativeOp::Softmax)
                                if match_softmax_nan(g, n, &graph_outs).is_some() =>
                            {
                                let (more, last, c) = match_softmax_nan(g, n, &graph_outs).unwrap();
                                for &f in &more {
                                    skip.insert(f);
                                    op_label.push('+');
                                    op_label.push_str(g.node(f).op.name());
                                }
                                out_node = last;
                                let op = native::NativeOp::SoftmaxNanTo(c);
                                nodes.push(NodeReport::native(
                                    node,
                                    op.describe(),
                                    kernel.isa().name(),
                                ));
                                (Kind::Native(op), "native")
                            }
                            Some(mut op) => {
                                if matches!(op, native::NativeOp::Binary(BinaryOp::Add, true)) {
                                    if let Some((r, _)) =
                                        only_consumer(g, Outlet::new(n, 0), &graph_outs)
                                    {
                                        if matches!(g.node(r).op, Op::Unary(UnaryOp::Relu)) {
                                            op = native::NativeOp::AddRelu;
                                            skip.insert(r);
                                            out_node = r;
                                            op_label.push_str("+Relu");
                                        }
                                    }
                                }
                                if matches!(op, native::NativeOp::QAdd { .. }) {
                                    if let Some((d, _)) =
                                        only_consumer(g, Outlet::new(n, 0), &graph_outs)
                                    {
                                        if let Some((more, last, lut, dt)) =
                                            match_requant_chain(g, d, &graph_outs)
                                        {
                                            if op.compose(&lut, dt) {
                                                skip.insert(d);
                                                op_label.push_str("+DequantizeLinear");
                                                for &f in &more {
                                                    skip.insert(f);
                                                    op_label.push('+');
                                                    op_label.push_str(g.node(f).op.name());
                                                }
                                                out_node = last;
                                            }
                                        }
                                    }
                                }
                                nodes.push(NodeReport::native(
                                    node,
                                    op.describe(),
                                    kernel.isa().name(),
                                ));
                                (Kind::Native(op), "native")
                            }
                            None => {
                                nodes.push(NodeReport::reference(node, None));
                                (Kind::Ref, "reference")
                            }
                        },
                        Err(why) => {
                            nodes.push(NodeReport::reference(
                                node,
                                Some(format!("float node on the reference: {why}")),
                            ));
                            (Kind::Ref, "reference")
                        }
                    },
                }
            };
            let n_out = g.node(out_node).outputs.len();
            let outs = (0..n_out)
                .map(|k| {
                    let o = Outlet::new(out_node, k);
                    (!g.consumers(o).is_empty() || graph_outs.contains(&o))
                        .then(|| new_slot(o, &mut slot_of))
                })
                .collect();
            steps.push(Step {
                node: n,
                op: op_label,
                exec,
                kind,
                args,
                outs,
                free: vec![],
                in_nhwc: false,
                out_nhwc: false,
            });
        }
        let outputs = g
            .outputs
            .iter()
            .map(|(name, o)| {
                let a = match &g.node(o.node).op {
                    Op::Const(_) => Arg::Const(o.node),
                    _ => Arg::Slot(*slot_of.get(o).ok_or_else(|| {
                        EngineError::Input(format!("output '{name}' is not computed"))
                    })?),
                };
                Ok((name.clone(), a))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        // Liveness: free each slot after its last use (graph outputs never).
        let mut last_use: Vec<Option<usize>> = vec![None; n_slots];
        for (i, st) in steps.iter().enumerate() {
            for a in st.args.iter().flatten() {
                if let Arg::Slot(s) = a {
                    last_use[*s] = Some(i);
                }
            }
        }
        let out_slots: HashSet<usize> = outputs
            .iter()
            .filter_map(|(_, a)| match a {
                Arg::Slot(s) => Some(*s),
                _ => None,
            })
            .collect();
        for (s, lu) in last_use.iter().enumerate() {
            if let Some(i) = lu {
                if !out_slots.contains(&s) {
                    steps[*i].free.push(s);
                }
            }
        }
        let mut slot_rank = vec![0usize; n_slots];
        for (o, &s) in &slot_of {
            slot_rank[s] = g.ty(*o).map_or(0, |t| t.shape.rank());
        }
        layout::plan_nhwc(&mut steps, n_slots, &slot_rank, &out_slots);
        let pool = match threads {
            Some(t) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t.max(1))
                    .build()
                    .map_err(|e| EngineError::Input(format!("cannot start {t} threads: {e}")))?,
            ),
            None => None,
        };
        Ok(Engine {
            steps,
            n_slots,
            outputs,
            kernel,
            report: Report {
                isa: kernel.isa().name(),
                nodes,
            },
            pool,
            spin: std::env::var_os("OCTET_NO_SPIN").is_none(),
            buffers: Default::default(),
            graph,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Which kernel runs each node.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The compiled plan's steps (one per executed kernel; fused nodes share a step).
    pub fn steps(&self) -> Vec<StepInfo> {
        self.steps
            .iter()
            .map(|s| StepInfo {
                node: self.graph.node(s.node).name.clone(),
                op: s.op.clone(),
                exec: s.exec,
                nhwc: s.out_nhwc,
            })
            .collect()
    }

    /// Run on named inputs; returns the graph outputs in order.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError> {
        self.run_timed(inputs, None)
    }

    /// Run and add each step's wall time (seconds) to `times` (one entry per [`Engine::steps`]).
    pub fn run_profiled(
        &self,
        inputs: &[(String, Tensor)],
        times: &mut [f64],
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        self.run_timed(inputs, Some(times))
    }

    fn run_timed(
        &self,
        inputs: &[(String, Tensor)],
        times: Option<&mut [f64]>,
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        match &self.pool {
            Some(p) if p.current_num_threads() > 1 && self.spin => {
                p.install(|| spinning(p.current_num_threads(), || self.run_inner(inputs, times)))
            }
            Some(p) => p.install(|| self.run_inner(inputs, times)),
            None => self.run_inner(inputs, times),
        }
    }

    fn run_inner(
        &self,
        inputs: &[(String, Tensor)],
        times: Option<&mut [f64]>,
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        let mut bufs = std::mem::take(&mut *self.buffers.lock().unwrap());
        let r = self.run_with(inputs, times, &mut bufs);
        *self.buffers.lock().unwrap() = bufs;
        r
    }

    /// Bytes of intermediate buffers the engine keeps between runs.
    pub fn arena_bytes(&self) -> usize {
        self.buffers.lock().unwrap().bytes()
    }

    fn run_with(
        &self,
        inputs: &[(String, Tensor)],
        mut times: Option<&mut [f64]>,
        bufs: &mut pool::Pool,
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        let g = &self.graph;
        let mut values: Vec<Option<Tensor>> = (0..self.n_slots).map(|_| None).collect();
        // Whether a slot's tensor came from the pool (and so goes back to it when freed).
        let mut pooled = vec![false; self.n_slots];
        // Model inputs are read in place from the caller's tensors (no copy); a step that would
        // take one over (an in-place op, a view, a graph output) gets a pooled copy instead.
        let mut borrowed: Vec<Option<&Tensor>> = vec![None; self.n_slots];
        let cst = |n: NodeIndex| match &g.node(n).op {
            Op::Const(t) => t,
            _ => unreachable!("constant argument"),
        };
        for (i, st) in self.steps.iter().enumerate() {
            let t0 = times.as_ref().map(|_| std::time::Instant::now());
            let node_err = |msg: String| EngineError::Node {
                node: g.node(st.node).name.clone(),
                op: st.op.clone(),
                msg,
            };
            let outs: Vec<Tensor> = match &st.kind {
                Kind::Input => {
                    // Checked even when nothing reads it.
                    let t = self.input(st.node, inputs)?;
                    if let Some(Some(slot)) = st.outs.first() {
                        borrowed[*slot] = Some(t);
                        // What a step makes of it (a copy taken over, or an output of the same
                        // kind as its operand's) comes from the pool.
                        pooled[*slot] = true;
                    }
                    Vec::new()
                }
                Kind::Native(native::NativeOp::Reshape(shape)) if matches!(st.args[0], Some(Arg::Slot(s)) if st.free.contains(&s)) =>
                {
                    let Some(Arg::Slot(s)) = st.args[0] else {
                        unreachable!()
                    };
                    let t = values[s]
                        .take()
                        .or_else(|| borrowed[s].map(|t| bufs.copy_of(t)))
                        .ok_or_else(|| node_err("operand not computed".into()))?;
                    vec![t
                        .reshaped(shape)
                        .ok_or_else(|| node_err("bad reshape".into()))?]
                }
                Kind::Native(op)
                    if op.in_place()
                        && matches!(st.args[0], Some(Arg::Slot(s)) if st.free.contains(&s)) =>
                {
                    let Some(Arg::Slot(s)) = st.args[0] else {
                        unreachable!()
                    };
                    let mut t = values[s]
                        .take()
                        .or_else(|| borrowed[s].map(|t| bufs.copy_of(t)))
                        .ok_or_else(|| node_err("operand not computed".into()))?;
                    op.run_in_place(&self.kernel, &mut t).map_err(node_err)?;
                    vec![t]
                }
                kind => {
                    let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(st.args.len());
                    for a in &st.args {
                        args.push(match a {
                            None => None,
                            Some(Arg::Const(n)) => Some(cst(*n)),
                            Some(Arg::Slot(s)) => Some(
                                values[*s]
                                    .as_ref()
                                    .or(borrowed[*s])
                                    .ok_or_else(|| node_err("operand not computed".into()))?,
                            ),
                        });
                    }
                    match kind {
                        Kind::Int8(k) => {
                            vec![k
                                .run(&args, st.in_nhwc, st.out_nhwc, bufs)
                                .map_err(node_err)?]
                        }
                        Kind::ConvAdd { node, add, res_arg } => {
                            let other = args[*res_arg]
                                .ok_or_else(|| node_err("residual operand missing".into()))?;
                            vec![node
                                .run_residual(
                                    &args[..*res_arg],
                                    st.in_nhwc,
                                    st.out_nhwc,
                                    other,
                                    add,
                                    bufs,
                                )
                                .map_err(node_err)?]
                        }
                        Kind::DynGemm {
                            node,
                            w_scale,
                            bias,
                            gelu,
                            post_scale,
                        } => {
                            let s = args[4]
                                .and_then(|t| t.view::<f32>().ok())
                                .and_then(|v| v.first().copied())
                                .ok_or_else(|| node_err("activation scale missing".into()))?;
                            let deq = int8::Dequant {
                                a_scale: s,
                                w_scale,
                                bias: bias.as_deref(),
                                gelu: *gelu,
                                post_scale: post_scale.as_deref(),
                            };
                            let gm = node.gemm().expect("gemm");
                            vec![gm.run(&args[..4], Some(deq), bufs).map_err(node_err)?]
                        }
                        Kind::RuntimeDeq(node) => {
                            let scalar = |i: usize| {
                                args[i]
                                    .and_then(|t| t.view::<f32>().ok())
                                    .and_then(|v| v.first().copied())
                                    .ok_or_else(|| node_err("dequantization scale missing".into()))
                            };
                            // Mul(a_scale, b_scale), as the graph computes it.
                            let s = scalar(4)? * scalar(5)?;
                            let rt = node.runtime().expect("runtime matmul");
                            let mask = match args.get(6).copied().flatten() {
                                Some(t) => {
                                    Some(t.view::<f32>().map_err(|e| node_err(e.to_string()))?)
                                }
                                None => None,
                            };
                            vec![rt.run(&args[..4], Some(s), mask, bufs).map_err(node_err)?]
                        }
                        Kind::F32 {
                            node,
                            relu,
                            res_arg,
                        } => {
                            let (main, res) = match res_arg {
                                Some(r) => (&args[..*r], args[*r]),
                                None => (&args[..], None),
                            };
                            vec![node
                                .run(main, *relu, res, st.in_nhwc, st.out_nhwc, bufs)
                                .map_err(node_err)?]
                        }
                        Kind::Native(op) => op
                            .run(&self.kernel, &args, st.in_nhwc, bufs)
                            .map_err(node_err)?,
                        Kind::Ref => eval_op(&g.node(st.node).op, &args).map_err(node_err)?,
                        Kind::Input => unreachable!(),
                    }
                }
            };
            let from_pool = match &st.kind {
                Kind::Ref => false,
                Kind::Native(native::NativeOp::IsNaN) => false,
                Kind::Native(native::NativeOp::Reshape(_)) | Kind::Native(_) if matches!(st.args[0], Some(Arg::Slot(s)) if values[s].is_none() && borrowed[s].is_none()) =>
                {
                    // Took its operand over (in place / view): inherits its origin. (A model
                    // input is borrowed, never taken: what a step makes of one, a copy taken
                    // over included, comes from the pool.)
                    matches!(st.args[0], Some(Arg::Slot(s)) if pooled[s])
                }
                _ => true,
            };
            for &s in &st.free {
                if let Some(t) = values[s].take() {
                    if pooled[s] {
                        bufs.give(t);
                    }
                }
            }
            for (k, (t, slot)) in outs.into_iter().zip(&st.outs).enumerate() {
                if let Some(s) = slot {
                    values[*s] = Some(t);
                    // DynamicQuantizeLinear's scale and zero point are fresh scalars.
                    pooled[*s] = from_pool && k == 0;
                }
            }
            if let (Some(ts), Some(t0)) = (times.as_deref_mut(), t0) {
                ts[i] += t0.elapsed().as_secs_f64();
            }
        }
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, (name, a))| {
                let t = match a {
                    Arg::Const(n) => cst(*n).clone(),
                    Arg::Slot(s)
                        if self.outputs[i + 1..]
                            .iter()
                            .any(|(_, b)| matches!(b, Arg::Slot(x) if x == s)) =>
                    {
                        values[*s]
                            .clone()
                            .or_else(|| borrowed[*s].cloned())
                            .ok_or_else(|| {
                                EngineError::Input(format!("output '{name}' was not computed"))
                            })?
                    }
                    Arg::Slot(s) => values[*s]
                        .take()
                        .or_else(|| borrowed[*s].cloned())
                        .ok_or_else(|| {
                            EngineError::Input(format!("output '{name}' was not computed"))
                        })?,
                };
                Ok((name.clone(), t))
            })
            .collect()
    }

    fn input<'a>(
        &self,
        n: NodeIndex,
        inputs: &'a [(String, Tensor)],
    ) -> Result<&'a Tensor, EngineError> {
        let node = self.graph.node(n);
        let name = &node.outputs[0].name;
        let t = inputs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t)
            .ok_or_else(|| EngineError::Input(format!("model input '{name}' was not given")))?;
        if let Some(ty) = &node.outputs[0].ty {
            let ok = t.dtype() == ty.dtype
                && t.rank() == ty.shape.rank()
                && ty
                    .shape
                    .0
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &v)| d.fixed().is_none_or(|f| f == v));
            if !ok {
                return Err(EngineError::Input(format!(
                    "input '{name}' must be {ty}, got {} {:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
        }
        Ok(t)
    }
}

/// Runs `f` on the current worker while the pool's other workers spin, taking the kernels'
/// parallel jobs the moment they appear, instead of sleeping between steps: a sleeping rayon
/// worker needs a wake-up for every parallel kernel call (all-MiniLM-L6-v2, 2 threads: 244
/// steps, 8.75 -> 7.77 ms with spinning). After 64 idle polls a spinner yields its core to any
/// other runnable thread each round. The spinners end when `f` returns.
fn spinning<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let me = rayon::current_thread_index();
    let done = AtomicBool::new(false);
    // One bit per worker that already runs a spinner (a spinner can pick up another spinner job
    // while it polls; that one returns at once).
    let busy = AtomicUsize::new(0);
    rayon::scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| {
                let idx = rayon::current_thread_index();
                if idx == me {
                    return; // the thread running `f` picked up its own spinner job
                }
                let bit = 1usize << (idx.unwrap_or(0) % usize::BITS as usize);
                if busy.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle = 0;
                    } else if idle < 64 {
                        idle += 1;
                        std::hint::spin_loop();
                    } else {
                        // Still polling, but let another runnable thread have the core.
                        std::thread::yield_now();
                    }
                }
            });
        }
        let r = f();
        done.store(true, Ordering::Release);
        r
    })
}
