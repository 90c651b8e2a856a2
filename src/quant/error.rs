//! Errors of the quantization math (`crate::quant`): observers that saw nothing or saw non-finite
//! values, and schemes asked for something their framework does not define.
//! Owns only the error type; callers add the tensor name (e.g. with `anyhow::Context`).

use thiserror::Error;

/// Which non-finite value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFiniteKind {
    NaN,
    PosInf,
    NegInf,
}

impl std::fmt::Display for NonFiniteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NonFiniteKind::NaN => "NaN",
            NonFiniteKind::PosInf => "+Inf",
            NonFiniteKind::NegInf => "-Inf",
        })
    }
}

/// Error of range observation or of scale/zero-point computation.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantError {
    /// `range()` asked before any data was observed.
    #[error("no data observed: the observer has seen no values, so it has no range")]
    NoData,
    /// `observe()` got an empty slice (or a shape with a zero dimension).
    #[error("empty tensor observed (0 elements)")]
    EmptyTensor,
    /// The data (or a min/max) contains NaN or an infinity.
    #[error("{kind} found in observed data at flat element {index}")]
    NonFinite { kind: NonFiniteKind, index: usize },
    /// A (min, max) pair with min > max or a non-finite bound.
    #[error("invalid range: min {min} > max {max} or not finite")]
    InvalidRange { min: f32, max: f32 },
    /// Shape / axis / length inconsistency.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The preset does not define this combination (e.g. TensorFlow asymmetric).
    #[error("unsupported by preset {preset}: {what}")]
    Unsupported { preset: &'static str, what: String },
    /// Merging observers with different configurations (axis, bins, method).
    #[error("cannot merge observers: {0}")]
    Incompatible(String),
}

/// The calibration-side name of the same error.
pub type CalibError = QuantError;

/// Returns the first non-finite element of `data` as an error.
pub(crate) fn check_finite(data: &[f32]) -> Result<(), QuantError> {
    if data.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    let (index, v) = data
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .expect("a non-finite element exists");
    let kind = if v.is_nan() {
        NonFiniteKind::NaN
    } else if *v > 0.0 {
        NonFiniteKind::PosInf
    } else {
        NonFiniteKind::NegInf
    };
    Err(QuantError::NonFinite { kind, index })
}
