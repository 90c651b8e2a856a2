//! Vectorized quantize / dequantize / requantize and the dynamic-quantization scan.
//! Owns element-wise int8 conversions; must not know about GEMM tiles.
//!
//! Rules (identical on every ISA, bit for bit):
//! - quantize (ONNX QuantizeLinear): `q = clamp(round_half_even(clamp(x / scale, ±2^24)) + zp, qmin, qmax)`
//!   (an IEEE division, as ONNX; NaN maps to qmin on every path);
//! - dequantize (ONNX DequantizeLinear): `x = ((q - zp) as f32) * scale`;
//! - requantize int32: the GEMM epilogue rule `clamp(round_half_even(clamp(v as f32 * mult, ±2^24)) + zp, qmin, qmax)`;
//! - dynamic (ONNX DynamicQuantizeLinear, uint8): `min = min(0, min x)`, `max = max(0, max x)`,
//!   `scale = (max - min) / 255`, `zp = round_half_even(clamp(0 - min / scale, 0, 255))`, then
//!   quantize. An all-zero tensor gives `scale = 0`, `zp = 0` and all-zero output (ONNX would
//!   divide by zero). NaN inputs are ignored by the min/max scan.
//!
//! SIMD uses round-to-nearest-even conversions, which is the default MXCSR mode (Rust never
//! changes it); the AVX-512 path encodes the rounding mode explicitly.

use crate::error::{bad, KernelError};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

const CLAMP_F: f32 = 16_777_216.0;

/// Quantization parameters of a tensor: `x ~= scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// Step size (0 only for an all-zero dynamic tensor).
    pub scale: f32,
    /// Zero point in the integer type's range.
    pub zero_point: i32,
}

#[inline(always)]
#[allow(clippy::manual_clamp)] // f32::clamp would keep NaN; max/min map NaN like the SIMD path
fn q_one(x: f32, inv_div: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    let f = (x / inv_div).max(-CLAMP_F).min(CLAMP_F);
    (f.round_ties_even() as i32 + zp).clamp(lo, hi)
}

fn check_len(what: &str, a: usize, b: usize) -> Result<(), KernelError> {
    if a != b {
        return Err(bad(format!("{what}: input has {a} elements, output {b}")));
    }
    Ok(())
}

fn check_scale(what: &str, scale: f32) -> Result<(), KernelError> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(bad(format!("{what}: scale {scale} must be finite and > 0")));
    }
    Ok(())
}

fn check_zp(what: &str, zp: i32, lo: i32, hi: i32) -> Result<(), KernelError> {
    if !(lo..=hi).contains(&zp) {
        return Err(bad(format!("{what}: zero point {zp} outside [{lo}, {hi}]")));
    }
    Ok(())
}

/// Quantizes f32 to u8 (ONNX QuantizeLinear, round half to even).
pub fn quantize_u8(
    kernel: &Kernel,
    x: &[f32],
    scale: f32,
    zero_point: i32,
    out: &mut [u8],
) -> Result<(), KernelError> {
    check_len("quantize_u8", x.len(), out.len())?;
    check_scale("quantize_u8", scale)?;
    check_zp("quantize_u8", zero_point, 0, 255)?;
    // SAFETY: lengths checked equal; u8 and i8 have the same layout; kernel proves the ISA.
    unsafe { quant_dispatch(kernel.isa(), x, scale, zero_point, 0, 255, out.as_mut_ptr()) };
    Ok(())
}

/// Quantizes f32 to s8 (ONNX QuantizeLinear, round half to even).
pub fn quantize_i8(
    kernel: &Kernel,
    x: &[f32],
    scale: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    check_len("quantize_i8", x.len(), out.len())?;
    check_scale("quantize_i8", scale)?;
    check_zp("quantize_i8", zero_point, -128, 127)?;
    // SAFETY: as in quantize_u8.
    unsafe {
        quant_dispatch(
            kernel.isa(),
            x,
            scale,
            zero_point,
            -128,
            127,
            out.as_mut_ptr() as *mut u8,
        )
    };
    Ok(())
}

unsafe fn quant_dispatch(isa: Isa, x: &[f32], scale: f32, zp: i32, lo: i32, hi: i32, out: *mut u8) {
    let done = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => x86::quant_avx512(x, scale, zp, lo, hi, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::quant_avx2(x, scale, zp, lo, hi, out),
        _ => 0,
    };
    for (i, &v) in x.iter().enumerate().skip(done) {
        *out.add(i) = q_one(v, scale, zp, lo, hi) as u8;
    }
}

/// Dequantizes u8: `((q - zp) as f32) * scale`.
pub fn dequantize_u8(
    kernel: &Kernel,
    q: &[u8],
    scale: f32,
    zero_point: i32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("dequantize_u8", q.len(), out.len())?;
    let done = match kernel.isa() {
        // SAFETY: lengths equal; kernel proves the ISA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            x86::deq_avx512(
                q.as_ptr(),
                false,
                q.len(),
                scale,
                zero_point,
                out.as_mut_ptr(),
            )
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            x86::deq_avx2(
                q.as_ptr(),
                false,
                q.len(),
                scale,
                zero_point,
                out.as_mut_ptr(),
            )
        },
        _ => 0,
    };
    for i in done..q.len() {
        out[i] = (q[i] as i32 - zero_point) as f32 * scale;
    }
    Ok(())
}

/// Dequantizes s8: `((q - zp) as f32) * scale`.
pub fn dequantize_i8(
    kernel: &Kernel,
    q: &[i8],
    scale: f32,
    zero_point: i32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("dequantize_i8", q.len(), out.len())?;
    let done = match kernel.isa() {
        // SAFETY: lengths equal; kernel proves the ISA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            x86::deq_avx512(
                q.as_ptr() as *const u8,
                true,
                q.len(),
                scale,
                zero_point,
                out.as_mut_ptr(),
            )
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            x86::deq_avx2(
                q.as_ptr() as *const u8,
                true,
                q.len(),
                scale,
                zero_point,
                out.as_mut_ptr(),
            )
        },
        _ => 0,
    };
    for i in done..q.len() {
        out[i] = (q[i] as i32 - zero_point) as f32 * scale;
    }
    Ok(())
}

/// Requantizes int32 accumulators to u8 with the GEMM epilogue rule (per tensor multiplier).
pub fn requantize_u8(
    kernel: &Kernel,
    x: &[i32],
    mult: f32,
    zero_point: i32,
    out: &mut [u8],
) -> Result<(), KernelError> {
    check_len("requantize_u8", x.len(), out.len())?;
    check_zp("requantize_u8", zero_point, 0, 255)?;
    // SAFETY: lengths equal; kernel proves the ISA.
    unsafe { requant_dispatch(kernel.isa(), x, mult, zero_point, 0, 255, out.as_mut_ptr()) };
    Ok(())
}

/// Requantizes int32 accumulators to s8 with the GEMM epilogue rule (per tensor multiplier).
pub fn requantize_i8(
    kernel: &Kernel,
    x: &[i32],
    mult: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    check_len("requantize_i8", x.len(), out.len())?;
    check_zp("requantize_i8", zero_point, -128, 127)?;
    // SAFETY: as above.
    unsafe {
        requant_dispatch(
            kernel.isa(),
            x,
            mult,
            zero_point,
            -128,
            127,
            out.as_mut_ptr() as *mut u8,
        )
    };
    Ok(())
}

unsafe fn requant_dispatch(
    isa: Isa,
    x: &[i32],
    mult: f32,
    zp: i32,
    lo: i32,
    hi: i32,
    out: *mut u8,
) {
    let done = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => x86::requant_avx512(x, mult, zp, lo, hi, out),
        _ => 0,
    };
    for (i, &v) in x.iter().enumerate().skip(done) {
        *out.add(i) = crate::gemm_u8s8::requant_one(v, mult, zp, lo, hi) as u8;
    }
}

/// Minimum and maximum of `x` (NaNs ignored; `(+inf, -inf)` for an empty or all-NaN slice).
pub fn min_max(kernel: &Kernel, x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi, done) = match kernel.isa() {
        // SAFETY: kernel proves the ISA; reads stay inside `x`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { x86::minmax_avx512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::minmax_avx2(x) },
        _ => (f32::INFINITY, f32::NEG_INFINITY, 0),
    };
    for &v in &x[done..] {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// The uint8 parameters ONNX DynamicQuantizeLinear derives from a tensor's min and max.
pub fn dynamic_qparams_u8(min: f32, max: f32) -> QParams {
    let lo = min.min(0.0);
    let hi = max.max(0.0);
    let scale = (hi - lo) / 255.0;
    if scale == 0.0 || !scale.is_finite() {
        return QParams {
            scale: if scale.is_finite() { 0.0 } else { scale },
            zero_point: 0,
        };
    }
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even() as i32;
    QParams {
        scale,
        zero_point: zp,
    }
}

/// Dynamic quantization of an activation tensor to u8: min/max scan, parameters as ONNX
/// DynamicQuantizeLinear, then quantize. Returns the parameters used.
pub fn dynamic_quantize_u8(
    kernel: &Kernel,
    x: &[f32],
    out: &mut [u8],
) -> Result<QParams, KernelError> {
    check_len("dynamic_quantize_u8", x.len(), out.len())?;
    // Large tensors: both passes split over the current rayon pool (min and max are exact and
    // quantization is element-wise, so the split never changes a bit).
    let threads = rayon::current_num_threads();
    let chunk = (threads > 1 && x.len() >= 32 * 1024)
        .then(|| x.len().div_ceil(2 * threads).next_multiple_of(64));
    let (lo, hi) = match chunk {
        Some(c) => x.par_chunks(c).map(|p| min_max(kernel, p)).reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        ),
        None => min_max(kernel, x),
    };
    let (lo, hi) = if x.is_empty() { (0.0, 0.0) } else { (lo, hi) };
    let p = dynamic_qparams_u8(lo, hi);
    if !p.scale.is_finite() {
        return Err(bad(format!(
            "dynamic_quantize_u8: tensor range [{lo}, {hi}] is not finite"
        )));
    }
    if p.scale == 0.0 {
        out.fill(0);
        return Ok(p);
    }
    match chunk {
        Some(c) => x
            .par_chunks(c)
            .zip(out.par_chunks_mut(c))
            .try_for_each(|(xs, os)| quantize_u8(kernel, xs, p.scale, p.zero_point, os))?,
        None => quantize_u8(kernel, x, p.scale, p.zero_point, out)?,
    }
    Ok(p)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CLAMP_F;
    use std::arch::x86_64::*;
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// SAFETY (all below): the caller holds a Kernel proving the features; each function reads
    /// and writes only indices below the slice length it was given; returns how many it did.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn quant_avx512(
        x: &[f32],
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
        out: *mut u8,
    ) -> usize {
        let (s, z, l, h) = (
            _mm512_set1_ps(scale),
            _mm512_set1_epi32(zp),
            _mm512_set1_epi32(lo),
            _mm512_set1_epi32(hi),
        );
        let (cmin, cmax) = (_mm512_set1_ps(-CLAMP_F), _mm512_set1_ps(CLAMP_F));
        let n = x.len();
        let mut i = 0;
        // 64 values at a time when [lo, hi] is the whole u8 or i8 range: the rounded int32
        // values are narrowed by saturating packs, the zero point added to the int16 packs
        // with saturation, and the type's range is the last pack's saturation. The same bytes
        // as adding zp and clamping in int32 (|round| <= 2^24; a value an int16 step
        // saturates stays beyond [lo, hi] on the same side, as |zp| <= 255), with about half
        // the instructions of the 16-value loop (whose narrowing `vpmovdb` is 2 uops).
        let (u8_range, i8_range) = ((lo, hi) == (0, 255), (lo, hi) == (-128, 127));
        if u8_range || i8_range {
            let zp16 = _mm512_set1_epi16(zp as i16);
            let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            while i + 64 <= n {
                let mut q = [_mm512_setzero_si512(); 4];
                for (c, qc) in q.iter_mut().enumerate() {
                    let f = _mm512_div_ps(_mm512_loadu_ps(x.as_ptr().add(i + 16 * c)), s);
                    let f = _mm512_min_ps(_mm512_max_ps(f, cmin), cmax);
                    *qc = _mm512_cvt_roundps_epi32::<RNE>(f);
                }
                let w0 = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zp16);
                let w1 = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zp16);
                let b = if u8_range {
                    _mm512_packus_epi16(w0, w1)
                } else {
                    _mm512_packs_epi16(w0, w1)
                };
                _mm512_storeu_si512(out.add(i) as *mut _, _mm512_permutexvar_epi32(idx, b));
                i += 64;
            }
        }
        // Whole vectors: plain loads and 16-byte stores (masked narrowing stores are slow on
        // Zen 4); the same operations as the masked tail below.
        while i + 16 <= n {
            let f = _mm512_div_ps(_mm512_loadu_ps(x.as_ptr().add(i)), s);
            let f = _mm512_min_ps(_mm512_max_ps(f, cmin), cmax);
            let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), z);
            let q = _mm512_max_epi32(_mm512_min_epi32(q, h), l);
            _mm_storeu_si128(out.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(q));
            i += 16;
        }
        while i < n {
            let rem = n - i;
            let m: __mmask16 = if rem >= 16 {
                0xFFFF
            } else {
                ((1u32 << rem) - 1) as u16
            };
            let f = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x.as_ptr().add(i)), s);
            let f = _mm512_min_ps(_mm512_max_ps(f, cmin), cmax);
            let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), z);
            let q = _mm512_max_epi32(_mm512_min_epi32(q, h), l);
            _mm_mask_storeu_epi8(out.add(i) as *mut i8, m, _mm512_cvtepi32_epi8(q));
            i += 16;
        }
        n
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn requant_avx512(
        x: &[i32],
        mult: f32,
        zp: i32,
        lo: i32,
        hi: i32,
        out: *mut u8,
    ) -> usize {
        let (s, z, l, h) = (
            _mm512_set1_ps(mult),
            _mm512_set1_epi32(zp),
            _mm512_set1_epi32(lo),
            _mm512_set1_epi32(hi),
        );
        let (cmin, cmax) = (_mm512_set1_ps(-CLAMP_F), _mm512_set1_ps(CLAMP_F));
        let n = x.len();
        let mut i = 0;
        while i < n {
            let rem = n - i;
            let m: __mmask16 = if rem >= 16 {
                0xFFFF
            } else {
                ((1u32 << rem) - 1) as u16
            };
            let v = _mm512_maskz_loadu_epi32(m, x.as_ptr().add(i));
            let f = _mm512_mul_ps(_mm512_cvt_roundepi32_ps::<RNE>(v), s);
            let f = _mm512_min_ps(_mm512_max_ps(f, cmin), cmax);
            let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), z);
            let q = _mm512_max_epi32(_mm512_min_epi32(q, h), l);
            _mm_mask_storeu_epi8(out.add(i) as *mut i8, m, _mm512_cvtepi32_epi8(q));
            i += 16;
        }
        n
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn deq_avx512(
        q: *const u8,
        signed: bool,
        n: usize,
        scale: f32,
        zp: i32,
        out: *mut f32,
    ) -> usize {
        let (s, z) = (_mm512_set1_ps(scale), _mm512_set1_epi32(zp));
        let mut i = 0;
        while i < n {
            let rem = n - i;
            let m: __mmask16 = if rem >= 16 {
                0xFFFF
            } else {
                ((1u32 << rem) - 1) as u16
            };
            let b = _mm_maskz_loadu_epi8(m, q.add(i) as *const i8);
            let w = if signed {
                _mm512_cvtepi8_epi32(b)
            } else {
                _mm512_cvtepu8_epi32(b)
            };
            let f = _mm512_mul_ps(_mm512_cvt_roundepi32_ps::<RNE>(_mm512_sub_epi32(w, z)), s);
            _mm512_mask_storeu_ps(out.add(i), m, f);
            i += 16;
        }
        n
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn minmax_avx512(x: &[f32]) -> (f32, f32, usize) {
        let mut lo = _mm512_set1_ps(f32::INFINITY);
        let mut hi = _mm512_set1_ps(f32::NEG_INFINITY);
        let n = x.len() / 16 * 16;
        let mut i = 0;
        // Four independent accumulator pairs (min/max latency, not loads, bounds one pair);
        // min and max are exact, so the order of combination does not change the result.
        let (mut lo2, mut hi2) = (lo, hi);
        let (mut lo3, mut hi3) = (lo, hi);
        let (mut lo4, mut hi4) = (lo, hi);
        while i + 64 <= n {
            let p = x.as_ptr().add(i);
            let (a, b, c, d) = (
                _mm512_loadu_ps(p),
                _mm512_loadu_ps(p.add(16)),
                _mm512_loadu_ps(p.add(32)),
                _mm512_loadu_ps(p.add(48)),
            );
            lo = _mm512_min_ps(a, lo);
            hi = _mm512_max_ps(a, hi);
            lo2 = _mm512_min_ps(b, lo2);
            hi2 = _mm512_max_ps(b, hi2);
            lo3 = _mm512_min_ps(c, lo3);
            hi3 = _mm512_max_ps(c, hi3);
            lo4 = _mm512_min_ps(d, lo4);
            hi4 = _mm512_max_ps(d, hi4);
            i += 64;
        }
        // (No NaN can be in the accumulators: each keeps its old value when v is NaN.)
        lo = _mm512_min_ps(_mm512_min_ps(lo2, lo), _mm512_min_ps(lo3, lo4));
        hi = _mm512_max_ps(_mm512_max_ps(hi2, hi), _mm512_max_ps(hi3, hi4));
        while i < n {
            let v = _mm512_loadu_ps(x.as_ptr().add(i));
            // (v, acc) order: a NaN in v yields acc, so NaNs are ignored as in f32::min/max.
            lo = _mm512_min_ps(v, lo);
            hi = _mm512_max_ps(v, hi);
            i += 16;
        }
        let (mut l, mut h) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut la = [0f32; 16];
        let mut ha = [0f32; 16];
        _mm512_storeu_ps(la.as_mut_ptr(), lo);
        _mm512_storeu_ps(ha.as_mut_ptr(), hi);
        for t in 0..16 {
            l = l.min(la[t]);
            h = h.max(ha[t]);
        }
        (l, h, n)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn minmax_avx2(x: &[f32]) -> (f32, f32, usize) {
        let mut lo = _mm256_set1_ps(f32::INFINITY);
        let mut hi = _mm256_set1_ps(f32::NEG_INFINITY);
        let n = x.len() / 8 * 8;
        let mut i = 0;
        while i < n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            // (v, acc) order: a NaN in v yields acc, so NaNs are ignored as in f32::min/max.
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
            i += 8;
        }
        let mut la = [0f32; 8];
        let mut ha = [0f32; 8];
        _mm256_storeu_ps(la.as_mut_ptr(), lo);
        _mm256_storeu_ps(ha.as_mut_ptr(), hi);
        let l = la.iter().cloned().fold(f32::INFINITY, f32::min);
        let h = ha.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        (l, h, n)
    }

    /// Packs 8 int32 lanes already inside the 8-bit range into 8 bytes at `dst`.
    #[inline(always)]
    pub(crate) unsafe fn store8_avx2(q: __m256i, dst: *mut u8) {
        let shuf = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let s = _mm256_shuffle_epi8(q, shuf);
        let lo4 = _mm_cvtsi128_si32(_mm256_castsi256_si128(s)) as u32;
        let hi4 = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(s)) as u32;
        std::ptr::write_unaligned(
            dst as *mut u64,
            ((lo4 as u64) | ((hi4 as u64) << 32)).to_le(),
        );
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quant_avx2(
        x: &[f32],
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
        out: *mut u8,
    ) -> usize {
        let (s, z, l, h) = (
            _mm256_set1_ps(scale),
            _mm256_set1_epi32(zp),
            _mm256_set1_epi32(lo),
            _mm256_set1_epi32(hi),
        );
        let (cmin, cmax) = (_mm256_set1_ps(-CLAMP_F), _mm256_set1_ps(CLAMP_F));
        let n = x.len() / 8 * 8;
        let mut i = 0;
        while i < n {
            let f = _mm256_div_ps(_mm256_loadu_ps(x.as_ptr().add(i)), s);
            let f = _mm256_min_ps(_mm256_max_ps(f, cmin), cmax);
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(f), z);
            store8_avx2(_mm256_max_epi32(_mm256_min_epi32(q, h), l), out.add(i));
            i += 8;
        }
        n
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn deq_avx2(
        q: *const u8,
        signed: bool,
        n: usize,
        scale: f32,
        zp: i32,
        out: *mut f32,
    ) -> usize {
        let (s, z) = (_mm256_set1_ps(scale), _mm256_set1_epi32(zp));
        let n8 = n / 8 * 8;
        let mut i = 0;
        while i < n8 {
            let b = _mm_loadl_epi64(q.add(i) as *const __m128i);
            let w = if signed {
                _mm256_cvtepi8_epi32(b)
            } else {
                _mm256_cvtepu8_epi32(b)
            };
            _mm256_storeu_ps(
                out.add(i),
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(w, z)), s),
            );
            i += 8;
        }
        n8
    }
}
