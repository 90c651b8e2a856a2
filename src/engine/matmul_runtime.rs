//! MatMulInteger of two run-time u8 operands: what dynamic quantization makes of attention's
//! `Q K^T` and `P V` (both operands through DynamicQuantizeLinear). Batched over the leading
//! dimensions with MatMul's broadcasting; each batch's B is packed at run time into buffers kept
//! between runs (`PackedB::repack_from_u8`), and a following `Cast(f32) -> Mul(a_scale * b_scale)` can be fused into
//! the kernel's dequantizing epilogue (`acc as f32 * scale`, the graph's own operations, so
//! bit-identical to the reference interpreter).
//!
//! Exactness on pre-VNNI CPUs: B's values span the full 8 bits, which the AVX2 / AVX-512BW
//! `vpmaddubsw` kernels could saturate, so there the node runs the exact scalar kernel and the
//! report says so.

use super::pool::Pool;
use octet_ir::{DType, Graph, NodeIndex, Tensor};
use octet_kernels::{
    gemm_u8s8, gemm_u8s8_is_exact, Epilogue, Kernel, MatrixU8, OutputSlice, PackedB, Scale,
    WeightLayout,
};
use rayon::prelude::*;

type R<T> = Result<T, String>;

/// Packed run-time operands kept between runs up to this many bytes per node.
const KEEP_PACKED_BYTES: usize = 4 << 20;

pub struct RuntimeMatMul {
    kernel: Kernel,
    note: String,
    /// One packed B per batch, kept between runs and repacked in place
    /// (`PackedB::repack_from_u8`): no allocation per run once warm. Taken out for a run (a
    /// concurrent run of the same engine finds it empty and packs into fresh buffers).
    packs: std::sync::Mutex<Vec<PackedB>>,
}

/// Per-tensor u8 zero point of an optional run-time operand.
fn zero_point(t: Option<&Tensor>, what: &str) -> R<i32> {
    let Some(t) = t else { return Ok(0) };
    if t.dtype() != DType::U8 {
        return Err(format!("{what} is {}, expected u8", t.dtype()));
    }
    match t.bytes() {
        [z] => Ok(*z as i32),
        v => Err(format!(
            "{what} has {} values; only per-tensor zero points run on the int8 kernel",
            v.len()
        )),
    }
}

/// Broadcast leading (batch) dimensions of two MatMul operands, numpy style.
fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(format!(
                "batch dimensions {a:?} and {b:?} do not broadcast ({x} vs {y})"
            )),
        })
        .collect()
}

/// Offset (in matrices) of batch `i` of the broadcast `out` batch shape in an operand with
/// batch shape `s`.
fn batch_offset(i: usize, out: &[usize], s: &[usize]) -> usize {
    let (mut rem, mut off, mut stride) = (i, 0, 1);
    for d in (0..out.len()).rev() {
        let idx = rem % out[d];
        rem /= out[d];
        let sd = d + s.len();
        if sd >= out.len() {
            let dim = s[sd - out.len()];
            if dim != 1 {
                off += idx * stride;
            }
            stride *= dim;
        }
    }
    off
}

impl RuntimeMatMul {
    /// A MatMulInteger whose B is not a constant.
    pub fn build(g: &Graph, n: NodeIndex, best: Kernel) -> R<RuntimeMatMul> {
        for (slot, what) in [(0, "A"), (1, "B")] {
            let o = g.operand(n, slot).ok_or(format!("no operand {what}"))?;
            let t = g.ty(o).ok_or(format!("untyped operand {what}"))?;
            if t.dtype != DType::U8 {
                return Err(format!(
                    "run-time operand {what} is {}; the int8 kernel takes u8 x u8 here",
                    t.dtype
                ));
            }
            if t.shape.rank() < 2 {
                return Err(format!("operand {what} has rank {}", t.shape.rank()));
            }
        }
        let (kernel, note) = if gemm_u8s8_is_exact(best.isa()) {
            (best, String::new())
        } else {
            (
                Kernel::scalar(),
                format!(
                    "u8 x u8 operands: the {} kernel would saturate, exact scalar kernel",
                    best.isa().name()
                ),
            )
        };
        Ok(RuntimeMatMul {
            kernel,
            note,
            packs: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn describe(&self) -> String {
        let s = "gemm_u8s8 batched, B packed per run (buffers reused)".to_string();
        if self.note.is_empty() {
            s
        } else {
            format!("{s} ({})", self.note)
        }
    }

    /// `args`: A, B, a_zero_point, b_zero_point. `scale`: Some(a_scale * b_scale) for the fused
    /// dequantizing epilogue (f32 output), None for the raw i32 output. `row_bias`: an f32 row
    /// (N values) or matrix (M x N) added after the scale to every batch's output (an attention
    /// mask `Add`; f32 output only).
    pub fn run(
        &self,
        args: &[Option<&Tensor>],
        scale: Option<f32>,
        row_bias: Option<&[f32]>,
        pool: &mut Pool,
    ) -> R<Tensor> {
        let get = |i: usize| args.get(i).copied().flatten();
        let a = get(0).ok_or("missing A")?;
        let b = get(1).ok_or("missing B")?;
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 || a.dtype() != DType::U8 || b.dtype() != DType::U8 {
            return Err(format!(
                "operands {:?} {} and {:?} {}: expected u8 matrices",
                sa,
                a.dtype(),
                sb,
                b.dtype()
            ));
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (kb, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != kb {
            return Err(format!("inner dimensions differ: A {sa:?}, B {sb:?}"));
        }
        let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
        let batch = broadcast(ba, bb)?;
        let count: usize = batch.iter().product();
        let a_zp = zero_point(get(2), "a_zero_point")?;
        let b_zp = zero_point(get(3), "b_zero_point")?;
        let mut shape = batch.clone();
        shape.extend([m, n]);
        if let Some(b) = row_bias {
            if scale.is_none() || !(b.len() == n || b.len() == m * n) {
                return Err(format!(
                    "mask of {} values for a {m}x{n} output (needs the f32 epilogue and N or M*N values)",
                    b.len()
                ));
            }
        }
        let (av, bv) = (a.bytes(), b.bytes());
        let kernel = self.kernel;
        let one = |i: usize, out: OutputSlice, packed: &mut PackedB| -> R<()> {
            let ao = batch_offset(i, &batch, ba) * m * k;
            let bo = batch_offset(i, &batch, bb) * k * n;
            packed
                .repack_from_u8(k, n, &bv[bo..bo + k * n], WeightLayout::KxN, b_zp)
                .map_err(|e| e.to_string())?;
            let packed = &*packed;
            let am = MatrixU8 {
                data: &av[ao..ao + m * k],
                rows: m,
                ld: k,
                zero_point: a_zp,
            };
            let row = row_bias.filter(|b| b.len() == n);
            let ep = match (scale, row) {
                (Some(s), Some(b)) => Epilogue::requant(Scale::PerTensor(s), 0).with_f32_bias(b),
                (Some(s), None) => Epilogue::requant(Scale::PerTensor(s), 0),
                (None, _) => Epilogue::raw(),
            };
            match (out, row_bias.filter(|b| b.len() != n && b.len() == m * n)) {
                (OutputSlice::F32(o), Some(mat)) => {
                    // A whole-matrix mask: added to this batch's output while it is in cache,
                    // after the scale, as the graph's Add.
                    gemm_u8s8(&kernel, am, packed, &ep, OutputSlice::F32(&mut *o), n)
                        .map_err(|e| e.to_string())?;
                    for (y, &b) in o.iter_mut().zip(mat) {
                        *y += b;
                    }
                    Ok(())
                }
                (out, _) => gemm_u8s8(&kernel, am, packed, &ep, out, n).map_err(|e| e.to_string()),
            }
        };
        let mn = (m * n).max(1);
        let mut packs = std::mem::take(&mut *self.packs.lock().unwrap_or_else(|e| e.into_inner()));
        while packs.len() < count {
            packs.push(PackedB::new(0, 0, &[], WeightLayout::KxN, 0).map_err(|e| e.to_string())?);
        }
        let result: R<Tensor> = (|| match scale {
            Some(_) => {
                let mut out = pool.tensor(DType::F32, &shape);
                let v = out.view_mut::<f32>().map_err(|e| e.to_string())?;
                v.par_chunks_mut(mn)
                    .zip(packs.par_iter_mut())
                    .take(count)
                    .enumerate()
                    .try_for_each(|(i, (c, p))| one(i, OutputSlice::F32(c), p))?;
                Ok(out)
            }
            None => {
                let mut out = pool.tensor(DType::I32, &shape);
                let v = out.view_mut::<i32>().map_err(|e| e.to_string())?;
                v.par_chunks_mut(mn)
                    .zip(packs.par_iter_mut())
                    .take(count)
                    .enumerate()
                    .try_for_each(|(i, (c, p))| one(i, OutputSlice::I32(c), p))?;
                Ok(out)
            }
        })();
        // Kept for the next run (also after an error), unless large: a long sequence must not
        // pin its packed operands for the engine's lifetime.
        if count * k * n <= KEEP_PACKED_BYTES {
            *self.packs.lock().unwrap_or_else(|e| e.into_inner()) = packs;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_offsets() {
        assert_eq!(broadcast(&[2, 3], &[3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast(&[1, 3], &[2, 1]).unwrap(), vec![2, 3]);
        assert!(broadcast(&[2], &[3]).is_err());
        // out [2,3]; operand [3] repeats over the first dimension
        let out = [2, 3];
        let offs: Vec<usize> = (0..6).map(|i| batch_offset(i, &out, &[3])).collect();
        assert_eq!(offs, vec![0, 1, 2, 0, 1, 2]);
        let offs: Vec<usize> = (0..6).map(|i| batch_offset(i, &out, &[2, 1])).collect();
        assert_eq!(offs, vec![0, 0, 0, 1, 1, 1]);
        let offs: Vec<usize> = (0..6).map(|i| batch_offset(i, &out, &[])).collect();
        assert_eq!(offs, vec![0; 6]);
    }
}
