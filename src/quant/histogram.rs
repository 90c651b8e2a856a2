//! The histogram observer: a fixed number of bins (2048 by default) over a symmetric range
//! `[-T, T]` that grows as larger values arrive, plus the exact min/max; the range is selected
//! from the histogram by a [`CalibMethod`] (entropy, percentile, MSE; see `calib_methods`).
//!
//! Owns the binning and re-binning. Memory is bounded: the bin vector never changes length.
//!
//! Binning follows ONNX Runtime's `calibrate.py` `HistogramCollector` (bins over
//! `[-T, T]`, `T = max(|min|, |max|)` of the first batch, values at the right edge go in the last
//! bin) with one change: ORT grows the *number* of bins when a batch exceeds `T`
//! (`merge_histogram` adds bins of the old width on both sides), so its memory grows with the
//! range. Here `T` doubles (T -> 2T -> 4T ...) until the batch fits and every pair of old bins is
//! summed into one new bin: old edges are new edges, so re-binning is exact and the bin count
//! stays constant. Merging two observers re-bins the other histogram into this one's grid
//! (proportional to overlap when grids are not aligned); counts are therefore `f64`.

use super::calib_methods::{self, CalibMethod};
use super::error::QuantError;
use super::observer::{batch_min_max, Observer};

/// Default number of histogram bins.
pub const DEFAULT_BINS: usize = 2048;

/// Histogram observer (see module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub method: CalibMethod,
    bins: Vec<f64>,
    /// Half-width of the binned range: bins cover `[-threshold, threshold]`.
    threshold: f32,
    min: f32,
    max: f32,
    count: u64,
}

impl Histogram {
    /// A histogram of [`DEFAULT_BINS`] bins.
    pub fn new(method: CalibMethod) -> Self {
        Self::with_bins(DEFAULT_BINS, method)
    }

    /// `num_bins` must be a positive multiple of 4 (so that doubling the range re-bins exactly;
    /// entropy also needs it >= its quantized bin count).
    pub fn with_bins(num_bins: usize, method: CalibMethod) -> Self {
        assert!(
            num_bins >= 4 && num_bins.is_multiple_of(4),
            "histogram bins must be a positive multiple of 4, got {num_bins}"
        );
        Histogram {
            method,
            bins: vec![0.0; num_bins],
            threshold: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
        }
    }

    /// Bin counts (length constant for the life of the observer).
    pub fn bins(&self) -> &[f64] {
        &self.bins
    }

    /// Bins cover `[-threshold, threshold]`.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Exact observed (min, max), if any.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// Number of values observed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Left edge of bin `i` (`i` may be `bins.len()` for the right edge).
    pub fn edge(&self, i: usize) -> f64 {
        let t = self.threshold as f64;
        -t + 2.0 * t * i as f64 / self.bins.len() as f64
    }

    fn bin_index(&self, v: f32) -> usize {
        let n = self.bins.len();
        let t = self.threshold as f64;
        if t == 0.0 {
            return n / 2;
        }
        let i = ((v as f64 + t) / (2.0 * t) * n as f64).floor();
        (i.max(0.0) as usize).min(n - 1)
    }

    /// Grows the range to cover `needed` (>= 0), re-binning exactly.
    fn grow_to(&mut self, needed: f32) {
        if needed <= self.threshold {
            return;
        }
        if self.threshold == 0.0 {
            // All mass so far is at 0, which stays in bin n/2 for any T > 0.
            self.threshold = needed;
            return;
        }
        let n = self.bins.len();
        while self.threshold < needed {
            let mut next = vec![0.0; n];
            // old [-T, T] becomes the middle half of [-2T, 2T]: old bins 2j, 2j+1 -> new n/4 + j
            for j in 0..n / 2 {
                next[n / 4 + j] = self.bins[2 * j] + self.bins[2 * j + 1];
            }
            self.bins = next;
            self.threshold *= 2.0;
        }
    }

    /// The selected range from the histogram with `self.method`.
    pub fn compute_range(&self) -> Result<(f32, f32), QuantError> {
        if self.count == 0 {
            return Err(QuantError::NoData);
        }
        calib_methods::select_range(self, self.method)
    }
}

impl Observer for Histogram {
    fn observe(&mut self, data: &[f32]) -> Result<(), QuantError> {
        let (lo, hi) = batch_min_max(data)?;
        self.grow_to(lo.abs().max(hi.abs()));
        for &v in data {
            let i = self.bin_index(v);
            self.bins[i] += 1.0;
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.count += data.len() as u64;
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<(), QuantError> {
        if other.bins.len() != self.bins.len() {
            return Err(QuantError::Incompatible(format!(
                "{} bins vs {} bins",
                self.bins.len(),
                other.bins.len()
            )));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            let method = self.method;
            *self = other.clone();
            self.method = method;
            return Ok(());
        }
        self.grow_to(other.threshold);
        if other.threshold == 0.0 {
            let i = self.bin_index(0.0);
            self.bins[i] += other.bins.iter().sum::<f64>();
        } else {
            // Spread each source bin over the target bins it overlaps, proportionally.
            let w = 2.0 * self.threshold as f64 / self.bins.len() as f64;
            let t = self.threshold as f64;
            for (k, &c) in other.bins.iter().enumerate() {
                if c == 0.0 {
                    continue;
                }
                let (a, b) = (other.edge(k), other.edge(k + 1));
                let first = (((a + t) / w).floor().max(0.0) as usize).min(self.bins.len() - 1);
                let mut j = first;
                loop {
                    let (ea, eb) = (self.edge(j), self.edge(j + 1));
                    let overlap = (b.min(eb) - a.max(ea)).max(0.0);
                    self.bins[j] += c * overlap / (b - a);
                    if eb >= b || j + 1 == self.bins.len() {
                        break;
                    }
                    j += 1;
                }
            }
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        Ok(())
    }

    fn range(&self) -> Result<(f32, f32), QuantError> {
        self.compute_range()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrowth_is_exact_and_size_constant() {
        let mut h = Histogram::with_bins(16, CalibMethod::MinMax);
        h.observe(&[-0.9, -0.1, 0.1, 0.3, 0.99]).unwrap();
        assert_eq!(h.threshold(), 0.99);
        h.observe(&[3.0]).unwrap(); // T -> 1.98 -> 3.96
        assert_eq!(h.bins().len(), 16);
        assert_eq!(h.threshold(), 0.99 * 4.0);
        assert_eq!(h.bins().iter().sum::<f64>(), 6.0);
        // every value is still in the bin its edges say (0.99, the old right edge, was in the
        // old last bin, so it now sits just below an edge: it may be in either neighbour)
        for v in [-0.9f32, -0.1, 0.1, 0.3, 3.0] {
            let i = h.bin_index(v);
            assert!(h.edge(i) <= v as f64 && (v as f64) <= h.edge(i + 1));
            assert!(h.bins()[i] >= 1.0, "{v} not in bin {i}");
        }
        let i = h.bin_index(0.99);
        assert!(h.bins()[i] + h.bins()[i - 1] >= 1.0);
    }

    #[test]
    fn merge_keeps_counts_and_min_max() {
        let mut a = Histogram::new(CalibMethod::MinMax);
        let mut b = Histogram::new(CalibMethod::MinMax);
        a.observe(&[-1.0, 0.5, 0.25]).unwrap();
        b.observe(&[-7.0, 3.0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 5);
        assert!((a.bins().iter().sum::<f64>() - 5.0).abs() < 1e-9);
        assert_eq!(a.range().unwrap(), (-7.0, 3.0));
        assert_eq!(a.bins().len(), DEFAULT_BINS);
    }

    #[test]
    fn merge_of_aligned_histograms_equals_single_pass() {
        let b1 = [-1.0f32, -0.3, 0.2, 0.7];
        let b2 = [1.0f32, -0.45, 0.05];
        let b3 = [3.5f32, -2.0];
        let mut single = Histogram::with_bins(64, CalibMethod::MinMax);
        for b in [&b1[..], &b2, &b3] {
            single.observe(b).unwrap();
        }
        let mut a = Histogram::with_bins(64, CalibMethod::MinMax);
        a.observe(&b1).unwrap();
        let mut b = Histogram::with_bins(64, CalibMethod::MinMax);
        b.observe(&b2).unwrap();
        b.observe(&b3).unwrap();
        // b's threshold is 1.0 grown to 4.0; a (1.0) grows to 4.0 too: grids align exactly
        a.merge(&b).unwrap();
        assert_eq!(a.threshold(), single.threshold());
        assert_eq!(a.bins(), single.bins());
        assert_eq!(a.min_max(), single.min_max());
        assert_eq!(a.count(), single.count());
    }

    #[test]
    fn all_zero_data_then_growth() {
        let mut h = Histogram::with_bins(8, CalibMethod::MinMax);
        h.observe(&[0.0, 0.0]).unwrap();
        h.observe(&[1.0]).unwrap();
        assert_eq!(h.bins()[4], 2.0);
        assert_eq!(h.bins()[7], 1.0);
    }
}
