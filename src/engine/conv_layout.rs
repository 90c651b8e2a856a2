//! What the int8 and fp32 convolution nodes share: the kernels' 2-D geometry from an ONNX Conv
//! and its input shape, and the OIHW -> OHWI weight reordering the kernels pack from.

use octet_ir::ConvAttrs;
use octet_kernels::ConvGeometry;

/// Geometry of a 2-D conv with weight `[c_out, c_in/group, kh, kw]` on input `[n, c_in, h, w]`.
pub fn geometry(
    a: &ConvAttrs,
    w_shape: &[usize],
    x_shape: &[usize],
) -> Result<ConvGeometry, String> {
    if w_shape.len() != 4 || x_shape.len() != 4 {
        return Err("only 2-D convolutions have a kernel".into());
    }
    let (cig, kh, kw) = (w_shape[1], w_shape[2], w_shape[3]);
    if cig * a.group != x_shape[1] {
        return Err("channel count does not match the groups".into());
    }
    let pads = octet_ir::infer::resolve_pads(&a.geom, &[kh, kw], &x_shape[2..]);
    let st = a.geom.strides_or_ones(2);
    let dl = a.geom.dilations_or_ones(2);
    if pads.len() != 4 || st.len() != 2 || dl.len() != 2 {
        return Err("malformed convolution geometry".into());
    }
    Ok(ConvGeometry {
        kernel: (kh, kw),
        stride: (st[0], st[1]),
        dilation: (dl[0], dl[1]),
        pads: [pads[0], pads[1], pads[2], pads[3]],
        groups: a.group,
    })
}

/// OIHW (ONNX) -> OHWI (the kernels' packing order).
pub fn oihw_to_ohwi<T: Copy + Default>(w: &[T], shape: &[usize]) -> Vec<T> {
    let (c_out, cig, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![T::default(); w.len()];
    for o in 0..c_out {
        for i in 0..cig {
            for y in 0..kh {
                for x in 0..kw {
                    out[((o * kh + y) * kw + x) * cig + i] = w[((o * cig + i) * kh + y) * kw + x];
                }
            }
        }
    }
    out
}
