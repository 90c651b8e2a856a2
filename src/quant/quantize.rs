//! Quantizing float values to integers and back, per tensor and per channel, with each
//! preset's rounding, `x / scale` evaluation and saturation range (see [`QScheme::rounding`],
//! [`QScheme::scale_op`], [`QScheme::saturation`]).
//!
//! Owns: `quantize_value`, `quantize_slice`, `dequantize_value`, `dequantize_slice`.
//! `q = saturate(round(x / scale) + zero_point)`; ONNX QuantizeLinear is this formula with
//! round-half-to-even. NaN inputs quantize to the zero point (numpy's cast is undefined there).

use octet_ir::QuantParams;

use super::error::QuantError;
use super::scheme::{QParam, QScheme, Rounding, ScaleOp};

/// Quantizes `x` with explicit rounding, division style and saturation range.
pub fn quantize_with(
    x: f32,
    p: QParam,
    rounding: Rounding,
    op: ScaleOp,
    qmin: i32,
    qmax: i32,
) -> i32 {
    if x.is_nan() {
        return p.zero_point.clamp(qmin, qmax);
    }
    let t = match op {
        ScaleOp::Divide => x / p.scale,
        ScaleOp::MulReciprocal => x * (1.0f32 / p.scale),
    };
    let r = match rounding {
        Rounding::HalfToEven => t.round_ties_even(),
        Rounding::HalfAwayFromZero => t.round(),
    };
    // Saturate in f64 first so huge values cannot overflow the integer conversion.
    let v = r as f64 + p.zero_point as f64;
    v.clamp(qmin as f64, qmax as f64) as i32
}

/// Quantizes one value with the scheme's rules.
pub fn quantize_value(s: &QScheme, x: f32, p: QParam) -> Result<i32, QuantError> {
    let (qmin, qmax) = s.saturation()?;
    Ok(quantize_with(x, p, s.rounding(), s.scale_op(), qmin, qmax))
}

/// `scale * (q - zero_point)`, in f32 as ONNX DequantizeLinear.
pub fn dequantize_value(q: i32, p: QParam) -> f32 {
    (q - p.zero_point) as f32 * p.scale
}

/// Number of elements and the (outer, channels, inner) split of `shape` around `axis`.
fn split(shape: &[usize], axis: usize) -> Result<(usize, usize, usize), QuantError> {
    if axis >= shape.len() {
        return Err(QuantError::Shape(format!(
            "axis {axis} out of range for shape {shape:?}"
        )));
    }
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    Ok((outer, shape[axis], inner))
}

/// Channel index of each flat element for `params` (all 0 for per-tensor).
fn for_each_channel(
    data_len: usize,
    shape: &[usize],
    params: &QuantParams,
    mut f: impl FnMut(usize, usize),
) -> Result<(), QuantError> {
    let n: usize = shape.iter().product();
    if n != data_len {
        return Err(QuantError::Shape(format!(
            "{data_len} values for shape {shape:?} ({n} elements)"
        )));
    }
    if params.scale.len() != params.zero_point.len() {
        return Err(QuantError::Shape(format!(
            "{} scales vs {} zero points",
            params.scale.len(),
            params.zero_point.len()
        )));
    }
    match params.axis {
        None => {
            if params.scale.len() != 1 {
                return Err(QuantError::Shape(format!(
                    "per-tensor parameters with {} scales",
                    params.scale.len()
                )));
            }
            (0..n).for_each(|i| f(i, 0));
        }
        Some(axis) => {
            let (outer, ch, inner) = split(shape, axis)?;
            if params.scale.len() != ch {
                return Err(QuantError::Shape(format!(
                    "{} scales for {ch} channels along axis {axis} of {shape:?}",
                    params.scale.len()
                )));
            }
            let mut i = 0;
            for _ in 0..outer {
                for c in 0..ch {
                    for _ in 0..inner {
                        f(i, c);
                        i += 1;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Quantizes a tensor (flat `data` of `shape`) per tensor or per channel (`params.axis`).
pub fn quantize_slice(
    s: &QScheme,
    data: &[f32],
    shape: &[usize],
    params: &QuantParams,
) -> Result<Vec<i32>, QuantError> {
    let (qmin, qmax) = s.saturation()?;
    let (rounding, op) = (s.rounding(), s.scale_op());
    let mut out = vec![0i32; data.len()];
    for_each_channel(data.len(), shape, params, |i, c| {
        let p = QParam {
            scale: params.scale[c],
            zero_point: params.zero_point[c],
        };
        out[i] = quantize_with(data[i], p, rounding, op, qmin, qmax);
    })?;
    Ok(out)
}

/// Dequantizes a tensor per tensor or per channel.
pub fn dequantize_slice(
    q: &[i32],
    shape: &[usize],
    params: &QuantParams,
) -> Result<Vec<f32>, QuantError> {
    let mut out = vec![0f32; q.len()];
    for_each_channel(q.len(), shape, params, |i, c| {
        let p = QParam {
            scale: params.scale[c],
            zero_point: params.zero_point[c],
        };
        out[i] = dequantize_value(q[i], p);
    })?;
    Ok(out)
}

/// Per-channel (min, max) of `data` along `axis` (exact; used for weights).
pub fn channel_min_max(
    data: &[f32],
    shape: &[usize],
    axis: usize,
) -> Result<(Vec<f32>, Vec<f32>), QuantError> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(QuantError::Shape(format!(
            "{} values for shape {shape:?}",
            data.len()
        )));
    }
    if n == 0 {
        return Err(QuantError::EmptyTensor);
    }
    super::error::check_finite(data)?;
    let (outer, ch, inner) = split(shape, axis)?;
    let mut mins = vec![f32::INFINITY; ch];
    let mut maxs = vec![f32::NEG_INFINITY; ch];
    let mut i = 0;
    for _ in 0..outer {
        for c in 0..ch {
            for &v in &data[i..i + inner] {
                mins[c] = mins[c].min(v);
                maxs[c] = maxs[c].max(v);
            }
            i += inner;
        }
    }
    Ok((mins, maxs))
}

#[cfg(test)]
mod tests {
    use super::super::scheme::{Preset, QDType};
    use super::*;

    #[test]
    fn onnx_rounding_is_half_to_even_and_tflite_half_away() {
        let p = QParam {
            scale: 1.0,
            zero_point: 0,
        };
        let ort = QScheme::new(Preset::Onnxruntime, QDType::I8, false, false);
        let tf = QScheme::new(Preset::Tensorflow, QDType::I8, true, false);
        assert_eq!(quantize_value(&ort, 2.5, p).unwrap(), 2);
        assert_eq!(quantize_value(&ort, -2.5, p).unwrap(), -2);
        assert_eq!(quantize_value(&tf, 2.5, p).unwrap(), 3);
        assert_eq!(quantize_value(&tf, -2.5, p).unwrap(), -3);
        assert_eq!(quantize_value(&tf, -300.0, p).unwrap(), -127);
        assert_eq!(quantize_value(&ort, -300.0, p).unwrap(), -128);
        assert_eq!(quantize_value(&ort, f32::INFINITY, p).unwrap(), 127);
    }

    #[test]
    fn per_channel_uses_every_channel() {
        // shape [2, 3], axis 1: three channels with different scales.
        let s = QScheme::new(Preset::Octet, QDType::I8, true, false).with_axis(1);
        let data = [1.0, 2.0, 4.0, -1.0, -2.0, -4.0];
        let (mins, maxs) = channel_min_max(&data, &[2, 3], 1).unwrap();
        assert_eq!(mins, vec![-1.0, -2.0, -4.0]);
        let params = s.qparams(&mins, &maxs).unwrap();
        assert_eq!(params.scale.len(), 3);
        let q = quantize_slice(&s, &data, &[2, 3], &params).unwrap();
        assert_eq!(q, vec![127, 127, 127, -127, -127, -127]);
        let back = dequantize_slice(&q, &[2, 3], &params).unwrap();
        for (a, b) in back.iter().zip(data) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn shape_errors() {
        let s = QScheme::new(Preset::Octet, QDType::I8, true, false).with_axis(1);
        let params = s.qparams(&[-1.0, -1.0], &[1.0, 1.0]).unwrap();
        assert!(quantize_slice(&s, &[0.0; 6], &[2, 3], &params).is_err());
        assert!(quantize_slice(&s, &[0.0; 5], &[2, 3], &params).is_err());
        assert!(channel_min_max(&[], &[0, 3], 1).is_err());
    }
}
