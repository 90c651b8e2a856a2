//! The training tape: layers built from an octet IR graph, each with a forward pass (caching
//! what its backward needs) and a reverse-mode backward pass. Plain f32 NCHW loops; rayon over
//! the samples of a batch for convolutions.

use super::fake_quant::{fake_quant, weight_params, FqParams, RangeObserver};
use octet_ir::infer::{conv_out_dim, resolve_pads};
use octet_ir::{BinaryOp, ConvGeom, Graph, NodeIndex, Op, Outlet, PoolAttrs, UnaryOp};
use rayon::prelude::*;
use std::collections::HashMap;

/// A dense f32 array.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buf {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Buf {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Buf { shape, data }
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Buf {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }
}

/// A trainable parameter (a Conv/Gemm weight or bias initializer).
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// The `Op::Const` node it came from.
    pub const_node: NodeIndex,
    /// Weights are fake-quantized; biases are not.
    pub is_weight: bool,
    /// Output-channel axis for per-channel weight quantization.
    pub ch_axis: usize,
}

/// How fake quantization is applied in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FqMode {
    pub weights: bool,
    pub activations: bool,
    /// Update the activation observers: Some(momentum) moving average, None running min/max.
    pub observe: Option<Option<f32>>,
}

impl FqMode {
    pub const FP32: FqMode = FqMode {
        weights: false,
        activations: false,
        observe: None,
    };
}

/// Weight/activation quantization grid settings used by the tape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FqSettings {
    pub weight_bits: u32,
    pub per_channel: bool,
    pub reduce_range: bool,
    pub activation_bits: u32,
}

#[derive(Clone, Debug)]
enum Src {
    Val(usize),
    Const(Buf),
}

#[derive(Clone, Debug)]
enum Kind {
    Conv {
        geom: ConvGeom,
        group: usize,
        w: usize,
        b: Option<usize>,
    },
    /// Gemm, or MatMul with a constant right operand (alpha 1, no bias).
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
        w: usize,
        b: Option<usize>,
    },
    Binary(BinaryOp),
    Relu,
    Clip(f32, f32),
    MaxPool(PoolAttrs),
    AvgPool(PoolAttrs),
    Gap,
    Flatten(usize),
    Reshape(Vec<i64>, bool),
    Identity,
}

#[derive(Clone, Debug)]
struct Layer {
    name: String,
    kind: Kind,
    inputs: Vec<Src>,
    out: usize,
    /// Observer index for the fake-quantized activation input (Conv/Gemm).
    obs: Option<usize>,
}

#[derive(Clone, Debug, Default)]
struct Cache {
    /// Fake-quantized input and its STE mask (empty when not quantized).
    xq: Option<(Buf, Vec<bool>)>,
    /// Fake-quantized weight and its STE mask.
    wq: Option<(Vec<f32>, Vec<bool>)>,
    /// MaxPool: flat input index of each output (usize::MAX = only padding).
    argmax: Vec<usize>,
    /// Resolved pads for conv/pool.
    pads: Vec<usize>,
}

/// The training program for one graph.
#[derive(Clone, Debug)]
pub struct Tape {
    layers: Vec<Layer>,
    n_values: usize,
    output: usize,
    pub input_name: String,
    pub observers: Vec<RangeObserver>,
    pub settings: FqSettings,
    vals: Vec<Option<Buf>>,
    caches: Vec<Cache>,
}

fn unsupported(what: &str) -> String {
    format!("qat: {what}")
}

fn const_f32(g: &Graph, n: NodeIndex, slot: usize) -> Option<Buf> {
    let t = g.const_operand(n, slot)?;
    let v = t.to_f64_vec();
    Some(Buf::new(
        t.shape().to_vec(),
        v.into_iter().map(|x| x as f32).collect(),
    ))
}

impl Tape {
    /// Build the tape and the trainable parameters from a graph with one f32 input and one
    /// output. Conv/Gemm/MatMul weights (and biases) must be constants.
    pub fn from_graph(g: &Graph, settings: FqSettings) -> Result<(Tape, Vec<Param>), String> {
        if g.inputs.len() != 1 || g.outputs.len() != 1 {
            return Err(unsupported(
                "the graph must have exactly one input and one output",
            ));
        }
        let order = g.topo_order()?;
        let mut ids: HashMap<Outlet, usize> = HashMap::new();
        let input = g.inputs[0];
        ids.insert(Outlet::new(input, 0), 0);
        let input_name = g.node(input).outputs[0].name.clone();
        let mut n_values = 1;
        let mut params: Vec<Param> = vec![];
        let mut param_of: HashMap<NodeIndex, usize> = HashMap::new();
        let mut layers = vec![];
        let mut n_obs = 0;
        for n in order {
            let node = g.node(n);
            if matches!(node.op, Op::Input | Op::Const(_)) {
                continue;
            }
            let ops = g.operands(n);
            let src = |slot: usize| -> Result<Src, String> {
                let o = ops.get(slot).copied().flatten().ok_or_else(|| {
                    unsupported(&format!("{}: missing operand {slot}", node.name))
                })?;
                if let Some(&id) = ids.get(&o) {
                    return Ok(Src::Val(id));
                }
                const_f32(g, n, slot).map(Src::Const).ok_or_else(|| {
                    unsupported(&format!("{}: operand {slot} is not reachable", node.name))
                })
            };
            let mut param =
                |slot: usize, is_weight: bool, ch_axis: usize| -> Result<Option<usize>, String> {
                    let Some(o) = ops.get(slot).copied().flatten() else {
                        return Ok(None);
                    };
                    if !matches!(g.node(o.node).op, Op::Const(_)) {
                        return Err(unsupported(&format!(
                            "{}: operand {slot} must be a constant to be trained",
                            node.name
                        )));
                    }
                    if let Some(&p) = param_of.get(&o.node) {
                        return Ok(Some(p));
                    }
                    let b = const_f32(g, n, slot).unwrap();
                    params.push(Param {
                        name: g.node(o.node).outputs[0].name.clone(),
                        shape: b.shape,
                        data: b.data,
                        const_node: o.node,
                        is_weight,
                        ch_axis,
                    });
                    param_of.insert(o.node, params.len() - 1);
                    Ok(Some(params.len() - 1))
                };
            let (kind, inputs, obs) = match &node.op {
                Op::Conv(a) => {
                    let w = param(1, true, 0)?.unwrap();
                    let b = param(2, false, 0)?;
                    n_obs += 1;
                    (
                        Kind::Conv {
                            geom: a.geom.clone(),
                            group: a.group.max(1),
                            w,
                            b,
                        },
                        vec![src(0)?],
                        Some(n_obs - 1),
                    )
                }
                Op::Gemm {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                } => {
                    let w = param(1, true, if *trans_b { 0 } else { 1 })?.unwrap();
                    let b = param(2, false, 0)?;
                    n_obs += 1;
                    (
                        Kind::Gemm {
                            alpha: *alpha,
                            beta: *beta,
                            trans_a: *trans_a,
                            trans_b: *trans_b,
                            w,
                            b,
                        },
                        vec![src(0)?],
                        Some(n_obs - 1),
                    )
                }
                Op::MatMul => {
                    let w = param(1, true, 1)?.unwrap();
                    n_obs += 1;
                    (
                        Kind::Gemm {
                            alpha: 1.0,
                            beta: 0.0,
                            trans_a: false,
                            trans_b: false,
                            w,
                            b: None,
                        },
                        vec![src(0)?],
                        Some(n_obs - 1),
                    )
                }
                Op::Binary(op @ (BinaryOp::Add | BinaryOp::Mul | BinaryOp::Sub)) => {
                    (Kind::Binary(*op), vec![src(0)?, src(1)?], None)
                }
                Op::Unary(UnaryOp::Relu) => (Kind::Relu, vec![src(0)?], None),
                Op::Clip => {
                    let lo = const_f32(g, n, 1)
                        .map(|b| b.data[0])
                        .unwrap_or(f32::NEG_INFINITY);
                    let hi = const_f32(g, n, 2)
                        .map(|b| b.data[0])
                        .unwrap_or(f32::INFINITY);
                    if ops.get(1).copied().flatten().is_some() && lo == f32::NEG_INFINITY
                        || ops.get(2).copied().flatten().is_some() && hi == f32::INFINITY
                    {
                        return Err(unsupported(&format!(
                            "{}: Clip bounds must be constants",
                            node.name
                        )));
                    }
                    (Kind::Clip(lo, hi), vec![src(0)?], None)
                }
                Op::MaxPool(p) => (Kind::MaxPool(p.clone()), vec![src(0)?], None),
                Op::AveragePool(p) => (Kind::AvgPool(p.clone()), vec![src(0)?], None),
                Op::GlobalAveragePool => (Kind::Gap, vec![src(0)?], None),
                Op::Flatten { axis } => {
                    if *axis < 0 {
                        return Err(unsupported("Flatten with a negative axis"));
                    }
                    (Kind::Flatten(*axis as usize), vec![src(0)?], None)
                }
                Op::Reshape { allowzero } => {
                    let spec = g
                        .const_operand(n, 1)
                        .map(|t| t.to_i64_vec())
                        .ok_or_else(|| {
                            unsupported(&format!("{}: Reshape shape must be constant", node.name))
                        })?;
                    (Kind::Reshape(spec, *allowzero), vec![src(0)?], None)
                }
                Op::Unary(UnaryOp::Identity) => (Kind::Identity, vec![src(0)?], None),
                other => {
                    return Err(unsupported(&format!(
                        "{}: no gradient for {:?}",
                        node.name,
                        std::mem::discriminant(other)
                    )))
                }
            };
            ids.insert(Outlet::new(n, 0), n_values);
            layers.push(Layer {
                name: node.name.clone(),
                kind,
                inputs,
                out: n_values,
                obs,
            });
            n_values += 1;
        }
        let output = *ids
            .get(&g.outputs[0].1)
            .ok_or_else(|| unsupported("the output is not computed by a supported op"))?;
        let nl = layers.len();
        Ok((
            Tape {
                layers,
                n_values,
                output,
                input_name,
                observers: vec![RangeObserver::default(); n_obs],
                settings,
                vals: vec![],
                caches: vec![Cache::default(); nl],
            },
            params,
        ))
    }

    pub fn n_observers(&self) -> usize {
        self.observers.len()
    }

    fn val<'a>(vals: &'a [Option<Buf>], s: &'a Src) -> &'a Buf {
        match s {
            Src::Val(i) => vals[*i].as_ref().expect("value computed"),
            Src::Const(b) => b,
        }
    }

    /// The weight as used by the forward pass (fake-quantized if asked).
    pub fn effective_weight(&self, p: &Param, quantize: bool) -> (Vec<f32>, Vec<bool>) {
        let mut out = p.data.clone();
        let mut mask = vec![true; out.len()];
        if quantize && p.is_weight {
            let s = &self.settings;
            let (fp, inner) = weight_params(
                &p.data,
                &p.shape,
                p.ch_axis,
                s.per_channel,
                s.weight_bits,
                s.reduce_range,
            );
            fake_quant(&p.data, &fp, inner, &mut out, &mut mask);
        }
        (out, mask)
    }

    /// Forward pass over a batch; returns the output.
    pub fn forward(&mut self, x: Buf, params: &[Param], mode: FqMode) -> Buf {
        let mut vals: Vec<Option<Buf>> = vec![None; self.n_values];
        vals[0] = Some(x);
        for li in 0..self.layers.len() {
            let layer = &self.layers[li];
            let mut cache = Cache::default();
            let x = Self::val(&vals, &layer.inputs[0]);
            // Fake-quantize the activation input of Conv/Gemm.
            let xq_owned;
            let xin: &Buf =
                if let (Some(o), true) = (layer.obs, mode.activations || mode.observe.is_some()) {
                    if let Some(m) = mode.observe {
                        self.observers[o].update(&x.data, m);
                    }
                    if mode.activations {
                        let p: FqParams = self.observers[o].params(self.settings.activation_bits);
                        let mut d = vec![0.0; x.data.len()];
                        let mut mask = vec![false; x.data.len()];
                        fake_quant(&x.data, &[p], 1, &mut d, &mut mask);
                        xq_owned = Buf::new(x.shape.clone(), d);
                        cache.xq = Some((xq_owned.clone(), mask));
                        cache.xq.as_ref().map(|(b, _)| b).unwrap()
                    } else {
                        x
                    }
                } else {
                    x
                };
            let y = match &layer.kind {
                Kind::Conv { geom, group, w, b } => {
                    let p = &params[*w];
                    let (wq, wm) = self.effective_weight(p, mode.weights);
                    let bias = b.map(|b| params[b].data.as_slice());
                    let (y, pads) = conv_forward(xin, &wq, &p.shape, bias, geom, *group);
                    cache.pads = pads;
                    cache.wq = Some((wq, wm));
                    y
                }
                Kind::Gemm {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                    w,
                    b,
                } => {
                    let p = &params[*w];
                    let (wq, wm) = self.effective_weight(p, mode.weights);
                    let bias = b.map(|b| params[b].data.as_slice());
                    let y =
                        gemm_forward(xin, &wq, &p.shape, bias, *alpha, *beta, *trans_a, *trans_b);
                    cache.wq = Some((wq, wm));
                    y
                }
                Kind::Binary(op) => {
                    let a = xin;
                    let b = Self::val(&vals, &layer.inputs[1]);
                    let shape = bcast_shape(&a.shape, &b.shape);
                    let ia = bcast_map(&shape, &a.shape);
                    let ib = bcast_map(&shape, &b.shape);
                    let data = ia
                        .iter()
                        .zip(&ib)
                        .map(|(&i, &j)| match op {
                            BinaryOp::Add => a.data[i] + b.data[j],
                            BinaryOp::Sub => a.data[i] - b.data[j],
                            _ => a.data[i] * b.data[j],
                        })
                        .collect();
                    Buf::new(shape, data)
                }
                Kind::Relu => Buf::new(
                    xin.shape.clone(),
                    xin.data.iter().map(|&v| v.max(0.0)).collect(),
                ),
                Kind::Clip(lo, hi) => Buf::new(
                    xin.shape.clone(),
                    xin.data.iter().map(|&v| v.max(*lo).min(*hi)).collect(),
                ),
                Kind::MaxPool(pa) => {
                    let (y, am, pads) = pool_forward(xin, pa, true);
                    cache.argmax = am;
                    cache.pads = pads;
                    y
                }
                Kind::AvgPool(pa) => {
                    let (y, _, pads) = pool_forward(xin, pa, false);
                    cache.pads = pads;
                    y
                }
                Kind::Gap => {
                    let (n, c) = (xin.shape[0], xin.shape[1]);
                    let hw: usize = xin.shape[2..].iter().product();
                    let data = (0..n * c)
                        .map(|i| {
                            (xin.data[i * hw..(i + 1) * hw]
                                .iter()
                                .map(|&v| v as f64)
                                .sum::<f64>()
                                / hw as f64) as f32
                        })
                        .collect();
                    let mut shape = vec![n, c];
                    shape.extend(std::iter::repeat_n(1, xin.shape.len() - 2));
                    Buf::new(shape, data)
                }
                Kind::Flatten(axis) => {
                    let a: usize = xin.shape[..*axis].iter().product();
                    Buf::new(vec![a, xin.data.len() / a.max(1)], xin.data.clone())
                }
                Kind::Reshape(spec, allowzero) => {
                    Buf::new(reshape_dims(&xin.shape, spec, *allowzero), xin.data.clone())
                }
                Kind::Identity => xin.clone(),
            };
            let out = layer.out;
            vals[out] = Some(y);
            self.caches[li] = cache;
        }
        let y = vals[self.output].clone().expect("output computed");
        self.vals = vals;
        y
    }

    /// Backward pass from the gradient of the output (after a `forward`). Returns the input
    /// gradient and accumulates parameter gradients into `grads` (one vector per parameter).
    pub fn backward(&mut self, dy: Buf, params: &[Param], grads: &mut [Vec<f32>]) -> Buf {
        let mut gv: Vec<Option<Vec<f32>>> = vec![None; self.n_values];
        gv[self.output] = Some(dy.data);
        let vals = &self.vals;
        for li in (0..self.layers.len()).rev() {
            let layer = &self.layers[li];
            let Some(g) = gv[layer.out].take() else {
                continue;
            };
            let cache = &self.caches[li];
            let x = Self::val(vals, &layer.inputs[0]);
            let xin: &Buf = cache.xq.as_ref().map(|(b, _)| b).unwrap_or(x);
            let y = vals[layer.out].as_ref().unwrap();
            let mut dx: Vec<f32> = match &layer.kind {
                Kind::Conv { geom, group, w, b } => {
                    let (wq, wm) = cache.wq.as_ref().unwrap();
                    let p = &params[*w];
                    let (dx, dw, db) =
                        conv_backward(xin, wq, &p.shape, &g, &y.shape, geom, *group, &cache.pads);
                    for (j, d) in dw.iter().enumerate() {
                        if wm[j] {
                            grads[*w][j] += d;
                        }
                    }
                    if let Some(b) = b {
                        for (j, d) in db.iter().enumerate() {
                            grads[*b][j] += d;
                        }
                    }
                    dx
                }
                Kind::Gemm {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                    w,
                    b,
                } => {
                    let (wq, wm) = cache.wq.as_ref().unwrap();
                    let p = &params[*w];
                    let (m, k, nn) = gemm_dims(&xin.shape, &p.shape, *trans_a, *trans_b);
                    let mut dx = vec![0f32; m * k];
                    let mut dw = vec![0f32; k * nn];
                    for i in 0..m {
                        for kk in 0..k {
                            let a = if *trans_a {
                                xin.data[kk * m + i]
                            } else {
                                xin.data[i * k + kk]
                            };
                            let mut acc = 0f32;
                            for j in 0..nn {
                                let widx = if *trans_b { j * k + kk } else { kk * nn + j };
                                let gij = g[i * nn + j] * alpha;
                                acc += gij * wq[widx];
                                dw[widx] += a * gij;
                            }
                            if *trans_a {
                                dx[kk * m + i] = acc;
                            } else {
                                dx[i * k + kk] = acc;
                            }
                        }
                    }
                    for (j, d) in dw.iter().enumerate() {
                        if wm[j] {
                            grads[*w][j] += d;
                        }
                    }
                    if let Some(b) = b {
                        let blen = params[*b].data.len();
                        for i in 0..m {
                            for j in 0..nn {
                                let bi = if blen == nn {
                                    j
                                } else if blen == 1 {
                                    0
                                } else {
                                    i * nn + j
                                };
                                grads[*b][bi] += beta * g[i * nn + j];
                            }
                        }
                    }
                    dx
                }
                Kind::Binary(op) => {
                    let b = Self::val(vals, &layer.inputs[1]);
                    let ia = bcast_map(&y.shape, &xin.shape);
                    let ib = bcast_map(&y.shape, &b.shape);
                    let mut da = vec![0f32; xin.data.len()];
                    let mut dbv = vec![0f32; b.data.len()];
                    for (o, (&i, &j)) in ia.iter().zip(&ib).enumerate() {
                        match op {
                            BinaryOp::Add => {
                                da[i] += g[o];
                                dbv[j] += g[o];
                            }
                            BinaryOp::Sub => {
                                da[i] += g[o];
                                dbv[j] -= g[o];
                            }
                            _ => {
                                da[i] += g[o] * b.data[j];
                                dbv[j] += g[o] * xin.data[i];
                            }
                        }
                    }
                    if let Src::Val(bi) = layer.inputs[1] {
                        accumulate(&mut gv, bi, dbv);
                    }
                    da
                }
                Kind::Relu => g
                    .iter()
                    .zip(&xin.data)
                    .map(|(&d, &v)| if v > 0.0 { d } else { 0.0 })
                    .collect(),
                Kind::Clip(lo, hi) => g
                    .iter()
                    .zip(&xin.data)
                    .map(|(&d, &v)| if v > *lo && v < *hi { d } else { 0.0 })
                    .collect(),
                Kind::MaxPool(_) => {
                    let mut dx = vec![0f32; xin.data.len()];
                    for (o, &i) in cache.argmax.iter().enumerate() {
                        if i != usize::MAX {
                            dx[i] += g[o];
                        }
                    }
                    dx
                }
                Kind::AvgPool(pa) => avgpool_backward(xin, &y.shape, &g, pa, &cache.pads),
                Kind::Gap => {
                    let hw: usize = xin.shape[2..].iter().product();
                    let mut dx = vec![0f32; xin.data.len()];
                    for (i, &d) in g.iter().enumerate() {
                        for v in &mut dx[i * hw..(i + 1) * hw] {
                            *v = d / hw as f32;
                        }
                    }
                    dx
                }
                Kind::Flatten(_) | Kind::Reshape(..) | Kind::Identity => g,
            };
            if let Some((_, mask)) = &cache.xq {
                for (d, &m) in dx.iter_mut().zip(mask) {
                    if !m {
                        *d = 0.0;
                    }
                }
            }
            if let Src::Val(xi) = layer.inputs[0] {
                accumulate(&mut gv, xi, dx);
            }
        }
        let shape = self.vals[0].as_ref().unwrap().shape.clone();
        let n: usize = shape.iter().product();
        Buf::new(shape, gv[0].take().unwrap_or_else(|| vec![0.0; n]))
    }

    /// Layer names, in execution order (for reports).
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name.clone()).collect()
    }
}

fn accumulate(gv: &mut [Option<Vec<f32>>], i: usize, d: Vec<f32>) {
    match &mut gv[i] {
        Some(acc) => {
            for (a, b) in acc.iter_mut().zip(d) {
                *a += b;
            }
        }
        slot @ None => *slot = Some(d),
    }
}

fn bcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            da.max(db)
        })
        .collect()
}

/// For each flat index of `out`, the flat index in the broadcast operand of shape `inp`.
fn bcast_map(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut strides = vec![0usize; r];
    let mut s = 1;
    for i in (0..inp.len()).rev() {
        let oi = i + r - inp.len();
        strides[oi] = if inp[i] == 1 { 0 } else { s };
        s *= inp[i];
    }
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; r];
    let mut res = Vec::with_capacity(total);
    for _ in 0..total {
        res.push(idx.iter().zip(&strides).map(|(a, b)| a * b).sum());
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    res
}

fn reshape_dims(x: &[usize], spec: &[i64], allowzero: bool) -> Vec<usize> {
    let total: usize = x.iter().product();
    let build = |spec: &[i64]| -> Vec<usize> {
        let mut dims: Vec<usize> = spec
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                if s == 0 && !allowzero {
                    x[i]
                } else if s < 0 {
                    0
                } else {
                    s as usize
                }
            })
            .collect();
        if let Some(p) = spec.iter().position(|&s| s == -1) {
            let known: usize = dims
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != p)
                .map(|(_, &d)| d)
                .product();
            dims[p] = total / known.max(1);
        }
        dims
    };
    let d = build(spec);
    if d.iter().product::<usize>() == total {
        return d;
    }
    // The batch was bound to a fixed size at load time: keep the runtime batch instead.
    let mut s = spec.to_vec();
    s[0] = x[0] as i64;
    if !s[1..].contains(&-1) {
        return build(&s);
    }
    build(&s)
}

fn gemm_dims(a: &[usize], w: &[usize], ta: bool, tb: bool) -> (usize, usize, usize) {
    let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
    let n = if tb { w[0] } else { w[1] };
    (m, k, n)
}

#[allow(clippy::too_many_arguments)]
fn gemm_forward(
    a: &Buf,
    w: &[f32],
    wshape: &[usize],
    bias: Option<&[f32]>,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
) -> Buf {
    assert_eq!(a.shape.len(), 2, "qat: Gemm/MatMul input must be 2-D");
    let (m, k, n) = gemm_dims(&a.shape, wshape, ta, tb);
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for kk in 0..k {
                let av = if ta {
                    a.data[kk * m + i]
                } else {
                    a.data[i * k + kk]
                };
                let wv = if tb { w[j * k + kk] } else { w[kk * n + j] };
                acc += av * wv;
            }
            let mut v = alpha * acc;
            if let Some(b) = bias {
                let bi = if b.len() == n {
                    j
                } else if b.len() == 1 {
                    0
                } else {
                    i * n + j
                };
                v += beta * b[bi];
            }
            y[i * n + j] = v;
        }
    }
    Buf::new(vec![m, n], y)
}

struct ConvDims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    icg: usize,
    ocg: usize,
}

fn conv_dims(
    x: &[usize],
    wshape: &[usize],
    geom: &ConvGeom,
    group: usize,
    ceil: bool,
) -> (ConvDims, Vec<usize>) {
    assert_eq!(
        x.len(),
        4,
        "qat: only 2-D convolutions/pools (NCHW) are supported"
    );
    let kernel = [wshape[2], wshape[3]];
    let pads = resolve_pads(geom, &kernel, &x[2..]);
    let st = if geom.strides.is_empty() {
        vec![1, 1]
    } else {
        geom.strides.clone()
    };
    let dl = if geom.dilations.is_empty() {
        vec![1, 1]
    } else {
        geom.dilations.clone()
    };
    let oh =
        conv_out_dim(x[2], kernel[0], st[0], dl[0], pads[0], pads[2], ceil).expect("conv geometry");
    let ow =
        conv_out_dim(x[3], kernel[1], st[1], dl[1], pads[1], pads[3], ceil).expect("conv geometry");
    (
        ConvDims {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            oc: wshape[0],
            kh: kernel[0],
            kw: kernel[1],
            oh,
            ow,
            sh: st[0],
            sw: st[1],
            dh: dl[0],
            dw: dl[1],
            pt: pads[0],
            pl: pads[1],
            icg: x[1] / group,
            ocg: wshape[0] / group,
        },
        pads,
    )
}

impl ConvDims {
    #[inline]
    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let v = (oy * self.sh + ky * self.dh) as isize - self.pt as isize;
        (v >= 0 && (v as usize) < self.h).then_some(v as usize)
    }
    #[inline]
    fn ix(&self, ox: usize, kx: usize) -> Option<usize> {
        let v = (ox * self.sw + kx * self.dw) as isize - self.pl as isize;
        (v >= 0 && (v as usize) < self.w).then_some(v as usize)
    }
}

fn conv_forward(
    x: &Buf,
    w: &[f32],
    wshape: &[usize],
    bias: Option<&[f32]>,
    geom: &ConvGeom,
    group: usize,
) -> (Buf, Vec<usize>) {
    let (d, pads) = conv_dims(&x.shape, wshape, geom, group, false);
    let per_in = d.c * d.h * d.w;
    let per_out = d.oc * d.oh * d.ow;
    let mut y = vec![0f32; d.n * per_out];
    y.par_chunks_mut(per_out.max(1))
        .enumerate()
        .for_each(|(n, yo)| {
            let xs = &x.data[n * per_in..(n + 1) * per_in];
            for oc in 0..d.oc {
                let g = oc / d.ocg;
                let b = bias.map(|b| b[oc]).unwrap_or(0.0);
                for oy in 0..d.oh {
                    for ox in 0..d.ow {
                        let mut acc = b;
                        for ic in 0..d.icg {
                            let ci = g * d.icg + ic;
                            for ky in 0..d.kh {
                                let Some(iy) = d.iy(oy, ky) else { continue };
                                for kx in 0..d.kw {
                                    let Some(ix) = d.ix(ox, kx) else { continue };
                                    acc += xs[(ci * d.h + iy) * d.w + ix]
                                        * w[((oc * d.icg + ic) * d.kh + ky) * d.kw + kx];
                                }
                            }
                        }
                        yo[(oc * d.oh + oy) * d.ow + ox] = acc;
                    }
                }
            }
        });
    (Buf::new(vec![d.n, d.oc, d.oh, d.ow], y), pads)
}

#[allow(clippy::too_many_arguments)]
fn conv_backward(
    x: &Buf,
    w: &[f32],
    wshape: &[usize],
    g: &[f32],
    _yshape: &[usize],
    geom: &ConvGeom,
    group: usize,
    _pads: &[usize],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (d, _) = conv_dims(&x.shape, wshape, geom, group, false);
    let per_in = d.c * d.h * d.w;
    let per_out = d.oc * d.oh * d.ow;
    let mut dx = vec![0f32; d.n * per_in];
    let (dw, db) = dx
        .par_chunks_mut(per_in.max(1))
        .enumerate()
        .map(|(n, dxs)| {
            let xs = &x.data[n * per_in..(n + 1) * per_in];
            let gs = &g[n * per_out..(n + 1) * per_out];
            let mut dw = vec![0f32; w.len()];
            let mut db = vec![0f32; d.oc];
            for oc in 0..d.oc {
                let gr = oc / d.ocg;
                for oy in 0..d.oh {
                    for ox in 0..d.ow {
                        let go = gs[(oc * d.oh + oy) * d.ow + ox];
                        if go == 0.0 {
                            continue;
                        }
                        db[oc] += go;
                        for ic in 0..d.icg {
                            let ci = gr * d.icg + ic;
                            for ky in 0..d.kh {
                                let Some(iy) = d.iy(oy, ky) else { continue };
                                for kx in 0..d.kw {
                                    let Some(ix) = d.ix(ox, kx) else { continue };
                                    let xi = (ci * d.h + iy) * d.w + ix;
                                    let wi = ((oc * d.icg + ic) * d.kh + ky) * d.kw + kx;
                                    dxs[xi] += go * w[wi];
                                    dw[wi] += go * xs[xi];
                                }
                            }
                        }
                    }
                }
            }
            (dw, db)
        })
        .reduce(
            || (vec![0f32; w.len()], vec![0f32; d.oc]),
            |(mut a, mut b), (c, e)| {
                a.iter_mut().zip(c).for_each(|(p, q)| *p += q);
                b.iter_mut().zip(e).for_each(|(p, q)| *p += q);
                (a, b)
            },
        );
    (dx, dw, db)
}

fn pool_dims(x: &Buf, pa: &PoolAttrs) -> (ConvDims, Vec<usize>) {
    let k = &pa.geom.kernel_shape;
    let c = x.shape[1];
    conv_dims(&x.shape, &[c, 1, k[0], k[1]], &pa.geom, c, pa.ceil_mode)
}

/// Max or average pool; for max also the argmax of each output.
fn pool_forward(x: &Buf, pa: &PoolAttrs, max: bool) -> (Buf, Vec<usize>, Vec<usize>) {
    let (d, pads) = pool_dims(x, pa);
    let mut y = vec![0f32; d.n * d.c * d.oh * d.ow];
    let mut am = vec![usize::MAX; if max { y.len() } else { 0 }];
    for n in 0..d.n {
        for c in 0..d.c {
            let base = (n * d.c + c) * d.h * d.w;
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let o = ((n * d.c + c) * d.oh + oy) * d.ow + ox;
                    let mut best = f32::NEG_INFINITY;
                    let mut arg = usize::MAX;
                    let mut sum = 0f32;
                    for ky in 0..d.kh {
                        let Some(iy) = d.iy(oy, ky) else { continue };
                        for kx in 0..d.kw {
                            let Some(ix) = d.ix(ox, kx) else { continue };
                            let xi = base + iy * d.w + ix;
                            let v = x.data[xi];
                            if v > best || arg == usize::MAX {
                                best = v;
                                arg = xi;
                            }
                            sum += v;
                        }
                    }
                    if max {
                        y[o] = best;
                        am[o] = arg;
                    } else {
                        y[o] = sum / avg_count(&d, pa, &pads, oy, ox) as f32;
                    }
                }
            }
        }
    }
    (Buf::new(vec![d.n, d.c, d.oh, d.ow], y), am, pads)
}

fn avg_count(d: &ConvDims, pa: &PoolAttrs, pads: &[usize], oy: usize, ox: usize) -> usize {
    let (mut cy, mut cx) = (0, 0);
    for ky in 0..d.kh {
        let v = (oy * d.sh + ky * d.dh) as isize - d.pt as isize;
        let ok = if pa.count_include_pad {
            v < (d.h + pads[2]) as isize
        } else {
            v >= 0 && (v as usize) < d.h
        };
        cy += ok as usize;
    }
    for kx in 0..d.kw {
        let v = (ox * d.sw + kx * d.dw) as isize - d.pl as isize;
        let ok = if pa.count_include_pad {
            v < (d.w + pads[3]) as isize
        } else {
            v >= 0 && (v as usize) < d.w
        };
        cx += ok as usize;
    }
    (cy * cx).max(1)
}

fn avgpool_backward(
    x: &Buf,
    _yshape: &[usize],
    g: &[f32],
    pa: &PoolAttrs,
    pads: &[usize],
) -> Vec<f32> {
    let (d, _) = pool_dims(x, pa);
    let mut dx = vec![0f32; x.data.len()];
    for n in 0..d.n {
        for c in 0..d.c {
            let base = (n * d.c + c) * d.h * d.w;
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let o = ((n * d.c + c) * d.oh + oy) * d.ow + ox;
                    let share = g[o] / avg_count(&d, pa, pads, oy, ox) as f32;
                    for ky in 0..d.kh {
                        let Some(iy) = d.iy(oy, ky) else { continue };
                        for kx in 0..d.kw {
                            let Some(ix) = d.ix(ox, kx) else { continue };
                            dx[base + iy * d.w + ix] += share;
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Mean softmax cross-entropy over the batch of `logits` (`[N, ...]`, flattened per sample) and
/// its gradient. Accumulates in f64.
pub fn softmax_ce(logits: &Buf, labels: &[i64]) -> (f32, Buf) {
    let n = logits.shape[0];
    let c = logits.data.len() / n.max(1);
    let mut grad = vec![0f32; logits.data.len()];
    let mut loss = 0f64;
    for i in 0..n {
        let row = &logits.data[i * c..(i + 1) * c];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let lbl = labels[i] as usize;
        loss += z.ln() + m - row[lbl] as f64;
        for j in 0..c {
            let p = (row[j] as f64 - m).exp() / z;
            let t = if j == lbl { 1.0 } else { 0.0 };
            grad[i * c + j] = ((p - t) / n as f64) as f32;
        }
    }
    (
        (loss / n as f64) as f32,
        Buf::new(logits.shape.clone(), grad),
    )
}
