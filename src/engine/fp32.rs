//! Float Conv / Gemm / MatMul nodes with constant weights on the fp32 kernels of
//! `octet-kernels` (prepacked at build time, bias and a following ReLU fused when the graph has
//! them in the node), or on the bf16 kernels (`vdpbf16ps`) for nodes marked bf16 (the tuner's
//! middle precision). Everything else float runs on the reference interpreter.

use octet_ir::{DType, Graph, NodeIndex, Op, Tensor};
use octet_kernels::{
    conv2d_bf16, conv2d_f32_add, gemm_bf16, gemm_f32, transpose_f32, ConvGeometry, Kernel,
    PackedBBf16, PackedBF32, PackedConvBf16, PackedConvF32, WeightLayout,
};

/// Conv weights packed for the fp32 or the bf16 kernel.
pub enum ConvWeights {
    F32(PackedConvF32),
    Bf16(PackedConvBf16),
}

/// Gemm weights packed for the fp32 or the bf16 kernel.
pub enum GemmWeights {
    F32(PackedBF32),
    Bf16(PackedBBf16),
}

pub enum F32Node {
    Conv {
        kernel: Kernel,
        packed: ConvWeights,
        geom: ConvGeometry,
        bias: Option<Vec<f32>>,
        c_in: usize,
        c_out: usize,
    },
    Gemm {
        kernel: Kernel,
        packed: GemmWeights,
        bias: Option<Vec<f32>>,
        k: usize,
        n: usize,
    },
}

type R<T> = Result<T, String>;

fn gemm_weights(k: usize, n: usize, b: &[f32], layout: WeightLayout, bf16: bool) -> R<GemmWeights> {
    if bf16 {
        PackedBBf16::new(k, n, b, layout).map(GemmWeights::Bf16)
    } else {
        PackedBF32::new(k, n, b, layout).map(GemmWeights::F32)
    }
    .map_err(|e| e.to_string())
}

impl F32Node {
    /// `Ok(None)`: not a float compute op with constant weights this engine maps.
    pub fn build(g: &Graph, n: NodeIndex, kernel: Kernel) -> R<Option<F32Node>> {
        let node = g.node(n);
        let bf16 = node.bf16;
        let x_ty = match g.operand(n, 0).and_then(|o| g.ty(o)) {
            Some(t) => t,
            None => return Ok(None),
        };
        if x_ty.dtype != DType::F32 {
            return Ok(None);
        }
        match &node.op {
            Op::Conv(a) => {
                let w = g.const_operand(n, 1).ok_or("weight is not constant")?;
                if w.rank() != 4 {
                    return Err("only 2-D convolutions have an fp32 kernel".into());
                }
                let xs = x_ty.shape.as_fixed().ok_or("input shape is not static")?;
                let (c_out, c_in) = (w.shape()[0], xs[1]);
                let geom = super::conv_layout::geometry(a, w.shape(), &xs)?;
                let wv = w.view::<f32>().map_err(|e| e.to_string())?;
                let ohwi = super::conv_layout::oihw_to_ohwi(wv, w.shape());
                let packed = if bf16 {
                    ConvWeights::Bf16(
                        PackedConvBf16::new(geom, c_in, c_out, &ohwi).map_err(|e| e.to_string())?,
                    )
                } else {
                    ConvWeights::F32(
                        PackedConvF32::new(geom, c_in, c_out, &ohwi).map_err(|e| e.to_string())?,
                    )
                };
                let bias = match g.operand(n, 2) {
                    None => None,
                    Some(_) => Some(
                        g.const_operand(n, 2)
                            .ok_or("bias is not constant")?
                            .view::<f32>()
                            .map_err(|e| e.to_string())?
                            .to_vec(),
                    ),
                };
                Ok(Some(F32Node::Conv {
                    kernel,
                    packed,
                    geom,
                    bias,
                    c_in,
                    c_out,
                }))
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                if *trans_a || *alpha != 1.0 || x_ty.shape.rank() != 2 {
                    return Err("Gemm with transA or alpha != 1 runs on the reference".into());
                }
                let b = g.const_operand(n, 1).ok_or("weight is not constant")?;
                let (k, nn) = if *trans_b {
                    (b.shape()[1], b.shape()[0])
                } else {
                    (b.shape()[0], b.shape()[1])
                };
                let layout = if *trans_b {
                    WeightLayout::NxK
                } else {
                    WeightLayout::KxN
                };
                let packed = gemm_weights(
                    k,
                    nn,
                    b.view::<f32>().map_err(|e| e.to_string())?,
                    layout,
                    bf16,
                )?;
                let bias = match g.operand(n, 2) {
                    None => None,
                    Some(_) => {
                        let c = g.const_operand(n, 2).ok_or("bias is not constant")?;
                        if c.len() != nn || *beta != 1.0 {
                            return Err("Gemm bias must be a [N] vector with beta = 1".into());
                        }
                        Some(c.view::<f32>().map_err(|e| e.to_string())?.to_vec())
                    }
                };
                Ok(Some(F32Node::Gemm {
                    kernel,
                    packed,
                    bias,
                    k,
                    n: nn,
                }))
            }
            Op::MatMul => {
                // Two run-time operands (attention): the native batched f32 MatMul.
                let Some(b) = g.const_operand(n, 1) else {
                    return Ok(None);
                };
                if b.rank() != 2 || b.dtype() != DType::F32 {
                    return Err("only 2-D constant f32 MatMul weights have an fp32 kernel".into());
                }
                let (k, nn) = (b.shape()[0], b.shape()[1]);
                let packed = gemm_weights(
                    k,
                    nn,
                    b.view::<f32>().map_err(|e| e.to_string())?,
                    WeightLayout::KxN,
                    bf16,
                )?;
                Ok(Some(F32Node::Gemm {
                    kernel,
                    packed,
                    bias: None,
                    k,
                    n: nn,
                }))
            }
            _ => Ok(None),
        }
    }

    pub fn describe(&self) -> String {
        let how = |k: &Kernel| {
            if k.has_bf16_dot() {
                "vdpbf16ps"
            } else {
                "emulated: this CPU or OCTET_ISA lacks AVX512-BF16"
            }
        };
        match self {
            F32Node::Conv {
                packed: ConvWeights::F32(p),
                kernel,
                ..
            } => format!("conv2d_f32 ({})", p.algorithm(kernel)),
            F32Node::Gemm {
                packed: GemmWeights::F32(_),
                ..
            } => "gemm_f32".into(),
            F32Node::Conv {
                packed: ConvWeights::Bf16(_),
                kernel,
                ..
            } => format!("conv2d_bf16 ({})", how(kernel)),
            F32Node::Gemm {
                packed: GemmWeights::Bf16(_),
                kernel,
                ..
            } => format!("gemm_bf16 ({})", how(kernel)),
        }
    }

    /// Runs with bf16 operands.
    pub fn is_bf16(&self) -> bool {
        matches!(
            self,
            F32Node::Conv {
                packed: ConvWeights::Bf16(_),
                ..
            } | F32Node::Gemm {
                packed: GemmWeights::Bf16(_),
                ..
            }
        )
    }

    pub fn kernel(&self) -> Kernel {
        match self {
            F32Node::Conv { kernel, .. } | F32Node::Gemm { kernel, .. } => *kernel,
        }
    }

    pub fn is_conv(&self) -> bool {
        matches!(self, F32Node::Conv { .. })
    }

    /// `relu`: a following Relu fused into the kernel. `res`: a residual Add's other operand
    /// (convolutions only; in the output's layout), added before the ReLU. `in_nhwc` /
    /// `out_nhwc` as for int8 convs.
    pub fn run(
        &self,
        args: &[Option<&Tensor>],
        relu: bool,
        res: Option<&Tensor>,
        in_nhwc: bool,
        out_nhwc: bool,
        pool: &mut super::pool::Pool,
    ) -> R<Tensor> {
        let x = args.first().copied().flatten().ok_or("missing input")?;
        let xv = x.view::<f32>().map_err(|e| e.to_string())?;
        match self {
            F32Node::Conv {
                kernel,
                packed,
                geom,
                bias,
                c_in,
                c_out,
            } => {
                let s = x.shape();
                let cpos = if in_nhwc { 3 } else { 1 };
                if s.len() != 4 || s[cpos] != *c_in {
                    return Err(format!(
                        "input shape {s:?} does not match the packed weights"
                    ));
                }
                let (nb, c, h, w) = if in_nhwc {
                    (s[0], s[3], s[1], s[2])
                } else {
                    (s[0], s[1], s[2], s[3])
                };
                let mut converted = None;
                let data: &[f32] = if in_nhwc {
                    xv
                } else {
                    let mut t = pool.tensor(DType::F32, &[nb, h, w, c]);
                    let nhwc = t.view_mut::<f32>().unwrap();
                    for b in 0..nb {
                        let n = c * h * w;
                        let (src, dst) = (&xv[b * n..(b + 1) * n], &mut nhwc[b * n..(b + 1) * n]);
                        transpose_f32(kernel, src, c, h * w, dst).map_err(|e| e.to_string())?;
                    }
                    converted = Some(t);
                    converted.as_ref().unwrap().view::<f32>().unwrap()
                };
                let (oh, ow) = geom.out_size(h, w).map_err(|e| e.to_string())?;
                let mut out = pool.tensor(DType::F32, &[nb, oh, ow, *c_out]);
                let ov = out.view_mut::<f32>().unwrap();
                let res_v = match res {
                    Some(t) => {
                        if t.len() != ov.len() {
                            return Err(format!(
                                "residual operand {:?} does not match the output",
                                t.shape()
                            ));
                        }
                        Some(t.view::<f32>().map_err(|e| e.to_string())?)
                    }
                    None => None,
                };
                // In NHWC the residual joins the epilogue; otherwise it is added after the
                // conversion back to NCHW (the same operations: conv + bias, + res, ReLU).
                let (fused_res, kernel_relu) = match res_v {
                    Some(r) if out_nhwc => (Some(r), relu),
                    Some(_) => (None, false),
                    None => (None, relu),
                };
                match packed {
                    ConvWeights::F32(p) => conv2d_f32_add(
                        kernel,
                        data,
                        (nb, h, w),
                        p,
                        bias.as_deref(),
                        fused_res,
                        kernel_relu,
                        ov,
                    ),
                    ConvWeights::Bf16(p) if res_v.is_none() => {
                        conv2d_bf16(kernel, data, (nb, h, w), p, bias.as_deref(), relu, ov)
                    }
                    ConvWeights::Bf16(_) => {
                        return Err("a residual add is not fused into bf16 convolutions".into())
                    }
                }
                .map_err(|e| e.to_string())?;
                if let Some(t) = converted {
                    pool.give(t);
                }
                if out_nhwc {
                    Ok(out)
                } else {
                    let mut t = pool.tensor(DType::F32, &[nb, *c_out, oh, ow]);
                    let (tv, ov) = (t.view_mut::<f32>().unwrap(), out.view::<f32>().unwrap());
                    let n = oh * ow * c_out;
                    for b in 0..nb {
                        let (src, dst) = (&ov[b * n..(b + 1) * n], &mut tv[b * n..(b + 1) * n]);
                        transpose_f32(kernel, src, oh * ow, *c_out, dst)
                            .map_err(|e| e.to_string())?;
                    }
                    pool.give(out);
                    if let (Some(r), None) = (res_v, fused_res) {
                        for (y, &v) in t.view_mut::<f32>().unwrap().iter_mut().zip(r) {
                            *y += v;
                            if relu {
                                *y = y.max(0.0);
                            }
                        }
                    }
                    Ok(t)
                }
            }
            F32Node::Gemm {
                kernel,
                packed,
                bias,
                k,
                n,
            } => {
                let s = x.shape();
                if s.is_empty() || s[s.len() - 1] != *k {
                    return Err(format!("input shape {s:?} does not have K = {k}"));
                }
                let m: usize = s[..s.len() - 1].iter().product();
                let mut shape = s.to_vec();
                *shape.last_mut().unwrap() = *n;
                let mut out = pool.tensor(DType::F32, &shape);
                let ov = out.view_mut::<f32>().map_err(|e| e.to_string())?;
                match packed {
                    GemmWeights::F32(p) => {
                        gemm_f32(kernel, m, xv, *k, p, bias.as_deref(), relu, ov, *n)
                    }
                    GemmWeights::Bf16(p) => {
                        gemm_bf16(kernel, m, xv, *k, p, bias.as_deref(), relu, ov, *n)
                    }
                }
                .map_err(|e| e.to_string())?;
                Ok(out)
            }
        }
    }
}
