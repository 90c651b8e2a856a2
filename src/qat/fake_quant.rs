//! Fake quantization (quantize then dequantize in f32) with the clipped straight-through
//! estimator, and the observers that pick the ranges.

use crate::quant::scheme::round_half_even_f32;

/// One affine grid: `q = clamp(round(x / scale) + zp, qmin, qmax)`, `x' = (q - zp) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FqParams {
    pub scale: f32,
    pub zero_point: f32,
    pub qmin: f32,
    pub qmax: f32,
}

impl FqParams {
    /// Symmetric signed grid for `bits` (e.g. 4 bits -> [-7, 7]) covering `[-amax, amax]`.
    pub fn symmetric(amax: f32, bits: u32) -> Self {
        let qmax = ((1i64 << (bits - 1)) - 1) as f32;
        let scale = if amax > 0.0 && amax.is_finite() {
            amax / qmax
        } else {
            1.0
        };
        FqParams {
            scale,
            zero_point: 0.0,
            qmin: -qmax,
            qmax,
        }
    }

    /// Asymmetric unsigned grid for `bits` (8 bits -> [0, 255]) covering `[min(lo,0), max(hi,0)]`.
    pub fn asymmetric(lo: f32, hi: f32, bits: u32) -> Self {
        let qmax = ((1i64 << bits) - 1) as f32;
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let mut scale = (hi - lo) / qmax;
        if scale <= 0.0 || !scale.is_finite() {
            scale = 1.0;
        }
        let zp = round_half_even_f32(-lo / scale).clamp(0.0, qmax);
        FqParams {
            scale,
            zero_point: zp,
            qmin: 0.0,
            qmax,
        }
    }

    /// Fake-quantize one value; the flag is the clipped-STE pass mask (false where clamped).
    #[inline]
    pub fn apply(&self, x: f32) -> (f32, bool) {
        let q = round_half_even_f32(x / self.scale) + self.zero_point;
        let inside = q >= self.qmin && q <= self.qmax;
        let q = q.clamp(self.qmin, self.qmax);
        ((q - self.zero_point) * self.scale, inside)
    }
}

/// Fake-quantize `x` into `out` with per-channel grids: element `i` uses
/// `params[(i / inner) % params.len()]` (one entry = per tensor). `mask` gets the STE mask.
pub fn fake_quant(
    x: &[f32],
    params: &[FqParams],
    inner: usize,
    out: &mut [f32],
    mask: &mut [bool],
) {
    let c = params.len();
    let inner = inner.max(1);
    for (i, (&v, (o, m))) in x
        .iter()
        .zip(out.iter_mut().zip(mask.iter_mut()))
        .enumerate()
    {
        let p = &params[(i / inner) % c];
        let (y, k) = p.apply(v);
        *o = y;
        *m = k;
    }
}

/// Symmetric weight grids, per channel along `axis` of `shape` or per tensor.
/// `reduce_range` drops one bit (as the x86 u8*s8 kernels need without VNNI).
pub fn weight_params(
    w: &[f32],
    shape: &[usize],
    axis: usize,
    per_channel: bool,
    bits: u32,
    reduce_range: bool,
) -> (Vec<FqParams>, usize) {
    let bits = if reduce_range { bits - 1 } else { bits };
    if !per_channel || shape.is_empty() {
        let amax = w.iter().fold(0f32, |a, &v| a.max(v.abs()));
        return (vec![FqParams::symmetric(amax, bits)], w.len().max(1));
    }
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut amax = vec![0f32; c];
    for (i, &v) in w.iter().enumerate() {
        let ch = (i / inner.max(1)) % c;
        amax[ch] = amax[ch].max(v.abs());
    }
    (
        amax.iter().map(|&a| FqParams::symmetric(a, bits)).collect(),
        inner,
    )
}

/// Activation range observer: moving average of batch min/max (`momentum` = weight of the new
/// batch), or a plain running min/max when `momentum` is None (post-training calibration).
#[derive(Clone, Debug, Default)]
pub struct RangeObserver {
    pub min: f32,
    pub max: f32,
    pub initialized: bool,
}

impl RangeObserver {
    pub fn update(&mut self, x: &[f32], momentum: Option<f32>) {
        if x.is_empty() {
            return;
        }
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !self.initialized {
            self.min = lo;
            self.max = hi;
            self.initialized = true;
            return;
        }
        match momentum {
            Some(c) => {
                self.min += c * (lo - self.min);
                self.max += c * (hi - self.max);
            }
            None => {
                self.min = self.min.min(lo);
                self.max = self.max.max(hi);
            }
        }
    }

    pub fn params(&self, bits: u32) -> FqParams {
        if self.initialized {
            FqParams::asymmetric(self.min, self.max, bits)
        } else {
            FqParams::asymmetric(0.0, 0.0, bits)
        }
    }
}
