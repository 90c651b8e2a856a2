//! bf16 convolution, NHWC f32 activations with OHWI f32 weights, lowered to the bf16 GEMM
//! (`gemm_bf16.rs`): the input is converted to bf16 once per call, then 1x1 stride-1 layers with
//! an even channel count per group read it in place, other layers with an even channel count
//! per group are read through an indirection buffer (offset of each output pixel's input
//! segment per tap, padding taps pointing at a zero segment), and odd channel counts go through
//! a bf16 im2col in row chunks; one GEMM per group. Owns the bf16 lowering only.
//!
//! K order (what the bit-exact reference must follow): `(ky, kx, c)` with padding taps as +0,
//! K padded to even with +0, summed in pairs from +0 as `gemm_bf16` does.

use crate::bf16::convert_slice;
use crate::conv::ConvGeometry;
use crate::error::{bad, KernelError};
use crate::gemm_bf16::{gemm_core, ASrc, PackedBBf16};
use crate::isa::Kernel;
use crate::WeightLayout;
use rayon::prelude::*;

/// bf16 convolution weights (converted from f32 and packed once) for [`conv2d_bf16`].
#[derive(Debug)]
pub struct PackedConvBf16 {
    geom: ConvGeometry,
    c_in: usize,
    c_out: usize,
    packs: Vec<PackedBBf16>,
}

impl PackedConvBf16 {
    /// Converts (round to nearest even) and packs OHWI weights `[c_out][kh][kw][c_in / groups]`.
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
                "conv_bf16: c_in {c_in} and c_out {c_out} must be positive multiples of groups {g}"
            )));
        }
        let kk = geom
            .kernel
            .0
            .checked_mul(geom.kernel.1)
            .and_then(|t| t.checked_mul(c_in / g))
            .ok_or_else(|| bad("conv_bf16: kernel size overflows usize"))?;
        let cog = c_out / g;
        if Some(weights.len()) != c_out.checked_mul(kk) {
            return Err(bad(format!(
                "conv_bf16: weights have {} elements, expected {c_out}*{kk}",
                weights.len(),
            )));
        }
        let packs = (0..g)
            .map(|gi| {
                PackedBBf16::new(
                    kk,
                    cog,
                    &weights[gi * cog * kk..(gi + 1) * cog * kk],
                    WeightLayout::NxK,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(PackedConvBf16 {
            geom,
            c_in,
            c_out,
            packs,
        })
    }
}

/// bf16 convolution: NHWC f32 input `batch x h x w x c_in`, NHWC f32 output
/// `batch x out_h x out_w x c_out`, optional bias and ReLU, inputs and weights rounded to bf16,
/// sums as [`crate::gemm_bf16`]. Padding reads 0. Returns (out_h, out_w).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bf16(
    kernel: &Kernel,
    x: &[f32],
    (batch, h, w): (usize, usize, usize),
    wts: &PackedConvBf16,
    bias: Option<&[f32]>,
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
        .ok_or_else(|| bad("conv_bf16: input size overflows usize"))?;
    if x.len() < in_len {
        return Err(bad(format!(
            "conv_bf16: input has {} elements, needs {in_len}",
            x.len()
        )));
    }
    let rows = batch
        .checked_mul(oh * ow)
        .ok_or_else(|| bad("conv_bf16: output size overflows usize"))?;
    if rows.checked_mul(c_out).is_none_or(|need| out.len() < need) {
        return Err(bad(format!(
            "conv_bf16: output has {} elements, needs {rows}*{c_out}",
            out.len()
        )));
    }
    if let Some(b) = bias {
        if b.len() != c_out {
            return Err(bad(format!(
                "conv_bf16: bias has {} values, c_out = {c_out}",
                b.len()
            )));
        }
    }
    if rows == 0 {
        return Ok((oh, ow));
    }
    let threads = rayon::current_num_threads();
    let g = geom.groups;
    let (cig, cog) = (c_in / g, c_out / g);
    // The whole input to bf16, once (element-wise, so converting before gathering is the same),
    // followed by one segment of zeros that padding taps point at.
    let mut xb = vec![0u16; in_len + cig];
    const CONV_CHUNK: usize = 1 << 16;
    if threads > 1 && in_len > CONV_CHUNK {
        xb[..in_len]
            .par_chunks_mut(CONV_CHUNK)
            .zip(x[..in_len].par_chunks(CONV_CHUNK))
            .for_each(|(d, s)| convert_slice(kernel, s, d));
    } else {
        convert_slice(kernel, &x[..in_len], &mut xb[..in_len]);
    }

    let (kh, kw) = geom.kernel;
    let kk = kh * kw * cig;
    let k2 = kk.div_ceil(2) * 2;
    let pointwise = geom.kernel == (1, 1) && geom.stride == (1, 1) && geom.pads == [0; 4];
    // In place needs each row's pair reads to stay inside the group's channels.
    let in_place = pointwise && cig.is_multiple_of(2);
    // With an even channel count per group, pairs never straddle two taps: the GEMM follows an
    // indirection buffer (per output pixel and tap, the offset of its input segment) instead
    // of an im2col copy.
    let indirect = !in_place && cig.is_multiple_of(2);
    let taps = kh * kw;
    let chunk = if indirect { 8192 } else { 1024 }.min(rows);
    // Zero-initialised: when K is odd the pad value at index kk stays +0 in every row.
    let mut buf = if in_place || indirect {
        Vec::new()
    } else {
        vec![0u16; chunk * k2]
    };
    let mut offs = if indirect {
        vec![0usize; chunk * taps]
    } else {
        Vec::new()
    };
    for (gi, pack) in wts.packs.iter().enumerate() {
        let (ci0, co0) = (gi * cig, gi * cog);
        let gb = bias.map(|b| &b[co0..co0 + cog]);
        if indirect {
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + chunk).min(rows);
                let fill = |(ri, dst): (usize, &mut [usize])| {
                    let r = r0 + ri;
                    let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
                    for ky in 0..kh {
                        let iy = (oy * geom.stride.0 + ky * geom.dilation.0) as isize
                            - geom.pads[0] as isize;
                        for kx in 0..kw {
                            let ix = (ox * geom.stride.1 + kx * geom.dilation.1) as isize
                                - geom.pads[1] as isize;
                            dst[ky * kw + kx] =
                                if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                                    ((b * h + iy as usize) * w + ix as usize) * c_in + ci0
                                } else {
                                    in_len
                                };
                        }
                    }
                };
                let part = &mut offs[..(r1 - r0) * taps];
                if threads > 1 {
                    part.par_chunks_mut(taps)
                        .with_min_len(256)
                        .enumerate()
                        .for_each(fill);
                } else {
                    part.chunks_mut(taps).enumerate().for_each(fill);
                }
                gemm_core(
                    kernel,
                    r1 - r0,
                    ASrc::Segments {
                        data: &xb,
                        offs: &offs[..(r1 - r0) * taps],
                        taps,
                        seg: cig,
                    },
                    pack,
                    gb,
                    relu,
                    &mut out[r0 * c_out + co0..],
                    c_out,
                )?;
                r0 = r1;
            }
            continue;
        }
        if in_place {
            gemm_core(
                kernel,
                rows,
                ASrc::Bf16(&xb[ci0..], c_in),
                pack,
                gb,
                relu,
                &mut out[co0..],
                c_out,
            )?;
            continue;
        }
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + chunk).min(rows);
            let gather = |(ri, dst): (usize, &mut [u16])| {
                let r = r0 + ri;
                let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
                let mut col = 0;
                for ky in 0..kh {
                    let iy = (oy * geom.stride.0 + ky * geom.dilation.0) as isize
                        - geom.pads[0] as isize;
                    for kx in 0..kw {
                        let ix = (ox * geom.stride.1 + kx * geom.dilation.1) as isize
                            - geom.pads[1] as isize;
                        let d = &mut dst[col..col + cig];
                        if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                            let s = ((b * h + iy as usize) * w + ix as usize) * c_in + ci0;
                            d.copy_from_slice(&xb[s..s + cig]);
                        } else {
                            d.fill(0);
                        }
                        col += cig;
                    }
                }
            };
            let part = &mut buf[..(r1 - r0) * k2];
            if threads > 1 {
                part.par_chunks_mut(k2)
                    .with_min_len(64)
                    .enumerate()
                    .for_each(gather);
            } else {
                part.chunks_mut(k2).enumerate().for_each(gather);
            }
            gemm_core(
                kernel,
                r1 - r0,
                ASrc::Bf16(&buf[..(r1 - r0) * k2], k2),
                pack,
                gb,
                relu,
                &mut out[r0 * c_out + co0..],
                c_out,
            )?;
            r0 = r1;
        }
    }
    Ok((oh, ow))
}
