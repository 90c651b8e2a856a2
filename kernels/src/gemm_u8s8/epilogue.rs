//! The fused GEMM epilogue: zero-point correction, bias, requantization / dequantization and
//! clamping of one tile row, per ISA, with *identical* arithmetic on every path.
//!
//! Exact rule (documented in `DESIGN.md` and on [`crate::Epilogue`]):
//! ```text
//! v   = acc + colterm[j] + rowterm[i]              (int32, wrapping)
//!       colterm[j] = bias[j] - za*colsum[j] + K*za*zb,  rowterm[i] = -zb*rowsum[i]
//! U8/I8: f = (v as f32) * mult[j]                  (one f32 multiply, round-to-nearest-even)
//!        f = min(max(f, lo - zp), hi - zp)         (integers, exact in f32; NaN -> lo - zp)
//!        q = round_half_even(f) + zp               (== clamp(round_half_even(v*mult) + zp, lo, hi))
//! F32:   y = (v as f32) * scale[j] (+ fbias[j])    (separate multiply and add: no FMA)
//! I32:   v
//! ```
//! SIMD uses `cvtepi32_ps`, `mul_ps`, `max/min_ps` and a round-to-nearest-even conversion, which
//! are the same IEEE operations as the scalar `as f32`, `*`, `max/min`, `round_ties_even`.

use crate::isa::Isa;

/// Where a tile row goes: pointer to output element (row i, column j0).
#[derive(Clone, Copy)]
pub(crate) enum OutPtr {
    U8(*mut u8),
    I8(*mut i8),
    I32(*mut i32),
    F32(*mut f32),
}

impl OutPtr {
    pub(crate) unsafe fn add(self, off: usize) -> OutPtr {
        match self {
            OutPtr::U8(p) => OutPtr::U8(p.add(off)),
            OutPtr::I8(p) => OutPtr::I8(p.add(off)),
            OutPtr::I32(p) => OutPtr::I32(p.add(off)),
            OutPtr::F32(p) => OutPtr::F32(p.add(off)),
        }
    }
}

/// Per-call epilogue constants, all indexed by global output column.
pub(crate) struct EpiPlan<'a> {
    pub colterm: &'a [i32],
    pub scale: &'a [f32],
    pub fbias: Option<&'a [f32]>,
    pub zp: i32,
    pub lo: i32,
    pub hi: i32,
    /// A residual add the fused VNNI kernel applies in registers to whole 64-column rows (the
    /// tiles for which the driver passes the other operand's pointer).
    pub res: Option<&'a crate::qadd::QAdd>,
    /// Every `|scale[j]| <= SMALL_SCALE`: then `(v as f32) * scale[j]` converts to int32 without
    /// overflow for any int32 `v`, so whole-row epilogues may round first and clamp in integers
    /// (saturating packs) instead of clamping in float: the same values, fewer float operations.
    pub small_scale: bool,
    /// The fused VNNI kernels start their accumulators from `colterm` and the row terms are all
    /// zero (no weight zero point): their register epilogues (`vec16`, `row64_*`) then skip
    /// both adds. Integer adds wrap, so the order does not change a bit. Only for plans whose
    /// every tile goes through those kernels.
    pub acc_has_colterm: bool,
    /// The branch-free epilogue (`micro::x86` mode) of a whole 64-column VNNI tile without and
    /// with a residual add in registers, decided once per call (`micro::fast_modes`) rather
    /// than per tile; 0 (the general one) until then.
    pub fast: [u8; 2],
}

/// Bound on the multipliers for [`EpiPlan::small_scale`]: `2^31 * 0.99 + 255 < 2^31`.
pub(crate) const SMALL_SCALE: f32 = 0.99;

/// [`EpiPlan::small_scale`] for these multipliers.
pub(crate) fn small_scale(scale: &[f32]) -> bool {
    scale.iter().all(|s| s.abs() <= SMALL_SCALE)
}

pub(crate) const CLAMP_F: f32 = 16_777_216.0;

/// Scalar requantization of one value: the reference rule.
#[inline(always)]
#[allow(clippy::manual_clamp)] // f32::clamp would keep NaN; max/min map NaN like the SIMD path
pub(crate) fn requant_one(v: i32, mult: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    // Clamping in float to the integers [lo - zp, hi - zp] before rounding equals clamping
    // round(f) + zp to [lo, hi] afterwards (NaN -> lo either way), and keeps the conversion in range.
    let f = ((v as f32) * mult)
        .max((lo - zp) as f32)
        .min((hi - zp) as f32);
    (f.round_ties_even() as i32) + zp
}

/// Scalar epilogue of columns `j0 + [from, nc)` of one row.
#[inline(always)]
unsafe fn row_scalar(
    p: &EpiPlan,
    acc: *const i32,
    rowterm: i32,
    j0: usize,
    from: usize,
    nc: usize,
    out: OutPtr,
) {
    for c in from..nc {
        let j = j0 + c;
        let v = (*acc.add(c))
            .wrapping_add(p.colterm[j])
            .wrapping_add(rowterm);
        match out {
            OutPtr::I32(o) => *o.add(c) = v,
            OutPtr::U8(o) => *o.add(c) = requant_one(v, p.scale[j], p.zp, p.lo, p.hi) as u8,
            OutPtr::I8(o) => *o.add(c) = requant_one(v, p.scale[j], p.zp, p.lo, p.hi) as i8,
            OutPtr::F32(o) => {
                let mut y = (v as f32) * p.scale[j];
                if let Some(fb) = p.fbias {
                    y += fb[j];
                }
                *o.add(c) = y;
            }
        }
    }
}

/// Applies the epilogue to `nc` columns of one row: `acc[0..nc]` -> `out[0..nc]`.
///
/// # Safety
/// `isa` supported (a `Kernel` exists); `acc` readable for `nc`; `out` writable for `nc`;
/// `j0 + nc <= p.colterm.len()` (and the other per-column slices).
#[inline(always)]
pub(crate) unsafe fn row(
    isa: Isa,
    p: &EpiPlan,
    acc: *const i32,
    rowterm: i32,
    j0: usize,
    nc: usize,
    out: OutPtr,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => x86::row_avx512(p, acc, rowterm, j0, nc, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let done = x86::row_avx2(p, acc, rowterm, j0, nc, out);
            row_scalar(p, acc, rowterm, j0, done, nc, out)
        }
        _ => row_scalar(p, acc, rowterm, j0, 0, nc, out),
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{EpiPlan, OutPtr, CLAMP_F};
    use std::arch::x86_64::*;

    /// SAFETY: caller holds a Kernel with AVX-512 F/BW/VL; masked loads/stores never touch lanes
    /// at or beyond `nc`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn row_avx512(
        p: &EpiPlan,
        acc: *const i32,
        rowterm: i32,
        j0: usize,
        nc: usize,
        out: OutPtr,
    ) {
        row_avx512_body(p, acc, rowterm, j0, nc, out)
    }

    /// Body of `row_avx512`, to inline into other AVX-512 functions (e.g. depthwise rows).
    #[inline(always)]
    pub(crate) unsafe fn row_avx512_body(
        p: &EpiPlan,
        acc: *const i32,
        rowterm: i32,
        j0: usize,
        nc: usize,
        out: OutPtr,
    ) {
        let rt = _mm512_set1_epi32(rowterm);
        let mut c = 0;
        while c < nc {
            let m = mask16(nc - c);
            if m == 0xFFFF {
                vec16::<true>(
                    p,
                    _mm512_loadu_si512(acc.add(c) as *const _),
                    rt,
                    j0 + c,
                    m,
                    out.add(c),
                );
                c += 16;
                continue;
            }
            vec16::<false>(
                p,
                _mm512_maskz_loadu_epi32(m, acc.add(c)),
                rt,
                j0 + c,
                m,
                out.add(c),
            );
            c += 16;
        }
    }

    /// Lane mask for the first `rem` (>= 1) of 16 lanes.
    #[inline(always)]
    pub(crate) fn mask16(rem: usize) -> __mmask16 {
        if rem >= 16 {
            0xFFFF
        } else {
            ((1u32 << rem) - 1) as u16
        }
    }

    // Helpers are `#[inline(always)]` fns, not closures: closures do not inherit target features.
    #[inline(always)]
    unsafe fn ld_i<const FULL: bool>(m: __mmask16, ptr: *const i32) -> __m512i {
        if FULL {
            _mm512_loadu_si512(ptr as *const _)
        } else {
            _mm512_maskz_loadu_epi32(m, ptr)
        }
    }

    #[inline(always)]
    unsafe fn ld_f<const FULL: bool>(m: __mmask16, ptr: *const f32) -> __m512 {
        if FULL {
            _mm512_loadu_ps(ptr)
        } else {
            _mm512_maskz_loadu_ps(m, ptr)
        }
    }

    /// The epilogue of 16 accumulators held in a register (columns `j .. j+16`; under mask `m`
    /// unless `FULL`), stored at `out` (already pointing at column `j`). Inlined into the VNNI
    /// micro-kernel so accumulators never round-trip through memory.
    #[inline(always)]
    pub(crate) unsafe fn vec16<const FULL: bool>(
        p: &EpiPlan,
        acc: __m512i,
        rt: __m512i,
        j: usize,
        m: __mmask16,
        out: OutPtr,
    ) {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let v = if p.acc_has_colterm {
            acc
        } else {
            _mm512_add_epi32(
                _mm512_add_epi32(acc, ld_i::<FULL>(m, p.colterm.as_ptr().add(j))),
                rt,
            )
        };
        match out {
            OutPtr::I32(o) => {
                if FULL {
                    _mm512_storeu_si512(o as *mut _, v)
                } else {
                    _mm512_mask_storeu_epi32(o, m, v)
                }
            }
            OutPtr::U8(_) | OutPtr::I8(_) => {
                let f = _mm512_mul_ps(
                    _mm512_cvt_roundepi32_ps::<RNE>(v),
                    ld_f::<FULL>(m, p.scale.as_ptr().add(j)),
                );
                // Clamp in float to [lo - zp, hi - zp] (integers), round, add zp: equal to
                // clamp(round(f) + zp, lo, hi) and to the scalar `requant_one`.
                let f = _mm512_min_ps(
                    _mm512_max_ps(f, _mm512_set1_ps((p.lo - p.zp) as f32)),
                    _mm512_set1_ps((p.hi - p.zp) as f32),
                );
                let q =
                    _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), _mm512_set1_epi32(p.zp));
                let q8 = _mm512_cvtepi32_epi8(q);
                let dst = match out {
                    OutPtr::U8(o) => o as *mut i8,
                    OutPtr::I8(o) => o,
                    _ => unreachable!(),
                };
                // Full vectors use a plain store: masked narrowing stores are slow on Zen 4.
                if FULL {
                    _mm_storeu_si128(dst as *mut __m128i, q8);
                } else {
                    _mm_mask_storeu_epi8(dst, m, q8);
                }
            }
            OutPtr::F32(o) => {
                let mut y = _mm512_mul_ps(
                    _mm512_cvt_roundepi32_ps::<RNE>(v),
                    ld_f::<FULL>(m, p.scale.as_ptr().add(j)),
                );
                if let Some(fb) = p.fbias {
                    y = _mm512_add_ps(y, ld_f::<FULL>(m, fb.as_ptr().add(j)));
                }
                if FULL {
                    _mm512_storeu_ps(o, y)
                } else {
                    _mm512_mask_storeu_ps(o, m, y);
                }
            }
        }
    }

    /// The U8/I8 epilogue of one full row of 64 columns held in four registers (columns
    /// `j .. j+64`), narrowed with saturating packs (exact: every value is already inside
    /// `[lo, hi]`) and one dword transpose instead of four narrowing stores. Returns the 64
    /// bytes in column order; the same values as four `vec16` calls.
    #[inline(always)]
    pub(crate) unsafe fn row64_bytes(
        p: &EpiPlan,
        acc: [__m512i; 4],
        rt: __m512i,
        j: usize,
        signed: bool,
    ) -> __m512i {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let (flo, fhi) = (
            _mm512_set1_ps((p.lo - p.zp) as f32),
            _mm512_set1_ps((p.hi - p.zp) as f32),
        );
        let zp = _mm512_set1_epi32(p.zp);
        let (tlo, thi) = if signed { (-128, 127) } else { (0, 255) };
        let mut q = [_mm512_setzero_si512(); 4];
        for (c, qc) in q.iter_mut().enumerate() {
            let v = if p.acc_has_colterm {
                acc[c]
            } else {
                _mm512_add_epi32(
                    _mm512_add_epi32(
                        acc[c],
                        _mm512_loadu_si512(p.colterm.as_ptr().add(j + 16 * c) as *const _),
                    ),
                    rt,
                )
            };
            let f = _mm512_mul_ps(
                _mm512_cvt_roundepi32_ps::<RNE>(v),
                _mm512_loadu_ps(p.scale.as_ptr().add(j + 16 * c)),
            );
            if p.small_scale {
                // Round, add zp, clamp in integers: clamping to the integers [lo, hi] commutes
                // with rounding, and the packs below saturate to the type's own range.
                let mut x = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), zp);
                if p.lo > tlo {
                    x = _mm512_max_epi32(x, _mm512_set1_epi32(p.lo));
                }
                if p.hi < thi {
                    x = _mm512_min_epi32(x, _mm512_set1_epi32(p.hi));
                }
                *qc = x;
            } else {
                let f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
                *qc = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), zp);
            }
        }
        // In-lane packs leave dword (lane L, vector c) at index 4L + c; column order wants it at
        // 4c + L: a 4 x 4 dword transpose. Signed 32 -> 16 saturation first in both cases, so
        // any int32 lands on the type's range.
        let packed = if signed {
            _mm512_packs_epi16(
                _mm512_packs_epi32(q[0], q[1]),
                _mm512_packs_epi32(q[2], q[3]),
            )
        } else {
            _mm512_packus_epi16(
                _mm512_packs_epi32(q[0], q[1]),
                _mm512_packs_epi32(q[2], q[3]),
            )
        };
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_epi32(idx, packed)
    }

    /// For a convolution whose output feeds a fused residual add as operand A (zero point
    /// `a_zp`, scale `a_s`): the add's `xa = ((q - a_zp) as f32) * a_s` of one full row of 64
    /// columns, computed from the float epilogue without forming the byte `q`. With `f` the
    /// clamped product (as in `vec16`) and `r = round_half_even(f)` (an integer-valued float,
    /// `|r| <= 2^24`), `q - a_zp = r + (zp - a_zp)` exactly, so `xa = (r + (zp - a_zp)) * a_s`
    /// (the integer add is exact in f32): the same value as dequantizing the stored byte.
    /// `zpd` is `zp - a_zp`. With `small_scale` the rounding and clamp run in integers.
    #[inline(always)]
    pub(crate) unsafe fn row64_xa(
        p: &EpiPlan,
        acc: [__m512i; 4],
        rt: __m512i,
        j: usize,
        zpd: i32,
        a_s: __m512,
    ) -> [__m512; 4] {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let mut xa = [_mm512_setzero_ps(); 4];
        for (c, x) in xa.iter_mut().enumerate() {
            let v = if p.acc_has_colterm {
                acc[c]
            } else {
                _mm512_add_epi32(
                    _mm512_add_epi32(
                        acc[c],
                        _mm512_loadu_si512(p.colterm.as_ptr().add(j + 16 * c) as *const _),
                    ),
                    rt,
                )
            };
            let f = _mm512_mul_ps(
                _mm512_cvt_roundepi32_ps::<RNE>(v),
                _mm512_loadu_ps(p.scale.as_ptr().add(j + 16 * c)),
            );
            let r = if p.small_scale {
                // round, clamp and shift in integers (exact; see `row64_bytes`)
                let q = _mm512_cvt_roundps_epi32::<RNE>(f);
                let q = _mm512_min_epi32(
                    _mm512_max_epi32(q, _mm512_set1_epi32(p.lo - p.zp)),
                    _mm512_set1_epi32(p.hi - p.zp),
                );
                _mm512_cvtepi32_ps(_mm512_add_epi32(q, _mm512_set1_epi32(zpd)))
            } else {
                let f = _mm512_min_ps(
                    _mm512_max_ps(f, _mm512_set1_ps((p.lo - p.zp) as f32)),
                    _mm512_set1_ps((p.hi - p.zp) as f32),
                );
                _mm512_add_ps(_mm512_roundscale_ps::<RNE>(f), _mm512_set1_ps(zpd as f32))
            };
            *x = _mm512_mul_ps(r, a_s);
        }
        xa
    }

    /// AVX2 epilogue for whole groups of 8 columns; returns how many columns it did (the rest go
    /// to the scalar tail, which computes the same thing). Uses the default MXCSR rounding
    /// (round-to-nearest-even), which Rust never changes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(
        p: &EpiPlan,
        acc: *const i32,
        rowterm: i32,
        j0: usize,
        nc: usize,
        out: OutPtr,
    ) -> usize {
        let rt = _mm256_set1_epi32(rowterm);
        let zp = _mm256_set1_epi32(p.zp);
        let lo = _mm256_set1_epi32(p.lo);
        let hi = _mm256_set1_epi32(p.hi);
        let cmax = _mm256_set1_ps(CLAMP_F);
        let cmin = _mm256_set1_ps(-CLAMP_F);
        let ct = p.colterm.as_ptr().add(j0);
        let sc = p.scale.as_ptr().add(j0);
        let mut c = 0;
        while c + 8 <= nc {
            let v = _mm256_add_epi32(
                _mm256_add_epi32(
                    _mm256_loadu_si256(acc.add(c) as *const __m256i),
                    _mm256_loadu_si256(ct.add(c) as *const __m256i),
                ),
                rt,
            );
            match out {
                OutPtr::I32(o) => _mm256_storeu_si256(o.add(c) as *mut __m256i, v),
                OutPtr::U8(_) | OutPtr::I8(_) => {
                    let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(sc.add(c)));
                    let f = _mm256_min_ps(_mm256_max_ps(f, cmin), cmax);
                    let r = _mm256_cvtps_epi32(f);
                    let q = _mm256_max_epi32(_mm256_min_epi32(_mm256_add_epi32(r, zp), hi), lo);
                    // q is already in [lo, hi] within the 8-bit range: take the low byte of each lane.
                    let shuf = _mm256_setr_epi8(
                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                    );
                    let s = _mm256_shuffle_epi8(q, shuf);
                    let lo4 = _mm_cvtsi128_si32(_mm256_castsi256_si128(s)) as u32;
                    let hi4 = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(s)) as u32;
                    let bytes = (lo4 as u64) | ((hi4 as u64) << 32);
                    let dst = match out {
                        OutPtr::U8(o) => o.add(c),
                        OutPtr::I8(o) => o.add(c) as *mut u8,
                        _ => unreachable!(),
                    };
                    std::ptr::write_unaligned(dst as *mut u64, bytes.to_le());
                }
                OutPtr::F32(o) => {
                    let mut y = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(sc.add(c)));
                    if let Some(fb) = p.fbias {
                        y = _mm256_add_ps(y, _mm256_loadu_ps(fb.as_ptr().add(j0 + c)));
                    }
                    _mm256_storeu_ps(o.add(c), y);
                }
            }
            c += 8;
        }
        c
    }
}
