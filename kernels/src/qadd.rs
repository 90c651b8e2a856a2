//! QLinearAdd of two 8-bit tensors of the same shape (ONNX Runtime's contrib op, per-tensor
//! parameters), optionally followed by a 256-entry byte table (a folded
//! `DequantizeLinear -> [Relu] -> QuantizeLinear` chain). Owns this element-wise rule only; the
//! convolution uses it as a fused residual add (`conv2d_u8s8_add`).
//!
//! Rule (identical on every ISA, bit for bit), with `val` the byte read as u8 or i8:
//! ```text
//! xa = ((val(a) - a_zp) as f32) * a_scale          (one f32 multiply, RNE)
//! yb = ((val(b) - b_zp) as f32) * b_scale
//! f  = (xa + yb) / c_scale                          (one f32 add, one IEEE division)
//! q  = clamp(round_half_even(clamp(f, ±2^24)) + c_zp, lo, hi)     ([lo, hi] = type range)
//! out = post[q as byte]  (when a table is given)
//! ```
//! The float clamp to ±2^24 does not change the result (|f| >= 2^24 saturates either way) and keeps
//! the conversion in range; the AVX-512 path clamps in float to `[lo - c_zp, hi - c_zp]` instead
//! (integers, so rounding then adding `c_zp` gives the same clamped value). Scales must be finite, `c_scale > 0` and `|a_scale|, |b_scale| <=
//! 2^100` (checked by [`QAdd::new`]), so `xa + yb` is never NaN. Because `xa + yb == yb + xa` in
//! IEEE arithmetic, swapping the operands together with their parameters gives the same bytes
//! ([`QAdd::swapped`]).
//!
//! SIMD: AVX2 (8 lanes) and AVX-512 (64 bytes per step, widened to 4 x 16 i32 lanes by in-lane
//! unpacks and narrowed back by the inverse packs; the table by two `vpermi2b` when the CPU has
//! AVX512-VBMI, else by a scalar pass over the 64 bytes) use the same IEEE operations
//! (`cvtepi32_ps`, `mul_ps`, `add_ps`, `div_ps`, round-to-nearest-even conversion).

use crate::error::{bad, KernelError};
use crate::isa::{Isa, Kernel};

const CLAMP_F: f32 = 16_777_216.0;

/// Parameters of one QLinearAdd (+ optional byte table).
#[derive(Debug, Clone, PartialEq)]
pub struct QAdd {
    /// (scale, zero point) of operand A.
    pub a: (f32, i32),
    /// (scale, zero point) of operand B.
    pub b: (f32, i32),
    /// (scale, zero point) of the output.
    pub c: (f32, i32),
    /// Operands and output are i8 (else u8).
    pub signed: bool,
    /// Optional table applied to each output byte.
    pub post: Option<Box<[u8; 256]>>,
}

impl QAdd {
    /// Checks the parameters (see the module rule): finite scales, `c > 0`, `|a|, |b| <= 2^100`,
    /// zero points in the type's range.
    pub fn new(
        a: (f32, i32),
        b: (f32, i32),
        c: (f32, i32),
        signed: bool,
        post: Option<&[u8]>,
    ) -> Result<QAdd, KernelError> {
        let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
        let big = 2f32.powi(100);
        for (s, z) in [a, b, c] {
            if !(s.is_finite() && s.abs() <= big && (lo..=hi).contains(&z)) {
                return Err(bad(format!(
                    "qadd: scale {s} / zero point {z} not supported"
                )));
            }
        }
        if c.0 <= 0.0 {
            return Err(bad(format!("qadd: output scale {} must be > 0", c.0)));
        }
        let post = match post {
            None => None,
            Some(t) => Some(Box::new(<[u8; 256]>::try_from(t).map_err(|_| {
                bad(format!("qadd: table has {} entries, not 256", t.len()))
            })?)),
        };
        Ok(QAdd {
            a,
            b,
            c,
            signed,
            post,
        })
    }

    /// Whether `((a - a_zp) * a_s + (b - b_zp) * b_s) / c_s` stays below 2^30 in magnitude for
    /// every operand byte, so it converts to int32 exactly and the clamp to the output type can
    /// be the narrowing packs' saturation instead of a float min/max.
    pub(crate) fn sum_fits_i32(&self) -> bool {
        let bound = 256.0 * (self.a.0.abs() as f64 + self.b.0.abs() as f64) / self.c.0 as f64;
        self.c.0 > 0.0 && bound < (1u64 << 30) as f64
    }

    /// The same add with the operands exchanged (gives the same bytes for exchanged inputs).
    pub fn swapped(&self) -> QAdd {
        QAdd {
            a: self.b,
            b: self.a,
            ..self.clone()
        }
    }

    /// The rule on one pair of bytes (the scalar reference).
    pub fn one(&self, a: u8, b: u8) -> u8 {
        let val = |x: u8| {
            if self.signed {
                x as i8 as i32
            } else {
                x as i32
            }
        };
        let (lo, hi) = if self.signed { (-128, 127) } else { (0, 255) };
        let xa = (val(a) - self.a.1) as f32 * self.a.0;
        let yb = (val(b) - self.b.1) as f32 * self.b.0;
        let f = ((xa + yb) / self.c.0).clamp(-CLAMP_F, CLAMP_F);
        let q = (f.round_ties_even() as i32 + self.c.1).clamp(lo, hi) as u8;
        match &self.post {
            Some(t) => t[q as usize],
            None => q,
        }
    }
}

/// `out[i] = add(a[i], b[i])` (bytes; i8 tensors are passed as their bytes).
pub fn qadd_u8(
    kernel: &Kernel,
    a: &[u8],
    b: &[u8],
    out: &mut [u8],
    q: &QAdd,
) -> Result<(), KernelError> {
    if a.len() != out.len() || b.len() != out.len() {
        return Err(bad(format!(
            "qadd: operands have {} and {} elements, output {}",
            a.len(),
            b.len(),
            out.len()
        )));
    }
    // SAFETY: the three slices have the same length; the Kernel proves the ISA.
    unsafe {
        qadd_raw(
            kernel.isa(),
            a.as_ptr(),
            b.as_ptr(),
            out.as_mut_ptr(),
            out.len(),
            q,
        )
    };
    Ok(())
}

/// [`qadd_u8`] over raw pointers; `out` may equal `a` or `b` (each element is read before it is
/// written, vector by vector).
///
/// # Safety
/// `isa` supported; `a`, `b` readable and `out` writable for `n` bytes.
pub(crate) unsafe fn qadd_raw(
    isa: Isa,
    a: *const u8,
    b: *const u8,
    out: *mut u8,
    n: usize,
    q: &QAdd,
) {
    qadd_rows(
        isa,
        Strided {
            a,
            b,
            out,
            lda: n,
            ldb: n,
            ldo: n,
        },
        1,
        n,
        q,
    )
}

/// Three strided byte matrices: operand A, operand B and the output (row strides in bytes).
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub a: *const u8,
    pub b: *const u8,
    pub out: *mut u8,
    pub lda: usize,
    pub ldb: usize,
    pub ldo: usize,
}

/// [`qadd_raw`] on `rows` rows of `n` bytes (constants set up once for all rows).
///
/// # Safety
/// `isa` supported; for every row `r < rows`, `a + r*lda`, `b + r*ldb` readable and
/// `out + r*ldo` writable for `n` bytes; a row of `out` may equal the same row of `a` or `b`.
pub(crate) unsafe fn qadd_rows(isa: Isa, m: Strided, rows: usize, n: usize, q: &QAdd) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            x86::qadd_avx512(m, rows, n, q, x86::has_vbmi());
            return;
        }
        _ => {}
    }
    for r in 0..rows {
        let (a, b, out) = (m.a.add(r * m.lda), m.b.add(r * m.ldb), m.out.add(r * m.ldo));
        let done = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::qadd_avx2(a, b, out, n, q),
            _ => 0,
        };
        for i in done..n {
            *out.add(i) = q.one(*a.add(i), *b.add(i));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{QAdd, Strided, CLAMP_F};
    use std::arch::x86_64::*;

    pub(crate) fn has_vbmi() -> bool {
        static VBMI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VBMI.get_or_init(|| std::arch::is_x86_feature_detected!("avx512vbmi"))
    }

    /// Constants of the rule, broadcast once per call.
    struct Consts {
        azp: __m512i,
        bzp: __m512i,
        czp: __m512i,
        as_: __m512,
        bs: __m512,
        cs: __m512,
        /// Float clamp bounds `lo - c_zp`, `hi - c_zp`.
        lo: __m512,
        hi: __m512,
    }

    /// The rule on 16 i32 lanes of operand values (already widened).
    #[inline(always)]
    unsafe fn lanes16(k: &Consts, ia: __m512i, ib: __m512i) -> __m512i {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let xa = _mm512_mul_ps(
            _mm512_cvt_roundepi32_ps::<RNE>(_mm512_sub_epi32(ia, k.azp)),
            k.as_,
        );
        let yb = _mm512_mul_ps(
            _mm512_cvt_roundepi32_ps::<RNE>(_mm512_sub_epi32(ib, k.bzp)),
            k.bs,
        );
        let f = _mm512_div_ps(_mm512_add_ps(xa, yb), k.cs);
        // Clamp in float to the integers [lo - c_zp, hi - c_zp], round, add c_zp: equal to
        // clamp(round(f) + c_zp, lo, hi) (the GEMM epilogue's identity).
        let f = _mm512_min_ps(_mm512_max_ps(f, k.lo), k.hi);
        _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), k.czp)
    }

    /// 64 bytes widened to four i32 vectors by in-lane unpacks (zero- or sign-extended). The
    /// element order inside each vector is permuted, but `pack64` applies the exact inverse, so
    /// element-wise work in between lands every result on its own byte.
    #[inline(always)]
    unsafe fn widen64<const SIGNED: bool>(v: __m512i) -> [__m512i; 4] {
        if SIGNED {
            let lo = _mm512_srai_epi16::<8>(_mm512_unpacklo_epi8(v, v));
            let hi = _mm512_srai_epi16::<8>(_mm512_unpackhi_epi8(v, v));
            [
                _mm512_srai_epi32::<16>(_mm512_unpacklo_epi16(lo, lo)),
                _mm512_srai_epi32::<16>(_mm512_unpackhi_epi16(lo, lo)),
                _mm512_srai_epi32::<16>(_mm512_unpacklo_epi16(hi, hi)),
                _mm512_srai_epi32::<16>(_mm512_unpackhi_epi16(hi, hi)),
            ]
        } else {
            let z = _mm512_setzero_si512();
            let lo = _mm512_unpacklo_epi8(v, z);
            let hi = _mm512_unpackhi_epi8(v, z);
            [
                _mm512_unpacklo_epi16(lo, z),
                _mm512_unpackhi_epi16(lo, z),
                _mm512_unpacklo_epi16(hi, z),
                _mm512_unpackhi_epi16(hi, z),
            ]
        }
    }

    /// Inverse of `widen64` for values already inside the 8-bit range (saturating packs never
    /// saturate here).
    #[inline(always)]
    unsafe fn pack64<const SIGNED: bool>(q: [__m512i; 4]) -> __m512i {
        if SIGNED {
            _mm512_packs_epi16(
                _mm512_packs_epi32(q[0], q[1]),
                _mm512_packs_epi32(q[2], q[3]),
            )
        } else {
            _mm512_packus_epi16(
                _mm512_packus_epi32(q[0], q[1]),
                _mm512_packus_epi32(q[2], q[3]),
            )
        }
    }

    /// 256-entry byte table on 64 bytes: two `vpermi2b` (low / high half of the table) and a
    /// blend on the index's top bit.
    #[inline(always)]
    pub(crate) unsafe fn table64(t: &[__m512i; 4], idx: __m512i) -> __m512i {
        let lo = _mm512_permutex2var_epi8(t[0], idx, t[1]);
        let hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi)
    }

    /// SAFETY: AVX-512 F/BW/VL (and VBMI when `vbmi`) supported; `a`, `b` readable and `out`
    /// writable for `n` bytes (masked loads never touch bytes at or past `n`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn run_vbmi(m: Strided, rows: usize, n: usize, q: &QAdd) {
        body(m, rows, n, q, true)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn run_bw(m: Strided, rows: usize, n: usize, q: &QAdd) {
        body(m, rows, n, q, false)
    }

    /// SAFETY: AVX-512 F/BW/VL (and VBMI when `vbmi`) supported; the `qadd_rows` contract
    /// (masked loads never touch bytes at or past `n` in a row).
    pub(super) unsafe fn qadd_avx512(m: Strided, rows: usize, n: usize, q: &QAdd, vbmi: bool) {
        if vbmi && q.post.is_some() {
            run_vbmi(m, rows, n, q)
        } else {
            run_bw(m, rows, n, q)
        }
    }

    #[inline(always)]
    unsafe fn body(m: Strided, rows: usize, n: usize, q: &QAdd, vbmi: bool) {
        if q.signed {
            body_t::<true>(m, rows, n, q, vbmi)
        } else {
            body_t::<false>(m, rows, n, q, vbmi)
        }
    }

    #[inline(always)]
    unsafe fn body_t<const SIGNED: bool>(m: Strided, rows: usize, n: usize, q: &QAdd, vbmi: bool) {
        let (k, table) = setup::<SIGNED>(q, vbmi);
        for r in 0..rows {
            let (a, b) = (m.a.add(r * m.lda), m.b.add(r * m.ldb));
            let out = m.out.add(r * m.ldo);
            row::<SIGNED>(&k, &table, a, b, out, n, q, vbmi);
        }
    }

    /// Broadcast constants and (with VBMI and a table) the table's four registers.
    #[inline(always)]
    unsafe fn setup<const SIGNED: bool>(q: &QAdd, vbmi: bool) -> (Consts, [__m512i; 4]) {
        let (lo, hi) = if SIGNED { (-128, 127) } else { (0, 255) };
        let k = Consts {
            azp: _mm512_set1_epi32(q.a.1),
            bzp: _mm512_set1_epi32(q.b.1),
            czp: _mm512_set1_epi32(q.c.1),
            as_: _mm512_set1_ps(q.a.0),
            bs: _mm512_set1_ps(q.b.0),
            cs: _mm512_set1_ps(q.c.0),
            lo: _mm512_set1_ps((lo - q.c.1) as f32),
            hi: _mm512_set1_ps((hi - q.c.1) as f32),
        };
        let zero = _mm512_setzero_si512();
        let table = match (&q.post, vbmi) {
            (Some(t), true) => {
                let p = t.as_ptr();
                [
                    _mm512_loadu_si512(p as *const _),
                    _mm512_loadu_si512(p.add(64) as *const _),
                    _mm512_loadu_si512(p.add(128) as *const _),
                    _mm512_loadu_si512(p.add(192) as *const _),
                ]
            }
            _ => [zero; 4],
        };
        (k, table)
    }

    /// The add on whole 64-byte rows whose operand A's term `xa = (a - a_zp) * a_s` was computed
    /// in float by the convolution's epilogue (`xa[r][c]` holds columns `16c .. 16c+16` of row
    /// `r` in column order): row `r` = `post[clamp(round((xa + yb) / c_s) + c_zp)]` with `yb`
    /// from `b + r*ldb`, stored at `out + r*ldo`. Same operations as `lanes16` from `xa` on.
    ///
    /// SAFETY: AVX-512 F/BW/VL (and VBMI when `vbmi` and `q.post` is set) supported; `b + r*ldb`
    /// readable and `out + r*ldo` writable for 64 bytes for every `r < xa.len()`.
    pub(crate) unsafe fn add_rows64_xa(
        q: &QAdd,
        xa: &[[__m512; 4]],
        b: *const u8,
        ldb: usize,
        out: *mut u8,
        ldo: usize,
        vbmi: bool,
    ) {
        match (q.signed, vbmi && q.post.is_some()) {
            (false, false) => xa64_bw::<false>(q, xa, b, ldb, out, ldo),
            (true, false) => xa64_bw::<true>(q, xa, b, ldb, out, ldo),
            (false, true) => xa64_vbmi::<false>(q, xa, b, ldb, out, ldo),
            (true, true) => xa64_vbmi::<true>(q, xa, b, ldb, out, ldo),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn xa64_bw<const SIGNED: bool>(
        q: &QAdd,
        xa: &[[__m512; 4]],
        b: *const u8,
        ldb: usize,
        out: *mut u8,
        ldo: usize,
    ) {
        xa64::<SIGNED, false>(q, xa, b, ldb, out, ldo)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn xa64_vbmi<const SIGNED: bool>(
        q: &QAdd,
        xa: &[[__m512; 4]],
        b: *const u8,
        ldb: usize,
        out: *mut u8,
        ldo: usize,
    ) {
        xa64::<SIGNED, true>(q, xa, b, ldb, out, ldo)
    }

    #[inline(always)]
    unsafe fn xa64<const SIGNED: bool, const VBMI: bool>(
        q: &QAdd,
        xa: &[[__m512; 4]],
        b: *const u8,
        ldb: usize,
        out: *mut u8,
        ldo: usize,
    ) {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let (k, table) = setup::<SIGNED>(q, VBMI);
        let fits = q.sum_fits_i32();
        // Column order after the in-lane packs: a 4 x 4 dword transpose (as the GEMM epilogue).
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (r, x) in xa.iter().enumerate() {
            let brow = b.add(r * ldb);
            let mut qv = [_mm512_setzero_si512(); 4];
            for (c, qc) in qv.iter_mut().enumerate() {
                let lb = _mm_loadu_si128(brow.add(16 * c) as *const __m128i);
                let ib = if SIGNED {
                    _mm512_cvtepi8_epi32(lb)
                } else {
                    _mm512_cvtepu8_epi32(lb)
                };
                let yb = _mm512_mul_ps(
                    _mm512_cvt_roundepi32_ps::<RNE>(_mm512_sub_epi32(ib, k.bzp)),
                    k.bs,
                );
                let f = _mm512_div_ps(_mm512_add_ps(x[c], yb), k.cs);
                // With `fits`, |f| < 2^30: round and add the zero point in integers and let the
                // packs' saturation clamp to the type (clamping to integer bounds commutes with
                // rounding: the same bytes as the float clamp).
                let f = if fits {
                    f
                } else {
                    _mm512_min_ps(_mm512_max_ps(f, k.lo), k.hi)
                };
                *qc = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), k.czp);
            }
            // Signed 32 -> 16 saturation first in both cases (exact for any int32).
            let packed = if SIGNED {
                _mm512_packs_epi16(
                    _mm512_packs_epi32(qv[0], qv[1]),
                    _mm512_packs_epi32(qv[2], qv[3]),
                )
            } else {
                _mm512_packus_epi16(
                    _mm512_packs_epi32(qv[0], qv[1]),
                    _mm512_packs_epi32(qv[2], qv[3]),
                )
            };
            let mut v = _mm512_permutexvar_epi32(idx, packed);
            if VBMI {
                v = table64(&table, v);
            }
            let o = out.add(r * ldo);
            _mm512_storeu_si512(o as *mut _, v);
            if !VBMI {
                if let Some(t) = &q.post {
                    for j in 0..64 {
                        *o.add(j) = t[*o.add(j) as usize];
                    }
                }
            }
        }
    }

    /// One row of `n` bytes, 64 per step (masked tail).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row<const SIGNED: bool>(
        k: &Consts,
        table: &[__m512i; 4],
        a: *const u8,
        b: *const u8,
        out: *mut u8,
        n: usize,
        q: &QAdd,
        vbmi: bool,
    ) {
        let mut i = 0;
        while i < n {
            let len = (n - i).min(64);
            let m: __mmask64 = if len == 64 { !0 } else { (1u64 << len) - 1 };
            let (va, vb) = if len == 64 {
                (
                    _mm512_loadu_si512(a.add(i) as *const _),
                    _mm512_loadu_si512(b.add(i) as *const _),
                )
            } else {
                (
                    _mm512_maskz_loadu_epi8(m, a.add(i) as *const i8),
                    _mm512_maskz_loadu_epi8(m, b.add(i) as *const i8),
                )
            };
            let (wa, wb) = (widen64::<SIGNED>(va), widen64::<SIGNED>(vb));
            let mut v = pack64::<SIGNED>([
                lanes16(k, wa[0], wb[0]),
                lanes16(k, wa[1], wb[1]),
                lanes16(k, wa[2], wb[2]),
                lanes16(k, wa[3], wb[3]),
            ]);
            if vbmi {
                v = table64(table, v);
            }
            if len == 64 {
                _mm512_storeu_si512(out.add(i) as *mut _, v);
            } else {
                _mm512_mask_storeu_epi8(out.add(i) as *mut i8, m, v);
            }
            if !vbmi {
                if let Some(t) = &q.post {
                    for j in i..i + len {
                        *out.add(j) = t[*out.add(j) as usize];
                    }
                }
            }
            i += len;
        }
    }

    /// Whole groups of 8; returns how many bytes it did (the rest go to the scalar rule). Uses
    /// the default MXCSR rounding (round-to-nearest-even), which Rust never changes.
    ///
    /// SAFETY: AVX2 supported; pointers valid for `n` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn qadd_avx2(
        a: *const u8,
        b: *const u8,
        out: *mut u8,
        n: usize,
        q: &QAdd,
    ) -> usize {
        let n8 = n / 8 * 8;
        let (azp, bzp, czp) = (
            _mm256_set1_epi32(q.a.1),
            _mm256_set1_epi32(q.b.1),
            _mm256_set1_epi32(q.c.1),
        );
        let (as_, bs, cs) = (
            _mm256_set1_ps(q.a.0),
            _mm256_set1_ps(q.b.0),
            _mm256_set1_ps(q.c.0),
        );
        let (fl, fh) = (_mm256_set1_ps(-CLAMP_F), _mm256_set1_ps(CLAMP_F));
        let (lo, hi) = if q.signed {
            (_mm256_set1_epi32(-128), _mm256_set1_epi32(127))
        } else {
            (_mm256_set1_epi32(0), _mm256_set1_epi32(255))
        };
        // q is in [lo, hi]: take the low byte of each lane.
        let shuf = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let mut i = 0;
        while i < n8 {
            let la = _mm_loadl_epi64(a.add(i) as *const __m128i);
            let lb = _mm_loadl_epi64(b.add(i) as *const __m128i);
            let (ia, ib) = if q.signed {
                (_mm256_cvtepi8_epi32(la), _mm256_cvtepi8_epi32(lb))
            } else {
                (_mm256_cvtepu8_epi32(la), _mm256_cvtepu8_epi32(lb))
            };
            let xa = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(ia, azp)), as_);
            let yb = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(ib, bzp)), bs);
            let r = _mm256_div_ps(_mm256_add_ps(xa, yb), cs);
            let r = _mm256_min_ps(_mm256_max_ps(r, fl), fh);
            let v = _mm256_add_epi32(_mm256_cvtps_epi32(r), czp);
            let v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
            let s = _mm256_shuffle_epi8(v, shuf);
            let lo4 = _mm_cvtsi128_si32(_mm256_castsi256_si128(s)) as u32;
            let hi4 = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(s)) as u32;
            let mut bytes = ((lo4 as u64) | ((hi4 as u64) << 32)).to_le_bytes();
            if let Some(t) = &q.post {
                for x in bytes.iter_mut() {
                    *x = t[*x as usize];
                }
            }
            std::ptr::write_unaligned(out.add(i) as *mut [u8; 8], bytes);
            i += 8;
        }
        n8
    }
}
