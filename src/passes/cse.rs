//! Common subexpression elimination: two nodes with the same op (attributes included), the same
//! bf16 flag and the same operands compute the same values, so the later one is dropped and its
//! consumers read the earlier one. Small constants (up to [`MAX_CONST_BYTES`]) with equal dtype,
//! shape and bytes count as the same operand, and are merged too.
//!
//! What it is for: torch.onnx writes the attention mask's `Where(mask, 0, -inf)` once per
//! encoder layer, each with its own copies of the two scalar constants; after shape binding and
//! constant folding all six compute the same tensor on every run.
//!
//! Nodes whose outputs are graph outputs stay (each output keeps its own node and name).

use super::{Pass, PassError};
use octet_ir::{DType, Graph, NodeIndex, Op, Outlet};
use std::collections::{HashMap, HashSet};

pub struct Cse;

/// Constants larger than this are never compared (weights are not duplicated in practice, and
/// hashing them would cost more than it saves).
pub const MAX_CONST_BYTES: usize = 4096;

type Key = (String, bool, Vec<Option<(NodeIndex, usize)>>);

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|node| PassError::Ir {
            pass: "cse",
            source: octet_ir::IrError::Cycle { node },
        })?;
        let graph_outs: HashSet<NodeIndex> = g.outputs.iter().map(|(_, o)| o.node).collect();
        let mut changed = false;
        // Small constants by value -> the first such constant.
        let mut consts: HashMap<(DType, Vec<usize>, Vec<u8>), NodeIndex> = HashMap::new();
        let mut seen: HashMap<Key, NodeIndex> = HashMap::new();
        for n in order {
            let node = g.node(n);
            match &node.op {
                Op::Input => continue,
                Op::Const(t) => {
                    if t.bytes().len() > MAX_CONST_BYTES || graph_outs.contains(&n) {
                        continue;
                    }
                    let key = (t.dtype(), t.shape().to_vec(), t.bytes().to_vec());
                    match consts.get(&key) {
                        Some(&first) => {
                            g.replace_uses(Outlet::new(n, 0), Outlet::new(first, 0));
                            changed = true;
                        }
                        None => {
                            consts.insert(key, n);
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if graph_outs.contains(&n) {
                continue;
            }
            // Operands already point at the representatives: nodes are visited in topological
            // order and every merge rewires its consumers at once.
            let key: Key = (
                format!("{:?}", node.op),
                node.bf16,
                g.operands(n)
                    .iter()
                    .map(|o| o.map(|o| (o.node, o.output)))
                    .collect(),
            );
            match seen.get(&key) {
                Some(&first) => {
                    for i in 0..g.node(n).outputs.len() {
                        g.replace_uses(Outlet::new(n, i), Outlet::new(first, i));
                    }
                    changed = true;
                }
                None => {
                    seen.insert(key, n);
                }
            }
        }
        if changed {
            g.prune_dead();
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::*;

    /// Two "layers" each computing `Where(m, c0, c1)` with their own (equal) scalar constants and
    /// adding it to their input; a third Where with a different constant must stay.
    fn layers() -> Graph {
        let mut g = Graph::new();
        let m = g.add_input("m", ValueType::fixed(DType::Bool, &[1, 4]));
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 4]));
        let mut prev = Outlet::new(x, 0);
        for (l, fill) in [(0, -1e9f32), (1, -1e9), (2, -5.0)] {
            let c0 = g.add_const(&format!("zero{l}"), Tensor::scalar(0.0f32));
            let c1 = g.add_const(&format!("neg{l}"), Tensor::scalar(fill));
            let w = g.add_node(&format!("where{l}"), Op::Where, vec![format!("mask{l}")]);
            g.connect(Outlet::new(m, 0), w, 0);
            g.connect(Outlet::new(c0, 0), w, 1);
            g.connect(Outlet::new(c1, 0), w, 2);
            let a = g.add_node(
                &format!("add{l}"),
                Op::Binary(BinaryOp::Add),
                vec![format!("h{l}")],
            );
            g.connect(prev, a, 0);
            g.connect(Outlet::new(w, 0), a, 1);
            prev = Outlet::new(a, 0);
        }
        g.outputs.push(("y".into(), prev));
        g.infer_types().unwrap();
        g
    }

    #[test]
    fn equal_where_nodes_merge_text() {
        let mut g = layers();
        let before = g.to_text();
        assert!(before.contains("where1"), "{before}");
        assert!(Cse.run(&mut g).unwrap());
        g.verify().unwrap();
        let after = g.to_text();
        // where1 (same op, same operands up to equal constants) is gone; where2 (-5) stays;
        // every Add remains (their first operands differ).
        assert!(
            after.contains("where0") && !after.contains("where1"),
            "{after}"
        );
        assert!(after.contains("where2"), "{after}");
        for a in ["add0", "add1", "add2"] {
            assert!(after.contains(a), "{after}");
        }
        assert_eq!(after.matches("Where").count(), 2, "{after}");
        // Idempotent.
        assert!(!Cse.run(&mut g).unwrap());
    }

    #[test]
    fn merged_graph_computes_the_same_values() {
        let g0 = layers();
        let mut g1 = layers();
        Cse.run(&mut g1).unwrap();
        let inputs = vec![
            (
                "m".to_string(),
                Tensor::from_bools(&[1, 4], &[true, false, true, false]),
            ),
            (
                "x".to_string(),
                Tensor::from_vec(&[2, 4], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            ),
        ];
        let a = crate::reference::run_graph(&g0, &inputs).unwrap();
        let b = crate::reference::run_graph(&g1, &inputs).unwrap();
        assert_eq!(a[0].1.bytes(), b[0].1.bytes());
    }

    #[test]
    fn graph_outputs_and_large_constants_are_kept() {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[1024, 2]));
        let big = vec![1.0f32; 2048];
        let mut outs = vec![];
        for i in 0..2 {
            let c = g.add_const(&format!("w{i}"), Tensor::from_vec(&[1024, 2], big.clone()));
            let a = g.add_node(
                &format!("add{i}"),
                Op::Binary(BinaryOp::Add),
                vec![format!("y{i}")],
            );
            g.connect(Outlet::new(x, 0), a, 0);
            g.connect(Outlet::new(c, 0), a, 1);
            outs.push(Outlet::new(a, 0));
        }
        // Both adds are graph outputs and their constants are 8 KiB: nothing merges.
        g.outputs.push(("y0".into(), outs[0]));
        g.outputs.push(("y1".into(), outs[1]));
        g.infer_types().unwrap();
        assert!(!Cse.run(&mut g).unwrap());
        assert!(g.to_text().contains("add1"));
    }
}
