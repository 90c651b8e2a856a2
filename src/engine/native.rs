//! Native implementations of the non-GEMM operators quantized CNN and BERT graphs run, replacing
//! the (f64, allocation-heavy) reference interpreter on the hot path.
//!
//! Exactness: integer-path ops (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
//! QLinearAdd, QLinearGlobalAveragePool) follow the reference interpreter's float operation order
//! and are bit-identical to it. f32 Add / Sub / Mul / Div / Clip / Relu are correctly rounded
//! single operations, so also bit-identical to the reference (which rounds an exact f64 result
//! once). Softmax, LayerNormalization, Erf and the f32 MatMul run f32 SIMD kernels and agree with
//! the reference to about 1e-6 relative.

use octet_ir::{BinaryOp, DType, Graph, NodeIndex, Op, Tensor, UnaryOp};
use octet_kernels::{
    dequantize_i8, dequantize_u8, dynamic_quantize_u8, erf_inplace, gelu_inplace, gemm_f32,
    layer_norm_rows, qadd_u8, quantize_i8, quantize_u8, relu_inplace, softmax_rows,
    softmax_rows_nan_to, Kernel, PackedBF32, QAdd, WeightLayout,
};

use super::pool::Pool;

type R<T> = Result<T, String>;

/// A natively executed operator, its constant parameters extracted at build time.
pub enum NativeOp {
    Quantize {
        scale: f32,
        zp: i32,
        signed: bool,
    },
    Dequantize {
        scale: f32,
        zp: i32,
    },
    DynQuant,
    /// QLinearAdd as a 256 x 256 table over the two operand bytes, filled at build time with the
    /// reference formula (so exact).
    QAdd {
        lut: Vec<u8>,
        out_dtype: DType,
        /// The same add (and folded DQ-[Relu]-Q tables) for the SIMD kernel `qadd_u8` (same IEEE
        /// operations as the reference), when its parameters are in the kernel's domain.
        kq: Option<QAdd>,
    },
    /// A per-byte table: `DequantizeLinear -> [Relu] -> QuantizeLinear` (per tensor) folded.
    Lut {
        lut: Vec<u8>,
        out_dtype: DType,
    },
    QGap {
        mult: f32,
        x_zp: i64,
        y_zp: i64,
        y_dtype: DType,
    },
    Relu,
    Clip {
        lo: f32,
        hi: f32,
    },
    /// f32 Add/Sub/Mul/Div with broadcasting; the flag: both operands have the same shape (so it
    /// can run on NHWC data).
    Binary(BinaryOp, bool),
    /// Same-shape f32 Add followed by Relu (a ResNet block's end), in one pass over the data.
    AddRelu,
    Erf,
    /// ReduceSum / ReduceMean of f32 over one axis (`[outer, n, inner] -> [outer, inner]`),
    /// summed in f64 like the reference, rounded once.
    ReduceAxis {
        axis: usize,
        mean: bool,
        keepdims: bool,
    },
    Softmax,
    LayerNorm {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        eps: f32,
    },
    /// Reshape / Flatten / Squeeze / Unsqueeze: a new shape over the same bytes.
    Reshape(Vec<usize>),
    Transpose(Vec<usize>),
    /// Gather on axis 0.
    Gather,
    /// f32 MatMul of two run-time operands (attention): batched GEMM.
    MatMulF32,
    /// 2-D MaxPool (u8 / i8 / f32), NCHW or NHWC.
    MaxPool {
        k: (usize, usize),
        s: (usize, usize),
        d: (usize, usize),
        /// top, left
        pad: (usize, usize),
        out: (usize, usize),
    },
    /// f32 GlobalAveragePool on 4-D input (f64 sums as the reference).
    Gap,
    /// `DequantizeLinear -> [Relu] -> GlobalAveragePool` on a 4-D 8-bit input (per tensor): the
    /// same dequantize and ReLU kernels, one pixel row (NHWC) or channel plane (NCHW) at a time
    /// into a small scratch, and `Gap`'s f64 sums in its order: the values of the three steps
    /// without the f32 tensor between them (ResNet-50's tail: 400 KB written cold, read back).
    DqGap {
        scale: f32,
        zp: i32,
        relu: bool,
    },
    /// Where(cond bool, x f32, y f32) with broadcasting.
    Where,
    /// Expand (any dtype) to this fixed output shape: a broadcasting copy.
    Expand(Vec<usize>),
    IsNaN,
    /// Softmax then NaN -> constant: `Where(IsNaN(Softmax(x)), c, Softmax(x))` fused.
    SoftmaxNanTo(f32),
    /// And / Or on bool with broadcasting.
    Logic(BinaryOp),
    /// GELU (erf form), fused from Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5.
    Gelu,
}

fn scalar_f32(t: Option<&Tensor>) -> Option<f32> {
    let t = t?;
    (t.dtype() == DType::F32 && t.len() == 1).then(|| t.view::<f32>().unwrap()[0])
}

fn scalar_int(t: Option<&Tensor>) -> Option<i64> {
    let t = t?;
    (t.len() == 1 && matches!(t.dtype(), DType::U8 | DType::I8)).then(|| t.to_i64_vec()[0])
}

fn in_dtype(g: &Graph, n: NodeIndex, slot: usize) -> Option<DType> {
    g.operand(n, slot).and_then(|o| g.ty(o)).map(|t| t.dtype)
}

fn out_shape(g: &Graph, n: NodeIndex) -> Option<Vec<usize>> {
    g.node(n).outputs[0]
        .ty
        .as_ref()
        .and_then(|t| t.shape.as_fixed())
        .map(|s| s.to_vec())
}

impl NativeOp {
    /// The native implementation of node `n`, or None (reference interpreter).
    pub fn build(g: &Graph, n: NodeIndex) -> Option<NativeOp> {
        let node = g.node(n);
        let x_dt = in_dtype(g, n, 0);
        let f32_in = x_dt == Some(DType::F32);
        Some(match &node.op {
            Op::QuantizeLinear { axis: _, .. } if f32_in => {
                let scale = scalar_f32(g.const_operand(n, 1))?;
                if !(scale.is_finite() && scale > 0.0) {
                    return None;
                }
                let (zp, signed) = match g.operand(n, 2) {
                    None => match &node.op {
                        Op::QuantizeLinear {
                            out_dtype: Some(DType::I8),
                            ..
                        } => (0, true),
                        Op::QuantizeLinear {
                            out_dtype: None | Some(DType::U8),
                            ..
                        } => (0, false),
                        _ => return None,
                    },
                    Some(_) => {
                        let t = g.const_operand(n, 2)?;
                        (scalar_int(Some(t))? as i32, t.dtype() == DType::I8)
                    }
                };
                NativeOp::Quantize { scale, zp, signed }
            }
            Op::DequantizeLinear { .. } if matches!(x_dt, Some(DType::U8 | DType::I8)) => {
                let scale = scalar_f32(g.const_operand(n, 1))?;
                let zp = match g.operand(n, 2) {
                    None => 0,
                    Some(_) => scalar_int(g.const_operand(n, 2))? as i32,
                };
                NativeOp::Dequantize { scale, zp }
            }
            Op::DynamicQuantizeLinear if f32_in => NativeOp::DynQuant,
            Op::QLinearBinary(BinaryOp::Add) => {
                let signed = match x_dt? {
                    DType::U8 => false,
                    DType::I8 => true,
                    _ => return None,
                };
                let sa = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                let sb = g.operand(n, 3).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                if sa != sb || in_dtype(g, n, 3) != x_dt {
                    return None;
                }
                let zp = |slot| match g.operand(n, slot) {
                    None => Some(0),
                    Some(_) => scalar_int(g.const_operand(n, slot)),
                };
                let (a_s, a_zp) = (scalar_f32(g.const_operand(n, 1))?, zp(2)?);
                let (b_s, b_zp) = (scalar_f32(g.const_operand(n, 4))?, zp(5)?);
                let (c_s, c_zp) = (scalar_f32(g.const_operand(n, 6))?, zp(7)?);
                let (lo, hi) = if signed { (-128i64, 127i64) } else { (0, 255) };
                let val = |b: usize| {
                    if signed {
                        b as u8 as i8 as i64
                    } else {
                        b as i64
                    }
                };
                let mut lut = vec![0u8; 65536];
                for p in 0..256 {
                    let xa = (val(p) - a_zp) as f32 * a_s;
                    for q in 0..256 {
                        let yb = (val(q) - b_zp) as f32 * b_s;
                        let v = ((xa + yb) / c_s).round_ties_even() as i64 + c_zp;
                        lut[p * 256 + q] = v.clamp(lo, hi) as u8;
                    }
                }
                NativeOp::QAdd {
                    lut,
                    out_dtype: x_dt?,
                    kq: QAdd::new(
                        (a_s, a_zp as i32),
                        (b_s, b_zp as i32),
                        (c_s, c_zp as i32),
                        signed,
                        None,
                    )
                    .ok(),
                }
            }
            Op::QLinearGlobalAveragePool {
                channels_last: false,
            } => {
                let xs = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                if xs.len() != 4 || !matches!(x_dt?, DType::U8 | DType::I8) {
                    return None;
                }
                let x_s = scalar_f32(g.const_operand(n, 1))?;
                let y_s = scalar_f32(g.const_operand(n, 3))?;
                let yz = g.const_operand(n, 4)?;
                let count = xs[2] * xs[3];
                NativeOp::QGap {
                    mult: x_s / (y_s * count as f32),
                    x_zp: scalar_int(g.const_operand(n, 2))?,
                    y_zp: scalar_int(Some(yz))?,
                    y_dtype: yz.dtype(),
                }
            }
            Op::Unary(UnaryOp::Relu) if f32_in => NativeOp::Relu,
            Op::Unary(UnaryOp::Erf) if f32_in => NativeOp::Erf,
            Op::Clip if f32_in => {
                let lo = match g.operand(n, 1) {
                    None => f32::NEG_INFINITY,
                    Some(_) => scalar_f32(g.const_operand(n, 1))?,
                };
                let hi = match g.operand(n, 2) {
                    None => f32::INFINITY,
                    Some(_) => scalar_f32(g.const_operand(n, 2))?,
                };
                NativeOp::Clip { lo, hi }
            }
            Op::Binary(b @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div))
                if f32_in && in_dtype(g, n, 1) == Some(DType::F32) =>
            {
                let shape = |i: usize| {
                    g.operand(n, i)
                        .and_then(|o| g.ty(o))
                        .and_then(|t| t.shape.as_fixed().map(|s| s.to_vec()))
                };
                let same = shape(0).is_some() && shape(0) == shape(1);
                NativeOp::Binary(*b, same)
            }
            Op::Reduce {
                op: op @ (octet_ir::ReduceOp::Sum | octet_ir::ReduceOp::Mean),
                keepdims,
                ..
            } if f32_in => {
                let r = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.rank();
                let axes = g.const_operand(n, 1)?.to_i64_vec();
                let [a] = axes.as_slice() else { return None };
                let axis = if *a < 0 { *a + r as i64 } else { *a };
                if !(0..r as i64).contains(&axis) {
                    return None;
                }
                NativeOp::ReduceAxis {
                    axis: axis as usize,
                    mean: matches!(op, octet_ir::ReduceOp::Mean),
                    keepdims: *keepdims,
                }
            }
            Op::Softmax { axis, legacy } if f32_in => {
                let r = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.rank() as i64;
                let last = *axis == -1 || *axis == r - 1;
                if !(last && (!legacy || r <= 2)) {
                    return None;
                }
                NativeOp::Softmax
            }
            Op::LayerNorm { axis, epsilon } if f32_in => {
                let xs = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                let r = xs.len() as i64;
                if !(*axis == -1 || *axis == r - 1) {
                    return None;
                }
                let c = *xs.last()?;
                let gamma = g.const_operand(n, 1)?;
                if gamma.dtype() != DType::F32 || gamma.len() != c {
                    return None;
                }
                let beta = match g.operand(n, 2) {
                    None => vec![0.0; c],
                    Some(_) => {
                        let b = g.const_operand(n, 2)?;
                        if b.dtype() != DType::F32 || b.len() != c {
                            return None;
                        }
                        b.view::<f32>().ok()?.to_vec()
                    }
                };
                NativeOp::LayerNorm {
                    gamma: gamma.view::<f32>().ok()?.to_vec(),
                    beta,
                    eps: *epsilon,
                }
            }
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze => {
                NativeOp::Reshape(out_shape(g, n)?)
            }
            Op::Transpose { perm } => {
                let r = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.rank();
                let perm = if perm.is_empty() {
                    (0..r).rev().collect()
                } else {
                    perm.clone()
                };
                NativeOp::Transpose(perm)
            }
            Op::Gather { axis: 0 }
                if matches!(in_dtype(g, n, 1), Some(DType::I64 | DType::I32))
                    && g.operand(n, 0).and_then(|o| g.ty(o))?.shape.rank() >= 1 =>
            {
                NativeOp::Gather
            }
            Op::MatMul
                if f32_in
                    && in_dtype(g, n, 1) == Some(DType::F32)
                    && g.const_operand(n, 1).is_none() =>
            {
                let sa = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                let sb = g.operand(n, 1).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                if sa.len() < 2 || sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2]
                {
                    return None;
                }
                NativeOp::MatMulF32
            }
            Op::Where
                if in_dtype(g, n, 0) == Some(DType::Bool)
                    && in_dtype(g, n, 1) == Some(DType::F32)
                    && in_dtype(g, n, 2) == Some(DType::F32) =>
            {
                NativeOp::Where
            }
            Op::Unary(UnaryOp::IsNaN) if f32_in => NativeOp::IsNaN,
            Op::Expand => {
                let xs = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                let os = out_shape(g, n)?;
                // Shapes as inference bound them: the input broadcasts to the output.
                if xs.len() > os.len()
                    || xs
                        .iter()
                        .rev()
                        .zip(os.iter().rev())
                        .any(|(&a, &b)| a != b && a != 1)
                {
                    return None;
                }
                NativeOp::Expand(os)
            }
            Op::MaxPool(p)
                if matches!(x_dt, Some(DType::U8 | DType::I8 | DType::F32))
                    && node.outputs.len() == 1 =>
            {
                let xs = g.operand(n, 0).and_then(|o| g.ty(o))?.shape.as_fixed()?;
                let os = out_shape(g, n)?;
                let k = &p.geom.kernel_shape;
                if xs.len() != 4 || os.len() != 4 || k.len() != 2 {
                    return None;
                }
                let two = |v: &Vec<usize>| -> Option<(usize, usize)> {
                    match v.len() {
                        0 => Some((1, 1)),
                        2 => Some((v[0], v[1])),
                        _ => None,
                    }
                };
                let pads = octet_ir::infer::resolve_pads(&p.geom, k, &xs[2..]);
                if pads.len() != 4 {
                    return None;
                }
                let (st, dl) = (two(&p.geom.strides)?, two(&p.geom.dilations)?);
                if st.0 == 0 || st.1 == 0 || dl.0 == 0 || dl.1 == 0 {
                    return None;
                }
                NativeOp::MaxPool {
                    k: (k[0], k[1]),
                    s: st,
                    d: dl,
                    pad: (pads[0], pads[1]),
                    out: (os[2], os[3]),
                }
            }
            Op::GlobalAveragePool
                if f32_in && g.operand(n, 0).and_then(|o| g.ty(o))?.shape.rank() == 4 =>
            {
                NativeOp::Gap
            }
            Op::Binary(b @ (BinaryOp::And | BinaryOp::Or))
                if x_dt == Some(DType::Bool) && in_dtype(g, n, 1) == Some(DType::Bool) =>
            {
                NativeOp::Logic(*b)
            }
            _ => return None,
        })
    }

    /// Element-wise in place on operand 0 when the engine can hand it over (it dies here).
    pub fn in_place(&self) -> bool {
        matches!(
            self,
            NativeOp::Relu
                | NativeOp::Erf
                | NativeOp::Clip { .. }
                | NativeOp::Softmax
                | NativeOp::SoftmaxNanTo(_)
                | NativeOp::Gelu
        )
    }

    /// Run in place on `x` (see [`NativeOp::in_place`]).
    pub fn run_in_place(&self, k: &Kernel, x: &mut Tensor) -> R<()> {
        let len = *x.shape().last().unwrap_or(&1);
        let v = x.view_mut::<f32>().map_err(|e| e.to_string())?;
        match self {
            NativeOp::Relu => relu_inplace(k, v),
            NativeOp::Erf => erf_inplace(k, v),
            NativeOp::Gelu => gelu_inplace(k, v),
            NativeOp::Clip { lo, hi } => {
                for a in v.iter_mut() {
                    *a = if *a < *lo {
                        *lo
                    } else if *a > *hi {
                        *hi
                    } else {
                        *a
                    };
                }
            }
            NativeOp::Softmax if len > 0 && !v.is_empty() => {
                softmax_rows(k, v, len).map_err(|e| e.to_string())?
            }
            NativeOp::SoftmaxNanTo(c) if len > 0 && !v.is_empty() => {
                softmax_rows_nan_to(k, v, len, *c).map_err(|e| e.to_string())?
            }
            NativeOp::Softmax | NativeOp::SoftmaxNanTo(_) => {}
            _ => return Err("not an in-place op".into()),
        }
        Ok(())
    }

    /// Element-wise on its layout operands (same-shape), so it can run on NHWC data.
    pub fn layout_operands(&self) -> &'static [usize] {
        match self {
            NativeOp::Quantize { .. }
            | NativeOp::Dequantize { .. }
            | NativeOp::Relu
            | NativeOp::Clip { .. }
            | NativeOp::Lut { .. } => &[0],
            NativeOp::QAdd { .. } => &[0, 3],
            // Same-shape operands (a residual Add): element-wise in any layout.
            NativeOp::Binary(_, true) | NativeOp::AddRelu => &[0, 1],
            NativeOp::MaxPool { .. } => &[0],
            _ => &[],
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            NativeOp::Quantize { .. } => "quantize (simd)",
            NativeOp::Dequantize { .. } => "dequantize (simd)",
            NativeOp::DynQuant => "dynamic_quantize_u8 (simd)",
            NativeOp::QAdd { .. } => "qlinear_add (256x256 table)",
            NativeOp::Lut { .. } => "byte table (DequantizeLinear-[Relu]-QuantizeLinear folded)",
            NativeOp::QGap { .. } => "qlinear_global_avgpool",
            NativeOp::Relu => "relu (simd)",
            NativeOp::Clip { .. } => "clip",
            NativeOp::Binary(..) => "binary f32 (broadcast)",
            NativeOp::AddRelu => "add + relu f32 (one pass)",
            NativeOp::Erf => "erf (simd)",
            NativeOp::ReduceAxis { .. } => "reduce one axis f32 (f64 sums)",
            NativeOp::Softmax => "softmax_rows (simd)",
            NativeOp::LayerNorm { .. } => "layer_norm_rows (simd)",
            NativeOp::Reshape(_) => "reshape (view)",
            NativeOp::Transpose(_) => "transpose copy",
            NativeOp::Gather => "gather rows",
            NativeOp::MatMulF32 => "batched gemm_f32",
            NativeOp::Where => "where f32 (broadcast)",
            NativeOp::Expand(_) => "expand (broadcast copy)",
            NativeOp::IsNaN => "isnan",
            NativeOp::SoftmaxNanTo(_) => "softmax_rows (simd) + NaN replace (fused IsNaN-Where)",
            NativeOp::Logic(_) => "bool and/or (broadcast)",
            NativeOp::Gap => "global_avgpool f32",
            NativeOp::DqGap { .. } => "dequantize + [relu] + global_avgpool (fused, row at a time)",
            NativeOp::MaxPool { .. } => "maxpool 2-D",
            NativeOp::Gelu => "gelu (simd; fused Div-Erf-Add-Mul-Mul)",
        }
    }

    /// Run. `channels_last`: the (4-D) input is stored NHWC (only QGap cares).
    pub fn run(
        &self,
        k: &Kernel,
        args: &[Option<&Tensor>],
        channels_last: bool,
        pool: &mut Pool,
    ) -> R<Vec<Tensor>> {
        let x = args.first().copied().flatten().ok_or("missing input")?;
        let e = |e: octet_kernels::KernelError| e.to_string();
        let one = |t: Tensor| Ok(vec![t]);
        match self {
            NativeOp::ReduceAxis {
                axis,
                mean,
                keepdims,
            } => {
                let xv = x.view::<f32>().map_err(|e| e.to_string())?;
                let s = x.shape();
                let n = *s.get(*axis).ok_or("reduce axis out of range")?;
                let outer: usize = s[..*axis].iter().product();
                let inner: usize = s[*axis + 1..].iter().product();
                let mut shape = s.to_vec();
                if *keepdims {
                    shape[*axis] = 1;
                } else {
                    shape.remove(*axis);
                }
                let mut out = pool.tensor(DType::F32, &shape);
                let ov = out.view_mut::<f32>().unwrap();
                let mut acc = vec![0f64; inner];
                for o in 0..outer {
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    for i in 0..n {
                        let row = &xv[(o * n + i) * inner..(o * n + i + 1) * inner];
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += v as f64;
                        }
                    }
                    for (y, &a) in ov[o * inner..(o + 1) * inner].iter_mut().zip(&acc) {
                        *y = if *mean { a / n as f64 } else { a } as f32;
                    }
                }
                one(out)
            }
            NativeOp::Quantize { scale, zp, signed } => {
                let xv = x.view::<f32>().map_err(|e| e.to_string())?;
                if *signed {
                    let mut out = pool.tensor(DType::I8, x.shape());
                    let ov = out.view_mut::<i8>().unwrap();
                    par_elementwise(xv, ov, |a, o| quantize_i8(k, a, *scale, *zp, o)).map_err(e)?;
                    one(out)
                } else {
                    let mut out = pool.tensor(DType::U8, x.shape());
                    let ov = out.bytes_mut();
                    par_elementwise(xv, ov, |a, o| quantize_u8(k, a, *scale, *zp, o)).map_err(e)?;
                    one(out)
                }
            }
            NativeOp::Dequantize { scale, zp } => {
                let mut out = pool.tensor(DType::F32, x.shape());
                let ov = out.view_mut::<f32>().unwrap();
                match x.dtype() {
                    DType::U8 => {
                        par_elementwise(x.bytes(), ov, |a, o| dequantize_u8(k, a, *scale, *zp, o))
                            .map_err(e)?
                    }
                    _ => par_elementwise(x.view::<i8>().unwrap(), ov, |a, o| {
                        dequantize_i8(k, a, *scale, *zp, o)
                    })
                    .map_err(e)?,
                }
                one(out)
            }
            NativeOp::DynQuant => {
                let xv = x.view::<f32>().map_err(|e| e.to_string())?;
                let mut out = pool.tensor(DType::U8, x.shape());
                let p = dynamic_quantize_u8(k, xv, out.bytes_mut()).map_err(e)?;
                // All-zero tensor: the reference (onnxruntime) reports scale 1.
                let scale = if p.scale == 0.0 { 1.0 } else { p.scale };
                Ok(vec![
                    out,
                    Tensor::scalar(scale),
                    Tensor::scalar(p.zero_point as u8),
                ])
            }
            NativeOp::Lut { lut, out_dtype } => {
                let mut out = pool.tensor(*out_dtype, x.shape());
                for (d, &p) in out.bytes_mut().iter_mut().zip(x.bytes()) {
                    *d = lut[p as usize];
                }
                one(out)
            }
            NativeOp::QAdd { lut, out_dtype, kq } => {
                let b = args.get(3).copied().flatten().ok_or("missing B")?;
                if b.shape() != x.shape() {
                    return Err("QLinearAdd operands differ in shape".into());
                }
                let mut out = pool.tensor(*out_dtype, x.shape());
                let o = out.bytes_mut();
                match kq {
                    Some(q) => qadd_u8(k, x.bytes(), b.bytes(), o, q).map_err(e)?,
                    None => {
                        for ((d, &p), &q) in o.iter_mut().zip(x.bytes()).zip(b.bytes()) {
                            *d = lut[(p as usize) << 8 | q as usize];
                        }
                    }
                }
                one(out)
            }
            NativeOp::QGap {
                mult,
                x_zp,
                y_zp,
                y_dtype,
            } => {
                let s = x.shape();
                let (n, c, count) = if channels_last {
                    (s[0], s[3], s[1] * s[2])
                } else {
                    (s[0], s[1], s[2] * s[3])
                };
                let signed = x.dtype() == DType::I8;
                let xb = x.bytes();
                // Integer sums (exact in any order): int32 lanes when `count` bytes cannot
                // overflow them (2^23 * 255 < 2^31), one pass over NHWC rows that vectorizes.
                let mut st = pool.tensor(DType::I64, &[n * c]);
                let sums = st.view_mut::<i64>().map_err(|e| e.to_string())?;
                if channels_last && count < 1 << 23 {
                    let mut acc32 = pool.tensor(DType::I32, &[c]);
                    let acc = acc32.view_mut::<i32>().map_err(|e| e.to_string())?;
                    for b in 0..n {
                        acc.fill(0);
                        let img = &xb[b * count * c..(b + 1) * count * c];
                        if signed {
                            for row in img.chunks_exact(c) {
                                for (a, &v) in acc.iter_mut().zip(row) {
                                    *a += v as i8 as i32;
                                }
                            }
                        } else {
                            for row in img.chunks_exact(c) {
                                for (a, &v) in acc.iter_mut().zip(row) {
                                    *a += v as i32;
                                }
                            }
                        }
                        for (d, &a) in sums[b * c..(b + 1) * c].iter_mut().zip(acc.iter()) {
                            *d = a as i64;
                        }
                    }
                    pool.give(acc32);
                } else {
                    let val = |b: u8| if signed { b as i8 as i64 } else { b as i64 };
                    sums.fill(0);
                    for b in 0..n {
                        if channels_last {
                            for p in 0..count {
                                let row = &xb[(b * count + p) * c..(b * count + p + 1) * c];
                                for (acc, &v) in sums[b * c..(b + 1) * c].iter_mut().zip(row) {
                                    *acc += val(v);
                                }
                            }
                        } else {
                            for ch in 0..c {
                                let plane = &xb[(b * c + ch) * count..(b * c + ch + 1) * count];
                                sums[b * c + ch] = plane.iter().map(|&v| val(v)).sum();
                            }
                        }
                    }
                }
                let (lo, hi) = if *y_dtype == DType::I8 {
                    (-128, 127)
                } else {
                    (0, 255)
                };
                let mut out = pool.tensor(*y_dtype, &[n, c, 1, 1]);
                for (d, &acc) in out.bytes_mut().iter_mut().zip(sums.iter()) {
                    let acc = acc - x_zp * count as i64;
                    let v = ((acc as f32 * mult).round_ties_even() as i64 + y_zp).clamp(lo, hi);
                    *d = v as u8;
                }
                pool.give(st);
                one(out)
            }
            NativeOp::Relu
            | NativeOp::Erf
            | NativeOp::Clip { .. }
            | NativeOp::Softmax
            | NativeOp::SoftmaxNanTo(_)
            | NativeOp::Gelu => {
                let mut out = pool.copy_of(x);
                self.run_in_place(k, &mut out)?;
                one(out)
            }
            NativeOp::IsNaN => {
                let xv = x.view::<f32>().map_err(|e| e.to_string())?;
                let b: Vec<bool> = xv.iter().map(|v| v.is_nan()).collect();
                one(Tensor::from_bools(x.shape(), &b))
            }
            NativeOp::MaxPool {
                k: kk,
                s: st,
                d: dl,
                pad,
                out: (oh, ow),
            } => {
                let s = x.shape();
                let (n, c, h, w) = if channels_last {
                    (s[0], s[3], s[1], s[2])
                } else {
                    (s[0], s[1], s[2], s[3])
                };
                let shape = if channels_last {
                    [n, *oh, *ow, c]
                } else {
                    [n, c, *oh, *ow]
                };
                let mut out = pool.tensor(x.dtype(), &shape);
                if channels_last {
                    // NHWC: the kernels' SIMD pooling (window maxima kept in registers).
                    let kg = octet_kernels::PoolGeometry {
                        n,
                        h,
                        w,
                        c,
                        oh: *oh,
                        ow: *ow,
                        kernel: *kk,
                        stride: *st,
                        dilation: *dl,
                        pad: *pad,
                    };
                    match x.dtype() {
                        DType::U8 | DType::I8 => octet_kernels::maxpool_nhwc_u8(
                            k,
                            x.bytes(),
                            out.bytes_mut(),
                            &kg,
                            x.dtype() == DType::I8,
                        ),
                        _ => octet_kernels::maxpool_nhwc_f32(
                            k,
                            x.view::<f32>().map_err(|e| e.to_string())?,
                            out.view_mut::<f32>().map_err(|e| e.to_string())?,
                            &kg,
                        ),
                    }
                    .map_err(e)?;
                    return one(out);
                }
                let geo = PoolGeo {
                    n,
                    c,
                    h,
                    w,
                    oh: *oh,
                    ow: *ow,
                    k: *kk,
                    s: *st,
                    d: *dl,
                    pad: *pad,
                };
                match x.dtype() {
                    DType::U8 => maxpool(x.bytes(), out.bytes_mut(), &geo, 0u8, |a: u8, b: u8| {
                        a.max(b)
                    }),
                    DType::I8 => maxpool(
                        x.view::<i8>().unwrap(),
                        out.view_mut::<i8>().unwrap(),
                        &geo,
                        i8::MIN,
                        |a: i8, b: i8| a.max(b),
                    ),
                    _ => maxpool(
                        x.view::<f32>().unwrap(),
                        out.view_mut::<f32>().unwrap(),
                        &geo,
                        f32::NEG_INFINITY,
                        |a: f32, b: f32| if b > a { b } else { a },
                    ),
                }
                one(out)
            }
            NativeOp::DqGap { scale, zp, relu } => {
                let s = x.shape();
                if s.len() != 4 || !matches!(x.dtype(), DType::U8 | DType::I8) {
                    return Err(format!(
                        "fused dequantize + avgpool got {:?} {s:?}",
                        x.dtype()
                    ));
                }
                let (n, c, count) = if channels_last {
                    (s[0], s[3], s[1] * s[2])
                } else {
                    (s[0], s[1], s[2] * s[3])
                };
                // One row of the layout: a pixel's channels (NHWC) or a channel's plane (NCHW).
                let row = if channels_last { c } else { count };
                let xb = x.bytes();
                let mut tmp = pool.tensor(DType::F32, &[row]);
                let mut out = pool.tensor(DType::F32, &[n, c, 1, 1]);
                let ov = out.view_mut::<f32>().unwrap();
                let tv = tmp.view_mut::<f32>().unwrap();
                // `Gap`'s means, on the rows as the two steps before it would have left them.
                channel_means(pool, (n, c, count), channels_last, ov, |r, f| {
                    let src = &xb[r * row..(r + 1) * row];
                    if x.dtype() == DType::I8 {
                        dequantize_i8(k, bytemuck::cast_slice(src), *scale, *zp, tv).map_err(e)?;
                    } else {
                        dequantize_u8(k, src, *scale, *zp, tv).map_err(e)?;
                    }
                    if *relu {
                        relu_inplace(k, tv);
                    }
                    f(tv);
                    Ok(())
                })?;
                pool.give(tmp);
                one(out)
            }
            NativeOp::Gap => {
                let s = x.shape();
                let (n, c, count) = if channels_last {
                    (s[0], s[3], s[1] * s[2])
                } else {
                    (s[0], s[1], s[2] * s[3])
                };
                let xv = x.view::<f32>().map_err(|e| e.to_string())?;
                let mut out = pool.tensor(DType::F32, &[n, c, 1, 1]);
                let ov = out.view_mut::<f32>().unwrap();
                let len = if channels_last { c } else { count };
                channel_means(pool, (n, c, count), channels_last, ov, |r, f| {
                    f(&xv[r * len..(r + 1) * len]);
                    Ok(())
                })?;
                one(out)
            }
            NativeOp::Logic(op) => {
                let b = args.get(1).copied().flatten().ok_or("missing B")?;
                one(logic(*op, x, b, pool)?)
            }
            NativeOp::Expand(shape) => {
                let mut out = pool.tensor(x.dtype(), shape);
                expand_bytes(
                    x.bytes(),
                    x.shape(),
                    shape,
                    x.dtype().size(),
                    out.bytes_mut(),
                )?;
                one(out)
            }
            NativeOp::Where => {
                let a = args.get(1).copied().flatten().ok_or("missing X")?;
                let b = args.get(2).copied().flatten().ok_or("missing Y")?;
                one(where_f32(x, a, b, pool)?)
            }
            NativeOp::LayerNorm { gamma, beta, eps } => {
                let mut out = pool.tensor(DType::F32, x.shape());
                let xv = x.view::<f32>().map_err(|e| e.to_string())?;
                layer_norm_rows(k, xv, gamma, beta, *eps, out.view_mut::<f32>().unwrap())
                    .map_err(e)?;
                one(out)
            }
            NativeOp::Binary(op, _) => {
                let b = args.get(1).copied().flatten().ok_or("missing B")?;
                one(binary_f32(k, *op, x, b, pool)?)
            }
            NativeOp::AddRelu => {
                let b = args.get(1).copied().flatten().ok_or("missing B")?;
                if x.shape() != b.shape() {
                    return Err(format!(
                        "fused Add+Relu needs equal shapes, got {:?} and {:?}",
                        x.shape(),
                        b.shape()
                    ));
                }
                let (av, bv) = (
                    x.view::<f32>().map_err(|e| e.to_string())?,
                    b.view::<f32>().map_err(|e| e.to_string())?,
                );
                let mut out = pool.tensor(DType::F32, x.shape());
                let ov = out.view_mut::<f32>().unwrap();
                // Chunks that stay in L1 between the add and the relu.
                const CHUNK: usize = 4096;
                for ((o, a), b) in ov
                    .chunks_mut(CHUNK)
                    .zip(av.chunks(CHUNK))
                    .zip(bv.chunks(CHUNK))
                {
                    octet_kernels::add(k, a, b, o).map_err(e)?;
                    octet_kernels::relu_inplace(k, o);
                }
                one(out)
            }
            NativeOp::Reshape(shape) => {
                one(pool.copy_of(x).reshaped(shape).ok_or("bad reshape")?)
            }
            NativeOp::Transpose(perm) => one(transpose(x, perm, pool)?),
            NativeOp::Gather => {
                let idx = args.get(1).copied().flatten().ok_or("missing indices")?;
                one(gather0(x, idx, pool)?)
            }
            NativeOp::MatMulF32 => {
                let b = args.get(1).copied().flatten().ok_or("missing B")?;
                one(matmul_f32(k, x, b, pool)?)
            }
        }
    }
}

/// Rows per task when `total` elements in rows of `row_len` are worth splitting over the current
/// rayon pool (from 32K elements; about four tasks per thread), else None. The native ops split
/// only into whole independent rows, so the result never depends on it.
fn par_rows(total: usize, row_len: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    let rows = total / row_len.max(1);
    (threads > 1 && total >= 32 * 1024 && rows >= 2).then(|| rows.div_ceil(4 * threads))
}

/// GlobalAveragePool's means into `out` (`n x c`), from `rows(r, f)`, which hands `f` row `r`
/// of the input in its layout: a pixel's `c` channels (NHWC, `n * count` rows) or a channel's
/// `count` pixels (NCHW, `n * c` rows). Each channel's sum is the sequential f64 fold over its
/// pixels that `Iterator::sum` computes, from the same starting value, in either layout (NHWC
/// reads pixel-major, all channels at once); the f64 sums live in a pooled buffer.
fn channel_means(
    pool: &mut Pool,
    (n, c, count): (usize, usize, usize),
    channels_last: bool,
    out: &mut [f32],
    mut rows: impl FnMut(usize, &mut dyn FnMut(&[f32])) -> R<()>,
) -> R<()> {
    let zero: f64 = std::iter::empty::<f64>().sum();
    if !channels_last {
        for (r, o) in out.iter_mut().enumerate() {
            let mut sum = zero;
            rows(r, &mut |row| sum = row.iter().map(|&v| v as f64).sum())?;
            *o = (sum / count as f64) as f32;
        }
        return Ok(());
    }
    let mut st = pool.tensor(DType::F64, &[c]);
    let sums = st.view_mut::<f64>().unwrap();
    for b in 0..n {
        sums.fill(zero);
        for p in 0..count {
            rows(b * count + p, &mut |row| {
                for (acc, &v) in sums.iter_mut().zip(row) {
                    *acc += v as f64;
                }
            })?;
        }
        for (o, &sum) in out[b * c..(b + 1) * c].iter_mut().zip(sums.iter()) {
            *o = (sum / count as f64) as f32;
        }
    }
    pool.give(st);
    Ok(())
}

/// `f(a, out)` on the whole slices, or on matching chunks over the pool when they are large
/// (`par_rows`): for element-wise kernels, whose result does not depend on the split.
fn par_elementwise<A: Sync, O: Send, E: Send>(
    a: &[A],
    out: &mut [O],
    f: impl Fn(&[A], &mut [O]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    const ROW: usize = 1024;
    match par_rows(out.len(), ROW) {
        Some(per) if a.len() == out.len() => {
            use rayon::prelude::*;
            a.par_chunks(per * ROW)
                .zip(out.par_chunks_mut(per * ROW))
                .try_for_each(|(a, o)| f(a, o))
        }
        _ => f(a, out),
    }
}

/// numpy-broadcast output shape.
fn broadcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
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
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                Err(format!("shapes {a:?} and {b:?} do not broadcast"))
            }
        })
        .collect()
}

/// Element strides of `s` broadcast to `out` (0 on broadcast axes).
/// Broadcasting copy of `src` (shape `s`, elements of `es` bytes) to `dst` (shape `out`):
/// whole rows copied when the innermost axis is not broadcast, the element repeated when it is.
fn expand_bytes(
    src: &[u8],
    s: &[usize],
    out: &[usize],
    es: usize,
    dst: &mut [u8],
) -> Result<(), String> {
    if s.len() > out.len() || src.len() != s.iter().product::<usize>() * es {
        return Err(format!(
            "expand: input shape {s:?} does not broadcast to {out:?}"
        ));
    }
    if dst.is_empty() {
        return Ok(());
    }
    let r = out.len();
    if r == 0 {
        dst.copy_from_slice(&src[..es]);
        return Ok(());
    }
    let st = bstrides(s, out);
    let inner = out[r - 1];
    let mut idx = vec![0usize; r];
    for row in dst.chunks_mut(inner * es) {
        let off: usize = (0..r - 1).map(|d| idx[d] * st[d]).sum();
        if st[r - 1] == 0 {
            let e = &src[off * es..(off + 1) * es];
            for d in row.chunks_mut(es) {
                d.copy_from_slice(e);
            }
        } else {
            row.copy_from_slice(&src[off * es..(off + inner) * es]);
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

fn bstrides(s: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut st = vec![0; r];
    let mut acc = 1;
    for i in (0..s.len()).rev() {
        let o = i + r - s.len();
        st[o] = if s[i] == 1 && out[o] != 1 { 0 } else { acc };
        acc *= s[i];
    }
    st
}

#[inline(always)]
fn apply(op: BinaryOp, x: f32, y: f32) -> f32 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        _ => x / y,
    }
}

fn binary_f32(k: &Kernel, op: BinaryOp, a: &Tensor, b: &Tensor, pool: &mut Pool) -> R<Tensor> {
    let av = a.view::<f32>().map_err(|e| e.to_string())?;
    let bv = b.view::<f32>().map_err(|e| e.to_string())?;
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let mut out = pool.tensor(DType::F32, &shape);
    let ov = out.view_mut::<f32>().unwrap();
    if ov.is_empty() {
        return Ok(out);
    }
    // Large tensors are split over the pool (element-wise: the same bits either way).
    if a.shape() == b.shape() {
        let same = |o: &mut [f32], x: &[f32], y: &[f32]| -> R<()> {
            match op {
                BinaryOp::Add => octet_kernels::add(k, x, y, o).map_err(|e| e.to_string()),
                BinaryOp::Mul => octet_kernels::mul(k, x, y, o).map_err(|e| e.to_string()),
                _ => {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                        *o = apply(op, x, y);
                    }
                    Ok(())
                }
            }
        };
        // Same shapes: rows of 64 elements, as far as splitting is concerned.
        if let Some(per) = par_rows(ov.len(), 64) {
            use rayon::prelude::*;
            let c = per * 64;
            ov.par_chunks_mut(c)
                .zip(av.par_chunks(c).zip(bv.par_chunks(c)))
                .try_for_each(|(o, (x, y))| same(o, x, y))?;
        } else {
            same(ov, av, bv)?;
        }
        return Ok(out);
    }
    let (sa, sb) = (a.shape(), b.shape());
    let run = |first: usize, o: &mut [f32]| match op {
        BinaryOp::Add => broadcast_loop(|x, y| x + y, av, bv, sa, sb, &shape, first, o),
        BinaryOp::Sub => broadcast_loop(|x, y| x - y, av, bv, sa, sb, &shape, first, o),
        BinaryOp::Mul => broadcast_loop(|x, y| x * y, av, bv, sa, sb, &shape, first, o),
        _ => broadcast_loop(|x, y| x / y, av, bv, sa, sb, &shape, first, o),
    };
    let inner = shape[shape.len() - 1];
    if let Some(per) = par_rows(ov.len(), inner) {
        use rayon::prelude::*;
        ov.par_chunks_mut(per * inner)
            .enumerate()
            .for_each(|(i, o)| run(i * per, o));
    } else {
        run(0, ov);
    }
    Ok(out)
}

/// `out = f(a, b)` with numpy broadcasting, one row of the last dimension at a time; `f` is
/// monomorphised so each row loop vectorises. `ov` holds whole output rows from row `first` on.
#[allow(clippy::too_many_arguments)]
fn broadcast_loop<F: Fn(f32, f32) -> f32 + Copy>(
    f: F,
    av: &[f32],
    bv: &[f32],
    a_shape: &[usize],
    b_shape: &[usize],
    shape: &[usize],
    first: usize,
    ov: &mut [f32],
) {
    let r = shape.len();
    let sa = bstrides(a_shape, shape);
    let sb = bstrides(b_shape, shape);
    let inner = shape[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    // The operands' offsets of row `first`, then kept incrementally.
    let mut idx = vec![0usize; r];
    let mut rem = first;
    for d in (0..r.saturating_sub(1)).rev() {
        idx[d] = rem % shape[d];
        rem /= shape[d];
    }
    let mut oa: usize = (0..r.saturating_sub(1)).map(|d| idx[d] * sa[d]).sum();
    let mut ob: usize = (0..r.saturating_sub(1)).map(|d| idx[d] * sb[d]).sum();
    for row in ov.chunks_mut(inner) {
        match (ia, ib) {
            (1, 1) => {
                let (x, y) = (&av[oa..oa + inner], &bv[ob..ob + inner]);
                for ((o, &x), &y) in row.iter_mut().zip(x).zip(y) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let (x, y) = (&av[oa..oa + inner], bv[ob]);
                for (o, &x) in row.iter_mut().zip(x) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let (x, y) = (av[oa], &bv[ob..ob + inner]);
                for (o, &y) in row.iter_mut().zip(y) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = f(av[oa + j * ia], bv[ob + j * ib]);
                }
            }
        }
        // Next row: advance the outer index and the operands' offsets incrementally.
        for d in (0..r.saturating_sub(1)).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < shape[d] {
                break;
            }
            oa -= sa[d] * shape[d];
            ob -= sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

fn transpose_typed<T: Copy + Send + Sync>(
    src: &[T],
    dst: &mut [T],
    shape: &[usize],
    perm: &[usize],
) {
    use rayon::prelude::*;
    let r = shape.len();
    let mut in_st = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        in_st[i] = in_st[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| in_st[p]).collect();
    if r == 0 || dst.is_empty() {
        dst.copy_from_slice(src);
        return;
    }
    let inner = out_shape[r - 1];
    let is = st[r - 1];
    // Output rows [first, first + chunk rows): the source offset of the first row from its
    // index, then kept incrementally.
    let rows = |first: usize, chunk: &mut [T]| {
        let mut idx = vec![0usize; r];
        let mut rem = first;
        for d in (0..r - 1).rev() {
            idx[d] = rem % out_shape[d];
            rem /= out_shape[d];
        }
        let mut base: usize = (0..r - 1).map(|d| idx[d] * st[d]).sum();
        for row in chunk.chunks_mut(inner) {
            if is == 1 {
                row.copy_from_slice(&src[base..base + inner]);
            } else {
                for (o, v) in row.iter_mut().zip(src[base..].iter().step_by(is)) {
                    *o = *v;
                }
            }
            // Next row: carry the outer index, keeping the source offset incrementally.
            for d in (0..r - 1).rev() {
                idx[d] += 1;
                base += st[d];
                if idx[d] < out_shape[d] {
                    break;
                }
                base -= st[d] * out_shape[d];
                idx[d] = 0;
            }
        }
    };
    if let Some(per) = par_rows(dst.len(), inner) {
        dst.par_chunks_mut(per * inner)
            .enumerate()
            .for_each(|(i, c)| rows(i * per, c));
    } else {
        rows(0, dst);
    }
}

fn transpose(x: &Tensor, perm: &[usize], pool: &mut Pool) -> R<Tensor> {
    let s = x.shape();
    if perm.len() != s.len() {
        return Err("transpose permutation does not match the rank".into());
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let mut out = pool.tensor(x.dtype(), &out_shape);
    match x.dtype().size() {
        1 => transpose_typed(x.bytes(), out.bytes_mut(), s, perm),
        4 => transpose_typed::<u32>(
            bytemuck::cast_slice(x.bytes()),
            bytemuck::cast_slice_mut(out.bytes_mut()),
            s,
            perm,
        ),
        8 => transpose_typed::<u64>(
            bytemuck::cast_slice(x.bytes()),
            bytemuck::cast_slice_mut(out.bytes_mut()),
            s,
            perm,
        ),
        2 => transpose_typed::<u16>(
            bytemuck::cast_slice(x.bytes()),
            bytemuck::cast_slice_mut(out.bytes_mut()),
            s,
            perm,
        ),
        _ => return Err("unsupported element size".into()),
    }
    Ok(out)
}

fn gather0(data: &Tensor, idx: &Tensor, pool: &mut Pool) -> R<Tensor> {
    let ds = data.shape();
    let rows = ds[0] as i64;
    let row_bytes: usize = ds[1..].iter().product::<usize>() * data.dtype().size();
    let ids = idx.to_i64_vec();
    let mut shape = idx.shape().to_vec();
    shape.extend_from_slice(&ds[1..]);
    let mut out = pool.tensor(data.dtype(), &shape);
    let o = out.bytes_mut();
    let src = data.bytes();
    for (i, &id) in ids.iter().enumerate() {
        let r = if id < 0 { id + rows } else { id };
        if !(0..rows).contains(&r) {
            return Err(format!("Gather index {id} out of range for {rows} rows"));
        }
        let r = r as usize;
        o[i * row_bytes..(i + 1) * row_bytes]
            .copy_from_slice(&src[r * row_bytes..(r + 1) * row_bytes]);
    }
    Ok(out)
}

fn matmul_f32(k: &Kernel, a: &Tensor, b: &Tensor, pool: &mut Pool) -> R<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    let r = sa.len();
    let (m, kk, n) = (sa[r - 2], sa[r - 1], sb[r - 1]);
    if sb[r - 2] != kk || sa[..r - 2] != sb[..r - 2] {
        return Err(format!("MatMul shapes {sa:?} x {sb:?}"));
    }
    let batch: usize = sa[..r - 2].iter().product();
    let mut shape = sa.to_vec();
    shape[r - 1] = n;
    let mut out = pool.tensor(DType::F32, &shape);
    let av = a.view::<f32>().map_err(|e| e.to_string())?;
    let bv = b.view::<f32>().map_err(|e| e.to_string())?;
    let ov = out.view_mut::<f32>().unwrap();
    for i in 0..batch {
        let pb = PackedBF32::new(kk, n, &bv[i * kk * n..(i + 1) * kk * n], WeightLayout::KxN)
            .map_err(|e| e.to_string())?;
        gemm_f32(
            k,
            m,
            &av[i * m * kk..(i + 1) * m * kk],
            kk,
            &pb,
            None,
            false,
            &mut ov[i * m * n..(i + 1) * m * n],
            n,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn where_f32(c: &Tensor, a: &Tensor, b: &Tensor, pool: &mut Pool) -> R<Tensor> {
    let shape = broadcast_shape(&broadcast_shape(c.shape(), a.shape())?, b.shape())?;
    let cv = c.bytes();
    let av = a.view::<f32>().map_err(|e| e.to_string())?;
    let bv = b.view::<f32>().map_err(|e| e.to_string())?;
    let mut out = pool.tensor(DType::F32, &shape);
    if shape.is_empty() || shape.contains(&0) {
        if shape.is_empty() {
            out.view_mut::<f32>().unwrap()[0] = if cv[0] != 0 { av[0] } else { bv[0] };
        }
        return Ok(out);
    }
    let (sc, sa, sb) = (
        bstrides(c.shape(), &shape),
        bstrides(a.shape(), &shape),
        bstrides(b.shape(), &shape),
    );
    let r = shape.len();
    let inner = shape[r - 1];
    let mut idx = vec![0usize; r];
    let ov = out.view_mut::<f32>().unwrap();
    for row in ov.chunks_mut(inner) {
        let off = |st: &[usize]| (0..r - 1).map(|d| idx[d] * st[d]).sum::<usize>();
        let (oc, oa, ob) = (off(&sc), off(&sa), off(&sb));
        for (j, o) in row.iter_mut().enumerate() {
            *o = if cv[oc + j * sc[r - 1]] != 0 {
                av[oa + j * sa[r - 1]]
            } else {
                bv[ob + j * sb[r - 1]]
            };
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

fn logic(op: BinaryOp, a: &Tensor, b: &Tensor, pool: &mut Pool) -> R<Tensor> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let mut out = pool.tensor(DType::Bool, &shape);
    if shape.is_empty() || shape.contains(&0) {
        if shape.is_empty() {
            let (x, y) = (a.bytes()[0] != 0, b.bytes()[0] != 0);
            out.bytes_mut()[0] = if op == BinaryOp::And { x && y } else { x || y } as u8;
        }
        return Ok(out);
    }
    let (sa, sb) = (bstrides(a.shape(), &shape), bstrides(b.shape(), &shape));
    let (av, bv) = (a.bytes(), b.bytes());
    let r = shape.len();
    let inner = shape[r - 1];
    let mut idx = vec![0usize; r];
    let and = op == BinaryOp::And;
    for row in out.bytes_mut().chunks_mut(inner) {
        let oa: usize = (0..r - 1).map(|d| idx[d] * sa[d]).sum();
        let ob: usize = (0..r - 1).map(|d| idx[d] * sb[d]).sum();
        for (j, o) in row.iter_mut().enumerate() {
            let (x, y) = (av[oa + j * sa[r - 1]] != 0, bv[ob + j * sb[r - 1]] != 0);
            *o = if and { x && y } else { x || y } as u8;
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

struct PoolGeo {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pad: (usize, usize),
}

fn maxpool<T: Copy + Send + Sync>(
    x: &[T],
    y: &mut [T],
    g: &PoolGeo,
    lowest: T,
    max: impl Fn(T, T) -> T + Sync,
) {
    use rayon::prelude::*;
    let (c, h, w) = (g.c, g.h, g.w);
    let taps = |o: usize, s: usize, d: usize, p: usize, k: usize, lim: usize| {
        (0..k).filter_map(move |t| {
            let i = (o * s + t * d) as isize - p as isize;
            (i >= 0 && (i as usize) < lim).then_some(i as usize)
        })
    };
    // One output plane (b, ch) per task; each task writes only its own chunk, so any split gives
    // the same bytes. (NHWC pooling is the kernels' `maxpool_nhwc_*`.)
    let nchw_plane = |(bc, yplane): (usize, &mut [T])| {
        let plane = &x[bc * h * w..(bc + 1) * h * w];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut m = lowest;
                for iy in taps(oy, g.s.0, g.d.0, g.pad.0, g.k.0, h) {
                    for ix in taps(ox, g.s.1, g.d.1, g.pad.1, g.k.1, w) {
                        m = max(m, plane[iy * w + ix]);
                    }
                }
                yplane[oy * g.ow + ox] = m;
            }
        }
    };
    let chunk = g.oh * g.ow;
    if chunk == 0 {
        return;
    }
    let y = &mut y[..g.n * g.oh * g.ow * c];
    let parallel = par_rows(y.len(), chunk).is_some();
    if parallel {
        y.par_chunks_mut(chunk).enumerate().for_each(nchw_plane)
    } else {
        y.chunks_mut(chunk).enumerate().for_each(nchw_plane)
    }
}

/// `DequantizeLinear(zp, scale) -> [Relu] -> QuantizeLinear` on one byte, as the reference
/// computes it.
pub fn requant_table(
    in_signed: bool,
    dq: (f32, i32),
    relu: bool,
    q: (f32, i32),
    out_signed: bool,
) -> Vec<u8> {
    let (lo, hi) = if out_signed {
        (-128f64, 127f64)
    } else {
        (0.0, 255.0)
    };
    (0..256usize)
        .map(|b| {
            let v = if in_signed {
                b as u8 as i8 as i64
            } else {
                b as i64
            };
            let mut f = (v - dq.1 as i64) as f32 * dq.0;
            if relu && f < 0.0 {
                f = 0.0;
            }
            let r = (f / q.0).round_ties_even() as f64 + q.1 as f64;
            r.clamp(lo, hi) as i64 as u8
        })
        .collect()
}

impl NativeOp {
    /// Fold a following byte table into a QLinearAdd (exact: a composition of tables).
    pub fn compose(&mut self, next: &[u8], dtype: DType) -> bool {
        match self {
            NativeOp::QAdd { lut, out_dtype, kq } => {
                for v in lut.iter_mut() {
                    *v = next[*v as usize];
                }
                if let Some(q) = kq {
                    let post: Vec<u8> = match &q.post {
                        None => next.to_vec(),
                        Some(p) => p.iter().map(|&v| next[v as usize]).collect(),
                    };
                    *kq = QAdd::new(q.a, q.b, q.c, q.signed, Some(&post)).ok();
                }
                *out_dtype = dtype;
                true
            }
            _ => false,
        }
    }

    /// The kernel form of a QLinearAdd (with its folded tables) whose operand `slot` (0 = A,
    /// 3 = B) is to be produced by a convolution's fused epilogue: that operand becomes the
    /// kernel's A. `None` if the add is not in the SIMD kernel's domain.
    pub fn residual_add(&self, slot: usize) -> Option<(QAdd, DType)> {
        match self {
            NativeOp::QAdd {
                kq: Some(q),
                out_dtype,
                ..
            } => Some((if slot == 3 { q.swapped() } else { q.clone() }, *out_dtype)),
            _ => None,
        }
    }

    /// Per-tensor (scale, zero point) of a native Quantize / Dequantize.
    pub fn qparams(&self) -> Option<(f32, i32)> {
        match self {
            NativeOp::Quantize { scale, zp, .. } | NativeOp::Dequantize { scale, zp } => {
                Some((*scale, *zp))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_tensor(dtype: DType, shape: &[usize], b: Vec<u8>) -> Tensor {
        if dtype == DType::I8 {
            Tensor::from_vec(shape, b.into_iter().map(|v| v as i8).collect::<Vec<i8>>())
        } else {
            Tensor::from_vec(shape, b)
        }
    }

    /// QLinearGlobalAveragePool on NHWC u8 and i8 (int32 lane sums) equals the i64 rule on the
    /// same values read as NCHW planes (the other path), for several zero points.
    #[test]
    fn qgap_nhwc_sums_match_the_planar_path() {
        let k = Kernel::best().unwrap();
        let mut pool = Pool::default();
        let (n, h, w, c) = (2usize, 3usize, 5usize, 37usize);
        for (dtype, x_zp) in [
            (DType::U8, 0i64),
            (DType::U8, 200),
            (DType::I8, -100),
            (DType::I8, 3),
        ] {
            let bytes: Vec<u8> = (0..n * h * w * c).map(|i| (i * 151 % 256) as u8).collect();
            let nhwc = bytes_tensor(dtype, &[n, h, w, c], bytes.clone());
            // The same values as NCHW.
            let mut planar = vec![0u8; bytes.len()];
            for b in 0..n {
                for p in 0..h * w {
                    for ch in 0..c {
                        planar[(b * c + ch) * h * w + p] = bytes[(b * h * w + p) * c + ch];
                    }
                }
            }
            let nchw = bytes_tensor(dtype, &[n, c, h, w], planar);
            let op = NativeOp::QGap {
                mult: 0.0173,
                x_zp,
                y_zp: if dtype == DType::U8 { 128 } else { 0 },
                y_dtype: dtype,
            };
            let a = op
                .run(&k, &[Some(&nhwc)], true, &mut pool)
                .unwrap()
                .remove(0);
            let b = op
                .run(&k, &[Some(&nchw)], false, &mut pool)
                .unwrap()
                .remove(0);
            assert_eq!(a.bytes(), b.bytes(), "{dtype} zp {x_zp}");
            assert!(
                a.bytes().iter().any(|&v| v != a.bytes()[0]),
                "{dtype}: constant output {:?}",
                a.bytes()
            );
        }
    }
}
