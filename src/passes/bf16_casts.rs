//! bf16 nodes in standard ONNX. octet marks a float Conv/Gemm/MatMul to run in bf16 (operands
//! rounded to bfloat16, products summed in f32) with `Node::bf16`; ONNX has no such flag, so a
//! file states the same arithmetic with standard ops:
//!
//! ```text
//! y = Conv(Cast<f32>(Cast<bf16>(x)), W_bf16_exact, b)      # W's values are bf16-representable
//! ```
//!
//! [`to_casts`] writes that form (for export; any runtime computes the same values up to
//! summation order), and the [`FoldBf16Casts`] pass reads it back into a bf16-marked node on
//! import, so a tuned model keeps its bf16 nodes through an ONNX file.

use super::{Pass, PassError};
use crate::passes::fold_batchnorm::disconnect;
use octet_ir::{DType, Graph, NodeIndex, Op, Outlet, Tensor};

fn is_compute(op: &Op) -> bool {
    matches!(op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul)
}

/// A constant f32 tensor whose every value is a bfloat16 value.
fn bf16_exact(t: &Tensor) -> bool {
    t.dtype() == DType::F32
        && t.view::<f32>().is_ok_and(|v| {
            v.iter()
                .all(|&x| x.is_nan() || half::bf16::from_f32(x).to_f32() == x)
        })
}

/// Rewrite every bf16-marked node into the Cast form (flag cleared, weight rounded).
pub fn to_casts(g: &mut Graph) {
    let nodes: Vec<NodeIndex> =
        g.g.node_indices()
            .filter(|&n| g.node(n).bf16 && is_compute(&g.node(n).op))
            .collect();
    for n in nodes {
        let name = g.node(n).name.clone();
        if let (Some(w), Some(wo)) = (g.const_operand(n, 1).cloned(), g.operand(n, 1)) {
            let rounded = crate::reference::round_to_bf16(&w);
            let wname = format!("{}_bf16", g.value(wo).name);
            let c = g.add_const(&wname, rounded);
            disconnect(g, n, 1);
            g.connect(Outlet::new(c, 0), n, 1);
            if g.consumers(wo).is_empty() && !g.is_graph_output(wo) {
                g.remove_node(wo.node);
            }
        }
        if let Some(x) = g.operand(n, 0) {
            let xn = g.value(x).name.clone();
            let down = g.add_node(
                &format!("{name}_to_bf16"),
                Op::Cast { to: DType::BF16 },
                vec![format!("{xn}_{name}_bf16")],
            );
            g.connect(x, down, 0);
            let up = g.add_node(
                &format!("{name}_from_bf16"),
                Op::Cast { to: DType::F32 },
                vec![format!("{xn}_{name}_bf16_f32")],
            );
            g.connect(Outlet::new(down, 0), up, 0);
            disconnect(g, n, 0);
            g.connect(Outlet::new(up, 0), n, 0);
        }
        g.node_mut(n).bf16 = false;
    }
    let _ = g.infer_types();
}

/// `Cast<f32>(Cast<bf16>(x))` into a Conv/Gemm/MatMul with a bf16-exact constant weight becomes
/// the node run in bf16.
pub struct FoldBf16Casts;

impl Pass for FoldBf16Casts {
    fn name(&self) -> &'static str {
        "fold_bf16_casts"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        let nodes: Vec<NodeIndex> =
            g.g.node_indices()
                .filter(|&n| is_compute(&g.node(n).op))
                .collect();
        for n in nodes {
            let Some(up) = g.operand(n, 0) else { continue };
            if !matches!(g.node(up.node).op, Op::Cast { to: DType::F32 }) {
                continue;
            }
            let Some(down) = g.operand(up.node, 0) else {
                continue;
            };
            if !matches!(g.node(down.node).op, Op::Cast { to: DType::BF16 }) {
                continue;
            }
            let Some(x) = g.operand(down.node, 0) else {
                continue;
            };
            if !g.ty(x).is_some_and(|t| t.dtype == DType::F32)
                || !g.const_operand(n, 1).is_some_and(bf16_exact)
            {
                continue;
            }
            disconnect(g, n, 0);
            g.connect(x, n, 0);
            for c in [up, down] {
                if g.consumers(c).is_empty() && !g.is_graph_output(c) {
                    disconnect(g, c.node, 0);
                    g.remove_node(c.node);
                }
            }
            g.node_mut(n).bf16 = true;
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::ValueType;

    /// x[2,3] -> Gemm(W[3,2]) -> y, the Gemm marked bf16.
    fn gemm_bf16() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 3]));
        let w = g.add_const(
            "w",
            Tensor::from_vec(&[3, 2], vec![1.0f32, 0.5, 1.0 / 3.0, -2.0, 3.0, 0.25]),
        );
        let m = g.add_node(
            "gemm",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            vec!["y".into()],
        );
        g.connect(Outlet::new(x, 0), m, 0);
        g.connect(Outlet::new(w, 0), m, 1);
        g.outputs.push(("y".into(), Outlet::new(m, 0)));
        g.infer_types().unwrap();
        g.node_mut(m).bf16 = true;
        g
    }

    #[test]
    fn casts_round_trip_text() {
        let mut g = gemm_bf16();
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[2,3]) -> (%y) {\n  %w = Const [1.0, 0.5, 0.3333333432674408, -2.0, 3.0, 0.25] : f32[3,2]\n  %y = Gemm.bf16[alpha=1 beta=1 trans_a=false trans_b=false](%x, %w) : f32[2,2]  # gemm\n}\n"
        );
        to_casts(&mut g);
        g.verify().unwrap();
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[2,3]) -> (%y) {\n  %x_gemm_bf16 = Cast[to=bf16](%x) : bf16[2,3]  # gemm_to_bf16\n  %w_bf16 = Const [1.0, 0.5, 0.333984375, -2.0, 3.0, 0.25] : f32[3,2]\n  %x_gemm_bf16_f32 = Cast[to=f32](%x_gemm_bf16) : f32[2,3]  # gemm_from_bf16\n  %y = Gemm[alpha=1 beta=1 trans_a=false trans_b=false](%x_gemm_bf16_f32, %w_bf16) : f32[2,2]  # gemm\n}\n",
            "{}",
            g.to_text()
        );
        assert!(FoldBf16Casts.run(&mut g).unwrap());
        g.verify().unwrap();
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[2,3]) -> (%y) {\n  %w_bf16 = Const [1.0, 0.5, 0.333984375, -2.0, 3.0, 0.25] : f32[3,2]\n  %y = Gemm.bf16[alpha=1 beta=1 trans_a=false trans_b=false](%x, %w_bf16) : f32[2,2]  # gemm\n}\n",
            "{}",
            g.to_text()
        );
    }

    #[test]
    fn casts_with_an_inexact_weight_are_left_alone() {
        let mut g = gemm_bf16();
        to_casts(&mut g);
        let w = g.find("w_bf16").unwrap();
        g.node_mut(w).op = Op::Const(Tensor::from_vec(
            &[3, 2],
            vec![1.0f32, 0.5, 1.0 / 3.0, -2.0, 3.0, 0.25],
        ));
        assert!(!FoldBf16Casts.run(&mut g).unwrap());
        assert!(g.to_text().contains("Cast[to=bf16]"));
    }
}
