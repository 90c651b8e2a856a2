//! Reductions and orderings along axes: the Reduce* family (axes operand, keepdims,
//! noop_with_empty_axes), ArgMax / ArgMin (select_last_index), TopK (ties: smaller index first)
//! and CumSum (exclusive, reverse). Floats in f64; integers exact in i128.

use super::broadcast::{for_each_index, gather_raw, strides};
use super::cast::{from_floats, from_ints, ints};
use super::R;
use octet_ir::infer::norm_axis;
use octet_ir::{DType, ReduceOp, Tensor};
use std::cmp::Ordering;

/// Group the elements of `shape` by their position with `axes` zeroed: returns, for each
/// output element (in keepdims row-major order), the flat input indices reduced into it.
fn groups(shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let ks = strides(&kept);
    let n: usize = kept.iter().product();
    let mut g: Vec<Vec<usize>> = vec![vec![]; n];
    for_each_index(shape, |flat, idx| {
        let o: usize = idx
            .iter()
            .enumerate()
            .map(|(d, &i)| if axes.contains(&d) { 0 } else { i * ks[d] })
            .sum();
        g[o].push(flat);
    });
    (kept, g)
}

/// Reduce{Mean,Sum,Max,Min,Prod,SumSquare,L1,L2,LogSum,LogSumExp}.
pub fn reduce(
    op: ReduceOp,
    x: &Tensor,
    axes: Option<&Tensor>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> R<Tensor> {
    let r = x.rank();
    let mut ax: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => {
            if a.dtype().is_float() {
                return Err("reduce axes must be integers".into());
            }
            a.to_i64_vec()
                .iter()
                .map(|&v| norm_axis(v, r))
                .collect::<R<_>>()?
        }
        _ => vec![],
    };
    if ax.is_empty() {
        if noop_with_empty_axes {
            return Ok(x.clone());
        }
        ax = (0..r).collect();
    }
    if x.dtype() == DType::Bool {
        // ReduceMax/ReduceMin on bool (opset 20) are logical or/and: reduce as u8, view as bool.
        if !matches!(op, ReduceOp::Max | ReduceOp::Min) {
            return Err(format!("{op:?} does not accept bool"));
        }
        let as_u8 = Tensor::from_raw(DType::U8, x.shape(), x.bytes()).ok_or("bool tensor size")?;
        let r = reduce(op, &as_u8, axes, keepdims, noop_with_empty_axes)?;
        let bools: Vec<bool> = r
            .view::<u8>()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|&b| b != 0)
            .collect();
        return Ok(Tensor::from_bools(r.shape(), &bools));
    }
    let (kept, g) = groups(x.shape(), &ax);
    let out_shape: Vec<usize> = if keepdims {
        kept
    } else {
        (0..r)
            .filter(|i| !ax.contains(i))
            .map(|i| x.shape()[i])
            .collect()
    };
    use ReduceOp::*;
    let exact_int =
        !x.dtype().is_float() && matches!(op, Sum | Max | Min | Prod | SumSquare | L1 | Mean);
    if exact_int {
        let v = ints(x);
        let out: Vec<i128> = g
            .iter()
            .map(|idx| {
                let it = idx.iter().map(|&i| v[i]);
                match op {
                    Sum => it.fold(0i128, |a, b| a.wrapping_add(b)),
                    Mean => {
                        let s = it.fold(0i128, |a, b| a.wrapping_add(b));
                        if idx.is_empty() {
                            0
                        } else {
                            s / idx.len() as i128
                        }
                    }
                    Prod => it.fold(1i128, |a, b| a.wrapping_mul(b)),
                    Max => it.max().unwrap_or(i128::MIN),
                    Min => it.min().unwrap_or(i128::MAX),
                    SumSquare => it.fold(0i128, |a, b| a.wrapping_add(b.wrapping_mul(b))),
                    _ => it.fold(0i128, |a, b| a.wrapping_add(b.abs())),
                }
            })
            .collect();
        return Ok(from_ints(x.dtype(), &out_shape, &out));
    }
    let v = x.to_f64_vec();
    let out: Vec<f64> = g
        .iter()
        .map(|idx| {
            let vals = idx.iter().map(|&i| v[i]);
            match op {
                Sum => vals.sum(),
                Mean => vals.sum::<f64>() / idx.len() as f64,
                Prod => vals.product(),
                Max => vals.fold(
                    f64::NEG_INFINITY,
                    |a, b| if b > a || b.is_nan() { b } else { a },
                ),
                Min => vals.fold(
                    f64::INFINITY,
                    |a, b| if b < a || b.is_nan() { b } else { a },
                ),
                SumSquare => vals.map(|x| x * x).sum(),
                L1 => vals.map(f64::abs).sum(),
                L2 => vals.map(|x| x * x).sum::<f64>().sqrt(),
                LogSum => vals.sum::<f64>().ln(),
                LogSumExp => {
                    let m = idx.iter().map(|&i| v[i]).fold(f64::NEG_INFINITY, f64::max);
                    if m.is_infinite() {
                        vals.map(f64::exp).sum::<f64>().ln()
                    } else {
                        m + vals.map(|x| (x - m).exp()).sum::<f64>().ln()
                    }
                }
            }
        })
        .collect();
    Ok(from_floats(x.dtype(), &out_shape, &out))
}

/// Comparable keys of a tensor: f64 for floats, exact i128 for integers.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Key {
    F(f64),
    I(i128),
}

fn keys(x: &Tensor) -> Vec<Key> {
    if x.dtype().is_float() {
        x.to_f64_vec().into_iter().map(Key::F).collect()
    } else {
        ints(x).into_iter().map(Key::I).collect()
    }
}

fn cmp_keys(a: Key, b: Key) -> Ordering {
    match (a, b) {
        (Key::F(x), Key::F(y)) => x.partial_cmp(&y).unwrap_or_else(|| {
            // NaN sorts as the largest value.
            x.is_nan().cmp(&y.is_nan())
        }),
        (Key::I(x), Key::I(y)) => x.cmp(&y),
        _ => Ordering::Equal,
    }
}

/// (outer, len, inner) of `shape` split at axis `a`.
fn split_at(shape: &[usize], a: usize) -> (usize, usize, usize) {
    (
        shape[..a].iter().product(),
        shape[a],
        shape[a + 1..].iter().product(),
    )
}

/// ArgMax (`max`) / ArgMin.
pub fn arg_ext(x: &Tensor, axis: i64, keepdims: bool, last: bool, max: bool) -> R<Tensor> {
    if x.dtype() == DType::Bool {
        return Err("ArgMax/ArgMin do not accept bool".into());
    }
    let s = x.shape();
    let a = norm_axis(axis, s.len())?;
    if s.is_empty() {
        return Err("ArgMax/ArgMin need rank >= 1".into());
    }
    let (outer, len, inner) = split_at(s, a);
    if len == 0 {
        return Err("ArgMax/ArgMin over an empty axis".into());
    }
    let k = keys(x);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for j in 1..len {
                let c = cmp_keys(
                    k[(o * len + j) * inner + i],
                    k[(o * len + best) * inner + i],
                );
                let better = if max {
                    c == Ordering::Greater
                } else {
                    c == Ordering::Less
                };
                if better || (last && c == Ordering::Equal) {
                    best = j;
                }
            }
            out.push(best as i64);
        }
    }
    let mut shape = s.to_vec();
    if keepdims {
        shape[a] = 1;
    } else {
        shape.remove(a);
    }
    Ok(Tensor::from_vec(&shape, out))
}

/// TopK(X, K) -> (values, indices), sorted; ties keep the smaller index first.
pub fn top_k(x: &Tensor, k: &Tensor, axis: i64, largest: bool, _sorted: bool) -> R<Vec<Tensor>> {
    let s = x.shape();
    let a = norm_axis(axis, s.len())?;
    if s.is_empty() {
        return Err("TopK needs rank >= 1".into());
    }
    if k.len() != 1 || k.dtype().is_float() {
        return Err("TopK K must be a one-element integer tensor".into());
    }
    let kk = k.to_i64_vec()[0];
    let (outer, len, inner) = split_at(s, a);
    if kk < 0 || kk as usize > len {
        return Err(format!("TopK k = {kk} out of range for axis extent {len}"));
    }
    let kk = kk as usize;
    let keys = keys(x);
    let mut map = Vec::with_capacity(outer * kk * inner);
    let mut idx_out = vec![0i64; outer * kk * inner];
    for o in 0..outer {
        for i in 0..inner {
            let mut order: Vec<usize> = (0..len).collect();
            order.sort_by(|&p, &q| {
                let c = cmp_keys(
                    keys[(o * len + p) * inner + i],
                    keys[(o * len + q) * inner + i],
                );
                let c = if largest { c.reverse() } else { c };
                c.then(p.cmp(&q))
            });
            for (j, &p) in order.iter().take(kk).enumerate() {
                idx_out[(o * kk + j) * inner + i] = p as i64;
            }
        }
    }
    for o in 0..outer {
        for j in 0..kk {
            for i in 0..inner {
                let p = idx_out[(o * kk + j) * inner + i] as usize;
                map.push((o * len + p) * inner + i);
            }
        }
    }
    let mut shape = s.to_vec();
    shape[a] = kk;
    let values = gather_raw(x, &shape, &map)?;
    Ok(vec![values, Tensor::from_vec(&shape, idx_out)])
}

/// CumSum(x, axis).
pub fn cumsum(x: &Tensor, axis: &Tensor, exclusive: bool, reverse: bool) -> R<Tensor> {
    if axis.len() != 1 || axis.dtype().is_float() {
        return Err("CumSum axis must be a one-element integer tensor".into());
    }
    let s = x.shape();
    let a = norm_axis(axis.to_i64_vec()[0], s.len())?;
    if s.is_empty() {
        return Err("CumSum needs rank >= 1".into());
    }
    let (outer, len, inner) = split_at(s, a);
    let order: Vec<usize> = if reverse {
        (0..len).rev().collect()
    } else {
        (0..len).collect()
    };
    macro_rules! scan {
        ($v:expr, $zero:expr, $add:expr) => {{
            let v = $v;
            let mut out = vec![$zero; v.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let mut acc = $zero;
                    for &j in &order {
                        let p = (o * len + j) * inner + i;
                        if exclusive {
                            out[p] = acc;
                            acc = $add(acc, v[p]);
                        } else {
                            acc = $add(acc, v[p]);
                            out[p] = acc;
                        }
                    }
                }
            }
            out
        }};
    }
    if x.dtype().is_float() {
        let out = scan!(x.to_f64_vec(), 0.0f64, |a: f64, b: f64| a + b);
        Ok(from_floats(x.dtype(), s, &out))
    } else if x.dtype() == DType::Bool {
        Err("CumSum does not accept bool".into())
    } else {
        let out = scan!(ints(x), 0i128, |a: i128, b: i128| a.wrapping_add(b));
        Ok(from_ints(x.dtype(), s, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn reductions() {
        let x = Tensor::from_vec(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        let ax = Tensor::from_vec(&[1], vec![1i64]);
        let y = reduce(ReduceOp::Sum, &x, Some(&ax), true, false).unwrap();
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(f32s(&y), [6., 15.]);
        let y = reduce(ReduceOp::Mean, &x, None, false, false).unwrap();
        assert_eq!(y.shape(), &[] as &[usize]);
        assert_eq!(f32s(&y), [3.5]);
        let y = reduce(
            ReduceOp::Max,
            &x,
            Some(&Tensor::from_vec(&[1], vec![-2i64])),
            false,
            false,
        )
        .unwrap();
        assert_eq!(f32s(&y), [4., 5., 6.]);
        let y = reduce(ReduceOp::Sum, &x, None, true, true).unwrap();
        assert_eq!(y, x);
        let y = reduce(ReduceOp::LogSumExp, &x, Some(&ax), false, false).unwrap();
        assert!((f32s(&y)[0] - 3.407_606).abs() < 1e-5);
        let i = Tensor::from_vec(&[2], vec![i64::MAX - 1, 1]);
        let y = reduce(ReduceOp::Sum, &i, None, false, false).unwrap();
        assert_eq!(y.view::<i64>().unwrap(), &[i64::MAX]);
    }

    #[test]
    fn argmax_topk_cumsum() {
        let x = Tensor::from_vec(&[2, 3], vec![1.0f32, 3., 3., 5., 0., 5.]);
        let y = arg_ext(&x, 1, false, false, true).unwrap();
        assert_eq!(y.view::<i64>().unwrap(), &[1, 0]);
        let y = arg_ext(&x, 1, true, true, true).unwrap();
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(y.view::<i64>().unwrap(), &[2, 2]);
        let y = arg_ext(&x, 0, false, false, false).unwrap();
        assert_eq!(y.view::<i64>().unwrap(), &[0, 1, 0]);
        let t = top_k(&x, &Tensor::from_vec(&[1], vec![2i64]), -1, true, true).unwrap();
        assert_eq!(f32s(&t[0]), [3., 3., 5., 5.]);
        assert_eq!(t[1].view::<i64>().unwrap(), &[1, 2, 0, 2]);
        let t = top_k(&x, &Tensor::from_vec(&[1], vec![1i64]), 1, false, true).unwrap();
        assert_eq!(f32s(&t[0]), [1., 0.]);
        let c = Tensor::from_vec(&[4], vec![1i32, 2, 3, 4]);
        let ax = Tensor::scalar(0i64);
        assert_eq!(
            cumsum(&c, &ax, false, false)
                .unwrap()
                .view::<i32>()
                .unwrap(),
            &[1, 3, 6, 10]
        );
        assert_eq!(
            cumsum(&c, &ax, true, false).unwrap().view::<i32>().unwrap(),
            &[0, 1, 3, 6]
        );
        assert_eq!(
            cumsum(&c, &ax, true, true).unwrap().view::<i32>().unwrap(),
            &[9, 7, 4, 0]
        );
    }
}
