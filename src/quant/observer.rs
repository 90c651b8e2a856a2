//! Range observers for calibration: the [`Observer`] trait, [`MinMax`], [`MovingAverageMinMax`]
//! and the per-channel [`PerChannelMinMax`] for weights.
//!
//! Owns: recording a float range from batches in bounded memory (observers never keep the data)
//! and merging observers that saw different batches (so calibration can run in parallel).
//! The histogram observer lives in `histogram` (with its range-selection methods in
//! `calib_methods`). Every `observe` rejects empty slices and NaN/Inf (naming the element) and
//! leaves the observer unchanged when it fails.

use super::error::{check_finite, QuantError};

/// A calibration range observer.
pub trait Observer: Send {
    /// Records one batch (a flat tensor).
    fn observe(&mut self, data: &[f32]) -> Result<(), QuantError>;
    /// Folds in another observer of the same configuration that saw other batches.
    fn merge(&mut self, other: &Self) -> Result<(), QuantError>
    where
        Self: Sized;
    /// The selected range `(min, max)`.
    fn range(&self) -> Result<(f32, f32), QuantError>;
}

/// Observes `batches` in parallel (rayon): each worker fills a clone of `empty`, then the
/// partial observers are merged. Exact for [`MinMax`]; for histograms, exact when the partial
/// ranges are power-of-two related (otherwise re-binned, see `histogram`).
pub fn observe_parallel<O>(empty: &O, batches: &[&[f32]]) -> Result<O, QuantError>
where
    O: Observer + Clone + Sync,
{
    use rayon::prelude::*;
    batches
        .par_iter()
        .try_fold(
            || empty.clone(),
            |mut o, b| {
                o.observe(b)?;
                Ok(o)
            },
        )
        .try_reduce(
            || empty.clone(),
            |mut a, b| {
                a.merge(&b)?;
                Ok(a)
            },
        )
}

/// Min and max of one non-empty, finite batch.
pub(crate) fn batch_min_max(data: &[f32]) -> Result<(f32, f32), QuantError> {
    if data.is_empty() {
        return Err(QuantError::EmptyTensor);
    }
    check_finite(data)?;
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in data {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    Ok((lo, hi))
}

/// Running minimum and maximum over all batches (PyTorch `MinMaxObserver`). Merging is exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinMax {
    state: Option<(f32, f32)>,
}

impl MinMax {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Observer for MinMax {
    fn observe(&mut self, data: &[f32]) -> Result<(), QuantError> {
        let (lo, hi) = batch_min_max(data)?;
        self.state = Some(match self.state {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<(), QuantError> {
        if let Some((lo, hi)) = other.state {
            self.state = Some(match self.state {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        Ok(())
    }

    fn range(&self) -> Result<(f32, f32), QuantError> {
        self.state.ok_or(QuantError::NoData)
    }
}

/// Exponential moving average of per-batch min/max (PyTorch `MovingAverageMinMaxObserver`):
/// the first batch sets the range, then per batch, in f32,
/// `min += c * (batch_min - min)`, `max += c * (batch_max - max)`, `c = averaging_constant`.
///
/// Merging: an EMA depends on batch order, so no merge is exact. `merge` combines two observers
/// as a batch-count-weighted mean of their states (documented approximation; equal to the
/// sequential EMA when both saw the same batches).
#[derive(Debug, Clone, PartialEq)]
pub struct MovingAverageMinMax {
    pub averaging_constant: f32,
    state: Option<(f32, f32)>,
    batches: u64,
}

impl Default for MovingAverageMinMax {
    fn default() -> Self {
        Self::new(0.01)
    }
}

impl MovingAverageMinMax {
    pub fn new(averaging_constant: f32) -> Self {
        MovingAverageMinMax {
            averaging_constant,
            state: None,
            batches: 0,
        }
    }

    /// Number of batches observed (including merged ones).
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

impl Observer for MovingAverageMinMax {
    fn observe(&mut self, data: &[f32]) -> Result<(), QuantError> {
        let (lo, hi) = batch_min_max(data)?;
        let c = self.averaging_constant;
        self.state = Some(match self.state {
            None => (lo, hi),
            Some((a, b)) => (a + c * (lo - a), b + c * (hi - b)),
        });
        self.batches += 1;
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<(), QuantError> {
        if self.averaging_constant != other.averaging_constant {
            return Err(QuantError::Incompatible(format!(
                "averaging constants {} and {}",
                self.averaging_constant, other.averaging_constant
            )));
        }
        let Some((lo2, hi2)) = other.state else {
            return Ok(());
        };
        self.state = Some(match self.state {
            None => (lo2, hi2),
            Some((lo1, hi1)) => {
                let (n1, n2) = (self.batches as f64, other.batches as f64);
                let w = |a: f32, b: f32| ((a as f64 * n1 + b as f64 * n2) / (n1 + n2)) as f32;
                (w(lo1, lo2), w(hi1, hi2))
            }
        });
        self.batches += other.batches;
        Ok(())
    }

    fn range(&self) -> Result<(f32, f32), QuantError> {
        self.state.ok_or(QuantError::NoData)
    }
}

/// Per-channel running min/max along `axis` (weights; PyTorch `PerChannelMinMaxObserver`).
#[derive(Debug, Clone, PartialEq)]
pub struct PerChannelMinMax {
    pub axis: usize,
    mins: Vec<f32>,
    maxs: Vec<f32>,
}

impl PerChannelMinMax {
    pub fn new(axis: usize) -> Self {
        PerChannelMinMax {
            axis,
            mins: Vec::new(),
            maxs: Vec::new(),
        }
    }

    /// Records one tensor of `shape`; the channel count must stay the same across calls.
    pub fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
        let (lo, hi) = super::quantize::channel_min_max(data, shape, self.axis)?;
        self.fold(&lo, &hi)
    }

    fn fold(&mut self, lo: &[f32], hi: &[f32]) -> Result<(), QuantError> {
        if self.mins.is_empty() {
            self.mins = lo.to_vec();
            self.maxs = hi.to_vec();
            return Ok(());
        }
        if lo.len() != self.mins.len() {
            return Err(QuantError::Shape(format!(
                "{} channels along axis {}, previously {}",
                lo.len(),
                self.axis,
                self.mins.len()
            )));
        }
        for c in 0..lo.len() {
            self.mins[c] = self.mins[c].min(lo[c]);
            self.maxs[c] = self.maxs[c].max(hi[c]);
        }
        Ok(())
    }

    /// Exact merge.
    pub fn merge(&mut self, other: &Self) -> Result<(), QuantError> {
        if self.axis != other.axis {
            return Err(QuantError::Incompatible(format!(
                "axis {} vs {}",
                self.axis, other.axis
            )));
        }
        if other.mins.is_empty() {
            return Ok(());
        }
        self.fold(&other.mins.clone(), &other.maxs.clone())
    }

    /// Per-channel `(mins, maxs)`.
    pub fn ranges(&self) -> Result<(Vec<f32>, Vec<f32>), QuantError> {
        if self.mins.is_empty() {
            return Err(QuantError::NoData);
        }
        Ok((self.mins.clone(), self.maxs.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::NonFiniteKind;
    use super::*;

    #[test]
    fn min_max_over_batches() {
        let mut o = MinMax::new();
        assert_eq!(o.range(), Err(QuantError::NoData));
        o.observe(&[1.0, 2.0, -0.5]).unwrap();
        o.observe(&[3.0, 0.0]).unwrap();
        o.observe(&[-2.0]).unwrap();
        assert_eq!(o.range().unwrap(), (-2.0, 3.0));
    }

    #[test]
    fn min_max_merge_equals_single_pass() {
        let batches: Vec<Vec<f32>> = (0..10)
            .map(|b| {
                (0..17)
                    .map(|i| ((b * 31 + i * 7) % 23) as f32 - 11.5)
                    .collect()
            })
            .collect();
        let mut single = MinMax::new();
        batches.iter().for_each(|b| single.observe(b).unwrap());
        let mut a = MinMax::new();
        let mut b = MinMax::new();
        batches[..4].iter().for_each(|x| a.observe(x).unwrap());
        batches[4..].iter().for_each(|x| b.observe(x).unwrap());
        a.merge(&b).unwrap();
        assert_eq!(a, single);
        let mut empty = MinMax::new();
        empty.merge(&single).unwrap();
        assert_eq!(empty.range(), single.range());
    }

    #[test]
    fn parallel_observation_equals_sequential() {
        let data: Vec<Vec<f32>> = (0..64)
            .map(|b| {
                (0..100)
                    .map(|i| ((b * 13 + i * 29) % 97) as f32 * 0.37 - 11.0)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = data.iter().map(|v| v.as_slice()).collect();
        let par = observe_parallel(&MinMax::new(), &refs).unwrap();
        let mut seq = MinMax::new();
        refs.iter().for_each(|b| seq.observe(b).unwrap());
        assert_eq!(par, seq);
        let mut bad = refs.clone();
        let nan = [f32::NAN];
        bad.push(&nan);
        assert!(observe_parallel(&MinMax::new(), &bad).is_err());
    }

    #[test]
    fn moving_average_matches_hand_computation() {
        let mut o = MovingAverageMinMax::default();
        o.observe(&[-1.0, 1.0]).unwrap();
        assert_eq!(o.range().unwrap(), (-1.0, 1.0));
        o.observe(&[-3.0, 5.0]).unwrap();
        let c = 0.01f32;
        let lo = -1.0f32 + c * (-3.0 - -1.0);
        let hi = 1.0f32 + c * (5.0 - 1.0);
        assert_eq!(o.range().unwrap(), (lo, hi));
        o.observe(&[0.5]).unwrap();
        let lo2 = lo + c * (0.5 - lo);
        let hi2 = hi + c * (0.5 - hi);
        assert_eq!(o.range().unwrap(), (lo2, hi2));
        assert_eq!(o.batches(), 3);
    }

    #[test]
    fn nan_and_inf_are_named_and_state_kept() {
        let mut o = MinMax::new();
        o.observe(&[1.0]).unwrap();
        let e = o.observe(&[0.0, f32::NAN]).unwrap_err();
        assert_eq!(
            e,
            QuantError::NonFinite {
                kind: NonFiniteKind::NaN,
                index: 1
            }
        );
        assert!(e.to_string().contains("NaN"), "{e}");
        let e = o.observe(&[f32::NEG_INFINITY]).unwrap_err();
        assert!(e.to_string().contains("-Inf"), "{e}");
        assert_eq!(o.range().unwrap(), (1.0, 1.0));
        assert_eq!(o.observe(&[]), Err(QuantError::EmptyTensor));
        let mut m = MovingAverageMinMax::default();
        assert_eq!(m.observe(&[]), Err(QuantError::EmptyTensor));
        assert_eq!(m.range(), Err(QuantError::NoData));
    }

    #[test]
    fn per_channel_min_max() {
        // shape [2, 2, 2], axis 1
        let mut o = PerChannelMinMax::new(1);
        o.observe(&[1.0, 2.0, 10.0, 20.0, -1.0, 0.5, -10.0, 5.0], &[2, 2, 2])
            .unwrap();
        let mut p = PerChannelMinMax::new(1);
        p.observe(&[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0], &[2, 2, 2])
            .unwrap();
        o.merge(&p).unwrap();
        assert_eq!(o.ranges().unwrap(), (vec![-1.0, -10.0], vec![3.0, 30.0]));
        assert!(o.observe(&[0.0; 3], &[1, 3]).is_err());
    }
}
