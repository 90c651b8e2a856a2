//! fp32 matrix transpose (NCHW <-> NHWC of one image), blocked for the caches, with an AVX2
//! 8 x 8 register transpose on AVX2 and above. Pure data movement: every path gives the same
//! bits. Owns the f32 layout change only.

use crate::error::{bad, KernelError};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

/// `dst` (`cols` x `rows`, row-major) = the transpose of `src` (`rows` x `cols`, row-major).
/// For one NCHW image `rows = C, cols = H*W` gives NHWC; `rows = H*W, cols = C` goes back.
pub fn transpose_f32(
    kernel: &Kernel,
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
) -> Result<(), KernelError> {
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| bad("transpose_f32: size overflows usize"))?;
    if src.len() < n || dst.len() < n {
        return Err(bad(format!(
            "transpose_f32: {rows}x{cols} needs {n} elements, src has {}, dst {}",
            src.len(),
            dst.len()
        )));
    }
    if n == 0 {
        return Ok(());
    }
    let simd = matches!(kernel.isa(), Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni);
    // Destination rows c0..c0+16 are one contiguous chunk: chunks are independent (in parallel
    // on the current rayon pool when it has several threads and the matrix is large).
    let chunk = B * rows;
    let run = |(ci, d): (usize, &mut [f32])| block_column(simd, src, rows, cols, ci * B, d);
    if rayon::current_num_threads() > 1 && n >= 1 << 16 {
        dst[..n].par_chunks_mut(chunk).enumerate().for_each(run);
    } else {
        dst[..n].chunks_mut(chunk).enumerate().for_each(run);
    }
    Ok(())
}

/// 16 x 16 blocks (8 x 8 register tiles inside on AVX2): the 16 source rows of a block and the 16
/// destination rows stay in L1.
const B: usize = 16;

/// Destination rows `c0..c0 + d.len() / rows` (source columns), all source rows.
fn block_column(simd: bool, src: &[f32], rows: usize, cols: usize, c0: usize, d: &mut [f32]) {
    let c1 = c0 + d.len() / rows;
    for r0 in (0..rows).step_by(B) {
        let r1 = (r0 + B).min(rows);
        if simd && r1 - r0 == B && c1 - c0 == B {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller holds a Kernel proving AVX2; the 16 x 16 block is inside `src`
            // (rows x cols, length checked) and `d` (16 rows of `rows` floats).
            unsafe {
                for (dr, dc) in [(0, 0), (0, 8), (8, 0), (8, 8)] {
                    x86::tile8(
                        src.as_ptr().add((r0 + dr) * cols + c0 + dc),
                        cols,
                        d.as_mut_ptr().add(dc * rows + r0 + dr),
                        rows,
                    );
                }
                continue;
            }
        }
        for c in c0..c1 {
            let dd = &mut d[(c - c0) * rows + r0..(c - c0) * rows + r1];
            for (r, v) in (r0..r1).zip(dd.iter_mut()) {
                *v = src[r * cols + c];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 x 8 transpose: `d[j * ldd + i] = s[i * lds + j]`.
    /// SAFETY: AVX2 present; 8 rows of 8 readable floats at `s` (stride `lds`), 8 rows of 8
    /// writable floats at `d` (stride `ldd`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile8(s: *const f32, lds: usize, d: *mut f32, ldd: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * lds)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let o = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, v) in o.iter().enumerate() {
            _mm256_storeu_ps(d.add(j * ldd), *v);
        }
    }
}
