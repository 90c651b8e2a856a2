//! The verifier: structural and type invariants every pass must preserve. Run after every pass
//! in tests and debug builds (`Graph::verify`).

use crate::graph::Graph;
use crate::infer::{infer_op, Operand, Symbols};
use crate::op::Op;
use crate::IrError;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

impl Graph {
    /// Check: acyclic; every required operand slot connected exactly once and no slot beyond the
    /// op's arity; wires name existing outputs; output counts match the op; every value typed;
    /// stored types agree with inference; quantization parameters well formed; graph inputs and
    /// outputs exist.
    pub fn verify(&self) -> Result<(), IrError> {
        self.verify_with(true)
    }

    /// As [`Graph::verify`]; with `require_types` false, values left untyped by inference (not
    /// knowable before constant folding) are allowed, and type agreement is checked only where
    /// a node and its operands are typed. Used between passes of a pipeline that ends typed.
    pub fn verify_with(&self, require_types: bool) -> Result<(), IrError> {
        let order = self.topo_order().map_err(|node| IrError::Cycle { node })?;
        let err = |n: petgraph::stable_graph::NodeIndex, msg: String| IrError::Node {
            node: self.g[n].name.clone(),
            op: self.g[n].op.name(),
            msg,
        };
        for &i in &self.inputs {
            if !self.g.contains_node(i) || !matches!(self.g[i].op, Op::Input) {
                return Err(IrError::Invalid(
                    "graph input list names a non-input node".into(),
                ));
            }
        }
        for (name, o) in &self.outputs {
            if !self.g.contains_node(o.node) || o.output >= self.g[o.node].outputs.len() {
                return Err(IrError::Invalid(format!(
                    "graph output {name} refers to a missing value"
                )));
            }
        }
        let mut syms = Symbols::default();
        for n in order {
            let node = &self.g[n];
            if node.outputs.len() != node.op.num_outputs() {
                return Err(err(
                    n,
                    format!(
                        "{} outputs, op has {}",
                        node.outputs.len(),
                        node.op.num_outputs()
                    ),
                ));
            }
            let operands = self.operands(n);
            let mut slots: Vec<usize> = vec![];
            for e in self.g.edges_directed(n, Direction::Incoming) {
                let w = e.weight();
                if w.output >= self.g[e.source()].outputs.len() {
                    return Err(err(
                        n,
                        format!(
                            "operand {} reads output {} of {}, which does not exist",
                            w.slot,
                            w.output,
                            self.g[e.source()].name
                        ),
                    ));
                }
                slots.push(w.slot);
            }
            slots.sort();
            if slots.windows(2).any(|w| w[0] == w[1]) {
                return Err(err(n, "an operand slot is connected twice".into()));
            }
            let (min, max) = node.op.arity();
            for s in 0..min {
                if !slots.contains(&s) {
                    return Err(err(
                        n,
                        format!("required operand slot {s} is not connected"),
                    ));
                }
            }
            if let Some(&last) = slots.last() {
                if max != usize::MAX && last >= max {
                    return Err(err(
                        n,
                        format!("operand slot {last} exceeds the op's {max} operands"),
                    ));
                }
            }
            if matches!(
                node.op,
                Op::Variadic(_) | Op::Concat { .. } | Op::Einsum { .. }
            ) {
                if slots.iter().enumerate().any(|(i, &s)| i != s) {
                    return Err(err(n, "variadic operands must be contiguous".into()));
                }
            }
            let mut all_typed = true;
            for v in &node.outputs {
                let Some(ty) = &v.ty else {
                    if require_types {
                        return Err(err(n, format!("value {} has no type", v.name)));
                    }
                    all_typed = false;
                    continue;
                };
                if let Some(q) = &ty.quant {
                    if !(ty.dtype.is_int()) {
                        return Err(err(
                            n,
                            format!("value {} is quantized but stored as {}", v.name, ty.dtype),
                        ));
                    }
                    if q.scale.len() != q.zero_point.len() || q.scale.is_empty() {
                        return Err(err(
                            n,
                            format!(
                                "value {}: {} scales, {} zero points",
                                v.name,
                                q.scale.len(),
                                q.zero_point.len()
                            ),
                        ));
                    }
                    if q.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                        return Err(err(
                            n,
                            format!("value {} has a non-positive or non-finite scale", v.name),
                        ));
                    }
                    match q.axis {
                        None if q.scale.len() != 1 => {
                            return Err(err(
                                n,
                                format!(
                                    "value {}: per-tensor with {} scales",
                                    v.name,
                                    q.scale.len()
                                ),
                            ))
                        }
                        Some(a) => {
                            let d = ty.shape.0.get(a).ok_or_else(|| {
                                err(n, format!("value {}: quant axis {a} beyond rank", v.name))
                            })?;
                            if let Some(d) = d.fixed() {
                                if d != q.scale.len() {
                                    return Err(err(
                                        n,
                                        format!(
                                            "value {}: {} scales for axis extent {d}",
                                            v.name,
                                            q.scale.len()
                                        ),
                                    ));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if matches!(node.op, Op::Input) || !all_typed {
                continue;
            }
            if operands
                .iter()
                .flatten()
                .any(|o| self.value(*o).ty.is_none())
            {
                continue;
            }
            // Stored types must agree with what inference derives from the operands.
            let mut tys = vec![];
            for o in &operands {
                tys.push(o.map(|o| Operand {
                    ty: self.value(o).ty.as_ref().unwrap(),
                    value: match &self.g[o.node].op {
                        Op::Const(t) => Some(t),
                        _ => None,
                    },
                }));
            }
            let inferred =
                infer_op(&node.op, &tys, &mut syms).map_err(|m| err(n, m.to_string()))?;
            for (v, t) in node.outputs.iter().zip(inferred) {
                let s = v.ty.as_ref().unwrap();
                let dims_agree = s.shape.rank() == t.shape.rank()
                    && s.shape.0.iter().zip(&t.shape.0).all(|(a, b)| {
                        match (a.fixed(), b.fixed()) {
                            (Some(x), Some(y)) => x == y,
                            _ => true,
                        }
                    });
                if s.dtype != t.dtype || !dims_agree {
                    return Err(err(
                        n,
                        format!("value {} is typed {s} but its operands give {t}", v.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    fn tiny() -> (Graph, NodeIndex) {
        let mut g = Graph::new();
        let x = g.add_input("x", ValueType::fixed(DType::F32, &[2, 3]));
        let r = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["y".into()]);
        g.connect(Outlet::new(x, 0), r, 0);
        g.outputs.push(("y".into(), Outlet::new(r, 0)));
        g.infer_types().unwrap();
        (g, r)
    }

    #[test]
    fn accepts_a_well_formed_graph() {
        tiny().0.verify().unwrap();
    }

    #[test]
    fn rejects_a_cycle_naming_a_node() {
        let (mut g, r) = tiny();
        let r2 = g.add_node("relu2", Op::Unary(UnaryOp::Relu), vec!["z".into()]);
        g.connect(Outlet::new(r, 0), r2, 0);
        let e = g.g.find_edge(g.inputs[0], r).unwrap();
        g.g.remove_edge(e);
        g.connect(Outlet::new(r2, 0), r, 0);
        let e = g.verify().unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn rejects_unconnected_required_slot() {
        let (mut g, _) = tiny();
        let a = g.add_node("add", Op::Binary(BinaryOp::Add), vec!["s".into()]);
        g.connect(Outlet::new(g.inputs[0], 0), a, 0);
        g.node_mut(a).outputs[0].ty = Some(ValueType::fixed(DType::F32, &[2, 3]));
        let e = g.verify().unwrap_err().to_string();
        assert!(e.contains("add") && e.contains("slot 1"), "{e}");
    }

    #[test]
    fn rejects_a_stale_type() {
        let (mut g, r) = tiny();
        g.node_mut(r).outputs[0].ty = Some(ValueType::fixed(DType::F32, &[3, 2]));
        let e = g.verify().unwrap_err().to_string();
        assert!(e.contains("typed"), "{e}");
    }

    #[test]
    fn rejects_bad_quant_params() {
        let (mut g, r) = tiny();
        let mut t = ValueType::fixed(DType::U8, &[2, 3]);
        t.quant = Some(QuantParams::per_axis(1, vec![0.1, 0.2], vec![0, 0]));
        g.node_mut(r).outputs[0].ty = Some(t);
        let e = g.verify().unwrap_err().to_string();
        assert!(
            e.contains("scales for axis extent 3") || e.contains("typed"),
            "{e}"
        );
    }
}
