//! fp32 3x3 stride-1 convolution by Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016): each 2x2 block of outputs ("tile") comes from a 4x4
//! input patch with 16 multiplications per (c_in, c_out) pair instead of 36, i.e. 2.25x fewer
//! multiply-adds. Owns the transforms and their blocking only; the 16 products are GEMMs on the
//! fp32 driver ([`crate::gemm_f32`]).
//!
//! ```text
//! U = G g G^T      (weights, once: 4x4 per (c_out, c_in))   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
//! V = B^T d B      (each 4x4 input patch, per channel)      B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//! M[xi] = V[xi] . U[xi]   for the 16 positions xi: (tiles x c_in) . (c_in x c_out)
//! Y = A^T M A      (2x2 outputs per tile)                   A^T = [1 1 1 0; 0 1 -1 -1]
//! ```
//! Tiles go in blocks sized so a block's V and M (16 x tiles x channels each) stay in L2: input
//! transform, 16 GEMMs, output transform (+ bias, + residual, ReLU: the direct path's order) per
//! block; blocks are independent, split over the pool. The result differs from the direct
//! convolution by rounding only (the transforms add and subtract, G has halves), and does not
//! depend on the thread count. Used for channel counts that are multiples of 16 up to 128
//! (ResNet's 56x56 and 28x28 layers), where the transforms' memory traffic stays below the
//! multiply-adds they save; with AVX-512 (16 channels per vector).

use crate::error::{bad, KernelError};
use crate::gemm_f32::{gemm_core_on, ASrc, PackedBF32};
use crate::isa::{Isa, Kernel};
use crate::scratch::Scratch;
use crate::WeightLayout;

/// Transformed weights: the 16 matrices `U[xi]` (c_in x c_out), packed for the fp32 GEMM.
#[derive(Debug)]
pub(crate) struct WinogradF32 {
    c_in: usize,
    c_out: usize,
    u: Vec<PackedBF32>,
}

/// Whether [`WinogradF32`] serves a convolution of this shape (3x3, stride 1, no dilation,
/// padding 1, one group, channels multiples of 16 up to 128). `OCTET_WINOGRAD=0` turns it off
/// (the direct path then runs every convolution; for comparisons).
pub(crate) fn eligible(geom: &crate::conv::ConvGeometry, c_in: usize, c_out: usize) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("OCTET_WINOGRAD").is_ok_and(|v| v == "0"));
    !off && geom.kernel == (3, 3)
        && geom.stride == (1, 1)
        && geom.dilation == (1, 1)
        && geom.pads == [1; 4]
        && geom.groups == 1
        && (16..=256).contains(&c_in)
        && (16..=256).contains(&c_out)
        && c_in.is_multiple_of(16)
        && c_out.is_multiple_of(16)
}

impl WinogradF32 {
    /// From OHWI weights `[c_out][3][3][c_in]`.
    pub(crate) fn new(c_in: usize, c_out: usize, w: &[f32]) -> Result<Self, KernelError> {
        if w.len() != c_out * 9 * c_in {
            return Err(bad("winograd: weights are not c_out x 3 x 3 x c_in"));
        }
        let mut u = vec![vec![0f32; c_in * c_out]; 16];
        for co in 0..c_out {
            for ci in 0..c_in {
                let g = |ky: usize, kx: usize| w[(co * 9 + ky * 3 + kx) * c_in + ci];
                // G g (4x3), then (G g) G^T (4x4).
                let col = |kx: usize| {
                    let (g0, g1, g2) = (g(0, kx), g(1, kx), g(2, kx));
                    [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
                };
                let (c0, c1, c2) = (col(0), col(1), col(2));
                let gg: [[f32; 3]; 4] = std::array::from_fn(|i| [c0[i], c1[i], c2[i]]);
                for (i, r) in gg.iter().enumerate() {
                    let t = [
                        r[0],
                        0.5 * (r[0] + r[1] + r[2]),
                        0.5 * (r[0] - r[1] + r[2]),
                        r[2],
                    ];
                    for (j, v) in t.into_iter().enumerate() {
                        u[4 * i + j][ci * c_out + co] = v;
                    }
                }
            }
        }
        let u = u
            .iter()
            .map(|m| PackedBF32::new(c_in, c_out, m, WeightLayout::KxN))
            .collect::<Result<_, _>>()?;
        Ok(WinogradF32 { c_in, c_out, u })
    }

    /// Whether this kernel runs the Winograd path (AVX-512: 16 channels per vector).
    pub(crate) fn runs_on(kernel: &Kernel) -> bool {
        matches!(kernel.isa(), Isa::Avx512 | Isa::Avx512Vnni)
    }
}

/// `out = act(conv3x3(x) + bias + res)`, NHWC in and out, padding 1, output `h x w`. The caller
/// validated the sizes (as for the direct path) and that [`WinogradF32::runs_on`] `kernel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3_winograd_f32(
    kernel: &Kernel,
    x: &[f32],
    (batch, h, w): (usize, usize, usize),
    wts: &WinogradF32,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (c_in, c_out) = (wts.c_in, wts.c_out);
    if !WinogradF32::runs_on(kernel)
        || x.len() < batch * h * w * c_in
        || out.len() < batch * h * w * c_out
        || res.is_some_and(|r| r.len() < batch * h * w * c_out)
        || bias.is_some_and(|b| b.len() != c_out)
    {
        return Err(bad("winograd: inconsistent arguments"));
    }
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = batch * th * tw;
    if tiles == 0 {
        return Ok(());
    }
    // V and M of a block: 16 x block x (c_in + c_out) floats, about 640 KiB.
    let block = (10240 / (c_in + c_out)).max(6) / 6 * 6;
    let nblocks = tiles.div_ceil(block);
    let geo = Geo {
        h,
        w,
        th,
        tw,
        c_in,
        c_out,
    };
    let outp = SendPtr(out.as_mut_ptr());
    let run = |bi: usize| -> Result<(), KernelError> {
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its field
        let outp = outp;
        let t0 = bi * block;
        let nt = block.min(tiles - t0);
        let mut vbuf = Scratch::take(16 * nt * c_in * 4);
        let v = vbuf.slice::<f32>(16 * nt * c_in);
        let mut mbuf = Scratch::take(16 * nt * c_out * 4);
        let m = mbuf.slice::<f32>(16 * nt * c_out);
        // SAFETY: AVX-512 F is supported (runs_on); `x` holds the whole input (checked above).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::input_transform(&geo, x, t0, nt, v)
        };
        for xi in 0..16 {
            gemm_core_on(
                kernel,
                nt,
                ASrc::Rows {
                    a: &v[xi * nt * c_in..(xi + 1) * nt * c_in],
                    lda: c_in,
                },
                &wts.u[xi],
                None,
                None,
                false,
                &mut m[xi * nt * c_out..(xi + 1) * nt * c_out],
                c_out,
                1,
            )?;
        }
        // SAFETY: as above; the block's tiles write disjoint output pixels, all inside `out`
        // (checked above), and read `res` at the same pixels.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::output_transform(
                &geo,
                m,
                t0,
                nt,
                bias.map_or(std::ptr::null(), |b| b.as_ptr()),
                res.map_or(std::ptr::null(), |r| r.as_ptr()),
                relu,
                outp.0,
            )
        };
        Ok(())
    };
    if rayon::current_num_threads() > 1 && nblocks > 1 {
        use rayon::prelude::*;
        (0..nblocks).into_par_iter().try_for_each(run)
    } else {
        (0..nblocks).try_for_each(run)
    }
}

/// Image and tile grid of a call.
struct Geo {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    c_in: usize,
    c_out: usize,
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: blocks write disjoint output pixels.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Geo;
    use std::arch::x86_64::*;

    /// `V[xi][t][c] = (B^T d B)[xi]` for the block's tiles `t0 .. t0 + nt` (rows of 16
    /// channels; taps outside the image are 0).
    ///
    /// SAFETY: AVX-512 F; `x` holds `batch x h x w x c_in` floats; `v` holds 16 x nt x c_in.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_transform(g: &Geo, x: &[f32], t0: usize, nt: usize, v: &mut [f32]) {
        let (ci, xp, vp) = (g.c_in, x.as_ptr(), v.as_mut_ptr());
        let z = _mm512_setzero_ps();
        for t in 0..nt {
            let tile = t0 + t;
            let (b, ty, tx) = (tile / (g.th * g.tw), (tile / g.tw) % g.th, tile % g.tw);
            let (iy0, ix0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
            let inside = iy0 >= 0 && ix0 >= 0 && iy0 as usize + 4 <= g.h && ix0 as usize + 4 <= g.w;
            for c in (0..ci).step_by(16) {
                let mut d = [[z; 4]; 4];
                for (r, dr) in d.iter_mut().enumerate() {
                    let iy = iy0 + r as isize;
                    for (q, dq) in dr.iter_mut().enumerate() {
                        let ix = ix0 + q as isize;
                        if inside
                            || (iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w)
                        {
                            let off = ((b * g.h + iy as usize) * g.w + ix as usize) * ci + c;
                            *dq = _mm512_loadu_ps(xp.add(off));
                        }
                    }
                }
                // B^T d: rows.
                let mut s = [[z; 4]; 4];
                for q in 0..4 {
                    s[0][q] = _mm512_sub_ps(d[0][q], d[2][q]);
                    s[1][q] = _mm512_add_ps(d[1][q], d[2][q]);
                    s[2][q] = _mm512_sub_ps(d[2][q], d[1][q]);
                    s[3][q] = _mm512_sub_ps(d[1][q], d[3][q]);
                }
                // (B^T d) B: columns.
                for (i, si) in s.iter().enumerate() {
                    let vals = [
                        _mm512_sub_ps(si[0], si[2]),
                        _mm512_add_ps(si[1], si[2]),
                        _mm512_sub_ps(si[2], si[1]),
                        _mm512_sub_ps(si[1], si[3]),
                    ];
                    for (j, val) in vals.into_iter().enumerate() {
                        _mm512_storeu_ps(vp.add(((4 * i + j) * nt + t) * ci + c), val);
                    }
                }
            }
        }
    }

    /// `out = act(A^T M A + bias + res)` for the block's tiles (pixels inside the image only).
    ///
    /// SAFETY: AVX-512 F; `m` holds 16 x nt x c_out; `out` (and `res` unless null) hold the
    /// whole output; `bias` null or c_out floats.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_transform(
        g: &Geo,
        m: &[f32],
        t0: usize,
        nt: usize,
        bias: *const f32,
        res: *const f32,
        relu: bool,
        out: *mut f32,
    ) {
        let (co, mp) = (g.c_out, m.as_ptr());
        let z = _mm512_setzero_ps();
        for t in 0..nt {
            let tile = t0 + t;
            let (b, ty, tx) = (tile / (g.th * g.tw), (tile / g.tw) % g.th, tile % g.tw);
            for c in (0..co).step_by(16) {
                let at = |xi: usize| _mm512_loadu_ps(mp.add((xi * nt + t) * co + c));
                // M A: per row i, the two columns.
                let mut s = [[z; 2]; 4];
                for (i, si) in s.iter_mut().enumerate() {
                    let (m0, m1, m2, m3) = (at(4 * i), at(4 * i + 1), at(4 * i + 2), at(4 * i + 3));
                    si[0] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    si[1] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                let bv = if bias.is_null() {
                    z
                } else {
                    _mm512_loadu_ps(bias.add(c))
                };
                for a in 0..2 {
                    let oy = 2 * ty + a;
                    if oy >= g.h {
                        break;
                    }
                    // The two columns of M A.
                    let cols = [0, 1].map(|q| [s[0][q], s[1][q], s[2][q], s[3][q]]);
                    for (q, &[s0, s1, s2, s3]) in cols.iter().enumerate() {
                        let ox = 2 * tx + q;
                        if ox >= g.w {
                            break;
                        }
                        // A^T (M A): rows.
                        let y = if a == 0 {
                            _mm512_add_ps(_mm512_add_ps(s0, s1), s2)
                        } else {
                            _mm512_sub_ps(_mm512_sub_ps(s1, s2), s3)
                        };
                        let off = ((b * g.h + oy) * g.w + ox) * co + c;
                        let mut y = _mm512_add_ps(y, bv);
                        if !res.is_null() {
                            y = _mm512_add_ps(y, _mm512_loadu_ps(res.add(off)));
                        }
                        if relu {
                            y = _mm512_max_ps(y, z);
                        }
                        _mm512_storeu_ps(out.add(off), y);
                    }
                }
            }
        }
    }
}
