//! Layout conversions at NHWC region boundaries.

use octet_ir::Tensor;

fn to_nchw_typed<T: Copy>(src: &[T], dst: &mut [T], (n, h, w, c): (usize, usize, usize, usize)) {
    let hw = h * w;
    for b in 0..n {
        for p in 0..hw {
            let row = &src[(b * hw + p) * c..(b * hw + p + 1) * c];
            for (ch, &v) in row.iter().enumerate() {
                dst[(b * c + ch) * hw + p] = v;
            }
        }
    }
}

/// [N, H, W, C] -> [N, C, H, W].
pub fn nhwc_to_nchw(x: &Tensor, pool: &mut super::pool::Pool) -> Tensor {
    let s = x.shape();
    let d = (s[0], s[1], s[2], s[3]);
    let mut out = pool.tensor(x.dtype(), &[s[0], s[3], s[1], s[2]]);
    match x.dtype().size() {
        1 => to_nchw_typed(x.bytes(), out.bytes_mut(), d),
        _ => to_nchw_typed::<u32>(
            bytemuck::cast_slice(x.bytes()),
            bytemuck::cast_slice_mut(out.bytes_mut()),
            d,
        ),
    }
    out
}

use super::{Arg, Kind, Step};
use std::collections::HashSet;

/// Which operands of a step may be NHWC.
fn accepts(st: &Step, arg: usize) -> bool {
    match &st.kind {
        Kind::Int8(k) => k.is_conv() && arg == 0,
        Kind::ConvAdd { res_arg, .. } => arg == 0 || arg == *res_arg,
        Kind::F32 { node, res_arg, .. } => node.is_conv() && (arg == 0 || Some(arg) == *res_arg),
        Kind::Native(op) => {
            matches!(
                op,
                super::native::NativeOp::QGap { .. }
                    | super::native::NativeOp::Gap
                    | super::native::NativeOp::DqGap { .. }
            ) && arg == 0
                || op.layout_operands().contains(&arg)
        }
        _ => false,
    }
}

fn is_conv(st: &Step) -> bool {
    match &st.kind {
        Kind::Int8(k) => k.is_conv(),
        Kind::ConvAdd { .. } => true,
        Kind::F32 { node, .. } => node.is_conv(),
        _ => false,
    }
}

/// Choose NHWC for 4-D values produced by convolutions (and element-wise followers) whose every
/// consumer takes NHWC; sets each step's `in_nhwc` / `out_nhwc`.
pub(super) fn plan_nhwc(
    steps: &mut [Step],
    n_slots: usize,
    rank: &[usize],
    graph_outs: &HashSet<usize>,
) {
    let mut consumers: Vec<Vec<(usize, usize)>> = vec![vec![]; n_slots];
    for (i, st) in steps.iter().enumerate() {
        for (j, a) in st.args.iter().enumerate() {
            if let Some(Arg::Slot(s)) = a {
                consumers[*s].push((i, j));
            }
        }
    }
    let follower = |st: &Step| match &st.kind {
        Kind::Native(op) => !op.layout_operands().is_empty(),
        _ => false,
    };
    let mut nhwc = vec![false; n_slots];
    for st in steps.iter() {
        if is_conv(st) || follower(st) {
            if let Some(Some(s)) = st.outs.first() {
                nhwc[*s] = rank[*s] == 4 && !graph_outs.contains(s);
            }
        }
    }
    loop {
        let mut changed = false;
        for s in 0..n_slots {
            if nhwc[s] && !consumers[s].iter().all(|&(i, j)| accepts(&steps[i], j)) {
                nhwc[s] = false;
                changed = true;
            }
        }
        for st in steps.iter() {
            // A fused residual add reads its other operand in the output's layout.
            let res_arg = match &st.kind {
                Kind::ConvAdd { res_arg, .. } => Some(res_arg),
                Kind::F32 {
                    res_arg: Some(r), ..
                } => Some(r),
                _ => None,
            };
            if let Some(res_arg) = res_arg {
                if let (Some(Some(Arg::Slot(r))), Some(Some(o))) =
                    (st.args.get(*res_arg), st.outs.first())
                {
                    if nhwc[*r] != nhwc[*o] {
                        nhwc[*r] = false;
                        nhwc[*o] = false;
                        changed = true;
                    }
                }
                continue;
            }
            if !follower(st) {
                continue;
            }
            let Kind::Native(op) = &st.kind else {
                continue;
            };
            let mut group = vec![];
            let mut ok = true;
            for &j in op.layout_operands() {
                match st.args.get(j).copied().flatten() {
                    Some(Arg::Slot(s)) => group.push(s),
                    _ => ok = false,
                }
            }
            match st.outs.first() {
                Some(Some(s)) => group.push(*s),
                _ => ok = false,
            }
            let all = ok && group.iter().all(|&s| nhwc[s]);
            if !all {
                for s in group {
                    if nhwc[s] {
                        nhwc[s] = false;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for st in steps.iter_mut() {
        st.in_nhwc = matches!(st.args.first(), Some(Some(Arg::Slot(s))) if nhwc[*s]);
        st.out_nhwc = matches!(st.outs.first(), Some(Some(s)) if nhwc[*s]);
    }
}
