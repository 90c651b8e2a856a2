//! bf16 GEMM `C = A * B (+ bias) (ReLU)`: f32 operands rounded to bf16 (nearest even), products
//! summed in f32 by AVX512-BF16 `vdpbf16ps` (6 x 64 tile, 24 zmm accumulators, bias and ReLU
//! applied from registers), or by an emulation of that instruction (AVX2 FMA, or scalar, each
//! with an exact fallback for results near the FTZ threshold) that gives the same bits. Owns
//! the bf16 GEMM only; the arithmetic rules live in `bf16.rs`.
//!
//! Packed layout: N in panels of 64 columns (last one zero-padded); K in pairs (`kp = ceil(K/2)`,
//! an odd K padded with a zero row). Panel `p` is `kp` rows of 64 `u32`; lane `j` of row `g`
//! holds `bf16(b[2g][64p+j])` in its low half and `bf16(b[2g+1][64p+j])` in its high half, so a
//! 64-byte load is one `vdpbf16ps` operand for 16 columns. A becomes rows of `2*kp` bf16
//! (zero-padded), from which each row's pair `g` is broadcast as one `u32`: converted once per
//! work item, or (native path, single-panel items) 16 pairs at a time inside the micro-kernel;
//! the convolution passes bf16 rows, or segments through an indirection buffer ([`ASrc`]).
//! Every output element is the fixed sequence `acc = step(step(acc, a[2g+1], b[2g+1]), a[2g],
//! b[2g])` for g = 0..kp from `acc = +0`, then `acc + bias`, then ReLU, computed by one
//! micro-kernel call whatever the thread count, so all paths and thread counts give the same
//! bits (NaN payloads aside).

use crate::aligned::AlignedBytes;
use crate::bf16::{bf16_to_f32, convert_slice, dpbf16ps_emulated, f32_to_bf16};
use crate::error::{bad, check_matrix, KernelError};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

/// Columns per packed panel.
const NRB: usize = 64;
/// Rows per micro-kernel tile.
const MR: usize = 6;

/// Weights converted once to bf16 and packed in K pairs for [`gemm_bf16`].
#[derive(Clone)]
pub struct PackedBBf16 {
    k: usize,
    n: usize,
    kp: usize,
    data: AlignedBytes,
    /// Smallest biased exponent of the nonzero weights (255 if none), for `emulated_micro`.
    min_exp: u32,
}

impl std::fmt::Debug for PackedBBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBBf16")
            .field("k", &self.k)
            .field("n", &self.n)
            .finish()
    }
}

impl PackedBBf16 {
    /// Converts (round to nearest even, as `vcvtne2ps2bf16`) and packs a `k` x `n` f32 matrix
    /// given in `layout` (`KxN` row-major, or `NxK` = transposed).
    pub fn new(
        k: usize,
        n: usize,
        b: &[f32],
        layout: crate::WeightLayout,
    ) -> Result<Self, KernelError> {
        if k.checked_mul(n) != Some(b.len()) {
            return Err(bad(format!(
                "PackedBBf16: weights have {} elements, expected {k}*{n}",
                b.len()
            )));
        }
        let kp = k.div_ceil(2);
        let panels = n.div_ceil(NRB);
        let bytes = kp
            .checked_mul(NRB * 4)
            .and_then(|v| v.checked_mul(panels))
            .ok_or_else(|| bad("PackedBBf16: size overflows usize"))?;
        let mut data = AlignedBytes::zeroed(bytes);
        let at = |kk: usize, col: usize| -> u32 {
            if kk >= k {
                return 0;
            }
            f32_to_bf16(match layout {
                crate::WeightLayout::KxN => b[kk * n + col],
                crate::WeightLayout::NxK => b[col * k + kk],
            }) as u32
        };
        let d = data.as_mut_slice();
        let mut min_exp = 255;
        for p in 0..panels {
            for g in 0..kp {
                for j in 0..NRB.min(n - p * NRB) {
                    let col = p * NRB + j;
                    let pair = at(2 * g, col) | (at(2 * g + 1, col) << 16);
                    min_exp = min_exp.min(min_exponent(&[pair as u16, (pair >> 16) as u16]));
                    let o = ((p * kp + g) * NRB + j) * 4;
                    d[o..o + 4].copy_from_slice(&pair.to_le_bytes());
                }
            }
        }
        Ok(PackedBBf16 {
            k,
            n,
            kp,
            data,
            min_exp,
        })
    }
    /// K.
    pub fn k(&self) -> usize {
        self.k
    }
    /// N.
    pub fn n(&self) -> usize {
        self.n
    }
    fn panel_ptr(&self, p: usize) -> *const u32 {
        self.data.as_slice()[p * self.kp * NRB * 4..].as_ptr() as *const u32
    }
}

/// `out[i][j] = act(sum_k bf16(a[i][k]) * bf16(b[k][j]) + bias[j])`, `act` = ReLU if `relu`,
/// with the K sum done in f32 exactly as `vdpbf16ps` does it (see the module docs and
/// `DESIGN.md`). A is `m` x K row-major f32 with stride `lda` (converted to bf16 per call);
/// `out` has stride `ldc`. Runs on the current rayon pool; same bits on every ISA and thread count.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    kernel: &Kernel,
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedBBf16,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    check_matrix("gemm_bf16 A", a.len(), m, b.k, lda)?;
    gemm_core(kernel, m, ASrc::F32(a, lda), b, bias, relu, out, ldc)
}

/// Where the micro-kernels read A from.
#[derive(Clone, Copy)]
pub(crate) enum ASrc<'a> {
    /// f32 rows with this stride (checked by the caller); converted per work item.
    F32(&'a [f32], usize),
    /// bf16 rows with this stride, each with `2 * kp` readable values; when K is odd the value
    /// at index K of each row must be +0 (bits 0), as the reference pads with +0.
    Bf16(&'a [u16], usize),
    /// bf16 rows given as `taps` segments of `seg` (even) values, `taps * seg == K`: segment
    /// `t` of row `i` is `data[offs[i * taps + t]..][..seg]` (an indirection buffer: convolution
    /// without im2col).
    Segments {
        data: &'a [u16],
        offs: &'a [usize],
        taps: usize,
        seg: usize,
    },
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_core(
    kernel: &Kernel,
    m: usize,
    a: ASrc<'_>,
    b: &PackedBBf16,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    ldc: usize,
) -> Result<(), KernelError> {
    let (n, k, kp) = (b.n, b.k, b.kp);
    check_matrix("gemm_bf16 output", out.len(), m, n, ldc)?;
    if let Some(bb) = bias {
        if bb.len() != n {
            return Err(bad(format!(
                "gemm_bf16: bias has {} values, N = {n}",
                bb.len()
            )));
        }
    }
    match a {
        ASrc::F32(..) => {}
        ASrc::Bf16(ab, lda) => check_matrix("gemm_bf16 bf16 A", ab.len(), m, 2 * kp, lda)?,
        ASrc::Segments {
            data,
            offs,
            taps,
            seg,
        } => {
            if seg % 2 != 0
                || taps.checked_mul(seg) != Some(k)
                || offs.len() < m.saturating_mul(taps)
                || offs[..m * taps]
                    .iter()
                    .any(|&o| o.checked_add(seg).is_none_or(|e| e > data.len()))
            {
                return Err(bad(format!(
                    "gemm_bf16: bad A segments (taps {taps}, seg {seg}, K {k})"
                )));
            }
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
    let native = kernel.has_bf16_dot();
    let isa = kernel.isa();
    let panels = n.div_ceil(NRB);
    let threads = rayon::current_num_threads();
    let l2_rows = ((256 * 1024) / (4 * kp.max(1))).max(MR) / MR * MR;
    let mut m_blocks = m.div_ceil(l2_rows).max(1);
    let mut n_chunks = 1;
    if threads > 1 {
        n_chunks = panels.min(threads);
        let want = (2 * threads).div_ceil(n_chunks);
        m_blocks = m_blocks.max(want).min(m.div_ceil(MR));
    }
    let mc = m.div_ceil(m_blocks).div_ceil(MR) * MR;
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
        let k2 = 2 * kp;
        // f32 A is converted once per item into a bf16 block that every panel reads, except
        // for single-panel items on the native path: there the micro-kernel converts it on the
        // fly, overlapping A's loads with the products instead of a separate pass over A.
        let fused = native && p1 - p0 == 1;
        let mut converted: Vec<u16> = Vec::new();
        let (abase, a_rs) = match a {
            ASrc::F32(..) if fused => (std::ptr::null(), 0),
            ASrc::F32(af, lda) => {
                let mut buf = vec![0u16; (m1 - m0) * k2];
                for i in m0..m1 {
                    let d = &mut buf[(i - m0) * k2..(i - m0) * k2 + k];
                    convert_slice(kernel, &af[i * lda..i * lda + k], d);
                }
                converted = buf;
                (converted.as_ptr(), k2)
            }
            // wrapping_add: with K == 0 nothing is read and the offset may pass the end.
            ASrc::Bf16(ab, lda) => (ab.as_ptr().wrapping_add(m0 * lda), lda),
            // The native kernel follows the segment offsets itself.
            ASrc::Segments { .. } if native => (std::ptr::null(), 0),
            ASrc::Segments {
                data,
                offs,
                taps,
                seg,
            } => {
                // Gather (im2col) this item's rows; K is even here, so no pad value.
                let mut buf = vec![0u16; (m1 - m0) * k2];
                for (ri, row) in buf.chunks_exact_mut(k2.max(1)).enumerate() {
                    let o = &offs[(m0 + ri) * taps..(m0 + ri + 1) * taps];
                    for (d, &off) in row.chunks_exact_mut(seg.max(1)).zip(o) {
                        d.copy_from_slice(&data[off..off + seg]);
                    }
                }
                converted = buf;
                (converted.as_ptr(), k2)
            }
        };
        let no_tiny = !native && {
            let a_min = match a {
                ASrc::Bf16(ab, lda) => (m0..m1)
                    .map(|i| min_exponent(&ab[i * lda..i * lda + k2]))
                    .min()
                    .unwrap_or(255),
                _ => min_exponent(&converted),
            };
            a_min + b.min_exp >= 143
        };
        #[repr(C, align(64))]
        struct Tile([f32; MR * NRB]);
        let mut tile = Tile([0.0; MR * NRB]);
        for p in p0..p1 {
            let bp = b.panel_ptr(p);
            let j0 = p * NRB;
            let nc = NRB.min(n - j0);
            let mut i = m0;
            while i < m1 {
                let rows = MR.min(m1 - i);
                // SAFETY: the Kernel proves the ISA (and `native` the BF16 instructions); A rows
                // i..i+rows have 2*kp readable bf16 (the converted buffer, or checked above);
                // the panel holds kp x 64 u32; the tile holds 6 x 64; output rows i..i+rows
                // have nc writable columns from j0 (check_matrix), and items are disjoint.
                unsafe {
                    let a_tile = abase.wrapping_add((i - m0) * a_rs);
                    let o = outp.0.add(i * ldc + j0);
                    if native {
                        let a_in = match a {
                            ASrc::F32(af, lda) if fused => {
                                NativeA::F32(af.as_ptr().wrapping_add(i * lda), lda, k)
                            }
                            ASrc::Segments {
                                data,
                                offs,
                                taps,
                                seg,
                            } => NativeA::Segments(
                                data.as_ptr(),
                                offs[i * taps..].as_ptr(),
                                taps,
                                seg / 2,
                            ),
                            _ => NativeA::Bf16(a_tile, a_rs),
                        };
                        #[cfg(target_arch = "x86_64")]
                        native_micro(rows, nc, kp, a_in, bp, bias[j0..].as_ptr(), relu, o, ldc);
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = a_in;
                    } else {
                        emulated_micro(
                            isa,
                            rows,
                            nc,
                            kp,
                            a_tile,
                            a_rs,
                            bp,
                            tile.0.as_mut_ptr(),
                            no_tiny,
                        );
                        for r in 0..rows {
                            let orow = o.add(r * ldc);
                            for c in 0..nc {
                                let mut v = tile.0[r * NRB + c] + bias[j0 + c];
                                if relu {
                                    v = relu1(v);
                                }
                                *orow.add(c) = v;
                            }
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

/// ReLU as `vmaxps(v, 0)` computes it: `v` if `v > 0`, else +0 (so -0 and NaN give +0).
#[inline(always)]
pub(crate) fn relu1(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// A as the native kernel reads it: f32 rows (pointer, stride, K) converted in the kernel, or
/// bf16 rows (pointer, stride) already holding `2 * kp` values.
#[derive(Clone, Copy)]
enum NativeA {
    F32(*const f32, usize, usize),
    Bf16(*const u16, usize),
    /// (data, the tile's first offsets row, taps, pairs per segment)
    Segments(*const u16, *const usize, usize, usize),
}

/// The native tile: `rows` x `nc` outputs written with bias and ReLU applied.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn native_micro(
    rows: usize,
    nc: usize,
    kp: usize,
    a: NativeA,
    b: *const u32,
    bias: *const f32,
    relu: bool,
    out: *mut f32,
    ldc: usize,
) {
    use x86::{native, native_f32, native_seg};
    // Only the 16-column vectors a partial panel needs.
    macro_rules! go {
        ($call:ident, $($r:literal),*) => {
            match (rows, nc.div_ceil(16)) {
                $(
                    ($r, 1) => $call!($r, 1),
                    ($r, 2) => $call!($r, 2),
                    ($r, 3) => $call!($r, 3),
                    ($r, _) => $call!($r, 4),
                )*
                (_, _) => unreachable!("rows {rows}"),
            }
        };
    }
    match a {
        NativeA::F32(a, lda, k) => {
            macro_rules! f32a {
                ($r:literal, $c:literal) => {
                    native_f32::<$r, $c>(a, lda, k, kp, b, bias, relu, nc, out, ldc)
                };
            }
            go!(f32a, 1, 2, 3, 4, 5, 6)
        }
        NativeA::Bf16(a, lda) => {
            macro_rules! bf16a {
                ($r:literal, $c:literal) => {
                    native::<$r, $c>(a, lda, kp, b, bias, relu, nc, out, ldc)
                };
            }
            go!(bf16a, 1, 2, 3, 4, 5, 6)
        }
        NativeA::Segments(data, offs, taps, seg_pairs) => {
            macro_rules! seg {
                ($r:literal, $c:literal) => {
                    native_seg::<$r, $c>(data, offs, taps, seg_pairs, b, bias, relu, nc, out, ldc)
                };
            }
            go!(seg, 1, 2, 3, 4, 5, 6)
        }
    }
}

/// The emulated tile: `rows` x `nc` raw sums into `tile` (row stride 64). AVX2 first; if it saw
/// a result that needs the exact FTZ rule, the tile is recomputed by the scalar kernel.
///
/// `no_tiny`: every nonzero product is a multiple of 2^-125, so (from acc = +0) every partial
/// sum is too, and no result can land in (0, 2^-126] where the instruction's FTZ rule differs
/// from IEEE FMA; the AVX2 kernel then skips its per-FMA check. A bf16 with biased exponent E
/// is an integer multiple of 2^(E - 134), so this holds when the smallest exponents of the
/// nonzero values of A and of B add up to at least 143 (any |a|, |b| >= ~2^-55, e.g.).
#[allow(clippy::too_many_arguments)]
unsafe fn emulated_micro(
    isa: Isa,
    rows: usize,
    nc: usize,
    kp: usize,
    a: *const u16,
    lda: usize,
    b: *const u32,
    tile: *mut f32,
    no_tiny: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        use x86::avx2;
        macro_rules! run {
            ($check:literal, $r:expr, $a:expr, $t:expr) => {
                match $r {
                    1 => avx2::<1, $check>(kp, nc, $a, lda, b, $t),
                    2 => avx2::<2, $check>(kp, nc, $a, lda, b, $t),
                    3 => avx2::<3, $check>(kp, nc, $a, lda, b, $t),
                    _ => avx2::<4, $check>(kp, nc, $a, lda, b, $t),
                }
            };
        }
        let mut ok = true;
        // At most 4 rows per call (the AVX2 register budget).
        for r0 in (0..rows).step_by(4) {
            let r = (rows - r0).min(4);
            let (ar, tr) = (a.add(r0 * lda), tile.add(r0 * NRB));
            ok &= if no_tiny {
                run!(false, r, ar, tr)
            } else {
                run!(true, r, ar, tr)
            };
        }
        if ok {
            return;
        }
    }
    let _ = isa;
    scalar(rows, nc, kp, a, lda, b, tile, no_tiny);
}

/// Smallest biased exponent among the nonzero bf16 values (255 if none).
pub(crate) fn min_exponent(v: &[u16]) -> u32 {
    v.iter()
        .map(|&x| ((x >> 7) & 0xff) as u32)
        .filter(|&e| e != 0)
        .min()
        .unwrap_or(255)
}

/// The specification, one output at a time ([`dpbf16ps_emulated`] per pair, A as `src1`), or,
/// with `no_tiny` (see `emulated_micro`), each step as `(acc as f64 + a as f64 * b as f64) as
/// f32`: then no result falls in (0, 2^-126] and no input is denormal, the product is exact in
/// f64, and the f64 sum rounds to f32 like the exact sum (if the f64 add is inexact, one operand
/// is below 2^-29 of the other, so the sum lies within 2^-29 relative of an f32 grid point, far
/// from the midpoints where a second rounding could differ). NaNs appear in the same places
/// (NaN payloads of GEMM outputs are not specified).
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(
    rows: usize,
    nc: usize,
    kp: usize,
    a: *const u16,
    lda: usize,
    b: *const u32,
    tile: *mut f32,
    no_tiny: bool,
) {
    for r in 0..rows {
        for c in 0..nc {
            *tile.add(r * NRB + c) = 0.0;
        }
    }
    for g in 0..kp {
        let brow = std::slice::from_raw_parts(b.add(g * NRB), nc);
        for r in 0..rows {
            let ap = (a.add(r * lda + 2 * g) as *const u32).read_unaligned();
            let trow = std::slice::from_raw_parts_mut(tile.add(r * NRB), nc);
            if no_tiny {
                let a_hi = bf16_to_f32((ap >> 16) as u16) as f64;
                let a_lo = bf16_to_f32(ap as u16) as f64;
                for (t, &bp) in trow.iter_mut().zip(brow) {
                    let u = (*t as f64 + a_hi * bf16_to_f32((bp >> 16) as u16) as f64) as f32;
                    *t = (u as f64 + a_lo * bf16_to_f32(bp as u16) as f64) as f32;
                }
            } else {
                for (t, &bp) in trow.iter_mut().zip(brow) {
                    *t = dpbf16ps_emulated(*t, ap, bp);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NRB;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn bh(v: __m512i) -> __m512bh {
        std::mem::transmute(v)
    }

    /// `acc += A[.., 2g..2g+2] * B[2g..2g+2, ..]` for g in 0..n: per pair, C loads of B, R
    /// broadcasts of an A pair, R * C `vdpbf16ps`.
    #[inline(always)]
    unsafe fn pairs<const R: usize, const C: usize>(
        acc: &mut [[__m512; C]; R],
        n: usize,
        a: *const u16,
        lda: usize,
        b: *const u32,
    ) {
        let mut bp = b;
        for g in 0..n {
            let mut bv = [_mm512_setzero_si512(); C];
            for (c, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(bp.add(16 * c) as *const _);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // src1 = the A pair broadcast, src2 = 16 B pairs (the emulation's order).
                let av = _mm512_set1_epi32((a.add(r * lda + 2 * g) as *const i32).read_unaligned());
                for c in 0..C {
                    acc_r[c] = _mm512_dpbf16_ps(acc_r[c], bh(av), bh(bv[c]));
                }
            }
            bp = bp.add(NRB);
        }
    }

    /// As `pairs`, with one pointer per A row.
    #[inline(always)]
    unsafe fn pairs_rows<const R: usize, const C: usize>(
        acc: &mut [[__m512; C]; R],
        n: usize,
        a: &[*const u16; R],
        b: *const u32,
    ) {
        let mut bp = b;
        for g in 0..n {
            let mut bv = [_mm512_setzero_si512(); C];
            for (c, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(bp.add(16 * c) as *const _);
            }
            for (acc_r, a_r) in acc.iter_mut().zip(a) {
                let av = _mm512_set1_epi32((a_r.add(2 * g) as *const i32).read_unaligned());
                for c in 0..C {
                    acc_r[c] = _mm512_dpbf16_ps(acc_r[c], bh(av), bh(bv[c]));
                }
            }
            bp = bp.add(NRB);
        }
    }

    /// `vdpbf16ps` tile on A given as segments (convolution taps): for each tap, the R rows'
    /// segment pointers are read from `offs` (row stride `taps`) and `seg_pairs` pairs run.
    ///
    /// SAFETY: as `native`; every offset + 2 * seg_pairs is within `data` (checked by gemm_core).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn native_seg<const R: usize, const C: usize>(
        data: *const u16,
        offs: *const usize,
        taps: usize,
        seg_pairs: usize,
        b: *const u32,
        bias: *const f32,
        relu: bool,
        nc: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut bp = b;
        for t in 0..taps {
            let mut rows = [data; R];
            for (r, p) in rows.iter_mut().enumerate() {
                *p = data.add(*offs.add(r * taps + t));
            }
            pairs_rows(&mut acc, seg_pairs, &rows, bp);
            bp = bp.add(seg_pairs * NRB);
        }
        epilogue(&acc, bias, relu, nc, out, ldc);
    }

    /// `vdpbf16ps` tile on bf16 A, R rows x C 16-column vectors, with the epilogue fused.
    ///
    /// SAFETY: the caller holds a Kernel with `has_bf16_dot`; A rows have 2*kp readable bf16 at
    /// stride `lda`; `b` holds kp rows of 64 u32; `bias` has `nc` values, `out` R rows of `nc`
    /// writable floats at stride `ldc`; `16 * (C - 1) < nc <= 16 * C`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn native<const R: usize, const C: usize>(
        a: *const u16,
        lda: usize,
        kp: usize,
        b: *const u32,
        bias: *const f32,
        relu: bool,
        nc: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        pairs(&mut acc, kp, a, lda, b);
        epilogue(&acc, bias, relu, nc, out, ldc);
    }

    /// As `native`, on f32 A rows (`k` values each, stride `lda`): every 16 pairs, the R rows'
    /// next 32 values are converted (`vcvtne2ps2bf16`, zeros past K) into a 64-byte-per-row
    /// stack buffer, which `pairs` then reads. Interleaving the conversion with the products
    /// lets A's loads overlap the arithmetic (a separate conversion pass cost 17% on N = 64).
    ///
    /// SAFETY: as `native`, with A rows of `k` readable f32 and `kp = ceil(k / 2)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn native_f32<const R: usize, const C: usize>(
        a: *const f32,
        lda: usize,
        k: usize,
        kp: usize,
        b: *const u32,
        bias: *const f32,
        relu: bool,
        nc: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        #[repr(C, align(64))]
        struct Buf<const R: usize>([[[u16; 32]; R]; 2]);
        let mut buf = Buf::<R>([[[0; 32]; R]; 2]);
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        // Double-buffered: chunk c+1 is converted before chunk c's products, so its stores
        // are long retired when `pairs` broadcasts from them.
        if kp > 0 {
            convert_chunk(&mut buf.0[0], a, lda, k, 0);
        }
        let mut g0 = 0;
        let mut cur = 0;
        while g0 < kp {
            let len = (kp - g0).min(16);
            if g0 + 16 < kp {
                convert_chunk(&mut buf.0[cur ^ 1], a, lda, k, g0 + 16);
            }
            pairs(
                &mut acc,
                len,
                buf.0[cur].as_ptr() as *const u16,
                32,
                b.add(g0 * NRB),
            );
            g0 += len;
            cur ^= 1;
        }
        epilogue(&acc, bias, relu, nc, out, ldc);
    }

    /// Converts 32 values (pairs g0..g0+16) of R f32 rows to bf16 rows of `dst`, +0 past K.
    #[inline(always)]
    unsafe fn convert_chunk<const R: usize>(
        dst: &mut [[u16; 32]; R],
        a: *const f32,
        lda: usize,
        k: usize,
        g0: usize,
    ) {
        let rem = k - 2 * g0;
        let m_lo = low_mask(rem);
        let m_hi = low_mask(rem.saturating_sub(16));
        for (r, row) in dst.iter_mut().enumerate() {
            // Masked-off lanes are not read (no fault), so the pointers may pass A's end.
            let src = a.wrapping_add(r * lda + 2 * g0);
            let lo = _mm512_maskz_loadu_ps(m_lo, src);
            let hi = _mm512_maskz_loadu_ps(m_hi, src.wrapping_add(16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_store_si512(row.as_mut_ptr() as *mut _, v);
        }
    }

    /// Mask of the first `min(n, 16)` lanes.
    #[inline(always)]
    fn low_mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `out = act(acc + bias)` for R rows x `nc` columns (the last vector masked).
    #[inline(always)]
    unsafe fn epilogue<const R: usize, const C: usize>(
        acc: &[[__m512; C]; R],
        bias: *const f32,
        relu: bool,
        nc: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        let mut mask: [__mmask16; C] = [0xffff; C];
        let last = nc - 16 * (C - 1);
        if last < 16 {
            mask[C - 1] = ((1u32 << last) - 1) as __mmask16;
        }
        let mut bias_v = [_mm512_setzero_ps(); C];
        for (c, v) in bias_v.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask[c], bias.add(16 * c));
        }
        let zero = _mm512_setzero_ps();
        for (r, acc_r) in acc.iter().enumerate() {
            for c in 0..C {
                let mut v = _mm512_add_ps(acc_r[c], bias_v[c]);
                if relu {
                    v = _mm512_max_ps(v, zero);
                }
                _mm512_mask_storeu_ps(out.add(r * ldc + 16 * c), mask[c], v);
            }
        }
    }

    /// Emulation of the native tile's sums with AVX2 FMA, R <= 4 rows x 16 columns per pass:
    /// each `vdpbf16ps` lane is two FMAs (high halves, then low halves; a bf16 is an f32 with
    /// a zero low half). An FMA equals the instruction's step whenever its result is zero or a
    /// normal number above 2^-126 in magnitude (inputs are never denormal: they come from
    /// `f32_to_bf16`). With `CHECK` every other outcome (a denormal, exactly 2^-126) is
    /// recorded; without it the caller has proven none can occur (see `emulated_micro`). NaNs
    /// arise exactly where the instruction's do (NaN operand, inf * 0, inf - inf); their
    /// payloads may differ (not specified for GEMM outputs). Returns `false` if the tile must
    /// be recomputed by the exact scalar rule.
    ///
    /// SAFETY: AVX2+FMA present; pointers as for `native`, `tile` holds R rows of 64 floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const R: usize, const CHECK: bool>(
        kp: usize,
        nc: usize,
        a: *const u16,
        lda: usize,
        b: *const u32,
        tile: *mut f32,
    ) -> bool {
        let hi_mask = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let abs_mask = _mm256_set1_epi32(0x7fff_ffff);
        let one = _mm256_set1_epi32(1);
        // Unsigned minimum of (|result| bits - 1): below 0x0080_0000 iff some result was a
        // denormal or +-2^-126 (zero wraps to the maximum).
        let mut low = _mm256_set1_epi32(-1);
        for pass in 0..nc.div_ceil(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let mut bp = b.add(16 * pass);
            for g in 0..kp {
                let mut b_hi = [_mm256_setzero_ps(); 2];
                let mut b_lo = [_mm256_setzero_ps(); 2];
                for v in 0..2 {
                    let bv = _mm256_loadu_si256(bp.add(8 * v) as *const __m256i);
                    b_hi[v] = _mm256_castsi256_ps(_mm256_and_si256(bv, hi_mask));
                    b_lo[v] = _mm256_castsi256_ps(_mm256_slli_epi32(bv, 16));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let pair =
                        _mm256_set1_epi32((a.add(r * lda + 2 * g) as *const i32).read_unaligned());
                    let a_hi = _mm256_castsi256_ps(_mm256_and_si256(pair, hi_mask));
                    let a_lo = _mm256_castsi256_ps(_mm256_slli_epi32(pair, 16));
                    for v in 0..2 {
                        let t = _mm256_fmadd_ps(a_hi, b_hi[v], acc_r[v]);
                        let t2 = _mm256_fmadd_ps(a_lo, b_lo[v], t);
                        if CHECK {
                            let y1 = _mm256_sub_epi32(
                                _mm256_and_si256(_mm256_castps_si256(t), abs_mask),
                                one,
                            );
                            let y2 = _mm256_sub_epi32(
                                _mm256_and_si256(_mm256_castps_si256(t2), abs_mask),
                                one,
                            );
                            low = _mm256_min_epu32(low, _mm256_min_epu32(y1, y2));
                        }
                        acc_r[v] = t2;
                    }
                }
                bp = bp.add(NRB);
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (v, x) in acc_r.iter().enumerate() {
                    _mm256_storeu_ps(tile.add(r * NRB + 16 * pass + 8 * v), *x);
                }
            }
        }
        let small = _mm256_cmpeq_epi32(_mm256_min_epu32(low, _mm256_set1_epi32(0x007f_ffff)), low);
        _mm256_movemask_epi8(small) == 0
    }
}
