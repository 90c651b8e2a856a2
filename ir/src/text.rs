//! The stable text form of a graph (`octet inspect --ir`), used by pass tests as snapshots.
//!
//! ```text
//! graph(%x: f32[N,3]) -> (%y) {
//!   %y = Relu(%x) : f32[N,3]            # relu
//! }
//! ```
//! One line per node in topological order (ties broken by insertion order); constants print
//! their dtype and shape, and their values when they have at most 8 elements.

use crate::graph::Graph;
use crate::op::Op;
use std::fmt::Write;

impl Graph {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let order = match self.topo_order() {
            Ok(o) => o,
            Err(n) => return format!("<graph with a cycle through node {n}>\n"),
        };
        let ty = |v: &crate::graph::Value| {
            v.ty.as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into())
        };
        s.push_str("graph(");
        for (i, &n) in self.inputs.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let v = &self.g[n].outputs[0];
            let _ = write!(s, "%{}: {}", v.name, ty(v));
        }
        s.push_str(") -> (");
        for (i, (name, o)) in self.outputs.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let v = self.value(*o);
            if &v.name == name {
                let _ = write!(s, "%{name}");
            } else {
                let _ = write!(s, "{name}=%{}", v.name);
            }
        }
        s.push_str(") {\n");
        for n in order {
            let node = &self.g[n];
            if matches!(node.op, Op::Input) {
                continue;
            }
            let outs: Vec<String> = node
                .outputs
                .iter()
                .map(|v| format!("%{}", v.name))
                .collect();
            let _ = write!(s, "  {} = {}", outs.join(", "), node.op.name());
            if node.bf16 {
                s.push_str(".bf16");
            }
            match &node.op {
                Op::Const(t) => {
                    if t.len() <= 8 {
                        let _ = write!(s, " {:?}", t.to_f64_vec());
                    }
                }
                op => {
                    let a = op.attr_text();
                    if !a.is_empty() {
                        let _ = write!(s, "[{a}]");
                    }
                    let args: Vec<String> = self
                        .operands(n)
                        .iter()
                        .map(|o| match o {
                            Some(o) => format!("%{}", self.value(*o).name),
                            None => "_".into(),
                        })
                        .collect();
                    let _ = write!(s, "({})", args.join(", "));
                }
            }
            let tys: Vec<String> = node.outputs.iter().map(ty).collect();
            let _ = write!(s, " : {}", tys.join(", "));
            if node.outputs.len() != 1 || node.outputs[0].name != node.name {
                let _ = write!(s, "  # {}", node.name);
            }
            s.push('\n');
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    #[test]
    fn text_form_is_stable() {
        let mut g = Graph::new();
        let x = g.add_input(
            "x",
            ValueType::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(3)])),
        );
        let c = g.add_const("two", Tensor::from_vec(&[1], vec![2.0f32]));
        let m = g.add_node("mul0", Op::Binary(BinaryOp::Mul), vec!["y".into()]);
        g.connect(Outlet::new(x, 0), m, 0);
        g.connect(Outlet::new(c, 0), m, 1);
        g.outputs.push(("y".into(), Outlet::new(m, 0)));
        g.infer_types().unwrap();
        let expect = "graph(%x: f32[N,3]) -> (%y) {\n  %two = Const [2.0] : f32[1]\n  %y = Mul(%x, %two) : f32[N,3]  # mul0\n}\n";
        assert_eq!(g.to_text(), expect);
    }
}
