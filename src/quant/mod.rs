//! Quantization math: schemes and per-framework scale/zero-point rules, quantize/dequantize,
//! and calibration observers.
//!
//! Owns: the arithmetic only (no graph rewriting, no kernels). Convention everywhere:
//! `x ~= scale * (q - zero_point)`.
//!
//! - `scheme`: [`QScheme`], [`Preset`] (onnxruntime, pytorch, tensorflow, ipex, mxnet, octet),
//!   [`QScheme::qparam`] reproducing each framework's (scale, zero_point) bit-exactly; the module
//!   docs hold the per-preset table.
//! - `quantize`: rounding, saturation, per-tensor and per-channel quantize/dequantize.
//! - `observer`: the [`Observer`] trait, [`MinMax`], [`MovingAverageMinMax`], [`PerChannelMinMax`].
//! - `histogram` + `calib_methods`: the bounded-memory [`Histogram`] observer with entropy,
//!   percentile and MSE range selection.
//! - `error`: [`QuantError`] (alias [`CalibError`]).

pub mod calib_methods;
pub mod error;
pub mod histogram;
pub mod observer;
pub mod quantize;
pub mod scheme;

pub use calib_methods::CalibMethod;
pub use error::{CalibError, NonFiniteKind, QuantError};
pub use histogram::{Histogram, DEFAULT_BINS};
pub use observer::{observe_parallel, MinMax, MovingAverageMinMax, Observer, PerChannelMinMax};
pub use quantize::{
    channel_min_max, dequantize_slice, dequantize_value, quantize_slice, quantize_value,
    quantize_with,
};
pub use scheme::{Preset, QDType, QParam, QScheme, Rounding, ScaleOp};
