//! Vectorized fp32 element-wise and row kernels for nodes kept in float: add, mul, ReLU, exp,
//! erf, GELU (erf-based), softmax and layer normalization over rows. Owns these algorithms; the
//! SIMD plumbing is `simd.rs`.
//!
//! Accuracy (checked in tests against f64): `exp` Cephes polynomial, ~2 ulp on [-87, 88], 0 below
//! -87; `erfc` Numerical Recipes Chebyshev fit, relative error < 1.2e-7 in exact arithmetic
//! (measured in f32: GELU <= 2e-6 relative for |x| <= 5, ~1e-5 in the far negative tail where
//! |gelu| < 2e-6, from rounding z^2 inside exp(-z^2)); `erf` uses a Taylor series below 0.5;
//! GELU `0.5 x (1 + erf(x / sqrt 2))` evaluated through erfc so the negative tail keeps its
//! relative accuracy; on AVX-512, |x| < 5.99 instead uses 16 relative-error polynomial pieces
//! (`GELU_Q`: 2.1e-7 relative for |x| <= 5). Otherwise ISAs differ only by FMA contraction
//! (scalar has none), so paths agree to ~1e-6 relative, not bitwise. Each map kernel gives an
//! element the same bits wherever it sits in the slice (the tail runs through a padded vector),
//! so applying one per GEMM tile equals one pass over the tensor.

use crate::error::{bad, KernelError};
use crate::isa::{Isa, Kernel};
use crate::simd::F32x;
use rayon::prelude::*;

/// Row kernels split their rows over the current rayon pool from this many elements on (rows
/// are independent, so the split never changes a bit).
const PAR_MIN_ELEMS: usize = 16 * 1024;

/// Rows per parallel task for `total` elements in rows of `row_len` (None: run sequentially).
fn par_rows(total: usize, row_len: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    let rows = total / row_len.max(1);
    (threads > 1 && total >= PAR_MIN_ELEMS && rows >= 2).then(|| rows.div_ceil(4 * threads).max(1))
}

#[inline(always)]
unsafe fn sp<V: F32x>(x: f32) -> V {
    V::splat(x)
}

#[inline(always)]
unsafe fn exp_v<V: F32x>(x: V) -> V {
    let xc = x.max(sp(-87.0)).min(sp(88.0));
    let n = xc.mul(sp(std::f32::consts::LOG2_E)).round();
    let r = n.fma(sp(-0.693_359_4), xc);
    let r = n.fma(sp(2.121_944_4e-4), r);
    let mut p: V = sp(1.987_569_1e-4);
    p = p.fma(r, sp(1.398_199_9e-3));
    p = p.fma(r, sp(8.333_452e-3));
    p = p.fma(r, sp(4.166_579_6e-2));
    p = p.fma(r, sp(1.666_666_5e-1));
    p = p.fma(r, sp(0.5));
    let y = p.fma(r.mul(r), r).add(sp(1.0)).mul(n.pow2());
    // Below -87 the result is 0 (no denormals).
    x.add(sp(87.0)).select_nonneg(y, sp(0.0))
}

/// erfc(z) for z >= 0 (Numerical Recipes `erfcc`).
#[inline(always)]
unsafe fn erfc_pos<V: F32x>(z: V) -> V {
    let t = z.fma(sp(0.5), sp(1.0)).recip();
    let mut p: V = sp(0.170_872_77);
    for c in [
        -0.822_152_23f32,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ] {
        p = p.fma(t, sp(c));
    }
    t.mul(exp_v(z.mul(z).sub(p).mul(sp(-1.0))))
}

#[inline(always)]
unsafe fn erf_v<V: F32x>(x: V) -> V {
    let e = erfc_pos(x.abs());
    let big = x.select_nonneg(sp::<V>(1.0).sub(e), e.sub(sp(1.0)));
    // |x| < 0.5: Taylor series x * P(x^2) (8 terms, truncation < 1e-9), avoiding the
    // cancellation of 1 - erfc(x) near 0.
    let s = x.mul(x);
    let mut p: V = sp(-1.492_565e-5);
    for c in [
        1.205_533_3e-4f32,
        -8.548_327e-4,
        5.223_977_6e-3,
        -2.686_617e-2,
        1.128_379_2e-1,
        -3.761_263_9e-1,
        std::f32::consts::FRAC_2_SQRT_PI,
    ] {
        p = p.fma(s, sp(c));
    }
    sp::<V>(0.5).sub(x.abs()).select_nonneg(x.mul(p), big)
}

/// GELU on AVX-512: `q(a) = Phi(-a) = erfc(a / sqrt 2) / 2` for `a = |x| < 6` as 16 degree-7
/// polynomials (intervals of 0.375, looked up per lane), fitted for *relative* error (weights
/// `1 / q`, Chebyshev nodes), so the negative tail keeps its relative accuracy: GELU within
/// 2.1e-7 relative for |x| <= 5 and 4.8e-7 up to 6 (f32 evaluation, against f64). About half
/// the instructions of the erfc + exp formula, which still serves |x| >= 5.99, NaN and the
/// ISAs without a 16-entry lane lookup. `GELU_Q[k][i]`: coefficient k of interval i.
const GELU_WIDTH: f32 = 0.375;
const GELU_TABLE_LIMIT: f32 = 5.99;
#[rustfmt::skip]
static GELU_Q: [[f32; 16]; 8] = [
    [
        0.42563432,
        0.2868877,
        0.1742507,
        0.09467574,
        0.045753624,
        0.01958008,
        0.007394607,
        0.0024579011,
        0.0007175423,
        0.00018366995,
        4.1167466e-5,
        8.070944e-6,
        1.3828135e-6,
        2.0689703e-7,
        2.7016673e-8,
        3.077334e-9,
    ],
    [
        -0.3919909,
        -0.3405676,
        -0.2570739,
        -0.16859318,
        -0.0960615,
        -0.04755389,
        -0.020452674,
        -0.007642606,
        -0.0024811907,
        -0.000699852,
        -0.00017150611,
        -3.651576e-5,
        -6.7547367e-6,
        -1.0855852e-6,
        -1.515817e-7,
        -1.8388954e-8,
    ],
    [
        0.036749143,
        0.095784634,
        0.120503396,
        0.11063928,
        0.08105189,
        0.049039952,
        0.024926696,
        0.010747414,
        0.0039543975,
        0.0012466114,
        0.0003376527,
        7.873714e-5,
        1.583143e-5,
        2.747893e-6,
        4.121142e-7,
        5.3443202e-8,
    ],
    [
        0.06303499,
        0.03880164,
        0.0051883375,
        -0.020305814,
        -0.029581431,
        -0.025789313,
        -0.016844163,
        -0.008801936,
        -0.0037880177,
        -0.0013637095,
        -0.00041458447,
        -0.00010709831,
        -2.3610619e-5,
        -4.4560616e-6,
        -7.2167086e-7,
        -1.0047615e-7,
    ],
    [
        -0.009079341,
        -0.021420052,
        -0.021299658,
        -0.011777187,
        -0.0010292622,
        0.005124151,
        0.006109984,
        0.0043976963,
        0.0023595537,
        0.0010067947,
        0.00035182675,
        0.00010233737,
        2.5027472e-5,
        5.180779e-6,
        9.1208074e-7,
        1.3704235e-7,
    ],
    [
        -0.009114377,
        -0.0034099987,
        0.0032155728,
        0.0061370227,
        0.00478409,
        0.0017544627,
        -0.0004518888,
        -0.0011532089,
        -0.0009358882,
        -0.000512761,
        -0.00021489695,
        -7.222397e-5,
        -1.9934003e-5,
        -4.581834e-6,
        -8.850125e-7,
        -1.445609e-7,
    ],
    [
        0.0014825425,
        0.0031512985,
        0.0023257635,
        0.00023482983,
        -0.0011953794,
        -0.0012798653,
        -0.0006321088,
        -4.9124526e-5,
        0.00018052757,
        0.0001697529,
        9.433004e-5,
        3.851882e-5,
        1.2368737e-5,
        3.2229004e-6,
        6.935879e-7,
        1.2465823e-7,
    ],
    [
        0.0010343492,
        0.00014410312,
        -0.000693484,
        -0.00076538714,
        -0.00027201007,
        0.0001711167,
        0.00027101688,
        0.00015299775,
        2.704577e-5,
        -2.5629583e-5,
        -2.7012533e-5,
        -1.4691889e-5,
        -5.679775e-6,
        -1.6995344e-6,
        -4.085999e-7,
        -8.055831e-8,
    ],
];

#[inline(always)]
unsafe fn gelu_v<V: F32x>(x: V) -> V {
    let a = x.abs();
    if let Some(q) = a.poly16(GELU_WIDTH, &GELU_Q) {
        // Phi(x) = 1 - q for x >= 0, q for x < 0; GELU = x Phi(x).
        let xq = x.mul(q);
        let fast = x.select_nonneg(x.sub(xq), xq);
        let inside = sp::<V>(GELU_TABLE_LIMIT).sub(a);
        if inside.all_nonneg() {
            return fast;
        }
        return inside.select_nonneg(fast, gelu_erfc(x));
    }
    gelu_erfc(x)
}

/// GELU through erfc (and exp): every ISA's formula outside the table.
#[inline(always)]
unsafe fn gelu_erfc<V: F32x>(x: V) -> V {
    let e = erfc_pos(x.abs().mul(sp(std::f32::consts::FRAC_1_SQRT_2)));
    // 1 + erf(x/sqrt2) = 2 - erfc(|z|) for x >= 0, erfc(|z|) for x < 0.
    let one_plus = x.select_nonneg(sp::<V>(2.0).sub(e), e);
    x.mul(sp(0.5)).mul(one_plus)
}

/// An element-wise operation, as a type rather than a closure: closures do not inherit the
/// caller's target features, so intrinsics inside them would become out-of-line calls.
trait MapOp {
    unsafe fn apply<V: F32x>(v: V) -> V;
}
struct Gelu;
struct Erf;
struct Exp;
struct Relu;
impl MapOp for Gelu {
    #[inline(always)]
    unsafe fn apply<V: F32x>(v: V) -> V {
        gelu_v(v)
    }
}
impl MapOp for Erf {
    #[inline(always)]
    unsafe fn apply<V: F32x>(v: V) -> V {
        erf_v(v)
    }
}
impl MapOp for Exp {
    #[inline(always)]
    unsafe fn apply<V: F32x>(v: V) -> V {
        exp_v(v)
    }
}
impl MapOp for Relu {
    #[inline(always)]
    unsafe fn apply<V: F32x>(v: V) -> V {
        v.max(sp(0.0))
    }
}

/// Applies `Op` to every element: SIMD over whole vectors (two independent vectors per step,
/// doubling the instruction-level parallelism of the long polynomial chains), the tail padded
/// into one more vector.
#[inline(always)]
unsafe fn map_body<V: F32x, Op: MapOp>(x: *mut f32, n: usize) {
    let mut i = 0;
    while i + 2 * V::LANES <= n {
        let a = Op::apply(V::load(x.add(i)));
        let b = Op::apply(V::load(x.add(i + V::LANES)));
        a.store(x.add(i));
        b.store(x.add(i + V::LANES));
        i += 2 * V::LANES;
    }
    while i + V::LANES <= n {
        Op::apply(V::load(x.add(i))).store(x.add(i));
        i += V::LANES;
    }
    if i < n {
        // The tail through the same vector code (via a padded copy), so an element's value
        // does not depend on its position: a GEMM epilogue applying `Op` per tile gives the
        // same bits as one pass over the whole tensor.
        let mut buf = [0f32; 16];
        debug_assert!(V::LANES <= buf.len());
        std::ptr::copy_nonoverlapping(x.add(i), buf.as_mut_ptr(), n - i);
        Op::apply(V::load(buf.as_ptr())).store(buf.as_mut_ptr());
        std::ptr::copy_nonoverlapping(buf.as_ptr(), x.add(i), n - i);
    }
}

#[inline(always)]
unsafe fn gelu_body<V: F32x>(x: *mut f32, n: usize) {
    map_body::<V, Gelu>(x, n)
}
#[inline(always)]
unsafe fn erf_body<V: F32x>(x: *mut f32, n: usize) {
    map_body::<V, Erf>(x, n)
}
#[inline(always)]
unsafe fn exp_body<V: F32x>(x: *mut f32, n: usize) {
    map_body::<V, Exp>(x, n)
}
#[inline(always)]
unsafe fn relu_body<V: F32x>(x: *mut f32, n: usize) {
    map_body::<V, Relu>(x, n)
}

#[inline(always)]
unsafe fn binary_body<V: F32x>(a: *const f32, b: *const f32, out: *mut f32, n: usize, mul: bool) {
    let mut i = 0;
    while i + V::LANES <= n {
        let (x, y) = (V::load(a.add(i)), V::load(b.add(i)));
        (if mul { x.mul(y) } else { x.add(y) }).store(out.add(i));
        i += V::LANES;
    }
    while i < n {
        let (x, y) = (*a.add(i), *b.add(i));
        *out.add(i) = if mul { x * y } else { x + y };
        i += 1;
    }
}

#[inline(always)]
unsafe fn softmax_rows_body<V: F32x>(x: *mut f32, total: usize, n: usize, nan_to: f32, fix: bool) {
    let mut r = 0;
    while r + n <= total {
        let row = x.add(r);
        let s = softmax_body::<V>(row, n);
        // Outputs are `e * (1 / s)` with every `e` finite and >= 0 (`exp_v` maps NaN to 0), so
        // only a zero, infinite or NaN sum (a row of -inf, say) can give NaN outputs: check
        // just those rows, while each is in L1.
        if fix && !(s > 0.0 && s.is_finite()) {
            for j in 0..n {
                if (*row.add(j)).is_nan() {
                    *row.add(j) = nan_to;
                }
            }
        }
        r += n;
    }
}

/// Softmax of one row in place; returns the sum of the exponentials.
#[inline(always)]
unsafe fn softmax_body<V: F32x>(x: *mut f32, n: usize) -> f32 {
    let nv = n / V::LANES * V::LANES;
    let mut vm: V = sp(f32::NEG_INFINITY);
    let mut vm2: V = sp(f32::NEG_INFINITY);
    let mut i = 0;
    // Two independent max chains (max is exact: the order does not matter).
    while i + 2 * V::LANES <= nv {
        vm = vm.max(V::load(x.add(i)));
        vm2 = vm2.max(V::load(x.add(i + V::LANES)));
        i += 2 * V::LANES;
    }
    while i < nv {
        vm = vm.max(V::load(x.add(i)));
        i += V::LANES;
    }
    vm = vm.max(vm2);
    let mut m = if nv > 0 { vm.hmax() } else { f32::NEG_INFINITY };
    for j in nv..n {
        m = m.max(*x.add(j));
    }
    let mv: V = sp(m);
    let mut vs: V = sp(0.0);
    i = 0;
    while i < nv {
        let e = exp_v(V::load(x.add(i)).sub(mv));
        e.store(x.add(i));
        vs = vs.add(e);
        i += V::LANES;
    }
    let mut s = if nv > 0 { vs.hsum() } else { 0.0 };
    for j in nv..n {
        let e = exp_v(*x.add(j) - m);
        *x.add(j) = e;
        s += e;
    }
    let inv: V = sp(1.0 / s);
    i = 0;
    while i < nv {
        V::load(x.add(i)).mul(inv).store(x.add(i));
        i += V::LANES;
    }
    for j in nv..n {
        *x.add(j) *= 1.0 / s;
    }
    s
}

#[inline(always)]
unsafe fn sum_body<V: F32x>(x: *const f32, n: usize, center: f32, square: bool) -> f32 {
    let nv = n / V::LANES * V::LANES;
    let c: V = sp(center);
    let mut acc: V = sp(0.0);
    let mut i = 0;
    while i < nv {
        let d = V::load(x.add(i)).sub(c);
        acc = if square { d.fma(d, acc) } else { acc.add(d) };
        i += V::LANES;
    }
    let mut s = if nv > 0 { acc.hsum() } else { 0.0 };
    for j in nv..n {
        let d = *x.add(j) - center;
        s += if square { d * d } else { d };
    }
    s
}

#[inline(always)]
unsafe fn layer_norm_body<V: F32x>(
    x: *const f32,
    out: *mut f32,
    n: usize,
    gamma: *const f32,
    beta: *const f32,
    eps: f32,
) {
    let mean = sum_body::<V>(x, n, 0.0, false) / n as f32;
    let var = sum_body::<V>(x, n, mean, true) / n as f32;
    let inv = 1.0 / (var + eps).sqrt();
    let (mv, iv): (V, V) = (sp(mean), sp(inv));
    let nv = n / V::LANES * V::LANES;
    let mut i = 0;
    while i < nv {
        let y = V::load(x.add(i)).sub(mv).mul(iv);
        y.fma(V::load(gamma.add(i)), V::load(beta.add(i)))
            .store(out.add(i));
        i += V::LANES;
    }
    for j in nv..n {
        *out.add(j) = ((*x.add(j) - mean) * inv) * *gamma.add(j) + *beta.add(j);
    }
}

/// Generates `fn $name(isa, args)` that runs `$body::<V512|V256|f32>` inside the matching
/// `#[target_feature]` wrapper.
macro_rules! entry {
    ($name:ident -> $ret:ty, $body:ident, ($($p:ident : $t:ty),*)) => {
        unsafe fn $name(isa: Isa, $($p: $t),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
                unsafe fn w512($($p: $t),*) -> $ret { $body::<crate::simd::V512>($($p),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn w256($($p: $t),*) -> $ret { $body::<crate::simd::V256>($($p),*) }
                match isa {
                    // SAFETY: `isa` comes from a Kernel, which proves the features.
                    Isa::Avx512 | Isa::Avx512Vnni => return w512($($p),*),
                    Isa::Avx2 => return w256($($p),*),
                    Isa::Scalar => {}
                }
            }
            let _ = isa;
            $body::<f32>($($p),*)
        }
    };
}

entry!(gelu_e -> (), gelu_body, (x: *mut f32, n: usize));
entry!(erf_e -> (), erf_body, (x: *mut f32, n: usize));
entry!(exp_e -> (), exp_body, (x: *mut f32, n: usize));
entry!(relu_e -> (), relu_body, (x: *mut f32, n: usize));
entry!(binary_e -> (), binary_body, (a: *const f32, b: *const f32, out: *mut f32, n: usize, mul: bool));
entry!(softmax_e -> (), softmax_rows_body, (x: *mut f32, total: usize, n: usize, nan_to: f32, fix: bool));
entry!(layer_norm_e -> (), layer_norm_body, (x: *const f32, out: *mut f32, n: usize, gamma: *const f32, beta: *const f32, eps: f32));

/// In place `x = 0.5 x (1 + erf(x / sqrt 2))` (exact-erf GELU, ONNX Gelu default).
pub fn gelu_inplace(kernel: &Kernel, x: &mut [f32]) {
    // SAFETY: pointer and length of one slice.
    unsafe { gelu_e(kernel.isa(), x.as_mut_ptr(), x.len()) }
}
/// [`gelu_inplace`] on an ISA the caller has proven (a `Kernel` of that ISA exists).
pub(crate) fn gelu_isa(isa: Isa, x: &mut [f32]) {
    // SAFETY: pointer and length of one slice; the caller proves `isa`.
    unsafe { gelu_e(isa, x.as_mut_ptr(), x.len()) }
}
/// In place `x = erf(x)`.
pub fn erf_inplace(kernel: &Kernel, x: &mut [f32]) {
    // SAFETY: as above.
    unsafe { erf_e(kernel.isa(), x.as_mut_ptr(), x.len()) }
}
/// In place `x = exp(x)` (0 below -87, clamped at exp(88) above 88).
pub fn exp_inplace(kernel: &Kernel, x: &mut [f32]) {
    // SAFETY: as above.
    unsafe { exp_e(kernel.isa(), x.as_mut_ptr(), x.len()) }
}
/// In place `x = max(x, 0)`.
pub fn relu_inplace(kernel: &Kernel, x: &mut [f32]) {
    // SAFETY: as above.
    unsafe { relu_e(kernel.isa(), x.as_mut_ptr(), x.len()) }
}

fn binary(
    kernel: &Kernel,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    mul: bool,
) -> Result<(), KernelError> {
    if a.len() != b.len() || a.len() != out.len() {
        return Err(bad(format!(
            "elementwise: lengths differ: a {}, b {}, out {}",
            a.len(),
            b.len(),
            out.len()
        )));
    }
    // SAFETY: three slices of equal length.
    unsafe {
        binary_e(
            kernel.isa(),
            a.as_ptr(),
            b.as_ptr(),
            out.as_mut_ptr(),
            a.len(),
            mul,
        )
    };
    Ok(())
}
/// `out = a + b` element-wise (equal lengths).
pub fn add(kernel: &Kernel, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    binary(kernel, a, b, out, false)
}
/// `out = a * b` element-wise (equal lengths).
pub fn mul(kernel: &Kernel, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    binary(kernel, a, b, out, true)
}

/// In place softmax over each row of `row_len` elements (max-subtracted, ONNX Softmax on the
/// last axis). `x.len()` must be a multiple of `row_len`.
pub fn softmax_rows(kernel: &Kernel, x: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    softmax_par(kernel, x, row_len, 0.0, false)
}

/// Softmax over whole rows (checked), split over the pool when large.
fn softmax_par(
    kernel: &Kernel,
    x: &mut [f32],
    row_len: usize,
    nan_to: f32,
    fix: bool,
) -> Result<(), KernelError> {
    if row_len == 0 || !x.len().is_multiple_of(row_len) {
        return Err(bad(format!(
            "softmax_rows: length {} is not a multiple of row length {row_len}",
            x.len()
        )));
    }
    let isa = kernel.isa();
    let run = |c: &mut [f32]| {
        // SAFETY: whole rows of one slice; `isa` comes from a Kernel.
        unsafe { softmax_e(isa, c.as_mut_ptr(), c.len(), row_len, nan_to, fix) }
    };
    match par_rows(x.len(), row_len) {
        Some(per) => x.par_chunks_mut(per * row_len).for_each(run),
        None => run(x),
    }
    Ok(())
}

/// [`softmax_rows`] then NaN outputs replaced by `nan_to` (ONNX `Where(IsNaN(s), c, s)` after a
/// Softmax, as BERT exports guard fully masked rows), row by row while each is in L1.
pub fn softmax_rows_nan_to(
    kernel: &Kernel,
    x: &mut [f32],
    row_len: usize,
    nan_to: f32,
) -> Result<(), KernelError> {
    softmax_par(kernel, x, row_len, nan_to, true)
}

/// Layer normalization over each row of `gamma.len()` elements (ONNX LayerNormalization on the
/// last axis): `(x - mean) / sqrt(var + eps) * gamma + beta`, population variance.
pub fn layer_norm_rows(
    kernel: &Kernel,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let n = gamma.len();
    if n == 0 || beta.len() != n || !x.len().is_multiple_of(n) || out.len() != x.len() {
        return Err(bad(format!(
            "layer_norm_rows: gamma {n}, beta {}, x {}, out {}: need equal gamma/beta, x a multiple of them, out = x",
            beta.len(),
            x.len(),
            out.len()
        )));
    }
    let rows = |xs: &[f32], os: &mut [f32]| {
        for (xr, or) in xs.chunks_exact(n).zip(os.chunks_exact_mut(n)) {
            // SAFETY: row slices of length n; gamma/beta of length n.
            unsafe {
                layer_norm_e(
                    kernel.isa(),
                    xr.as_ptr(),
                    or.as_mut_ptr(),
                    n,
                    gamma.as_ptr(),
                    beta.as_ptr(),
                    eps,
                )
            };
        }
    };
    match par_rows(x.len(), n) {
        Some(per) => x
            .par_chunks(per * n)
            .zip(out.par_chunks_mut(per * n))
            .for_each(|(xs, os)| rows(xs, os)),
        None => rows(x, out),
    }
    Ok(())
}
