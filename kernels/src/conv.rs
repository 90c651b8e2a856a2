//! int8 convolution in NHWC with OHWI weights: 1x1 as a direct GEMM, kxk through an im2col
//! buffer (built in row chunks, reused), groups as one GEMM per group, depthwise through its own
//! kernel (`depthwise.rs`). Owns the geometry and the lowering; all arithmetic is the GEMM's and
//! the epilogue's, so the rounding and saturation rules are exactly those of [`crate::gemm_u8s8`].

use crate::depthwise::{depthwise_u8s8, DepthwiseWeights};
use crate::error::{bad, KernelError};
use crate::gemm_u8s8::{
    gemm_u8s8_res, gemm_u8s8_res_on, Epilogue, MatrixU8, OutputSlice, PackedB, Residual, Scale,
    WeightLayout,
};
use crate::isa::Kernel;
use crate::qadd::{qadd_raw, QAdd};
use crate::scratch::Scratch;

/// The bytes of an i8 slice.
fn bytemuck_i8(s: &mut [i8]) -> &mut [u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut u8, s.len()) }
}

/// Convolution geometry (2-D). ONNX Conv attributes: `kernel_shape`, `strides`, `dilations`,
/// `pads` = [top, left, bottom, right], `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// (kh, kw)
    pub kernel: (usize, usize),
    /// (sh, sw), >= 1
    pub stride: (usize, usize),
    /// (dh, dw), >= 1
    pub dilation: (usize, usize),
    /// [top, left, bottom, right]
    pub pads: [usize; 4],
    /// Number of groups; C_in and C_out must be multiples of it.
    pub groups: usize,
}

impl ConvGeometry {
    /// A kh x kw convolution with stride 1, no padding, no dilation, one group.
    pub fn new(kh: usize, kw: usize) -> Self {
        ConvGeometry {
            kernel: (kh, kw),
            stride: (1, 1),
            dilation: (1, 1),
            pads: [0; 4],
            groups: 1,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = (dh, dw);
        self
    }
    /// Sets the same padding on all sides.
    pub fn pad(mut self, p: usize) -> Self {
        self.pads = [p; 4];
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// Output (height, width) for an input of `h` x `w`, or an error if the window does not fit.
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize), KernelError> {
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        let (dh, dw) = self.dilation;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 || self.groups == 0 {
            return Err(bad(format!(
                "conv: kernel, stride, dilation and groups must be >= 1: {self:?}"
            )));
        }
        let eh = dh * (kh - 1) + 1;
        let ew = dw * (kw - 1) + 1;
        let ph = h + self.pads[0] + self.pads[2];
        let pw = w + self.pads[1] + self.pads[3];
        if ph < eh || pw < ew {
            return Err(bad(format!(
                "conv: padded input {ph}x{pw} smaller than the dilated kernel {eh}x{ew}"
            )));
        }
        Ok(((ph - eh) / sh + 1, (pw - ew) / sw + 1))
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.stride == (1, 1) && self.pads == [0; 4]
    }
}

enum ConvImpl {
    /// One packed GEMM weight matrix per group (N = C_out/groups, K = kh*kw*C_in/groups).
    Gemm(Vec<PackedB>),
    /// groups == C_in == C_out.
    Depthwise(DepthwiseWeights),
}

/// Convolution weights prepacked once for [`conv2d_u8s8`].
pub struct PackedConv {
    geom: ConvGeometry,
    c_in: usize,
    c_out: usize,
    imp: ConvImpl,
    /// The last calls' indirection buffers, most recent first (see [`IndCache`]).
    ind_cache: std::sync::Mutex<Vec<IndCache>>,
}

/// Indirection pointers kept between calls of one convolution: they depend only on where the
/// input is, its shape and zero point (the padding segment), so a call with an input buffer seen
/// before skips refilling them. The engine's pool hands a step one of a few buffers across runs
/// (its free lists rotate as the returned outputs leave it), so a few entries are kept.
const IND_CACHE_ENTRIES: usize = 3;

struct IndCache {
    key: IndKey,
    /// `rows * taps` pointers, as `usize`.
    ptrs: Vec<usize>,
    /// The padding segment the pointers of padding taps address (owned here, read only
    /// through those pointers).
    #[allow(dead_code)]
    pad: Box<[u8]>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct IndKey {
    data: usize,
    len: usize,
    zero_point: i32,
    batch: usize,
    h: usize,
    w: usize,
    /// The padding the call reads with ([`conv2d_u8s8_prepadded`] reads none).
    pads: [usize; 4],
}

impl std::fmt::Debug for PackedConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv")
            .field("geom", &self.geom)
            .field("c_in", &self.c_in)
            .field("c_out", &self.c_out)
            .field("depthwise", &matches!(self.imp, ConvImpl::Depthwise(_)))
            .finish()
    }
}

impl PackedConv {
    /// Packs OHWI int8 weights (`[c_out][kh][kw][c_in / groups]`) with weight zero point `w_zp`.
    /// Depthwise (groups == c_in == c_out) selects the dedicated depthwise kernel.
    pub fn new(
        geom: ConvGeometry,
        c_in: usize,
        c_out: usize,
        weights: &[i8],
        w_zp: i32,
    ) -> Result<PackedConv, KernelError> {
        geom.out_size(
            geom.kernel.0 * geom.dilation.0,
            geom.kernel.1 * geom.dilation.1,
        )?;
        let g = geom.groups;
        if c_in == 0 || c_out == 0 || !c_in.is_multiple_of(g) || !c_out.is_multiple_of(g) {
            return Err(bad(format!(
                "conv: c_in {c_in} and c_out {c_out} must be positive multiples of groups {g}"
            )));
        }
        let (kh, kw) = geom.kernel;
        let (cig, cog) = (c_in / g, c_out / g);
        let kk = kh * kw * cig;
        if weights.len() != c_out * kk {
            return Err(bad(format!(
                "conv: weights have {} elements, expected OHWI {c_out}x{kh}x{kw}x{cig} = {}",
                weights.len(),
                c_out * kk
            )));
        }
        let imp = if g == c_in && g == c_out && g > 1 {
            ConvImpl::Depthwise(DepthwiseWeights::new(kh, kw, c_in, weights, w_zp)?)
        } else {
            let mut packs = Vec::with_capacity(g);
            for gi in 0..g {
                let w = &weights[gi * cog * kk..(gi + 1) * cog * kk];
                packs.push(PackedB::new(kk, cog, w, WeightLayout::NxK, w_zp)?);
            }
            ConvImpl::Gemm(packs)
        };
        Ok(PackedConv {
            geom,
            c_in,
            c_out,
            imp,
            ind_cache: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The geometry.
    pub fn geometry(&self) -> ConvGeometry {
        self.geom
    }
    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }
    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }
}

/// An NHWC u8 activation tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorU8<'a> {
    /// `batch * h * w * c` elements, channels fastest.
    pub data: &'a [u8],
    /// N
    pub batch: usize,
    /// H
    pub h: usize,
    /// W
    pub w: usize,
    /// Zero point (also the padding value), in [0, 255] (s8 zero point + 128 after the shift).
    pub zero_point: i32,
}

/// Rows of im2col built per chunk (bounds the scratch to about this many x K bytes).
const IM2COL_ROWS: usize = 256;

/// int8 convolution, NHWC in and out, with the GEMM's fused epilogue (per output channel bias,
/// scale and clamp indexed by the *global* output channel). Returns (out_h, out_w); the output
/// holds `batch * out_h * out_w * c_out` elements. Padding reads the input zero point.
pub fn conv2d_u8s8(
    kernel: &Kernel,
    x: TensorU8<'_>,
    w: &PackedConv,
    ep: &Epilogue<'_>,
    out: OutputSlice<'_>,
) -> Result<(usize, usize), KernelError> {
    conv2d_impl(kernel, x, w, w.geom, ep, out, None)
}

/// [`conv2d_u8s8`] on an input that already holds the geometry's padding: `x` is the padded
/// image (`h + top + bottom` x `w + left + right`, the border filled with the zero point by the
/// caller, e.g. while converting the model input to NHWC), read with no padding, so every
/// window is inside it (im2col copies whole kernel rows, no border cases). The output is the
/// unpadded input's, byte for byte.
pub fn conv2d_u8s8_prepadded(
    kernel: &Kernel,
    x: TensorU8<'_>,
    w: &PackedConv,
    ep: &Epilogue<'_>,
    out: OutputSlice<'_>,
) -> Result<(usize, usize), KernelError> {
    let geom = ConvGeometry {
        pads: [0; 4],
        ..w.geom
    };
    conv2d_impl(kernel, x, w, geom, ep, out, None)
}

/// [`conv2d_u8s8`] followed by a residual QLinearAdd, fused: `out = add(conv(x), other)` with the
/// convolution's requantized output as operand A of `add` and `other` (NHWC, the output's shape)
/// as operand B. Each output tile gets the add right after its epilogue, while it is in L1
/// (depthwise convolutions: one pass after the kernel). The bytes are exactly those of
/// `conv2d_u8s8` then [`qadd_u8`](crate::qadd_u8). The output type must match `add.signed`.
pub fn conv2d_u8s8_add(
    kernel: &Kernel,
    x: TensorU8<'_>,
    w: &PackedConv,
    ep: &Epilogue<'_>,
    other: &[u8],
    add: &QAdd,
    out: OutputSlice<'_>,
) -> Result<(usize, usize), KernelError> {
    conv2d_impl(
        kernel,
        x,
        w,
        w.geom,
        ep,
        out,
        Some(&Residual { other, add }),
    )
}

fn conv2d_impl(
    kernel: &Kernel,
    x: TensorU8<'_>,
    w: &PackedConv,
    geom: ConvGeometry,
    ep: &Epilogue<'_>,
    mut out: OutputSlice<'_>,
    res: Option<&Residual<'_>>,
) -> Result<(usize, usize), KernelError> {
    if ep.has_f32_post() {
        return Err(bad(
            "conv: the GELU / post-scale epilogue is for GEMMs only",
        ));
    }
    let (oh, ow) = geom.out_size(x.h, x.w)?;
    let c_in = w.c_in;
    let need = x.batch * x.h * x.w * c_in;
    if x.data.len() < need {
        return Err(bad(format!(
            "conv: input has {} elements, NHWC {}x{}x{}x{c_in} needs {need}",
            x.data.len(),
            x.batch,
            x.h,
            x.w
        )));
    }
    let rows = x.batch * oh * ow;
    let c_out = w.c_out;
    if out.len() < rows * c_out {
        return Err(bad(format!(
            "conv: output has {} elements, needs {}",
            out.len(),
            rows * c_out
        )));
    }
    if let Some(r) = res {
        if r.other.len() < rows * c_out {
            return Err(bad(format!(
                "conv: residual operand has {} elements, needs {}",
                r.other.len(),
                rows * c_out
            )));
        }
        match (&out, r.add.signed) {
            (OutputSlice::U8(_), false) | (OutputSlice::I8(_), true) => {}
            _ => return Err(bad("conv: residual add does not match the output type")),
        }
    }
    if rows == 0 {
        return Ok((oh, ow));
    }
    if !(0..=255).contains(&x.zero_point) {
        return Err(bad(format!(
            "conv: input zero point {} outside [0, 255]",
            x.zero_point
        )));
    }
    let packs = match &w.imp {
        ConvImpl::Depthwise(dw) => {
            depthwise_u8s8(
                kernel,
                x,
                dw,
                geom,
                (oh, ow),
                ep,
                out.offset_mut(0).unwrap(),
            )?;
            if let Some(r) = res {
                let o = match &mut out {
                    OutputSlice::U8(o) => &mut o[..rows * c_out],
                    OutputSlice::I8(o) => bytemuck_i8(&mut o[..rows * c_out]),
                    _ => unreachable!("checked above"),
                };
                let p = o.as_mut_ptr();
                // SAFETY: in place (`qadd_raw` reads each element before writing it); both
                // buffers hold rows * c_out bytes (checked above); the Kernel proves the ISA.
                unsafe { qadd_raw(kernel.isa(), p, r.other.as_ptr(), p, rows * c_out, r.add) };
            }
            return Ok((oh, ow));
        }
        ConvImpl::Gemm(p) => p,
    };
    let g = geom.groups;
    let (cig, cog) = (c_in / g, c_out / g);
    let (kh, kw) = geom.kernel;
    let kk = kh * kw * cig;
    // Validate the whole epilogue once against C_out, so per-group slicing cannot fail.
    crate::gemm_u8s8::validate_epilogue("conv2d_u8s8", ep, c_out, &out)?;
    for (gi, pack) in packs.iter().enumerate() {
        let c0 = gi * cog;
        let ci0 = gi * cig;
        let gep = Epilogue {
            bias: ep.bias.map(|b| &b[c0..c0 + cog]),
            scale: match ep.scale {
                Scale::PerChannel(s) => Scale::PerChannel(&s[c0..c0 + cog]),
                t => t,
            },
            f32_bias: ep.f32_bias.map(|b| &b[c0..c0 + cog]),
            ..*ep
        };
        if geom.is_pointwise() {
            let a = MatrixU8 {
                data: &x.data[ci0.min(x.data.len())..],
                rows,
                ld: c_in,
                zero_point: x.zero_point,
            };
            let o = out
                .offset_mut(c0)
                .ok_or_else(|| bad("conv: output too small"))?;
            let r = res.map(|r| Residual {
                other: &r.other[c0..],
                add: r.add,
            });
            gemm_u8s8_res(kernel, a, pack, &gep, o, c_out, r.as_ref())?;
            continue;
        }
        if kernel.isa() == crate::Isa::Avx512Vnni && cig % 4 == 0 {
            conv_indirect(
                kernel,
                x,
                c_in,
                ci0,
                cig,
                geom,
                (oh, ow),
                rows,
                pack,
                &gep,
                &mut out,
                c0,
                c_out,
                res,
                (g == 1).then_some(&w.ind_cache),
            )?;
            continue;
        }
        // im2col in row chunks; row stride padded to a multiple of 4 so the GEMM reads in place.
        let ld = kk.div_ceil(4) * 4;
        // im2col of output rows [r0, r1) of this group into a buffer of `ld`-byte rows.
        let fill = |r0: usize, r1: usize, buf: &mut [u8]| {
            im2col(
                kernel.isa(),
                x,
                c_in,
                ci0,
                cig,
                geom,
                (oh, ow),
                r0,
                r1,
                ld,
                buf,
            )
        };
        let chunk = IM2COL_ROWS.min(rows);
        let nthreads = rayon::current_num_threads();
        if g == 1 && nthreads > 1 && rows >= 2 * nthreads * chunk {
            // Many chunks (e.g. the 7x7 stem): each worker takes whole chunks, im2col and GEMM on
            // one thread, instead of two fork/joins per ~10 us chunk. Same bytes: each output
            // row is one micro-kernel call either way.
            use rayon::prelude::*;
            let parts = out
                .chunks(rows * c_out, chunk * c_out)
                .ok_or_else(|| bad("conv: output too small"))?;
            parts.into_par_iter().enumerate().try_for_each_init(
                || Scratch::take(chunk * ld),
                |sbuf, (ci, o)| {
                    // Zeroed: `im2col` writes columns [0, kk) of each row, and the GEMM reads the
                    // row's padding [kk, ld) too (against zero weights; zero here as well).
                    let scratch = sbuf.filled::<u8>(chunk * ld, 0);
                    let r0 = ci * chunk;
                    let r1 = (r0 + chunk).min(rows);
                    fill(r0, r1, scratch);
                    let a = MatrixU8 {
                        data: &scratch[..(r1 - r0) * ld],
                        rows: r1 - r0,
                        ld,
                        zero_point: x.zero_point,
                    };
                    let r = res.map(|r| Residual {
                        other: &r.other[r0 * c_out..],
                        add: r.add,
                    });
                    gemm_u8s8_res_on(kernel, a, pack, &gep, o, c_out, r.as_ref(), 1)
                },
            )?;
            continue;
        }
        let mut sbuf = Scratch::take(chunk * ld);
        // Zeroed once: im2col writes columns [0, kk) of each row; the padding [kk, ld) stays 0.
        let scratch = sbuf.filled::<u8>(chunk * ld, 0);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + chunk).min(rows);
            // im2col rows are independent: split them over the pool (identical bytes either way).
            let rows_here = r1 - r0;
            if nthreads > 1 && rows_here >= 64 {
                use rayon::prelude::*;
                let per = rows_here.div_ceil(nthreads);
                scratch[..rows_here * ld]
                    .par_chunks_mut(per * ld)
                    .enumerate()
                    .for_each(|(t, part)| {
                        let a0 = r0 + t * per;
                        let a1 = (a0 + per).min(r1);
                        fill(a0, a1, part);
                    });
            } else {
                fill(r0, r1, scratch);
            }
            let a = MatrixU8 {
                data: &scratch[..(r1 - r0) * ld],
                rows: r1 - r0,
                ld,
                zero_point: x.zero_point,
            };
            let (o, r) = rows_from(&mut out, res, r0 * c_out + c0)?;
            gemm_u8s8_res(kernel, a, pack, &gep, o, c_out, r.as_ref())?;
            r0 = r1;
        }
    }
    Ok((oh, ow))
}

/// Output rows per indirection chunk (pointers: rows x kh*kw).
const INDIRECT_ROWS: usize = 4096;

/// kxk convolution without im2col (VNNI, `cig % 4 == 0`): for each output pixel an indirection
/// row of kh*kw pointers to the input pixels' channel segment (or to a zero-point-filled segment
/// for padding taps); the micro-kernel walks them in the packed weights' (ky, kx, c) K order.
/// With `cache` (one group), one chunk of rows and no weight zero point, the pointers come from
/// the convolution's kept entries ([`IndCache`]) and are refilled only for an input buffer,
/// shape or zero point not seen recently.
#[allow(clippy::too_many_arguments)]
fn conv_indirect(
    kernel: &Kernel,
    x: TensorU8<'_>,
    c_in: usize,
    ci0: usize,
    cig: usize,
    geom: ConvGeometry,
    (oh, ow): (usize, usize),
    rows: usize,
    pack: &PackedB,
    ep: &Epilogue<'_>,
    out: &mut OutputSlice<'_>,
    c0: usize,
    c_out: usize,
    res: Option<&Residual<'_>>,
    cache: Option<&std::sync::Mutex<Vec<IndCache>>>,
) -> Result<(), KernelError> {
    let (kh, kw) = geom.kernel;
    let taps = kh * kw;
    // The GEMM over output rows [r0, r0 + n) from their indirection rows (and row sums).
    //
    // SAFETY (of the callers below): every pointer was taken from a live slice of `cig` bytes
    // (`x.data` or a padding segment), alive and unmodified for the whole call.
    let mut gemm_rows = |r0: usize,
                         n: usize,
                         ptrs: &[*const u8],
                         sums: Option<&[i32]>|
     -> Result<(), KernelError> {
        let a = crate::gemm_u8s8::IndirectA {
            ptrs,
            taps,
            seg: cig,
            rows: n,
            zero_point: x.zero_point,
            row_sums: sums,
        };
        let (o, r) = rows_from(out, res, r0 * c_out + c0)?;
        unsafe { crate::gemm_u8s8::gemm_u8s8_indirect(kernel, a, pack, ep, o, c_out, r.as_ref()) }
    };
    if let Some(cache) = cache.filter(|_| rows <= INDIRECT_ROWS && pack.zero_point() == 0) {
        // A call holding the entries (a concurrent run) makes this one take the path below.
        let guard = match cache.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut guard) = guard {
            let key = IndKey {
                data: x.data.as_ptr() as usize,
                len: x.data.len(),
                zero_point: x.zero_point,
                batch: x.batch,
                h: x.h,
                w: x.w,
                pads: geom.pads,
            };
            match guard
                .iter()
                .position(|c| c.key == key && c.ptrs.len() == rows * taps)
            {
                // Most recent first.
                Some(i) => guard[..=i].rotate_right(1),
                None => {
                    let pad = vec![x.zero_point as u8; cig].into_boxed_slice();
                    let mut ptrs = vec![0usize; rows * taps];
                    // SAFETY: `*const u8` and `usize` have the same size and alignment.
                    let as_ptrs: &mut [*const u8] = unsafe {
                        std::slice::from_raw_parts_mut(ptrs.as_mut_ptr().cast(), ptrs.len())
                    };
                    fill_rows(x, c_in, ci0, geom, (oh, ow), pad.as_ptr(), 0, rows, as_ptrs);
                    guard.insert(0, IndCache { key, ptrs, pad });
                    guard.truncate(IND_CACHE_ENTRIES);
                }
            }
            let c = &guard[0];
            // SAFETY: as above; the entries were filled for an input at this same address,
            // length, shape and zero point, so each addresses `cig` live bytes of `x.data` or of
            // `c.pad`, both alive and unmodified for the call.
            let ptrs: &[*const u8] =
                unsafe { std::slice::from_raw_parts(c.ptrs.as_ptr().cast(), c.ptrs.len()) };
            return gemm_rows(0, rows, ptrs, None);
        }
    }
    let mut pad_buf = Scratch::take(cig);
    let pad: &[u8] = pad_buf.filled(cig, x.zero_point as u8);
    let chunk = INDIRECT_ROWS.min(rows);
    // Per-thread reused buffers (see `scratch`): the pointers as `usize`, the row sums.
    let mut ptr_buf = Scratch::take(chunk * taps * std::mem::size_of::<usize>());
    let mut sum_buf = Scratch::take(chunk * 4);
    let need_sums = pack.zero_point() != 0;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + chunk).min(rows);
        let words = ptr_buf.slice::<usize>((r1 - r0) * taps);
        // SAFETY: `*const u8` and `usize` have the same size and alignment; every entry is
        // written by `fill_indirection` below before anything reads it.
        let ptrs: &mut [*const u8] =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len()) };
        let sums = sum_buf.slice::<i32>(r1 - r0);
        fill_rows(x, c_in, ci0, geom, (oh, ow), pad.as_ptr(), r0, r1, ptrs);
        if need_sums {
            for (row, sum) in ptrs.chunks_exact(taps).zip(sums.iter_mut()) {
                let mut s = 0i32;
                for &p in row {
                    // SAFETY: each pointer addresses `cig` live bytes (see above).
                    let seg = unsafe { std::slice::from_raw_parts(p, cig) };
                    s += seg.iter().map(|&v| v as i32).sum::<i32>();
                }
                *sum = s;
            }
        }
        gemm_rows(r0, r1 - r0, ptrs, need_sums.then_some(&*sums))?;
        r0 = r1;
    }
    Ok(())
}

/// The output and the residual operand from element `off` on (the first row of a block of
/// output rows, at the group's first channel).
fn rows_from<'o, 'r>(
    out: &'o mut OutputSlice<'_>,
    res: Option<&Residual<'r>>,
    off: usize,
) -> Result<(OutputSlice<'o>, Option<Residual<'r>>), KernelError> {
    let o = out
        .offset_mut(off)
        .ok_or_else(|| bad("conv: output too small"))?;
    let r = match res {
        Some(r) => Some(Residual {
            other: r
                .other
                .get(off..)
                .ok_or_else(|| bad("conv: residual operand too small"))?,
            add: r.add,
        }),
        None => None,
    };
    Ok((o, r))
}

/// Fills the indirection rows [r0, r1) into `ptrs` (`(r1 - r0) * taps` entries), split over the
/// pool (disjoint row ranges; the pointers do not depend on the split).
#[allow(clippy::too_many_arguments)]
fn fill_rows(
    x: TensorU8<'_>,
    c_in: usize,
    ci0: usize,
    geom: ConvGeometry,
    (oh, ow): (usize, usize),
    pad: *const u8,
    r0: usize,
    r1: usize,
    ptrs: &mut [*const u8],
) {
    let taps = geom.kernel.0 * geom.kernel.1;
    assert!(
        ptrs.len() >= (r1 - r0) * taps,
        "fill_rows: pointer buffer too small"
    );
    let dst = SendMutPtr(ptrs.as_mut_ptr());
    let pad_ptr = SendConstPtr(pad);
    let nthreads = rayon::current_num_threads();
    let fill = |lo: usize, hi: usize| {
        #[allow(clippy::redundant_locals)] // capture the Send wrappers, not their fields
        let (dst, pad_ptr) = (dst, pad_ptr);
        // SAFETY: rows [lo, hi) own entries [(lo - r0) * taps, (hi - r0) * taps) of `ptrs`
        // (length checked above); `x.data` holds the whole NHWC input (checked by the caller).
        unsafe {
            fill_indirection(
                x,
                c_in,
                ci0,
                geom,
                (oh, ow),
                pad_ptr.0,
                lo,
                hi,
                dst.0.add((lo - r0) * taps),
            )
        }
    };
    if nthreads > 1 && r1 - r0 >= 256 {
        use rayon::prelude::*;
        let per = (r1 - r0).div_ceil(nthreads);
        (0..nthreads).into_par_iter().for_each(|t| {
            let lo = (r0 + t * per).min(r1);
            let hi = (lo + per).min(r1);
            fill(lo, hi);
        });
    } else {
        fill(r0, r1);
    }
}

#[derive(Clone, Copy)]
struct SendMutPtr(*mut *const u8);
#[derive(Clone, Copy)]
struct SendConstPtr(*const u8);
// SAFETY: used only to fill disjoint ranges of one Vec, and to pass the address of the live
// zero-point segment, within one call.
unsafe impl Send for SendMutPtr {}
unsafe impl Sync for SendMutPtr {}
unsafe impl Send for SendConstPtr {}
unsafe impl Sync for SendConstPtr {}

/// Writes the indirection rows of output rows [lo, hi) to `dst` (`taps` pointers per row): per
/// output row, the input row offset of each kernel row (None in the padding), then per pixel
/// and tap the input pixel's channel segment or `pad`.
///
/// # Safety
/// `dst` must be valid for `(hi - lo) * kh * kw` writes; `x.data` must hold the whole NHWC input.
#[allow(clippy::too_many_arguments)]
unsafe fn fill_indirection(
    x: TensorU8<'_>,
    c_in: usize,
    ci0: usize,
    geom: ConvGeometry,
    (oh, ow): (usize, usize),
    pad: *const u8,
    lo: usize,
    hi: usize,
    dst: *mut *const u8,
) {
    let (kh, kw) = geom.kernel;
    let xp = x.data.as_ptr();
    let (sh, sw) = geom.stride;
    let (dh, dw) = geom.dilation;
    let (pt, pl) = (geom.pads[0] as isize, geom.pads[1] as isize);
    // Per kernel row, the input row's offset, or NONE in the vertical padding.
    const NONE: usize = usize::MAX;
    let mut ybase = crate::scratch::ScratchVec::filled(kh, NONE);
    let mut w = 0;
    let mut r = lo;
    while r < hi {
        let (b, oy, ox0) = (r / (oh * ow), (r / ow) % oh, r % ow);
        let ox_end = ow.min(ox0 + (hi - r));
        for (ky, yb) in ybase.iter_mut().enumerate() {
            let iy = (oy * sh + ky * dh) as isize - pt;
            *yb = if iy >= 0 && (iy as usize) < x.h {
                ((b * x.h + iy as usize) * x.w) * c_in + ci0
            } else {
                NONE
            };
        }
        for ox in ox0..ox_end {
            for &yb in ybase.iter() {
                for kx in 0..kw {
                    let ix = (ox * sw + kx * dw) as isize - pl;
                    let ptr = if yb != NONE && ix >= 0 && (ix as usize) < x.w {
                        // In bounds: offset + cig <= x.data.len() (input length checked).
                        xp.wrapping_add(yb + ix as usize * c_in)
                    } else {
                        pad
                    };
                    *dst.add(w) = ptr;
                    w += 1;
                }
            }
        }
        r += ox_end - ox0;
    }
}

/// Copies a short segment without a `memcpy` call: 16-byte chunks and an overlapping last chunk
/// (or two overlapping 8- / 4-byte words, or bytes, below 16). `d` and `s` must have the same
/// length.
#[inline(always)]
fn copy_small(d: &mut [u8], s: &[u8]) {
    let n = d.len().min(s.len());
    let (d, s) = (&mut d[..n], &s[..n]);
    if n >= 16 {
        let mut i = 0;
        while i + 16 <= n {
            d[i..i + 16].copy_from_slice(&s[i..i + 16]);
            i += 16;
        }
        if i < n {
            d[n - 16..].copy_from_slice(&s[n - 16..]);
        }
    } else if n >= 8 {
        let lo = u64::from_ne_bytes(s[..8].try_into().unwrap_or([0; 8]));
        let hi = u64::from_ne_bytes(s[n - 8..].try_into().unwrap_or([0; 8]));
        d[n - 8..].copy_from_slice(&hi.to_ne_bytes());
        d[..8].copy_from_slice(&lo.to_ne_bytes());
    } else if n >= 4 {
        let lo = u32::from_ne_bytes(s[..4].try_into().unwrap_or([0; 4]));
        let hi = u32::from_ne_bytes(s[n - 4..].try_into().unwrap_or([0; 4]));
        d[n - 4..].copy_from_slice(&hi.to_ne_bytes());
        d[..4].copy_from_slice(&lo.to_ne_bytes());
    } else {
        for (a, &b) in d.iter_mut().zip(s) {
            *a = b;
        }
    }
}

/// Fills rows [r0, r1) of the im2col matrix for channels [c0, c0 + cig): row = (b, oy, ox),
/// column = (ky, kx, c); out-of-bounds taps read the zero point.
#[allow(clippy::too_many_arguments)]
fn im2col(
    isa: crate::Isa,
    x: TensorU8<'_>,
    c_in: usize,
    c0: usize,
    cig: usize,
    geom: ConvGeometry,
    (oh, ow): (usize, usize),
    r0: usize,
    r1: usize,
    ld: usize,
    buf: &mut [u8],
) {
    let (kh, kw) = geom.kernel;
    let (sh, sw) = geom.stride;
    let (dh, dw) = geom.dilation;
    let pad_val = x.zero_point.clamp(0, 255) as u8;
    let span = kw * cig;
    // Output columns whose kw taps are all inside the input row: ix0 = ox*sw - pad_left >= 0
    // and ix0 + kw <= w.
    let pl = geom.pads[1];
    let ox_first = pl.div_ceil(sw);
    let ox_last = (x.w + pl).checked_sub(kw).map(|v| v / sw);
    let fast = cig == c_in && dw == 1 && (8..=32).contains(&span);
    // (b, oy, ox) of row r, stepped (no divisions in the loop).
    let (mut b, mut oy, mut ox) = (r0 / (oh * ow), (r0 / ow) % oh, r0 % ow);
    let mut r = r0;
    while r < r1 {
        if ox == ow {
            ox = 0;
            oy += 1;
            if oy == oh {
                oy = 0;
                b += 1;
            }
        }
        let iy0 = (oy * sh) as isize - geom.pads[0] as isize;
        let rows_in = iy0 >= 0 && iy0 as usize + (kh - 1) * dh < x.h;
        if let (true, true, Some(last_ox)) = (fast, rows_in, ox_last) {
            if ox >= ox_first && ox <= last_ox {
                // A run of output columns whose whole window is inside the input, 8..32 bytes
                // per kernel row: two overlapping 8- or 16-byte copies per kernel row, bounds
                // checked once for the run.
                let n = (last_ox + 1 - ox).min(ow - ox).min(r1 - r);
                let s0 = ((b * x.h + iy0 as usize) * x.w + ox * sw - pl) * c_in;
                let (step, rstride) = (sw * c_in, dh * x.w * c_in);
                let src_end = s0 + (n - 1) * step + (kh - 1) * rstride + span;
                let dst_end = (r - r0 + n - 1) * ld + kh * span;
                if src_end <= x.data.len() && dst_end <= buf.len() {
                    let (sp, dp) = (x.data.as_ptr(), buf.as_mut_ptr());
                    #[cfg(target_arch = "x86_64")]
                    if matches!(isa, crate::Isa::Avx512 | crate::Isa::Avx512Vnni) {
                        // SAFETY: the ISA has AVX-512 BW/VL (the Kernel proves it); the spans
                        // are the ones bounds-checked above.
                        unsafe {
                            x86::spans_avx512(
                                sp.add(s0),
                                dp.add((r - r0) * ld),
                                n,
                                kh,
                                span,
                                (step, rstride, ld),
                            )
                        };
                        r += n;
                        ox += n;
                        continue;
                    }
                    for j in 0..n {
                        for ky in 0..kh {
                            // SAFETY: every source span ends at or before `src_end`, every
                            // destination span at or before `dst_end` (both checked above).
                            unsafe {
                                let src = sp.add(s0 + j * step + ky * rstride);
                                let d = dp.add((r - r0 + j) * ld + ky * span);
                                if span >= 16 {
                                    let lo = std::ptr::read_unaligned(src as *const [u8; 16]);
                                    let hi = std::ptr::read_unaligned(
                                        src.add(span - 16) as *const [u8; 16]
                                    );
                                    std::ptr::write_unaligned(d as *mut [u8; 16], lo);
                                    std::ptr::write_unaligned(
                                        d.add(span - 16) as *mut [u8; 16],
                                        hi,
                                    );
                                } else {
                                    let lo = std::ptr::read_unaligned(src as *const [u8; 8]);
                                    let hi = std::ptr::read_unaligned(
                                        src.add(span - 8) as *const [u8; 8]
                                    );
                                    std::ptr::write_unaligned(d as *mut [u8; 8], lo);
                                    std::ptr::write_unaligned(d.add(span - 8) as *mut [u8; 8], hi);
                                }
                            }
                        }
                    }
                    r += n;
                    ox += n;
                    continue;
                }
            }
        }
        let dst = &mut buf[(r - r0) * ld..(r - r0 + 1) * ld];
        let mut col = 0;
        // With one group and no horizontal dilation, the kw taps of a kernel row are kw whole
        // input pixels side by side: one copy of kw * c_in bytes when all are inside the input
        // (the stem conv: C_in = 3, 21 bytes per kernel row instead of seven 3-byte copies).
        let ix0 = (ox * sw) as isize - pl as isize;
        let row_span = cig == c_in && dw == 1 && ix0 >= 0 && ix0 as usize + kw <= x.w;
        for ky in 0..kh {
            let iy = (oy * sh + ky * dh) as isize - geom.pads[0] as isize;
            if row_span && iy >= 0 && (iy as usize) < x.h {
                let s = ((b * x.h + iy as usize) * x.w + ix0 as usize) * c_in;
                copy_small(&mut dst[col..col + span], &x.data[s..s + span]);
                col += span;
                continue;
            }
            for kx in 0..kw {
                let ix = (ox * sw + kx * dw) as isize - geom.pads[1] as isize;
                let d = &mut dst[col..col + cig];
                if iy >= 0 && (iy as usize) < x.h && ix >= 0 && (ix as usize) < x.w {
                    let s = ((b * x.h + iy as usize) * x.w + ix as usize) * c_in + c0;
                    copy_small(d, &x.data[s..s + cig]);
                } else {
                    d.fill(pad_val);
                }
                col += cig;
            }
        }
        r += 1;
        ox += 1;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `im2col`'s run of `n` output columns whose windows are inside the input: for column `j`
    /// and kernel row `ky`, the `span` (<= 32) bytes at `src + j * step + ky * rstride` go to
    /// `dst + j * ld + ky * span`; one masked 32-byte load and store each (the scalar path
    /// takes two overlapping copies and their bounds per span).
    ///
    /// SAFETY: AVX-512 BW/VL supported; every source and destination span in bounds (masked
    /// accesses touch no byte outside them).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn spans_avx512(
        src: *const u8,
        dst: *mut u8,
        n: usize,
        kh: usize,
        span: usize,
        (step, rstride, ld): (usize, usize, usize),
    ) {
        debug_assert!(span <= 32);
        let m: __mmask32 = if span >= 32 { !0 } else { (1u32 << span) - 1 };
        for j in 0..n {
            let (s, d) = (src.add(j * step), dst.add(j * ld));
            for ky in 0..kh {
                let v = _mm256_maskz_loadu_epi8(m, s.add(ky * rstride) as *const i8);
                _mm256_mask_storeu_epi8(d.add(ky * span) as *mut i8, m, v);
            }
        }
    }
}
