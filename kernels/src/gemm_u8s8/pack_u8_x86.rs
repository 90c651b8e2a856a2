//! AVX-512 packing of a run-time u8 `K x N` operand (attention's `K^T` and `V`, packed every
//! run) into [`super::PackedB`]'s layout, with its column sums: the same bytes and sums as the
//! scalar `PackedB::pack` with `get(i) = b[i] ^ 0x80`.
//!
//! Per K-group of 4 source rows and 64 columns: four 64-byte loads (masked past `k` or `n`,
//! so padding stays 0), the `^ 0x80` on the loaded bytes only, a 4-way byte interleave (two
//! rounds of in-lane unpacks, then a 4 x 4 transpose of 128-bit lanes), four stores, and the
//! column sums by `vpdpbusd` of the packed dwords against bytes of 1 (the sum of a dword's
//! four s8 values). About 40 instructions per 256 bytes instead of a bounds-checked scatter
//! per byte.

use std::arch::x86_64::*;

/// Whether [`pack_kxn_u8`] may run: the active ISA (the CPU's, capped by `OCTET_ISA`, so a
/// capped run emulates an older CPU here too) is AVX512-VNNI.
pub(super) fn available() -> bool {
    crate::isa::Isa::active() == Ok(crate::isa::Isa::Avx512Vnni)
}

/// Packs `b` (`k x n` row-major u8) as s8 `b ^ 0x80` into `d` (`panels * kp * 64` bytes,
/// zeroed by the caller) and writes `col_sums[j]` (the sum of column j's s8 values).
///
/// # Safety
/// [`available`] is true; `b.len() == k * n`; `d.len() == n.div_ceil(64) * kp * 64` with
/// `kp = k.div_ceil(4) * 4`; `col_sums.len() == n`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn pack_kxn_u8(k: usize, n: usize, b: &[u8], d: &mut [u8], col_sums: &mut [i32]) {
    debug_assert_eq!(b.len(), k * n);
    let kp = k.div_ceil(4) * 4;
    let ones = _mm512_set1_epi8(1);
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let src = b.as_ptr();
    for (p, sums) in col_sums.chunks_mut(64).enumerate() {
        let j0 = 64 * p;
        let cols = sums.len();
        let cm: __mmask64 = if cols == 64 { !0 } else { (1u64 << cols) - 1 };
        let fm = _mm512_maskz_mov_epi8(cm, flip);
        let dst = d.as_mut_ptr().add(p * kp * 64);
        let mut acc = [_mm512_setzero_si512(); 4];
        for g in 0..kp / 4 {
            // (A macro, not a closure: closures do not inherit target features.)
            macro_rules! row {
                ($t:expr) => {{
                    let kk = 4 * g + $t;
                    if kk < k {
                        let v = _mm512_maskz_loadu_epi8(cm, src.add(kk * n + j0) as *const i8);
                        _mm512_xor_si512(v, fm)
                    } else {
                        _mm512_setzero_si512()
                    }
                }};
            }
            let (r0, r1, r2, r3) = (row!(0), row!(1), row!(2), row!(3));
            // Lane l of a/b: columns 16l..16l+8 / 16l+8..16l+16 as (r0, r1) byte pairs; c/d
            // the same for (r2, r3). Then e0..e3: lane l holds columns 16l+4i..16l+4i+4 as
            // dwords (r0, r1, r2, r3).
            let (a, bb) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
            let (c, dd) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
            let e0 = _mm512_unpacklo_epi16(a, c);
            let e1 = _mm512_unpackhi_epi16(a, c);
            let e2 = _mm512_unpacklo_epi16(bb, dd);
            let e3 = _mm512_unpackhi_epi16(bb, dd);
            // Output vector q (columns 16q..16q+16) = lane q of e0, e1, e2, e3.
            let t0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(e0, e1);
            let t1 = _mm512_shuffle_i32x4::<0b01_00_01_00>(e2, e3);
            let t2 = _mm512_shuffle_i32x4::<0b11_10_11_10>(e0, e1);
            let t3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(e2, e3);
            let out = [
                _mm512_shuffle_i32x4::<0b10_00_10_00>(t0, t1),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(t0, t1),
                _mm512_shuffle_i32x4::<0b10_00_10_00>(t2, t3),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(t2, t3),
            ];
            let gdst = dst.add(g * 256);
            for (q, v) in out.iter().enumerate() {
                _mm512_storeu_si512(gdst.add(64 * q) as *mut _, *v);
                acc[q] = _mm512_dpbusd_epi32(acc[q], ones, *v);
            }
        }
        for (q, v) in acc.iter().enumerate() {
            if 16 * q < cols {
                let m: __mmask16 = if cols >= 16 * (q + 1) {
                    !0
                } else {
                    ((1u32 << (cols - 16 * q)) - 1) as u16
                };
                _mm512_mask_storeu_epi32(sums.as_mut_ptr().add(16 * q), m, *v);
            }
        }
    }
}
