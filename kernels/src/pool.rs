//! Max pooling over NHWC tensors (u8, i8, f32), the window's channels held in registers across
//! all its taps (one load and one max per tap and vector, one store per output). Owns max pooling
//! only.
//!
//! Rule (identical on every ISA, bit for bit): `out[b][oy][ox][c]` is the running maximum over the
//! in-range taps `(ky, kx)` in row-major order, starting from the type's lowest value (`0` for
//! u8, `-128` for i8, `-inf` for f32), each step `m = if v > m { v } else { m }`. For f32 that is
//! `maxps(v, m)`: a NaN tap leaves `m` unchanged, a NaN `m` stays, and of two equal values (+0 and
//! -0) the earlier one is kept. Padding taps are skipped (never read as values).

use crate::error::{bad, KernelError};
use crate::isa::{Isa, Kernel};
use rayon::prelude::*;

/// Geometry of one max pooling: NHWC input `n x h x w x c`, output `n x oh x ow x c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Batch.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Kernel (height, width).
    pub kernel: (usize, usize),
    /// Strides (>= 1).
    pub stride: (usize, usize),
    /// Dilations (>= 1).
    pub dilation: (usize, usize),
    /// Top and left padding (the bottom / right padding follows from `oh`, `ow`).
    pub pad: (usize, usize),
}

impl PoolGeometry {
    fn check(&self, x_len: usize, y_len: usize) -> Result<(), KernelError> {
        let g = self;
        if g.stride.0 == 0 || g.stride.1 == 0 || g.dilation.0 == 0 || g.dilation.1 == 0 {
            return Err(bad(format!(
                "maxpool: strides {:?} and dilations {:?} must be >= 1",
                g.stride, g.dilation
            )));
        }
        let size = |a: usize, b: usize, c: usize, d: usize| {
            a.checked_mul(b)
                .and_then(|v| v.checked_mul(c))
                .and_then(|v| v.checked_mul(d))
        };
        // Index arithmetic of the taps must not overflow: o * s + (k - 1) * d + p, and the
        // row step d * w * c.
        let fits = |o: usize, s: usize, k: usize, d: usize, p: usize| {
            o.checked_mul(s)
                .and_then(|v| v.checked_add(k.saturating_sub(1).checked_mul(d)?))
                .and_then(|v| v.checked_add(p))
                .is_some()
        };
        let (py, px) = (g.pad.0.checked_add(g.h), g.pad.1.checked_add(g.w));
        let row =
            g.w.checked_mul(g.c)
                .and_then(|v| v.checked_mul(g.dilation.0));
        if !py.is_some_and(|p| fits(g.oh, g.stride.0, g.kernel.0, g.dilation.0, p))
            || !px.is_some_and(|p| fits(g.ow, g.stride.1, g.kernel.1, g.dilation.1, p))
            || row.is_none()
        {
            return Err(bad(format!("maxpool: geometry {g:?} overflows")));
        }
        match (size(g.n, g.h, g.w, g.c), size(g.n, g.oh, g.ow, g.c)) {
            (Some(xi), Some(yo)) if xi <= x_len && yo <= y_len => Ok(()),
            _ => Err(bad(format!(
                "maxpool: buffers of {x_len} / {y_len} elements do not hold {g:?}"
            ))),
        }
    }

    /// The in-range horizontal taps of output column `ox`.
    #[inline(always)]
    fn x_taps(&self, ox: usize) -> (usize, usize) {
        Self::taps(
            ox,
            self.stride.1,
            self.dilation.1,
            self.pad.1,
            self.kernel.1,
            self.w,
        )
    }

    /// The in-range taps along one axis of output position `o`: (first input index, count);
    /// consecutive taps are `d` apart.
    fn taps(o: usize, s: usize, d: usize, p: usize, k: usize, lim: usize) -> (usize, usize) {
        let base = o * s; // input index + p of tap 0
        let t_lo = p.saturating_sub(base).div_ceil(d);
        // i < lim  <=>  t * d < lim + p - base
        let t_hi = (lim + p).saturating_sub(base).div_ceil(d).min(k);
        if t_lo >= t_hi {
            (0, 0)
        } else {
            (base + t_lo * d - p, t_hi - t_lo)
        }
    }
}

/// Element types max pooling runs on.
trait Elem: Copy + Send + Sync {
    const LOWEST: Self;
    fn step(m: Self, v: Self) -> Self;
}
impl Elem for u8 {
    const LOWEST: u8 = 0;
    fn step(m: u8, v: u8) -> u8 {
        if v > m {
            v
        } else {
            m
        }
    }
}
impl Elem for i8 {
    const LOWEST: i8 = i8::MIN;
    fn step(m: i8, v: i8) -> i8 {
        if v > m {
            v
        } else {
            m
        }
    }
}
impl Elem for f32 {
    const LOWEST: f32 = f32::NEG_INFINITY;
    fn step(m: f32, v: f32) -> f32 {
        if v > m {
            v
        } else {
            m
        }
    }
}

/// Max pooling of u8 (or, with `signed`, i8 bytes) NHWC data.
pub fn maxpool_nhwc_u8(
    kernel: &Kernel,
    x: &[u8],
    y: &mut [u8],
    g: &PoolGeometry,
    signed: bool,
) -> Result<(), KernelError> {
    g.check(x.len(), y.len())?;
    if signed {
        let xs: &[i8] = bytemuck::cast_slice(x);
        let ys: &mut [i8] = bytemuck::cast_slice_mut(y);
        run(kernel.isa(), xs, ys, g, row_i8);
    } else {
        run(kernel.isa(), x, y, g, row_u8);
    }
    Ok(())
}

/// Max pooling of f32 NHWC data.
pub fn maxpool_nhwc_f32(
    kernel: &Kernel,
    x: &[f32],
    y: &mut [f32],
    g: &PoolGeometry,
) -> Result<(), KernelError> {
    g.check(x.len(), y.len())?;
    run(kernel.isa(), x, y, g, row_f32);
    Ok(())
}

/// One output row: `(isa, image, row out, geometry, oy)`.
type RowFn<T> = fn(Isa, &[T], &mut [T], &PoolGeometry, usize);

/// Splits the output into rows (one task per output row when the pool has several threads and
/// the work is large enough; any split gives the same values).
fn run<T: Elem>(isa: Isa, x: &[T], y: &mut [T], g: &PoolGeometry, row: RowFn<T>) {
    let chunk = g.ow * g.c;
    if chunk == 0 || g.oh == 0 || g.n == 0 {
        return;
    }
    if g.h == 0 || g.w == 0 {
        // An empty image: no window has a tap.
        y[..g.n * g.oh * chunk].fill(T::LOWEST);
        return;
    }
    let img = g.h * g.w * g.c;
    let y = &mut y[..g.n * g.oh * chunk];
    let f = |(r, yrow): (usize, &mut [T])| {
        let (b, oy) = (r / g.oh, r % g.oh);
        row(isa, &x[b * img..(b + 1) * img], yrow, g, oy);
    };
    // About 64 KiB of output per task before threads are worth waking.
    if rayon::current_num_threads() > 1 && std::mem::size_of_val(y) >= 64 << 10 {
        y.par_chunks_mut(chunk).enumerate().for_each(f);
    } else {
        y.chunks_mut(chunk).enumerate().for_each(f);
    }
}

/// The scalar rule on channels `c0..` of one output pixel (the reference, and every path's tail).
#[allow(clippy::too_many_arguments)]
fn pixel_scalar<T: Elem>(
    img: &[T],
    out: &mut [T],
    g: &PoolGeometry,
    (iy0, ny): (usize, usize),
    (ix0, nx): (usize, usize),
    c0: usize,
) {
    let c = g.c;
    for (j, o) in out.iter_mut().enumerate().skip(c0) {
        let mut m = T::LOWEST;
        for ty in 0..ny {
            let iy = iy0 + ty * g.dilation.0;
            for tx in 0..nx {
                let ix = ix0 + tx * g.dilation.1;
                m = T::step(m, img[(iy * g.w + ix) * c + j]);
            }
        }
        *o = m;
    }
}

macro_rules! row_fn {
    ($name:ident, $t:ty, $avx512:ident, $avx2:ident) => {
        fn $name(isa: Isa, img: &[$t], yrow: &mut [$t], g: &PoolGeometry, oy: usize) {
            let ty = PoolGeometry::taps(oy, g.stride.0, g.dilation.0, g.pad.0, g.kernel.0, g.h);
            match isa {
                // SAFETY: the Kernel proves the ISA; every tap (iy, ix) is inside the image
                // (`taps` keeps only in-range ones) and `yrow` holds `ow` pixels of `c`.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx512Vnni => unsafe { x86::$avx512::row(img, yrow, g, ty) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { x86::$avx2::row(img, yrow, g, ty) },
                _ => {
                    for (ox, out) in yrow.chunks_exact_mut(g.c).enumerate() {
                        pixel_scalar(img, out, g, ty, PoolGeometry::x_taps(g, ox), 0);
                    }
                }
            }
        }
    };
}
row_fn!(row_u8, u8, u8_avx512, u8_avx2);
row_fn!(row_i8, i8, i8_avx512, i8_avx2);
row_fn!(row_f32, f32, f32_avx512, f32_avx2);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::PoolGeometry;
    use std::arch::x86_64::*;

    /// Generates a module `$name` whose `row` pools one output row (every pixel in one call of
    /// the ISA's function: a call per pixel cost more than its maxima), `$vec` elements per
    /// vector, the running maximum in a register across all taps: `$max(v, m)` is the rule's
    /// step. With a mask type (AVX-512) the last partial vector of a pixel is done with masked
    /// loads and a masked store; without (AVX2) the scalar rule does the channels left.
    macro_rules! pixel {
        ($name:ident, $t:ty, $feat:literal, $vec:expr, $lowest:expr, $load:ident, $max:ident,
         $store:ident, $cast:ty $(, $mask:ty, $mload:ident, $mstore:ident)?) => {
        pub(super) mod $name {
            use super::*;

            /// SAFETY: the CPU has the features; the vertical taps `ty` are inside `img` (an
            /// image of `g.h x g.w x g.c`), `yrow` holds `g.ow * g.c` elements.
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn row(
                img: &[$t],
                yrow: &mut [$t],
                g: &PoolGeometry,
                ty: (usize, usize),
            ) {
                for (ox, out) in yrow.chunks_exact_mut(g.c).enumerate() {
                    let tx = g.x_taps(ox);
                    let done = pixel(img, out, g, ty, tx);
                    if done < g.c {
                        super::super::pixel_scalar(img, out, g, ty, tx, done);
                    }
                }
            }

            /// One pixel; returns how many channels it did. Inlined into `row`, whose target
            /// features it then has.
            #[inline(always)]
            unsafe fn pixel(
                img: &[$t],
                out: &mut [$t],
                g: &PoolGeometry,
                (iy0, ny): (usize, usize),
                (ix0, nx): (usize, usize),
            ) -> usize {
                let c = g.c;
                let (dy, dx) = (g.dilation.0 * g.w * c, g.dilation.1 * c);
                // (wrapping: a window without taps never reads through it)
                let first = img.as_ptr().wrapping_add((iy0 * g.w + ix0) * c);
                let o = out.as_mut_ptr();
                // The running maximum over the window's taps of the vector at channel `j`, each
                // tap loaded by `$ld(pointer)` (taps `(ty, tx)` at `first + ty * dy + tx * dx`).
                macro_rules! window {
                    ($j:expr, |$p:ident| $ld:expr) => {{
                        let mut m = $lowest;
                        for ty in 0..ny {
                            let row = first.add(ty * dy + $j);
                            for tx in 0..nx {
                                let $p = row.add(tx * dx);
                                m = $max($ld, m);
                            }
                        }
                        m
                    }};
                }
                let mut j = 0;
                while j + $vec <= c {
                    let m = window!(j, |p| $load(p as *const $cast));
                    $store(o.add(j) as *mut $cast, m);
                    j += $vec;
                }
                $(
                    if j < c {
                        // Masked-off lanes read as 0 and are never stored.
                        let k = ((1u64 << (c - j)) - 1) as $mask;
                        let m = window!(j, |p| $mload(k, p as *const _));
                        $mstore(o.add(j) as *mut _, k, m);
                        j = c;
                    }
                )?
                j
            }
        }
        };
    }

    // Bytes: vpmax[u|s]b(v, m) is the larger of the two; equal bytes are the same byte.
    pixel!(
        u8_avx512,
        u8,
        "avx512f,avx512bw",
        64,
        _mm512_setzero_si512(),
        _mm512_loadu_si512,
        _mm512_max_epu8,
        _mm512_storeu_si512,
        __m512i,
        u64,
        _mm512_maskz_loadu_epi8,
        _mm512_mask_storeu_epi8
    );
    pixel!(
        i8_avx512,
        i8,
        "avx512f,avx512bw",
        64,
        _mm512_set1_epi8(i8::MIN),
        _mm512_loadu_si512,
        _mm512_max_epi8,
        _mm512_storeu_si512,
        __m512i,
        u64,
        _mm512_maskz_loadu_epi8,
        _mm512_mask_storeu_epi8
    );
    // f32: maxps(v, m) = if v > m { v } else { m } (NaN and signed-zero behaviour included).
    pixel!(
        f32_avx512,
        f32,
        "avx512f",
        16,
        _mm512_set1_ps(f32::NEG_INFINITY),
        _mm512_loadu_ps,
        _mm512_max_ps,
        _mm512_storeu_ps,
        f32,
        u16,
        _mm512_maskz_loadu_ps,
        _mm512_mask_storeu_ps
    );
    pixel!(
        u8_avx2,
        u8,
        "avx2",
        32,
        _mm256_setzero_si256(),
        _mm256_loadu_si256,
        _mm256_max_epu8,
        _mm256_storeu_si256,
        __m256i
    );
    pixel!(
        i8_avx2,
        i8,
        "avx2",
        32,
        _mm256_set1_epi8(i8::MIN),
        _mm256_loadu_si256,
        _mm256_max_epi8,
        _mm256_storeu_si256,
        __m256i
    );
    pixel!(
        f32_avx2,
        f32,
        "avx2",
        8,
        _mm256_set1_ps(f32::NEG_INFINITY),
        _mm256_loadu_ps,
        _mm256_max_ps,
        _mm256_storeu_ps,
        f32
    );
}

/// The scalar rule on a whole tensor (for tests and as documentation of the semantics).
pub fn maxpool_nhwc_reference<T: Copy + PartialOrd>(
    x: &[T],
    y: &mut [T],
    g: &PoolGeometry,
    lowest: T,
) -> Result<(), KernelError> {
    g.check(x.len(), y.len())?;
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ch in 0..g.c {
                    let mut m = lowest;
                    for ky in 0..g.kernel.0 {
                        let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize - g.pad.0 as isize;
                        if iy < 0 || iy as usize >= g.h {
                            continue;
                        }
                        for kx in 0..g.kernel.1 {
                            let ix =
                                (ox * g.stride.1 + kx * g.dilation.1) as isize - g.pad.1 as isize;
                            if ix < 0 || ix as usize >= g.w {
                                continue;
                            }
                            let v = x[((b * g.h + iy as usize) * g.w + ix as usize) * g.c + ch];
                            if v > m {
                                m = v;
                            }
                        }
                    }
                    y[((b * g.oh + oy) * g.ow + ox) * g.c + ch] = m;
                }
            }
        }
    }
    Ok(())
}
