//! SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before
//! quantization. For an activation `x` (channels on the last axis) read by MatMul/Gemm nodes
//! with constant weights, each input channel k gets a factor
//!
//! ```text
//! s_k = max|x_k|^alpha / max|W_k|^(1 - alpha)       (max|W_k| over every consumer's row k)
//! x' = x * (1 / s)        (one new Mul feeding those consumers)
//! W'[k, :] = s_k * W[k, :]
//! ```
//!
//! so `x' W' = x W` in exact arithmetic, while `x'` has flat channel ranges (easy to quantize per
//! tensor) and `W'` absorbs the outliers (quantized per output channel). `alpha` = 0.5 balances
//! the two; larger moves more difficulty into the weights.

use crate::passes::fold_batchnorm::disconnect;
use octet_ir::{BinaryOp, DType, Graph, NodeIndex, Op, Outlet, Tensor};
use std::collections::{BTreeSet, HashMap};

/// Row-major view of a consumer's weight as [K, N]: (K, N, transposed?).
fn weight_kn(g: &Graph, n: NodeIndex) -> Option<(usize, usize, bool)> {
    let w = g.const_operand(n, 1)?;
    if w.dtype() != DType::F32 || w.rank() != 2 {
        return None;
    }
    let (r, c) = (w.shape()[0], w.shape()[1]);
    match g.node(n).op {
        Op::MatMul => Some((r, c, false)),
        Op::Gemm {
            trans_a: false,
            trans_b,
            ..
        } => Some(if trans_b { (c, r, true) } else { (r, c, false) }),
        _ => None,
    }
}

/// Activations that can be smoothed: f32 tensors read as operand 0 by MatMul/Gemm nodes with a
/// constant [K, N] weight (K = the last axis), not in `skip`. Returns each with those consumers
/// (other consumers, e.g. a residual Add, keep reading the unsmoothed tensor).
pub fn targets(g: &Graph, skip: &BTreeSet<String>) -> Vec<(Outlet, Vec<NodeIndex>)> {
    let mut by_x: HashMap<Outlet, Vec<NodeIndex>> = HashMap::new();
    for n in g.topo_order().unwrap_or_default() {
        if !matches!(g.node(n).op, Op::MatMul | Op::Gemm { .. }) || skip.contains(&g.node(n).name) {
            continue;
        }
        let Some(x) = g.operand(n, 0) else { continue };
        if g.operand(n, 1) == Some(x) {
            continue;
        }
        by_x.entry(x).or_default().push(n);
    }
    let mut out: Vec<(Outlet, Vec<NodeIndex>)> = by_x
        .into_iter()
        .filter(|(x, cons)| {
            let Some(t) = g.ty(*x) else { return false };
            let k = t.shape.0.last().and_then(|d| d.fixed());
            t.dtype == DType::F32
                && !matches!(g.node(x.node).op, Op::Const(_))
                && cons
                    .iter()
                    .all(|&n| weight_kn(g, n).is_some_and(|(kk, _, _)| Some(kk) == k))
        })
        .collect();
    out.sort_by_key(|(x, _)| (x.node.index(), x.output));
    out
}

/// Smooth every target with statistics in `absmax` (per-channel max |x| on calibration data).
/// Returns the names of the MatMul/Gemm nodes whose input was smoothed.
pub fn smooth(
    g: &mut Graph,
    targets: &[(Outlet, Vec<NodeIndex>)],
    absmax: &HashMap<Outlet, Vec<f32>>,
    alpha: f32,
) -> Vec<String> {
    let mut done = vec![];
    for (x, cons) in targets {
        let Some(ax) = absmax.get(x) else { continue };
        let k = ax.len();
        // max |W[k, :]| over every consumer
        let mut aw = vec![0f32; k];
        for &n in cons {
            let (kk, nn, tr) = weight_kn(g, n).expect("target");
            if kk != k {
                continue;
            }
            let w = g
                .const_operand(n, 1)
                .expect("const")
                .view::<f32>()
                .expect("f32");
            for (r, a) in aw.iter_mut().enumerate() {
                for c in 0..nn {
                    let v = if tr { w[c * kk + r] } else { w[r * nn + c] };
                    *a = a.max(v.abs());
                }
            }
        }
        let s: Vec<f32> = ax
            .iter()
            .zip(&aw)
            .map(|(&a, &w)| {
                if a > 0.0 && w > 0.0 && a.is_finite() && w.is_finite() {
                    (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-5, 1e5)
                } else {
                    1.0
                }
            })
            .collect();
        let xname = g.value(*x).name.clone();
        let inv = g.add_const(
            &format!("{xname}_smooth_scale"),
            Tensor::from_vec(&[k], s.iter().map(|v| 1.0 / v).collect::<Vec<f32>>()),
        );
        let mul = g.add_node(
            &format!("{xname}_smooth"),
            Op::Binary(BinaryOp::Mul),
            vec![format!("{xname}_smoothed")],
        );
        g.connect(*x, mul, 0);
        g.connect(Outlet::new(inv, 0), mul, 1);
        for &n in cons {
            let (kk, nn, tr) = weight_kn(g, n).expect("target");
            let wo = g.operand(n, 1).expect("weight");
            let w = g.const_operand(n, 1).expect("const");
            let mut v = w.view::<f32>().expect("f32").to_vec();
            for r in 0..kk {
                for c in 0..nn {
                    let i = if tr { c * kk + r } else { r * nn + c };
                    v[i] *= s[r];
                }
            }
            let wname = format!("{}_smoothed", g.value(wo).name);
            let shape = w.shape().to_vec();
            let nw = g.add_const(&wname, Tensor::from_vec(&shape, v));
            disconnect(g, n, 1);
            g.connect(Outlet::new(nw, 0), n, 1);
            if g.consumers(wo).is_empty() && !g.is_graph_output(wo) {
                g.remove_node(wo.node);
            }
            disconnect(g, n, 0);
            g.connect(Outlet::new(mul, 0), n, 0);
            done.push(g.node(n).name.clone());
        }
    }
    let _ = g.infer_types();
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::ValueType;

    /// x[2,2] -> MatMul(W[2,2]) -> y; channel 0 of x is an outlier.
    fn mm() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 2]));
        let w = g.add_const("w", Tensor::from_vec(&[2, 2], vec![1.0f32, -1.0, 4.0, 2.0]));
        let m = g.add_node("mm", Op::MatMul, vec!["y".into()]);
        g.connect(Outlet::new(x, 0), m, 0);
        g.connect(Outlet::new(w, 0), m, 1);
        g.outputs.push(("y".into(), Outlet::new(m, 0)));
        g.infer_types().unwrap();
        g
    }

    #[test]
    fn smooths_matmul_text_and_values() {
        let mut g = mm();
        let t = targets(&g, &BTreeSet::new());
        assert_eq!(t.len(), 1);
        let stats: HashMap<Outlet, Vec<f32>> = [(t[0].0, vec![16.0f32, 1.0])].into();
        let before = g.clone();
        let done = smooth(&mut g, &t, &stats, 0.5);
        assert_eq!(done, vec!["mm".to_string()]);
        g.verify().unwrap();
        // s = [sqrt(16)/sqrt(1), sqrt(1)/sqrt(4)] = [4, 0.5]
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[2,2]) -> (%y) {\n  %x_smooth_scale = Const [0.25, 2.0] : f32[2]\n  %x_smoothed = Mul(%x, %x_smooth_scale) : f32[2,2]  # x_smooth\n  %w_smoothed = Const [4.0, -4.0, 2.0, 1.0] : f32[2,2]\n  %y = MatMul(%x_smoothed, %w_smoothed) : f32[2,2]  # mm\n}\n",
            "{}",
            g.to_text()
        );
        let x = vec![(
            "x".to_string(),
            Tensor::from_vec(&[2, 2], vec![16.0f32, 0.5, -8.0, 1.0]),
        )];
        let a = crate::reference::run_graph(&before, &x).unwrap();
        let b = crate::reference::run_graph(&g, &x).unwrap();
        assert_eq!(a[0].1, b[0].1, "exact here: every factor is a power of two");
    }

    #[test]
    fn other_consumers_keep_the_unsmoothed_tensor() {
        let mut g = mm();
        let x = Outlet::new(g.inputs[0], 0);
        let r = g.add_node("relu", Op::Unary(octet_ir::UnaryOp::Relu), vec!["r".into()]);
        g.connect(x, r, 0);
        g.outputs.push(("r".into(), Outlet::new(r, 0)));
        g.infer_types().unwrap();
        let t = targets(&g, &BTreeSet::new());
        assert_eq!(t.len(), 1);
        let stats: HashMap<Outlet, Vec<f32>> = [(t[0].0, vec![16.0f32, 1.0])].into();
        smooth(&mut g, &t, &stats, 0.5);
        assert!(g.to_text().contains("%r = Relu(%x)"), "{}", g.to_text());
        // Excluded nodes are left alone.
        let g = mm();
        assert!(targets(&g, &["mm".to_string()].into()).is_empty());
    }
}
