//! Quantization schemes and the per-framework rules turning a float range `[min, max]` into
//! `(scale, zero_point)`, with the convention `x ~= scale * (q - zero_point)`.
//!
//! Owns: [`QDType`], [`Preset`], [`QScheme`], [`QParam`] and the scale/zero-point arithmetic,
//! reproduced bit-exactly (same float precision, same operation order) for each framework.
//! Does not own: observing data (see `observer`), rounding/saturating values (see `quantize`).
//!
//! # The presets
//!
//! Every preset first widens `[min, max]` to include 0 (`min = min(min, 0)`, `max = max(max, 0)`).
//! `absmax = max(|min|, |max|)`. "range" is the integer range used to compute the scale;
//! "saturate" is where quantized values are clamped (see `quantize`).
//!
//! | preset | dtype/scheme | reduce_range | range | scale | zero point | arithmetic |
//! |---|---|---|---|---|---|---|
//! | `Pytorch` | u8 asym | no / yes | [0,255] / [0,127] | `(max-min)/(qmax-qmin)`, `max(scale, f32::EPSILON)` | `clamp(qmin - round_half_even(min/scale))` | f32 (torch ops) |
//! | `Pytorch` | s8 asym | no / yes | [-128,127] / [-64,63] | same | same | f32 |
//! | `Pytorch` | u8 sym | no / yes | [0,255] / [0,127] | `absmax / ((qmax-qmin)/2)` (127.5 / 63.5), `max(.., eps)` | 128 (also with reduce_range: PyTorch quirk) | f32 |
//! | `Pytorch` | s8 sym | no / yes | [-128,127] / [-64,63] | `absmax / 127.5` / `absmax / 63.5`, `max(.., eps)` | 0 | f32 |
//! | `Onnxruntime` | u8 asym | no / yes | [0,255] / [0,127] | `(f64(max)-f64(min)) / f64(qmax-qmin)`, then to f32 | `round_half_even(qmin - min/scale)` in f64 | numpy f32 inputs, f64 math |
//! | `Onnxruntime` | s8 asym | no / yes | [-128,127] / [-64,64] | same | same | same |
//! | `Onnxruntime` | u8 sym | no / yes | [0,255] / [0,127] | `2*absmax/(qmax-qmin)` (f64) | `round_half_even((qmin+qmax)/2)` = 128 / 64 | same |
//! | `Onnxruntime` | s8 sym | no / yes | [-127,127] / [-64,64] | `2*absmax/254` / `2*absmax/128` | 0 | same |
//! | `Onnxruntime` | any | | | if scale < f32 `tiny` (all-zero data): scale 1.0, zp 0 | | |
//! | `Tensorflow`, `Mxnet` | s8 sym | unsupported | [-127,127] | `2*absmax/(127-(-128)-1)` (f64, then f32) | 0 | f64 |
//! | `Tensorflow`, `Mxnet` | u8 sym | unsupported | [0,255] | `max(min,max)/255` (f64, then f32); needs `max > 0` | 0 | f64 |
//! | `Tensorflow`, `Mxnet` | asym | - | - | unsupported (the design document defines symmetric only) | | |
//! | `Ipex` | sym | unsupported | as Tensorflow | as Tensorflow | | f64 |
//! | `Ipex` | asym | as Pytorch | as Pytorch | as Pytorch (IPEX uses PyTorch's observers) | | f32 |
//! | `Octet` | u8 asym | no / yes | [0,255] / [0,127] | as Onnxruntime | as Onnxruntime | f64 |
//! | `Octet` | s8 asym | no / yes | [-128,127] / [-64,63] | as Onnxruntime | as Onnxruntime | f64 |
//! | `Octet` | s8 sym | no / yes | [-127,127] / [-64,64] | `absmax/127` / `absmax/64` | 0 | f64 |
//! | `Octet` | u8 sym | no / yes | [0,255] / [0,127] | `2*absmax/(qmax-qmin)` | 128 / 64 | f64 |
//!
//! Where a preset yields a degenerate scale (all-zero data): Pytorch/Ipex-asym clamp to `eps`,
//! Onnxruntime/Octet use scale 1.0 (zp 0 for Onnxruntime, the scheme's zp for Octet),
//! Tensorflow/Mxnet/Ipex-sym use scale 1.0.
//!
//! Preset defaults ([`QScheme::activation`], [`QScheme::weight`]):
//!
//! | preset | activations | weights |
//! |---|---|---|
//! | `Onnxruntime` | u8 asym per-tensor | s8 sym per-channel (reduce_range optional, off) |
//! | `Pytorch` (fbgemm/x86) | u8 asym per-tensor, reduce_range | s8 sym per-channel |
//! | `Tensorflow`, `Mxnet`, `Ipex` | s8 sym per-tensor | s8 sym per-channel |
//! | `Octet` | u8 asym per-tensor | s8 sym per-channel; reduce_range ([-64,64]) only without VNNI |
//!
//! Why reduce_range: AVX2 `vpmaddubsw` sums two u8*s8 products into a saturating i16
//! (255*127*2 = 64770 > 32767); with weights in [-64,64] the sum fits (255*64*2 = 32640).
//! AVX512-VNNI `vpdpbusd` accumulates in i32 and never saturates.

use octet_ir::QuantParams;

use super::error::QuantError;

/// Integer type of the quantized values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QDType {
    /// int8, [-128, 127].
    I8,
    /// uint8, [0, 255].
    U8,
}

impl QDType {
    /// The full range of the type.
    pub fn full_range(self) -> (i32, i32) {
        match self {
            QDType::I8 => (-128, 127),
            QDType::U8 => (0, 255),
        }
    }
    /// Parses "int8"/"s8"/"qint8" and "uint8"/"u8"/"quint8".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "int8" | "s8" | "i8" | "qint8" => Some(QDType::I8),
            "uint8" | "u8" | "quint8" => Some(QDType::U8),
            _ => None,
        }
    }
}

/// Whose arithmetic to reproduce. See the module documentation for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    Onnxruntime,
    Pytorch,
    Tensorflow,
    Ipex,
    Mxnet,
    Octet,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Onnxruntime,
        Preset::Pytorch,
        Preset::Tensorflow,
        Preset::Ipex,
        Preset::Mxnet,
        Preset::Octet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Onnxruntime => "onnxruntime",
            Preset::Pytorch => "pytorch",
            Preset::Tensorflow => "tensorflow",
            Preset::Ipex => "ipex",
            Preset::Mxnet => "mxnet",
            Preset::Octet => "octet",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Preset::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Rounding of `x / scale` to an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// ONNX QuantizeLinear, numpy, `nearbyint` under the default FP mode.
    HalfToEven,
    /// C `round`/`std::round` (TFLite reference quantize, MXNet `quantize_v2`).
    HalfAwayFromZero,
}

/// How `x / scale` is evaluated (both in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleOp {
    /// `x / scale` (ONNX Runtime/numpy, TFLite, MXNet, octet).
    Divide,
    /// `x * (1.0f32 / scale)` (PyTorch/FBGEMM quantize kernels, also used by IPEX).
    MulReciprocal,
}

/// One (scale, zero_point) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParam {
    pub scale: f32,
    pub zero_point: i32,
}

/// A quantization scheme: which preset's arithmetic, integer type, symmetric or affine,
/// 7-bit reduced range, per-tensor or per-channel along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QScheme {
    pub preset: Preset,
    pub dtype: QDType,
    pub symmetric: bool,
    pub reduce_range: bool,
    /// `None`: per-tensor; `Some(axis)`: one (scale, zp) per index of `axis`.
    pub per_channel: Option<usize>,
}

impl QScheme {
    /// A per-tensor scheme.
    pub fn new(preset: Preset, dtype: QDType, symmetric: bool, reduce_range: bool) -> Self {
        QScheme {
            preset,
            dtype,
            symmetric,
            reduce_range,
            per_channel: None,
        }
    }

    /// The same scheme, per channel along `axis`.
    pub fn with_axis(mut self, axis: usize) -> Self {
        self.per_channel = Some(axis);
        self
    }

    /// The preset's default scheme for activations (see the module table).
    pub fn activation(preset: Preset) -> Self {
        match preset {
            Preset::Onnxruntime | Preset::Octet => QScheme::new(preset, QDType::U8, false, false),
            Preset::Pytorch => QScheme::new(preset, QDType::U8, false, true),
            Preset::Tensorflow | Preset::Ipex | Preset::Mxnet => {
                QScheme::new(preset, QDType::I8, true, false)
            }
        }
    }

    /// The preset's default scheme for weights with output channels along `axis`.
    /// `target_has_vnni` only matters for `Octet`: without VNNI, weights use the reduced
    /// range [-64, 64] so the AVX2 `vpmaddubsw` pair sums cannot saturate.
    pub fn weight(preset: Preset, axis: usize, target_has_vnni: bool) -> Self {
        let reduce = preset == Preset::Octet && !target_has_vnni;
        QScheme::new(preset, QDType::I8, true, reduce).with_axis(axis)
    }

    fn unsupported(&self, what: &str) -> QuantError {
        QuantError::Unsupported {
            preset: self.preset.name(),
            what: format!(
                "{what} ({:?} {} reduce_range={})",
                self.dtype,
                if self.symmetric {
                    "symmetric"
                } else {
                    "asymmetric"
                },
                self.reduce_range
            ),
        }
    }

    /// `Ipex` asymmetric follows PyTorch's observers.
    fn arith(&self) -> Preset {
        if self.preset == Preset::Ipex && !self.symmetric {
            Preset::Pytorch
        } else {
            self.preset
        }
    }

    /// The integer range `[qmin, qmax]` the scale is computed for.
    pub fn qrange(&self) -> Result<(i32, i32), QuantError> {
        let (dt, sym, rr) = (self.dtype, self.symmetric, self.reduce_range);
        Ok(match self.arith() {
            Preset::Pytorch => match (dt, rr) {
                (QDType::U8, false) => (0, 255),
                (QDType::U8, true) => (0, 127),
                (QDType::I8, false) => (-128, 127),
                (QDType::I8, true) => (-64, 63),
            },
            Preset::Onnxruntime => match (dt, sym, rr) {
                (QDType::U8, _, false) => (0, 255),
                (QDType::U8, _, true) => (0, 127),
                (QDType::I8, true, false) => (-127, 127),
                (QDType::I8, false, false) => (-128, 127),
                (QDType::I8, _, true) => (-64, 64),
            },
            Preset::Tensorflow | Preset::Ipex | Preset::Mxnet => {
                if !sym {
                    return Err(self.unsupported("asymmetric quantization"));
                }
                if rr {
                    return Err(self.unsupported("reduce_range"));
                }
                match dt {
                    QDType::U8 => (0, 255),
                    QDType::I8 => (-127, 127),
                }
            }
            Preset::Octet => match (dt, sym, rr) {
                (QDType::U8, _, false) => (0, 255),
                (QDType::U8, _, true) => (0, 127),
                (QDType::I8, true, false) => (-127, 127),
                (QDType::I8, true, true) => (-64, 64),
                (QDType::I8, false, false) => (-128, 127),
                (QDType::I8, false, true) => (-64, 63),
            },
        })
    }

    /// Where quantized values saturate. PyTorch (`torch.quantize_per_tensor`) and ONNX Runtime
    /// (`quantize_nparray`) saturate to the full type range even when the scale was computed for
    /// a reduced range; TFLite/MXNet use the narrow int8 range [-127, 127]; octet saturates to
    /// [`QScheme::qrange`] because its AVX2 kernels rely on the reduced range.
    pub fn saturation(&self) -> Result<(i32, i32), QuantError> {
        let qr = self.qrange()?;
        Ok(match self.arith() {
            Preset::Pytorch | Preset::Onnxruntime | Preset::Ipex => self.dtype.full_range(),
            Preset::Tensorflow | Preset::Mxnet => qr,
            Preset::Octet => qr,
        })
    }

    /// Rounding used when quantizing values.
    pub fn rounding(&self) -> Rounding {
        match self.arith() {
            Preset::Tensorflow | Preset::Mxnet => Rounding::HalfAwayFromZero,
            _ => Rounding::HalfToEven,
        }
    }

    /// How `x / scale` is evaluated when quantizing values.
    pub fn scale_op(&self) -> ScaleOp {
        match self.arith() {
            Preset::Pytorch | Preset::Ipex => ScaleOp::MulReciprocal,
            _ => ScaleOp::Divide,
        }
    }

    /// (scale, zero_point) for one range, exactly as the preset's framework computes it.
    pub fn qparam(&self, min: f32, max: f32) -> Result<QParam, QuantError> {
        if !min.is_finite() || !max.is_finite() || min > max {
            return Err(QuantError::InvalidRange { min, max });
        }
        let (qmin, qmax) = self.qrange()?;
        match self.arith() {
            Preset::Pytorch => Ok(pytorch_qparam(
                min,
                max,
                qmin,
                qmax,
                self.symmetric,
                self.dtype,
            )),
            Preset::Onnxruntime => Ok(ort_qparam(min, max, qmin, qmax, self.symmetric)),
            Preset::Octet => {
                let mut p = ort_qparam(min, max, qmin, qmax, self.symmetric);
                if p.scale == 1.0 && p.zero_point == 0 && self.symmetric {
                    // degenerate range: keep the scheme's zero point (128 for u8 symmetric)
                    p.zero_point = sym_zero_point(qmin, qmax);
                }
                Ok(p)
            }
            Preset::Tensorflow | Preset::Ipex | Preset::Mxnet => {
                let (mn, mx) = (min.min(0.0) as f64, max.max(0.0) as f64);
                let scale = match self.dtype {
                    // 2 * absmax / (max(int8) - min(int8) - 1)
                    QDType::I8 => 2.0 * mn.abs().max(mx.abs()) / (127.0 - (-128.0) - 1.0),
                    // max(rmin, rmax) / (max(uint8) - min(uint8))
                    QDType::U8 => {
                        if min < 0.0 {
                            return Err(self.unsupported(
                                "uint8 symmetric of a range with negative values (the formula \
                                 max(rmin, rmax)/255 maps only [0, max])",
                            ));
                        }
                        mn.max(mx) / 255.0
                    }
                };
                let scale = scale as f32;
                Ok(QParam {
                    scale: if scale > 0.0 { scale } else { 1.0 },
                    zero_point: 0,
                })
            }
        }
    }

    /// One (scale, zp) per channel; `mins`/`maxs` are the per-channel ranges along the axis.
    /// The result carries `axis = self.per_channel` (None for a per-tensor scheme, which then
    /// requires exactly one range).
    pub fn qparams(&self, mins: &[f32], maxs: &[f32]) -> Result<QuantParams, QuantError> {
        if mins.len() != maxs.len() || mins.is_empty() {
            return Err(QuantError::Shape(format!(
                "{} channel minimums vs {} maximums",
                mins.len(),
                maxs.len()
            )));
        }
        if self.per_channel.is_none() && mins.len() != 1 {
            return Err(QuantError::Shape(format!(
                "per-tensor scheme given {} ranges",
                mins.len()
            )));
        }
        let mut scale = Vec::with_capacity(mins.len());
        let mut zero_point = Vec::with_capacity(mins.len());
        for (&a, &b) in mins.iter().zip(maxs) {
            let p = self.qparam(a, b)?;
            scale.push(p.scale);
            zero_point.push(p.zero_point);
        }
        Ok(QuantParams {
            scale,
            zero_point,
            axis: self.per_channel,
        })
    }
}

fn sym_zero_point(qmin: i32, qmax: i32) -> i32 {
    round_half_even_f64((qmin as f64 + qmax as f64) / 2.0) as i32
}

/// PyTorch `UniformQuantizationObserverBase._calculate_qparams`, all in f32 torch ops.
fn pytorch_qparam(min: f32, max: f32, qmin: i32, qmax: i32, symmetric: bool, dt: QDType) -> QParam {
    let min_neg = min.min(0.0);
    let max_pos = max.max(0.0);
    let eps = f32::EPSILON; // torch.finfo(torch.float32).eps
    if symmetric {
        let absmax = (-min_neg).max(max_pos);
        let scale = absmax / ((qmax - qmin) as f32 / 2.0);
        let scale = scale.max(eps);
        let zero_point = match dt {
            QDType::U8 => 128,
            QDType::I8 => 0,
        };
        QParam { scale, zero_point }
    } else {
        let scale = (max_pos - min_neg) / (qmax - qmin) as f32;
        let scale = scale.max(eps);
        let zp = qmin - round_half_even_f32(min_neg / scale) as i32;
        QParam {
            scale,
            zero_point: zp.clamp(qmin, qmax),
        }
    }
}

/// ONNX Runtime `quant_utils.compute_scale_zp` (numpy): range widened in f32, the range
/// difference, the division and the zero point in f64, the scale cast back to f32.
fn ort_qparam(min: f32, max: f32, qmin: i32, qmax: i32, symmetric: bool) -> QParam {
    let mut rmin = min.min(0.0);
    let mut rmax = max.max(0.0);
    if symmetric {
        let absmax = rmin.abs().max(rmax.abs());
        rmin = -absmax;
        rmax = absmax;
    }
    // The range difference is taken in f64: the golden values (from ORT's quant_utils) match
    // this bit-exactly for all cases, while an f32 subtraction is 1 ulp off for 3 of them.
    let dr = rmax as f64 - rmin as f64;
    let dq = qmax as f64 - qmin as f64;
    let scale = dr / dq;
    if scale < f32::MIN_POSITIVE as f64 {
        return QParam {
            scale: 1.0,
            zero_point: 0,
        };
    }
    let zero_point = if symmetric {
        sym_zero_point(qmin, qmax)
    } else {
        round_half_even_f64(qmin as f64 - rmin as f64 / scale) as i32
    };
    QParam {
        scale: scale as f32,
        zero_point,
    }
}

/// Round half to even in f32 (numpy `round`, `torch.round`, `nearbyint`).
pub fn round_half_even_f32(x: f32) -> f32 {
    x.round_ties_even()
}

/// Round half to even in f64.
pub fn round_half_even_f64(x: f64) -> f64 {
    x.round_ties_even()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_exact_for_every_supported_scheme() {
        for preset in Preset::ALL {
            for dt in [QDType::I8, QDType::U8] {
                for sym in [false, true] {
                    for rr in [false, true] {
                        let s = QScheme::new(preset, dt, sym, rr);
                        let Ok(p) = s.qparam(0.0, 3.5) else { continue };
                        let q = crate::quant::quantize::quantize_value(&s, 0.0, p).unwrap();
                        assert_eq!(q, p.zero_point, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn ort_reduce_range_weights_and_pytorch_reduce_range_activations() {
        let ort = QScheme::new(Preset::Onnxruntime, QDType::I8, true, true);
        assert_eq!(ort.qrange().unwrap(), (-64, 64));
        let pt = QScheme::new(Preset::Pytorch, QDType::U8, false, true);
        assert_eq!(pt.qrange().unwrap(), (0, 127));
        let pt = QScheme::new(Preset::Pytorch, QDType::I8, false, true);
        assert_eq!(pt.qrange().unwrap(), (-64, 63));
    }

    #[test]
    fn symmetric_uint8_zero_point_is_128() {
        for preset in [Preset::Onnxruntime, Preset::Pytorch, Preset::Octet] {
            let s = QScheme::new(preset, QDType::U8, true, false);
            assert_eq!(s.qparam(-1.0, 2.0).unwrap().zero_point, 128, "{preset:?}");
        }
    }

    #[test]
    fn degenerate_ranges() {
        let p = QScheme::new(Preset::Pytorch, QDType::U8, false, false)
            .qparam(0.0, 0.0)
            .unwrap();
        assert_eq!(p.scale, f32::EPSILON);
        let p = QScheme::new(Preset::Onnxruntime, QDType::U8, false, false)
            .qparam(0.0, 0.0)
            .unwrap();
        assert_eq!((p.scale, p.zero_point), (1.0, 0));
        assert!(QScheme::new(Preset::Octet, QDType::U8, false, false)
            .qparam(f32::NAN, 1.0)
            .is_err());
        assert!(QScheme::new(Preset::Tensorflow, QDType::U8, false, false)
            .qparam(-1.0, 1.0)
            .is_err());
    }

    #[test]
    fn octet_weight_default_depends_on_vnni() {
        assert!(!QScheme::weight(Preset::Octet, 0, true).reduce_range);
        let s = QScheme::weight(Preset::Octet, 0, false);
        assert_eq!(s.qrange().unwrap(), (-64, 64));
        assert_eq!(s.saturation().unwrap(), (-64, 64));
    }
}
