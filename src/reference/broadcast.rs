//! Broadcasting and raw element index maps: the shared machinery of elementwise ops and data
//! movement. Data movement is expressed as "output element i comes from input element map[i]"
//! and executed by copying raw element bytes, so it is exact for every dtype.

use super::R;
use octet_ir::Tensor;

/// Row-major strides (in elements) of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy multidirectional broadcast of static shapes.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> R<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let mut d: Option<usize> = None;
        for s in shapes {
            let off = rank - s.len();
            if i < off {
                continue;
            }
            let x = s[i - off];
            d = Some(match d {
                None | Some(1) => x,
                Some(a) if x == 1 || x == a => a,
                Some(a) => {
                    return Err(format!(
                        "cannot broadcast dimension {a} with {x} (shapes {shapes:?})"
                    ))
                }
            });
        }
        *o = d.unwrap_or(1);
    }
    Ok(out)
}

/// Call `f(flat_index, multi_index)` for every element of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..n {
        f(flat, &idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// For every element of `out_shape`, the flat index of the element of `in_shape` that
/// broadcasts to it (`in_shape` must be broadcastable to `out_shape`).
pub fn broadcast_map(in_shape: &[usize], out_shape: &[usize]) -> R<Vec<usize>> {
    if in_shape.len() > out_shape.len() {
        return Err(format!("cannot broadcast {in_shape:?} to {out_shape:?}"));
    }
    let off = out_shape.len() - in_shape.len();
    let in_strides = strides(in_shape);
    let mut eff = vec![0usize; out_shape.len()];
    for (i, &d) in in_shape.iter().enumerate() {
        if d == out_shape[i + off] {
            eff[i + off] = in_strides[i];
        } else if d == 1 {
            eff[i + off] = 0;
        } else {
            return Err(format!("cannot broadcast {in_shape:?} to {out_shape:?}"));
        }
    }
    let n: usize = out_shape.iter().product();
    let mut map = Vec::with_capacity(n);
    if in_shape == out_shape {
        map.extend(0..n);
        return Ok(map);
    }
    for_each_index(out_shape, |_, idx| {
        map.push(idx.iter().zip(&eff).map(|(i, s)| i * s).sum());
    });
    Ok(map)
}

/// Build a tensor of `out_shape` whose element i is `t`'s element `map[i]` (raw bytes).
pub fn gather_raw(t: &Tensor, out_shape: &[usize], map: &[usize]) -> R<Tensor> {
    let es = t.dtype().size();
    let src = t.bytes();
    let mut out = Tensor::zeros(t.dtype(), out_shape);
    if map.len() != out.len() {
        return Err(format!(
            "internal: index map has {} entries for {} elements",
            map.len(),
            out.len()
        ));
    }
    let dst = out.bytes_mut();
    for (i, &m) in map.iter().enumerate() {
        let s = src
            .get(m * es..(m + 1) * es)
            .ok_or_else(|| format!("index {m} out of range for {} elements", t.len()))?;
        dst[i * es..(i + 1) * es].copy_from_slice(s);
    }
    Ok(out)
}

/// Like [`gather_raw`], with `None` entries filled with the raw element `fill`.
pub fn gather_raw_or(
    t: &Tensor,
    out_shape: &[usize],
    map: &[Option<usize>],
    fill: &[u8],
) -> R<Tensor> {
    let es = t.dtype().size();
    if fill.len() != es {
        return Err("internal: fill element has the wrong size".into());
    }
    let src = t.bytes();
    let mut out = Tensor::zeros(t.dtype(), out_shape);
    if map.len() != out.len() {
        return Err("internal: index map length mismatch".into());
    }
    let dst = out.bytes_mut();
    for (i, m) in map.iter().enumerate() {
        let s = match m {
            Some(m) => src
                .get(m * es..(m + 1) * es)
                .ok_or_else(|| format!("index {m} out of range for {} elements", t.len()))?,
            None => fill,
        };
        dst[i * es..(i + 1) * es].copy_from_slice(s);
    }
    Ok(out)
}

/// Broadcast `t` to `out_shape` by copying raw elements.
pub fn broadcast_to(t: &Tensor, out_shape: &[usize]) -> R<Tensor> {
    let map = broadcast_map(t.shape(), out_shape)?;
    gather_raw(t, out_shape, &map)
}

/// Apply `f` elementwise to two value vectors after broadcasting their shapes.
pub fn zip_broadcast<A: Copy, B: Copy, C>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    mut f: impl FnMut(A, B) -> R<C>,
) -> R<(Vec<C>, Vec<usize>)> {
    let out_shape = broadcast_shapes(&[a_shape, b_shape])?;
    let ma = broadcast_map(a_shape, &out_shape)?;
    let mb = broadcast_map(b_shape, &out_shape)?;
    let mut out = Vec::with_capacity(ma.len());
    for (&i, &j) in ma.iter().zip(&mb) {
        out.push(f(a[i], b[j])?);
    }
    Ok((out, out_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_shapes_and_maps() {
        assert_eq!(
            broadcast_shapes(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shapes(&[&[2], &[3]]).is_err());
        assert_eq!(
            broadcast_map(&[3], &[2, 3]).unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(
            broadcast_map(&[2, 1], &[2, 3]).unwrap(),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        let t = Tensor::from_vec(&[2, 1], vec![i64::MAX, -5]);
        let b = broadcast_to(&t, &[2, 2]).unwrap();
        assert_eq!(b.view::<i64>().unwrap(), &[i64::MAX, i64::MAX, -5, -5]);
    }
}
