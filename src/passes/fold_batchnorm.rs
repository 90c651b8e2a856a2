//! Fold a BatchNormalization that follows a Conv (its sole consumer) into the conv's weights and
//! bias, per output channel `o`:
//! `k = gamma / sqrt(var + eps)`, `w'[o] = w[o] * k[o]`, `b'[o] = (b[o] - mean[o]) * k[o] + beta[o]`
//! (computed in f64, stored as f32). The BatchNorm output name moves to the conv output so that
//! consumers, graph outputs and calibration ranges keep their names.
//!
//! Requires constant weight, bias (or none) and BatchNorm parameters; otherwise the pair is left
//! alone. Constants used only by the folded pair are rewritten in place; shared ones are copied.

use super::{Pass, PassError};
use octet_ir::{DType, Graph, NodeIndex, Op, Outlet, Tensor};

pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold_batchnorm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|node| PassError::Ir {
            pass: "fold_batchnorm",
            source: octet_ir::IrError::Cycle { node },
        })?;
        let mut changed = false;
        for bn in order {
            if !g.g.contains_node(bn) {
                continue;
            }
            if let Some(plan) = match_pair(g, bn) {
                apply(g, plan);
                changed = true;
            }
        }
        Ok(changed)
    }
}

struct Plan {
    conv: NodeIndex,
    bn: NodeIndex,
    w: Tensor,
    b: Tensor,
}

fn f32s(t: &Tensor) -> Option<Vec<f64>> {
    (t.dtype() == DType::F32).then(|| t.to_f64_vec())
}

fn match_pair(g: &Graph, bn: NodeIndex) -> Option<Plan> {
    let Op::BatchNorm { epsilon } = g.node(bn).op else {
        return None;
    };
    let x = g.operand(bn, 0)?;
    if !matches!(g.node(x.node).op, Op::Conv(_)) || x.output != 0 {
        return None;
    }
    let conv = x.node;
    if g.consumers(x).len() != 1 || g.is_graph_output(x) {
        return None;
    }
    let w = g.const_operand(conv, 1)?;
    let o = *w.shape().first()?;
    let params: Vec<Vec<f64>> = (1..5)
        .map(|s| g.const_operand(bn, s).and_then(f32s))
        .collect::<Option<_>>()?;
    if params.iter().any(|p| p.len() != o) {
        return None;
    }
    let wv = f32s(w)?;
    let bias = match g.operand(conv, 2) {
        None => vec![0.0; o],
        Some(_) => f32s(g.const_operand(conv, 2)?)?,
    };
    if bias.len() != o || wv.len() % o != 0 {
        return None;
    }
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let k: Vec<f64> = (0..o)
        .map(|c| gamma[c] / (var[c] + epsilon as f64).sqrt())
        .collect();
    let per = wv.len() / o;
    let w2: Vec<f32> = wv
        .iter()
        .enumerate()
        .map(|(i, &v)| (v * k[i / per]) as f32)
        .collect();
    let b2: Vec<f32> = (0..o)
        .map(|c| ((bias[c] - mean[c]) * k[c] + beta[c]) as f32)
        .collect();
    Some(Plan {
        conv,
        bn,
        w: Tensor::from_vec(w.shape(), w2),
        b: Tensor::from_vec(&[o], b2),
    })
}

/// Put `t` at operand `slot` of `n`: rewrite the constant in place when `n` is its only user,
/// otherwise add a new constant named `name`.
fn set_const(g: &mut Graph, n: NodeIndex, slot: usize, t: Tensor, name: &str) {
    if let Some(o) = g.operand(n, slot) {
        if matches!(g.node(o.node).op, Op::Const(_)) && g.consumers(o).len() == 1 {
            let node = g.node_mut(o.node);
            node.op = Op::Const(t);
            return;
        }
        disconnect(g, n, slot);
    }
    let c = g.add_const(name, t);
    g.connect(Outlet::new(c, 0), n, slot);
}

/// Remove the edge feeding operand `slot` of `n`.
pub(crate) fn disconnect(g: &mut Graph, n: NodeIndex, slot: usize) {
    let e =
        g.g.edge_indices()
            .find(|&e| g.g.edge_endpoints(e).map(|(_, d)| d) == Some(n) && g.g[e].slot == slot);
    if let Some(e) = e {
        g.g.remove_edge(e);
    }
}

fn apply(g: &mut Graph, p: Plan) {
    let conv_name = g.node(p.conv).name.clone();
    set_const(g, p.conv, 1, p.w, &format!("{conv_name}.weight_bnfold"));
    set_const(g, p.conv, 2, p.b, &format!("{conv_name}.bias_bnfold"));
    let bn_out = Outlet::new(p.bn, 0);
    let conv_out = Outlet::new(p.conv, 0);
    let name = g.value(bn_out).name.clone();
    let ty = g.value(bn_out).ty.clone();
    let params: Vec<Outlet> = g.operands(p.bn).into_iter().flatten().skip(1).collect();
    g.replace_uses(bn_out, conv_out);
    g.remove_node(p.bn);
    let v = &mut g.node_mut(p.conv).outputs[0];
    v.name = name;
    if ty.is_some() {
        v.ty = ty;
    }
    for o in params {
        if g.g.contains_node(o.node)
            && matches!(g.node(o.node).op, Op::Const(_))
            && g.consumers(o).is_empty()
            && !g.is_graph_output(o)
        {
            g.remove_node(o.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::*;

    fn conv_bn(with_bias: bool) -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[1, 1, 3, 3]));
        let w = g.add_const("w", Tensor::from_vec(&[2, 1, 1, 1], vec![1.0f32, -2.0]));
        let conv = g.add_node(
            "conv",
            Op::Conv(ConvAttrs {
                geom: ConvGeom {
                    kernel_shape: vec![],
                    strides: vec![1, 1],
                    pads: vec![0, 0, 0, 0],
                    dilations: vec![1, 1],
                    auto_pad: AutoPad::NotSet,
                },
                group: 1,
            }),
            vec!["c".into()],
        );
        g.connect(Outlet::new(x, 0), conv, 0);
        g.connect(Outlet::new(w, 0), conv, 1);
        if with_bias {
            let b = g.add_const("b", Tensor::from_vec(&[2], vec![0.5f32, 0.25]));
            g.connect(Outlet::new(b, 0), conv, 2);
        }
        let bn = g.add_node("bn", Op::BatchNorm { epsilon: 0.0 }, vec!["y".into()]);
        g.connect(Outlet::new(conv, 0), bn, 0);
        let vals = [
            ("gamma", [2.0f32, 3.0]),
            ("beta", [1.0, -1.0]),
            ("mean", [0.5, 1.0]),
            ("var", [4.0, 9.0]),
        ];
        for (i, (n, v)) in vals.iter().enumerate() {
            let c = g.add_const(n, Tensor::from_vec(&[2], v.to_vec()));
            g.connect(Outlet::new(c, 0), bn, i + 1);
        }
        let r = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["z".into()]);
        g.connect(Outlet::new(bn, 0), r, 0);
        g.outputs.push(("z".into(), Outlet::new(r, 0)));
        g.infer_types().unwrap();
        g
    }

    #[test]
    fn folds_conv_batchnorm_text() {
        let mut g = conv_bn(true);
        assert!(FoldBatchNorm.run(&mut g).unwrap());
        g.verify().unwrap();
        // k = [1, 1]: w' = w, b' = (b - mean) * k + beta = [0+1, -0.75-1]
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[1,1,3,3]) -> (%z) {\n  %w = Const [1.0, -2.0] : f32[2,1,1,1]\n  %b = Const [1.0, -1.75] : f32[2]\n  %y = Conv[kernel=[] strides=[1, 1] pads=[0, 0, 0, 0] dilations=[1, 1] auto_pad=NotSet group=1](%x, %w, %b) : f32[1,2,3,3]  # conv\n  %z = Relu(%y) : f32[1,2,3,3]  # relu\n}\n",
            "{}",
            g.to_text()
        );
    }

    #[test]
    fn folding_preserves_outputs() {
        for bias in [true, false] {
            let g0 = conv_bn(bias);
            let mut g = g0.clone();
            // non-trivial k
            if let Some(n) = g.find("var") {
                g.node_mut(n).op = Op::Const(Tensor::from_vec(&[2], vec![0.3f32, 2.5]));
            }
            let g0 = g.clone();
            FoldBatchNorm.run(&mut g).unwrap();
            g.verify().unwrap();
            assert!(!g.to_text().contains("BatchNormalization"));
            let x = Tensor::from_vec(
                &[1, 1, 3, 3],
                vec![0.1f32, -0.7, 2.0, 3.5, -1.0, 0.0, 0.25, 9.0, -4.0],
            );
            let a = crate::reference::run_graph(&g0, &[("x".into(), x.clone())]).unwrap();
            let b = crate::reference::run_graph(&g, &[("x".into(), x)]).unwrap();
            let (a, b) = (a[0].1.view::<f32>().unwrap(), b[0].1.view::<f32>().unwrap());
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() <= 1e-5, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn leaves_batchnorm_with_two_consumers() {
        let mut g = conv_bn(true);
        let c = g.find("conv").unwrap();
        let n = g.add_node("neg", Op::Unary(UnaryOp::Neg), vec!["n".into()]);
        g.connect(Outlet::new(c, 0), n, 0);
        g.outputs.push(("n".into(), Outlet::new(n, 0)));
        g.infer_types().unwrap();
        assert!(!FoldBatchNorm.run(&mut g).unwrap());
    }
}
