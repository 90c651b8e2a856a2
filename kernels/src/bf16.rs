//! bfloat16 arithmetic as the AVX512-BF16 instructions define it: `vcvtne2ps2bf16` conversion
//! (round to nearest even, denormals to signed zero, NaNs quieted) and one `vdpbf16ps` lane
//! (two FMA steps, high pair first, DAZ inputs, FTZ results). These scalar functions are the
//! specification the bf16 GEMM is tested against; they were checked bit for bit (NaN payloads
//! included) against the instructions on Zen 4 (`tests/bf16.rs`). Also owns the internal f32 ->
//! bf16 slice conversion used to pack activations. No GEMM code here.
//!
//! A bf16 value is handled as its bit pattern (`u16`, the top half of an f32). A "pair" is a
//! `u32` holding the bf16 of an even K index in its low half and the next (odd) one in its high
//! half: exactly two consecutive bf16 in memory, and one 32-bit lane of a `vdpbf16ps` operand.

use crate::isa::Kernel;

/// The quiet NaN x86 produces for invalid operations (`inf * 0`, `inf - inf`).
const DEFAULT_NAN: u32 = 0xffc0_0000;

/// f32 -> bf16 exactly as `vcvtne2ps2bf16` / `vcvtneps2bf16` do: round to nearest, ties to even
/// (overflow rounds to infinity); zero and denormal inputs become a zero of the same sign; NaNs
/// keep their sign and top payload bits and are made quiet. MXCSR plays no part.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    let abs = u & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        ((u >> 16) | 0x40) as u16
    } else if abs < 0x0080_0000 {
        ((u >> 16) & 0x8000) as u16
    } else {
        // Normal numbers and infinities (whose low half is zero, so nothing rounds).
        ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }
}

/// bf16 -> f32 (exact: the bits become the top half of the f32).
#[inline(always)]
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// One FMA step of `vdpbf16ps`: `acc + a * b` with the exact product, rounded once to f32
/// (nearest even) as if the exponent range were unbounded, then flushed to a zero of the same
/// sign if the rounded magnitude is below `f32::MIN_POSITIVE` (FTZ, tininess after rounding).
/// Denormal `a`, `b` and `acc` are read as zeros of their sign (DAZ). NaN priority: `a`, then
/// `b`, then `acc` (made quiet); `inf * 0` and `inf - inf` give the default NaN `0xFFC00000`.
pub fn dpbf16_step(acc: f32, a: u16, b: u16) -> f32 {
    let daz16 = |x: u16| if x & 0x7f80 == 0 { x & 0x8000 } else { x };
    let acc = if acc.to_bits() & 0x7f80_0000 == 0 {
        f32::from_bits(acc.to_bits() & 0x8000_0000)
    } else {
        acc
    };
    let (fa, fb) = (bf16_to_f32(daz16(a)), bf16_to_f32(daz16(b)));
    for v in [fa, fb, acc] {
        if v.is_nan() {
            return f32::from_bits(v.to_bits() | 0x0040_0000);
        }
    }
    // bf16 significands have 8 bits, so the product is exact in f64 (and in range).
    let x = acc as f64;
    let p = fa as f64 * fb as f64;
    let s = x + p;
    if s.is_nan() {
        return f32::from_bits(DEFAULT_NAN); // inf * 0, or inf - inf
    }
    if s.is_infinite() {
        return s as f32;
    }
    // s + e == x + p exactly (Knuth's TwoSum). Round s to odd: if inexact and s's last bit is
    // 0, step one ulp towards the exact value. A 53-bit round-to-odd value rounds to 24 bits
    // exactly as the exact sum does (no double-rounding error).
    let bv = s - x;
    let e = (x - (s - bv)) + (p - bv);
    let mut so = s;
    if e != 0.0 && s.to_bits() & 1 == 0 {
        let away = (e > 0.0) == (s > 0.0);
        so = f64::from_bits(if away {
            s.to_bits() + 1
        } else {
            s.to_bits() - 1
        });
    }
    let min = f32::MIN_POSITIVE as f64; // 2^-126
    let mag = so.abs();
    if mag >= min {
        so as f32 // normal range: RNE, overflow to infinity
    } else if mag >= min - 2f64.powi(-151) {
        // Rounds up to 2^-126 at 24-bit precision (the midpoint 2^-126 - 2^-151 ties to the even
        // 2^-126), so it is not tiny after rounding. IEEE rounding with denormals would also
        // round [2^-126 - 2^-150, 2^-126 - 2^-151) up; the instruction flushes those.
        (f32::MIN_POSITIVE).copysign(so as f32)
    } else {
        0f32.copysign(so as f32)
    }
}

/// One 32-bit lane of `vdpbf16ps acc, src1, src2`: with `src1 = (a_hi << 16) | a_lo` and
/// `src2 = (b_hi << 16) | b_lo`, `acc = step(acc, a_hi, b_hi)` then `acc = step(acc, a_lo, b_lo)`
/// (the odd K index first, as the SDM's pseudo-code and Zen 4 do; see [`dpbf16_step`]).
pub fn dpbf16ps_emulated(acc: f32, src1: u32, src2: u32) -> f32 {
    let t = dpbf16_step(acc, (src1 >> 16) as u16, (src2 >> 16) as u16);
    dpbf16_step(t, src1 as u16, src2 as u16)
}

/// Converts `src` to bf16 into `dst` (same length), with `vcvtneps2bf16` when the kernel has the
/// bf16 instructions, else [`f32_to_bf16`] (same bits).
pub(crate) fn convert_slice(kernel: &Kernel, src: &[f32], dst: &mut [u16]) {
    debug_assert_eq!(src.len(), dst.len());
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    if kernel.has_bf16_dot() {
        // SAFETY: has_bf16_dot proves avx512f/bw/vl + avx512bf16; both slices hold n elements.
        unsafe { x86::convert(src.as_ptr(), dst.as_mut_ptr(), n) };
        return;
    }
    let _ = kernel;
    for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
        *d = f32_to_bf16(*s);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// SAFETY: AVX512F/BW/VL + BF16 present; `src` and `dst` valid for `n` elements.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn convert(src: *const f32, dst: *mut u16, n: usize) {
        let mut i = 0;
        while i + 32 <= n {
            let lo = _mm512_loadu_ps(src.add(i));
            let hi = _mm512_loadu_ps(src.add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.add(i) as *mut _, v);
            i += 32;
        }
        while i < n {
            let left = (n - i).min(16);
            let m = ((1u32 << left) - 1) as u16;
            let x = _mm512_maskz_loadu_ps(m, src.add(i));
            let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
            _mm256_mask_storeu_epi16(dst.add(i) as *mut i16, m, v);
            i += left;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_rules() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie -> even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie -> even (up)
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80); // overflow -> inf
        assert_eq!(f32_to_bf16(-f32::from_bits(1)), 0x8000); // denormal -> signed zero
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0); // sNaN -> qNaN
        assert_eq!(f32_to_bf16(f32::from_bits(0xff81_2345)), 0xffc1);
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
    }

    #[test]
    fn simd_conversion_matches_scalar() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let src: Vec<f32> = (0..100_003)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match i % 4 {
                    0 => f32::from_bits(s as u32),
                    // Ties and near-ties in the low half.
                    1 => f32::from_bits((s as u32 & 0xffff_0000) | 0x8000),
                    2 => f32::from_bits((s as u32 & 0xffff_0000) | 0x7fff),
                    _ => f32::from_bits(s as u32 & 0x807f_ffff), // zero exponent
                }
            })
            .collect();
        for isa in crate::Isa::supported().unwrap() {
            let kern = Kernel::new(isa).unwrap();
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 100_003] {
                let mut dst = vec![0x5555u16; len];
                convert_slice(&kern, &src[..len], &mut dst);
                for (d, x) in dst.iter().zip(&src) {
                    assert_eq!(*d, f32_to_bf16(*x), "{isa} {:08x}", x.to_bits());
                }
            }
        }
    }

    #[test]
    fn step_rules() {
        let bf = |x: f32| (x.to_bits() >> 16) as u16;
        let p2 = |e: i32| 2f32.powi(e);
        // High pair first: acc -2^30, high product 2^30, low product 1 -> 1 (low first gives 0).
        let src = ((bf(p2(15)) as u32) << 16) | bf(1.0) as u32;
        assert_eq!(dpbf16ps_emulated(-p2(30), src, src), 1.0);
        // Exact product (FMA): 1 + (1+2^-7) * 2^-24 (1+2^-7) rounds up.
        let a = bf(1.0 + p2(-7));
        let b = bf(p2(-24) * (1.0 + p2(-7)));
        assert_eq!(dpbf16_step(1.0, a, b).to_bits(), 0x3f80_0001);
        // Each step rounds: 1 + 2^-24 + 2^-24 stays 1.
        let t = bf(p2(-12));
        let pair = ((t as u32) << 16) | t as u32;
        assert_eq!(dpbf16ps_emulated(1.0, pair, pair), 1.0);
        // Tininess after rounding: 2^-126 - 2^-152 -> 2^-126; 2^-126 - 2^-150 -> 0.
        assert_eq!(dpbf16_step(p2(-126), bf(-p2(-76)), bf(p2(-76))), p2(-126));
        assert_eq!(
            dpbf16_step(p2(-126), bf(-p2(-75)), bf(p2(-75))).to_bits(),
            0
        );
        // FTZ keeps the sign; DAZ on the accumulator.
        assert_eq!(
            dpbf16_step(0.0, bf(-p2(-70)), bf(p2(-70))).to_bits(),
            0x8000_0000
        );
        assert_eq!(
            dpbf16_step(f32::from_bits(5), bf(p2(-63)), bf(p2(-63))),
            p2(-126)
        );
        // Product beyond f32 range cancelled by the accumulator stays finite.
        assert_eq!(dpbf16_step(-1.5 * p2(127), bf(p2(64)), bf(p2(64))), p2(126));
        // Invalid -> default NaN; NaN priority a, b, acc.
        assert_eq!(dpbf16_step(0.0, 0x7f80, 0).to_bits(), DEFAULT_NAN);
        assert_eq!(
            dpbf16_step(f32::from_bits(0x7f80_0001), 0x7f81, 0xff82).to_bits(),
            0x7fc1_0000
        );
        assert_eq!(
            dpbf16_step(f32::from_bits(0x7f80_0001), 0x3f80, 0xff82).to_bits(),
            0xffc2_0000
        );
    }
}
