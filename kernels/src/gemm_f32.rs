//! fp32 GEMM `C = A * B (+ bias) (ReLU)` with prepacked B, run-time ISA dispatch (AVX-512 FMA
//! 6x64 tile, AVX2 FMA 6x16 tiles, scalar), threaded like the int8 GEMM. Owns fp32 GEMM only.
//!
//! Packed layout: N in panels of 64 columns (last one zero-padded); panel `p` stores K rows of 64
//! floats (`b[k][64p .. 64p+64]`). A is read in place (row-major, stride `lda`), one broadcast
//! per row and K step. Each output tile is computed over the whole K by one micro-kernel call, so
//! results are identical for any thread count. The ISAs differ in rounding (FMA vs separate
//! multiply and add in scalar), so float results are compared within a tolerance, not bitwise.

use crate::aligned::AlignedBytes;
use crate::error::{bad, check_matrix, KernelError};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

const NRF: usize = 64;

/// fp32 weights prepacked once for [`gemm_f32`].
#[derive(Clone)]
pub struct PackedBF32 {
    k: usize,
    n: usize,
    /// `panels * k * 64` floats.
    data: AlignedBytes,
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
        let bytes = panels
            .checked_mul(k)
            .and_then(|v| v.checked_mul(NRF * 4))
            .ok_or_else(|| bad("PackedBF32: size overflows usize"))?;
        let mut bytes = AlignedBytes::zeroed(bytes);
        let data = bytes.as_f32_mut();
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
        Ok(PackedBF32 { k, n, data: bytes })
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
    check_matrix("gemm_f32 A", a.len(), m, b.k, lda)?;
    gemm_core(
        kernel,
        m,
        ASrc::Rows { a, lda },
        b,
        bias,
        None,
        relu,
        out,
        ldc,
    )
}

/// Where the micro-kernel reads row `r` of A.
#[derive(Clone, Copy)]
pub(crate) enum ASrc<'a> {
    /// Row-major, stride `lda` (validated by the caller).
    Rows { a: &'a [f32], lda: usize },
    /// Row `r` is `segs` segments of `seg` contiguous floats each (K = segs * seg), segment `s`
    /// starting at `ptrs[r * segs + s]`. The caller guarantees every pointer is valid for `seg`
    /// reads for the duration of the call (conv_f32's indirection buffer).
    Segs {
        ptrs: &'a [*const f32],
        segs: usize,
        seg: usize,
    },
}

/// K above 1.5 * KC is cut into blocks of at most about KC steps (a 64-column panel block is
/// then 512 KiB, kept in L2 while every row tile of the work item reuses it). Partial sums go
/// through the output and the next block continues the same FMA chain from them, so the result
/// is bit-identical to an uncut K (f32 stores and loads are exact). Measured (1 thread):
/// 49x512x25088 (51 MB of weights, streamed from DRAM once per 6-row tile without blocking)
/// 32-47 -> 52-93 GFLOPS; a 512-step block cost ~8% on 3x3 512->512 at 7x7 (K = 4608, weights
/// in L3), 2048 did not.
const KC: usize = 2048;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: work items cover disjoint output blocks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[derive(Clone, Copy)]
struct SyncSrc<'a>(ASrc<'a>);
// SAFETY: the pointers of `Segs` are only read through (the caller guarantees they stay valid
// and point at data nobody writes during the call).
unsafe impl Send for SyncSrc<'_> {}
unsafe impl Sync for SyncSrc<'_> {}

/// The GEMM driver behind [`gemm_f32`] and `conv2d_f32`: validated output and bias, any A source.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_core(
    kernel: &Kernel,
    m: usize,
    src: ASrc<'_>,
    b: &PackedBF32,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    let threads = rayon::current_num_threads();
    gemm_core_on(kernel, m, src, b, bias, res, relu, out, ldc, threads)
}

/// [`gemm_core`] split for `threads` workers (1: on the calling thread, for callers that
/// already parallelise over whole calls). The result does not depend on `threads`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_core_on(
    kernel: &Kernel,
    m: usize,
    src: ASrc<'_>,
    b: &PackedBF32,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    ldc: usize,
    threads: usize,
) -> Result<(), KernelError> {
    let (n, k) = (b.n, b.k);
    check_matrix("gemm_f32 output", out.len(), m, n, ldc)?;
    if let Some(r) = res {
        check_matrix("gemm_f32 residual", r.len(), m, n, ldc)?;
    }
    if let Some(bb) = bias {
        if bb.len() != n {
            return Err(bad(format!(
                "gemm_f32: bias has {} values, N = {n}",
                bb.len()
            )));
        }
    }
    if let ASrc::Segs { ptrs, segs, seg } = src {
        if segs.checked_mul(seg) != Some(k) || m.checked_mul(segs).is_none_or(|t| ptrs.len() < t) {
            return Err(bad(
                "gemm_f32: indirection buffer does not match K".to_string()
            ));
        }
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let isa = kernel.isa();
    let mr = 6;
    let panels = n.div_ceil(NRF);
    let nkb = if k <= 3 * KC / 2 { 1 } else { k.div_ceil(KC) };
    let kc = k.div_ceil(nkb).max(1);
    // A row block: about 256 KiB of A per K block, so it stays in L2 while the panels stream.
    let l2_rows = ((256 * 1024) / (4 * kc)).max(mr) / mr * mr;
    let mut m_blocks = m.div_ceil(l2_rows).max(1);
    let mut n_chunks = 1;
    if threads > 1 {
        n_chunks = panels.min(threads);
        let want = (2 * threads).div_ceil(n_chunks);
        m_blocks = m_blocks.max(want).min(m.div_ceil(mr));
    }
    let mc = m.div_ceil(m_blocks).div_ceil(mr) * mr;
    let pc = panels.div_ceil(n_chunks);
    // (m0, m1, p0, p1) per item, in a per-thread reused buffer (no allocation per call).
    let nm = m.div_ceil(mc);
    let items = crate::scratch::ScratchVec::from_fn(panels.div_ceil(pc) * nm, |i| {
        let (p0, m0) = ((i / nm) * pc, (i % nm) * mc);
        [m0, (m0 + mc).min(m), p0, (p0 + pc).min(panels)]
    });
    let outp = SendPtr(out.as_mut_ptr());
    let src = SyncSrc(src);
    let bias_ptr = bias.map_or(std::ptr::null(), |bb| bb.as_ptr()) as usize;
    let res_ptr = res.map_or(std::ptr::null(), |r| r.as_ptr()) as usize;
    let run = |&[m0, m1, p0, p1]: &[usize; 4]| {
        #[allow(clippy::redundant_locals)] // capture the Send wrappers, not their fields
        let (outp, src) = (outp, src);
        for kb in 0..nkb {
            let (k0, k1) = (kb * kc, ((kb + 1) * kc).min(k));
            for p in p0..p1 {
                let j0 = p * NRF;
                let job = Job {
                    k0,
                    k1,
                    b: b.data.as_f32()[(p * k + k0) * NRF..].as_ptr(),
                    out: std::ptr::null_mut(),
                    ldc,
                    nc: NRF.min(n - j0),
                    first: kb == 0,
                    last: kb + 1 == nkb,
                    bias: if bias_ptr == 0 {
                        std::ptr::null()
                    } else {
                        (bias_ptr as *const f32).wrapping_add(j0)
                    },
                    res: std::ptr::null(),
                    relu,
                    pf: std::ptr::null(),
                    pf_n: 0,
                };
                // The block after this one in the item (next panel, else the next K block) is
                // prefetched into L2 while this one is computed: its first row tiles each take a
                // share, a line (up to 4 when there are fewer than 4 tiles) per K step, so the
                // weights, which stream from DRAM on every run, are not waited for by the next
                // block's first tile. (A burst per tile stalls the core instead: measured
                // slower.) ResNet-50 fp32, 1 thread: 79.45 -> 78.76 ms (4 interleaved pairs).
                let next = if p + 1 < p1 {
                    Some((p + 1, k0, k1))
                } else if kb + 1 < nkb {
                    Some((p0, k1, ((kb + 2) * kc).min(k)))
                } else {
                    None
                };
                let tiles = (m1 - m0).div_ceil(mr);
                let lines = next.map_or(0, |(_, a, z)| (z - a) * NRF * 4 / 64);
                let per_step = if lines > 0 {
                    lines.div_ceil(tiles * (k1 - k0)).min(4)
                } else {
                    0
                };
                let mut i = m0;
                while i < m1 {
                    let rows = mr.min(m1 - i);
                    let t = (i - m0) / mr;
                    let (pf, pf_n) = match next {
                        Some((pn, a, _)) if per_step > 0 && t * per_step * (k1 - k0) < lines => (
                            (b.data.as_f32()[(pn * k + a) * NRF..].as_ptr() as *const u8)
                                .wrapping_add(t * per_step * (k1 - k0) * 64),
                            per_step,
                        ),
                        _ => (std::ptr::null(), 0),
                    };
                    let job = Job {
                        pf,
                        pf_n,
                        out: outp.0.wrapping_add(i * ldc + j0),
                        res: if res_ptr == 0 {
                            std::ptr::null()
                        } else {
                            (res_ptr as *const f32).wrapping_add(i * ldc + j0)
                        },
                        ..job
                    };
                    // SAFETY: Kernel proves the ISA; rows i..i+rows of A have K readable floats
                    // (check_matrix or the Segs contract); the panel block has (k1-k0) x 64
                    // floats; output rows i..i+rows, columns j0..j0+nc are in bounds
                    // (check_matrix) and owned by this work item.
                    unsafe {
                        match src.0 {
                            ASrc::Rows { a, lda } => micro(
                                isa,
                                rows,
                                Dense {
                                    a: a.as_ptr().wrapping_add(i * lda),
                                    lda,
                                    k,
                                },
                                &job,
                            ),
                            ASrc::Segs { ptrs, segs, seg } => micro(
                                isa,
                                rows,
                                Ind {
                                    p: ptrs.as_ptr().add(i * segs),
                                    segs,
                                    seg,
                                },
                                &job,
                            ),
                        }
                    }
                    i += rows;
                }
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

/// One micro-kernel call: K steps `k0..k1` of an R-row tile against one panel block.
#[derive(Clone, Copy)]
struct Job {
    k0: usize,
    k1: usize,
    /// Panel data at K step `k0`.
    b: *const f32,
    /// Output tile (row 0, panel column 0), row stride `ldc`.
    out: *mut f32,
    ldc: usize,
    /// Valid columns of the panel (1..=64).
    nc: usize,
    /// Start from zero (else continue from the partial sums in `out`).
    first: bool,
    /// Add the bias, apply ReLU (else store partial sums).
    last: bool,
    /// The panel's bias (null: none).
    bias: *const f32,
    /// The tile's residual operand, added after the bias and before ReLU (null: none), row
    /// stride `ldc` like the output.
    res: *const f32,
    relu: bool,
    /// Next-block prefetch: `pf_n` (0..=4) lines per K step into L2, starting at `pf`.
    pf: *const u8,
    pf_n: usize,
}

/// Row pointers of a tile's A rows: `ptr(r, s)` = segment `s` of row `r` (`seg()` floats).
trait Src: Copy {
    /// SAFETY: `r` < the tile's rows, `s` < K / seg.
    unsafe fn ptr(&self, r: usize, s: usize) -> *const f32;
    fn seg(&self) -> usize;
}

#[derive(Clone, Copy)]
struct Dense {
    a: *const f32,
    lda: usize,
    k: usize,
}
impl Src for Dense {
    #[inline(always)]
    unsafe fn ptr(&self, r: usize, _s: usize) -> *const f32 {
        self.a.add(r * self.lda)
    }
    #[inline(always)]
    fn seg(&self) -> usize {
        self.k
    }
}

#[derive(Clone, Copy)]
struct Ind {
    p: *const *const f32,
    segs: usize,
    seg: usize,
}
impl Src for Ind {
    #[inline(always)]
    unsafe fn ptr(&self, r: usize, s: usize) -> *const f32 {
        *self.p.add(r * self.segs + s)
    }
    #[inline(always)]
    fn seg(&self) -> usize {
        self.seg
    }
}

/// Splits `k0..k1` at segment boundaries: calls back with (segment, offset in it, length). One
/// division per call (the first segment), not one per piece: the 7x7 stem's K has 7 pieces per
/// tile.
macro_rules! for_pieces {
    ($src:expr, $k0:expr, $k1:expr, |$s:ident, $off:ident, $len:ident| $body:block) => {{
        let seg = $src.seg();
        let mut k = $k0;
        // (No division when the range is empty: K = 0 has seg = 0.)
        let mut seg_i = if $k0 < $k1 { $k0 / seg } else { 0 };
        let mut seg_off = $k0 - seg_i * seg;
        while k < $k1 {
            let ($s, $off) = (seg_i, seg_off);
            let $len = (seg - $off).min($k1 - k);
            $body
            k += $len;
            seg_i += 1;
            seg_off = 0;
        }
    }};
}

unsafe fn micro<S: Src>(isa: Isa, rows: usize, src: S, job: &Job) {
    macro_rules! by_rows {
        ($f:ident) => {
            match rows {
                1 => $f::<S, 1>(src, job),
                2 => $f::<S, 2>(src, job),
                3 => $f::<S, 3>(src, job),
                4 => $f::<S, 4>(src, job),
                5 => $f::<S, 5>(src, job),
                _ => $f::<S, 6>(src, job),
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
                    match (rows, job.nc.div_ceil(16)) {
                        $(
                            ($r, 1) => avx512::<S, $r, 1>(src, job),
                            ($r, 2) => avx512::<S, $r, 2>(src, job),
                            ($r, 3) => avx512::<S, $r, 3>(src, job),
                            ($r, _) => avx512::<S, $r, 4>(src, job),
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

/// The reference path: separate multiply and add (no FMA), same K order.
unsafe fn scalar<S: Src, const R: usize>(src: S, job: &Job) {
    let nc = job.nc;
    let mut acc = [[0f32; NRF]; R];
    if !job.first {
        for (r, row) in acc.iter_mut().enumerate() {
            std::ptr::copy_nonoverlapping(job.out.add(r * job.ldc), row.as_mut_ptr(), nc);
        }
    }
    let mut bp = job.b;
    for_pieces!(src, job.k0, job.k1, |s, off, len| {
        for kk in 0..len {
            let bk = std::slice::from_raw_parts(bp, NRF);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = *src.ptr(r, s).add(off + kk);
                for (c, x) in row.iter_mut().enumerate() {
                    *x += av * bk[c];
                }
            }
            bp = bp.add(NRF);
        }
    });
    for (r, row) in acc.iter().enumerate() {
        let o = job.out.add(r * job.ldc);
        for (c, &v) in row[..nc].iter().enumerate() {
            let mut v = v;
            if job.last {
                if !job.bias.is_null() {
                    v += *job.bias.add(c);
                }
                if !job.res.is_null() {
                    v += *job.res.add(r * job.ldc + c);
                }
                if job.relu {
                    v = v.max(0.0);
                }
            }
            *o.add(c) = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Job, Src, NRF};
    use std::arch::x86_64::*;

    /// SAFETY (both entry points): the caller holds a Kernel proving the features; pointer
    /// ranges as described in `gemm_core`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub(super) unsafe fn avx512<S: Src, const R: usize, const C: usize>(src: S, job: &Job) {
        let mut mask = [0xffffu16; C];
        for (c, m) in mask.iter_mut().enumerate() {
            let valid = job.nc - 16 * c;
            if valid < 16 {
                *m = (1u16 << valid) - 1;
            }
        }
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        if !job.first {
            for (r, acc_r) in acc.iter_mut().enumerate() {
                for (c, v) in acc_r.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask[c], job.out.add(r * job.ldc + 16 * c));
                }
            }
        }
        let mut bp = job.b;
        let mut pf = job.pf;
        for_pieces!(src, job.k0, job.k1, |s, off, len| {
            let mut p = [std::ptr::null::<f32>(); R];
            for (r, pr) in p.iter_mut().enumerate() {
                *pr = src.ptr(r, s).add(off);
            }
            for kk in 0..len {
                for l in 0..job.pf_n {
                    _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(64 * l) as *const i8);
                }
                pf = pf.wrapping_add(64 * job.pf_n);
                let mut bv = [_mm512_setzero_ps(); C];
                for (c, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(bp.add(16 * c));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*p[r].add(kk));
                    for c in 0..C {
                        acc_r[c] = _mm512_fmadd_ps(av, bv[c], acc_r[c]);
                    }
                }
                bp = bp.add(NRF);
            }
        });
        if job.last {
            if !job.bias.is_null() {
                for c in 0..C {
                    let bv = _mm512_maskz_loadu_ps(mask[c], job.bias.add(16 * c));
                    for acc_r in acc.iter_mut() {
                        acc_r[c] = _mm512_add_ps(acc_r[c], bv);
                    }
                }
            }
            if !job.res.is_null() {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    for (c, v) in acc_r.iter_mut().enumerate() {
                        let rv = _mm512_maskz_loadu_ps(mask[c], job.res.add(r * job.ldc + 16 * c));
                        *v = _mm512_add_ps(*v, rv);
                    }
                }
            }
            if job.relu {
                for acc_r in acc.iter_mut() {
                    for v in acc_r.iter_mut() {
                        *v = _mm512_max_ps(*v, _mm512_setzero_ps());
                    }
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (c, v) in acc_r.iter().enumerate() {
                let o = job.out.add(r * job.ldc + 16 * c);
                if mask[c] == 0xffff {
                    _mm512_storeu_ps(o, *v);
                } else {
                    _mm512_mask_storeu_ps(o, mask[c], *v);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<S: Src, const R: usize>(src: S, job: &Job) {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for chunk in 0..job.nc.div_ceil(16) {
            // Lane masks for the two 8-column halves of this 16-column chunk.
            let valid = (job.nc - 16 * chunk) as i32;
            let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane);
            let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid - 8), lane);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if !job.first {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let o = job.out.add(r * job.ldc + 16 * chunk);
                    acc_r[0] = _mm256_maskload_ps(o, m0);
                    acc_r[1] = _mm256_maskload_ps(o.add(8), m1);
                }
            }
            let mut bp = job.b.add(16 * chunk);
            for_pieces!(src, job.k0, job.k1, |s, off, len| {
                let mut p = [std::ptr::null::<f32>(); R];
                for (r, pr) in p.iter_mut().enumerate() {
                    *pr = src.ptr(r, s).add(off);
                }
                for kk in 0..len {
                    let b0 = _mm256_loadu_ps(bp);
                    let b1 = _mm256_loadu_ps(bp.add(8));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*p[r].add(kk));
                        acc_r[0] = _mm256_fmadd_ps(av, b0, acc_r[0]);
                        acc_r[1] = _mm256_fmadd_ps(av, b1, acc_r[1]);
                    }
                    bp = bp.add(NRF);
                }
            });
            if job.last {
                if !job.bias.is_null() {
                    let bb = job.bias.add(16 * chunk);
                    let (b0, b1) = (
                        _mm256_maskload_ps(bb, m0),
                        _mm256_maskload_ps(bb.add(8), m1),
                    );
                    for acc_r in acc.iter_mut() {
                        acc_r[0] = _mm256_add_ps(acc_r[0], b0);
                        acc_r[1] = _mm256_add_ps(acc_r[1], b1);
                    }
                }
                if !job.res.is_null() {
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let rp = job.res.add(r * job.ldc + 16 * chunk);
                        acc_r[0] = _mm256_add_ps(acc_r[0], _mm256_maskload_ps(rp, m0));
                        acc_r[1] = _mm256_add_ps(acc_r[1], _mm256_maskload_ps(rp.add(8), m1));
                    }
                }
                if job.relu {
                    for acc_r in acc.iter_mut() {
                        acc_r[0] = _mm256_max_ps(acc_r[0], _mm256_setzero_ps());
                        acc_r[1] = _mm256_max_ps(acc_r[1], _mm256_setzero_ps());
                    }
                }
            }
            // vmaskmovps stores are slow on AMD (microcoded): only for a partial chunk.
            let full = valid >= 16;
            for (r, acc_r) in acc.iter().enumerate() {
                let o = job.out.add(r * job.ldc + 16 * chunk);
                if full {
                    _mm256_storeu_ps(o, acc_r[0]);
                    _mm256_storeu_ps(o.add(8), acc_r[1]);
                } else {
                    _mm256_maskstore_ps(o, m0, acc_r[0]);
                    _mm256_maskstore_ps(o.add(8), m1, acc_r[1]);
                }
            }
        }
    }
}
