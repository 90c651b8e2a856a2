//! The graph: a petgraph `StableGraph` whose nodes are ops and whose edges carry the producer's
//! output index and the consumer's operand slot (petgraph returns edges in reverse insertion
//! order, so slot order must never depend on edge order). StableGraph keeps indices valid while
//! passes rewrite in place.

use crate::op::Op;
use crate::types::ValueType;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;

/// One output of a node: its ONNX tensor name and its type (None until inferred).
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: Option<ValueType>,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// ONNX node name (or a generated one), kept for errors and reports.
    pub name: String,
    pub op: Op,
    pub outputs: Vec<Value>,
    /// A float Conv/Gemm/MatMul to run in bf16: operands rounded to bfloat16 (round to nearest
    /// even), products accumulated in f32 (the tuner's middle precision between int8 and fp32).
    pub bf16: bool,
}

/// Edge payload: which output of the producer feeds which operand slot of the consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wire {
    pub output: usize,
    pub slot: usize,
}

/// A reference to one output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outlet {
    pub node: NodeIndex,
    pub output: usize,
}

impl Outlet {
    pub fn new(node: NodeIndex, output: usize) -> Self {
        Outlet { node, output }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub g: StableGraph<Node, Wire>,
    /// Graph inputs (nodes with `Op::Input`), in the model's order.
    pub inputs: Vec<NodeIndex>,
    /// Graph outputs, in the model's order, with their public names.
    pub outputs: Vec<(String, Outlet)>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a node with `op.num_outputs()` outputs named by `output_names`.
    pub fn add_node(&mut self, name: &str, op: Op, output_names: Vec<String>) -> NodeIndex {
        let outputs = output_names
            .into_iter()
            .map(|name| Value { name, ty: None })
            .collect();
        self.g.add_node(Node {
            name: name.to_string(),
            op,
            outputs,
            bf16: false,
        })
    }

    /// Add a graph input with a known type.
    pub fn add_input(&mut self, name: &str, ty: ValueType) -> NodeIndex {
        let n = self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Input,
            outputs: vec![Value {
                name: name.to_string(),
                ty: Some(ty),
            }],
            bf16: false,
        });
        self.inputs.push(n);
        n
    }

    /// Add a constant node whose value is `t`.
    pub fn add_const(&mut self, name: &str, t: crate::Tensor) -> NodeIndex {
        let ty = ValueType::fixed(t.dtype(), t.shape());
        self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Const(t),
            outputs: vec![Value {
                name: name.to_string(),
                ty: Some(ty),
            }],
            bf16: false,
        })
    }

    pub fn connect(&mut self, src: Outlet, dst: NodeIndex, slot: usize) -> EdgeIndex {
        self.g.add_edge(
            src.node,
            dst,
            Wire {
                output: src.output,
                slot,
            },
        )
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.g[n]
    }
    pub fn node_mut(&mut self, n: NodeIndex) -> &mut Node {
        &mut self.g[n]
    }

    pub fn value(&self, o: Outlet) -> &Value {
        &self.g[o.node].outputs[o.output]
    }

    pub fn ty(&self, o: Outlet) -> Option<&ValueType> {
        self.value(o).ty.as_ref()
    }

    /// Operands of `n`, indexed by slot (`None` for an unconnected optional slot). The vector is
    /// as long as the highest connected slot + 1.
    pub fn operands(&self, n: NodeIndex) -> Vec<Option<Outlet>> {
        let mut v: Vec<Option<Outlet>> = Vec::new();
        for e in self.g.edges_directed(n, Direction::Incoming) {
            let w = e.weight();
            if v.len() <= w.slot {
                v.resize(w.slot + 1, None);
            }
            v[w.slot] = Some(Outlet::new(e.source(), w.output));
        }
        v
    }

    /// The operand at `slot`, if connected.
    pub fn operand(&self, n: NodeIndex, slot: usize) -> Option<Outlet> {
        self.g
            .edges_directed(n, Direction::Incoming)
            .find(|e| e.weight().slot == slot)
            .map(|e| Outlet::new(e.source(), e.weight().output))
    }

    /// Constant value at operand `slot`, when that operand comes from a `Const` node.
    pub fn const_operand(&self, n: NodeIndex, slot: usize) -> Option<&crate::Tensor> {
        let o = self.operand(n, slot)?;
        match &self.g[o.node].op {
            Op::Const(t) => Some(t),
            _ => None,
        }
    }

    /// Consumers of an outlet: (node, slot), sorted for determinism.
    pub fn consumers(&self, o: Outlet) -> Vec<(NodeIndex, usize)> {
        let mut v: Vec<(NodeIndex, usize)> = self
            .g
            .edges_directed(o.node, Direction::Outgoing)
            .filter(|e| e.weight().output == o.output)
            .map(|e| (e.target(), e.weight().slot))
            .collect();
        v.sort();
        v
    }

    /// Is this outlet one of the graph outputs?
    pub fn is_graph_output(&self, o: Outlet) -> bool {
        self.outputs.iter().any(|(_, x)| *x == o)
    }

    /// Make `src` the operand at `slot` of `n`, replacing whatever was connected there.
    pub fn set_operand(&mut self, n: NodeIndex, slot: usize, src: Outlet) {
        let old: Vec<EdgeIndex> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .filter(|e| e.weight().slot == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.connect(src, n, slot);
    }

    /// Redirect every use of `old` (consumer operands and graph outputs) to `new`.
    pub fn replace_uses(&mut self, old: Outlet, new: Outlet) {
        let uses: Vec<(EdgeIndex, NodeIndex, usize)> = self
            .g
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().output == old.output)
            .map(|e| (e.id(), e.target(), e.weight().slot))
            .collect();
        for (e, dst, slot) in uses {
            self.g.remove_edge(e);
            self.connect(new, dst, slot);
        }
        for (_, o) in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Remove a node and its edges.
    pub fn remove_node(&mut self, n: NodeIndex) {
        self.g.remove_node(n);
        self.inputs.retain(|&i| i != n);
    }

    /// Nodes in a topological order (deterministic: ties broken by node index), or the name of a
    /// node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, String> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut indeg: std::collections::HashMap<NodeIndex, usize> =
            self.g.node_indices().map(|n| (n, 0)).collect();
        for e in self.g.edge_references() {
            *indeg.get_mut(&e.target()).unwrap() += 1;
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| Reverse(n))
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).unwrap();
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() != indeg.len() {
            let stuck = indeg
                .iter()
                .filter(|(n, _)| !order.contains(n))
                .map(|(n, _)| *n)
                .min()
                .unwrap();
            return Err(self.g[stuck].name.clone());
        }
        Ok(order)
    }

    /// Remove nodes that no graph output depends on (graph inputs are kept).
    pub fn prune_dead(&mut self) -> usize {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|(_, o)| o.node).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeIndex> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n) && !self.inputs.contains(n))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }

    /// Find a node by name.
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.g.node_indices().find(|&n| self.g[n].name == name)
    }

    /// Number of nodes that are not inputs or constants.
    pub fn op_count(&self) -> usize {
        self.g
            .node_indices()
            .filter(|&n| !matches!(self.g[n].op, Op::Input | Op::Const(_)))
            .count()
    }
}
