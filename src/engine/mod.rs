//! The execution engine: runs a (lowered) graph with the int8 SIMD kernels of `octet-kernels`
//! for every integer Conv / Gemm / MatMul (QLinearConv, QGemm, QLinearMatMul, MatMulInteger,
//! ConvInteger), and the reference interpreter for everything else. Weights are prepacked once
//! when the engine is built; the kernel and ISA chosen for each node are recorded in the report,
//! and a node that could not get an int8 kernel says why (no silent fallbacks).
//!
//! This is the first engine: tensors stay in the graph's NCHW layout and each int8 convolution
//! converts to and from the kernels' NHWC layout; memory planning, layout propagation and
//! fusion belong to the compiled execution plan that replaces this step by step.

pub mod fp32;
pub mod int8;
pub mod report;

use crate::reference::{eval_op, RunError};
use octet_ir::{Graph, NodeIndex, Op, Tensor};
use octet_kernels::Kernel;
use report::{NodeReport, Report};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Kernel(#[from] octet_kernels::KernelError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Input(String),
}

/// A graph ready to run: int8 kernels prepacked per node.
pub struct Engine {
    graph: Graph,
    order: Vec<NodeIndex>,
    int8: HashMap<NodeIndex, int8::Int8Node>,
    fp32: HashMap<NodeIndex, fp32::F32Node>,
    report: Report,
    pool: Option<rayon::ThreadPool>,
}

impl Engine {
    /// Build an engine for a static graph (shapes bound, constants folded). `threads` = None uses
    /// rayon's global pool (all cores).
    pub fn new(graph: Graph, threads: Option<usize>) -> Result<Engine, EngineError> {
        let kernel = Kernel::best()?;
        let order = graph
            .topo_order()
            .map_err(|n| EngineError::Input(format!("graph has a cycle through node '{n}'")))?;
        let mut int8 = HashMap::new();
        let mut fp32 = HashMap::new();
        let mut nodes = vec![];
        for &n in &order {
            let node = graph.node(n);
            if matches!(node.op, Op::Input | Op::Const(_)) {
                continue;
            }
            let entry = match int8::Int8Node::build(&graph, n, kernel) {
                Ok(Some(k)) => {
                    let r = NodeReport::int8(node, k.describe(), k.kernel().isa().name());
                    int8.insert(n, k);
                    r
                }
                Err(why) => NodeReport::reference(node, Some(why)),
                Ok(None) => match fp32::F32Node::build(&graph, n, kernel) {
                    Ok(Some(k)) => {
                        let r = NodeReport::fp32(node, k.describe(), k.kernel().isa().name());
                        fp32.insert(n, k);
                        r
                    }
                    Ok(None) => NodeReport::reference(node, None),
                    Err(why) => NodeReport::reference(
                        node,
                        Some(format!("float node on the reference: {why}")),
                    ),
                },
            };
            nodes.push(entry);
        }
        let pool = match threads {
            Some(t) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t.max(1))
                    .build()
                    .map_err(|e| EngineError::Input(format!("cannot start {t} threads: {e}")))?,
            ),
            None => None,
        };
        Ok(Engine {
            graph,
            order,
            int8,
            fp32,
            report: Report {
                isa: kernel.isa().name(),
                nodes,
            },
            pool,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Which kernel runs each node.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Run on named inputs; returns the graph outputs in order.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError> {
        match &self.pool {
            Some(p) => p.install(|| self.run_inner(inputs)),
            None => self.run_inner(inputs),
        }
    }

    fn run_inner(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError> {
        let g = &self.graph;
        // Remaining uses of each value, to free intermediates early.
        let mut uses: HashMap<octet_ir::Outlet, usize> = HashMap::new();
        for &n in &self.order {
            for o in g.operands(n).into_iter().flatten() {
                *uses.entry(o).or_default() += 1;
            }
        }
        for (_, o) in &g.outputs {
            *uses.entry(*o).or_default() += 1;
        }
        let mut values: HashMap<octet_ir::Outlet, Tensor> = HashMap::new();
        let node_err = |n: NodeIndex, msg: String| EngineError::Node {
            node: g.node(n).name.clone(),
            op: g.node(n).op.name().to_string(),
            msg,
        };
        for &n in &self.order {
            let node = g.node(n);
            let outs: Vec<Tensor> = match &node.op {
                Op::Input => {
                    let name = &node.outputs[0].name;
                    let t = inputs
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, t)| t.clone())
                        .ok_or_else(|| {
                            EngineError::Input(format!("model input '{name}' was not given"))
                        })?;
                    if let Some(ty) = &node.outputs[0].ty {
                        let ok = t.dtype() == ty.dtype
                            && t.rank() == ty.shape.rank()
                            && ty
                                .shape
                                .0
                                .iter()
                                .zip(t.shape())
                                .all(|(d, &v)| d.fixed().is_none_or(|f| f == v));
                        if !ok {
                            return Err(EngineError::Input(format!(
                                "input '{name}' must be {ty}, got {} {:?}",
                                t.dtype(),
                                t.shape()
                            )));
                        }
                    }
                    vec![t]
                }
                Op::Const(_) => continue,
                op => {
                    let operands = g.operands(n);
                    let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(operands.len());
                    for o in &operands {
                        args.push(match o {
                            None => None,
                            Some(o) => Some(match &g.node(o.node).op {
                                Op::Const(t) => t,
                                _ => values
                                    .get(o)
                                    .ok_or_else(|| node_err(n, "operand not computed".into()))?,
                            }),
                        });
                    }
                    if let Some(k) = self.int8.get(&n) {
                        vec![k.run(&args).map_err(|m| node_err(n, m))?]
                    } else if let Some(k) = self.fp32.get(&n) {
                        vec![k.run(&args).map_err(|m| node_err(n, m))?]
                    } else {
                        eval_op(op, &args).map_err(|m| node_err(n, m))?
                    }
                }
            };
            for o in g.operands(n).into_iter().flatten() {
                if let Some(u) = uses.get_mut(&o) {
                    *u -= 1;
                    if *u == 0 {
                        values.remove(&o);
                    }
                }
            }
            for (k, t) in outs.into_iter().enumerate() {
                let o = octet_ir::Outlet::new(n, k);
                if uses.get(&o).copied().unwrap_or(0) > 0 {
                    values.insert(o, t);
                }
            }
        }
        g.outputs
            .iter()
            .map(|(name, o)| {
                let t = match &g.node(o.node).op {
                    Op::Const(t) => t.clone(),
                    _ => values.get(o).cloned().ok_or_else(|| {
                        EngineError::Input(format!("output '{name}' was not computed"))
                    })?,
                };
                Ok((name.clone(), t))
            })
            .collect()
    }
}
