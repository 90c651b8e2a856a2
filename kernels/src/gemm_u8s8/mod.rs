//! int8 GEMM: u8 activations x s8 prepacked weights -> int32, with a fused epilogue
//! (bias, requantization to u8/s8, dequantization to f32, or raw int32).
//! Owns the public GEMM API and the blocked driver; the inner loops are in `micro.rs`, the
//! epilogue arithmetic in `epilogue.rs`, the weight layout in `pack.rs`.
//!
//! Zero points: with activation zero point `za` and weight zero point `zb`,
//! `sum_k (a-za)(b-zb) = sum ab - zb*rowsum(a) - za*colsum(b) + K*za*zb`. Column sums come from
//! [`PackedB`]; row sums are computed only when `zb != 0`. s8 activations go through the +128
//! shift: see [`shift_s8_to_u8`].
//!
//! Saturation: on `Isa::Avx2` and `Isa::Avx512` the products go through `vpmaddubsw`, whose
//! int16 pair sums saturate (255*127*2 = 64770 > 32767). Results then differ from the exact ones
//! unless the weights are 7-bit (`reduce_range`, |w| <= 64) or activations are < 128. This is
//! the hardware's behaviour, kept and documented, not a bug to be fixed here.

pub(crate) mod epilogue;
mod micro;
mod pack;
#[cfg(target_arch = "x86_64")]
mod pack_u8_x86;

pub(crate) use epilogue::{requant_one, row as epilogue_row, EpiPlan, OutPtr};
pub use pack::{PackedB, WeightLayout, NR};

use crate::error::{bad, check_matrix, KernelError};
use crate::isa::{Isa, Kernel};
use crate::qadd::QAdd;
use crate::scratch::ScratchVec;
use rayon::prelude::*;

/// A row-major u8 activation matrix: `rows` x K (K is taken from the [`PackedB`]), row stride `ld`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixU8<'a> {
    /// Elements; row `i` starts at `i * ld`.
    pub data: &'a [u8],
    /// M.
    pub rows: usize,
    /// Row stride in elements (>= K).
    pub ld: usize,
    /// Activation zero point, in [0, 255] (an s8 zero point plus 128 after the +128 shift).
    pub zero_point: i32,
}

/// A requantization (or dequantization) multiplier, per tensor or per output channel.
#[derive(Debug, Clone, Copy)]
pub enum Scale<'a> {
    /// One multiplier for all columns.
    PerTensor(f32),
    /// One multiplier per output column (length N).
    PerChannel(&'a [f32]),
}

/// What happens to each int32 accumulator before it is stored.
///
/// With `v = sum_k (a-za)(b-zb) + bias[j]` (int32, wrapping):
/// - `OutputSlice::I32`: `v` (scale, zero point and clamp ignored);
/// - `OutputSlice::U8` / `I8`: `q = round_half_even(min(max(v as f32 * mult[j], lo - zp), hi - zp)) + zp`
///   (`zp` = `out_zero_point`), which equals `clamp(round_half_even(v * mult[j]) + zp, lo, hi)`;
///   `v as f32 * mult` is one f32 multiply rounded to nearest-even, `mult = s_a * s_w[j] / s_out`,
///   rounding is half to even as ONNX QuantizeLinear, `[lo, hi]` is the type range intersected
///   with `clamp` (fold ReLU as `clamp = (zp_out, 255)`); NaN maps to `lo`;
/// - `OutputSlice::F32`: `v as f32 * scale[j] + f32_bias[j]` (multiply then add, no FMA): dynamic
///   quantization's dequantized output.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// int32 bias per output column (length N), scale `s_a * s_w`, zero point 0.
    pub bias: Option<&'a [i32]>,
    /// Requantization multiplier (U8/I8) or dequantization scale (F32).
    pub scale: Scale<'a>,
    /// Output zero point (U8/I8 only).
    pub out_zero_point: i32,
    /// Extra clamp in the quantized output domain, inclusive (U8/I8 only).
    pub clamp: Option<(i32, i32)>,
    /// f32 bias added after dequantization (F32 only, length N).
    pub f32_bias: Option<&'a [f32]>,
    /// F32 only: GELU (exact-erf form, [`gelu_inplace`](crate::gelu_inplace)'s values) applied
    /// to each output tile while it is in L1, after the bias.
    pub f32_gelu: bool,
    /// F32 only: per-column factor applied last (length N), e.g. SmoothQuant's `1 / s` for the
    /// next layer's input.
    pub f32_post_scale: Option<&'a [f32]>,
}

impl<'a> Epilogue<'a> {
    /// Raw int32 output with zero-point correction only.
    pub fn raw() -> Epilogue<'static> {
        Epilogue {
            bias: None,
            scale: Scale::PerTensor(1.0),
            out_zero_point: 0,
            clamp: None,
            f32_bias: None,
            f32_gelu: false,
            f32_post_scale: None,
        }
    }
    /// Requantize with `scale` and output zero point `zp`.
    pub fn requant(scale: Scale<'a>, zp: i32) -> Epilogue<'a> {
        Epilogue {
            bias: None,
            scale,
            out_zero_point: zp,
            clamp: None,
            f32_bias: None,
            f32_gelu: false,
            f32_post_scale: None,
        }
    }
    /// Adds an int32 bias.
    pub fn with_bias(mut self, bias: &'a [i32]) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Adds an output clamp (quantized domain, inclusive).
    pub fn with_clamp(mut self, lo: i32, hi: i32) -> Self {
        self.clamp = Some((lo, hi));
        self
    }
    /// Adds an f32 bias (F32 output).
    pub fn with_f32_bias(mut self, b: &'a [f32]) -> Self {
        self.f32_bias = Some(b);
        self
    }
    /// Applies GELU to the F32 output (after the bias).
    pub fn with_f32_gelu(mut self) -> Self {
        self.f32_gelu = true;
        self
    }
    /// Multiplies each F32 output column by `s[j]` last.
    pub fn with_f32_post_scale(mut self, s: &'a [f32]) -> Self {
        self.f32_post_scale = Some(s);
        self
    }
    pub(crate) fn has_f32_post(&self) -> bool {
        self.f32_gelu || self.f32_post_scale.is_some()
    }
}

/// The output matrix (row-major, row stride `ldc` given to the call), typed by what the epilogue stores.
#[derive(Debug)]
pub enum OutputSlice<'a> {
    /// Requantized u8.
    U8(&'a mut [u8]),
    /// Requantized s8.
    I8(&'a mut [i8]),
    /// Raw int32 accumulators (zero-point corrected, plus bias).
    I32(&'a mut [i32]),
    /// Dequantized f32.
    F32(&'a mut [f32]),
}

impl OutputSlice<'_> {
    /// Reborrows the elements from `off` on (e.g. a column offset for a convolution group).
    /// Returns `None` if `off` is past the end.
    pub fn offset_mut(&mut self, off: usize) -> Option<OutputSlice<'_>> {
        Some(match self {
            OutputSlice::U8(s) => OutputSlice::U8(s.get_mut(off..)?),
            OutputSlice::I8(s) => OutputSlice::I8(s.get_mut(off..)?),
            OutputSlice::I32(s) => OutputSlice::I32(s.get_mut(off..)?),
            OutputSlice::F32(s) => OutputSlice::F32(s.get_mut(off..)?),
        })
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            OutputSlice::U8(s) => s.len(),
            OutputSlice::I8(s) => s.len(),
            OutputSlice::I32(s) => s.len(),
            OutputSlice::F32(s) => s.len(),
        }
    }
    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Splits the first `total` elements into consecutive slices of `len` (the last may be
    /// shorter), e.g. blocks of whole output rows for separate workers. `None` if `total`
    /// exceeds the slice or `len` is 0.
    pub(crate) fn chunks(&mut self, total: usize, len: usize) -> Option<Vec<OutputSlice<'_>>> {
        if len == 0 || total > self.len() {
            return None;
        }
        Some(match self {
            OutputSlice::U8(s) => s[..total].chunks_mut(len).map(OutputSlice::U8).collect(),
            OutputSlice::I8(s) => s[..total].chunks_mut(len).map(OutputSlice::I8).collect(),
            OutputSlice::I32(s) => s[..total].chunks_mut(len).map(OutputSlice::I32).collect(),
            OutputSlice::F32(s) => s[..total].chunks_mut(len).map(OutputSlice::F32).collect(),
        })
    }
    pub(crate) fn ptr(&mut self) -> OutPtr {
        match self {
            OutputSlice::U8(s) => OutPtr::U8(s.as_mut_ptr()),
            OutputSlice::I8(s) => OutPtr::I8(s.as_mut_ptr()),
            OutputSlice::I32(s) => OutPtr::I32(s.as_mut_ptr()),
            OutputSlice::F32(s) => OutPtr::F32(s.as_mut_ptr()),
        }
    }
}

/// Converts s8 activations to u8 by adding 128 (a bit flip). Use the result with
/// `zero_point = za_s8 + 128`: `(a + 128) - (za + 128) = a - za`, so results are unchanged
/// (except for the `Avx2`/`Avx512` saturation, which sees the shifted bytes).
pub fn shift_s8_to_u8(src: &[i8], dst: &mut [u8]) -> Result<(), KernelError> {
    if src.len() != dst.len() {
        return Err(bad(format!(
            "shift_s8_to_u8: src has {} elements, dst {}",
            src.len(),
            dst.len()
        )));
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = (*s as u8) ^ 0x80;
    }
    Ok(())
}

/// Raw pointer wrapper so disjoint output tiles can be written from rayon workers.
#[derive(Clone, Copy)]
struct SendOut(OutPtr);
// SAFETY: every work item writes a disjoint set of output rows x columns (see `gemm_u8s8`).
unsafe impl Send for SendOut {}
unsafe impl Sync for SendOut {}

#[repr(C, align(64))]
struct Tile([i32; 6 * NR]);

/// One work item: rows [m0, m1) x panels [p0, p1).
#[derive(Clone, Copy)]
struct Item {
    m0: usize,
    m1: usize,
    p0: usize,
    p1: usize,
}

/// The work items of one call: a grid of `ceil(panels / pc)` column chunks x `nm` row blocks of
/// `mc` rows, item `i` = (chunk `i / nm`, block `i % nm`). Computed, not stored (no allocation).
#[derive(Clone, Copy)]
struct Items {
    m: usize,
    panels: usize,
    mc: usize,
    pc: usize,
    nm: usize,
}

impl Items {
    fn len(&self) -> usize {
        self.panels.div_ceil(self.pc) * self.nm
    }
    fn get(&self, i: usize) -> Item {
        let (c, b) = (i / self.nm, i % self.nm);
        Item {
            m0: b * self.mc,
            m1: ((b + 1) * self.mc).min(self.m),
            p0: c * self.pc,
            p1: ((c + 1) * self.pc).min(self.panels),
        }
    }
    /// Runs `f` on every item, over the pool when there is more than one and `threads > 1`.
    fn run(&self, threads: usize, f: impl Fn(&Item) + Sync) {
        let n = self.len();
        if n == 1 || threads == 1 {
            (0..n).for_each(|i| f(&self.get(i)));
        } else {
            (0..n).into_par_iter().for_each(|i| f(&self.get(i)));
        }
    }
}

/// Splits the output into work items. The split never changes the result: each output element
/// is computed by exactly one micro-kernel call over the full K with the same instruction
/// sequence, whichever thread runs it.
fn plan_items(m: usize, n: usize, kp: usize, mr: usize, threads: usize) -> Items {
    let panels = n.div_ceil(NR);
    let l2_rows = ((256 * 1024) / kp.max(1)).max(mr) / mr * mr;
    let mut n_chunks = 1;
    let mut m_blocks = m.div_ceil(l2_rows).max(1);
    // Columns split evenly only when every thread gets the same number of full panels (e.g.
    // N = 96 is a 64-wide and a 32-wide panel); otherwise rows are split, if there are enough.
    let even_cols = n.is_multiple_of(NR) && panels.is_multiple_of(threads);
    let many_rows = m >= 4 * threads * 12;
    if threads > 1 && !even_cols && many_rows {
        let max_blocks = m.div_ceil(mr).max(1);
        m_blocks = (m_blocks.max(2 * threads).div_ceil(threads) * threads).min(max_blocks);
    } else if threads > 1 {
        n_chunks = panels.min(threads);
        let want = (2 * threads).div_ceil(n_chunks);
        let max_blocks = m.div_ceil(mr).max(1);
        m_blocks = m_blocks.max(want).min(max_blocks);
        if n_chunks < threads && m_blocks > 1 {
            m_blocks = (m_blocks.div_ceil(threads) * threads).min(max_blocks);
        }
    }
    let mc = (m.div_ceil(m_blocks).div_ceil(mr) * mr).max(1);
    let pc = panels.div_ceil(n_chunks).max(1);
    Items {
        m,
        panels,
        mc,
        pc,
        nm: m.div_ceil(mc),
    }
}

/// int8 GEMM with fused epilogue: `out[i][j] = epilogue(sum_k (a[i][k]-za) * (b[k][j]-zb))`.
///
/// Runs on the current rayon pool (call inside `pool.install(..)` to choose the thread count);
/// results are bit-identical for any thread count. Every output element is written; `out` must
/// hold `m` rows of stride `ldc >= N`.
///
/// Errors (never panics) on: buffers too small, `ldc < N`, bias/scale lengths != N, zero points
/// out of range, `clamp` empty or outside the output type.
pub fn gemm_u8s8(
    kernel: &Kernel,
    a: MatrixU8<'_>,
    b: &PackedB,
    ep: &Epilogue<'_>,
    out: OutputSlice<'_>,
    ldc: usize,
) -> Result<(), KernelError> {
    gemm_u8s8_res(kernel, a, b, ep, out, ldc, None)
}

/// A residual QLinearAdd applied to each output tile right after its epilogue, while the tile
/// is in L1: `out = add(out, other)` with the conv/GEMM output as operand A (see
/// [`crate::QAdd`]). `other` has the output's layout (same offsets, row stride `ldc`).
#[derive(Clone, Copy)]
pub(crate) struct Residual<'a> {
    pub other: &'a [u8],
    pub add: &'a QAdd,
}

/// Checks a residual against the output (type and extent).
fn check_residual(
    r: Option<&Residual<'_>>,
    out: &OutputSlice<'_>,
    m: usize,
    n: usize,
    ldc: usize,
) -> Result<(), KernelError> {
    let Some(r) = r else { return Ok(()) };
    match (out, r.add.signed) {
        (OutputSlice::U8(_), false) | (OutputSlice::I8(_), true) => {}
        _ => return Err(bad("residual add: output type does not match the add")),
    }
    check_matrix("residual operand", r.other.len(), m, n, ldc)
}

/// Applies the residual add to `rows` x `nc` outputs at `o` (row stride `ldc`), reading the
/// other operand at the same offset `off` from its base.
///
/// # Safety
/// The tile is inside the output and the residual operand (both checked with `check_matrix`).
#[inline(always)]
unsafe fn apply_residual(
    isa: Isa,
    r: &Residual<'_>,
    o: OutPtr,
    off: usize,
    rows: usize,
    nc: usize,
    ldc: usize,
) {
    let o = match o {
        OutPtr::U8(p) => p,
        OutPtr::I8(p) => p as *mut u8,
        _ => return,
    };
    let m = crate::qadd::Strided {
        a: o,
        b: r.other.as_ptr().add(off),
        out: o,
        lda: ldc,
        ldb: ldc,
        ldo: ldc,
    };
    if ldc == nc {
        // The tile's rows are one contiguous run (an output no wider than the panel): one row
        // of rows * nc bytes, whole 64-byte vectors instead of one masked vector per short row
        // (the add is element-wise, so the same bytes).
        crate::qadd::qadd_rows(isa, m, 1, rows * nc, r.add);
    } else {
        crate::qadd::qadd_rows(isa, m, rows, nc, r.add);
    }
}

/// The residual operand's address for a tile at output offset `off` when the fused VNNI kernel
/// applies the add in registers (whole 64-column panels), else null (the driver then applies it
/// to the stored tile).
fn inreg_ptr(isa: Isa, res: Option<&Residual<'_>>, off: usize, nc: usize) -> *const u8 {
    match res {
        Some(r) if isa == Isa::Avx512Vnni && nc == NR => r.other[off..].as_ptr(),
        _ => std::ptr::null(),
    }
}

/// [`gemm_u8s8`] with an optional residual add fused after the epilogue.
pub(crate) fn gemm_u8s8_res(
    kernel: &Kernel,
    a: MatrixU8<'_>,
    b: &PackedB,
    ep: &Epilogue<'_>,
    out: OutputSlice<'_>,
    ldc: usize,
    res: Option<&Residual<'_>>,
) -> Result<(), KernelError> {
    let threads = rayon::current_num_threads();
    gemm_u8s8_res_on(kernel, a, b, ep, out, ldc, res, threads)
}

/// [`gemm_u8s8_res`] split for `threads` workers (1: on the calling thread, for callers that
/// already parallelise over whole calls). The result does not depend on `threads`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_u8s8_res_on(
    kernel: &Kernel,
    a: MatrixU8<'_>,
    b: &PackedB,
    ep: &Epilogue<'_>,
    mut out: OutputSlice<'_>,
    ldc: usize,
    res: Option<&Residual<'_>>,
    threads: usize,
) -> Result<(), KernelError> {
    let (m, n, k) = (a.rows, b.n, b.k);
    check_matrix("gemm_u8s8 A", a.data.len(), m, k, a.ld)?;
    check_matrix("gemm_u8s8 output", out.len(), m, n, ldc)?;
    check_residual(res, &out, m, n, ldc)?;
    if !(0..=255).contains(&a.zero_point) {
        return Err(bad(format!(
            "gemm_u8s8: activation zero point {} outside [0, 255]",
            a.zero_point
        )));
    }
    let (scale, lo, hi) = validate_epilogue("gemm_u8s8", ep, n, &out)?;
    if m == 0 || n == 0 {
        return Ok(());
    }

    let (za, zb) = (a.zero_point, b.zero_point);
    let colterm = colterm(kernel.isa(), b, ep, za);
    // Row terms exist only with a weight zero point; otherwise a shared zero row is used.
    let rowterm = if zb != 0 {
        rowterm(kernel.isa(), a, m, k, zb)
    } else {
        ScratchVec::filled(0, 0)
    };
    let mut plan = EpiPlan {
        colterm: &colterm,
        scale: &scale,
        fbias: ep.f32_bias,
        zp: ep.out_zero_point,
        lo,
        hi,
        res: res.map(|r| r.add),
        small_scale: epilogue::small_scale(&scale),
        // Every VNNI tile runs the fused kernel (`run_fused`); without a weight zero point the
        // row terms are zero.
        acc_has_colterm: kernel.isa() == Isa::Avx512Vnni && zb == 0,
        fast: [0; 2],
    };
    #[cfg(target_arch = "x86_64")]
    {
        plan.fast = micro::fast_modes(&plan, &out.ptr());
    }

    let isa = kernel.isa();
    let mr = micro::mr(isa);
    let kp = b.kp;
    // Read A in place when every row has kp readable bytes (bytes beyond K meet zero weights,
    // so their values never matter); otherwise copy rows into a zero-padded scratch.
    let direct = k % 4 == 0 || (a.ld >= kp && a.data.len() >= (m - 1) * a.ld + kp);
    let post = ep.has_f32_post();
    let items = plan_items(m, n, kp, mr, threads);
    let outp = SendOut(out.ptr());

    let run_item = |it: &Item| {
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw-pointer field
        let outp = outp;
        // The zero-padded copy (a per-thread reused buffer, `crate::scratch`).
        let mut pad_buf =
            crate::scratch::Scratch::take(if direct { 0 } else { (it.m1 - it.m0) * kp });
        let padded: &[u8] = if direct {
            &[]
        } else {
            let buf = pad_buf.filled((it.m1 - it.m0) * kp, 0u8);
            for i in it.m0..it.m1 {
                buf[(i - it.m0) * kp..(i - it.m0) * kp + k]
                    .copy_from_slice(&a.data[i * a.ld..i * a.ld + k]);
            }
            buf
        };
        let (abase, a_rs) = if direct {
            // wrapping_add: with K == 0 nothing is read and the offset may pass the end.
            (a.data.as_ptr().wrapping_add(it.m0 * a.ld), a.ld)
        } else {
            (padded.as_ptr(), kp)
        };
        let mut tile = Tile([0; 6 * NR]);
        for p in it.p0..it.p1 {
            let bp = b.panel_ptr(p);
            let j0 = p * NR;
            let nc = NR.min(n - j0);
            // SAFETY: as the per-tile calls below, for every tile of rows m0..m1 of the panel.
            #[cfg(target_arch = "x86_64")]
            if unsafe {
                fused_panel(
                    isa,
                    it,
                    p,
                    micro::PanelA::Rows {
                        a: abase,
                        a_rs,
                        kg: kp / 4,
                    },
                    (b, n),
                    &plan,
                    &rowterm,
                    (outp.0, ldc),
                    res,
                )
            } {
                continue;
            }
            let mut i = it.m0;
            let mut t = 0;
            while i < it.m1 {
                // Narrow panels (<= 32 columns) leave registers for 12-row VNNI tiles.
                let rows = micro::tile_rows(isa, nc).min(it.m1 - i);
                // SAFETY: the Kernel proves `isa`; A rows i..i+rows are in bounds for kp bytes
                // (direct: kp == k and check_matrix; padded: buffer of kp per row); the panel
                // holds kp/4 groups of 256 bytes; the tile holds 6 x 64 (non-fused paths use <= 4 rows;
                // the fused VNNI path writes the output directly, up to 12 rows).
                unsafe {
                    let a_tile = abase.add((i - it.m0) * a_rs);
                    let o = outp.0.add(i * ldc + j0);
                    let rp = inreg_ptr(isa, res, i * ldc + j0, nc);
                    let fused = micro::run_fused(
                        isa,
                        rows,
                        kp / 4,
                        a_tile,
                        a_rs,
                        bp,
                        &plan,
                        rowterm_ptr(&rowterm, i),
                        j0,
                        nc,
                        o,
                        ldc,
                        rp,
                        prefetch_ptr(b, p, it.p1, t),
                    );
                    if !fused {
                        micro::run(isa, rows, kp / 4, a_tile, a_rs, bp, tile.0.as_mut_ptr());
                        for r in 0..rows {
                            epilogue::row(
                                isa,
                                &plan,
                                tile.0.as_ptr().add(r * NR),
                                *rowterm_ptr(&rowterm, i + r),
                                j0,
                                nc,
                                o.add(r * ldc),
                            );
                        }
                    }
                    if let Some(res) = res.filter(|_| !fused || rp.is_null()) {
                        apply_residual(isa, res, o, i * ldc + j0, rows, nc, ldc);
                    }
                    if let (true, OutPtr::F32(of)) = (post, o) {
                        f32_post(isa, ep, of, j0, rows, nc, ldc);
                    }
                }
                i += rows;
                t += 1;
            }
        }
    };
    items.run(threads, run_item);
    Ok(())
}

/// Checks an epilogue against N and the output type; returns the per-column multipliers and the
/// effective clamp `[lo, hi]`.
pub(crate) fn validate_epilogue(
    what: &str,
    ep: &Epilogue<'_>,
    n: usize,
    out: &OutputSlice<'_>,
) -> Result<(ScratchVec<f32>, i32, i32), KernelError> {
    if let Some(bias) = ep.bias {
        if bias.len() != n {
            return Err(bad(format!(
                "{what}: bias has {} values, N = {n}",
                bias.len()
            )));
        }
    }
    if let Some(fb) = ep.f32_bias {
        if fb.len() != n {
            return Err(bad(format!(
                "{what}: f32 bias has {} values, N = {n}",
                fb.len()
            )));
        }
    }
    if let Some(ps) = ep.f32_post_scale {
        if ps.len() != n {
            return Err(bad(format!(
                "{what}: f32 post-scale has {} values, N = {n}",
                ps.len()
            )));
        }
    }
    if ep.has_f32_post() && !matches!(out, OutputSlice::F32(_)) {
        return Err(bad(format!("{what}: GELU / post-scale need an f32 output")));
    }
    let scale = match ep.scale {
        Scale::PerTensor(s) => ScratchVec::filled(n, s),
        Scale::PerChannel(s) => {
            if s.len() != n {
                return Err(bad(format!(
                    "{what}: per-channel scale has {} values, N = {n}",
                    s.len()
                )));
            }
            ScratchVec::copy_of(s)
        }
    };
    let (tlo, thi) = match out {
        OutputSlice::U8(_) => (0, 255),
        OutputSlice::I8(_) => (-128, 127),
        _ => (i32::MIN, i32::MAX),
    };
    let (lo, hi) = match ep.clamp {
        Some((l, h)) => (l.max(tlo), h.min(thi)),
        None => (tlo, thi),
    };
    if lo > hi {
        return Err(bad(format!(
            "{what}: clamp {:?} is empty for this output type",
            ep.clamp
        )));
    }
    if matches!(out, OutputSlice::U8(_) | OutputSlice::I8(_))
        && !(tlo..=thi).contains(&ep.out_zero_point)
    {
        return Err(bad(format!(
            "{what}: output zero point {} outside the output type range",
            ep.out_zero_point
        )));
    }
    Ok((scale, lo, hi))
}

/// An indirection-buffer activation matrix (convolution without im2col): row `i`'s K is `taps`
/// segments of `seg` bytes, segment `t` starting at `ptrs[i * taps + t]`.
pub(crate) struct IndirectA<'a> {
    pub ptrs: &'a [*const u8],
    pub taps: usize,
    pub seg: usize,
    pub rows: usize,
    pub zero_point: i32,
    /// Row sums of the virtual A rows (needed only when the weight zero point is not 0).
    pub row_sums: Option<&'a [i32]>,
}

struct SyncPtrs<'a>(&'a [*const u8]);
// SAFETY: the pointers are only read through, to memory the caller keeps alive and unchanged.
unsafe impl Sync for SyncPtrs<'_> {}

/// int8 GEMM over an indirection buffer, `Avx512Vnni` only (other ISAs use im2col).
///
/// # Safety
/// Every pointer in `a.ptrs` must be readable for `a.seg` bytes for the duration of the call.
pub(crate) unsafe fn gemm_u8s8_indirect(
    kernel: &Kernel,
    a: IndirectA<'_>,
    b: &PackedB,
    ep: &Epilogue<'_>,
    mut out: OutputSlice<'_>,
    ldc: usize,
    res: Option<&Residual<'_>>,
) -> Result<(), KernelError> {
    let (m, n, k) = (a.rows, b.n, b.k);
    if kernel.isa() != Isa::Avx512Vnni
        || !a.seg.is_multiple_of(4)
        || a.taps * a.seg != k
        || a.ptrs.len() != m * a.taps
        || a.row_sums.is_some_and(|r| r.len() != m)
        || (b.zero_point != 0 && a.row_sums.is_none())
    {
        return Err(bad(
            "gemm_u8s8_indirect: inconsistent indirection arguments",
        ));
    }
    check_matrix("gemm_u8s8 output", out.len(), m, n, ldc)?;
    check_residual(res, &out, m, n, ldc)?;
    let (scale, lo, hi) = validate_epilogue("gemm_u8s8", ep, n, &out)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let za = a.zero_point;
    let colterm = colterm(kernel.isa(), b, ep, za);
    let rowterm = match a.row_sums {
        Some(rs) => ScratchVec::from_fn(rs.len(), |i| {
            b.zero_point.wrapping_neg().wrapping_mul(rs[i])
        }),
        None => ScratchVec::filled(0, 0),
    };
    let mut plan = EpiPlan {
        colterm: &colterm,
        scale: &scale,
        fbias: ep.f32_bias,
        zp: ep.out_zero_point,
        lo,
        hi,
        res: res.map(|r| r.add),
        small_scale: epilogue::small_scale(&scale),
        // Indirect A runs only the fused VNNI kernels.
        acc_has_colterm: b.zero_point == 0,
        fast: [0; 2],
    };
    #[cfg(target_arch = "x86_64")]
    {
        plan.fast = micro::fast_modes(&plan, &out.ptr());
    }
    let threads = rayon::current_num_threads();
    let items = plan_items(m, n, b.kp, 6, threads);
    let outp = SendOut(out.ptr());
    let ptrs = SyncPtrs(a.ptrs);
    let (taps, seg_kg) = (a.taps, a.seg / 4);
    let run_item = |it: &Item| {
        #[allow(clippy::redundant_locals)] // capture the Sync wrappers, not their fields
        let (outp, ptrs) = (outp, &ptrs);
        for p in it.p0..it.p1 {
            let bp = b.panel_ptr(p);
            let j0 = p * NR;
            let nc = NR.min(n - j0);
            // SAFETY: as the per-tile calls below, for every tile of rows m0..m1 of the panel.
            #[cfg(target_arch = "x86_64")]
            if unsafe {
                fused_panel(
                    Isa::Avx512Vnni,
                    it,
                    p,
                    micro::PanelA::Ind {
                        ptrs: ptrs.0[it.m0 * taps..].as_ptr(),
                        taps,
                        seg_kg,
                    },
                    (b, n),
                    &plan,
                    &rowterm,
                    (outp.0, ldc),
                    res,
                )
            } {
                continue;
            }
            let mut i = it.m0;
            let mut t = 0;
            while i < it.m1 {
                let rows = micro::tile_rows(Isa::Avx512Vnni, nc).min(it.m1 - i);
                let rp = inreg_ptr(Isa::Avx512Vnni, res, i * ldc + j0, nc);
                // SAFETY: the Kernel is Avx512Vnni (checked above); the caller guarantees the
                // pointers; rows i..i+rows have `taps` pointers each; the output was checked.
                #[cfg(target_arch = "x86_64")]
                micro::run_fused_ind(
                    rows,
                    taps,
                    seg_kg,
                    ptrs.0[i * taps..].as_ptr(),
                    bp,
                    &plan,
                    rowterm_ptr(&rowterm, i),
                    j0,
                    nc,
                    outp.0.add(i * ldc + j0),
                    ldc,
                    rp,
                    prefetch_ptr(b, p, it.p1, t),
                );
                if let Some(res) = res.filter(|_| rp.is_null()) {
                    apply_residual(
                        Isa::Avx512Vnni,
                        res,
                        outp.0.add(i * ldc + j0),
                        i * ldc + j0,
                        rows,
                        nc,
                        ldc,
                    );
                }
                i += rows;
                t += 1;
            }
        }
    };
    items.run(threads, run_item);
    Ok(())
}

/// Where tile `t` of panel `p` prefetches (into L2, one 64-byte line per K-group, so a tile covers
/// a quarter of a panel): the first four tiles of a panel fetch the four quarters of the next
/// panel of the work item, whose weights would otherwise come from DRAM while its first tile
/// waits. Other tiles, and the item's last panel, point at the current panel, already cached, so
/// the prefetch is a hit. ResNet-50 int8, 1 thread: 10 interleaved pairs, 8 faster, about
/// -0.1 ms of 20.7 (without the 2 MiB weight pages this measured no gain).
fn prefetch_ptr(b: &PackedB, p: usize, p1: usize, t: usize) -> *const i8 {
    match next_panel(b, p, p1) {
        n if !n.is_null() && t < 4 => n.wrapping_add(t * b.kp * NR / 4),
        _ => b.panel_ptr(p),
    }
}

/// Panel `p`'s rows `it.m0..it.m1` in one kernel call (`micro::run_fused_panel`) when this
/// call's epilogue has a branch-free mode for whole panels; `false`: nothing was done and the
/// driver runs its per-tile loop. `a` addresses row `it.m0`; `out` is the output's row 0.
///
/// # Safety
/// As the drivers' per-tile kernel calls, for every tile of rows `it.m0..it.m1` of panel `p`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn fused_panel(
    isa: Isa,
    it: &Item,
    p: usize,
    a: micro::PanelA,
    (b, n): (&PackedB, usize),
    plan: &epilogue::EpiPlan,
    rowterm: &[i32],
    (out, ldc): (OutPtr, usize),
    res: Option<&Residual<'_>>,
) -> bool {
    let (j0, nc) = (p * NR, NR.min(n - p * NR));
    let off = it.m0 * ldc + j0;
    micro::run_fused_panel(
        isa,
        it.m1 - it.m0,
        a,
        b.panel_ptr(p),
        plan,
        rowterm_ptr(rowterm, it.m0),
        j0,
        nc,
        out.add(off),
        ldc,
        inreg_ptr(isa, res, off, nc),
        next_panel(b, p, it.p1),
        b.kp * NR / 4,
    )
}

/// The item's next panel after `p` (panels end at `p1`), or null.
fn next_panel(b: &PackedB, p: usize, p1: usize) -> *const i8 {
    if p + 1 < p1 {
        b.panel_ptr(p + 1)
    } else {
        std::ptr::null()
    }
}

/// GELU and the post-scale on the F32 tile `rows x nc` at `o` (columns `j0..`), in L1.
///
/// # Safety
/// `o` addresses `rows` rows of stride `ldc` with `nc` writable floats each; `j0 + nc` is within
/// the epilogue's per-column slices (validated); `isa` is supported.
unsafe fn f32_post(
    isa: Isa,
    ep: &Epilogue<'_>,
    o: *mut f32,
    j0: usize,
    rows: usize,
    nc: usize,
    ldc: usize,
) {
    for r in 0..rows {
        let row = std::slice::from_raw_parts_mut(o.add(r * ldc), nc);
        if ep.f32_gelu {
            crate::elementwise::gelu_isa(isa, row);
        }
        if let Some(ps) = ep.f32_post_scale {
            for (y, &s) in row.iter_mut().zip(&ps[j0..j0 + nc]) {
                *y *= s;
            }
        }
    }
}

static ZERO_ROWS: [i32; 16] = [0; 16];

/// Pointer to the row terms of rows `i..` (16 readable zeros when `rowterm` is empty).
fn rowterm_ptr(rowterm: &[i32], i: usize) -> *const i32 {
    if rowterm.is_empty() {
        ZERO_ROWS.as_ptr()
    } else {
        rowterm[i..].as_ptr()
    }
}

/// `colterm[j] = bias[j] - za * colsum[j] + K * za * zb` (int32, wrapping).
fn colterm(isa: Isa, b: &PackedB, ep: &Epilogue<'_>, za: i32) -> ScratchVec<i32> {
    let kzz = (b.k as i32).wrapping_mul(za).wrapping_mul(b.zero_point);
    let mut t = ScratchVec::filled(b.n, kzz);
    let (sums, bias) = (&b.col_sums[..b.n], ep.bias.map(|bb| &bb[..b.n]));
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: every non-scalar ISA has AVX2 (the Kernel proves the ISA).
        unsafe { colterm_avx2(&mut t, sums, bias, za) };
        return t;
    }
    let _ = isa;
    colterm_body(&mut t, sums, bias, za);
    t
}

/// `t[j] += bias[j] - za * sums[j]`, wrapping (so in any order), as whole-slice passes the
/// compiler vectorizes (an indexed closure per element cost ~1 us per ResNet-50 layer).
#[inline(always)]
fn colterm_body(t: &mut [i32], sums: &[i32], bias: Option<&[i32]>, za: i32) {
    for (d, &cs) in t.iter_mut().zip(sums) {
        *d = d.wrapping_sub(za.wrapping_mul(cs));
    }
    if let Some(bb) = bias {
        for (d, &v) in t.iter_mut().zip(bb) {
            *d = d.wrapping_add(v);
        }
    }
}

/// `rowterm[i] = -zb * (sum of row i's first k bytes)` (wrapping) for the `m` rows of `a`.
fn rowterm(isa: Isa, a: MatrixU8<'_>, m: usize, k: usize, zb: i32) -> ScratchVec<i32> {
    let mut t = ScratchVec::filled(m, 0);
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: every non-scalar ISA has AVX2 (the Kernel proves the ISA).
        unsafe { rowterm_avx2(&mut t, a, k, zb) };
        return t;
    }
    let _ = isa;
    rowterm_body(&mut t, a, k, zb);
    t
}

/// [`rowterm`]'s loop: u8 row sums as whole-slice passes the compiler vectorizes (u32 sums,
/// the same bits as the int32 wrapping sum).
#[inline(always)]
fn rowterm_body(t: &mut [i32], a: MatrixU8<'_>, k: usize, zb: i32) {
    for (i, d) in t.iter_mut().enumerate() {
        let s: u32 = a.data[i * a.ld..i * a.ld + k]
            .iter()
            .map(|&x| u32::from(x))
            .sum();
        *d = zb.wrapping_neg().wrapping_mul(s as i32);
    }
}

/// [`rowterm_body`] with AVX2.
///
/// SAFETY: AVX2 supported.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rowterm_avx2(t: &mut [i32], a: MatrixU8<'_>, k: usize, zb: i32) {
    rowterm_body(t, a, k, zb)
}

/// [`colterm_body`] with AVX2's 32-bit multiply.
///
/// SAFETY: AVX2 supported.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn colterm_avx2(t: &mut [i32], sums: &[i32], bias: Option<&[i32]>, za: i32) {
    colterm_body(t, sums, bias, za)
}

/// Which semantics an ISA's int8 GEMM has: `true` if exact, `false` if it saturates int16 pairs
/// like `vpmaddubsw` (`Avx2`, `Avx512`).
pub fn gemm_u8s8_is_exact(isa: Isa) -> bool {
    matches!(isa, Isa::Scalar | Isa::Avx512Vnni)
}
