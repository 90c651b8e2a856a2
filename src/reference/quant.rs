//! Quantized ops, bit-exact where ONNX / onnxruntime are: QuantizeLinear (round half to even,
//! saturate, per-tensor or per-axis), DequantizeLinear, DynamicQuantizeLinear, the integer
//! products MatMulInteger / ConvInteger (exact i32), QLinearMatMul / QLinearConv / QGemm (exact
//! integer accumulation, then requantization as onnxruntime does it: `acc as f32 * multiplier`
//! with the multiplier computed in f32, round half to even, add the zero point, saturate), and the
//! com.microsoft QLinearGlobalAveragePool, QLinearAdd and QLinearMul.

use super::cast::{from_floats, from_ints, ints, round_half_even};
use super::conv::{conv_core, plan};
use super::matmul::{matmul_core, matrix};
use super::{opt, req, R};
use octet_ir::{BinaryOp, ConvAttrs, DType, Tensor};
use std::num::Wrapping;

/// Representable range of a quantized integer dtype.
fn qrange(dt: DType) -> R<(i64, i64)> {
    Ok(match dt {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        _ => return Err(format!("{dt} is not a quantized integer type")),
    })
}

fn need_q8(t: &Tensor, what: &str) -> R<()> {
    match t.dtype() {
        DType::U8 | DType::I8 => Ok(()),
        d => Err(format!("{what} must be u8 or i8, got {d}")),
    }
}

/// f32 values of a scale tensor.
fn scales(t: &Tensor, what: &str) -> R<Vec<f32>> {
    if !t.dtype().is_float() {
        return Err(format!("{what} must be a float tensor, got {}", t.dtype()));
    }
    if t.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(t.to_f64_vec().into_iter().map(|v| v as f32).collect())
}

/// Zero point values (0 when absent), checking the dtype matches `dt` when given.
fn zero_points(t: Option<&Tensor>, dt: Option<DType>, what: &str) -> R<Vec<i64>> {
    match t {
        None => Ok(vec![0]),
        Some(z) => {
            if let Some(d) = dt {
                if z.dtype() != d {
                    return Err(format!("{what} is {} but must be {d}", z.dtype()));
                }
            }
            if z.is_empty() {
                return Err(format!("{what} is empty"));
            }
            Ok(ints(z).into_iter().map(|v| v as i64).collect())
        }
    }
}

/// The (scale, zero point) operands at `slot` and `slot + 1` of a QLinear op, for the quantized
/// operand `data` (whose dtype the zero point must have); `name` is the operand's ONNX name.
fn qparams_at(
    inputs: &[Option<&Tensor>],
    slot: usize,
    data: &Tensor,
    name: &str,
) -> R<(Vec<f32>, Vec<i64>)> {
    let s_name = format!("{name}_scale");
    let z_name = format!("{name}_zero_point");
    let s = scales(req(inputs, slot, &s_name)?, &s_name)?;
    let z = zero_points(
        Some(req(inputs, slot + 1, &z_name)?),
        Some(data.dtype()),
        &z_name,
    )?;
    Ok((s, z))
}

/// Saturating requantization of an exact accumulator as onnxruntime does it.
fn requant(acc: i64, mult: f32, zp: i64, lo: i64, hi: i64) -> i128 {
    let v = (acc as f32 * mult).round_ties_even() as i64 + zp;
    v.clamp(lo, hi) as i128
}

/// Index into a per-tensor (1 element) or per-axis (len = shape[axis]) parameter for every
/// element of a tensor of `shape`.
fn per_axis_index(param_len: usize, shape: &[usize], axis: i64, what: &str) -> R<Vec<usize>> {
    let n: usize = shape.iter().product();
    if param_len == 1 {
        return Ok(vec![0; n]);
    }
    let a = octet_ir::infer::norm_axis(axis, shape.len())?;
    if shape.get(a) != Some(&param_len) {
        return Err(format!(
            "{what} has {param_len} elements but axis {axis} of {shape:?} has {:?}",
            shape.get(a)
        ));
    }
    let inner: usize = shape[a + 1..].iter().product();
    Ok((0..n).map(|i| (i / inner) % param_len).collect())
}

/// QuantizeLinear(x, y_scale, y_zero_point?).
pub fn quantize_linear(
    axis: i64,
    out_dtype: Option<DType>,
    inputs: &[Option<&Tensor>],
) -> R<Tensor> {
    let x = req(inputs, 0, "x")?;
    let s = scales(req(inputs, 1, "y_scale")?, "y_scale")?;
    let zt = opt(inputs, 2);
    let dt = match zt {
        Some(z) => z.dtype(),
        None => out_dtype.unwrap_or(DType::U8),
    };
    let (lo, hi) = qrange(dt)?;
    if dt == DType::I32 {
        return Err("QuantizeLinear to i32 is not supported".into());
    }
    if !(x.dtype().is_float() || x.dtype() == DType::I32) {
        return Err(format!(
            "QuantizeLinear x must be float or i32, got {}",
            x.dtype()
        ));
    }
    let zp = match zt {
        Some(_) => zero_points(zt, None, "y_zero_point")?,
        None => vec![0; s.len()],
    };
    if zp.len() != s.len() {
        return Err(format!(
            "y_scale has {} elements but y_zero_point has {}",
            s.len(),
            zp.len()
        ));
    }
    let pi = per_axis_index(s.len(), x.shape(), axis, "y_scale")?;
    let xv = x.to_f64_vec();
    let out: Vec<i128> = xv
        .iter()
        .zip(&pi)
        .map(|(&v, &p)| {
            let q = ((v as f32) / s[p]).round_ties_even() as f64 + zp[p] as f64;
            q.clamp(lo as f64, hi as f64) as i128
        })
        .collect();
    Ok(from_ints(dt, x.shape(), &out))
}

/// DequantizeLinear(x, x_scale, x_zero_point?).
pub fn dequantize_linear(axis: i64, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "x")?;
    let st = req(inputs, 1, "x_scale")?;
    let s = scales(st, "x_scale")?;
    qrange(x.dtype())?;
    let zp = zero_points(opt(inputs, 2), Some(x.dtype()), "x_zero_point")?;
    if opt(inputs, 2).is_some() && zp.len() != s.len() {
        return Err(format!(
            "x_scale has {} elements but x_zero_point has {}",
            s.len(),
            zp.len()
        ));
    }
    let pi = per_axis_index(s.len(), x.shape(), axis, "x_scale")?;
    let out: Vec<f64> = ints(x)
        .iter()
        .zip(&pi)
        .map(|(&v, &p)| {
            let z = if zp.len() == 1 { zp[0] } else { zp[p] };
            ((v as i64 - z) as f32 * s[p]) as f64
        })
        .collect();
    Ok(from_floats(st.dtype(), x.shape(), &out))
}

/// DynamicQuantizeLinear(x) -> (y u8, y_scale f32, y_zero_point u8).
pub fn dynamic_quantize_linear(x: &Tensor) -> R<Vec<Tensor>> {
    if x.dtype() != DType::F32 {
        return Err(format!(
            "DynamicQuantizeLinear needs f32, got {}",
            x.dtype()
        ));
    }
    let v = x.view::<f32>().map_err(|e| e.to_string())?;
    let min = v.iter().cloned().fold(0.0f32, f32::min);
    let max = v.iter().cloned().fold(0.0f32, f32::max);
    // All-zero input: onnxruntime uses scale 1 (avoids 0/0).
    let scale = if max == min { 1.0 } else { (max - min) / 255.0 };
    let zp = round_half_even(((0.0 - min / scale) as f64).clamp(0.0, 255.0)) as i64;
    let y: Vec<u8> = v
        .iter()
        .map(|&x| ((x / scale).round_ties_even() as i64 + zp).clamp(0, 255) as u8)
        .collect();
    Ok(vec![
        Tensor::from_vec(x.shape(), y),
        Tensor::scalar(scale),
        Tensor::scalar(zp as u8),
    ])
}

/// Row / column index of every element of a matmul output of shape `out_shape`, viewing it as
/// [.., M, N] (1-D operands drop their axis, which then has extent 1).
fn row_col(flat: usize, m: usize, n: usize) -> (usize, usize) {
    ((flat / n) % m, flat % n)
}

fn mn(a: &[usize], b: &[usize]) -> (usize, usize, usize) {
    let m = if a.len() >= 2 { a[a.len() - 2] } else { 1 };
    let k = a.last().copied().unwrap_or(1);
    let n = if b.len() >= 2 { b[b.len() - 1] } else { 1 };
    (m, k, n)
}

/// A's values minus per-tensor or per-row zero points, and B's minus per-tensor or per-column.
fn centered(
    a: &Tensor,
    azp: &[i64],
    b: &Tensor,
    bzp: &[i64],
) -> R<(Vec<Wrapping<i64>>, Vec<Wrapping<i64>>)> {
    let (m, k, n) = mn(a.shape(), b.shape());
    if azp.len() != 1 && azp.len() != m {
        return Err(format!(
            "a zero point has {} elements for {m} rows",
            azp.len()
        ));
    }
    if bzp.len() != 1 && bzp.len() != n {
        return Err(format!(
            "b zero point has {} elements for {n} columns",
            bzp.len()
        ));
    }
    let av = ints(a)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let z = if azp.len() == 1 {
                azp[0]
            } else {
                azp[(i / k.max(1)) % m]
            };
            Wrapping(v as i64 - z)
        })
        .collect();
    let bv = ints(b)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let z = if bzp.len() == 1 { bzp[0] } else { bzp[i % n] };
            Wrapping(v as i64 - z)
        })
        .collect();
    Ok((av, bv))
}

/// MatMulInteger(A, B, a_zero_point?, b_zero_point?) -> i32.
pub fn matmul_integer(inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let a = req(inputs, 0, "A")?;
    let b = req(inputs, 1, "B")?;
    need_q8(a, "MatMulInteger A")?;
    need_q8(b, "MatMulInteger B")?;
    let azp = zero_points(opt(inputs, 2), Some(a.dtype()), "a_zero_point")?;
    let bzp = zero_points(opt(inputs, 3), Some(b.dtype()), "b_zero_point")?;
    let (av, bv) = centered(a, &azp, b, &bzp)?;
    let (acc, shape) = matmul_core(&av, a.shape(), &bv, b.shape())?;
    let out: Vec<i128> = acc.iter().map(|v| v.0 as i128).collect();
    Ok(from_ints(DType::I32, &shape, &out))
}

/// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp).
pub fn qlinear_matmul(inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let a = req(inputs, 0, "a")?;
    let b = req(inputs, 3, "b")?;
    need_q8(a, "QLinearMatMul a")?;
    need_q8(b, "QLinearMatMul b")?;
    let (a_s, azp) = qparams_at(inputs, 1, a, "a")?;
    let (b_s, bzp) = qparams_at(inputs, 4, b, "b")?;
    let y_s = scales(req(inputs, 6, "y_scale")?, "y_scale")?;
    let yz = req(inputs, 7, "y_zero_point")?;
    let yzp = zero_points(Some(yz), None, "y_zero_point")?;
    let (lo, hi) = qrange(yz.dtype())?;
    let (m, _, n) = mn(a.shape(), b.shape());
    for (len, what, ext) in [
        (a_s.len(), "a_scale", m),
        (b_s.len(), "b_scale", n),
        (y_s.len(), "y_scale", m),
        (yzp.len(), "y_zero_point", m),
    ] {
        if len != 1 && len != ext {
            return Err(format!("{what} has {len} elements, expected 1 or {ext}"));
        }
    }
    let (av, bv) = centered(a, &azp, b, &bzp)?;
    let (acc, shape) = matmul_core(&av, a.shape(), &bv, b.shape())?;
    let pick = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let out: Vec<i128> = acc
        .iter()
        .enumerate()
        .map(|(f, v)| {
            let (r, c) = row_col(f, m, n);
            let mult = pick(&a_s, r) * pick(&b_s, c) / pick(&y_s, r);
            let z = if yzp.len() == 1 { yzp[0] } else { yzp[r] };
            requant(v.0, mult, z, lo, hi)
        })
        .collect();
    Ok(from_ints(yz.dtype(), &shape, &out))
}

/// Shared integer convolution: returns (exact accumulators, output shape, out channels).
fn int_conv(
    a: &ConvAttrs,
    x: &Tensor,
    xzp: &[i64],
    w: &Tensor,
    wzp: &[i64],
) -> R<(Vec<Wrapping<i64>>, Vec<usize>, usize, usize)> {
    need_q8(x, "conv input")?;
    need_q8(w, "conv weight")?;
    let p = plan(&a.geom, a.group, x.shape(), w.shape())?;
    if xzp.len() != 1 {
        return Err("x zero point must be a scalar".into());
    }
    if wzp.len() != 1 && wzp.len() != p.out_ch {
        return Err(format!(
            "w zero point has {} elements for {} output channels",
            wzp.len(),
            p.out_ch
        ));
    }
    let xv: Vec<Wrapping<i64>> = ints(x)
        .iter()
        .map(|&v| Wrapping(v as i64 - xzp[0]))
        .collect();
    let per_m = w.len() / p.out_ch.max(1);
    let wv: Vec<Wrapping<i64>> = ints(w)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let z = if wzp.len() == 1 {
                wzp[0]
            } else {
                wzp[i / per_m]
            };
            Wrapping(v as i64 - z)
        })
        .collect();
    let acc = conv_core(&xv, &wv, None, &p);
    Ok((acc, p.out_shape(), p.out_ch, p.out_size))
}

/// ConvInteger(x, w, x_zero_point?, w_zero_point?) -> i32.
pub fn conv_integer(a: &ConvAttrs, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "x")?;
    let w = req(inputs, 1, "w")?;
    let xzp = zero_points(opt(inputs, 2), Some(x.dtype()), "x_zero_point")?;
    let wzp = zero_points(opt(inputs, 3), Some(w.dtype()), "w_zero_point")?;
    let (acc, shape, _, _) = int_conv(a, x, &xzp, w, &wzp)?;
    let out: Vec<i128> = acc.iter().map(|v| v.0 as i128).collect();
    Ok(from_ints(DType::I32, &shape, &out))
}

/// QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?).
pub fn qlinear_conv(a: &ConvAttrs, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "x")?;
    let w = req(inputs, 3, "w")?;
    let (x_s, xzp) = qparams_at(inputs, 1, x, "x")?;
    let (w_s, wzp) = qparams_at(inputs, 4, w, "w")?;
    let y_s = scales(req(inputs, 6, "y_scale")?, "y_scale")?;
    let yz = req(inputs, 7, "y_zero_point")?;
    let yzp = zero_points(Some(yz), None, "y_zero_point")?;
    let (lo, hi) = qrange(yz.dtype())?;
    if x_s.len() != 1 || y_s.len() != 1 || yzp.len() != 1 {
        return Err("x_scale, y_scale and y_zero_point must be scalars".into());
    }
    let (acc, shape, m, out_size) = int_conv(a, x, &xzp, w, &wzp)?;
    if w_s.len() != 1 && w_s.len() != m {
        return Err(format!(
            "w_scale has {} elements for {m} channels",
            w_s.len()
        ));
    }
    let bias: Option<Vec<i64>> = match opt(inputs, 8) {
        None => None,
        Some(b) => {
            if b.dtype() != DType::I32 || b.len() != m {
                return Err(format!(
                    "bias must be i32 with {m} elements, got {} {:?}",
                    b.dtype(),
                    b.shape()
                ));
            }
            Some(ints(b).into_iter().map(|v| v as i64).collect())
        }
    };
    let out: Vec<i128> = acc
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / out_size.max(1)) % m;
            let ws = if w_s.len() == 1 { w_s[0] } else { w_s[ch] };
            let mult = x_s[0] * ws / y_s[0];
            let total = v.0 + bias.as_ref().map_or(0, |b| b[ch]);
            requant(total, mult, yzp[0], lo, hi)
        })
        .collect();
    Ok(from_ints(yz.dtype(), &shape, &out))
}

/// com.microsoft QLinearGlobalAveragePool(X, x_scale, x_zp, y_scale, y_zp): integer sum, then
/// requantize with multiplier x_scale / (y_scale * count) as onnxruntime.
pub fn qlinear_global_average_pool(channels_last: bool, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = req(inputs, 0, "X")?;
    need_q8(x, "QLinearGlobalAveragePool X")?;
    let (x_s, xzp) = qparams_at(inputs, 1, x, "x")?;
    let y_s = scales(req(inputs, 3, "y_scale")?, "y_scale")?;
    let yz = req(inputs, 4, "y_zero_point")?;
    let yzp = zero_points(Some(yz), None, "y_zero_point")?;
    let (lo, hi) = qrange(yz.dtype())?;
    if [x_s.len(), xzp.len(), y_s.len(), yzp.len()] != [1, 1, 1, 1] {
        return Err("QLinearGlobalAveragePool parameters must be scalars".into());
    }
    let xs = x.shape();
    let r = xs.len();
    if r < 3 {
        return Err(format!(
            "QLinearGlobalAveragePool needs rank >= 3, got {xs:?}"
        ));
    }
    let (n, c) = if channels_last {
        (xs[0], xs[r - 1])
    } else {
        (xs[0], xs[1])
    };
    let count: usize = if channels_last {
        xs[1..r - 1].iter().product()
    } else {
        xs[2..].iter().product()
    };
    let v = ints(x);
    let mult = x_s[0] / (y_s[0] * count as f32);
    let mut out = vec![0i128; n * c];
    for b in 0..n {
        for ch in 0..c {
            let mut s: i64 = 0;
            for p in 0..count {
                let i = if channels_last {
                    (b * count + p) * c + ch
                } else {
                    (b * c + ch) * count + p
                };
                s += v[i] as i64 - xzp[0];
            }
            out[b * c + ch] = requant(s, mult, yzp[0], lo, hi);
        }
    }
    let shape: Vec<usize> = (0..r)
        .map(|i| {
            let keep = if channels_last {
                i == 0 || i == r - 1
            } else {
                i < 2
            };
            if keep {
                xs[i]
            } else {
                1
            }
        })
        .collect();
    Ok(from_ints(yz.dtype(), &shape, &out))
}

/// com.microsoft QGemm(A, a_scale, a_zp, B, b_scale, b_zp, C?, y_scale?, y_zp?).
/// Real result = alpha * a_scale * b_scale[n] * (sum (A-a_zp)(B-b_zp) + C): C is an i32 bias
/// whose scale is alpha * a_scale * b_scale. Requantized when y_scale is given, else f32.
pub fn qgemm(alpha: f32, trans_a: bool, trans_b: bool, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let a = req(inputs, 0, "A")?;
    let b = req(inputs, 3, "B")?;
    need_q8(a, "QGemm A")?;
    need_q8(b, "QGemm B")?;
    let (a_s, azp) = qparams_at(inputs, 1, a, "a")?;
    let (b_s, bzp) = qparams_at(inputs, 4, b, "b")?;
    if a_s.len() != 1 || azp.len() != 1 {
        return Err("QGemm a_scale and a_zero_point must be scalars".into());
    }
    let ai: Vec<i64> = ints(a).iter().map(|&v| v as i64).collect();
    let bi: Vec<i64> = ints(b).iter().map(|&v| v as i64).collect();
    let (m, k, am) = matrix(&ai, a.shape(), trans_a)?;
    let (kb, n, bm) = matrix(&bi, b.shape(), trans_b)?;
    if k != kb {
        return Err(format!("QGemm inner dimensions differ: {k} vs {kb}"));
    }
    for (len, what) in [(b_s.len(), "b_scale"), (bzp.len(), "b_zero_point")] {
        if len != 1 && len != n {
            return Err(format!("{what} has {len} elements, expected 1 or {n}"));
        }
    }
    let pick_i = |v: &[i64], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    let pick_f = |v: &[f32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    let av: Vec<Wrapping<i64>> = am.iter().map(|&v| Wrapping(v - azp[0])).collect();
    let bv: Vec<Wrapping<i64>> = bm
        .iter()
        .enumerate()
        .map(|(i, &v)| Wrapping(v - pick_i(&bzp, i % n)))
        .collect();
    let (acc, _) = matmul_core(&av, &[m, k], &bv, &[k, n])?;
    let c: Option<Vec<i64>> = match opt(inputs, 6) {
        None => None,
        Some(c) => {
            if c.dtype() != DType::I32 {
                return Err(format!("QGemm C must be i32, got {}", c.dtype()));
            }
            let map = super::broadcast::broadcast_map(c.shape(), &[m, n])
                .map_err(|_| format!("QGemm C {:?} does not broadcast to [{m}, {n}]", c.shape()))?;
            let cv = ints(c);
            Some(map.into_iter().map(|i| cv[i] as i64).collect())
        }
    };
    let total = |i: usize| acc[i].0 + c.as_ref().map_or(0, |c| c[i]);
    match opt(inputs, 7) {
        Some(ys) => {
            let y_s = scales(ys, "y_scale")?;
            let yz = opt(inputs, 8);
            let dt = yz.map_or(DType::U8, |z| z.dtype());
            let yzp = zero_points(yz, None, "y_zero_point")?;
            if y_s.len() != 1 || yzp.len() != 1 {
                return Err("QGemm y_scale and y_zero_point must be scalars".into());
            }
            let (lo, hi) = qrange(dt)?;
            let out: Vec<i128> = (0..m * n)
                .map(|i| {
                    let mult = alpha * a_s[0] * pick_f(&b_s, i % n) / y_s[0];
                    requant(total(i), mult, yzp[0], lo, hi)
                })
                .collect();
            Ok(from_ints(dt, &[m, n], &out))
        }
        None => {
            let out: Vec<f32> = (0..m * n)
                .map(|i| total(i) as f32 * (alpha * a_s[0] * pick_f(&b_s, i % n)))
                .collect();
            Ok(Tensor::from_vec(&[m, n], out))
        }
    }
}

/// com.microsoft QLinearAdd / QLinearMul: dequantize both, op in f32, requantize.
pub fn qlinear_binary(op: BinaryOp, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let a = req(inputs, 0, "A")?;
    let b = req(inputs, 3, "B")?;
    need_q8(a, "A")?;
    if b.dtype() != a.dtype() {
        return Err(format!("A is {} but B is {}", a.dtype(), b.dtype()));
    }
    let a_s = scales(req(inputs, 1, "A_scale")?, "A_scale")?;
    let azp = zero_points(opt(inputs, 2), Some(a.dtype()), "A_zero_point")?;
    let b_s = scales(req(inputs, 4, "B_scale")?, "B_scale")?;
    let bzp = zero_points(opt(inputs, 5), Some(b.dtype()), "B_zero_point")?;
    let c_s = scales(req(inputs, 6, "C_scale")?, "C_scale")?;
    let czp = zero_points(opt(inputs, 7), Some(a.dtype()), "C_zero_point")?;
    if [
        a_s.len(),
        azp.len(),
        b_s.len(),
        bzp.len(),
        c_s.len(),
        czp.len(),
    ] != [1; 6]
    {
        return Err("QLinear binary parameters must be scalars".into());
    }
    let (lo, hi) = qrange(a.dtype())?;
    let (av, bv) = (ints(a), ints(b));
    let (out, shape) =
        super::broadcast::zip_broadcast(&av, a.shape(), &bv, b.shape(), |x: i128, y: i128| {
            let xa = (x as i64 - azp[0]) as f32 * a_s[0];
            let yb = (y as i64 - bzp[0]) as f32 * b_s[0];
            let r = match op {
                BinaryOp::Add => xa + yb,
                BinaryOp::Mul => xa * yb,
                o => return Err(format!("QLinear binary op {o:?} is not supported")),
            };
            let q = (r / c_s[0]).round_ties_even() as i64 + czp[0];
            Ok(q.clamp(lo, hi) as i128)
        })?;
    Ok(from_ints(a.dtype(), &shape, &out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::{AutoPad, ConvGeom};

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = Tensor::from_vec(&[6], vec![2.5f32, 3.5, -2.5, 1000.0, -1000.0, 0.4]);
        let s = Tensor::scalar(1.0f32);
        let z = Tensor::scalar(0u8);
        let q = quantize_linear(1, None, &[Some(&x), Some(&s), Some(&z)]).unwrap();
        assert_eq!(q.view::<u8>().unwrap(), &[2, 4, 0, 255, 0, 0]);
        let z = Tensor::scalar(0i8);
        let q = quantize_linear(1, None, &[Some(&x), Some(&s), Some(&z)]).unwrap();
        assert_eq!(q.view::<i8>().unwrap(), &[2, 4, -2, 127, -128, 0]);
        // Per-axis.
        let x = Tensor::from_vec(&[2, 2], vec![1.0f32, 1.0, 1.0, 1.0]);
        let s = Tensor::from_vec(&[2], vec![0.5f32, 0.25]);
        let z = Tensor::from_vec(&[2], vec![10u8, 20]);
        let q = quantize_linear(0, None, &[Some(&x), Some(&s), Some(&z)]).unwrap();
        assert_eq!(q.view::<u8>().unwrap(), &[12, 12, 24, 24]);
        let q0 = quantize_linear(
            1,
            Some(DType::I8),
            &[Some(&x), Some(&Tensor::from_vec(&[2], vec![0.5f32, 0.25]))],
        )
        .unwrap();
        assert_eq!(q0.view::<i8>().unwrap(), &[2, 4, 2, 4]);
        let d = dequantize_linear(0, &[Some(&q), Some(&s), Some(&z)]).unwrap();
        assert_eq!(d.view::<f32>().unwrap(), &[1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn dynamic_quantize_follows_spec() {
        // ONNX test_dynamicquantizelinear: [0, 2, -3, -2.5, 1.34, 0.5].
        let x = Tensor::from_vec(&[6], vec![0.0f32, 2., -3., -2.5, 1.34, 0.5]);
        let o = dynamic_quantize_linear(&x).unwrap();
        assert_eq!(o[0].view::<u8>().unwrap(), &[153, 255, 0, 26, 221, 179]);
        assert!((o[1].view::<f32>().unwrap()[0] - 0.019_607_844).abs() < 1e-9);
        assert_eq!(o[2].view::<u8>().unwrap(), &[153]);
    }

    #[test]
    fn qlinear_matmul_is_exact() {
        // ONNX test_qlinearmatmul_2D_uint8_float32.
        let a = Tensor::from_vec(&[2, 4], vec![208u8, 236, 0, 238, 3, 214, 255, 29]);
        let b = Tensor::from_vec(
            &[4, 3],
            vec![152u8, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247],
        );
        let out = qlinear_matmul(&[
            Some(&a),
            Some(&Tensor::scalar(0.0066f32)),
            Some(&Tensor::scalar(113u8)),
            Some(&b),
            Some(&Tensor::scalar(0.00705f32)),
            Some(&Tensor::scalar(114u8)),
            Some(&Tensor::scalar(0.0107f32)),
            Some(&Tensor::scalar(118u8)),
        ])
        .unwrap();
        assert_eq!(out.view::<u8>().unwrap(), &[168, 115, 255, 1, 66, 151]);
        let mi = matmul_integer(&[
            Some(&Tensor::from_vec(&[1, 2], vec![11u8, 7])),
            Some(&Tensor::from_vec(&[2, 1], vec![1u8, 2])),
            Some(&Tensor::scalar(12u8)),
            Some(&Tensor::scalar(0u8)),
        ])
        .unwrap();
        assert_eq!(mi.view::<i32>().unwrap(), &[-11]);
    }

    #[test]
    fn qlinear_conv_and_conv_integer() {
        let geom = ConvGeom {
            kernel_shape: vec![],
            strides: vec![],
            pads: vec![1, 1, 1, 1],
            dilations: vec![],
            auto_pad: AutoPad::NotSet,
        };
        let a = ConvAttrs { geom, group: 1 };
        // ONNX test_convinteger_with_padding: x = 2..10 (3x3), w ones 2x2, x_zp 1.
        let x = Tensor::from_vec(&[1, 1, 3, 3], (2u8..11).collect::<Vec<_>>());
        let w = Tensor::from_vec(&[1, 1, 2, 2], vec![1u8; 4]);
        let y = conv_integer(&a, &[Some(&x), Some(&w), Some(&Tensor::scalar(1u8))]).unwrap();
        assert_eq!(
            y.view::<i32>().unwrap(),
            &[1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]
        );
        // QLinearConv with unit scales equals ConvInteger plus zero point, saturated.
        let q = qlinear_conv(
            &a,
            &[
                Some(&x),
                Some(&Tensor::scalar(1.0f32)),
                Some(&Tensor::scalar(1u8)),
                Some(&w),
                Some(&Tensor::scalar(0.5f32)),
                Some(&Tensor::scalar(0u8)),
                Some(&Tensor::scalar(1.0f32)),
                Some(&Tensor::scalar(10u8)),
                Some(&Tensor::from_vec(&[1], vec![1i32])),
            ],
        )
        .unwrap();
        // (acc + 1) * 0.5 rounded half-even + 10.
        assert_eq!(&q.view::<u8>().unwrap()[..4], &[11, 12, 13, 12]);
    }

    #[test]
    fn qlinear_binary_and_global_pool() {
        let a = Tensor::from_vec(&[2], vec![10u8, 20]);
        let b = Tensor::from_vec(&[1], vec![4u8]);
        let s = Tensor::scalar(0.5f32);
        let z = Tensor::scalar(0u8);
        let y = qlinear_binary(
            BinaryOp::Add,
            &[
                Some(&a),
                Some(&s),
                Some(&z),
                Some(&b),
                Some(&s),
                Some(&z),
                Some(&s),
                Some(&z),
            ],
        )
        .unwrap();
        assert_eq!(y.view::<u8>().unwrap(), &[14, 24]);
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1u8, 2, 3, 5]);
        let y =
            qlinear_global_average_pool(false, &[Some(&x), Some(&s), Some(&z), Some(&s), Some(&z)])
                .unwrap();
        // mean 2.75 -> 3 (round half even of 2.75).
        assert_eq!(y.view::<u8>().unwrap(), &[3]);
        assert_eq!(y.shape(), &[1, 1, 1, 1]);
    }

    #[test]
    fn qgemm_float_and_quantized_outputs() {
        let a = Tensor::from_vec(&[1, 2], vec![3u8, 5]);
        let b = Tensor::from_vec(&[2, 1], vec![2u8, 4]);
        let s = Tensor::scalar(0.5f32);
        let z = Tensor::scalar(1u8);
        let c = Tensor::from_vec(&[1], vec![4i32]);
        // acc = (2)(1) + (4)(3) = 14; + C = 18; real = 18 * 0.25 = 4.5.
        let y = qgemm(
            1.0,
            false,
            false,
            &[
                Some(&a),
                Some(&s),
                Some(&z),
                Some(&b),
                Some(&s),
                Some(&z),
                Some(&c),
            ],
        )
        .unwrap();
        assert_eq!(y.view::<f32>().unwrap(), &[4.5]);
        let y = qgemm(
            1.0,
            false,
            false,
            &[
                Some(&a),
                Some(&s),
                Some(&z),
                Some(&b),
                Some(&s),
                Some(&z),
                Some(&c),
                Some(&Tensor::scalar(1.0f32)),
                Some(&Tensor::scalar(0u8)),
            ],
        )
        .unwrap();
        assert_eq!(y.view::<u8>().unwrap(), &[4]);
    }
}
