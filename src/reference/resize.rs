//! Resize (Upsample is mapped onto it by the importer): nearest / linear / cubic with every
//! coordinate_transformation_mode and nearest_mode, `axes`, keep_aspect_ratio_policy,
//! exclude_outside, and roi + extrapolation for tf_crop_and_resize. Each axis is turned into a
//! list of (input index, weight) taps per output coordinate; N-d outputs take the product.

use super::broadcast::{for_each_index, strides};
use super::cast::from_floats;
use super::{opt_nonempty, req, R};
use octet_ir::infer::norm_axis;
use octet_ir::{CoordTransform, DType, NearestMode, ResizeAttrs, ResizeMode, Tensor};

struct AxisTaps {
    /// Per output coordinate: taps, or None when outside the crop (extrapolate).
    taps: Vec<Option<Vec<(usize, f64)>>>,
}

fn cubic_coeffs(r: f64, a: f64) -> [f64; 4] {
    let f1 = |t: f64| ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0; // |t| <= 1
    let f2 = |t: f64| ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a; // 1 < |t| < 2
    [f2(r + 1.0), f1(r), f1(1.0 - r), f2(2.0 - r)]
}

#[allow(clippy::too_many_arguments)]
fn axis_taps(
    a: &ResizeAttrs,
    in_len: usize,
    out_len: usize,
    scale: f64,
    roi: (f64, f64),
) -> AxisTaps {
    let inf = in_len as f64;
    let mut taps = Vec::with_capacity(out_len);
    for o in 0..out_len {
        let of = o as f64;
        let x = match a.coord {
            CoordTransform::HalfPixel => (of + 0.5) / scale - 0.5,
            CoordTransform::HalfPixelSymmetric => {
                let out_w = scale * inf;
                let adj = out_len as f64 / out_w;
                let center = inf / 2.0;
                let offset = center * (1.0 - adj);
                offset + (of + 0.5) / scale - 0.5
            }
            CoordTransform::PytorchHalfPixel => {
                if scale * inf > 1.0 {
                    (of + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            // ONNX uses the unrounded resized length (in * scale) in these formulas.
            CoordTransform::AlignCorners => {
                if scale * inf <= 1.0 {
                    0.0
                } else {
                    of * (inf - 1.0) / (scale * inf - 1.0)
                }
            }
            CoordTransform::Asymmetric => of / scale,
            CoordTransform::TfCropAndResize => {
                let (s, e) = roi;
                if scale * inf > 1.0 {
                    s * (inf - 1.0) + of * (e - s) * (inf - 1.0) / (scale * inf - 1.0)
                } else {
                    0.5 * (s + e) * (inf - 1.0)
                }
            }
        };
        if a.coord == CoordTransform::TfCropAndResize && (x < 0.0 || x > inf - 1.0) {
            taps.push(None);
            continue;
        }
        let last = in_len as i64 - 1;
        let t: Vec<(usize, f64)> = match a.mode {
            ResizeMode::Nearest => {
                let i = match a.nearest {
                    NearestMode::RoundPreferFloor => {
                        if x - x.floor() == 0.5 {
                            x.floor()
                        } else {
                            x.round()
                        }
                    }
                    NearestMode::RoundPreferCeil => {
                        if x - x.floor() == 0.5 {
                            x.ceil()
                        } else {
                            x.round()
                        }
                    }
                    NearestMode::Floor => x.floor(),
                    NearestMode::Ceil => x.ceil(),
                };
                vec![((i as i64).clamp(0, last) as usize, 1.0)]
            }
            ResizeMode::Linear | ResizeMode::Cubic => {
                let x0 = x.floor();
                let r = x - x0;
                let x0 = x0 as i64;
                let raw: Vec<(i64, f64)> = if a.mode == ResizeMode::Linear {
                    vec![(x0, 1.0 - r), (x0 + 1, r)]
                } else {
                    let c = cubic_coeffs(r, a.cubic_coeff_a as f64);
                    (0..4).map(|k| (x0 - 1 + k as i64, c[k])).collect()
                };
                let mut v: Vec<(usize, f64)> = Vec::with_capacity(raw.len());
                let mut total = 0.0;
                for (i, w) in raw {
                    let outside = i < 0 || i > last;
                    let w = if outside && a.exclude_outside { 0.0 } else { w };
                    total += w;
                    if w != 0.0 {
                        v.push((i.clamp(0, last) as usize, w));
                    }
                }
                if a.exclude_outside && total != 0.0 {
                    for t in v.iter_mut() {
                        t.1 /= total;
                    }
                }
                v
            }
        };
        taps.push(Some(t));
    }
    AxisTaps { taps }
}

/// Resize(X, roi?, scales?, sizes?).
pub fn resize(a: &ResizeAttrs, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    if x.dtype() == DType::Bool {
        return Err("Resize does not accept bool".into());
    }
    let s = x.shape();
    let r = s.len();
    let axes: Vec<usize> = if a.axes.is_empty() {
        (0..r).collect()
    } else {
        a.axes.iter().map(|&v| norm_axis(v, r)).collect::<R<_>>()?
    };
    let mut scale = vec![1.0f64; r];
    let mut out_shape = s.to_vec();
    if let Some(sz) = opt_nonempty(inputs, 3) {
        if sz.dtype().is_float() {
            return Err("Resize sizes must be integers".into());
        }
        let v = sz.to_i64_vec();
        if v.len() != axes.len() || v.iter().any(|&d| d < 0) {
            return Err(format!("Resize sizes {v:?} do not fit axes {axes:?}"));
        }
        let policy = a.keep_aspect_ratio_policy.as_str();
        if policy.is_empty() || policy == "stretch" {
            for (i, &ax) in axes.iter().enumerate() {
                out_shape[ax] = v[i] as usize;
                scale[ax] = v[i] as f64 / s[ax] as f64;
            }
        } else {
            let ratios = axes.iter().zip(&v).map(|(&ax, &d)| d as f64 / s[ax] as f64);
            let rr = match policy {
                "not_larger" => ratios.fold(f64::INFINITY, f64::min),
                "not_smaller" => ratios.fold(0.0, f64::max),
                p => return Err(format!("unknown keep_aspect_ratio_policy '{p}'")),
            };
            for &ax in &axes {
                out_shape[ax] = (s[ax] as f64 * rr).round() as usize;
                scale[ax] = rr;
            }
        }
    } else if let Some(sc) = opt_nonempty(inputs, 2) {
        let v = sc.to_f64_vec();
        if v.len() != axes.len() {
            return Err(format!(
                "Resize has {} scales for {} axes",
                v.len(),
                axes.len()
            ));
        }
        for (i, &ax) in axes.iter().enumerate() {
            let f = v[i] as f32 as f64;
            if f <= 0.0 {
                return Err(format!("Resize scale {f} is not positive"));
            }
            scale[ax] = f;
            out_shape[ax] = (s[ax] as f64 * f).floor() as usize;
        }
    } else {
        return Err("Resize needs scales or sizes".into());
    }
    // roi: [starts.., ends..] over `axes` (or over all axes).
    let mut roi = vec![(0.0f64, 1.0f64); r];
    if a.coord == CoordTransform::TfCropAndResize {
        if let Some(rt) = opt_nonempty(inputs, 1) {
            let v = rt.to_f64_vec();
            let list: Vec<usize> = if v.len() == 2 * axes.len() {
                axes.clone()
            } else if v.len() == 2 * r {
                (0..r).collect()
            } else {
                return Err(format!("Resize roi has {} values", v.len()));
            };
            let n = list.len();
            for (i, &ax) in list.iter().enumerate() {
                roi[ax] = (v[i], v[i + n]);
            }
        }
    }
    if s.iter().zip(&out_shape).any(|(&i, &o)| i == 0 && o > 0) {
        return Err("Resize of an empty axis".into());
    }
    let taps: Vec<AxisTaps> = (0..r)
        .map(|d| axis_taps(a, s[d], out_shape[d], scale[d], roi[d]))
        .collect();
    let v = x.to_f64_vec();
    let st = strides(s);
    let mut out = Vec::with_capacity(out_shape.iter().product());
    let extrap = a.extrapolation_value as f64;
    for_each_index(&out_shape, |_, idx| {
        let per: Option<Vec<&Vec<(usize, f64)>>> =
            (0..r).map(|d| taps[d].taps[idx[d]].as_ref()).collect();
        let Some(per) = per else {
            out.push(extrap);
            return;
        };
        // Sum over the product of taps.
        let mut acc = 0.0;
        let counts: Vec<usize> = per.iter().map(|t| t.len()).collect();
        for_each_index(&counts, |_, k| {
            let mut w = 1.0;
            let mut off = 0;
            for d in 0..r {
                let (i, wd) = per[d][k[d]];
                w *= wd;
                off += i * st[d];
            }
            acc += w * v[off];
        });
        out.push(acc);
    });
    Ok(from_floats(x.dtype(), &out_shape, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: ResizeMode, coord: CoordTransform) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coord,
            nearest: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            axes: vec![],
            keep_aspect_ratio_policy: "stretch".into(),
        }
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn nearest_and_linear() {
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0f32, 2., 3., 4.]);
        let sc = Tensor::from_vec(&[4], vec![1.0f32, 1.0, 2.0, 2.0]);
        let a = attrs(ResizeMode::Nearest, CoordTransform::Asymmetric);
        let y = resize(&a, &[Some(&x), None, Some(&sc)]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        assert_eq!(&f32s(&y)[..8], [1., 1., 2., 2., 1., 1., 2., 2.]);
        // test_resize_upsample_scales_linear (half_pixel).
        let a = attrs(ResizeMode::Linear, CoordTransform::HalfPixel);
        let y = resize(&a, &[Some(&x), None, Some(&sc)]).unwrap();
        assert_eq!(
            f32s(&y),
            [1., 1.25, 1.75, 2., 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3., 3.25, 3.75, 4.]
        );
        // align_corners via sizes on the last two axes only.
        let mut a = attrs(ResizeMode::Linear, CoordTransform::AlignCorners);
        a.axes = vec![2, 3];
        let sz = Tensor::from_vec(&[2], vec![3i64, 3]);
        let y = resize(&a, &[Some(&x), None, None, Some(&sz)]).unwrap();
        assert_eq!(f32s(&y), [1., 1.5, 2., 2., 2.5, 3., 3., 3.5, 4.]);
    }

    #[test]
    fn cubic_downsample_and_crop() {
        // test_resize_downsample_scales_cubic_align_corners-like sanity: constant input stays.
        let x = Tensor::from_vec(&[1, 1, 4, 4], vec![2.0f32; 16]);
        let sc = Tensor::from_vec(&[4], vec![1.0f32, 1.0, 0.8, 0.8]);
        let a = attrs(ResizeMode::Cubic, CoordTransform::HalfPixel);
        let y = resize(&a, &[Some(&x), None, Some(&sc)]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert!(f32s(&y).iter().all(|v| (v - 2.0).abs() < 1e-6));
        // tf_crop_and_resize with extrapolation.
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0f32, 2., 3., 4.]);
        let mut a = attrs(ResizeMode::Linear, CoordTransform::TfCropAndResize);
        a.extrapolation_value = 10.0;
        let roi = Tensor::from_vec(&[8], vec![0.0f32, 0., 0., 0., 1., 1., 1., 2.]);
        let sz = Tensor::from_vec(&[4], vec![1i64, 1, 2, 3]);
        let y = resize(&a, &[Some(&x), Some(&roi), None, Some(&sz)]).unwrap();
        assert_eq!(f32s(&y), [1., 2., 10., 3., 4., 10.]);
    }
}
