//! `octet inspect MODEL [--shape name=DxD..] [--ir]`.

use crate::frontend::onnx::{self, summary::raw_summary, ImportError};
use crate::passes::bind_shapes::parse_shape_arg;
use octet_ir::Op;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Fix an input's shape, e.g. `--shape input_ids=1x128` (repeatable); symbolic dimensions
    /// become static and shape computations fold away.
    #[arg(long = "shape", value_name = "NAME=DxD..")]
    pub shapes: Vec<String>,
    /// Print the whole graph in octet's IR text form.
    #[arg(long)]
    pub ir: bool,
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let shapes = a
        .shapes
        .iter()
        .map(|s| parse_shape_arg(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let raw = raw_summary(&a.model)?;
    println!("model: {}", a.model.display());
    if !raw.producer.is_empty() {
        println!("producer: {}", raw.producer);
    }
    let opsets: Vec<String> = raw
        .opsets
        .iter()
        .map(|(d, v)| {
            format!(
                "{}{v}",
                if d.is_empty() {
                    "ai.onnx:".to_string()
                } else {
                    format!("{d}:")
                }
            )
        })
        .collect();
    println!("opsets: {}", opsets.join(", "));
    println!(
        "parameters: {} in {} initializers",
        raw.parameters, raw.initializers
    );
    match onnx::load(&a.model) {
        Err(ImportError::Unsupported { ops, .. }) => {
            println!("operators in the file ({} nodes):", raw.node_count);
            for (op, n) in &raw.op_histogram {
                println!("  {op:<28} {n}");
            }
            println!("unsupported operators ({}):", ops.len());
            for u in &ops {
                let dom = if u.domain.is_empty() {
                    String::new()
                } else {
                    format!("{}:", u.domain)
                };
                println!(
                    "  {dom}{} (opset {}): {}; nodes: {}",
                    u.op_type,
                    u.opset,
                    u.reason,
                    u.nodes.join(", ")
                );
            }
            anyhow::bail!(
                "{}: {} unsupported operator type(s)",
                a.model.display(),
                ops.len()
            );
        }
        Err(e) => return Err(e.into()),
        Ok(mut m) => {
            crate::prepare::prepare(&mut m.graph, &shapes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
            let g = &m.graph;
            println!("inputs:");
            for &n in &g.inputs {
                let v = &g.node(n).outputs[0];
                println!(
                    "  {:<24} {}",
                    v.name,
                    v.ty.as_ref().map(|t| t.to_string()).unwrap_or_default()
                );
            }
            println!("outputs:");
            for (name, o) in &g.outputs {
                println!(
                    "  {:<24} {}",
                    name,
                    g.ty(*o).map(|t| t.to_string()).unwrap_or_default()
                );
            }
            let mut hist: BTreeMap<&'static str, usize> = BTreeMap::new();
            for n in g.g.node_indices() {
                if !matches!(g.node(n).op, Op::Input | Op::Const(_)) {
                    *hist.entry(g.node(n).op.name()).or_default() += 1;
                }
            }
            let mut hist: Vec<_> = hist.into_iter().collect();
            hist.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
            let static_ = g.g.node_indices().all(|n| {
                g.node(n)
                    .outputs
                    .iter()
                    .all(|v| v.ty.as_ref().is_some_and(|t| t.shape.is_static()))
            });
            println!(
                "operators after import and constant folding ({} nodes, {} in the file; shapes {}):",
                g.op_count(),
                raw.node_count,
                if static_ { "all static" } else { "symbolic" }
            );
            for (op, n) in hist {
                println!("  {op:<28} {n}");
            }
            println!("unsupported operators: none");
            if a.ir {
                println!();
                print!("{}", g.to_text());
            }
        }
    }
    Ok(())
}
