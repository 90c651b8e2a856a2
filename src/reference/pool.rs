//! Pooling: MaxPool (dilations, ceil_mode, padded cells ignored), AveragePool
//! (count_include_pad counts cells inside the padded extent), LpPool, and the global pools.
//! Windows are enumerated by the same N-d (output position, tap) walk as Conv.

use super::broadcast::for_each_index;
use super::cast::from_floats;
use super::R;
use octet_ir::infer::{conv_out_dim, resolve_pads};
use octet_ir::{DType, PoolAttrs, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    Max,
    Avg,
    Lp(f32),
}

#[derive(Clone, Copy)]
enum Tap {
    In(usize),
    /// In the explicit padding (counts for count_include_pad).
    Pad,
    /// Beyond the padded extent (ceil_mode overhang): never counts.
    Outside,
}

/// MaxPool / AveragePool / LpPool.
pub fn pool(kind: PoolKind, a: &PoolAttrs, x: &Tensor) -> R<Tensor> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(format!("pool input must have rank >= 3, got {xs:?}"));
    }
    if x.dtype() == DType::Bool || (kind != PoolKind::Max && !x.dtype().is_float()) {
        return Err(format!("{kind:?} pool does not accept {}", x.dtype()));
    }
    let n = xs.len() - 2;
    let in_sp = &xs[2..];
    let kernel = &a.geom.kernel_shape;
    if kernel.len() != n || kernel.contains(&0) {
        return Err(format!(
            "kernel_shape {kernel:?} does not match {n} spatial axes"
        ));
    }
    let ones = vec![1usize; n];
    let strides = if a.geom.strides.is_empty() {
        ones.clone()
    } else {
        a.geom.strides.clone()
    };
    let dil = if a.geom.dilations.is_empty() {
        ones
    } else {
        a.geom.dilations.clone()
    };
    if strides.len() != n || dil.len() != n || strides.contains(&0) || dil.contains(&0) {
        return Err("strides/dilations do not match the spatial rank or contain 0".into());
    }
    let pads = resolve_pads(&a.geom, kernel, in_sp);
    if pads.len() != 2 * n {
        return Err("pads do not match the spatial rank".into());
    }
    let out_sp = (0..n)
        .map(|i| {
            conv_out_dim(
                in_sp[i],
                kernel[i],
                strides[i],
                dil[i],
                pads[i],
                pads[i + n],
                a.ceil_mode,
            )
        })
        .collect::<R<Vec<usize>>>()?;
    let mut kidx: Vec<Vec<usize>> = vec![];
    for_each_index(kernel, |_, k| kidx.push(k.to_vec()));
    let mut windows: Vec<Vec<Tap>> = vec![];
    for_each_index(&out_sp, |_, o| {
        let mut w = Vec::with_capacity(kidx.len());
        for k in &kidx {
            let mut off = 0usize;
            let mut tap = Tap::In(0);
            for d in 0..n {
                let p = (o[d] * strides[d] + k[d] * dil[d]) as i64 - pads[d] as i64;
                if p < -(pads[d] as i64) || p >= (in_sp[d] + pads[d + n]) as i64 {
                    tap = Tap::Outside;
                    break;
                }
                if p < 0 || p >= in_sp[d] as i64 {
                    tap = Tap::Pad;
                } else {
                    off = off * in_sp[d] + p as usize;
                }
            }
            if let Tap::In(_) = tap {
                tap = Tap::In(off);
            }
            w.push(tap);
        }
        windows.push(w);
    });
    let v = x.to_f64_vec();
    let in_size: usize = in_sp.iter().product();
    let planes = xs[0] * xs[1];
    let mut out = Vec::with_capacity(planes * windows.len());
    for pl in 0..planes {
        let xb = &v[pl * in_size..(pl + 1) * in_size];
        for w in &windows {
            let val = match kind {
                PoolKind::Max => {
                    let mut m = f64::NEG_INFINITY;
                    for t in w {
                        if let Tap::In(i) = t {
                            if xb[*i] > m || xb[*i].is_nan() {
                                m = xb[*i];
                            }
                        }
                    }
                    m
                }
                PoolKind::Avg => {
                    let (mut s, mut cnt) = (0.0, 0usize);
                    for t in w {
                        match t {
                            Tap::In(i) => {
                                s += xb[*i];
                                cnt += 1;
                            }
                            Tap::Pad if a.count_include_pad => cnt += 1,
                            _ => {}
                        }
                    }
                    if cnt == 0 {
                        0.0
                    } else {
                        s / cnt as f64
                    }
                }
                PoolKind::Lp(p) => {
                    let p = p as f64;
                    let s: f64 = w
                        .iter()
                        .filter_map(|t| match t {
                            Tap::In(i) => Some(xb[*i].abs().powf(p)),
                            _ => None,
                        })
                        .sum();
                    s.powf(1.0 / p)
                }
            };
            out.push(val);
        }
    }
    let mut shape = xs[..2].to_vec();
    shape.extend(&out_sp);
    Ok(from_floats(x.dtype(), &shape, &out))
}

/// GlobalMaxPool (`max`) / GlobalAveragePool.
pub fn global_pool(max: bool, x: &Tensor) -> R<Tensor> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(format!("global pool needs rank >= 3, got {xs:?}"));
    }
    if !x.dtype().is_float() {
        return Err(format!(
            "global pool needs a float tensor, got {}",
            x.dtype()
        ));
    }
    let size: usize = xs[2..].iter().product();
    let v = x.to_f64_vec();
    let out: Vec<f64> = (0..xs[0] * xs[1])
        .map(|p| {
            let s = &v[p * size..(p + 1) * size];
            if max {
                s.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            } else {
                s.iter().sum::<f64>() / size as f64
            }
        })
        .collect();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    Ok(from_floats(x.dtype(), &shape, &out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::{AutoPad, ConvGeom};

    fn attrs(k: Vec<usize>, s: Vec<usize>, p: Vec<usize>, ceil: bool, cip: bool) -> PoolAttrs {
        PoolAttrs {
            geom: ConvGeom {
                kernel_shape: k,
                strides: s,
                pads: p,
                dilations: vec![],
                auto_pad: AutoPad::NotSet,
            },
            ceil_mode: ceil,
            count_include_pad: cip,
        }
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn max_and_average_pools() {
        let x = Tensor::from_vec(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let y = pool(
            PoolKind::Max,
            &attrs(vec![2, 2], vec![2, 2], vec![], false, false),
            &x,
        )
        .unwrap();
        assert_eq!(f32s(&y), [6., 8., 14., 16.]);
        // ceil_mode: 4x4, k3 s2 -> 2x2 (test_maxpool_2d_ceil).
        let y = pool(
            PoolKind::Max,
            &attrs(vec![3, 3], vec![2, 2], vec![], true, false),
            &x,
        )
        .unwrap();
        assert_eq!(f32s(&y), [11., 12., 15., 16.]);
        // Average with pads, with and without counting the pads.
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0f32, 2., 3., 4.]);
        let a = attrs(vec![2, 2], vec![1, 1], vec![1, 1, 0, 0], false, false);
        let y = pool(PoolKind::Avg, &a, &x).unwrap();
        assert_eq!(f32s(&y), [1., 1.5, 2., 2.5]);
        let a = attrs(vec![2, 2], vec![1, 1], vec![1, 1, 0, 0], false, true);
        let y = pool(PoolKind::Avg, &a, &x).unwrap();
        assert_eq!(f32s(&y), [0.25, 0.75, 1., 2.5]);
        let y = pool(
            PoolKind::Lp(2.0),
            &attrs(vec![2, 2], vec![], vec![], false, false),
            &x,
        )
        .unwrap();
        assert!((f32s(&y)[0] - 30f32.sqrt()).abs() < 1e-6);
        let g = global_pool(false, &x).unwrap();
        assert_eq!(g.shape(), &[1, 1, 1, 1]);
        assert_eq!(f32s(&g), [2.5]);
        assert_eq!(f32s(&global_pool(true, &x).unwrap()), [4.0]);
    }
}
