//! f32 Conv / Gemm / MatMul in the summation order of onnxruntime's MLAS, so that calibration
//! with the `onnxruntime` preset sees the same activation maxima, to the bit, as onnxruntime's
//! own `quantize_static` (which calibrates by running the model in onnxruntime with all graph
//! optimizations off, one thread, MLAS kernels).
//!
//! The reference interpreter proper sums in f64 and rounds once; MLAS sums in f32 with one
//! fused multiply-add per term, in blocks along K:
//!
//! - each output is `acc = fma(a[k], b[k], acc)` for k in order from 0 within a K block,
//!   starting from 0.0; the first block's sum is stored, later blocks' sums are added to it
//!   (`C = C + acc`);
//! - Gemm / MatMul with a constant B use MLAS's prepacked-B SGEMM: K blocks of 256. Gemm's C
//!   (bias) is copied into the output first and every block is added to it (beta = 1);
//! - Conv (groups = 1) is im2col (K ordered channel, then kernel rows, then kernel columns)
//!   followed by the unpacked SGEMM with M = output channels, N = output pixels, whose K block
//!   starts at 128 and is widened while the N stride can be narrowed (N < K: while
//!   `stride_n > 16 && stride_n / 2 >= N`, `stride_k *= 2, stride_n /= 2`; N >= K: narrowed
//!   while `stride_k / 2 >= K`); the bias is added after the whole sum.
//!
//! Verified against onnxruntime 1.32 (ORT_DISABLE_ALL, one thread) bit for bit on the digits_cnn
//! fixture's layers and on synthetic Conv (K = 147 .. 1152, strides 1 and 2), Gemm and MatMul
//! (K = 300 .. 1100) layers. Not covered (these fall back to the f64 reference): grouped and
//! depthwise Conv, MatMul of two run-time tensors, Gemm with transA, alpha != 1 or beta != 1,
//! rank > 2 operands, and onnxruntime's multi-threaded segmentation of large convolutions.

use super::conv::plan;
use super::R;
use octet_ir::{DType, Graph, NodeIndex, Op, Tensor};

/// `acc + sum a[i] * b[i]`, one fused multiply-add per term, in order.
fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports FMA (checked above).
            return unsafe { dot_fma_hw(a, b) };
        }
    }
    dot_fma_soft(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn dot_fma_hw(a: &[f32], b: &[f32]) -> f32 {
    dot_fma_soft(a, b)
}

#[inline(always)]
fn dot_fma_soft(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in a.iter().zip(b) {
        acc = x.mul_add(*y, acc);
    }
    acc
}

/// One output of a K-blocked SGEMM: `init` (None = zero mode) plus the blocks' sums.
fn blocked(a: &[f32], b: &[f32], stride_k: usize, init: Option<f32>) -> f32 {
    let mut c = init;
    for (ak, bk) in a.chunks(stride_k).zip(b.chunks(stride_k)) {
        let s = dot_fma(ak, bk);
        c = Some(match c {
            None => s,
            Some(c) => c + s,
        });
    }
    c.unwrap_or(0.0)
}

/// K block of MLAS's unpacked SGEMM (`MlasSgemmOperation`, A not transposed).
fn unpacked_stride_k(n: usize, k: usize) -> usize {
    let (mut sn, mut sk) = (128usize, 128usize);
    if n >= k {
        // (MLAS doubles the N stride here too; only K matters for the order.)
        while sk / 2 >= k {
            sk /= 2;
        }
    } else {
        while sn > 16 && sn / 2 >= n {
            sk *= 2;
            sn /= 2;
        }
    }
    sk
}

/// K block of MLAS's prepacked-B SGEMM.
const PACKED_STRIDE_K: usize = 256;

fn f32s(t: &Tensor) -> Option<&[f32]> {
    (t.dtype() == DType::F32)
        .then(|| t.view::<f32>().ok())
        .flatten()
}

/// Evaluate node `n` in MLAS order if it is one of the covered cases; None = use the reference.
pub fn eval(g: &Graph, n: NodeIndex, args: &[Option<&Tensor>]) -> Option<R<Vec<Tensor>>> {
    let arg = |i: usize| args.get(i).copied().flatten();
    match &g.node(n).op {
        Op::Conv(a) if a.group == 1 => {
            let (x, w) = (arg(0)?, arg(1)?);
            let (xv, wv) = (f32s(x)?, f32s(w)?);
            let bias = match arg(2) {
                Some(b) => Some(f32s(b)?),
                None => None,
            };
            let p = match plan(&a.geom, a.group, x.shape(), w.shape()) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let (c, k_size, osz) = (p.in_ch, p.k_size, p.out_size);
            let kk = c * k_size;
            if wv.len() != p.out_ch * kk || bias.is_some_and(|b| b.len() != p.out_ch) {
                return None;
            }
            let stride_k = unpacked_stride_k(osz, kk);
            let mut out = vec![0f32; p.batch * p.out_ch * osz];
            // im2col, one row of K per output pixel: [osz][c * k_size]
            let mut cols = vec![0f32; osz * kk];
            for b in 0..p.batch {
                let xb = &xv[b * c * p.in_size..(b + 1) * c * p.in_size];
                for o in 0..osz {
                    let row = &mut cols[o * kk..(o + 1) * kk];
                    for ci in 0..c {
                        for t in 0..k_size {
                            let off = p.table[o * k_size + t];
                            row[ci * k_size + t] = if off < 0 {
                                0.0
                            } else {
                                xb[ci * p.in_size + off as usize]
                            };
                        }
                    }
                }
                for m in 0..p.out_ch {
                    let wr = &wv[m * kk..(m + 1) * kk];
                    let ob = &mut out[(b * p.out_ch + m) * osz..(b * p.out_ch + m + 1) * osz];
                    for (o, y) in ob.iter_mut().enumerate() {
                        let s = blocked(wr, &cols[o * kk..(o + 1) * kk], stride_k, None);
                        *y = match bias {
                            Some(bv) => s + bv[m],
                            None => s,
                        };
                    }
                }
            }
            Some(Ok(vec![Tensor::from_vec(&p.out_shape(), out)]))
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a: false,
            trans_b,
        } if *alpha == 1.0 && *beta == 1.0 => {
            g.const_operand(n, 1)?;
            let (a, b) = (arg(0)?, arg(1)?);
            if a.rank() != 2 || b.rank() != 2 {
                return None;
            }
            let c = match arg(2) {
                Some(c) => Some(f32s(c)?),
                None => None,
            };
            let (m, k) = (a.shape()[0], a.shape()[1]);
            let nn = if *trans_b { b.shape()[0] } else { b.shape()[1] };
            // C as a scalar, a [N] / [1, N] row, an [M, 1] column or a full [M, N] matrix.
            let c_index: fn(usize, usize, usize) -> usize = match arg(2).map(|t| t.shape()) {
                None | Some([]) | Some([1]) | Some([1, 1]) => |_, _, _| 0,
                Some([x]) | Some([1, x]) if *x == nn => |_, j, _| j,
                Some([x, 1]) if *x == m => |i, _, _| i,
                Some([x, y]) if *x == m && *y == nn => |i, j, n| i * n + j,
                _ => return None,
            };
            let c_at = |i: usize, j: usize| c.map(|c| c[c_index(i, j, nn)]);
            gemm_packed(f32s(a)?, f32s(b)?, m, k, nn, *trans_b, c_at)
        }
        Op::MatMul => {
            g.const_operand(n, 1)?;
            let (a, b) = (arg(0)?, arg(1)?);
            if a.rank() != 2 || b.rank() != 2 {
                return None;
            }
            let (m, k, nn) = (a.shape()[0], a.shape()[1], b.shape()[1]);
            gemm_packed(f32s(a)?, f32s(b)?, m, k, nn, false, |_, _| None)
        }
        _ => None,
    }
}

/// `C = [c] + A B` with B constant (`trans_b`: B given as [N, K]), MLAS prepacked-B order.
fn gemm_packed(
    av: &[f32],
    bv: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans_b: bool,
    c_at: impl Fn(usize, usize) -> Option<f32>,
) -> Option<R<Vec<Tensor>>> {
    if av.len() != m * k || bv.len() != k * n {
        return None;
    }
    // B's columns as contiguous K vectors.
    let bt: Vec<f32> = if trans_b {
        bv.to_vec()
    } else {
        let mut t = vec![0f32; k * n];
        for kk in 0..k {
            for j in 0..n {
                t[j * k + kk] = bv[kk * n + j];
            }
        }
        t
    };
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = blocked(
                &av[i * k..(i + 1) * k],
                &bt[j * k..(j + 1) * k],
                PACKED_STRIDE_K,
                c_at(i, j),
            );
        }
    }
    Some(Ok(vec![Tensor::from_vec(&[m, n], out)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_k_follows_mlas() {
        // (N, K) -> K block, as measured against onnxruntime (see the module doc)
        assert_eq!(unpacked_stride_k(16, 288), 1024);
        assert_eq!(unpacked_stride_k(64, 576), 256);
        assert_eq!(unpacked_stride_k(36, 1152), 256);
        assert_eq!(unpacked_stride_k(25, 300), 512);
        assert_eq!(unpacked_stride_k(100, 147), 128);
        assert_eq!(unpacked_stride_k(300, 200), 128);
        assert_eq!(unpacked_stride_k(784, 9), 16);
    }

    #[test]
    fn blocked_sum_adds_blocks_in_order() {
        // f32 spacing at 1e8 is 8: one block rounds 1e8 + 6 up to 1e8 + 8; blocks of 2 sum the
        // small terms apart (6) and add the large ones' exact 0.
        let a = [3.0f32, 3.0, 1e8, -1e8];
        let b = [1f32; 4];
        assert_eq!(blocked(&a, &b, 4, None), 8.0);
        assert_eq!(blocked(&a, &b, 2, None), 6.0);
        assert_eq!(blocked(&a, &b, 2, Some(0.5)), 6.5);
        assert_eq!(dot_fma(&[3.0, 4.0], &[2.0, 0.5]), 8.0);
        // fused: (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 exactly; a rounded product would lose 2^-24
        let e = 1.0f32 / 4096.0;
        assert_eq!(dot_fma(&[1.0, 1.0 + e], &[-1.0, 1.0 + e]), 2.0 * e + e * e);
    }
}
