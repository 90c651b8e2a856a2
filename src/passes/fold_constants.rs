//! Constant folding: a node whose operands are all constants is evaluated once with the
//! reference interpreter and replaced by a constant; `Shape` and `Size` of a value with a static
//! type fold even though the value itself is not constant. Together with shape binding this
//! removes the Shape/Gather/Unsqueeze/Concat/Reshape chains that torch.onnx emits for BERT-class
//! models. Runs to a fixed point; dead nodes are pruned at the end.

use super::{Pass, PassError};
use octet_ir::{Graph, Op, Outlet, Tensor};

pub struct FoldConstants;

/// Folding never builds constants larger than this many bytes (a huge ConstantOfShape stays an
/// op rather than bloating the model).
const MAX_FOLDED_BYTES: usize = 64 << 20;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let mut changed_any = false;
        loop {
            let mut changed = false;
            let order = g.topo_order().map_err(|node| PassError::Ir {
                pass: "fold_constants",
                source: octet_ir::IrError::Cycle { node },
            })?;
            for n in order {
                let node = g.node(n);
                // A DequantizeLinear of a constant is a quantized weight: folding it would throw
                // the quantization away, so it stays for the lowering passes.
                if matches!(
                    node.op,
                    Op::Input | Op::Const(_) | Op::DequantizeLinear { .. }
                ) {
                    continue;
                }
                let operands = g.operands(n);
                let folded: Option<Vec<Tensor>> = if node.op.reads_only_shape() {
                    let ty = operands[0].and_then(|o| g.ty(o));
                    match (ty.and_then(|t| t.shape.as_fixed()), &node.op) {
                        (Some(dims), op) => Some(vec![shape_fold(op, &dims)]),
                        _ => None,
                    }
                } else {
                    let mut consts = vec![];
                    let mut all = true;
                    for o in &operands {
                        match o {
                            None => consts.push(None),
                            Some(o) => match &g.node(o.node).op {
                                Op::Const(t) => consts.push(Some(t)),
                                _ => {
                                    all = false;
                                    break;
                                }
                            },
                        }
                    }
                    if !all || operands.is_empty() && !matches!(node.op, Op::ConstantOfShape { .. })
                    {
                        None
                    } else {
                        let r = crate::reference::eval_op(&node.op, &consts).map_err(|msg| {
                            PassError::Node {
                                pass: "fold_constants",
                                node: node.name.clone(),
                                op: node.op.name().to_string(),
                                msg,
                            }
                        })?;
                        if r.iter().map(|t| t.bytes().len()).sum::<usize>() > MAX_FOLDED_BYTES {
                            None
                        } else {
                            Some(r)
                        }
                    }
                };
                let Some(values) = folded else { continue };
                let node = g.node(n);
                let outs: Vec<String> = node.outputs.iter().map(|v| v.name.clone()).collect();
                for (k, t) in values.into_iter().enumerate() {
                    let c = g.add_const(&outs[k], t);
                    // Keep quantization parameters the folded value carried.
                    let quant = g.node(n).outputs[k]
                        .ty
                        .as_ref()
                        .and_then(|t| t.quant.clone());
                    if let Some(ty) = g.node_mut(c).outputs[0].ty.as_mut() {
                        ty.quant = quant;
                    }
                    g.replace_uses(Outlet::new(n, k), Outlet::new(c, 0));
                }
                g.remove_node(n);
                changed = true;
            }
            if !changed {
                break;
            }
            changed_any = true;
            // Folded shape operands make downstream types more precise: re-infer before the
            // next round so Shape/Size of newly static values fold too.
            g.infer_types().map_err(|source| PassError::Ir {
                pass: "fold_constants",
                source,
            })?;
        }
        if g.prune_dead() > 0 {
            changed_any = true;
        }
        // Types of the remaining nodes may now be more precise (constant shape operands).
        g.infer_types().map_err(|source| PassError::Ir {
            pass: "fold_constants",
            source,
        })?;
        Ok(changed_any)
    }
}

fn shape_fold(op: &Op, dims: &[usize]) -> Tensor {
    match op {
        Op::Shape { start, end } => {
            let r = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            let v: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
            Tensor::from_slice(&[v.len()], &v)
        }
        _ => Tensor::scalar(dims.iter().product::<usize>() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::bind_shapes::BindShapes;
    use octet_ir::*;

    /// x:[N,4] -> Shape -> Gather(0) -> Unsqueeze -> Concat(-1) -> Reshape(x): the torch.onnx idiom.
    fn torch_like() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input(
            "x",
            ValueType::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(4)])),
        );
        let sh = g.add_node(
            "shape",
            Op::Shape {
                start: 0,
                end: None,
            },
            vec!["s".into()],
        );
        g.connect(Outlet::new(x, 0), sh, 0);
        let i0 = g.add_const("zero", Tensor::scalar(0i64));
        let ga = g.add_node("gather", Op::Gather { axis: 0 }, vec!["n".into()]);
        g.connect(Outlet::new(sh, 0), ga, 0);
        g.connect(Outlet::new(i0, 0), ga, 1);
        let ax = g.add_const("ax", Tensor::from_vec(&[1], vec![0i64]));
        let un = g.add_node("unsq", Op::Unsqueeze, vec!["n1".into()]);
        g.connect(Outlet::new(ga, 0), un, 0);
        g.connect(Outlet::new(ax, 0), un, 1);
        let m1 = g.add_const("m1", Tensor::from_vec(&[1], vec![-1i64]));
        let cc = g.add_node("concat", Op::Concat { axis: 0 }, vec!["target".into()]);
        g.connect(Outlet::new(un, 0), cc, 0);
        g.connect(Outlet::new(m1, 0), cc, 1);
        let rs = g.add_node(
            "reshape",
            Op::Reshape { allowzero: false },
            vec!["y".into()],
        );
        g.connect(Outlet::new(x, 0), rs, 0);
        g.connect(Outlet::new(cc, 0), rs, 1);
        g.outputs.push(("y".into(), Outlet::new(rs, 0)));
        g.infer_types().unwrap();
        g
    }

    #[test]
    fn shape_chain_folds_away_once_shapes_are_bound() {
        let mut g = torch_like();
        // Symbolic: nothing to fold, Shape chain stays.
        FoldConstants.run(&mut g).unwrap();
        assert!(g.to_text().contains("Shape"), "{}", g.to_text());
        BindShapes {
            shapes: vec![("x".into(), vec![3, 4])],
        }
        .run(&mut g)
        .unwrap();
        FoldConstants.run(&mut g).unwrap();
        g.verify().unwrap();
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[3,4]) -> (%y) {\n  %target = Const [3.0, -1.0] : i64[2]\n  %y = Reshape[allowzero=false](%x, %target) : f32[3,4]  # reshape\n}\n"
        );
    }
}
