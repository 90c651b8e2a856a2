//! Matrix products: MatMul (numpy batch broadcasting, i-k-j loops), Gemm and general Einsum
//! (explicit loops over every label). Floats accumulate in f64 and round once; integers
//! accumulate exactly (wrapping in 64 bits). `matmul_core` is shared with the quantized ops.

use super::broadcast::{broadcast_map, broadcast_shapes, for_each_index, strides};
use super::cast::{from_floats, from_ints, ints};
use super::{opt, req, R};
use octet_ir::{DType, Tensor};
use std::num::Wrapping;
use std::ops::{Add, Mul};

/// Accumulator element: f64 for floats, wrapping i64 for integers.
pub trait Acc: Copy + Default + Add<Output = Self> + Mul<Output = Self> {}
impl Acc for f64 {}
impl Acc for Wrapping<i64> {}

/// Integer values of a tensor as wrapping i64 accumulators.
pub fn wrapping_ints(t: &Tensor) -> Vec<Wrapping<i64>> {
    ints(t).into_iter().map(|v| Wrapping(v as i64)).collect()
}

/// Output shape of numpy matmul plus (batch shape, M, K, N).
fn matmul_dims(a: &[usize], b: &[usize]) -> R<(Vec<usize>, Vec<usize>, usize, usize, usize)> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("MatMul inner dimensions differ: {a:?} x {b:?}"));
    }
    let batch = broadcast_shapes(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok((out, batch, m, k, n))
}

/// numpy matmul on value vectors; returns (values, output shape).
pub fn matmul_core<T: Acc>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
) -> R<(Vec<T>, Vec<usize>)> {
    let (out_shape, batch, m, k, n) = matmul_dims(a_shape, b_shape)?;
    let a_batch = if a_shape.len() > 2 {
        &a_shape[..a_shape.len() - 2]
    } else {
        &[][..]
    };
    let b_batch = if b_shape.len() > 2 {
        &b_shape[..b_shape.len() - 2]
    } else {
        &[][..]
    };
    let ma = broadcast_map(a_batch, &batch)?;
    let mb = broadcast_map(b_batch, &batch)?;
    let nb: usize = batch.iter().product();
    let mut out = vec![T::default(); nb * m * n];
    for bi in 0..nb {
        let ao = ma[bi] * m * k;
        let bo = mb[bi] * k * n;
        let oo = bi * m * n;
        for i in 0..m {
            let row = &mut out[oo + i * n..oo + (i + 1) * n];
            for p in 0..k {
                let av = a[ao + i * k + p];
                let brow = &b[bo + p * n..bo + (p + 1) * n];
                for (o, &bv) in row.iter_mut().zip(brow) {
                    *o = *o + av * bv;
                }
            }
        }
    }
    Ok((out, out_shape))
}

/// MatMul.
pub fn matmul(a: &Tensor, b: &Tensor) -> R<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(format!(
            "MatMul operands have different dtypes: {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let dt = a.dtype();
    if dt.is_float() {
        let (v, s) = matmul_core(&a.to_f64_vec(), a.shape(), &b.to_f64_vec(), b.shape())?;
        Ok(from_floats(dt, &s, &v))
    } else if dt == DType::Bool {
        Err("MatMul does not accept bool".into())
    } else {
        let (v, s) = matmul_core(&wrapping_ints(a), a.shape(), &wrapping_ints(b), b.shape())?;
        let v: Vec<i128> = v.into_iter().map(|x| x.0 as i128).collect();
        Ok(from_ints(dt, &s, &v))
    }
}

/// Read a 2-D matrix (optionally transposed) as row-major (rows, cols, values).
pub fn matrix<T: Copy>(v: &[T], shape: &[usize], trans: bool) -> R<(usize, usize, Vec<T>)> {
    if shape.len() != 2 {
        return Err(format!("Gemm operands must be 2-D, got {shape:?}"));
    }
    let (r, c) = (shape[0], shape[1]);
    if !trans {
        return Ok((r, c, v.to_vec()));
    }
    let mut t = Vec::with_capacity(v.len());
    for j in 0..c {
        for i in 0..r {
            t.push(v[i * c + j]);
        }
    }
    Ok((c, r, t))
}

/// Gemm: alpha * A' B' + beta * C.
pub fn gemm(
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    inputs: &[Option<&Tensor>],
) -> R<Tensor> {
    let a = req(inputs, 0, "A")?;
    let b = req(inputs, 1, "B")?;
    if a.dtype() != b.dtype() {
        return Err(format!("Gemm A is {} but B is {}", a.dtype(), b.dtype()));
    }
    let (m, k, av) = matrix(&a.to_f64_vec(), a.shape(), trans_a)?;
    let (kb, n, bv) = matrix(&b.to_f64_vec(), b.shape(), trans_b)?;
    if k != kb {
        return Err(format!(
            "Gemm inner dimensions differ: {k} vs {kb} (A {:?}, B {:?})",
            a.shape(),
            b.shape()
        ));
    }
    let (prod, _) = matmul_core(&av, &[m, k], &bv, &[k, n])?;
    let c = match opt(inputs, 2) {
        Some(c) => {
            let map = broadcast_map(c.shape(), &[m, n])
                .map_err(|_| format!("Gemm C {:?} does not broadcast to [{m}, {n}]", c.shape()))?;
            let cv = c.to_f64_vec();
            Some(map.into_iter().map(|i| cv[i]).collect::<Vec<f64>>())
        }
        None => None,
    };
    let (al, be) = (alpha as f64, beta as f64);
    let out: Vec<f64> = prod
        .iter()
        .enumerate()
        .map(|(i, &p)| al * p + c.as_ref().map_or(0.0, |c| be * c[i]))
        .collect();
    Ok(from_floats(a.dtype(), &[m, n], &out))
}

/// Einsum without ellipsis: every label is looped over explicitly.
pub fn einsum(equation: &str, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    if eq.contains("...") {
        return Err("Einsum with ellipsis is not supported".into());
    }
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
    if terms.len() != xs.len() {
        return Err(format!(
            "Einsum equation has {} terms for {} operands",
            terms.len(),
            xs.len()
        ));
    }
    let dt = xs[0].dtype();
    if xs.iter().any(|x| x.dtype() != dt) {
        return Err("Einsum operands have different dtypes".into());
    }
    // Label extents.
    let mut labels: Vec<char> = vec![];
    let mut dims: Vec<usize> = vec![];
    let mut counts: Vec<usize> = vec![];
    for (t, x) in terms.iter().zip(&xs) {
        if t.len() != x.rank() {
            return Err(format!(
                "Einsum term '{}' does not match operand rank {}",
                t.iter().collect::<String>(),
                x.rank()
            ));
        }
        for (&c, &d) in t.iter().zip(x.shape()) {
            if !c.is_ascii_alphabetic() {
                return Err(format!("Einsum label '{c}' is not a letter"));
            }
            match labels.iter().position(|&l| l == c) {
                Some(p) => {
                    counts[p] += 1;
                    if dims[p] != d {
                        if dims[p] == 1 {
                            dims[p] = d;
                        } else if d != 1 {
                            return Err(format!(
                                "Einsum label '{c}' has extents {} and {d}",
                                dims[p]
                            ));
                        }
                    }
                }
                None => {
                    labels.push(c);
                    dims.push(d);
                    counts.push(1);
                }
            }
        }
    }
    let out_labels: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            let mut v: Vec<char> = labels
                .iter()
                .zip(&counts)
                .filter(|(_, &n)| n == 1)
                .map(|(&c, _)| c)
                .collect();
            v.sort();
            v
        }
    };
    let mut order: Vec<usize> = vec![];
    for c in &out_labels {
        let p = labels
            .iter()
            .position(|l| l == c)
            .ok_or_else(|| format!("Einsum output label '{c}' is not in any input"))?;
        if order.contains(&p) {
            return Err(format!("Einsum output label '{c}' repeats"));
        }
        order.push(p);
    }
    let n_out = order.len();
    for p in 0..labels.len() {
        if !order.contains(&p) {
            order.push(p);
        }
    }
    // Per operand: stride contributed by each loop position (0 for size-1 broadcast dims).
    let loop_dims: Vec<usize> = order.iter().map(|&p| dims[p]).collect();
    let op_strides: Vec<Vec<usize>> = terms
        .iter()
        .zip(&xs)
        .map(|(t, x)| {
            let st = strides(x.shape());
            order
                .iter()
                .map(|&p| {
                    t.iter()
                        .enumerate()
                        .filter(|(_, &c)| c == labels[p])
                        .map(|(i, _)| if x.shape()[i] == 1 { 0 } else { st[i] })
                        .sum()
                })
                .collect()
        })
        .collect();
    let out_shape: Vec<usize> = loop_dims[..n_out].to_vec();
    let out_strides = strides(&out_shape);
    fn run<T: Acc>(
        vals: &[Vec<T>],
        one: T,
        loop_dims: &[usize],
        op_strides: &[Vec<usize>],
        out_strides: &[usize],
        n_out_elems: usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); n_out_elems];
        for_each_index(loop_dims, |_, idx| {
            let mut prod = one;
            for (v, st) in vals.iter().zip(op_strides) {
                let off: usize = idx.iter().zip(st).map(|(i, s)| i * s).sum();
                prod = prod * v[off];
            }
            let o: usize = idx.iter().zip(out_strides).map(|(i, s)| i * s).sum();
            out[o] = out[o] + prod;
        });
        out
    }
    let n_out_elems: usize = out_shape.iter().product();
    if dt.is_float() {
        let vals: Vec<Vec<f64>> = xs.iter().map(|x| x.to_f64_vec()).collect();
        let out = run(
            &vals,
            1.0,
            &loop_dims,
            &op_strides,
            &out_strides,
            n_out_elems,
        );
        Ok(from_floats(dt, &out_shape, &out))
    } else {
        let vals: Vec<Vec<Wrapping<i64>>> = xs.iter().map(|x| wrapping_ints(x)).collect();
        let out = run(
            &vals,
            Wrapping(1),
            &loop_dims,
            &op_strides,
            &out_strides,
            n_out_elems,
        );
        let out: Vec<i128> = out.into_iter().map(|x| x.0 as i128).collect();
        Ok(from_ints(dt, &out_shape, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn matmul_shapes_and_values() {
        let a = Tensor::from_vec(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        let b = Tensor::from_vec(&[3, 2], vec![7.0f32, 8., 9., 10., 11., 12.]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 2]);
        assert_eq!(f32s(&c), [58., 64., 139., 154.]);
        // Batch broadcast and 1-D operands.
        let a3 = Tensor::from_vec(&[2, 1, 3], vec![1.0f32, 0., 0., 0., 1., 0.]);
        let c = matmul(&a3, &b).unwrap();
        assert_eq!(c.shape(), &[2, 1, 2]);
        assert_eq!(f32s(&c), [7., 8., 9., 10.]);
        let v = Tensor::from_vec(&[3], vec![1.0f32, 1., 1.]);
        assert_eq!(matmul(&v, &b).unwrap().shape(), &[2]);
        assert_eq!(f32s(&matmul(&a, &v).unwrap()), [6., 15.]);
        let i = Tensor::from_vec(&[1, 2], vec![3i64, 4]);
        let j = Tensor::from_vec(&[2, 1], vec![5i64, 6]);
        assert_eq!(matmul(&i, &j).unwrap().view::<i64>().unwrap(), &[39]);
        assert!(matmul(&a, &a).is_err());
    }

    #[test]
    fn gemm_transposes_and_bias() {
        let a = Tensor::from_vec(&[3, 2], vec![1.0f32, 4., 2., 5., 3., 6.]); // A^T
        let b = Tensor::from_vec(&[3, 2], vec![7.0f32, 8., 9., 10., 11., 12.]);
        let c = Tensor::from_vec(&[2], vec![1.0f32, -1.0]);
        let y = gemm(2.0, 0.5, true, false, &[Some(&a), Some(&b), Some(&c)]).unwrap();
        assert_eq!(f32s(&y), [116.5, 127.5, 278.5, 307.5]);
    }

    #[test]
    fn einsum_general() {
        let a = Tensor::from_vec(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        let b = Tensor::from_vec(&[3, 2], vec![7.0f32, 8., 9., 10., 11., 12.]);
        let c = einsum("ij,jk->ik", &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(f32s(&c), [58., 64., 139., 154.]);
        let t = einsum("ij->ji", &[Some(&a)]).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(f32s(&t), [1., 4., 2., 5., 3., 6.]);
        let sq = Tensor::from_vec(&[2, 2], vec![1.0f32, 2., 3., 4.]);
        assert_eq!(f32s(&einsum("ii", &[Some(&sq)]).unwrap()), [5.0]);
        assert_eq!(f32s(&einsum("ii->i", &[Some(&sq)]).unwrap()), [1.0, 4.0]);
        let s = einsum("ij->", &[Some(&a)]).unwrap();
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_eq!(f32s(&s), [21.0]);
        // Implicit output: labels appearing once, sorted.
        let o = einsum("ba", &[Some(&a)]).unwrap();
        assert_eq!(o.shape(), &[3, 2]);
    }
}
