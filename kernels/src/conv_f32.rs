//! fp32 convolution, NHWC with OHWI weights, lowered to [`crate::gemm_f32`] (1x1 stride 1 in
//! place; otherwise im2col in row chunks; one GEMM per group). Owns the fp32 lowering only.

use crate::conv::ConvGeometry;
use crate::error::{bad, KernelError};
use crate::gemm_f32::{gemm_f32, PackedBF32};
use crate::isa::Kernel;
use crate::WeightLayout;

/// fp32 convolution weights prepacked once for [`conv2d_f32`].
#[derive(Debug)]
pub struct PackedConvF32 {
    geom: ConvGeometry,
    c_in: usize,
    c_out: usize,
    packs: Vec<PackedBF32>,
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
        Ok(PackedConvF32 {
            geom,
            c_in,
            c_out,
            packs,
        })
    }
}

/// fp32 convolution: NHWC input `batch x h x w x c_in`, NHWC output, optional bias and ReLU.
/// Padding reads 0. Returns (out_h, out_w).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_f32(
    kernel: &Kernel,
    x: &[f32],
    (batch, h, w): (usize, usize, usize),
    wts: &PackedConvF32,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) -> Result<(usize, usize), KernelError> {
    let geom = wts.geom;
    let (oh, ow) = geom.out_size(h, w)?;
    let (c_in, c_out) = (wts.c_in, wts.c_out);
    if x.len() < batch * h * w * c_in {
        return Err(bad(format!(
            "conv_f32: input has {} elements, needs {}",
            x.len(),
            batch * h * w * c_in
        )));
    }
    let rows = batch * oh * ow;
    if out.len() < rows * c_out {
        return Err(bad(format!(
            "conv_f32: output has {} elements, needs {}",
            out.len(),
            rows * c_out
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
    if rows == 0 {
        return Ok((oh, ow));
    }
    let g = geom.groups;
    let (cig, cog) = (c_in / g, c_out / g);
    let (kh, kw) = geom.kernel;
    let kk = kh * kw * cig;
    let pointwise = geom.kernel == (1, 1) && geom.stride == (1, 1) && geom.pads == [0; 4];
    let chunk = 1024.min(rows);
    let mut buf = if pointwise {
        Vec::new()
    } else {
        vec![0f32; chunk * kk]
    };
    for (gi, pack) in wts.packs.iter().enumerate() {
        let (ci0, co0) = (gi * cig, gi * cog);
        let gb = bias.map(|b| &b[co0..co0 + cog]);
        if pointwise {
            gemm_f32(
                kernel,
                rows,
                &x[ci0..],
                c_in,
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
            for r in r0..r1 {
                let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
                let dst = &mut buf[(r - r0) * kk..(r - r0 + 1) * kk];
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
                            d.copy_from_slice(&x[s..s + cig]);
                        } else {
                            d.fill(0.0);
                        }
                        col += cig;
                    }
                }
            }
            gemm_f32(
                kernel,
                r1 - r0,
                &buf[..(r1 - r0) * kk],
                kk,
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
