//! Normalisation and softmax family: Softmax / LogSoftmax / Hardmax (opset-13 single-axis
//! semantics, or `legacy` flatten-to-2-D at axis), LayerNormalization, BatchNormalization
//! (inference), InstanceNormalization and LRN. All compute in f64 and round once.

use super::broadcast::broadcast_map;
use super::cast::{from_floats, need_float};
use super::{opt, req, R};
use octet_ir::infer::norm_axis;
use octet_ir::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

/// Softmax, LogSoftmax and Hardmax.
pub fn softmax(x: &Tensor, axis: i64, legacy: bool, kind: SoftmaxKind) -> R<Tensor> {
    need_float(x, &format!("{kind:?}"))?;
    let s = x.shape();
    let r = s.len();
    // (outer, len, inner): groups of `len` elements with stride `inner`.
    let (outer, len, inner) = if r == 0 {
        (1, 1, 1)
    } else if legacy {
        let a = if axis < 0 { axis + r as i64 } else { axis };
        if a < 0 || a > r as i64 {
            return Err(format!("axis {axis} out of range for rank {r}"));
        }
        let a = a as usize;
        (s[..a].iter().product(), s[a..].iter().product(), 1)
    } else {
        let a = norm_axis(axis, r)?;
        (
            s[..a].iter().product(),
            s[a],
            s[a + 1..].iter().product::<usize>(),
        )
    };
    let v = x.to_f64_vec();
    let mut out = vec![0.0f64; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| (o * len + j) * inner + i;
            let max = (0..len)
                .map(|j| v[idx(j)])
                .fold(f64::NEG_INFINITY, f64::max);
            match kind {
                SoftmaxKind::Hardmax => {
                    if let Some(j) = (0..len).find(|&j| v[idx(j)] == max) {
                        out[idx(j)] = 1.0;
                    }
                }
                SoftmaxKind::Softmax => {
                    let sum: f64 = (0..len).map(|j| (v[idx(j)] - max).exp()).sum();
                    for j in 0..len {
                        out[idx(j)] = (v[idx(j)] - max).exp() / sum;
                    }
                }
                SoftmaxKind::LogSoftmax => {
                    let sum: f64 = (0..len).map(|j| (v[idx(j)] - max).exp()).sum();
                    let ls = sum.ln();
                    for j in 0..len {
                        out[idx(j)] = v[idx(j)] - max - ls;
                    }
                }
            }
        }
    }
    Ok(from_floats(x.dtype(), s, &out))
}

/// Values of `p` broadcast (unidirectionally) to `shape`.
fn param_to(p: &Tensor, shape: &[usize], what: &str) -> R<Vec<f64>> {
    let map = broadcast_map(p.shape(), shape)
        .map_err(|_| format!("{what} {:?} does not broadcast to {shape:?}", p.shape()))?;
    let v = p.to_f64_vec();
    Ok(map.into_iter().map(|i| v[i]).collect())
}

/// LayerNormalization(X, scale, B?) over axes [axis, rank).
pub fn layer_norm(axis: i64, eps: f32, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    need_float(x, "LayerNormalization")?;
    let s = x.shape();
    let a = norm_axis(axis, s.len())?;
    let outer: usize = s[..a].iter().product();
    let inner: usize = s[a..].iter().product();
    let scale = param_to(req(inputs, 1, "Scale")?, &s[a..], "Scale")?;
    let bias = opt(inputs, 2)
        .map(|b| param_to(b, &s[a..], "B"))
        .transpose()?;
    let v = x.to_f64_vec();
    let mut out = vec![0.0f64; v.len()];
    for o in 0..outer {
        let row = &v[o * inner..(o + 1) * inner];
        let mean = row.iter().sum::<f64>() / inner as f64;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for j in 0..inner {
            let b = bias.as_ref().map_or(0.0, |b| b[j]);
            out[o * inner + j] = (row[j] - mean) * inv * scale[j] + b;
        }
    }
    Ok(from_floats(x.dtype(), s, &out))
}

fn per_channel(t: &Tensor, c: usize, what: &str) -> R<Vec<f64>> {
    if t.len() != c {
        return Err(format!("{what} has {} elements for {c} channels", t.len()));
    }
    Ok(t.to_f64_vec())
}

/// BatchNormalization (inference mode): (x - mean) / sqrt(var + eps) * scale + B per channel.
pub fn batch_norm(eps: f32, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    need_float(x, "BatchNormalization")?;
    let s = x.shape();
    if s.len() < 2 {
        return Err(format!("BatchNormalization needs rank >= 2, got {s:?}"));
    }
    let c = s[1];
    let scale = per_channel(req(inputs, 1, "scale")?, c, "scale")?;
    let b = per_channel(req(inputs, 2, "B")?, c, "B")?;
    let mean = per_channel(req(inputs, 3, "input_mean")?, c, "input_mean")?;
    let var = per_channel(req(inputs, 4, "input_var")?, c, "input_var")?;
    let inner: usize = s[2..].iter().product();
    let v = x.to_f64_vec();
    let out: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let ch = (i / inner.max(1)) % c;
            (x - mean[ch]) / (var[ch] + eps as f64).sqrt() * scale[ch] + b[ch]
        })
        .collect();
    Ok(from_floats(x.dtype(), s, &out))
}

/// InstanceNormalization(X, scale, B): per (n, c) over the spatial axes.
pub fn instance_norm(eps: f32, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    need_float(x, "InstanceNormalization")?;
    let s = x.shape();
    if s.len() < 3 {
        return Err(format!("InstanceNormalization needs rank >= 3, got {s:?}"));
    }
    let c = s[1];
    let scale = per_channel(req(inputs, 1, "scale")?, c, "scale")?;
    let b = per_channel(req(inputs, 2, "B")?, c, "B")?;
    let inner: usize = s[2..].iter().product();
    let v = x.to_f64_vec();
    let mut out = vec![0.0f64; v.len()];
    for p in 0..s[0] * c {
        let ch = p % c;
        let row = &v[p * inner..(p + 1) * inner];
        let mean = row.iter().sum::<f64>() / inner as f64;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for j in 0..inner {
            out[p * inner + j] = (row[j] - mean) * inv * scale[ch] + b[ch];
        }
    }
    Ok(from_floats(x.dtype(), s, &out))
}

/// LRN across channels: x / (bias + alpha / size * sum_sq)^beta.
pub fn lrn(x: &Tensor, alpha: f32, beta: f32, bias: f32, size: usize) -> R<Tensor> {
    need_float(x, "LRN")?;
    let s = x.shape();
    if s.len() < 3 {
        return Err(format!("LRN needs rank >= 3, got {s:?}"));
    }
    if size == 0 {
        return Err("LRN size must be positive".into());
    }
    let c = s[1];
    let inner: usize = s[2..].iter().product();
    let v = x.to_f64_vec();
    let lo_off = (size - 1) / 2;
    let hi_off = size - 1 - lo_off; // ceil((size-1)/2)
    let (al, be, bi) = (alpha as f64, beta as f64, bias as f64);
    let mut out = vec![0.0f64; v.len()];
    for n in 0..s[0] {
        for ch in 0..c {
            let lo = ch.saturating_sub(lo_off);
            let hi = (ch + hi_off).min(c - 1);
            for p in 0..inner {
                let sq: f64 = (lo..=hi)
                    .map(|k| {
                        let t = v[(n * c + k) * inner + p];
                        t * t
                    })
                    .sum();
                let i = (n * c + ch) * inner + p;
                out[i] = v[i] / (bi + al / size as f64 * sq).powf(be);
            }
        }
    }
    Ok(from_floats(x.dtype(), s, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn softmax_axes_and_legacy() {
        let x = Tensor::from_vec(&[2, 2], vec![0.0f32, 0.0, 1.0, 3.0]);
        let y = softmax(&x, -1, false, SoftmaxKind::Softmax).unwrap();
        assert!((f32s(&y)[0] - 0.5).abs() < 1e-7);
        assert!((f32s(&y)[3] - 0.880_797).abs() < 1e-6);
        let y = softmax(&x, 0, false, SoftmaxKind::Softmax).unwrap();
        assert!((f32s(&y)[0] - 0.268_941_43).abs() < 1e-6);
        // Legacy axis 0 flattens everything into one group.
        let y = softmax(&x, 0, true, SoftmaxKind::Softmax).unwrap();
        assert!((f32s(&y).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let y = softmax(&x, 1, false, SoftmaxKind::Hardmax).unwrap();
        assert_eq!(f32s(&y), [1., 0., 0., 1.]);
        let y = softmax(&x, 1, false, SoftmaxKind::LogSoftmax).unwrap();
        assert!((f32s(&y)[0] + std::f32::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn layer_batch_instance_norms() {
        let x = Tensor::from_vec(&[2, 2], vec![1.0f32, 3.0, 2.0, 4.0]);
        let sc = Tensor::from_vec(&[2], vec![1.0f32, 2.0]);
        let b = Tensor::from_vec(&[2], vec![0.0f32, 1.0]);
        let y = layer_norm(-1, 0.0, &[Some(&x), Some(&sc), Some(&b)]).unwrap();
        assert_eq!(f32s(&y), [-1.0, 3.0, -1.0, 3.0]);
        let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1.0f32, 2.0, 3.0, 5.0]);
        let one = Tensor::from_vec(&[2], vec![1.0f32, 1.0]);
        let zero = Tensor::from_vec(&[2], vec![0.0f32, 0.0]);
        let mean = Tensor::from_vec(&[2], vec![1.0f32, 1.0]);
        let var = Tensor::from_vec(&[2], vec![4.0f32, 1.0]);
        let y = batch_norm(
            0.0,
            &[Some(&x), Some(&one), Some(&zero), Some(&mean), Some(&var)],
        )
        .unwrap();
        assert_eq!(f32s(&y), [0.0, 0.5, 2.0, 4.0]);
        let y = instance_norm(0.0, &[Some(&x), Some(&one), Some(&zero)]).unwrap();
        assert_eq!(f32s(&y), [-1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn lrn_small() {
        let x = Tensor::from_vec(&[1, 2, 1, 1], vec![1.0f32, 2.0]);
        let y = lrn(&x, 2.0, 1.0, 1.0, 2).unwrap();
        // ch0 window [0,1]: 1 + 2/2*(1+4) = 6 -> 1/6; ch1 window [1,1]: 1 + 4 = 5 -> 2/5.
        let v = f32s(&y);
        assert!((v[0] - 1.0 / 6.0).abs() < 1e-7 && (v[1] - 0.4).abs() < 1e-7);
    }
}
