//! Convolutions: N-d Conv (groups, strides, dilations, pads, auto_pad) and ConvTranspose
//! (output_padding, output_shape, SAME_* pad split per the ONNX spec), as direct loops over a
//! precomputed (output position, kernel tap) -> input offset table. `ConvPlan` and `conv_core`
//! are shared with ConvInteger / QLinearConv.

use super::broadcast::for_each_index;
use super::cast::{from_floats, need_float};
use super::matmul::Acc;
use super::{opt, req, R};
use octet_ir::infer::{conv_out_dim, conv_transpose_out, resolve_pads};
use octet_ir::{AutoPad, ConvAttrs, ConvGeom, ConvTransposeAttrs, Tensor};

fn or_ones(v: &[usize], n: usize, what: &str) -> R<Vec<usize>> {
    let v = if v.is_empty() { vec![1; n] } else { v.to_vec() };
    if v.len() != n {
        return Err(format!(
            "{what} has {} entries for {n} spatial axes",
            v.len()
        ));
    }
    if v.contains(&0) {
        return Err(format!("{what} contains 0"));
    }
    Ok(v)
}

/// Geometry of one convolution, resolved against concrete shapes.
pub struct ConvPlan {
    pub batch: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    pub group: usize,
    pub in_size: usize,
    pub out_spatial: Vec<usize>,
    pub out_size: usize,
    pub k_size: usize,
    /// `table[o * k_size + k]`: flat input spatial offset read by output position `o` at kernel
    /// tap `k`, or -1 when that tap falls in the padding.
    pub table: Vec<isize>,
}

impl ConvPlan {
    pub fn out_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.out_ch];
        s.extend(&self.out_spatial);
        s
    }
}

/// Resolve a Conv's geometry for input shape `x` and weight shape `w`.
pub fn plan(geom: &ConvGeom, group: usize, x: &[usize], w: &[usize]) -> R<ConvPlan> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(format!(
            "conv input {x:?} and weight {w:?} must have the same rank >= 3"
        ));
    }
    let n = x.len() - 2;
    let in_sp = &x[2..];
    let kernel: Vec<usize> = if geom.kernel_shape.is_empty() {
        w[2..].to_vec()
    } else {
        geom.kernel_shape.clone()
    };
    if kernel != w[2..] {
        return Err(format!(
            "kernel_shape {kernel:?} does not match weight {w:?}"
        ));
    }
    if kernel.contains(&0) {
        return Err("kernel has a zero extent".into());
    }
    if group == 0 || x[1] % group != 0 || w[0] % group != 0 {
        return Err(format!(
            "group {group} does not divide channels (input {}, output {})",
            x[1], w[0]
        ));
    }
    if x[1] / group != w[1] {
        return Err(format!(
            "conv input has {} channels, weight expects {} x group {group}",
            x[1], w[1]
        ));
    }
    let strides = or_ones(&geom.strides, n, "strides")?;
    let dil = or_ones(&geom.dilations, n, "dilations")?;
    let pads = resolve_pads(geom, &kernel, in_sp);
    if pads.len() != 2 * n {
        return Err(format!(
            "pads has {} entries for {n} spatial axes",
            pads.len()
        ));
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
                false,
            )
        })
        .collect::<R<Vec<usize>>>()?;
    let table = window_table(in_sp, &out_sp, &kernel, &strides, &dil, &pads[..n]);
    Ok(ConvPlan {
        batch: x[0],
        in_ch: x[1],
        out_ch: w[0],
        group,
        in_size: in_sp.iter().product(),
        out_size: out_sp.iter().product(),
        out_spatial: out_sp,
        k_size: kernel.iter().product(),
        table,
    })
}

/// `(output position, kernel tap) -> input offset or -1`, for any spatial rank.
pub fn window_table(
    in_sp: &[usize],
    out_sp: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
    pads_begin: &[usize],
) -> Vec<isize> {
    let n = in_sp.len();
    let k_size: usize = kernel.iter().product();
    let out_size: usize = out_sp.iter().product();
    let mut table = Vec::with_capacity(out_size * k_size);
    let mut kidx: Vec<Vec<usize>> = Vec::with_capacity(k_size);
    for_each_index(kernel, |_, k| kidx.push(k.to_vec()));
    for_each_index(out_sp, |_, o| {
        for k in &kidx {
            let mut off: isize = 0;
            let mut inside = true;
            for d in 0..n {
                let p = (o[d] * strides[d] + k[d] * dil[d]) as isize - pads_begin[d] as isize;
                if p < 0 || p >= in_sp[d] as isize {
                    inside = false;
                    break;
                }
                off = off * in_sp[d] as isize + p;
            }
            table.push(if inside { off } else { -1 });
        }
    });
    table
}

/// Direct convolution: x is [N, C, in...], w is [M, C/group, k...]; bias per output channel.
pub fn conv_core<T: Acc>(x: &[T], w: &[T], bias: Option<&[T]>, p: &ConvPlan) -> Vec<T> {
    let cpg = p.in_ch / p.group;
    let mpg = p.out_ch / p.group;
    let mut out = vec![T::default(); p.batch * p.out_ch * p.out_size];
    for n in 0..p.batch {
        for g in 0..p.group {
            for mm in 0..mpg {
                let m = g * mpg + mm;
                let init = bias.map_or(T::default(), |b| b[m]);
                let obase = (n * p.out_ch + m) * p.out_size;
                for o in 0..p.out_size {
                    let taps = &p.table[o * p.k_size..(o + 1) * p.k_size];
                    let mut acc = init;
                    for cc in 0..cpg {
                        let xb = &x[(n * p.in_ch + g * cpg + cc) * p.in_size..][..p.in_size];
                        let wb = &w[(m * cpg + cc) * p.k_size..][..p.k_size];
                        for (&off, &wv) in taps.iter().zip(wb) {
                            if off >= 0 {
                                acc = acc + xb[off as usize] * wv;
                            }
                        }
                    }
                    out[obase + o] = acc;
                }
            }
        }
    }
    out
}

fn bias_vec(b: Option<&Tensor>, m: usize, what: &str) -> R<Option<Vec<f64>>> {
    match b {
        None => Ok(None),
        Some(b) => {
            if b.len() != m {
                return Err(format!(
                    "{what} bias has {} elements for {m} output channels",
                    b.len()
                ));
            }
            Ok(Some(b.to_f64_vec()))
        }
    }
}

/// Conv(X, W, B?).
pub fn conv(a: &ConvAttrs, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    let w = req(inputs, 1, "W")?;
    need_float(x, "Conv")?;
    if w.dtype() != x.dtype() {
        return Err(format!("Conv X is {} but W is {}", x.dtype(), w.dtype()));
    }
    let p = plan(&a.geom, a.group, x.shape(), w.shape())?;
    let bias = bias_vec(opt(inputs, 2), p.out_ch, "Conv")?;
    let out = conv_core(&x.to_f64_vec(), &w.to_f64_vec(), bias.as_deref(), &p);
    Ok(from_floats(x.dtype(), &p.out_shape(), &out))
}

/// ConvTranspose(X, W, B?).
pub fn conv_transpose(a: &ConvTransposeAttrs, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    let w = req(inputs, 1, "W")?;
    need_float(x, "ConvTranspose")?;
    if w.dtype() != x.dtype() {
        return Err(format!(
            "ConvTranspose X is {} but W is {}",
            x.dtype(),
            w.dtype()
        ));
    }
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "ConvTranspose input {xs:?} and weight {ws:?} must have the same rank >= 3"
        ));
    }
    let n = xs.len() - 2;
    let group = a.group;
    if group == 0 || xs[1] != ws[0] || xs[1] % group != 0 {
        return Err(format!(
            "ConvTranspose input has {} channels, weight {ws:?}, group {group}",
            xs[1]
        ));
    }
    let kernel: Vec<usize> = if a.geom.kernel_shape.is_empty() {
        ws[2..].to_vec()
    } else {
        a.geom.kernel_shape.clone()
    };
    if kernel != ws[2..] || kernel.contains(&0) {
        return Err(format!(
            "kernel_shape {kernel:?} does not match weight {ws:?}"
        ));
    }
    let in_sp = &xs[2..];
    if in_sp.contains(&0) {
        return Err("ConvTranspose input has an empty spatial axis".into());
    }
    let strides = or_ones(&a.geom.strides, n, "strides")?;
    let dil = or_ones(&a.geom.dilations, n, "dilations")?;
    let opad: Vec<usize> = if a.output_padding.is_empty() {
        vec![0; n]
    } else {
        a.output_padding.clone()
    };
    if opad.len() != n {
        return Err("output_padding does not match the spatial rank".into());
    }
    if !a.output_shape.is_empty() && a.output_shape.len() < n {
        return Err(format!(
            "output_shape {:?} has fewer than {n} entries",
            a.output_shape
        ));
    }
    if !a.geom.pads.is_empty() && a.geom.pads.len() != 2 * n {
        return Err("pads does not match the spatial rank".into());
    }
    let out_sp: Vec<usize> = conv_transpose_out(a, &kernel, in_sp)?
        .as_fixed()
        .ok_or("ConvTranspose output shape is not static")?;
    if out_sp.len() != n {
        return Err("output_shape does not match the spatial rank".into());
    }
    // Signed begin pads.
    let mut pb: Vec<i64> = vec![0; n];
    let split = !a.output_shape.is_empty()
        || matches!(a.geom.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    for i in 0..n {
        if split {
            let full =
                (strides[i] * (in_sp[i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1) as i64;
            let total = full - out_sp[i] as i64;
            pb[i] = if a.geom.auto_pad == AutoPad::SameUpper {
                total.div_euclid(2)
            } else {
                total - total.div_euclid(2)
            };
        } else if a.geom.auto_pad == AutoPad::NotSet && !a.geom.pads.is_empty() {
            if a.geom.pads.len() != 2 * n {
                return Err("pads does not match the spatial rank".into());
            }
            pb[i] = a.geom.pads[i] as i64;
        }
    }
    let m_per_g = ws[1];
    let out_ch = m_per_g * group;
    let cpg = xs[1] / group;
    let in_size: usize = in_sp.iter().product();
    let out_size: usize = out_sp.iter().product();
    let k_size: usize = kernel.iter().product();
    // (input position, tap) -> output offset or -1.
    let mut kidx: Vec<Vec<usize>> = vec![];
    for_each_index(&kernel, |_, k| kidx.push(k.to_vec()));
    let mut table: Vec<isize> = Vec::with_capacity(in_size * k_size);
    for_each_index(in_sp, |_, ip| {
        for k in &kidx {
            let mut off: isize = 0;
            let mut inside = true;
            for d in 0..n {
                let p = (ip[d] * strides[d] + k[d] * dil[d]) as i64 - pb[d];
                if p < 0 || p >= out_sp[d] as i64 {
                    inside = false;
                    break;
                }
                off = off * out_sp[d] as isize + p as isize;
            }
            table.push(if inside { off } else { -1 });
        }
    });
    let xv = x.to_f64_vec();
    let wv = w.to_f64_vec();
    let batch = xs[0];
    let mut out = vec![0.0f64; batch * out_ch * out_size];
    for b in 0..batch {
        for g in 0..group {
            for cc in 0..cpg {
                let c = g * cpg + cc;
                let xb = &xv[(b * xs[1] + c) * in_size..][..in_size];
                for mm in 0..m_per_g {
                    let m = g * m_per_g + mm;
                    let wb = &wv[(c * m_per_g + mm) * k_size..][..k_size];
                    let ob = &mut out[(b * out_ch + m) * out_size..][..out_size];
                    for (i, &xval) in xb.iter().enumerate() {
                        let taps = &table[i * k_size..(i + 1) * k_size];
                        for (&off, &wval) in taps.iter().zip(wb) {
                            if off >= 0 {
                                ob[off as usize] += xval * wval;
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(bias) = bias_vec(opt(inputs, 2), out_ch, "ConvTranspose")? {
        for (i, o) in out.iter_mut().enumerate() {
            *o += bias[(i / out_size) % out_ch];
        }
    }
    let mut shape = vec![batch, out_ch];
    shape.extend(&out_sp);
    Ok(from_floats(x.dtype(), &shape, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(pads: Vec<usize>, strides: Vec<usize>) -> ConvGeom {
        ConvGeom {
            kernel_shape: vec![],
            strides,
            pads,
            dilations: vec![],
            auto_pad: AutoPad::NotSet,
        }
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn conv_with_pads_and_strides() {
        // ONNX test_conv_with_strides_and_asymmetric_padding-like: 5x5 ones-kernel 3x3.
        let x = Tensor::from_vec(&[1, 1, 5, 5], (0..25).map(|v| v as f32).collect());
        let w = Tensor::from_vec(&[1, 1, 3, 3], vec![1.0f32; 9]);
        let a = ConvAttrs {
            geom: geom(vec![1, 1, 1, 1], vec![2, 2]),
            group: 1,
        };
        let y = conv(&a, &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(f32s(&y), [12., 27., 24., 63., 108., 81., 72., 117., 84.]);
        let a = ConvAttrs {
            geom: geom(vec![], vec![]),
            group: 1,
        };
        let y = conv(&a, &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(f32s(&y), [54., 63., 72., 99., 108., 117., 144., 153., 162.]);
    }

    #[test]
    fn conv_groups_and_bias() {
        // Depthwise 1-D: 2 channels, group 2, kernel 2.
        let x = Tensor::from_vec(&[1, 2, 3], vec![1.0f32, 2., 3., 10., 20., 30.]);
        let w = Tensor::from_vec(&[2, 1, 2], vec![1.0f32, 1., 1., -1.]);
        let b = Tensor::from_vec(&[2], vec![0.5f32, 0.0]);
        let a = ConvAttrs {
            geom: geom(vec![], vec![]),
            group: 2,
        };
        let y = conv(&a, &[Some(&x), Some(&w), Some(&b)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2]);
        assert_eq!(f32s(&y), [3.5, 5.5, -10., -10.]);
        let bad = ConvAttrs {
            geom: geom(vec![], vec![]),
            group: 3,
        };
        assert!(conv(&bad, &[Some(&x), Some(&w)]).is_err());
    }

    #[test]
    fn conv_transpose_same_upper_splits_pads() {
        // test_convtranspose_autopad_same: strides 2, SAME_UPPER -> 6x6, begin pad 0.
        let x = Tensor::from_vec(&[1, 1, 3, 3], (0..9).map(|v| v as f32).collect());
        let w = Tensor::from_vec(&[1, 2, 3, 3], vec![1.0f32; 18]);
        let mut g = geom(vec![], vec![2, 2]);
        g.auto_pad = AutoPad::SameUpper;
        let a = ConvTransposeAttrs {
            geom: g,
            group: 1,
            output_padding: vec![],
            output_shape: vec![],
        };
        let y = conv_transpose(&a, &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 6, 6]);
        assert_eq!(
            &f32s(&y)[..12],
            [0., 0., 1., 1., 3., 2., 0., 0., 1., 1., 3., 2.]
        );
        assert_eq!(&f32s(&y)[12..18], [3., 3., 8., 5., 12., 7.]);
        let bad = ConvTransposeAttrs {
            geom: geom(vec![], vec![]),
            group: 1,
            output_padding: vec![],
            output_shape: vec![4],
        };
        assert!(conv_transpose(&bad, &[Some(&x), Some(&w)]).is_err());
    }

    #[test]
    fn conv_transpose_matches_onnx_example() {
        // test_convtranspose_1d: x [1,1,3] = [0,1,2], W [1,2,3] ones.
        let x = Tensor::from_vec(&[1, 1, 3], vec![0.0f32, 1., 2.]);
        let w = Tensor::from_vec(&[1, 2, 3], vec![1.0f32; 6]);
        let a = ConvTransposeAttrs {
            geom: geom(vec![], vec![]),
            group: 1,
            output_padding: vec![],
            output_shape: vec![],
        };
        let y = conv_transpose(&a, &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 5]);
        assert_eq!(f32s(&y), [0., 1., 3., 3., 2., 0., 1., 3., 3., 2.]);
        // Strided with pads: test_convtranspose_pads (strides [3,2], pads [1,2,1,2]).
        let x = Tensor::from_vec(&[1, 1, 3, 3], (0..9).map(|v| v as f32).collect());
        let w = Tensor::from_vec(&[1, 2, 3, 3], vec![1.0f32; 18]);
        let a = ConvTransposeAttrs {
            geom: geom(vec![1, 2, 1, 2], vec![3, 2]),
            group: 1,
            output_padding: vec![],
            output_shape: vec![],
        };
        let y = conv_transpose(&a, &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 7, 3]);
        assert_eq!(
            &f32s(&y)[..21],
            [
                1., 1., 3., 1., 1., 3., 7., 4., 9., 7., 4., 9., 7., 4., 9., 13., 7., 15., 13., 7.,
                15.
            ]
        );
    }
}
