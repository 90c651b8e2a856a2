//! Depthwise int8 convolution (groups == C_in == C_out), NHWC: channels in SIMD lanes, taps in
//! the inner loop, exact int32 accumulation `sum (x - zx) * (w - zw)` on every ISA (no 16-bit
//! intermediate, so no saturation), then the GEMM epilogue. Owns only this kernel.
//!
//! 3x3 kernels with horizontal stride 1 or 2 and no horizontal dilation take a faster path on
//! AVX-512 VNNI when every `w - zw` fits in int8 (always with symmetric weights): each input
//! column's three kernel-row bytes are gathered into one dword per channel (`vpshufb` from a
//! 16-byte broadcast), once per column, and `vpdpbusd` against the dwords `[w(0,kx), w(1,kx),
//! w(2,kx), 0]` adds a whole kernel column of one pixel, so a pixel is 3 multiply-adds instead of
//! 9 and every column is converted once for all the pixels of a block that read it. Padding taps
//! read the input zero point (a zero-point buffer stands in for rows and columns outside the
//! image), so every pixel takes the same code and the zero-point correction `zx * sum(w - zw)`
//! is one per-channel constant folded into the epilogue's bias. Still exact: `vpdpbusd` (not the
//! saturating `vpdpbusds`) adds its four u8 x s8 products, each exact in 16 bits, in int32. With
//! stride 1 and no dilation, output rows go in pairs: the four input rows of rows `oy, oy + 1`
//! are gathered into one dword per channel, used with `[w0, w1, w2, 0]` for row `oy` and
//! `[0, w0, w1, w2]` for row `oy + 1`. Pixels go in blocks of 8 (`x86::P`), whose accumulators
//! and gathered columns stay in zmm registers.

use crate::conv::{ConvGeometry, TensorU8};
use crate::error::{bad, KernelError};
use crate::gemm_u8s8::{epilogue_row, validate_epilogue, EpiPlan, Epilogue, OutPtr, OutputSlice};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

/// Depthwise weights as int32 `(w - zw)`, layout `[ky][kx][c]`.
pub(crate) struct DepthwiseWeights {
    kh: usize,
    kw: usize,
    c: usize,
    w: Vec<i32>,
    /// `(w - zw)` as the low 16 bits of each int32 lane, high half zero: `vpmaddwd` / `vpdpwssd`
    /// against a sign-extended `x` lane then yield exactly `x * (w - zw)`.
    w16: Vec<i32>,
    /// Per kernel row `ky` and channel: `sum_kx (w - zw)`, for the zero-point correction.
    wrow: Vec<i32>,
    /// 3x3 only, when every `(w - zw)` fits in int8: layout `[kx][c]`, dword bytes
    /// `[w(0,kx) - zw, w(1,kx) - zw, w(2,kx) - zw, 0]` (the `vpdpbusd` operand of the fast path).
    w8: Option<Vec<i32>>,
    /// Per channel: `sum over all taps of (w - zw)` (the fast path's zero-point correction).
    wsum: Vec<i32>,
}

impl DepthwiseWeights {
    /// From OHWI weights with I = 1: `[c][kh][kw][1]`.
    pub(crate) fn new(
        kh: usize,
        kw: usize,
        c: usize,
        weights: &[i8],
        zw: i32,
    ) -> Result<Self, KernelError> {
        if weights.len() != c * kh * kw {
            return Err(bad(format!(
                "depthwise: weights have {} elements, expected {}",
                weights.len(),
                c * kh * kw
            )));
        }
        if !(-128..=127).contains(&zw) {
            return Err(bad(format!(
                "depthwise: weight zero point {zw} outside [-128, 127]"
            )));
        }
        let mut w = vec![0i32; c * kh * kw];
        for ch in 0..c {
            for t in 0..kh * kw {
                w[t * c + ch] = weights[ch * kh * kw + t] as i32 - zw;
            }
        }
        let w16 = w.iter().map(|&v| (v as i16 as u16) as i32).collect();
        let mut wrow = vec![0i32; kh * c];
        for ky in 0..kh {
            for kx in 0..kw {
                for ch in 0..c {
                    wrow[ky * c + ch] += w[(ky * kw + kx) * c + ch];
                }
            }
        }
        let mut wsum = vec![0i32; c];
        for ky in 0..kh {
            for ch in 0..c {
                wsum[ch] += wrow[ky * c + ch];
            }
        }
        let fits = w.iter().all(|&v| (-128..=127).contains(&v));
        let w8 = (kh == 3 && kw == 3 && fits).then(|| {
            let mut w8 = vec![0i32; 3 * c];
            for kx in 0..3 {
                for ch in 0..c {
                    let b = |ky: usize| (w[(ky * 3 + kx) * c + ch] as i8 as u8) as u32;
                    w8[kx * c + ch] = (b(0) | b(1) << 8 | b(2) << 16) as i32;
                }
            }
            w8
        });
        Ok(DepthwiseWeights {
            kh,
            kw,
            c,
            w,
            w16,
            wrow,
            w8,
            wsum,
        })
    }
}

#[derive(Clone, Copy)]
struct SendPtr(OutPtr);
// SAFETY: each output row (b, oy) is written by exactly one task (a row or a pair of rows).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

pub(crate) fn depthwise_u8s8(
    kernel: &Kernel,
    x: TensorU8<'_>,
    dw: &DepthwiseWeights,
    geom: ConvGeometry,
    (oh, ow): (usize, usize),
    ep: &Epilogue<'_>,
    mut out: OutputSlice<'_>,
) -> Result<(), KernelError> {
    let c = dw.c;
    let (scale, lo, hi) = validate_epilogue("depthwise conv", ep, c, &out)?;
    if !(0..=255).contains(&x.zero_point) {
        return Err(bad(format!(
            "depthwise: input zero point {} outside [0, 255]",
            x.zero_point
        )));
    }
    let isa = kernel.isa();
    // The 3x3 VNNI fast path (see the module doc): horizontal stride 1 or 2, no horizontal
    // dilation, int8 weights; its zero-point correction goes into the bias.
    let fast3 = isa == Isa::Avx512Vnni
        && dw.w8.is_some()
        && geom.dilation.1 == 1
        && matches!(geom.stride.1, 1 | 2);
    let pair = fast3 && geom.stride == (1, 1) && geom.dilation.0 == 1;
    let mut colterm = match ep.bias {
        Some(b) => crate::scratch::ScratchVec::copy_of(b),
        None => crate::scratch::ScratchVec::filled(c, 0),
    };
    if fast3 {
        for (t, &s) in colterm.iter_mut().zip(&dw.wsum) {
            *t = t.wrapping_sub(x.zero_point.wrapping_mul(s));
        }
    }
    let plan = EpiPlan {
        colterm: &colterm,
        scale: &scale,
        fbias: ep.f32_bias,
        zp: ep.out_zero_point,
        lo,
        hi,
        res: None,
        small_scale: crate::gemm_u8s8::epilogue::small_scale(&scale),
        acc_has_colterm: false,
        fast: [0; 2],
    };
    let outp = SendPtr(out.ptr());
    let (kh, kw) = (dw.kh, dw.kw);
    let args = RowArgs {
        x,
        w: dw.w.as_ptr(),
        w16: dw.w16.as_ptr(),
        wrow: dw.wrow.as_ptr(),
        w8: dw.w8.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
        fast3,
        pair,
        c,
        kh,
        kw,
        geom,
        oh,
        ow,
    };
    // Per-worker scratch: one row of accumulators (the AVX-512 row kernel uses ow * c, the
    // others c) and the tap list, allocated once per worker, not per row.
    let init = || {
        (
            crate::scratch::Scratch::take(c * ow * 4),
            Vec::<(usize, usize)>::with_capacity(kh * kw),
        )
    };
    let row_task = |scratch: &mut (crate::scratch::Scratch, Vec<(usize, usize)>), row: usize| {
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw-pointer field
        let outp = outp;
        // SAFETY: the Kernel proves `isa`; RowArgs describes checked buffers (see dw_row_body).
        unsafe {
            dw_row(
                isa,
                &args,
                &plan,
                row,
                scratch.0.slice::<i32>(c * ow),
                &mut scratch.1,
                outp.0,
            )
        };
    };
    // Tasks: output rows, or pairs of output rows (the last one of an odd `oh` alone).
    let tasks = x.batch * if pair { oh.div_ceil(2) } else { oh };
    if rayon::current_num_threads() > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each_init(init, row_task);
    } else {
        let mut scratch = init();
        (0..tasks).for_each(|r| row_task(&mut scratch, r));
    }
    Ok(())
}

struct RowArgs<'a> {
    x: TensorU8<'a>,
    w: *const i32,
    w16: *const i32,
    wrow: *const i32,
    /// `DepthwiseWeights::w8`, valid when `fast3`.
    w8: *const i32,
    /// Take the 3x3 VNNI path (`x86::dw3x3_row_vnni`).
    fast3: bool,
    /// `fast3` with stride 1 and no dilation vertically and horizontally: tasks are pairs of
    /// output rows sharing one gather of their four input rows.
    pair: bool,
    c: usize,
    kh: usize,
    kw: usize,
    geom: ConvGeometry,
    oh: usize,
    ow: usize,
}
// SAFETY: read-only views shared by the row tasks.
unsafe impl Sync for RowArgs<'_> {}

/// One output row (b, oy): taps of each pixel, exact int32 accumulation, fused epilogue.
///
/// # Safety
/// Input length checked by the caller (`conv2d_u8s8`), `acc` has `c` elements, the output holds
/// `batch * oh * ow * c` elements, `isa` is supported.
#[inline(always)]
unsafe fn dw_row_body(
    isa: Isa,
    a: &RowArgs,
    plan: &EpiPlan,
    row: usize,
    acc: &mut [i32],
    taps: &mut Vec<(usize, usize)>,
    out: OutPtr,
) {
    let (x, c) = (a.x, a.c);
    let b = row / a.oh;
    let oy = row % a.oh;
    let (sh, sw) = a.geom.stride;
    let (dh, dw) = a.geom.dilation;
    for ox in 0..a.ow {
        taps.clear();
        for ky in 0..a.kh {
            let iy = (oy * sh + ky * dh) as isize - a.geom.pads[0] as isize;
            if iy < 0 || iy as usize >= x.h {
                continue;
            }
            for kx in 0..a.kw {
                let ix = (ox * sw + kx * dw) as isize - a.geom.pads[1] as isize;
                if ix < 0 || ix as usize >= x.w {
                    continue;
                }
                taps.push((
                    ky * a.kw + kx,
                    ((b * x.h + iy as usize) * x.w + ix as usize) * c,
                ));
            }
        }
        // Skipped (padding) taps read the zero point: (zx - zx) * w = 0, so they add nothing.
        accumulate(
            isa,
            c,
            taps,
            x.data.as_ptr(),
            a.w,
            x.zero_point,
            acc.as_mut_ptr(),
        );
        epilogue_row(
            isa,
            plan,
            acc.as_ptr(),
            0,
            0,
            c,
            out.add((row * a.ow + ox) * c),
        );
    }
}

/// Per-ISA instantiations of `dw_row_body`, so the tap loop, accumulation and epilogue inline
/// into one function with the ISA's features. `row` is the task index: the output row
/// `b * oh + oy`, except on the 3x3 VNNI path with `a.pair` (see `x86::dw3x3_row_vnni`).
unsafe fn dw_row(
    isa: Isa,
    a: &RowArgs,
    plan: &EpiPlan,
    row: usize,
    acc: &mut [i32],
    taps: &mut Vec<(usize, usize)>,
    out: OutPtr,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn w256(
            a: &RowArgs,
            plan: &EpiPlan,
            row: usize,
            acc: &mut [i32],
            taps: &mut Vec<(usize, usize)>,
            out: OutPtr,
        ) {
            dw_row_body(Isa::Avx2, a, plan, row, acc, taps, out)
        }
        match isa {
            Isa::Avx512 => return x86::dw_row_avx512(a, plan, row, acc, out),
            Isa::Avx512Vnni if a.fast3 => return x86::dw3x3_row_vnni(a, plan, row, out),
            Isa::Avx512Vnni => return x86::dw_row_vnni(a, plan, row, acc, out),
            Isa::Avx2 => return w256(a, plan, row, acc, taps, out),
            Isa::Scalar => {}
        }
    }
    dw_row_body(Isa::Scalar, a, plan, row, acc, taps, out)
}

/// acc[ch] = sum over taps of (x[off + ch] - zx) * w[tap * c + ch].
#[inline(always)]
unsafe fn accumulate(
    isa: Isa,
    c: usize,
    taps: &[(usize, usize)],
    x: *const u8,
    w: *const i32,
    zx: i32,
    acc: *mut i32,
) {
    let done = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => x86::acc_avx512(c, taps, x, w, zx, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::acc_avx2(c, taps, x, w, zx, acc),
        _ => 0,
    };
    for ch in done..c {
        let mut s = 0i32;
        for &(t, off) in taps {
            s = s.wrapping_add((*x.add(off + ch) as i32 - zx).wrapping_mul(*w.add(t * c + ch)));
        }
        *acc.add(ch) = s;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::RowArgs;
    use crate::gemm_u8s8::epilogue::x86::vec16;
    use crate::gemm_u8s8::{EpiPlan, OutPtr};
    use std::arch::x86_64::*;

    /// A whole output row on AVX-512: channel blocks of 16 outer, pixels inner, taps innermost
    /// (weights stay in L1, one store per 16 outputs), then the epilogue inlined per pixel.
    ///
    /// SAFETY: Kernel proves AVX-512 F/BW/VL; `acc` holds `ow * c`; tap reads are bounds-checked
    /// against the input geometry; masked accesses stay below `c`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dw_row_avx512(
        a: &RowArgs,
        plan: &EpiPlan,
        row: usize,
        acc: &mut [i32],
        out: OutPtr,
    ) {
        dw_row_body::<false>(a, plan, row, acc, out)
    }

    /// As `dw_row_avx512`, with `vpdpwssd` (multiply-accumulate in one instruction).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn dw_row_vnni(
        a: &RowArgs,
        plan: &EpiPlan,
        row: usize,
        acc: &mut [i32],
        out: OutPtr,
    ) {
        dw_row_body::<true>(a, plan, row, acc, out)
    }

    struct PixelCtx<'a, 'b> {
        a: &'a RowArgs<'b>,
        xp: *const u8,
        b: usize,
        oy: usize,
        ch: usize,
        m: __mmask16,
        z: __m512i,
    }

    /// One (border) output pixel with per-tap bounds checks: `sum (x - zx) * (w - zw)`.
    #[inline(always)]
    unsafe fn pixel(p: &PixelCtx, ox: usize) -> __m512i {
        let (a, x) = (p.a, p.a.x);
        let (sh, sw) = a.geom.stride;
        let (dh, dw) = a.geom.dilation;
        let mut v = _mm512_setzero_si512();
        for ky in 0..a.kh {
            let iy = (p.oy * sh + ky * dh) as isize - a.geom.pads[0] as isize;
            if iy < 0 || iy as usize >= x.h {
                continue;
            }
            let rowbase = (p.b * x.h + iy as usize) * x.w;
            for kx in 0..a.kw {
                let ix = (ox * sw + kx * dw) as isize - a.geom.pads[1] as isize;
                if ix < 0 || ix as usize >= x.w {
                    continue;
                }
                let xb = _mm_maskz_loadu_epi8(
                    p.m,
                    p.xp.add((rowbase + ix as usize) * a.c + p.ch) as *const i8,
                );
                let xi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(xb), p.z);
                let wi = _mm512_maskz_loadu_epi32(p.m, a.w.add((ky * a.kw + kx) * a.c + p.ch));
                v = _mm512_add_epi32(v, _mm512_mullo_epi32(xi, wi));
            }
        }
        v
    }

    /// Applies the GEMM epilogue to 16 channels of output pixel `ox` straight from registers
    /// (channel index = epilogue column), writing `out_row + ox * c + ch`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn emit(
        plan: &EpiPlan,
        out_row: OutPtr,
        c: usize,
        ch: usize,
        m: __mmask16,
        full: bool,
        ox: usize,
        v: __m512i,
    ) {
        let o = out_row.add(ox * c + ch);
        if full {
            vec16::<true>(plan, v, _mm512_setzero_si512(), ch, m, o);
        } else {
            vec16::<false>(plan, v, _mm512_setzero_si512(), ch, m, o);
        }
    }

    #[inline(always)]
    unsafe fn dw_row_body<const VNNI: bool>(
        a: &RowArgs,
        plan: &EpiPlan,
        row: usize,
        acc: &mut [i32],
        out: OutPtr,
    ) {
        let (x, c) = (a.x, a.c);
        let b = row / a.oh;
        let oy = row % a.oh;
        let (sh, sw) = a.geom.stride;
        let (dh, dw) = a.geom.dilation;
        let z = _mm512_set1_epi32(x.zero_point);
        let xp = x.data.as_ptr();
        let _ = acc; // the epilogue is fused: no accumulator row needed on this path
        let out_row = out.add(row * a.ow * c);
        let mut ch = 0;
        while ch < c {
            let rem = c - ch;
            let m: __mmask16 = if rem >= 16 {
                0xFFFF
            } else {
                ((1u32 << rem) - 1) as u16
            };
            let full = rem >= 16;
            // Interior pixels [ox_lo, ox_hi): every kx tap is inside the row; 4 pixels at a time
            // with independent accumulators. Border pixels take the checked path.
            let pad_l = a.geom.pads[1];
            let ox_lo = pad_l.div_ceil(sw).min(a.ow);
            let span = (a.kw - 1) * dw;
            let ox_hi = if x.w + pad_l > span {
                ((x.w + pad_l - span - 1) / sw + 1).min(a.ow)
            } else {
                0
            }
            .max(ox_lo);
            // (Helpers are `#[inline(always)]` fns, not closures: closures do not inherit the
            // target features, so their intrinsics would become calls.)
            let px = PixelCtx {
                a,
                xp,
                b,
                oy,
                ch,
                m,
                z,
            };
            for ox in 0..ox_lo {
                emit(plan, out_row, c, ch, m, full, ox, pixel(&px, ox));
            }
            // Interior block: raw u8 x (w - zw) products (no per-tap zero-point subtraction),
            // corrected once by zx * sum over the valid kernel rows of (w - zw).
            let mut wsum = _mm512_setzero_si512();
            for ky in 0..a.kh {
                let iy = (oy * sh + ky * dh) as isize - a.geom.pads[0] as isize;
                if iy >= 0 && (iy as usize) < x.h {
                    wsum = _mm512_add_epi32(
                        wsum,
                        _mm512_maskz_loadu_epi32(m, a.wrow.add(ky * c + ch)),
                    );
                }
            }
            let corr = _mm512_mullo_epi32(wsum, z);
            let mut ox = ox_lo;
            while ox + 4 <= ox_hi {
                let mut v = [_mm512_setzero_si512(); 4];
                for ky in 0..a.kh {
                    let iy = (oy * sh + ky * dh) as isize - a.geom.pads[0] as isize;
                    if iy < 0 || iy as usize >= x.h {
                        continue;
                    }
                    let rowp = xp.add(((b * x.h + iy as usize) * x.w) * c + ch);
                    for kx in 0..a.kw {
                        let wt = a.w16.add((ky * a.kw + kx) * c + ch);
                        let wi = if full {
                            _mm512_loadu_si512(wt as *const _)
                        } else {
                            _mm512_maskz_loadu_epi32(m, wt)
                        };
                        let ix0 = ox * sw + kx * dw - pad_l;
                        for (p, vp) in v.iter_mut().enumerate() {
                            let src = rowp.add((ix0 + p * sw) * c);
                            let xb = if full {
                                _mm_loadu_si128(src as *const __m128i)
                            } else {
                                _mm_maskz_loadu_epi8(m, src as *const i8)
                            };
                            let xi = _mm512_cvtepu8_epi32(xb);
                            *vp = if VNNI {
                                _mm512_dpwssd_epi32(*vp, xi, wi)
                            } else {
                                _mm512_add_epi32(*vp, _mm512_madd_epi16(xi, wi))
                            };
                        }
                    }
                }
                for (p, vp) in v.iter().enumerate() {
                    emit(
                        plan,
                        out_row,
                        c,
                        ch,
                        m,
                        full,
                        ox + p,
                        _mm512_sub_epi32(*vp, corr),
                    );
                }
                ox += 4;
            }
            for ox in ox..a.ow {
                emit(plan, out_row, c, ch, m, full, ox, pixel(&px, ox));
            }
            ch += 16;
        }
    }

    /// `body` once per listed value of `i` (a plain `let`), without a loop.
    macro_rules! unroll {
        ($i:ident in [$($n:literal),*] $body:block) => {
            $({
                let $i: usize = $n;
                $body
            })*
        };
    }

    /// Output pixels per block of the 3x3 VNNI path: P accumulators (2P for a row pair), 3 (6)
    /// weight registers, the shuffle index, the epilogue constants and the gathered columns as
    /// they are used stay in zmm registers.
    const P: usize = 8;

    /// vpshufb index: dword `e` of 128-bit lane `k` takes byte `4k + e` (channel `4k + e` of a
    /// 16-byte column broadcast to all lanes) into each of its four bytes.
    const GATHER: [u8; 64] = {
        let mut t = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            t[i] = (4 * (i / 16) + (i % 16) / 4) as u8;
            i += 1;
        }
        t
    };

    /// One task of a 3x3 depthwise conv (horizontal stride 1 or 2, no horizontal dilation) on
    /// AVX-512 VNNI with `vpdpbusd`, see the module doc: output row `unit`, or with `a.pair` the
    /// output rows `2i, 2i + 1` of image `b` (`unit = b * ceil(oh / 2) + i`).
    ///
    /// SAFETY: Kernel proves AVX-512 F/BW/VL/VNNI; `a.fast3` (so `a.w8` holds `3 * c` dwords and
    /// `plan.colterm` includes the zero-point correction); every input read is either inside the
    /// image (interior blocks by construction, border blocks checked per column) or in the local
    /// zero-point buffer; masked accesses stay below `c`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn dw3x3_row_vnni(a: &RowArgs, plan: &EpiPlan, unit: usize, out: OutPtr) {
        if a.pair {
            let hp = a.oh.div_ceil(2);
            let (b, oy) = (unit / hp, 2 * (unit % hp));
            if oy + 1 < a.oh {
                dw3x3_vnni::<1, true>(a, plan, b * a.oh + oy, out)
            } else {
                dw3x3_vnni::<1, false>(a, plan, b * a.oh + oy, out)
            }
        } else if a.geom.stride.1 == 1 {
            dw3x3_vnni::<1, false>(a, plan, unit, out)
        } else {
            dw3x3_vnni::<2, false>(a, plan, unit, out)
        }
    }

    /// One instantiation of `dw3x3_body` per function (not inlined into one), so each gets its
    /// own register allocation.
    ///
    /// SAFETY: as `dw3x3_row_vnni`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline(never)]
    unsafe fn dw3x3_vnni<const S: usize, const PAIR: bool>(
        a: &RowArgs,
        plan: &EpiPlan,
        row: usize,
        out: OutPtr,
    ) {
        dw3x3_body::<S, PAIR>(a, plan, row, out)
    }

    /// What one block of pixels needs: the kernel rows (three; four when PAIR: the input rows
    /// of output rows `oy` and `oy + 1`) as (pointer at column 0 and channel `ch`, column stride
    /// in bytes), a padding row being the zero-point buffer with stride 0.
    struct Block3<'a, 'b> {
        a: &'a RowArgs<'b>,
        plan: &'a EpiPlan<'a>,
        rows: [(*const u8, usize); 4],
        zbuf: *const u8,
        /// Per kx: `[w0, w1, w2, 0]` bytes (output row `oy`), and `[0, w0, w1, w2]` (row `oy + 1`).
        wk: [__m512i; 3],
        wk2: [__m512i; 3],
        idx: __m512i,
        out_row: OutPtr,
        ch: usize,
        m: __mmask16,
    }

    /// 16 bytes at `p` (under mask `m` unless FULL) broadcast to the four 128-bit lanes.
    #[inline(always)]
    unsafe fn bcast16<const FULL: bool>(p: *const u8, m: __mmask16) -> __m512i {
        if FULL {
            _mm512_broadcast_i32x4(_mm_loadu_si128(p as *const __m128i))
        } else {
            _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(m, p as *const i8))
        }
    }

    /// One input column of the kernel rows (16 bytes at each of `p`) as dwords
    /// `[x0, x1, x2, x0]` per channel, `[x0, x1, x2, x3]` when PAIR (the weights are zero where
    /// a byte is not a tap).
    #[inline(always)]
    unsafe fn column<const FULL: bool, const PAIR: bool>(k: &Block3, p: [*const u8; 4]) -> __m512i {
        let v = _mm512_shuffle_epi8(bcast16::<FULL>(p[0], k.m), k.idx);
        let v =
            _mm512_mask_shuffle_epi8(v, 0x2222_2222_2222_2222, bcast16::<FULL>(p[1], k.m), k.idx);
        let v =
            _mm512_mask_shuffle_epi8(v, 0x4444_4444_4444_4444, bcast16::<FULL>(p[2], k.m), k.idx);
        if PAIR {
            _mm512_mask_shuffle_epi8(v, 0x8888_8888_8888_8888, bcast16::<FULL>(p[3], k.m), k.idx)
        } else {
            v
        }
    }

    /// Output pixels `ox .. ox + P` (those below `ow`) of 16 channels, of one output row or
    /// (PAIR) two: each of the `(P - 1) * S + 3` input columns is gathered once and multiplied
    /// into every pixel that reads it, then the epilogue.
    #[inline(always)]
    unsafe fn block3<const S: usize, const FULL: bool, const CHECKED: bool, const PAIR: bool>(
        k: &Block3,
        ox: usize,
    ) {
        let ix0 = (ox * S) as isize - k.a.geom.pads[1] as isize;
        let mut cols = [_mm512_setzero_si512(); 2 * P + 1];
        // The row pointers walk the block one column at a time (wrapping: a checked block may
        // start left of the image); checked blocks read the zero-point buffer instead of
        // out-of-image columns. Spelled out (LLVM does not fully unroll this loop by itself), so
        // the columns and the accumulators are registers.
        let nr = if PAIR { 4 } else { 3 };
        let mut p = [k.zbuf; 4];
        for (r, q) in p.iter_mut().enumerate().take(nr) {
            *q = k.rows[r].0.wrapping_offset(ix0 * k.rows[r].1 as isize);
        }
        unroll!(j in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] {
            if j < (P - 1) * S + 3 {
                cols[j] = if CHECKED {
                    let ix = ix0 + j as isize;
                    let inside = ix >= 0 && (ix as usize) < k.a.x.w;
                    column::<FULL, PAIR>(k, p.map(|q| if inside { q } else { k.zbuf }))
                } else {
                    column::<FULL, PAIR>(k, p)
                };
                for (r, q) in p.iter_mut().enumerate().take(nr) {
                    *q = q.wrapping_add(k.rows[r].1);
                }
            }
        });
        let n = if CHECKED { (k.a.ow - ox).min(P) } else { P };
        let mut acc = [_mm512_setzero_si512(); P];
        for (kx, &w) in k.wk.iter().enumerate() {
            for (p, v) in acc.iter_mut().enumerate() {
                *v = _mm512_dpbusd_epi32(*v, cols[p * S + kx], w);
            }
        }
        for (p, &v) in acc.iter().enumerate().take(n) {
            emit(k.plan, k.out_row, k.a.c, k.ch, k.m, FULL, ox + p, v);
        }
        if PAIR {
            let mut acc = [_mm512_setzero_si512(); P];
            for (kx, &w) in k.wk2.iter().enumerate() {
                for (p, v) in acc.iter_mut().enumerate() {
                    *v = _mm512_dpbusd_epi32(*v, cols[p * S + kx], w);
                }
            }
            let out_row2 = k.out_row.add(k.a.ow * k.a.c);
            for (p, &v) in acc.iter().enumerate().take(n) {
                emit(k.plan, out_row2, k.a.c, k.ch, k.m, FULL, ox + p, v);
            }
        }
    }

    /// Output row `row`, and with PAIR (stride and dilation 1 vertically) row `row + 1` too.
    #[inline(always)]
    unsafe fn dw3x3_body<const S: usize, const PAIR: bool>(
        a: &RowArgs,
        plan: &EpiPlan,
        row: usize,
        out: OutPtr,
    ) {
        let (x, c) = (a.x, a.c);
        let b = row / a.oh;
        let oy = row % a.oh;
        let (sh, dh) = (a.geom.stride.0, a.geom.dilation.0);
        let zbuf = [x.zero_point as u8; 16];
        let xp = x.data.as_ptr();
        let out_row = out.add(row * a.ow * c);
        // Blocks whose every column is inside the row: ox in [ox_lo, ox_hi).
        let pad_l = a.geom.pads[1];
        let ox_lo = pad_l.div_ceil(S).min(a.ow);
        let ox_hi = if x.w + pad_l > 2 {
            ((x.w + pad_l - 3) / S + 1).min(a.ow)
        } else {
            0
        }
        .max(ox_lo);
        let nrows = if PAIR { 4 } else { 3 };
        let mut ch = 0;
        while ch < c {
            let rem = c - ch;
            let full = rem >= 16;
            let m: __mmask16 = if full {
                0xFFFF
            } else {
                ((1u32 << rem) - 1) as u16
            };
            let mut rows = [(zbuf.as_ptr(), 0usize); 4];
            for (ky, r) in rows.iter_mut().enumerate().take(nrows) {
                let iy = (oy * sh + ky * dh) as isize - a.geom.pads[0] as isize;
                if iy >= 0 && (iy as usize) < x.h {
                    *r = (xp.add(((b * x.h + iy as usize) * x.w) * c + ch), c);
                }
            }
            let wk = [
                _mm512_maskz_loadu_epi32(m, a.w8.add(ch)),
                _mm512_maskz_loadu_epi32(m, a.w8.add(c + ch)),
                _mm512_maskz_loadu_epi32(m, a.w8.add(2 * c + ch)),
            ];
            let k = Block3 {
                a,
                plan,
                rows,
                zbuf: zbuf.as_ptr(),
                wk,
                wk2: [
                    _mm512_slli_epi32::<8>(wk[0]),
                    _mm512_slli_epi32::<8>(wk[1]),
                    _mm512_slli_epi32::<8>(wk[2]),
                ],
                idx: _mm512_loadu_si512(GATHER.as_ptr() as *const _),
                out_row,
                ch,
                m,
            };
            let mut ox = 0;
            while ox < a.ow {
                if !full {
                    block3::<S, false, true, PAIR>(&k, ox);
                } else if ox >= ox_lo && ox + P <= ox_hi {
                    block3::<S, true, false, PAIR>(&k, ox);
                } else {
                    block3::<S, true, true, PAIR>(&k, ox);
                }
                ox += P;
            }
            ch += 16;
        }
    }

    /// SAFETY: Kernel proves AVX-512; masked accesses stay below `c` in every row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn acc_avx512(
        c: usize,
        taps: &[(usize, usize)],
        x: *const u8,
        w: *const i32,
        zx: i32,
        acc: *mut i32,
    ) -> usize {
        let z = _mm512_set1_epi32(zx);
        let mut ch = 0;
        while ch < c {
            let rem = c - ch;
            let m: __mmask16 = if rem >= 16 {
                0xFFFF
            } else {
                ((1u32 << rem) - 1) as u16
            };
            let mut v = _mm512_setzero_si512();
            for &(t, off) in taps {
                let xb = _mm_maskz_loadu_epi8(m, x.add(off + ch) as *const i8);
                let xi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(xb), z);
                let wi = _mm512_maskz_loadu_epi32(m, w.add(t * c + ch));
                v = _mm512_add_epi32(v, _mm512_mullo_epi32(xi, wi));
            }
            _mm512_mask_storeu_epi32(acc.add(ch), m, v);
            ch += 16;
        }
        c
    }

    /// SAFETY: Kernel proves AVX2; whole groups of 8 only, the caller does the tail.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn acc_avx2(
        c: usize,
        taps: &[(usize, usize)],
        x: *const u8,
        w: *const i32,
        zx: i32,
        acc: *mut i32,
    ) -> usize {
        let z = _mm256_set1_epi32(zx);
        let c8 = c / 8 * 8;
        let mut ch = 0;
        while ch < c8 {
            let mut v = _mm256_setzero_si256();
            for &(t, off) in taps {
                let xb = _mm_loadl_epi64(x.add(off + ch) as *const __m128i);
                let xi = _mm256_sub_epi32(_mm256_cvtepu8_epi32(xb), z);
                let wi = _mm256_loadu_si256(w.add(t * c + ch) as *const __m256i);
                v = _mm256_add_epi32(v, _mm256_mullo_epi32(xi, wi));
            }
            _mm256_storeu_si256(acc.add(ch) as *mut __m256i, v);
            ch += 8;
        }
        c8
    }
}
