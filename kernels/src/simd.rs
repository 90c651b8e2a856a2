//! A minimal f32 SIMD abstraction so each float algorithm (exp, erf, softmax, layer norm, GELU)
//! is written once, `#[inline(always)]`, and instantiated inside per-ISA `#[target_feature]`
//! entry points (`elementwise.rs`). The scalar implementation (`f32`, one lane) runs the same
//! algorithm for tails and for `Isa::Scalar`. Owns no algorithm.
//!
//! Every method is `unsafe`: callers must only use an ISA's vector type inside a function that
//! enables that ISA's target features, and pass pointers valid for `LANES` floats.

#![allow(clippy::missing_safety_doc)]

#[allow(dead_code)] // `div` is kept for completeness of the abstraction
pub(crate) trait F32x: Copy {
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    unsafe fn max(self, o: Self) -> Self;
    unsafe fn min(self, o: Self) -> Self;
    /// self * b + c (fused where the ISA has FMA).
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    /// Round to nearest integer (ties to even), as a float.
    unsafe fn round(self) -> Self;
    /// 2^n for an integral-valued `n` in [-126, 127].
    unsafe fn pow2(self) -> Self;
    unsafe fn abs(self) -> Self;
    /// 1 / self, to ~1e-7 relative (hardware estimate + one Newton step on x86; exact division
    /// for `f32`).
    unsafe fn recip(self) -> Self;
    /// `if self >= 0 { a } else { b }` lane-wise.
    unsafe fn select_nonneg(self, a: Self, b: Self) -> Self;
    /// Whether every lane is `>= 0` (NaN is not).
    unsafe fn all_nonneg(self) -> bool;
    /// Piecewise polynomial through a 16-entry lane lookup: for `self` in `[0, 16 width)`, with
    /// `i = trunc(self / width)`, `sum_k tables[k][i] * (self - (i + 0.5) width)^k` (Horner,
    /// fused). Lanes outside that range get unspecified values. `None` where the ISA has no
    /// 16-entry lane lookup (then the caller uses another formula).
    unsafe fn poly16(self, width: f32, tables: &[[f32; 16]]) -> Option<Self>;
    unsafe fn hsum(self) -> f32;
    unsafe fn hmax(self) -> f32;
}

impl F32x for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        f32::max(self, o)
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        f32::min(self, o)
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        self * b + c
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        self.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2(self) -> Self {
        f32::from_bits((((self as i32) + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    unsafe fn recip(self) -> Self {
        1.0 / self
    }
    #[inline(always)]
    unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
        if self >= 0.0 {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn all_nonneg(self) -> bool {
        self >= 0.0
    }
    #[inline(always)]
    unsafe fn poly16(self, _: f32, _: &[[f32; 16]]) -> Option<Self> {
        None
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        self
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{V256, V512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::F32x;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(crate) struct V512(__m512);
    #[derive(Clone, Copy)]
    pub(crate) struct V256(__m256);

    impl F32x for V512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            V512(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            V512(_mm512_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            V512(_mm512_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            V512(_mm512_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            V512(_mm512_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            V512(_mm512_max_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            V512(_mm512_min_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            V512(_mm512_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            V512(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
        #[inline(always)]
        unsafe fn pow2(self) -> Self {
            let i = _mm512_cvttps_epi32(self.0);
            V512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
                _mm512_add_epi32(i, _mm512_set1_epi32(127)),
            )))
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            V512(_mm512_abs_ps(self.0))
        }
        #[inline(always)]
        unsafe fn recip(self) -> Self {
            // 14-bit estimate, one Newton step: r' = r * (2 - x r).
            let r = _mm512_rcp14_ps(self.0);
            V512(_mm512_mul_ps(
                r,
                _mm512_fnmadd_ps(self.0, r, _mm512_set1_ps(2.0)),
            ))
        }
        #[inline(always)]
        unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
            let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, _mm512_setzero_ps());
            V512(_mm512_mask_blend_ps(m, b.0, a.0))
        }
        #[inline(always)]
        unsafe fn all_nonneg(self) -> bool {
            _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, _mm512_setzero_ps()) == 0xFFFF
        }
        #[inline(always)]
        unsafe fn poly16(self, width: f32, tables: &[[f32; 16]]) -> Option<Self> {
            let w = _mm512_set1_ps(width);
            // trunc: NaN and huge values give 0x80000000, whose low four bits index entry 0.
            let i = _mm512_cvttps_epi32(_mm512_mul_ps(self.0, _mm512_set1_ps(1.0 / width)));
            let center = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), w, _mm512_set1_ps(0.5 * width));
            let u = _mm512_sub_ps(self.0, center);
            let (last, rest) = tables.split_last()?;
            let mut r = _mm512_permutexvar_ps(i, _mm512_loadu_ps(last.as_ptr()));
            for t in rest.iter().rev() {
                r = _mm512_fmadd_ps(r, u, _mm512_permutexvar_ps(i, _mm512_loadu_ps(t.as_ptr())));
            }
            Some(V512(r))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            _mm512_reduce_max_ps(self.0)
        }
    }

    impl F32x for V256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            V256(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V256(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            V256(_mm256_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            V256(_mm256_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            V256(_mm256_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            V256(_mm256_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            V256(_mm256_max_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            V256(_mm256_min_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            V256(_mm256_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            V256(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
        #[inline(always)]
        unsafe fn pow2(self) -> Self {
            let i = _mm256_cvttps_epi32(self.0);
            V256(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
                _mm256_add_epi32(i, _mm256_set1_epi32(127)),
            )))
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            V256(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
        }
        #[inline(always)]
        unsafe fn recip(self) -> Self {
            // 12-bit estimate, one Newton step: r' = r * (2 - x r).
            let r = _mm256_rcp_ps(self.0);
            V256(_mm256_mul_ps(
                r,
                _mm256_fnmadd_ps(self.0, r, _mm256_set1_ps(2.0)),
            ))
        }
        #[inline(always)]
        unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
            let m = _mm256_cmp_ps::<_CMP_GE_OQ>(self.0, _mm256_setzero_ps());
            V256(_mm256_blendv_ps(b.0, a.0, m))
        }
        #[inline(always)]
        unsafe fn all_nonneg(self) -> bool {
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(self.0, _mm256_setzero_ps())) == 0xFF
        }
        #[inline(always)]
        unsafe fn poly16(self, _: f32, _: &[[f32; 16]]) -> Option<Self> {
            None
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            let mut t = [0f32; 8];
            _mm256_storeu_ps(t.as_mut_ptr(), self.0);
            ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            let mut t = [0f32; 8];
            _mm256_storeu_ps(t.as_mut_ptr(), self.0);
            t.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
        }
    }
}
