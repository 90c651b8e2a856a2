//! Move a multiplication by a constant scalar above the data-movement ops that feed it:
//! `Mul(Transpose(Reshape(x)), c)` becomes `Transpose(Reshape(Mul(x, c)))`. Reshape, Transpose,
//! Squeeze, Unsqueeze and Flatten only move elements, so every output element is the same `x * c`
//! either way (bit-identical).
//!
//! What it is for: BERT exports scale attention's queries and keys by `1 / sqrt(sqrt(d))` after
//! splitting the heads (`Reshape -> Transpose -> Mul`). Next to the producing MatMul + bias, the
//! scale joins that GEMM's epilogue, and dynamic quantization then quantizes the keys before
//! their transpose (a u8 transpose instead of an f32 one).
//!
//! Only chains whose ops each have one consumer (and are not graph outputs) move.

use super::{Pass, PassError};
use octet_ir::{BinaryOp, DType, Graph, NodeIndex, Op, Outlet};

pub struct HoistScalarMul;

fn moves_data_only(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Flatten { .. }
    )
}

/// The scalar f32 constant operand of a Mul and the other operand's slot.
fn scalar_const(g: &Graph, mul: NodeIndex) -> Option<(usize, Outlet)> {
    (0..2).find_map(|slot| {
        let t = g.const_operand(mul, slot)?;
        (t.dtype() == DType::F32 && t.len() == 1).then(|| (1 - slot, g.operand(mul, slot).unwrap()))
    })
}

impl Pass for HoistScalarMul {
    fn name(&self) -> &'static str {
        "hoist_scalar_mul"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|node| PassError::Ir {
            pass: "hoist_scalar_mul",
            source: octet_ir::IrError::Cycle { node },
        })?;
        let mut changed = false;
        for mul in order {
            if !matches!(g.node(mul).op, Op::Binary(BinaryOp::Mul)) {
                continue;
            }
            let Some((xslot, c)) = scalar_const(g, mul) else {
                continue;
            };
            let Some(x) = g.operand(mul, xslot) else {
                continue;
            };
            // Walk up the chain of single-consumer data-movement ops.
            let mut chain: Vec<NodeIndex> = vec![];
            let mut cur = x;
            while moves_data_only(&g.node(cur.node).op)
                && g.consumers(cur).len() == 1
                && !g.is_graph_output(cur)
                && g.node(cur.node).outputs.len() == 1
            {
                chain.push(cur.node);
                match g.operand(cur.node, 0) {
                    Some(o) => cur = o,
                    None => break,
                }
            }
            if chain.is_empty() || g.ty(cur).is_none_or(|t| t.dtype != DType::F32) {
                continue;
            }
            // cur -> chain.last() -> ... -> chain[0] -> mul  becomes
            // cur -> mul -> chain.last() -> ... -> chain[0] -> (mul's consumers)
            let top = *chain.last().unwrap();
            let bottom = chain[0];
            let mul_out = Outlet::new(mul, 0);
            let bottom_out = Outlet::new(bottom, 0);
            // Consumers of the Mul read the chain's end instead (the Mul's value name moves
            // too, so graph outputs and later passes keep their names).
            let mul_name = g.value(mul_out).name.clone();
            let bottom_name = g.value(bottom_out).name.clone();
            g.replace_uses(mul_out, bottom_out);
            g.set_operand(top, 0, mul_out);
            g.set_operand(mul, xslot, cur);
            g.set_operand(mul, 1 - xslot, c);
            let mul_ty = g.ty(cur).cloned();
            let bottom_ty = g.node(mul).outputs[0].ty.clone();
            g.node_mut(mul).outputs[0].ty = mul_ty;
            g.node_mut(mul).outputs[0].name = bottom_name;
            g.node_mut(bottom).outputs[0].ty = bottom_ty;
            g.node_mut(bottom).outputs[0].name = mul_name;
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::*;

    /// x [2, 6] -> Reshape [2, 2, 3] -> Transpose (0, 2, 1) -> Mul 0.5 -> y
    fn heads() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 6]));
        let shape = g.add_const("shape", Tensor::from_vec(&[3], vec![2i64, 2, 3]));
        let r = g.add_node(
            "reshape",
            Op::Reshape { allowzero: false },
            vec!["r".into()],
        );
        g.connect(Outlet::new(x, 0), r, 0);
        g.connect(Outlet::new(shape, 0), r, 1);
        let t = g.add_node(
            "transpose",
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            vec!["t".into()],
        );
        g.connect(Outlet::new(r, 0), t, 0);
        let c = g.add_const("c", Tensor::scalar(0.5f32));
        let m = g.add_node("mul", Op::Binary(BinaryOp::Mul), vec!["y".into()]);
        g.connect(Outlet::new(t, 0), m, 0);
        g.connect(Outlet::new(c, 0), m, 1);
        g.outputs.push(("y".into(), Outlet::new(m, 0)));
        g.infer_types().unwrap();
        g
    }

    #[test]
    fn scalar_mul_moves_above_reshape_and_transpose_text() {
        let mut g = heads();
        let before = g.to_text();
        assert!(HoistScalarMul.run(&mut g).unwrap());
        g.verify().unwrap();
        let after = g.to_text();
        // The Mul now reads x; the transpose produces the graph output "y".
        let pos = |s: &str, what: &str| s.find(what).unwrap_or_else(|| panic!("{what}: {s}"));
        assert!(
            pos(&after, "Mul") < pos(&after, "Reshape"),
            "{before}\n=>\n{after}"
        );
        assert!(pos(&after, "Reshape") < pos(&after, "Transpose"), "{after}");
        assert_eq!(g.outputs[0].1.node, g.find("transpose").unwrap());
        assert!(!HoistScalarMul.run(&mut g).unwrap(), "idempotent");
    }

    #[test]
    fn values_are_bit_identical() {
        let g0 = heads();
        let mut g1 = heads();
        HoistScalarMul.run(&mut g1).unwrap();
        let x = Tensor::from_vec(
            &[2, 6],
            (0..12).map(|i| i as f32 * 0.37 - 1.1).collect::<Vec<f32>>(),
        );
        let f = vec![("x".to_string(), x)];
        let a = crate::reference::run_graph(&g0, &f).unwrap();
        let b = crate::reference::run_graph(&g1, &f).unwrap();
        assert_eq!(a[0].0, b[0].0);
        assert_eq!(a[0].1.shape(), b[0].1.shape());
        assert_eq!(a[0].1.bytes(), b[0].1.bytes());
    }

    #[test]
    fn shared_chain_values_stay() {
        // The transpose output is also a graph output: nothing moves.
        let mut g = heads();
        let t = g.find("transpose").unwrap();
        g.outputs.push(("t".into(), Outlet::new(t, 0)));
        assert!(!HoistScalarMul.run(&mut g).unwrap());
    }
}
