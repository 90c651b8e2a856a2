//! Type and shape inference: the output types of each op from its operand types (and, for
//! shape-carrying operands such as Reshape's `shape`, their constant values). Unknown extents
//! become fresh symbols (`?1`, `?2`, ...) so that a model with symbolic inputs still has a typed
//! graph; once the user binds input shapes and constants are folded, every shape is static.

use crate::dtype::DType;
use crate::graph::Graph;
use crate::op::*;
use crate::shape::Shape as Sh;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use crate::types::ValueType;

/// What inference sees of one operand.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub ty: &'a ValueType,
    pub value: Option<&'a Tensor>,
}

/// Source of fresh symbolic dimensions.
#[derive(Default)]
pub struct Symbols {
    next: usize,
}

impl Symbols {
    pub fn fresh(&mut self) -> Dim {
        self.next += 1;
        Dim::Sym(format!("?{}", self.next))
    }
}

type R<T> = Result<T, String>;

fn req<'a>(ops: &[Option<Operand<'a>>], i: usize) -> R<Operand<'a>> {
    ops.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("operand {i} is missing"))
}

fn opt<'a>(ops: &[Option<Operand<'a>>], i: usize) -> Option<Operand<'a>> {
    ops.get(i).copied().flatten()
}

/// Normalise a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Multidirectional (numpy) broadcast of shapes.
pub fn broadcast(shapes: &[&Shape]) -> R<Shape> {
    let rank = shapes.iter().map(|s| s.rank()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d: Option<Dim> = None;
        for s in shapes {
            let off = rank - s.rank();
            if i < off {
                continue;
            }
            let x = &s.0[i - off];
            d = Some(match (d, x) {
                (None, x) => x.clone(),
                (Some(Dim::Fixed(1)), x) => x.clone(),
                (Some(a), Dim::Fixed(1)) => a,
                (Some(Dim::Fixed(a)), Dim::Fixed(b)) if a == *b => Dim::Fixed(a),
                (Some(Dim::Fixed(a)), Dim::Fixed(b)) => {
                    return Err(format!(
                        "cannot broadcast dimension {a} with {b} ({})",
                        fmt_shapes(shapes)
                    ))
                }
                (Some(Dim::Fixed(a)), Dim::Sym(_)) => Dim::Fixed(a),
                (Some(Dim::Sym(_)), Dim::Fixed(b)) => Dim::Fixed(*b),
                (Some(a @ Dim::Sym(_)), Dim::Sym(_)) => a,
            });
        }
        out.push(d.unwrap_or(Dim::Fixed(1)));
    }
    Ok(Shape(out))
}

fn fmt_shapes(shapes: &[&Shape]) -> String {
    shapes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" vs ")
}

fn ints(o: &Operand) -> Option<Vec<i64>> {
    o.value.map(|t| t.to_i64_vec())
}

/// Output spatial extent of a conv/pool along one axis.
pub fn conv_out_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> R<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!(
            "kernel {kernel}, stride {stride} and dilation {dilation} must be positive"
        ));
    }
    let eff = dilation * (kernel - 1) + 1;
    let padded = input + pad_begin + pad_end;
    if padded < eff {
        return Err(format!(
            "kernel extent {eff} larger than padded input {padded}"
        ));
    }
    let num = padded - eff;
    let mut o = if ceil_mode {
        num.div_ceil(stride) + 1
    } else {
        num / stride + 1
    };
    // ONNX/PyTorch: the last window must start inside the input or left padding.
    if ceil_mode && (o - 1) * stride >= input + pad_begin {
        o -= 1;
    }
    Ok(o)
}

/// Resolve explicit pads for a conv/pool given the input spatial extents (handles auto_pad).
pub fn resolve_pads(g: &ConvGeom, kernel: &[usize], spatial: &[usize]) -> Vec<usize> {
    let n = spatial.len();
    let strides = g.strides_or_ones(n);
    let dil = g.dilations_or_ones(n);
    // Malformed geometry is reported by the callers (conv_out_dim / length checks); never index
    // out of bounds here.
    if strides.len() != n || dil.len() != n || kernel.len() != n {
        return vec![0; 2 * n];
    }
    match g.auto_pad {
        AutoPad::NotSet => {
            if g.pads.is_empty() {
                vec![0; 2 * n]
            } else {
                g.pads.clone()
            }
        }
        AutoPad::Valid => vec![0; 2 * n],
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut pads = vec![0; 2 * n];
            for i in 0..n {
                let out = spatial[i].div_ceil(strides[i].max(1));
                let eff = dil[i] * kernel[i].saturating_sub(1) + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(spatial[i]);
                let small = total / 2;
                let big = total - small;
                if g.auto_pad == AutoPad::SameUpper {
                    pads[i] = small;
                    pads[i + n] = big;
                } else {
                    pads[i] = big;
                    pads[i + n] = small;
                }
            }
            pads
        }
    }
}

fn spatial_out(
    x: &Shape,
    g: &ConvGeom,
    kernel: &[usize],
    ceil_mode: bool,
    syms: &mut Symbols,
) -> R<Vec<Dim>> {
    let n = x.rank().checked_sub(2).ok_or("input must have rank >= 3")?;
    if kernel.len() != n {
        return Err(format!(
            "kernel has {} spatial dims, input has {n}",
            kernel.len()
        ));
    }
    let sp: Option<Vec<usize>> = x.0[2..].iter().map(|d| d.fixed()).collect();
    let Some(sp) = sp else {
        return Ok((0..n).map(|_| syms.fresh()).collect());
    };
    let pads = resolve_pads(g, kernel, &sp);
    let strides = g.strides_or_ones(n);
    let dil = g.dilations_or_ones(n);
    if pads.len() != 2 * n || strides.len() != n || dil.len() != n {
        return Err("pads/strides/dilations do not match the spatial rank".into());
    }
    (0..n)
        .map(|i| {
            conv_out_dim(
                sp[i],
                kernel[i],
                strides[i],
                dil[i],
                pads[i],
                pads[i + n],
                ceil_mode,
            )
            .map(Dim::Fixed)
        })
        .collect()
}

fn same(o: &Operand) -> ValueType {
    ValueType::new(o.ty.dtype, o.ty.shape.clone())
}

fn matmul_shape(a: &Shape, b: &Shape) -> R<Shape> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a2 = if a.rank() == 1 {
        Shape(vec![Dim::Fixed(1), a.0[0].clone()])
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        Shape(vec![b.0[0].clone(), Dim::Fixed(1)])
    } else {
        b.clone()
    };
    let (ka, kb) = (&a2.0[a2.rank() - 1], &b2.0[b2.rank() - 2]);
    if let (Dim::Fixed(x), Dim::Fixed(y)) = (ka, kb) {
        if x != y {
            return Err(format!("MatMul inner dimensions differ: {a} x {b}"));
        }
    }
    let batch = broadcast(&[
        &Shape(a2.0[..a2.rank() - 2].to_vec()),
        &Shape(b2.0[..b2.rank() - 2].to_vec()),
    ])?;
    let mut out = batch.0;
    if a.rank() > 1 {
        out.push(a2.0[a2.rank() - 2].clone());
    }
    if b.rank() > 1 {
        out.push(b2.0[b2.rank() - 1].clone());
    }
    Ok(Shape(out))
}

/// Why inference could not give a type.
#[derive(Debug, Clone, PartialEq)]
pub enum InferError {
    /// The node is invalid (bad shapes, attributes, operands).
    Invalid(String),
    /// Not knowable yet (e.g. a Reshape target computed at run time, of unknown rank); constant
    /// folding after shape binding usually resolves it. The value stays untyped meanwhile.
    Unknown(String),
}

impl std::fmt::Display for InferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InferError::Invalid(m) => f.write_str(m),
            InferError::Unknown(m) => write!(f, "type not known before constant folding: {m}"),
        }
    }
}

const UNKNOWN: &str = "\u{1}unknown: ";

fn unknown(msg: &str) -> String {
    format!("{UNKNOWN}{msg}")
}

/// Infer the output types of `op` from its operands.
pub fn infer_op(
    op: &Op,
    ops: &[Option<Operand>],
    syms: &mut Symbols,
) -> Result<Vec<ValueType>, InferError> {
    infer_op_inner(op, ops, syms).map_err(|m| match m.strip_prefix(UNKNOWN) {
        Some(rest) => InferError::Unknown(rest.to_string()),
        None => InferError::Invalid(m),
    })
}

fn infer_op_inner(op: &Op, ops: &[Option<Operand>], syms: &mut Symbols) -> R<Vec<ValueType>> {
    use Op::*;
    let one = |t: ValueType| Ok(vec![t]);
    match op {
        Input => Err("graph inputs carry their own type".into()),
        Const(t) => one(ValueType::fixed(t.dtype(), t.shape())),
        Unary(u) => {
            let x = req(ops, 0)?;
            let dt = match u {
                UnaryOp::IsNaN => DType::Bool,
                _ => x.ty.dtype,
            };
            one(ValueType::new(dt, x.ty.shape.clone()))
        }
        Act(_)
        | Clip
        | Lrn { .. }
        | Softmax { .. }
        | LogSoftmax { .. }
        | Hardmax { .. }
        | CumSum { .. }
        | Trilu { .. } => one(same(&req(ops, 0)?)),
        LayerNorm { .. } | BatchNorm { .. } | InstanceNorm { .. } => one(same(&req(ops, 0)?)),
        Binary(b) => {
            let (x, y) = (req(ops, 0)?, req(ops, 1)?);
            let shape = if *b == BinaryOp::PRelu {
                x.ty.shape.clone()
            } else {
                broadcast(&[&x.ty.shape, &y.ty.shape])?
            };
            let dt = if b.is_predicate() {
                DType::Bool
            } else {
                x.ty.dtype
            };
            one(ValueType::new(dt, shape))
        }
        Variadic(_) => {
            let xs: Vec<Operand> = ops.iter().flatten().copied().collect();
            let shapes: Vec<&Sh> = xs.iter().map(|o| &o.ty.shape).collect();
            one(ValueType::new(xs[0].ty.dtype, broadcast(&shapes)?))
        }
        Where => {
            let (c, x, y) = (req(ops, 0)?, req(ops, 1)?, req(ops, 2)?);
            one(ValueType::new(
                x.ty.dtype,
                broadcast(&[&c.ty.shape, &x.ty.shape, &y.ty.shape])?,
            ))
        }
        Cast { to } => one(ValueType::new(*to, req(ops, 0)?.ty.shape.clone())),
        CastLike => one(ValueType::new(
            req(ops, 1)?.ty.dtype,
            req(ops, 0)?.ty.shape.clone(),
        )),
        Conv(a) | ConvInteger(a) | QLinearConv(a) => {
            let (xi, wi) = if matches!(op, QLinearConv(_)) {
                (0, 3)
            } else {
                (0, 1)
            };
            let (x, w) = (req(ops, xi)?, req(ops, wi)?);
            let ws = &w.ty.shape;
            if ws.rank() < 3 || x.ty.shape.rank() != ws.rank() {
                return Err(format!(
                    "conv input {} and weight {} ranks differ or < 3",
                    x.ty.shape, ws
                ));
            }
            let kernel: Vec<usize> = if a.geom.kernel_shape.is_empty() {
                ws.0[2..]
                    .iter()
                    .map(|d| d.fixed().ok_or_else(|| unknown("symbolic kernel size")))
                    .collect::<R<_>>()?
            } else {
                a.geom.kernel_shape.clone()
            };
            if let (Some(c), Some(wc)) = (x.ty.shape.0[1].fixed(), ws.0[1].fixed()) {
                if c != wc * a.group {
                    return Err(format!(
                        "conv input has {c} channels, weight expects {} ({} x group {})",
                        wc * a.group,
                        wc,
                        a.group
                    ));
                }
            }
            let mut out = vec![x.ty.shape.0[0].clone(), ws.0[0].clone()];
            out.extend(spatial_out(&x.ty.shape, &a.geom, &kernel, false, syms)?);
            let dt = match op {
                Conv(_) => x.ty.dtype,
                ConvInteger(_) => DType::I32,
                _ => opt(ops, 7).map(|z| z.ty.dtype).unwrap_or(DType::U8),
            };
            one(ValueType::new(dt, Sh(out)))
        }
        ConvTranspose(a) => {
            let (x, w) = (req(ops, 0)?, req(ops, 1)?);
            let ws = &w.ty.shape;
            let n = ws.rank() - 2;
            let kernel: Vec<usize> = if a.geom.kernel_shape.is_empty() {
                ws.0[2..]
                    .iter()
                    .map(|d| d.fixed().ok_or_else(|| unknown("symbolic kernel size")))
                    .collect::<R<_>>()?
            } else {
                a.geom.kernel_shape.clone()
            };
            let oc = match ws.0[1].fixed() {
                Some(c) => Dim::Fixed(c * a.group),
                None => syms.fresh(),
            };
            let mut out = vec![x.ty.shape.0[0].clone(), oc];
            let sp: Option<Vec<usize>> = x.ty.shape.0[2..].iter().map(|d| d.fixed()).collect();
            match sp {
                None => out.extend((0..n).map(|_| syms.fresh())),
                Some(sp) => {
                    let dims = conv_transpose_out(a, &kernel, &sp)?;
                    out.extend(dims.0.into_iter());
                }
            }
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        Gemm {
            trans_a, trans_b, ..
        }
        | QGemm {
            trans_a, trans_b, ..
        } => {
            let bi = if matches!(op, QGemm { .. }) { 3 } else { 1 };
            let (a, b) = (req(ops, 0)?, req(ops, bi)?);
            if a.ty.shape.rank() != 2 || b.ty.shape.rank() != 2 {
                return Err(format!(
                    "Gemm operands must be 2-D, got {} and {}",
                    a.ty.shape, b.ty.shape
                ));
            }
            let m = a.ty.shape.0[if *trans_a { 1 } else { 0 }].clone();
            let ka = a.ty.shape.0[if *trans_a { 0 } else { 1 }].clone();
            let kb = b.ty.shape.0[if *trans_b { 1 } else { 0 }].clone();
            let n = b.ty.shape.0[if *trans_b { 0 } else { 1 }].clone();
            if let (Dim::Fixed(x), Dim::Fixed(y)) = (&ka, &kb) {
                if x != y {
                    return Err(format!("Gemm inner dimensions differ: {x} vs {y}"));
                }
            }
            let dt = match op {
                QGemm { .. } => match opt(ops, 8) {
                    Some(z) => z.ty.dtype,
                    None if opt(ops, 7).is_some() => DType::U8,
                    None => DType::F32,
                },
                _ => a.ty.dtype,
            };
            one(ValueType::new(dt, Sh(vec![m, n])))
        }
        MatMul | MatMulInteger => {
            let (a, b) = (req(ops, 0)?, req(ops, 1)?);
            let dt = if matches!(op, MatMulInteger) {
                DType::I32
            } else {
                a.ty.dtype
            };
            one(ValueType::new(dt, matmul_shape(&a.ty.shape, &b.ty.shape)?))
        }
        QLinearMatMul => {
            let (a, b) = (req(ops, 0)?, req(ops, 3)?);
            let dt = req(ops, 7)?.ty.dtype;
            one(ValueType::new(dt, matmul_shape(&a.ty.shape, &b.ty.shape)?))
        }
        Einsum { equation } => einsum_shape(equation, ops).map(|t| vec![t]),
        MaxPool(p) | AveragePool(p) | LpPool { attrs: p, .. } => {
            let x = req(ops, 0)?;
            let mut out = x.ty.shape.0[..2.min(x.ty.shape.rank())].to_vec();
            out.extend(spatial_out(
                &x.ty.shape,
                &p.geom,
                &p.geom.kernel_shape,
                p.ceil_mode,
                syms,
            )?);
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        GlobalAveragePool | GlobalMaxPool => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            if r < 3 {
                return Err(format!("global pool needs rank >= 3, got {}", x.ty.shape));
            }
            let mut out = x.ty.shape.0[..2].to_vec();
            out.extend((2..r).map(|_| Dim::Fixed(1)));
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        QLinearGlobalAveragePool { channels_last } => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let out: Vec<Dim> = (0..r)
                .map(|i| {
                    let keep = if *channels_last {
                        i == 0 || i == r - 1
                    } else {
                        i < 2
                    };
                    if keep {
                        x.ty.shape.0[i].clone()
                    } else {
                        Dim::Fixed(1)
                    }
                })
                .collect();
            one(ValueType::new(req(ops, 4)?.ty.dtype, Sh(out)))
        }
        Flatten { axis } => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let a = if *axis < 0 { *axis + r as i64 } else { *axis };
            if a < 0 || a > r as i64 {
                return Err(format!("Flatten axis {axis} out of range for rank {r}"));
            }
            let a = a as usize;
            let prod = |ds: &[Dim], syms: &mut Symbols| -> Dim {
                let v: Option<Vec<usize>> = ds.iter().map(|d| d.fixed()).collect();
                match v {
                    Some(v) => Dim::Fixed(v.iter().product()),
                    None if ds.len() == 1 => ds[0].clone(),
                    None => syms.fresh(),
                }
            };
            let d0 = prod(&x.ty.shape.0[..a], syms);
            let d1 = prod(&x.ty.shape.0[a..], syms);
            one(ValueType::new(x.ty.dtype, Sh(vec![d0, d1])))
        }
        Reshape { allowzero } => {
            let (x, s) = (req(ops, 0)?, req(ops, 1)?);
            let Some(spec) = ints(&s) else {
                let n =
                    s.ty.shape
                        .0
                        .first()
                        .and_then(|d| d.fixed())
                        .ok_or_else(|| unknown("reshape target of unknown rank"))?;
                return one(ValueType::new(
                    x.ty.dtype,
                    Sh((0..n).map(|_| syms.fresh()).collect()),
                ));
            };
            one(ValueType::new(
                x.ty.dtype,
                reshape_shape(&x.ty.shape, &spec, *allowzero, syms)?,
            ))
        }
        Transpose { perm } => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let perm: Vec<usize> = if perm.is_empty() {
                (0..r).rev().collect()
            } else {
                perm.clone()
            };
            let mut seen = vec![false; r];
            if perm.len() != r
                || perm
                    .iter()
                    .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!("perm {perm:?} is not a permutation of rank {r}"));
            }
            one(ValueType::new(
                x.ty.dtype,
                Sh(perm.iter().map(|&p| x.ty.shape.0[p].clone()).collect()),
            ))
        }
        Squeeze => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let axes: Vec<usize> = match opt(ops, 1) {
                Some(a) => {
                    let Some(v) = ints(&a) else {
                        // Axes known only at run time: the rank is, the extents are not.
                        let n =
                            a.ty.shape
                                .numel()
                                .ok_or_else(|| unknown("Squeeze axes of unknown length"))?;
                        let out_rank = r
                            .checked_sub(n)
                            .ok_or("Squeeze has more axes than dimensions")?;
                        return one(ValueType::new(
                            x.ty.dtype,
                            Sh((0..out_rank).map(|_| syms.fresh()).collect()),
                        ));
                    };
                    v.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?
                }
                None => (0..r)
                    .filter(|&i| x.ty.shape.0[i] == Dim::Fixed(1))
                    .collect(),
            };
            for &a in &axes {
                if let Dim::Fixed(d) = x.ty.shape.0[a] {
                    if d != 1 {
                        return Err(format!("cannot squeeze axis {a} of extent {d}"));
                    }
                }
            }
            let out = (0..r)
                .filter(|i| !axes.contains(i))
                .map(|i| x.ty.shape.0[i].clone())
                .collect();
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        Unsqueeze => {
            let (x, a) = (req(ops, 0)?, req(ops, 1)?);
            let Some(v) = ints(&a) else {
                let n =
                    a.ty.shape
                        .numel()
                        .ok_or_else(|| unknown("Unsqueeze axes of unknown length"))?;
                let out_rank = x.ty.shape.rank() + n;
                return one(ValueType::new(
                    x.ty.dtype,
                    Sh((0..out_rank).map(|_| syms.fresh()).collect()),
                ));
            };
            let r = x.ty.shape.rank() + v.len();
            let mut axes: Vec<usize> = v.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?;
            axes.sort();
            axes.dedup();
            if axes.len() != v.len() {
                return Err("Unsqueeze axes repeat".into());
            }
            let mut it = x.ty.shape.0.iter();
            let out = (0..r)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Fixed(1)
                    } else {
                        it.next().unwrap().clone()
                    }
                })
                .collect();
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        Concat { axis } => {
            let xs: Vec<Operand> = ops.iter().flatten().copied().collect();
            let r = xs[0].ty.shape.rank();
            let a = norm_axis(*axis, r)?;
            let mut out = xs[0].ty.shape.0.clone();
            let mut total = Some(0usize);
            for x in &xs {
                if x.ty.shape.rank() != r {
                    return Err(format!(
                        "Concat operands have different ranks ({} vs {})",
                        xs[0].ty.shape, x.ty.shape
                    ));
                }
                total = match (total, x.ty.shape.0[a].fixed()) {
                    (Some(t), Some(d)) => Some(t + d),
                    _ => None,
                };
                for i in 0..r {
                    if i != a {
                        if let (Dim::Sym(_), Dim::Fixed(_)) = (&out[i], &x.ty.shape.0[i]) {
                            out[i] = x.ty.shape.0[i].clone();
                        }
                    }
                }
            }
            out[a] = match total {
                Some(t) => Dim::Fixed(t),
                None if xs.len() == 1 => xs[0].ty.shape.0[a].clone(),
                None => syms.fresh(),
            };
            one(ValueType::new(xs[0].ty.dtype, Sh(out)))
        }
        Split { axis, num_outputs } => {
            let x = req(ops, 0)?;
            let a = norm_axis(*axis, x.ty.shape.rank())?;
            let sizes: Option<Vec<usize>> = match opt(ops, 1) {
                // Sizes known only at run time: extents along the axis are fresh symbols.
                Some(s) => ints(&s).map(|v| v.iter().map(|&v| v as usize).collect()),
                None => x.ty.shape.0[a].fixed().map(|d| {
                    let chunk = d.div_ceil(*num_outputs);
                    (0..*num_outputs)
                        .map(|i| chunk.min(d.saturating_sub(i * chunk)))
                        .collect()
                }),
            };
            if let Some(s) = &sizes {
                if s.len() != *num_outputs {
                    return Err(format!(
                        "Split has {} sizes for {} outputs",
                        s.len(),
                        num_outputs
                    ));
                }
                if let Some(d) = x.ty.shape.0[a].fixed() {
                    if s.iter().sum::<usize>() != d {
                        return Err(format!("Split sizes {s:?} do not add up to {d}"));
                    }
                }
            }
            Ok((0..*num_outputs)
                .map(|i| {
                    let mut sh = x.ty.shape.0.clone();
                    sh[a] = match &sizes {
                        Some(s) => Dim::Fixed(s[i]),
                        None => syms.fresh(),
                    };
                    ValueType::new(x.ty.dtype, Sh(sh))
                })
                .collect())
        }
        Slice => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let consts = (ints(&req(ops, 1)?), ints(&req(ops, 2)?));
            let axes = match opt(ops, 3) {
                Some(a) => ints(&a),
                None => Some(vec![]),
            };
            let steps = match opt(ops, 4) {
                Some(a) => ints(&a),
                None => Some(vec![]),
            };
            let (Some(starts), Some(ends), Some(axes), Some(steps)) =
                (consts.0, consts.1, axes, steps)
            else {
                return one(ValueType::new(
                    x.ty.dtype,
                    Sh((0..r).map(|_| syms.fresh()).collect()),
                ));
            };
            let mut out = x.ty.shape.0.clone();
            for (i, (&s, &e)) in starts.iter().zip(ends.iter()).enumerate() {
                let ax = if axes.is_empty() {
                    i
                } else {
                    norm_axis(axes[i], r)?
                };
                let step = if steps.is_empty() { 1 } else { steps[i] };
                if step == 0 {
                    return Err("Slice step 0".into());
                }
                out[ax] = match x.ty.shape.0[ax].fixed() {
                    Some(d) => Dim::Fixed(slice_range(s, e, step, d).2),
                    None => syms.fresh(),
                };
            }
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        Gather { axis } => {
            let (x, i) = (req(ops, 0)?, req(ops, 1)?);
            let a = norm_axis(*axis, x.ty.shape.rank())?;
            let mut out = x.ty.shape.0[..a].to_vec();
            out.extend(i.ty.shape.0.iter().cloned());
            out.extend(x.ty.shape.0[a + 1..].iter().cloned());
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        GatherElements { .. } => one(ValueType::new(
            req(ops, 0)?.ty.dtype,
            req(ops, 1)?.ty.shape.clone(),
        )),
        Shape { start, end } => {
            let r = req(ops, 0)?.ty.shape.rank() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            one(ValueType::fixed(DType::I64, &[(e - s).max(0) as usize]))
        }
        Size => one(ValueType::fixed(DType::I64, &[])),
        Expand => {
            let (x, s) = (req(ops, 0)?, req(ops, 1)?);
            let Some(spec) = ints(&s) else {
                let n =
                    s.ty.shape
                        .0
                        .first()
                        .and_then(|d| d.fixed())
                        .ok_or_else(|| unknown("expand target of unknown rank"))?;
                let r = n.max(x.ty.shape.rank());
                return one(ValueType::new(
                    x.ty.dtype,
                    Sh((0..r).map(|_| syms.fresh()).collect()),
                ));
            };
            let target = Sh(spec.iter().map(|&d| Dim::Fixed(d as usize)).collect());
            one(ValueType::new(
                x.ty.dtype,
                broadcast(&[&x.ty.shape, &target])?,
            ))
        }
        Tile => {
            let (x, rp) = (req(ops, 0)?, req(ops, 1)?);
            let out = match ints(&rp) {
                Some(r) => {
                    if r.len() != x.ty.shape.rank() {
                        return Err("Tile repeats length differs from rank".into());
                    }
                    x.ty.shape
                        .0
                        .iter()
                        .zip(&r)
                        .map(|(d, &k)| match d {
                            Dim::Fixed(n) => Dim::Fixed(n * k as usize),
                            s if k == 1 => s.clone(),
                            _ => syms.fresh(),
                        })
                        .collect()
                }
                None => (0..x.ty.shape.rank()).map(|_| syms.fresh()).collect(),
            };
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        Reduce {
            keepdims,
            noop_with_empty_axes,
            ..
        } => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let axes: Vec<usize> = match opt(ops, 1) {
                Some(a) => match ints(&a) {
                    Some(v) => v.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
                    None => {
                        // Axes known only at run time.
                        let n =
                            a.ty.shape
                                .numel()
                                .ok_or_else(|| unknown("reduce axes of unknown length"))?;
                        let out_rank = if *keepdims || (n == 0 && *noop_with_empty_axes) {
                            r
                        } else if n == 0 {
                            0
                        } else {
                            r.checked_sub(n).ok_or("more reduce axes than dimensions")?
                        };
                        return one(ValueType::new(
                            x.ty.dtype,
                            Sh((0..out_rank).map(|_| syms.fresh()).collect()),
                        ));
                    }
                },
                None => vec![],
            };
            if axes.is_empty() && *noop_with_empty_axes {
                return one(same(&x));
            }
            let all = axes.is_empty();
            let mut out = vec![];
            for i in 0..r {
                if all || axes.contains(&i) {
                    if *keepdims {
                        out.push(Dim::Fixed(1));
                    }
                } else {
                    out.push(x.ty.shape.0[i].clone());
                }
            }
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        ArgMax { axis, keepdims, .. } | ArgMin { axis, keepdims, .. } => {
            let x = req(ops, 0)?;
            let a = norm_axis(*axis, x.ty.shape.rank())?;
            let mut out = x.ty.shape.0.clone();
            if *keepdims {
                out[a] = Dim::Fixed(1);
            } else {
                out.remove(a);
            }
            one(ValueType::new(DType::I64, Sh(out)))
        }
        ConstantOfShape { value } => {
            let s = req(ops, 0)?;
            let shape = match ints(&s) {
                Some(v) => Sh(v.iter().map(|&d| Dim::Fixed(d as usize)).collect()),
                None => {
                    let n =
                        s.ty.shape
                            .0
                            .first()
                            .and_then(|d| d.fixed())
                            .ok_or_else(|| unknown("shape of unknown rank"))?;
                    Sh((0..n).map(|_| syms.fresh()).collect())
                }
            };
            one(ValueType::new(value.dtype(), shape))
        }
        Range => {
            let (s, l, d) = (req(ops, 0)?, req(ops, 1)?, req(ops, 2)?);
            let n = match (s.value, l.value, d.value) {
                (Some(s), Some(l), Some(d)) => {
                    let (s, l, d) = (s.to_f64_vec()[0], l.to_f64_vec()[0], d.to_f64_vec()[0]);
                    if d == 0.0 {
                        return Err("Range delta is 0".into());
                    }
                    Dim::Fixed(((l - s) / d).ceil().max(0.0) as usize)
                }
                _ => syms.fresh(),
            };
            one(ValueType::new(s.ty.dtype, Sh(vec![n])))
        }
        Pad { .. } => {
            let (x, p) = (req(ops, 0)?, req(ops, 1)?);
            let r = x.ty.shape.rank();
            let pads = ints(&p);
            let axes: Option<Vec<usize>> = match opt(ops, 3) {
                Some(a) => match ints(&a) {
                    Some(v) => Some(v.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?),
                    None => None,
                },
                None => Some((0..r).collect()),
            };
            let (Some(pads), Some(axes)) = (pads, axes) else {
                return one(ValueType::new(
                    x.ty.dtype,
                    Sh((0..r).map(|_| syms.fresh()).collect()),
                ));
            };
            if pads.len() != 2 * axes.len() {
                return Err(format!(
                    "Pad has {} pads for {} axes",
                    pads.len(),
                    axes.len()
                ));
            }
            let mut out = x.ty.shape.0.clone();
            for (i, &ax) in axes.iter().enumerate() {
                out[ax] = match out[ax].fixed() {
                    Some(d) => {
                        Dim::Fixed((d as i64 + pads[i] + pads[i + axes.len()]).max(0) as usize)
                    }
                    None => syms.fresh(),
                };
            }
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        Resize(attrs) => {
            let x = req(ops, 0)?;
            let r = x.ty.shape.rank();
            let axes: Vec<usize> = if attrs.axes.is_empty() {
                (0..r).collect()
            } else {
                attrs
                    .axes
                    .iter()
                    .map(|&a| norm_axis(a, r))
                    .collect::<R<_>>()?
            };
            let mut out = x.ty.shape.0.clone();
            if let Some(sz) = opt(ops, 3).filter(|o| o.ty.shape.numel() != Some(0)) {
                match ints(&sz) {
                    Some(v) => {
                        let sizes = resize_sizes_from_sizes(
                            &x.ty.shape,
                            &axes,
                            &v,
                            &attrs.keep_aspect_ratio_policy,
                        );
                        for (i, &a) in axes.iter().enumerate() {
                            out[a] = sizes
                                .get(i)
                                .copied()
                                .map(Dim::Fixed)
                                .unwrap_or_else(|| syms.fresh());
                        }
                    }
                    None => axes.iter().for_each(|&a| out[a] = syms.fresh()),
                }
            } else if let Some(sc) = opt(ops, 2) {
                match sc.value.map(|t| t.to_f64_vec()) {
                    Some(v) => {
                        if v.len() != axes.len() {
                            return Err(format!(
                                "Resize has {} scales for {} axes",
                                v.len(),
                                axes.len()
                            ));
                        }
                        for (i, &a) in axes.iter().enumerate() {
                            out[a] = match out[a].fixed() {
                                Some(d) => {
                                    Dim::Fixed((d as f64 * v[i] as f32 as f64).floor() as usize)
                                }
                                None => syms.fresh(),
                            };
                        }
                    }
                    None => axes.iter().for_each(|&a| out[a] = syms.fresh()),
                }
            } else {
                return Err("Resize needs scales or sizes".into());
            }
            one(ValueType::new(x.ty.dtype, Sh(out)))
        }
        DepthToSpace { blocksize, .. } | SpaceToDepth { blocksize, .. } => {
            let x = req(ops, 0)?;
            if x.ty.shape.rank() != 4 {
                return Err("DepthToSpace/SpaceToDepth need rank 4".into());
            }
            let b = *blocksize;
            let s = &x.ty.shape.0;
            let f = |d: &Dim, mul: bool, syms: &mut Symbols| match d.fixed() {
                Some(n) => Dim::Fixed(if mul { n * b } else { n / b }),
                None => syms.fresh(),
            };
            let d2s = matches!(op, DepthToSpace { .. });
            let c = match s[1].fixed() {
                Some(n) => Dim::Fixed(if d2s { n / (b * b) } else { n * b * b }),
                None => syms.fresh(),
            };
            let h = f(&s[2], d2s, syms);
            let w = f(&s[3], d2s, syms);
            one(ValueType::new(x.ty.dtype, Sh(vec![s[0].clone(), c, h, w])))
        }
        TopK { axis, .. } => {
            let (x, k) = (req(ops, 0)?, req(ops, 1)?);
            let a = norm_axis(*axis, x.ty.shape.rank())?;
            let mut out = x.ty.shape.0.clone();
            out[a] = match ints(&k) {
                Some(v) => Dim::Fixed(v[0] as usize),
                None => syms.fresh(),
            };
            Ok(vec![
                ValueType::new(x.ty.dtype, Sh(out.clone())),
                ValueType::new(DType::I64, Sh(out)),
            ])
        }
        QuantizeLinear { out_dtype, .. } => {
            let x = req(ops, 0)?;
            let dt = match opt(ops, 2) {
                Some(z) => z.ty.dtype,
                None => out_dtype.unwrap_or(DType::U8),
            };
            one(ValueType::new(dt, x.ty.shape.clone()))
        }
        DequantizeLinear { .. } => {
            let (x, s) = (req(ops, 0)?, req(ops, 1)?);
            one(ValueType::new(s.ty.dtype, x.ty.shape.clone()))
        }
        DynamicQuantizeLinear => {
            let x = req(ops, 0)?;
            Ok(vec![
                ValueType::new(DType::U8, x.ty.shape.clone()),
                ValueType::fixed(DType::F32, &[]),
                ValueType::fixed(DType::U8, &[]),
            ])
        }
        QLinearBinary(_) => {
            let (a, b) = (req(ops, 0)?, req(ops, 3)?);
            one(ValueType::new(
                a.ty.dtype,
                broadcast(&[&a.ty.shape, &b.ty.shape])?,
            ))
        }
    }
}

/// ONNX Slice semantics: clamp start/end for extent `d` and step; returns (start, end, count).
pub fn slice_range(start: i64, end: i64, step: i64, d: usize) -> (i64, i64, usize) {
    let d = d as i64;
    let fix = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        let s = s.clamp(0, d);
        let e = e.clamp(0, d);
        let n = if e > s { (e - s + step - 1) / step } else { 0 };
        (s, e, n as usize)
    } else {
        let s = s.clamp(-1, d - 1);
        let e = e.clamp(-1, d - 1);
        let n = if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        };
        (s, e, n as usize)
    }
}

/// Reshape target shape from the ONNX spec (0 copies the input dim unless allowzero, -1 infers).
pub fn reshape_shape(x: &Shape, spec: &[i64], allowzero: bool, syms: &mut Symbols) -> R<Shape> {
    let mut out: Vec<Dim> = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        out.push(match s {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err("Reshape has more than one -1".into());
                }
                Dim::Fixed(1)
            }
            0 if !allowzero => {
                x.0.get(i)
                    .cloned()
                    .ok_or("Reshape 0 copies a dimension the input lacks")?
            }
            s if s < 0 => return Err(format!("Reshape dimension {s} is invalid")),
            s => Dim::Fixed(s as usize),
        });
    }
    if let Some(i) = infer {
        match x.numel() {
            Some(total) => {
                let known: Option<Vec<usize>> = out.iter().map(|d| d.fixed()).collect();
                match known {
                    Some(k) => {
                        let p: usize = k.iter().product();
                        if p == 0 || total % p != 0 {
                            return Err(format!("cannot reshape {x} to {spec:?}"));
                        }
                        out[i] = Dim::Fixed(total / p);
                    }
                    None => out[i] = syms.fresh(),
                }
            }
            None => {
                // Symbolic input: if the other dims are the input's dims minus one, keep its symbol.
                let rest: Vec<&Dim> = out
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| d)
                    .collect();
                let syms_in: Vec<&Dim> = x.0.iter().filter(|d| d.fixed().is_none()).collect();
                let syms_out: Vec<&Dim> = rest
                    .iter()
                    .copied()
                    .filter(|d| d.fixed().is_none())
                    .collect();
                out[i] = if syms_in.len() == syms_out.len() + 1 {
                    let fixed_in: usize = x.0.iter().filter_map(|d| d.fixed()).product();
                    let fixed_out: usize = rest.iter().filter_map(|d| d.fixed()).product();
                    let missing = syms_in
                        .iter()
                        .find(|s| !syms_out.contains(s))
                        .cloned()
                        .cloned();
                    match missing {
                        Some(m) if fixed_in == fixed_out => m,
                        Some(_)
                            if fixed_out > 0
                                && fixed_in % fixed_out == 0
                                && fixed_in / fixed_out > 1 =>
                        {
                            syms.fresh()
                        }
                        _ => syms.fresh(),
                    }
                } else if syms_in.len() == syms_out.len() {
                    let fixed_in: usize = x.0.iter().filter_map(|d| d.fixed()).product();
                    let fixed_out: usize = rest.iter().filter_map(|d| d.fixed()).product();
                    if fixed_out > 0 && fixed_in % fixed_out == 0 {
                        Dim::Fixed(fixed_in / fixed_out)
                    } else {
                        syms.fresh()
                    }
                } else {
                    syms.fresh()
                };
            }
        }
    } else if let (Some(a), Some(b)) = (x.numel(), Shape(out.clone()).numel()) {
        if a != b {
            return Err(format!(
                "cannot reshape {x} ({a} elements) to {spec:?} ({b} elements)"
            ));
        }
    }
    Ok(Shape(out))
}

/// Output spatial dims of ConvTranspose.
pub fn conv_transpose_out(a: &ConvTransposeAttrs, kernel: &[usize], sp: &[usize]) -> R<Shape> {
    let n = sp.len();
    let strides = a.geom.strides_or_ones(n);
    let dil = a.geom.dilations_or_ones(n);
    let opad = if a.output_padding.is_empty() {
        vec![0; n]
    } else {
        a.output_padding.clone()
    };
    if strides.len() != n || dil.len() != n || opad.len() != n || kernel.len() != n {
        return Err(
            "ConvTranspose strides/dilations/output_padding/kernel do not match the spatial rank"
                .into(),
        );
    }
    if !a.output_shape.is_empty() {
        if a.output_shape.len() < n {
            return Err(format!(
                "ConvTranspose output_shape {:?} has fewer than {n} entries",
                a.output_shape
            ));
        }
        let os = a.output_shape[a.output_shape.len() - n..].to_vec();
        return Ok(Shape::fixed(&os));
    }
    let pads = match a.geom.auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower | AutoPad::Valid => vec![0; 2 * n],
        AutoPad::NotSet => {
            if a.geom.pads.is_empty() {
                vec![0; 2 * n]
            } else {
                a.geom.pads.clone()
            }
        }
    };
    if pads.len() != 2 * n {
        return Err(format!(
            "ConvTranspose has {} pads for {n} spatial axes",
            pads.len()
        ));
    }
    let mut out = vec![];
    for i in 0..n {
        if kernel[i] == 0 || sp[i] == 0 {
            return Err("ConvTranspose kernel and input extents must be positive".into());
        }
        if matches!(a.geom.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            out.push(sp[i] * strides[i]);
            continue;
        }
        let full = strides[i] * (sp[i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1;
        let o = full as i64 - pads[i] as i64 - pads[i + n] as i64;
        if o <= 0 {
            return Err("ConvTranspose output is empty".into());
        }
        out.push(o as usize);
    }
    Ok(Shape::fixed(&out))
}

/// Output sizes for Resize given `sizes`, honouring keep_aspect_ratio_policy.
pub fn resize_sizes_from_sizes(
    x: &Shape,
    axes: &[usize],
    sizes: &[i64],
    policy: &str,
) -> Vec<usize> {
    let Some(dims) = x.as_fixed() else {
        return vec![];
    };
    if policy == "stretch" || policy.is_empty() {
        return sizes.iter().map(|&s| s as usize).collect();
    }
    let ratios: Vec<f64> = axes
        .iter()
        .zip(sizes)
        .map(|(&a, &s)| s as f64 / dims[a] as f64)
        .collect();
    let r = if policy == "not_larger" {
        ratios.iter().cloned().fold(f64::INFINITY, f64::min)
    } else {
        ratios.iter().cloned().fold(0.0, f64::max)
    };
    axes.iter()
        .map(|&a| (dims[a] as f64 * r).round() as usize)
        .collect()
}

fn einsum_shape(eq: &str, ops: &[Option<Operand>]) -> R<ValueType> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    let xs: Vec<Operand> = ops.iter().flatten().copied().collect();
    if terms.len() != xs.len() {
        return Err(format!(
            "Einsum equation has {} terms for {} operands",
            terms.len(),
            xs.len()
        ));
    }
    if eq.contains("...") {
        return Err("Einsum with ellipsis is not supported".into());
    }
    let mut dims: std::collections::BTreeMap<char, Dim> = Default::default();
    let mut counts: std::collections::BTreeMap<char, usize> = Default::default();
    for (t, x) in terms.iter().zip(&xs) {
        if t.len() != x.ty.shape.rank() {
            return Err(format!(
                "Einsum term {t} does not match rank {}",
                x.ty.shape.rank()
            ));
        }
        for (c, d) in t.chars().zip(&x.ty.shape.0) {
            *counts.entry(c).or_default() += 1;
            let e = dims.entry(c).or_insert(d.clone());
            if *e == Dim::Fixed(1) {
                *e = d.clone();
            }
        }
    }
    let out_labels: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => counts
            .iter()
            .filter(|(_, &n)| n == 1)
            .map(|(&c, _)| c)
            .collect(),
    };
    let shape = out_labels
        .iter()
        .map(|c| {
            dims.get(c)
                .cloned()
                .ok_or_else(|| format!("Einsum output label {c} not in inputs"))
        })
        .collect::<R<Vec<_>>>()?;
    Ok(ValueType::new(xs[0].ty.dtype, Shape(shape)))
}

impl Graph {
    /// Infer the type of every value, in topological order. Errors name the node.
    /// Values whose type is not knowable yet (see [`InferError::Unknown`]) are left untyped, and
    /// so are the values computed from them; the verifier insists on types, so a pipeline must
    /// resolve them (by shape binding and constant folding) before it verifies.
    pub fn infer_types(&mut self) -> Result<(), crate::IrError> {
        let order = self
            .topo_order()
            .map_err(|n| crate::IrError::Cycle { node: n })?;
        let mut syms = Symbols::default();
        for n in order {
            if matches!(self.g[n].op, Op::Input) {
                continue;
            }
            let operands = self.operands(n);
            let mut tys = Vec::with_capacity(operands.len());
            let mut untyped = false;
            for o in operands.iter() {
                match o {
                    None => tys.push(None),
                    Some(o) => {
                        let v = self.value(*o);
                        let Some(ty) = v.ty.as_ref() else {
                            untyped = true;
                            break;
                        };
                        let value = match &self.g[o.node].op {
                            Op::Const(t) => Some(t),
                            _ => None,
                        };
                        tys.push(Some(Operand { ty, value }));
                    }
                }
            }
            let node = &self.g[n];
            let out = if untyped {
                Err(InferError::Unknown(String::new()))
            } else {
                infer_op(&node.op, &tys, &mut syms)
            };
            let out = match out {
                Ok(out) => out,
                Err(InferError::Unknown(_)) => {
                    for v in self.g[n].outputs.iter_mut() {
                        v.ty = None;
                    }
                    continue;
                }
                Err(InferError::Invalid(msg)) => {
                    return Err(crate::IrError::Node {
                        node: node.name.clone(),
                        op: node.op.name(),
                        msg,
                    })
                }
            };
            let node = &mut self.g[n];
            if out.len() != node.outputs.len() {
                return Err(crate::IrError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    msg: format!(
                        "op yields {} outputs, node declares {}",
                        out.len(),
                        node.outputs.len()
                    ),
                });
            }
            for (v, t) in node.outputs.iter_mut().zip(out) {
                // Keep quantization parameters a pass attached to the value.
                let quant = v.ty.as_ref().and_then(|t| t.quant.clone());
                v.ty = Some(ValueType { quant, ..t });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        let a = Shape::fixed(&[2, 1, 4]);
        let b = Shape::fixed(&[3, 1]);
        assert_eq!(broadcast(&[&a, &b]).unwrap(), Shape::fixed(&[2, 3, 4]));
        assert!(broadcast(&[&Shape::fixed(&[2]), &Shape::fixed(&[3])]).is_err());
    }

    #[test]
    fn conv_out_dims_match_onnx() {
        assert_eq!(conv_out_dim(5, 3, 1, 1, 1, 1, false).unwrap(), 5);
        assert_eq!(conv_out_dim(7, 3, 2, 1, 1, 1, false).unwrap(), 4);
        assert_eq!(conv_out_dim(32, 3, 2, 1, 0, 0, true).unwrap(), 16);
    }

    #[test]
    fn reshape_infers_minus_one_and_zero() {
        let mut s = Symbols::default();
        let x = Shape::fixed(&[2, 3, 4]);
        assert_eq!(
            reshape_shape(&x, &[0, -1], false, &mut s).unwrap(),
            Shape::fixed(&[2, 12])
        );
        assert!(reshape_shape(&x, &[5, -1], false, &mut s).is_err());
        let xs = Shape(vec![Dim::Sym("N".into()), Dim::Fixed(4), Dim::Fixed(8)]);
        assert_eq!(
            reshape_shape(&xs, &[-1, 32], false, &mut s).unwrap(),
            Shape(vec![Dim::Sym("N".into()), Dim::Fixed(32)])
        );
    }

    #[test]
    fn slice_range_clamps() {
        assert_eq!(slice_range(0, i64::MAX, 1, 5), (0, 5, 5));
        assert_eq!(slice_range(-1, i64::MIN, -1, 5).2, 5);
        assert_eq!(slice_range(1, 4, 2, 5).2, 2);
    }
}
