//! Integer Conv / Gemm / MatMul nodes mapped onto `octet-kernels`: weights prepacked at build
//! time, the requantization multipliers `s_x * s_w[j] / s_y` folded per output channel (computed
//! in f32 in the same order as the reference interpreter, so results are bit-identical), int32
//! bias and output zero point in the kernel's fused epilogue.
//!
//! Exactness on pre-VNNI CPUs: the AVX2 / AVX-512BW kernels sum u8 x s8 pairs in saturating
//! int16 (`vpmaddubsw`). Weights within [-64, 64] (reduce_range) cannot saturate; for wider
//! weights on such a CPU the node runs the exact scalar kernel and the report says so.

use octet_ir::{DType, Graph, NodeIndex, Op, Tensor};
use octet_kernels::{
    conv2d_u8s8, conv2d_u8s8_add, conv2d_u8s8_prepadded, gemm_u8s8, gemm_u8s8_is_exact,
    interleave3_u8, Epilogue, Kernel, MatrixU8, OutputSlice, PackedB, PackedConv, QAdd, Scale,
    TensorU8, WeightLayout,
};

pub enum Int8Node {
    Conv(ConvNode),
    Gemm(GemmNode),
    /// MatMulInteger of two run-time operands.
    Runtime(RuntimeMatMul),
}

pub struct ConvNode {
    kernel: Kernel,
    packed: PackedConv,
    bias: Vec<i32>,
    mult: Vec<f32>,
    x_zp: i32,
    x_signed: bool,
    y_zp: i32,
    y_dtype: DType,
    c_in: usize,
    c_out: usize,
    note: String,
}

/// QGemm, QLinearMatMul (requantized u8/i8 output) and MatMulInteger (raw i32 output).
pub struct GemmNode {
    kernel: Kernel,
    packed: PackedB,
    bias: Option<Vec<i32>>,
    mult: Vec<f32>,
    a_zp: i32,
    /// Operand slot of an activation zero point known only at run time (MatMulInteger after
    /// DynamicQuantizeLinear).
    a_zp_slot: Option<usize>,
    a_signed: bool,
    y_zp: i32,
    /// U8 / I8 requantized, or I32 raw.
    y_dtype: DType,
    k: usize,
    n: usize,
    note: String,
    /// The dequantizing epilogue's per-run multipliers (`a_scale * w_scale[j]`), kept between
    /// runs so a run allocates nothing (a concurrent run of the same engine that finds it
    /// locked uses a fresh vector).
    scales: std::sync::Mutex<Vec<f32>>,
}

use super::matmul_runtime::RuntimeMatMul;
use super::pool::Pool;

type R<T> = Result<T, String>;

fn cst<'a>(g: &'a Graph, n: NodeIndex, slot: usize, what: &str) -> R<&'a Tensor> {
    g.const_operand(n, slot)
        .ok_or_else(|| format!("{what} is not a constant"))
}

fn f32s(t: &Tensor) -> R<Vec<f32>> {
    t.view::<f32>()
        .map(|v| v.to_vec())
        .map_err(|e| e.to_string())
}

/// A per-tensor zero point (all entries equal), or None.
fn uniform_zp(t: Option<&Tensor>) -> Option<i64> {
    match t {
        None => Some(0),
        Some(t) => {
            let v = t.to_i64_vec();
            (!v.is_empty() && v.iter().all(|&z| z == v[0])).then(|| v[0])
        }
    }
}

fn pick(v: &[f32], j: usize) -> f32 {
    if v.len() == 1 {
        v[0]
    } else {
        v[j]
    }
}

/// The kernel to use for int8 weights `w` (centred on `wzp`): the best one, or the exact scalar
/// kernel when the best would saturate.
fn choose_kernel(best: Kernel, w: &[i8], wzp: i64) -> (Kernel, String) {
    if gemm_u8s8_is_exact(best.isa()) {
        return (best, String::new());
    }
    let fits = w.iter().all(|&v| (v as i64 - wzp).abs() <= 64);
    if fits {
        (best, String::new())
    } else {
        (
            Kernel::scalar(),
            format!(
                "weights exceed 7 bits: the {} kernel would saturate (quantize with reduce_range)",
                best.isa().name()
            ),
        )
    }
}

impl Int8Node {
    /// `Ok(None)`: not an integer compute op. `Err(why)`: an integer op the kernels cannot run.
    pub fn build(g: &Graph, n: NodeIndex, best: Kernel) -> R<Option<Int8Node>> {
        match &g.node(n).op {
            Op::QLinearConv(a) => build_conv(g, n, best, a, true).map(|c| Some(Int8Node::Conv(c))),
            Op::ConvInteger(a) => build_conv(g, n, best, a, false).map(|c| Some(Int8Node::Conv(c))),
            Op::MatMulInteger if g.const_operand(n, 1).is_none() => {
                RuntimeMatMul::build(g, n, best).map(|x| Some(Int8Node::Runtime(x)))
            }
            Op::QLinearMatMul | Op::QGemm { .. } | Op::MatMulInteger => {
                build_gemm(g, n, best).map(|x| Some(Int8Node::Gemm(x)))
            }
            _ => Ok(None),
        }
    }

    pub fn kernel(&self) -> Kernel {
        match self {
            Int8Node::Conv(c) => c.kernel,
            Int8Node::Gemm(x) => x.kernel,
            Int8Node::Runtime(x) => x.kernel(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Int8Node::Conv(c) => {
                let g = c.packed.geometry();
                let what = if g.groups == c.c_in && g.groups == c.c_out && g.groups > 1 {
                    "depthwise_u8s8".to_string()
                } else if g.kernel == (1, 1) && g.stride == (1, 1) {
                    "conv2d_u8s8 1x1 gemm".to_string()
                } else {
                    format!("conv2d_u8s8 {}x{} im2col+gemm", g.kernel.0, g.kernel.1)
                };
                if c.note.is_empty() {
                    what
                } else {
                    format!("{what} ({})", c.note)
                }
            }
            Int8Node::Gemm(x) => {
                let out = if x.y_dtype == DType::I32 {
                    "i32 out"
                } else {
                    "requantized"
                };
                let s = format!("gemm_u8s8 {out}");
                if x.note.is_empty() {
                    s
                } else {
                    format!("{s} ({})", x.note)
                }
            }
            Int8Node::Runtime(x) => x.describe(),
        }
    }

    pub fn run(
        &self,
        args: &[Option<&Tensor>],
        in_nhwc: bool,
        out_nhwc: bool,
        pool: &mut Pool,
    ) -> R<Tensor> {
        match self {
            Int8Node::Conv(c) => c.run(args, in_nhwc, out_nhwc, None, pool),
            Int8Node::Gemm(x) => x.run(args, None, pool),
            Int8Node::Runtime(x) => x.run(args, None, None, pool),
        }
    }

    /// A convolution with a residual QLinearAdd fused into its output tiles: `out = add(conv,
    /// other)` (the convolution's output is the add's operand A). `other` has the output's
    /// shape, stored NHWC exactly when the output is.
    pub fn run_residual(
        &self,
        args: &[Option<&Tensor>],
        in_nhwc: bool,
        out_nhwc: bool,
        other: &Tensor,
        add: &QAdd,
        pool: &mut Pool,
    ) -> R<Tensor> {
        match self {
            Int8Node::Conv(c) => c.run(args, in_nhwc, out_nhwc, Some((other, add)), pool),
            Int8Node::Gemm(_) | Int8Node::Runtime(_) => Err("residual add on a GEMM".into()),
        }
    }

    /// The output element type (u8 / i8 requantized, or i32).
    pub fn out_dtype(&self) -> DType {
        match self {
            Int8Node::Conv(c) => c.y_dtype,
            Int8Node::Gemm(x) => x.y_dtype,
            Int8Node::Runtime(_) => DType::I32,
        }
    }

    pub fn is_conv(&self) -> bool {
        matches!(self, Int8Node::Conv(_))
    }

    pub fn gemm(&self) -> Option<&GemmNode> {
        match self {
            Int8Node::Gemm(x) => Some(x),
            _ => None,
        }
    }

    pub fn runtime(&self) -> Option<&RuntimeMatMul> {
        match self {
            Int8Node::Runtime(x) => Some(x),
            _ => None,
        }
    }
}

fn build_conv(
    g: &Graph,
    n: NodeIndex,
    best: Kernel,
    a: &octet_ir::ConvAttrs,
    qlinear: bool,
) -> R<ConvNode> {
    let (wslot, xzp_slot, wzp_slot) = if qlinear { (3, 2, 5) } else { (1, 2, 3) };
    let x_ty = g
        .ty(g.operand(n, 0).ok_or("no input")?)
        .ok_or("untyped input")?;
    let w = cst(g, n, wslot, "weight")?;
    if w.rank() != 4 {
        return Err(format!(
            "only 2-D convolutions have an int8 kernel (weight rank {})",
            w.rank()
        ));
    }
    if w.dtype() != DType::I8 {
        return Err(format!(
            "weights are {}, the int8 kernels take i8",
            w.dtype()
        ));
    }
    let x_signed = match x_ty.dtype {
        DType::U8 => false,
        DType::I8 => true,
        d => return Err(format!("activations are {d}")),
    };
    let xs = x_ty.shape.as_fixed().ok_or("input shape is not static")?;
    let (c_out, c_in) = (w.shape()[0], xs[1]);
    let geom = super::conv_layout::geometry(a, w.shape(), &xs)?;
    let x_zp = uniform_zp(g.const_operand(n, xzp_slot))
        .ok_or("activation zero point must be one constant")?;
    if g.operand(n, xzp_slot).is_some() && g.const_operand(n, xzp_slot).is_none() {
        return Err("activation zero point is not constant".into());
    }
    let w_zp = uniform_zp(g.const_operand(n, wzp_slot))
        .ok_or("per-channel weight zero points must all be equal")?;
    let wv = w.view::<i8>().map_err(|e| e.to_string())?;
    let ohwi = super::conv_layout::oihw_to_ohwi(wv, w.shape());
    let (kernel, note) = choose_kernel(best, wv, w_zp);
    let packed =
        PackedConv::new(geom, c_in, c_out, &ohwi, w_zp as i32).map_err(|e| e.to_string())?;
    let (bias, mult, y_zp, y_dtype) = if qlinear {
        let sx = f32s(cst(g, n, 1, "x_scale")?)?;
        let sw = f32s(cst(g, n, 4, "w_scale")?)?;
        let sy = f32s(cst(g, n, 6, "y_scale")?)?;
        if sx.len() != 1 || sy.len() != 1 || !(sw.len() == 1 || sw.len() == c_out) {
            return Err(
                "scales must be per tensor (x, y) and per tensor or per output channel (w)".into(),
            );
        }
        let mult: Vec<f32> = (0..c_out).map(|j| sx[0] * pick(&sw, j) / sy[0]).collect();
        let y_zp_t = g.const_operand(n, 7);
        let y_dtype = match y_zp_t {
            Some(t) => t.dtype(),
            None => DType::U8,
        };
        let y_zp = uniform_zp(y_zp_t).ok_or("output zero point must be one constant")?;
        let bias = match g.operand(n, 8) {
            None => vec![0; c_out],
            Some(_) => {
                let b = cst(g, n, 8, "bias")?;
                b.view::<i32>().map_err(|e| e.to_string())?.to_vec()
            }
        };
        (bias, mult, y_zp as i32, y_dtype)
    } else {
        (vec![0; c_out], vec![1.0; c_out], 0, DType::I32)
    };
    if !matches!(y_dtype, DType::U8 | DType::I8 | DType::I32) || bias.len() != c_out {
        return Err("unsupported output type or bias length".into());
    }
    Ok(ConvNode {
        kernel,
        packed,
        bias,
        mult,
        x_zp: x_zp as i32,
        x_signed,
        y_zp,
        y_dtype,
        c_in,
        c_out,
        note,
    })
}

/// One image `c x hw` (planar) to `hw x c` (pixel-major), each byte XOR `flip` (0x80 shifts s8
/// to u8). Three channels (images) interleave the planes (`interleave3_u8`); other counts go
/// through 64-pixel blocks, so the `c` read streams and the write stream stay in L1.
fn nchw_to_nhwc_u8(k: &Kernel, img: &[u8], out: &mut [u8], c: usize, hw: usize, flip: u8) {
    if c == 3 {
        let (p0, rest) = img.split_at(hw);
        let (p1, p2) = rest.split_at(hw);
        interleave3_u8(k, [p0, p1, p2], &mut out[..3 * hw], flip);
        return;
    }
    const BLOCK: usize = 64;
    for p0 in (0..hw).step_by(BLOCK) {
        let pn = BLOCK.min(hw - p0);
        let block = &mut out[p0 * c..(p0 + pn) * c];
        for ch in 0..c {
            let plane = &img[ch * hw + p0..ch * hw + p0 + pn];
            for (d, &v) in block[ch..].iter_mut().step_by(c).zip(plane) {
                *d = v ^ flip;
            }
        }
    }
}

/// [`nchw_to_nhwc_u8`] into an image with `pads` ([top, left, bottom, right]) around it, the
/// border filled with `fill`: `out` is `(h + top + bottom) x (w + left + right) x c`.
fn nchw_to_nhwc_u8_padded(
    k: &Kernel,
    img: &[u8],
    out: &mut [u8],
    (c, h, w): (usize, usize, usize),
    pads: [usize; 4],
    flip: u8,
    fill: u8,
) {
    let wp = w + pads[1] + pads[3];
    let row = wp * c;
    let hw = h * w;
    for (y, orow) in out.chunks_exact_mut(row).enumerate() {
        let Some(iy) = y.checked_sub(pads[0]).filter(|&iy| iy < h) else {
            orow.fill(fill);
            continue;
        };
        let (left, rest) = orow.split_at_mut(pads[1] * c);
        let (mid, right) = rest.split_at_mut(w * c);
        left.fill(fill);
        right.fill(fill);
        if c == 3 {
            let p = |ch: usize| &img[ch * hw + iy * w..ch * hw + (iy + 1) * w];
            interleave3_u8(k, [p(0), p(1), p(2)], mid, flip);
        } else {
            for (x, d) in mid.chunks_exact_mut(c).enumerate() {
                for (ch, v) in d.iter_mut().enumerate() {
                    *v = img[ch * hw + iy * w + x] ^ flip;
                }
            }
        }
    }
}

impl ConvNode {
    /// `in_nhwc` / `out_nhwc`: the input is stored / the output is to be stored NHWC (physical
    /// shape [N, H, W, C]); otherwise NCHW and the node converts.
    fn run(
        &self,
        args: &[Option<&Tensor>],
        in_nhwc: bool,
        out_nhwc: bool,
        res: Option<(&Tensor, &QAdd)>,
        pool: &mut Pool,
    ) -> R<Tensor> {
        let x = args.first().copied().flatten().ok_or("missing input")?;
        let s = x.shape();
        let cpos = if in_nhwc { 3 } else { 1 };
        if s.len() != 4 || s[cpos] != self.c_in {
            return Err(format!(
                "input shape {s:?} does not match the packed weights"
            ));
        }
        let (nb, c, h, w) = if in_nhwc {
            (s[0], s[3], s[1], s[2])
        } else {
            (s[0], s[1], s[2], s[3])
        };
        // NCHW -> NHWC (s8 activations shifted to u8 by +128).
        let src = x.bytes();
        let flip = if self.x_signed { 0x80u8 } else { 0 };
        let mut converted = None;
        let zp = self.x_zp + if self.x_signed { 128 } else { 0 };
        // An NCHW input (the model's) is converted anyway: with padding, into the padded image
        // (border = the zero point), which the convolution then reads with no padding.
        let pads = self.packed.geometry().pads;
        let prepad =
            !in_nhwc && res.is_none() && pads != [0; 4] && h * w > 0 && (0..=255).contains(&zp);
        let (hp, wp) = if prepad {
            (h + pads[0] + pads[2], w + pads[1] + pads[3])
        } else {
            (h, w)
        };
        let data: &[u8] = if in_nhwc && flip == 0 {
            src
        } else if in_nhwc {
            let mut t = pool.tensor(DType::U8, &[nb, h, w, c]);
            for (d, &v) in t.bytes_mut().iter_mut().zip(src) {
                *d = v ^ flip;
            }
            converted = Some(t);
            converted.as_ref().unwrap().bytes()
        } else {
            let mut t = pool.tensor(DType::U8, &[nb, hp, wp, c]);
            let hw = h * w;
            // (An empty image has nothing to convert; `chunks_exact` needs a non-zero size.)
            if c * hw > 0 {
                for (img, out) in src
                    .chunks_exact(c * hw)
                    .zip(t.bytes_mut().chunks_exact_mut(c * hp * wp))
                {
                    if prepad {
                        let geo = (c, h, w);
                        nchw_to_nhwc_u8_padded(&self.kernel, img, out, geo, pads, flip, zp as u8);
                    } else {
                        nchw_to_nhwc_u8(&self.kernel, img, out, c, hw, flip);
                    }
                }
            }
            converted = Some(t);
            converted.as_ref().unwrap().bytes()
        };
        let xt = TensorU8 {
            data,
            batch: nb,
            h: hp,
            w: wp,
            zero_point: zp,
        };
        let (oh, ow) = self
            .packed
            .geometry()
            .out_size(h, w)
            .map_err(|e| e.to_string())?;
        let ep = Epilogue::requant(Scale::PerChannel(&self.mult), self.y_zp).with_bias(&self.bias);
        let ep = if self.y_dtype == DType::I32 {
            Epilogue::raw().with_bias(&self.bias)
        } else {
            ep
        };
        let co = self.c_out;
        // The residual operand in NHWC (converted when the output is to be NCHW, as it is then).
        let mut other_nhwc = None;
        let res = match res {
            None => None,
            Some((t, add)) => {
                let want: &[usize] = if out_nhwc {
                    &[nb, oh, ow, co]
                } else {
                    &[nb, co, oh, ow]
                };
                if t.shape() != want || t.dtype() != self.y_dtype {
                    return Err(format!(
                        "residual operand {:?} {} does not match the output",
                        t.shape(),
                        t.dtype()
                    ));
                }
                if out_nhwc {
                    Some((t.bytes(), add))
                } else {
                    let mut c = pool.tensor(t.dtype(), &[nb, oh, ow, co]);
                    let (src, dst) = (t.bytes(), c.bytes_mut());
                    for b in 0..nb {
                        for ch in 0..co {
                            let plane = &src[(b * co + ch) * oh * ow..(b * co + ch + 1) * oh * ow];
                            for (p, &v) in plane.iter().enumerate() {
                                dst[(b * oh * ow + p) * co + ch] = v;
                            }
                        }
                    }
                    other_nhwc = Some(c);
                    Some((other_nhwc.as_ref().unwrap().bytes(), add))
                }
            }
        };
        let mut out = pool.tensor(self.y_dtype, &[nb, oh, ow, co]);
        {
            let slice = match self.y_dtype {
                DType::U8 => OutputSlice::U8(out.bytes_mut()),
                DType::I8 => OutputSlice::I8(out.view_mut::<i8>().map_err(|e| e.to_string())?),
                _ => OutputSlice::I32(out.view_mut::<i32>().map_err(|e| e.to_string())?),
            };
            match res {
                None if prepad => conv2d_u8s8_prepadded(&self.kernel, xt, &self.packed, &ep, slice),
                None => conv2d_u8s8(&self.kernel, xt, &self.packed, &ep, slice),
                Some((other, add)) => {
                    conv2d_u8s8_add(&self.kernel, xt, &self.packed, &ep, other, add, slice)
                }
            }
            .map_err(|e| e.to_string())?;
        }
        if let Some(t) = converted {
            pool.give(t);
        }
        if let Some(t) = other_nhwc {
            pool.give(t);
        }
        if out_nhwc {
            return Ok(out);
        }
        let t = super::layout::nhwc_to_nchw(&out, pool);
        pool.give(out);
        Ok(t)
    }
}

fn build_gemm(g: &Graph, n: NodeIndex, best: Kernel) -> R<GemmNode> {
    let op = g.node(n).op.clone();
    let (bslot, azp_slot, bzp_slot) = match op {
        Op::MatMulInteger => (1, 2, 3),
        _ => (3, 2, 5),
    };
    let a_ty = g
        .ty(g.operand(n, 0).ok_or("no input")?)
        .ok_or("untyped input")?;
    let a_signed = match a_ty.dtype {
        DType::U8 => false,
        DType::I8 => true,
        d => return Err(format!("activations are {d}")),
    };
    let b = cst(g, n, bslot, "weight")?;
    if b.rank() != 2 {
        return Err(format!(
            "only 2-D constant weights have an int8 kernel (rank {})",
            b.rank()
        ));
    }
    if b.dtype() != DType::I8 {
        return Err(format!(
            "weights are {}, the int8 kernels take i8",
            b.dtype()
        ));
    }
    let trans_b = matches!(op, Op::QGemm { trans_b: true, .. });
    if let Op::QGemm { trans_a, alpha, .. } = op {
        if trans_a || alpha != 1.0 {
            return Err("QGemm with transA or alpha != 1 runs on the reference".into());
        }
        if a_ty.shape.rank() != 2 {
            return Err("QGemm input must be 2-D".into());
        }
    }
    let (k, nn) = if trans_b {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    let mut a_zp_slot = None;
    let a_zp = match (g.operand(n, azp_slot), g.const_operand(n, azp_slot)) {
        (None, _) => 0,
        (Some(_), Some(t)) => {
            uniform_zp(Some(t)).ok_or("activation zero point must be per tensor")?
        }
        (Some(_), None) if matches!(op, Op::MatMulInteger) => {
            a_zp_slot = Some(azp_slot);
            0
        }
        (Some(_), None) => return Err("activation zero point is not a constant".into()),
    };
    let b_zp = if g.operand(n, bzp_slot).is_some() {
        uniform_zp(Some(cst(g, n, bzp_slot, "weight zero point")?))
            .ok_or("per-column weight zero points must all be equal")?
    } else {
        0
    };
    let bv = b.view::<i8>().map_err(|e| e.to_string())?;
    let (kernel, note) = choose_kernel(best, bv, b_zp);
    let layout = if trans_b {
        WeightLayout::NxK
    } else {
        WeightLayout::KxN
    };
    let packed = PackedB::new(k, nn, bv, layout, b_zp as i32).map_err(|e| e.to_string())?;
    let (bias, mult, y_zp, y_dtype) = match op {
        Op::MatMulInteger => (None, vec![1.0; nn], 0, DType::I32),
        _ => {
            let (ys_slot, yzp_slot) = if matches!(op, Op::QGemm { .. }) {
                (7, 8)
            } else {
                (6, 7)
            };
            if g.operand(n, ys_slot).is_none() {
                return Err(
                    "QGemm without an output scale (f32 output) runs on the reference".into(),
                );
            }
            let sa = f32s(cst(g, n, 1, "a_scale")?)?;
            let sb = f32s(cst(g, n, 4, "b_scale")?)?;
            let sy = f32s(cst(g, n, ys_slot, "y_scale")?)?;
            if sa.len() != 1 || sy.len() != 1 || !(sb.len() == 1 || sb.len() == nn) {
                return Err(
                    "scales must be per tensor (a, y) and per tensor or per column (b)".into(),
                );
            }
            let mult: Vec<f32> = match op {
                // alpha (1) * a_scale * b_scale / y_scale, as the reference computes it.
                Op::QGemm { alpha, .. } => (0..nn)
                    .map(|j| alpha * sa[0] * pick(&sb, j) / sy[0])
                    .collect(),
                _ => (0..nn).map(|j| sa[0] * pick(&sb, j) / sy[0]).collect(),
            };
            let yzp_t = g.const_operand(n, yzp_slot);
            let y_dtype = yzp_t.map(|t| t.dtype()).unwrap_or(DType::U8);
            let y_zp = uniform_zp(yzp_t).ok_or("output zero point must be one constant")?;
            let bias = if matches!(op, Op::QGemm { .. }) && g.operand(n, 6).is_some() {
                Some(
                    cst(g, n, 6, "bias")?
                        .view::<i32>()
                        .map_err(|e| e.to_string())?
                        .to_vec(),
                )
            } else {
                None
            };
            (bias, mult, y_zp as i32, y_dtype)
        }
    };
    if let Some(b) = &bias {
        if b.len() != nn {
            return Err("bias length differs from the output columns".into());
        }
    }
    Ok(GemmNode {
        kernel,
        packed,
        bias,
        mult,
        a_zp: a_zp as i32,
        a_zp_slot,
        a_signed,
        y_zp,
        y_dtype,
        k,
        n: nn,
        note,
        scales: std::sync::Mutex::new(Vec::new()),
    })
}

/// MatMulInteger -> Cast(f32) -> Mul(a_scale * w_scale) [-> Add(bias)] folded into the GEMM's
/// dequantizing epilogue: `acc as f32 * (a_scale * w_scale[j]) + bias[j]` (multiply then add,
/// the reference's order, so bit-identical).
pub struct Dequant<'a> {
    pub a_scale: f32,
    pub w_scale: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// Then GELU (the engine's native GELU values).
    pub gelu: bool,
    /// Then a per-column multiply.
    pub post_scale: Option<&'a [f32]>,
}

impl GemmNode {
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn is_integer_out(&self) -> bool {
        self.y_dtype == DType::I32
    }

    pub fn run(
        &self,
        args: &[Option<&Tensor>],
        deq: Option<Dequant>,
        pool: &mut Pool,
    ) -> R<Tensor> {
        let a = args.first().copied().flatten().ok_or("missing input")?;
        let s = a.shape();
        if s.is_empty() || s[s.len() - 1] != self.k {
            return Err(format!("input shape {s:?} does not have K = {}", self.k));
        }
        let m: usize = s[..s.len() - 1].iter().product();
        let shifted;
        let data: &[u8] = if self.a_signed {
            shifted = a.bytes().iter().map(|&v| v ^ 0x80).collect::<Vec<u8>>();
            &shifted
        } else {
            a.bytes()
        };
        let a_zp = match self.a_zp_slot {
            None => self.a_zp,
            Some(slot) => {
                let t = args
                    .get(slot)
                    .copied()
                    .flatten()
                    .ok_or("missing activation zero point")?;
                uniform_zp(Some(t)).ok_or("activation zero point must be one value")? as i32
            }
        };
        let zp = a_zp + if self.a_signed { 128 } else { 0 };
        let am = MatrixU8 {
            data,
            rows: m,
            ld: self.k,
            zero_point: zp,
        };
        let mut shape = s.to_vec();
        *shape.last_mut().unwrap() = self.n;
        if let Some(d) = deq {
            let mut fresh = Vec::new();
            let mut guard = match self.scales.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            let scales: &mut Vec<f32> = guard.as_deref_mut().unwrap_or(&mut fresh);
            scales.clear();
            scales.extend((0..self.n).map(|j| d.a_scale * pick(d.w_scale, j)));
            let mut ep = Epilogue::requant(Scale::PerChannel(scales), 0);
            if let Some(b) = d.bias {
                ep = ep.with_f32_bias(b);
            }
            if d.gelu {
                ep = ep.with_f32_gelu();
            }
            if let Some(ps) = d.post_scale {
                ep = ep.with_f32_post_scale(ps);
            }
            let mut out = pool.tensor(DType::F32, &shape);
            let slice = OutputSlice::F32(out.view_mut::<f32>().map_err(|e| e.to_string())?);
            gemm_u8s8(&self.kernel, am, &self.packed, &ep, slice, self.n)
                .map_err(|e| e.to_string())?;
            return Ok(out);
        }
        let mut out = pool.tensor(self.y_dtype, &shape);
        let ep = match self.y_dtype {
            DType::I32 => Epilogue::raw(),
            _ => Epilogue::requant(Scale::PerChannel(&self.mult), self.y_zp),
        };
        let ep = match &self.bias {
            Some(b) => ep.with_bias(b),
            None => ep,
        };
        let slice = match self.y_dtype {
            DType::U8 => OutputSlice::U8(out.view_mut::<u8>().map_err(|e| e.to_string())?),
            DType::I8 => OutputSlice::I8(out.view_mut::<i8>().map_err(|e| e.to_string())?),
            _ => OutputSlice::I32(out.view_mut::<i32>().map_err(|e| e.to_string())?),
        };
        gemm_u8s8(&self.kernel, am, &self.packed, &ep, slice, self.n).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{nchw_to_nhwc_u8, nchw_to_nhwc_u8_padded};

    #[test]
    fn padded_conversion_places_every_pixel_and_fills_the_border() {
        let k = octet_kernels::Kernel::best().unwrap();
        for (c, h, w) in [(3usize, 5usize, 4usize), (1, 2, 3), (4, 3, 3), (3, 1, 1)] {
            for pads in [[3, 3, 3, 3], [1, 0, 2, 1], [0, 2, 0, 0]] {
                let img: Vec<u8> = (0..c * h * w).map(|i| (i * 37 + 11) as u8).collect();
                let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
                let mut out = vec![0u8; hp * wp * c];
                nchw_to_nhwc_u8_padded(&k, &img, &mut out, (c, h, w), pads, 0x80, 9);
                for y in 0..hp {
                    for x in 0..wp {
                        for ch in 0..c {
                            let got = out[(y * wp + x) * c + ch];
                            let inside = (pads[0]..pads[0] + h).contains(&y)
                                && (pads[1]..pads[1] + w).contains(&x);
                            let want = if inside {
                                img[ch * h * w + (y - pads[0]) * w + (x - pads[1])] ^ 0x80
                            } else {
                                9
                            };
                            assert_eq!(got, want, "c {c} {h}x{w} {pads:?} ({y},{x},{ch})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nchw_to_nhwc_u8_transposes_and_flips_for_every_channel_count() {
        let k = octet_kernels::Kernel::best().unwrap();
        for c in [1usize, 2, 3, 4, 5, 64, 67] {
            for hw in [1usize, 7, 63, 64, 65, 200] {
                let img: Vec<u8> = (0..c * hw).map(|i| (i * 31 + 7) as u8).collect();
                for flip in [0u8, 0x80] {
                    let mut out = vec![0u8; c * hw];
                    nchw_to_nhwc_u8(&k, &img, &mut out, c, hw, flip);
                    for p in 0..hw {
                        for ch in 0..c {
                            assert_eq!(out[p * c + ch], img[ch * hw + p] ^ flip, "c {c} hw {hw}");
                        }
                    }
                }
            }
        }
    }
}
