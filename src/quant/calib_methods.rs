//! Range selection from a [`Histogram`]: exact min/max, entropy (KL divergence, as TensorRT
//! and ONNX Runtime's `HistogramCollector.compute_entropy`), percentile (as ORT
//! `compute_percentile`, two-sided) and MSE-optimal clipping.
//!
//! Owns only the selection arithmetic; the histogram itself lives in `histogram`.
//! Every selected range is clamped to the exact observed `[min, max]`.

use super::error::QuantError;
use super::histogram::Histogram;

/// How a histogram observer turns its histogram into a range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibMethod {
    /// Exact observed min/max (the histogram is unused).
    MinMax,
    /// Symmetric window `[-i*w, (i+1)*w]` around the zero bin minimising the KL divergence
    /// between the clipped histogram `P` (outliers folded into the end bins) and its
    /// `num_quantized_bins`-level quantization `Q` (128 as TensorRT/ORT). `Q` is expanded only
    /// over bins where `P` is non-zero (TensorRT); both are smoothed with eps = 1e-4 (ORT
    /// `smooth_distribution`); KL uses natural log after normalisation (scipy `entropy`).
    Entropy { num_quantized_bins: usize },
    /// Cuts `(100 - p) / 2` percent on each side: the range is from the lower edge of the bin where
    /// the CDF reaches the lower cut to the upper edge of the bin where it reaches the upper cut.
    Percentile(f64),
    /// Symmetric window (in bin-width steps, clamped to `[min, max]`) minimising the expected
    /// squared error of `levels`-level uniform quantization: each bin (mass at its centre `c`)
    /// costs `(c - clip(c))^2` when outside the window and `scale^2 / 12` inside.
    Mse { levels: u32 },
}

impl CalibMethod {
    pub const ENTROPY: CalibMethod = CalibMethod::Entropy {
        num_quantized_bins: 128,
    };
    pub const PERCENTILE: CalibMethod = CalibMethod::Percentile(99.999);
    pub const MSE: CalibMethod = CalibMethod::Mse { levels: 256 };
}

/// Applies `method` to `h` (which must have observed data).
pub fn select_range(h: &Histogram, method: CalibMethod) -> Result<(f32, f32), QuantError> {
    let (min, max) = h.min_max().ok_or(QuantError::NoData)?;
    if h.threshold() == 0.0 {
        return Ok((min, max));
    }
    let (lo, hi) = match method {
        CalibMethod::MinMax => return Ok((min, max)),
        CalibMethod::Entropy { num_quantized_bins } => entropy(h, num_quantized_bins)?,
        CalibMethod::Percentile(p) => percentile(h, p)?,
        CalibMethod::Mse { levels } => mse(h, levels),
    };
    Ok(((lo as f32).max(min), (hi as f32).min(max)))
}

fn percentile(h: &Histogram, p: f64) -> Result<(f64, f64), QuantError> {
    if !(0.0..=100.0).contains(&p) {
        return Err(QuantError::Unsupported {
            preset: "calibration",
            what: format!("percentile {p} outside [0, 100]"),
        });
    }
    let bins = h.bins();
    let total: f64 = bins.iter().sum();
    let cut = (100.0 - p) / 200.0;
    let mut acc = 0.0;
    let mut left = None;
    let mut right = bins.len() - 1;
    for (i, &c) in bins.iter().enumerate() {
        acc += c;
        let cdf = acc / total;
        if left.is_none() && cdf >= cut && c > 0.0 {
            left = Some(i);
        }
        if cdf >= 1.0 - cut - 1e-12 {
            right = i;
            break;
        }
    }
    Ok((h.edge(left.unwrap_or(0)), h.edge(right + 1)))
}

/// Replaces zeros by `eps` and takes the same mass off the non-zeros (ORT
/// `smooth_distribution`). `None` if all entries are zero.
fn smooth(p: &mut [f64], eps: f64) -> Option<()> {
    let zeros = p.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = eps * zeros as f64 / nonzeros as f64;
    for v in p.iter_mut() {
        *v = if *v == 0.0 { eps } else { *v - eps1 };
    }
    Some(())
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            if a <= 0.0 {
                0.0
            } else if b <= 0.0 {
                f64::INFINITY
            } else {
                a * (a / b).ln()
            }
        })
        .sum()
}

fn entropy(h: &Histogram, nq: usize) -> Result<(f64, f64), QuantError> {
    let bins = h.bins();
    let n = bins.len();
    if nq < 2 || nq > n {
        return Err(QuantError::Unsupported {
            preset: "calibration",
            what: format!("entropy with {nq} quantized bins over {n} histogram bins"),
        });
    }
    let zero = n / 2;
    let half_q = nq / 2;
    let mut best = (f64::INFINITY, (h.edge(0), h.edge(n)));
    let mut p = Vec::with_capacity(n);
    let mut q = Vec::with_capacity(n);
    for i in half_q..=zero {
        let start = zero - i;
        let end = (zero + i + 1).min(n);
        let slice = &bins[start..end];
        p.clear();
        p.extend_from_slice(slice);
        p[0] += bins[..start].iter().sum::<f64>();
        *p.last_mut().expect("non-empty") += bins[end..].iter().sum::<f64>();
        // quantize the slice into nq bins of `merged` source bins (remainder -> last bin)
        let len = slice.len();
        let merged = len / nq;
        q.clear();
        q.resize(len, 0.0);
        for k in 0..nq {
            let a = k * merged;
            let b = if k + 1 == nq { len } else { a + merged };
            let mass: f64 = slice[a..b].iter().sum();
            let nonzero = p[a..b].iter().filter(|&&v| v != 0.0).count();
            if nonzero > 0 {
                for j in a..b {
                    if p[j] != 0.0 {
                        q[j] = mass / nonzero as f64;
                    }
                }
            }
        }
        let d = if smooth(&mut p, 1e-4).is_some() && smooth(&mut q, 1e-4).is_some() {
            kl(&p, &q)
        } else {
            f64::INFINITY
        };
        if d < best.0 {
            best = (d, (h.edge(start), h.edge(end)));
        }
    }
    Ok(best.1)
}

fn mse(h: &Histogram, levels: u32) -> (f64, f64) {
    let bins = h.bins();
    let n = bins.len();
    let (min, max) = h.min_max().expect("checked by caller");
    let (min, max) = (min as f64, max as f64);
    let w = h.edge(1) - h.edge(0);
    let centres: Vec<f64> = (0..n).map(|i| h.edge(i) + 0.5 * w).collect();
    let steps = (levels.max(2) - 1) as f64;
    let mut best = (f64::INFINITY, (min, max));
    // from the widest window down, so ties keep the wider range
    for k in (1..=n / 2).rev() {
        let t = k as f64 * w;
        let lo = (-t).max(min);
        let hi = t.min(max);
        let scale = (hi.max(0.0) - lo.min(0.0)) / steps;
        let inside = scale * scale / 12.0;
        let mut err = 0.0;
        for (&c, &cnt) in centres.iter().zip(bins) {
            if cnt == 0.0 {
                continue;
            }
            let e = if c < lo {
                (lo - c) * (lo - c)
            } else if c > hi {
                (c - hi) * (c - hi)
            } else {
                inside
            };
            err += cnt * e;
        }
        if err < best.0 {
            best = (err, (lo, hi));
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::super::observer::Observer;
    use super::*;

    /// xorshift64* uniform in [0, 1).
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let u1 = self.uniform().max(1e-300);
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    #[test]
    fn percentile_of_uniform_is_near_max() {
        let mut rng = Rng(0x1234_5678);
        let mut h = Histogram::new(CalibMethod::PERCENTILE);
        for _ in 0..20 {
            let batch: Vec<f32> = (0..5000)
                .map(|_| (rng.uniform() * 2.0 - 1.0) as f32)
                .collect();
            h.observe(&batch).unwrap();
        }
        let (min, max) = h.min_max().unwrap();
        let (lo, hi) = h.range().unwrap();
        assert!(hi > 0.99 * max && hi <= max, "hi {hi} max {max}");
        assert!(lo < 0.99 * min && lo >= min, "lo {lo} min {min}");
        let mut h90 = h.clone();
        h90.method = CalibMethod::Percentile(90.0);
        let (lo, hi) = h90.range().unwrap();
        assert!(
            (hi - 0.9).abs() < 0.01 && (lo + 0.9).abs() < 0.01,
            "{lo} {hi}"
        );
    }

    #[test]
    fn entropy_clips_outliers_of_gaussian() {
        let mut rng = Rng(42);
        let mut h = Histogram::new(CalibMethod::ENTROPY);
        for _ in 0..10 {
            let batch: Vec<f32> = (0..10_000).map(|_| rng.normal() as f32).collect();
            h.observe(&batch).unwrap();
        }
        h.observe(&[100.0, -80.0, 95.0]).unwrap();
        let (lo, hi) = h.range().unwrap();
        assert!(hi < 20.0 && hi > 2.5, "hi {hi}");
        assert!(lo > -20.0 && lo < -2.5, "lo {lo}");
    }

    #[test]
    fn mse_clips_laplace_tails() {
        let mut rng = Rng(7);
        let mut h = Histogram::new(CalibMethod::MSE);
        // Laplace samples: many moderate outliers, so clipping the tails pays off
        // (ACIQ: the 8-bit optimum is about 9.9 b, below the max of 1e5 samples).
        let batch: Vec<f32> = (0..100_000)
            .map(|_| {
                let m = -(rng.uniform().max(1e-300)).ln();
                (if rng.uniform() < 0.5 { -m } else { m }) as f32
            })
            .collect();
        h.observe(&batch).unwrap();
        let (min, max) = h.min_max().unwrap();
        let (lo, hi) = h.range().unwrap();
        assert!(hi < max && hi > 0.5 * max, "hi {hi} max {max}");
        assert!(lo > min && lo < 0.5 * min, "lo {lo} min {min}");
        assert!(hi < 0.9 * max.max(-min), "hi {hi} min {min} max {max}");
        // light tails (uniform): keeps (almost) the whole range
        let mut u = Histogram::new(CalibMethod::MSE);
        let batch: Vec<f32> = (0..100_000).map(|_| rng.uniform() as f32).collect();
        u.observe(&batch).unwrap();
        let (_, hi) = u.range().unwrap();
        assert!(hi > 0.98, "{hi}");
    }

    #[test]
    fn histogram_memory_is_bounded() {
        let mut rng = Rng(99);
        let mut h = Histogram::new(CalibMethod::ENTROPY);
        for b in 0..50 {
            let s = (b as f64 + 1.0).powi(3);
            let batch: Vec<f32> = (0..2000).map(|_| (rng.normal() * s) as f32).collect();
            h.observe(&batch).unwrap();
            assert_eq!(h.bins().len(), 2048);
        }
        assert_eq!(h.count(), 100_000);
        assert!((h.bins().iter().sum::<f64>() - 100_000.0).abs() < 1e-6);
    }

    #[test]
    fn errors() {
        let mut h = Histogram::new(CalibMethod::ENTROPY);
        assert_eq!(h.range(), Err(QuantError::NoData));
        assert_eq!(h.observe(&[]), Err(QuantError::EmptyTensor));
        let e = h.observe(&[1.0, f32::NAN]).unwrap_err();
        assert!(e.to_string().contains("NaN"));
        assert_eq!(h.count(), 0);
    }
}
