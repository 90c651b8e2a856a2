//! Three byte planes to interleaved bytes (a 3-channel NCHW image row to NHWC), each byte XORed
//! with `flip` (0x80 shifts s8 to u8). Owns this data movement only; the engine converts the
//! model input of a 3-channel first convolution with it.
//!
//! AVX-512 VBMI: 64 pixels per step, each 64-byte output vector one `vpermt2b` of the first two
//! planes blended with one `vpermb` of the third; other ISAs and the tail: the scalar loop.

use crate::isa::{Isa, Kernel};

/// `out[3 i + c] = planes[c][i] ^ flip` for `i < n`, `n = out.len() / 3`; every plane holds at
/// least `n` bytes.
///
/// # Panics
/// If a plane is shorter than `out.len() / 3`.
pub fn interleave3_u8(kernel: &Kernel, planes: [&[u8]; 3], out: &mut [u8], flip: u8) {
    let n = out.len() / 3;
    let [a, b, c] = planes.map(|p| &p[..n]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel.isa(), Isa::Avx512 | Isa::Avx512Vnni) && x86::has_vbmi() {
        // SAFETY: AVX-512 BW and VBMI are present (the Kernel and the check above); the three
        // planes hold n bytes and `out` 3 n; only whole 64-pixel blocks are touched.
        done = unsafe { x86::blocks(a, b, c, out, flip) };
    }
    let _ = kernel;
    for (((d, &x), &y), &z) in out[3 * done..]
        .chunks_exact_mut(3)
        .zip(&a[done..])
        .zip(&b[done..])
        .zip(&c[done..])
    {
        d[0] = x ^ flip;
        d[1] = y ^ flip;
        d[2] = z ^ flip;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub(super) fn has_vbmi() -> bool {
        static VBMI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VBMI.get_or_init(|| std::arch::is_x86_feature_detected!("avx512vbmi"))
    }

    /// (vpermt2b indices per output vector, vpermb indices, blend masks).
    type Tables = ([[u8; 64]; 3], [[u8; 64]; 3], [u64; 3]);

    /// Output vector `k` (bytes 64 k .. 64 k + 64 of a 192-byte block): byte `j` is pixel
    /// `(64 k + j) / 3`, channel `(64 k + j) % 3`. Indices into (plane 0 ++ plane 1) for
    /// channels 0 / 1, into plane 2 for channel 2 (blended where the mask bit is set).
    fn tables() -> &'static Tables {
        static T: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
        T.get_or_init(|| {
            let (mut ab, mut c, mut m) = ([[0u8; 64]; 3], [[0u8; 64]; 3], [0u64; 3]);
            for k in 0..3 {
                for j in 0..64 {
                    let g = 64 * k + j;
                    let (px, ch) = ((g / 3) as u8, g % 3);
                    match ch {
                        0 => ab[k][j] = px,
                        1 => ab[k][j] = 64 + px,
                        _ => {
                            c[k][j] = px;
                            m[k] |= 1 << j;
                        }
                    }
                }
            }
            (ab, c, m)
        })
    }

    /// Whole 64-pixel blocks; returns the pixels done.
    ///
    /// SAFETY: AVX-512 F/BW and VBMI; `a`, `b`, `c` hold n bytes, `out` at least 3 n.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn blocks(a: &[u8], b: &[u8], c: &[u8], out: &mut [u8], flip: u8) -> usize {
        let (ab_t, c_t, m_t) = tables();
        let ld = |t: &[u8; 64]| _mm512_loadu_si512(t.as_ptr() as *const _);
        let (iab, ic) = (
            [ld(&ab_t[0]), ld(&ab_t[1]), ld(&ab_t[2])],
            [ld(&c_t[0]), ld(&c_t[1]), ld(&c_t[2])],
        );
        let f = _mm512_set1_epi8(flip as i8);
        let n = a.len() / 64 * 64;
        let op = out.as_mut_ptr();
        for i in (0..n).step_by(64) {
            let va = _mm512_loadu_si512(a.as_ptr().add(i) as *const _);
            let vb = _mm512_loadu_si512(b.as_ptr().add(i) as *const _);
            let vc = _mm512_loadu_si512(c.as_ptr().add(i) as *const _);
            for k in 0..3 {
                let t = _mm512_permutex2var_epi8(va, iab[k], vb);
                let u = _mm512_permutexvar_epi8(ic[k], vc);
                let r = _mm512_xor_si512(_mm512_mask_blend_epi8(m_t[k], t, u), f);
                _mm512_storeu_si512(op.add(3 * i + 64 * k) as *mut _, r);
            }
        }
        n
    }
}
