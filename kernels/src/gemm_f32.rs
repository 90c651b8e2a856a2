//! fp32 GEMM `C = A * B (+ bias) (ReLU)` with prepacked B, run-time ISA dispatch (AVX-512 FMA
//! 6x64 tile, AVX2 FMA 6x16 tiles, scalar), threaded like the int8 GEMM. Owns fp32 GEMM only.
//!
//! Packed layout: N in panels of 64 columns (last one zero-padded); panel `p` stores K rows of 64
//! floats (`b[k][64p .. 64p+64]`). A is read in place (row-major, stride `lda`), one broadcast
//! per row and K step. Each output tile is computed over the whole K by one micro-kernel call, so
//! results are identical for any thread count. The ISAs differ in rounding (FMA vs separate
//! multiply and add in scalar), so float results are compared within a tolerance, not bitwise.

use crate::error::{bad, check_matrix, KernelError};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

const NRF: usize = 64;

/// fp32 weights prepacked once for [`gemm_f32`].
#[derive(Clone)]
pub struct PackedBF32 {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl std::fmt::Debug for PackedBF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBF32")
            .field("k", &self.k)
            .field("n", &self.n)
            .finish()
    }
}

impl PackedBF32 {
    /// Packs a `k` x `n` matrix given in `layout` (`KxN` row-major, or `NxK` = transposed).
    pub fn new(
        k: usize,
        n: usize,
        b: &[f32],
        layout: crate::WeightLayout,
    ) -> Result<Self, KernelError> {
        if k.checked_mul(n) != Some(b.len()) {
            return Err(bad(format!(
                "PackedBF32: weights have {} elements, expected {k}*{n}",
                b.len()
            )));
        }
        let panels = n.div_ceil(NRF);
        let mut data = vec![0f32; panels * k * NRF];
        for p in 0..panels {
            for kk in 0..k {
                for j in 0..NRF.min(n - p * NRF) {
                    let col = p * NRF + j;
                    data[(p * k + kk) * NRF + j] = match layout {
                        crate::WeightLayout::KxN => b[kk * n + col],
                        crate::WeightLayout::NxK => b[col * k + kk],
                    };
                }
            }
        }
        Ok(PackedBF32 { k, n, data })
    }
    /// K.
    pub fn k(&self) -> usize {
        self.k
    }
    /// N.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// `out[i][j] = act(sum_k a[i][k] * b[k][j] + bias[j])`, `act` = ReLU if `relu`.
/// A is `m` x K row-major with stride `lda`; `out` has stride `ldc`. Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    kernel: &Kernel,
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedBF32,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    let (n, k) = (b.n, b.k);
    check_matrix("gemm_f32 A", a.len(), m, k, lda)?;
    check_matrix("gemm_f32 output", out.len(), m, n, ldc)?;
    if let Some(bb) = bias {
        if bb.len() != n {
            return Err(bad(format!(
                "gemm_f32: bias has {} values, N = {n}",
                bb.len()
            )));
        }
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let zeros;
    let bias = match bias {
        Some(bb) => bb,
        None => {
            zeros = vec![0f32; n];
            &zeros
        }
    };
    let isa = kernel.isa();
    let mr = 6;
    let panels = n.div_ceil(NRF);
    let threads = rayon::current_num_threads();
    let l2_rows = ((256 * 1024) / (4 * k.max(1))).max(mr) / mr * mr;
    let mut m_blocks = m.div_ceil(l2_rows).max(1);
    let mut n_chunks = 1;
    if threads > 1 {
        n_chunks = panels.min(threads);
        let want = (2 * threads).div_ceil(n_chunks);
        m_blocks = m_blocks.max(want).min(m.div_ceil(mr));
    }
    let mc = m.div_ceil(m_blocks).div_ceil(mr) * mr;
    let pc = panels.div_ceil(n_chunks);
    let mut items = Vec::new();
    for p0 in (0..panels).step_by(pc) {
        for m0 in (0..m).step_by(mc) {
            items.push((m0, (m0 + mc).min(m), p0, (p0 + pc).min(panels)));
        }
    }
    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);
    // SAFETY: work items cover disjoint output blocks.
    unsafe impl Send for SendPtr {}
    unsafe impl Sync for SendPtr {}
    let outp = SendPtr(out.as_mut_ptr());
    let run = |&(m0, m1, p0, p1): &(usize, usize, usize, usize)| {
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw-pointer field
        let outp = outp;
        #[repr(C, align(64))]
        struct Tile([f32; 6 * NRF]);
        let mut tile = Tile([0.0; 6 * NRF]);
        for p in p0..p1 {
            let bp = b.data[p * k * NRF..].as_ptr();
            let j0 = p * NRF;
            let nc = NRF.min(n - j0);
            let mut i = m0;
            while i < m1 {
                let rows = mr.min(m1 - i);
                // SAFETY: Kernel proves the ISA; A rows i..i+rows have k readable floats
                // (check_matrix); the panel has k x 64 floats; the tile has 6 x 64.
                unsafe {
                    micro(
                        isa,
                        rows,
                        nc,
                        k,
                        a.as_ptr().wrapping_add(i * lda),
                        lda,
                        bp,
                        tile.0.as_mut_ptr(),
                    );
                    for r in 0..rows {
                        let o = outp.0.add((i + r) * ldc + j0);
                        for c in 0..nc {
                            let mut v = tile.0[r * NRF + c] + bias[j0 + c];
                            if relu {
                                v = v.max(0.0);
                            }
                            *o.add(c) = v;
                        }
                    }
                }
                i += rows;
            }
        }
    };
    if threads > 1 && items.len() > 1 {
        items.par_iter().for_each(run);
    } else {
        items.iter().for_each(run);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
unsafe fn micro(
    isa: Isa,
    rows: usize,
    nc: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    tile: *mut f32,
) {
    macro_rules! by_rows {
        ($f:ident) => {
            match rows {
                1 => $f::<1>(k, a, lda, b, tile),
                2 => $f::<2>(k, a, lda, b, tile),
                3 => $f::<3>(k, a, lda, b, tile),
                4 => $f::<4>(k, a, lda, b, tile),
                5 => $f::<5>(k, a, lda, b, tile),
                _ => $f::<6>(k, a, lda, b, tile),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    use x86::{avx2, avx512};
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // Only the 16-column vectors a partial panel needs.
            macro_rules! go {
                ($($r:literal),*) => {
                    match (rows, nc.div_ceil(16)) {
                        $(
                            ($r, 1) => avx512::<$r, 1>(k, a, lda, b, tile),
                            ($r, 2) => avx512::<$r, 2>(k, a, lda, b, tile),
                            ($r, 3) => avx512::<$r, 3>(k, a, lda, b, tile),
                            ($r, _) => avx512::<$r, 4>(k, a, lda, b, tile),
                        )*
                        (_, _) => unreachable!("rows {rows}"),
                    }
                };
            }
            go!(1, 2, 3, 4, 5, 6)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => by_rows!(avx2),
        _ => by_rows!(scalar),
    }
}

unsafe fn scalar<const R: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    tile: *mut f32,
) {
    let mut acc = [[0f32; NRF]; R];
    for kk in 0..k {
        let bk = std::slice::from_raw_parts(b.add(kk * NRF), NRF);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = *a.add(r * lda + kk);
            for (c, x) in row.iter_mut().enumerate() {
                *x += av * bk[c];
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        std::ptr::copy_nonoverlapping(row.as_ptr(), tile.add(r * NRF), NRF);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NRF;
    use std::arch::x86_64::*;

    /// SAFETY (both entry points): the caller holds a Kernel proving the features; pointer
    /// ranges as described in `gemm_f32`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub(super) unsafe fn avx512<const R: usize, const C: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        tile: *mut f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut bp = b;
        for kk in 0..k {
            let mut bv = [_mm512_setzero_ps(); C];
            for (c, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(bp.add(16 * c));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                for c in 0..C {
                    acc_r[c] = _mm512_fmadd_ps(av, bv[c], acc_r[c]);
                }
            }
            bp = bp.add(NRF);
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (c, v) in acc_r.iter().enumerate() {
                _mm512_storeu_ps(tile.add(r * NRF + 16 * c), *v);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const R: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        tile: *mut f32,
    ) {
        for chunk in 0..4 {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let mut bp = b.add(16 * chunk);
            for kk in 0..k {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * lda + kk));
                    acc_r[0] = _mm256_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(av, b1, acc_r[1]);
                }
                bp = bp.add(NRF);
            }
            for (r, acc_r) in acc.iter().enumerate() {
                _mm256_storeu_ps(tile.add(r * NRF + 16 * chunk), acc_r[0]);
                _mm256_storeu_ps(tile.add(r * NRF + 16 * chunk + 8), acc_r[1]);
            }
        }
    }
}
