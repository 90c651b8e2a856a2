//! fp32 convolution, NHWC with OHWI weights, lowered to the fp32 GEMM driver (1x1 stride 1 in
//! place; every other layer through an indirection buffer read by the micro-kernel, no im2col;
//! one GEMM per group). Owns the fp32 lowering only.

use crate::conv::ConvGeometry;
use crate::error::{bad, KernelError};
use crate::gemm_f32::{gemm_core, ASrc, PackedBF32};
use crate::isa::Kernel;
use crate::scratch::Scratch;
use crate::winograd_f32::{conv3x3_winograd_f32, WinogradF32};
use crate::WeightLayout;
use rayon::prelude::*;

/// fp32 convolution weights prepacked once for [`conv2d_f32`].
#[derive(Debug)]
pub struct PackedConvF32 {
    geom: ConvGeometry,
    c_in: usize,
    c_out: usize,
    packs: Vec<PackedBF32>,
    /// The Winograd F(2x2, 3x3) weights when the shape qualifies
    /// ([`crate::winograd_f32::eligible`]); used on AVX-512 kernels.
    wino: Option<WinogradF32>,
}

impl PackedConvF32 {
    /// Packs OHWI weights `[c_out][kh][kw][c_in / groups]`.
    pub fn new(
        geom: ConvGeometry,
        c_in: usize,
        c_out: usize,
        weights: &[f32],
    ) -> Result<Self, KernelError> {
        geom.out_size(
            geom.kernel.0 * geom.dilation.0,
            geom.kernel.1 * geom.dilation.1,
        )?;
        let g = geom.groups;
        if c_in == 0 || c_out == 0 || !c_in.is_multiple_of(g) || !c_out.is_multiple_of(g) {
            return Err(bad(format!(
                "conv_f32: c_in {c_in} and c_out {c_out} must be positive multiples of groups {g}"
            )));
        }
        let kk = geom.kernel.0 * geom.kernel.1 * (c_in / g);
        let cog = c_out / g;
        if weights.len() != c_out * kk {
            return Err(bad(format!(
                "conv_f32: weights have {} elements, expected {}",
                weights.len(),
                c_out * kk
            )));
        }
        let packs = (0..g)
            .map(|gi| {
                PackedBF32::new(
                    kk,
                    cog,
                    &weights[gi * cog * kk..(gi + 1) * cog * kk],
                    WeightLayout::NxK,
                )
            })
            .collect::<Result<_, _>>()?;
        let wino = if crate::winograd_f32::eligible(&geom, c_in, c_out) {
            Some(WinogradF32::new(c_in, c_out, weights)?)
        } else {
            None
        };
        Ok(PackedConvF32 {
            geom,
            c_in,
            c_out,
            packs,
            wino,
        })
    }
}

impl PackedConvF32 {
    /// The algorithm `conv2d_f32` runs for these weights on `kernel`: `"winograd F(2x2,3x3)"`
    /// (3x3 stride-1 layers with 16..256 channels, multiples of 16, on AVX-512) or
    /// `"indirection + gemm"`.
    pub fn algorithm(&self, kernel: &Kernel) -> &'static str {
        if self.wino.is_some() && WinogradF32::runs_on(kernel) {
            "winograd F(2x2,3x3)"
        } else {
            "indirection + gemm"
        }
    }
}

/// fp32 convolution: NHWC input `batch x h x w x c_in`, NHWC output, optional bias and ReLU.
/// Padding reads 0. Returns (out_h, out_w).
///
/// No im2col: 1x1 stride-1 unpadded layers read the input as the GEMM's A in place; every other
/// layer goes through an indirection buffer (per output pixel, a pointer per K segment) that the
/// micro-kernel follows. With one group and no horizontal dilation a segment is a whole kernel
/// row (`kw * c_in` contiguous floats of the input row); kernel rows that overlap the left or
/// right padding are copied, zero-filled, into a small per-call scratch, and rows entirely in the
/// vertical padding point at a zero segment. Otherwise a segment is one tap's `c_in / groups`
/// channels (padding taps point at the zero segment). The K order is (ky, kx, c) either way.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_f32(
    kernel: &Kernel,
    x: &[f32],
    dims: (usize, usize, usize),
    wts: &PackedConvF32,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) -> Result<(usize, usize), KernelError> {
    conv2d_f32_add(kernel, x, dims, wts, bias, None, relu, out)
}

/// [`conv2d_f32`] with a residual Add fused before the ReLU: `out = act(conv(x) + bias + res)`,
/// `res` NHWC in the output's shape, added in the epilogue while each tile is in registers (the
/// same operations, in the same order, as the convolution, then `Add`, then `Relu`).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_f32_add(
    kernel: &Kernel,
    x: &[f32],
    (batch, h, w): (usize, usize, usize),
    wts: &PackedConvF32,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) -> Result<(usize, usize), KernelError> {
    let geom = wts.geom;
    let (oh, ow) = geom.out_size(h, w)?;
    let (c_in, c_out) = (wts.c_in, wts.c_out);
    let in_len = batch
        .checked_mul(h)
        .and_then(|t| t.checked_mul(w))
        .and_then(|t| t.checked_mul(c_in))
        .ok_or_else(|| bad("conv_f32: input size overflows usize"))?;
    if x.len() < in_len {
        return Err(bad(format!(
            "conv_f32: input has {} elements, needs {in_len}",
            x.len(),
        )));
    }
    let rows = batch
        .checked_mul(oh * ow)
        .ok_or_else(|| bad("conv_f32: output size overflows usize"))?;
    if rows.checked_mul(c_out).is_none_or(|need| out.len() < need) {
        return Err(bad(format!(
            "conv_f32: output has {} elements, needs {rows}*{c_out}",
            out.len(),
        )));
    }
    if let Some(b) = bias {
        if b.len() != c_out {
            return Err(bad(format!(
                "conv_f32: bias has {} values, c_out = {c_out}",
                b.len()
            )));
        }
    }
    if let Some(r) = res {
        if r.len() < rows * c_out {
            return Err(bad(format!(
                "conv_f32: residual operand has {} elements, needs {rows}*{c_out}",
                r.len()
            )));
        }
    }
    if rows == 0 {
        return Ok((oh, ow));
    }
    if let Some(wg) = wts.wino.as_ref().filter(|_| WinogradF32::runs_on(kernel)) {
        // 3x3, stride 1, padding 1: the output is h x w.
        conv3x3_winograd_f32(kernel, x, (batch, h, w), wg, bias, res, relu, out)?;
        return Ok((oh, ow));
    }
    let g = geom.groups;
    let (cig, cog) = (c_in / g, c_out / g);
    let pointwise = geom.kernel == (1, 1) && geom.stride == (1, 1) && geom.pads == [0; 4];
    if pointwise {
        for (gi, pack) in wts.packs.iter().enumerate() {
            let (ci0, co0) = (gi * cig, gi * cog);
            let gb = bias.map(|b| &b[co0..co0 + cog]);
            gemm_core(
                kernel,
                rows,
                ASrc::Rows {
                    a: &x[ci0..],
                    lda: c_in,
                },
                pack,
                gb,
                res.map(|r| &r[co0..]),
                relu,
                &mut out[co0..],
                c_out,
            )?;
        }
        return Ok((oh, ow));
    }
    let ind = Indirection::new(geom, (h, w, c_in), ow, cig);
    let threads = rayon::current_num_threads();
    // Per-thread reused buffers (`crate::scratch`): no allocation per call once warm.
    let mut ptr_buf = Scratch::take(rows * ind.segs * std::mem::size_of::<usize>());
    let words = ptr_buf.slice::<usize>(rows * ind.segs);
    // SAFETY: `PtrCell` is a transparent `*const f32`, the size and alignment of `usize`; every
    // entry is written by `fill_row` before the GEMM reads it.
    let ptrs: &mut [PtrCell] =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len()) };
    // At least one float per output row so that every row gets a (possibly unused) chunk.
    let spr = ind.scratch_per_row.max(1);
    let mut scratch_buf = Scratch::take(batch * oh * spr * 4);
    let scratch = scratch_buf.slice::<f32>(batch * oh * spr);
    let mut zero_buf = Scratch::take(ind.seg * 4);
    let zeros: &[f32] = zero_buf.filled(ind.seg, 0.0);
    for (gi, pack) in wts.packs.iter().enumerate() {
        let (ci0, co0) = (gi * cig, gi * cog);
        let gb = bias.map(|b| &b[co0..co0 + cog]);
        let fill = |(bo, (p, s)): (usize, (&mut [PtrCell], &mut [f32]))| {
            ind.fill_row(x, zeros, ci0, bo / oh, bo % oh, p, s)
        };
        let row_ptrs = ow * ind.segs;
        if threads > 1 && batch * oh > 1 {
            ptrs.par_chunks_mut(row_ptrs)
                .zip(scratch.par_chunks_mut(spr))
                .enumerate()
                .for_each(fill);
        } else {
            ptrs.chunks_mut(row_ptrs)
                .zip(scratch.chunks_mut(spr))
                .enumerate()
                .for_each(fill);
        }
        // SAFETY: PtrCell is a transparent wrapper of `*const f32`.
        let raw: &[*const f32] =
            unsafe { std::slice::from_raw_parts(ptrs.as_ptr().cast(), ptrs.len()) };
        gemm_core(
            kernel,
            rows,
            ASrc::Segs {
                ptrs: raw,
                segs: ind.segs,
                seg: ind.seg,
            },
            pack,
            gb,
            res.map(|r| &r[co0..]),
            relu,
            &mut out[co0..],
            c_out,
        )?;
    }
    Ok((oh, ow))
}

/// A `*const f32` that may cross threads (indirection entries point into data that is only read).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PtrCell(*const f32);
// SAFETY: only used to fill the indirection buffer; the pointees are read-only during the call.
unsafe impl Send for PtrCell {}
unsafe impl Sync for PtrCell {}

/// Where one (output column, segment along x) reads, the same for every in-range input row.
#[derive(Clone, Copy)]
enum XCls {
    /// Entirely inside the row, starting at input column `ix0`.
    In(usize),
    /// Entirely in the horizontal padding.
    Zero,
    /// Partly in the padding: copied into scratch slot `slot`, first tap at column `ix0`.
    Border { slot: usize, ix0: isize },
}

/// How output pixels map to K segments (see [`conv2d_f32`]).
struct Indirection {
    geom: ConvGeometry,
    h: usize,
    w: usize,
    c_in: usize,
    cig: usize,
    /// Segments per output pixel, floats per segment.
    segs: usize,
    seg: usize,
    /// `[ox][segment along x]` classification (shared by all kernel rows).
    xcls: Vec<XCls>,
    /// Columns with a `Border` segment.
    nb: usize,
    /// Scratch floats per output row of pixels: `kh * nb * seg`.
    scratch_per_row: usize,
}

impl Indirection {
    fn new(geom: ConvGeometry, (h, w, c_in): (usize, usize, usize), ow: usize, cig: usize) -> Self {
        let (kh, kw) = geom.kernel;
        let merged = geom.groups == 1 && geom.dilation.1 == 1;
        let cols = if merged { kw } else { 1 };
        let gxn = kw / cols;
        let mut xcls = Vec::with_capacity(ow * gxn);
        let mut nb = 0;
        for ox in 0..ow {
            let mut slot = None;
            for gx in 0..gxn {
                let ix0 = (ox * geom.stride.1 + gx * cols * geom.dilation.1) as isize
                    - geom.pads[1] as isize;
                let ix1 = ix0 + ((cols - 1) * geom.dilation.1) as isize;
                xcls.push(if ix0 >= 0 && ix1 < w as isize {
                    XCls::In(ix0 as usize)
                } else if ix1 < 0 || ix0 >= w as isize {
                    XCls::Zero
                } else {
                    // Only possible with cols = kw (one segment per kernel row): gxn = 1.
                    let s = *slot.get_or_insert_with(|| {
                        nb += 1;
                        nb - 1
                    });
                    XCls::Border { slot: s, ix0 }
                });
            }
        }
        let seg = cols * cig;
        Indirection {
            geom,
            h,
            w,
            c_in,
            cig,
            segs: kh * gxn,
            seg,
            xcls,
            nb,
            scratch_per_row: kh * nb * seg,
        }
    }

    /// Fills the entries of output row `oy` of image `b` (`ow * segs` pointers) and its scratch.
    #[allow(clippy::too_many_arguments)]
    fn fill_row(
        &self,
        x: &[f32],
        zeros: &[f32],
        ci0: usize,
        b: usize,
        oy: usize,
        ptrs: &mut [PtrCell],
        scratch: &mut [f32],
    ) {
        let geom = self.geom;
        let kh = geom.kernel.0;
        let (h, w, c_in, cig, segs) = (self.h, self.w, self.c_in, self.cig, self.segs);
        let gxn = segs / kh;
        let z = zeros.as_ptr();
        for ky in 0..kh {
            let iy = (oy * geom.stride.0 + ky * geom.dilation.0) as isize - geom.pads[0] as isize;
            let entries = ptrs.chunks_exact_mut(segs).zip(self.xcls.chunks_exact(gxn));
            if iy < 0 || iy as usize >= h {
                for (e, _) in entries {
                    e[ky * gxn..(ky + 1) * gxn].fill(PtrCell(z));
                }
                continue;
            }
            let row = &x[(b * h + iy as usize) * w * c_in..][..w * c_in];
            let rp = row[ci0..].as_ptr();
            for (e, cls) in entries {
                for (d, c) in e[ky * gxn..(ky + 1) * gxn].iter_mut().zip(cls) {
                    d.0 = match *c {
                        // In bounds: ix0 + taps <= w, checked when classified.
                        XCls::In(ix0) => rp.wrapping_add(ix0 * c_in),
                        XCls::Zero => z,
                        XCls::Border { slot, ix0 } => {
                            let dst = &mut scratch[(ky * self.nb + slot) * self.seg..][..self.seg];
                            for (kx, dd) in dst.chunks_exact_mut(cig).enumerate() {
                                let ix = ix0 + kx as isize;
                                if ix >= 0 && (ix as usize) < w {
                                    let s = ix as usize * c_in + ci0;
                                    dd.copy_from_slice(&row[s..s + cig]);
                                } else {
                                    dd.fill(0.0);
                                }
                            }
                            dst.as_ptr()
                        }
                    };
                }
            }
        }
    }
}
