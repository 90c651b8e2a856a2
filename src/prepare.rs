//! Model preparation, the front half of every command: load an ONNX file, bind input shapes,
//! fold constants, verify. Also the checking of user-supplied input tensors against the model's
//! inputs (names, dtypes, ranks), shared by `run`, calibration and benchmarks.

use crate::frontend::onnx;
use crate::passes::{
    bf16_casts::FoldBf16Casts, bind_shapes::BindShapes, cse::Cse, fold_constants::FoldConstants,
    hoist_scalar_mul::HoistScalarMul, run_pipeline, PassError,
};
use octet_ir::{Graph, Tensor};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Import(#[from] onnx::ImportError),
    #[error("{path}: {source}")]
    Pass { path: String, source: PassError },
    #[error("{0}")]
    Input(String),
}

/// Load `path`, bind the given input shapes, fold constants and verify.
pub fn load(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<onnx::Model, PrepareError> {
    let mut m = onnx::load(path)?;
    prepare(&mut m.graph, shapes).map_err(|source| PrepareError::Pass {
        path: path.display().to_string(),
        source,
    })?;
    Ok(m)
}

/// Bind shapes and fold constants on an imported graph (and read bf16 nodes back from their
/// ONNX Cast form, see `passes::bf16_casts`).
pub fn prepare(g: &mut Graph, shapes: &[(String, Vec<usize>)]) -> Result<(), PassError> {
    let bind = BindShapes {
        shapes: shapes.to_vec(),
    };
    run_pipeline(
        g,
        &[&bind, &FoldConstants, &Cse, &HoistScalarMul, &FoldBf16Casts],
        true,
    )
}

/// Names of the graph inputs, in order.
pub fn input_names(g: &Graph) -> Vec<String> {
    g.inputs
        .iter()
        .map(|&n| g.node(n).outputs[0].name.clone())
        .collect()
}

/// Match named arrays to the model's inputs. Arrays that are not inputs (such as `label`) are
/// returned as ignored; a missing input, a wrong dtype or a wrong rank is an error naming the
/// input, what the model expects and what was given.
pub fn match_inputs(
    g: &Graph,
    arrays: Vec<(String, Tensor)>,
) -> Result<(Vec<(String, Tensor)>, Vec<String>), PrepareError> {
    let names = input_names(g);
    let mut feeds = vec![];
    let mut ignored = vec![];
    let mut arrays = arrays;
    // A single unnamed array (a .npy) feeds a single-input model.
    if names.len() == 1 && arrays.len() == 1 && arrays[0].0.is_empty() {
        arrays[0].0 = names[0].clone();
    }
    for (name, t) in arrays {
        if names.contains(&name) {
            feeds.push((name, t));
        } else {
            ignored.push(name);
        }
    }
    for (i, name) in names.iter().enumerate() {
        let Some((_, t)) = feeds.iter().find(|(n, _)| n == name) else {
            return Err(PrepareError::Input(format!(
                "model input '{name}' is missing from the data (data has: {}; model inputs: {})",
                if ignored.is_empty() {
                    "nothing else".to_string()
                } else {
                    ignored.join(", ")
                },
                names.join(", ")
            )));
        };
        let ty = g.node(g.inputs[i]).outputs[0]
            .ty
            .as_ref()
            .expect("inputs are typed");
        if t.dtype() != ty.dtype {
            return Err(PrepareError::Input(format!(
                "input '{name}' must be {} {}, the data holds {} {:?}",
                ty.dtype,
                ty.shape,
                t.dtype(),
                t.shape()
            )));
        }
        if t.rank() != ty.shape.rank() {
            return Err(PrepareError::Input(format!(
                "input '{name}' must have shape {} (rank {}), the data has shape {:?}",
                ty.shape,
                ty.shape.rank(),
                t.shape()
            )));
        }
    }
    // Keep the model's input order.
    feeds.sort_by_key(|(n, _)| names.iter().position(|x| x == n));
    Ok((feeds, ignored))
}

/// Read input data: an .npz (keys = input names) or a single .npy.
pub fn read_inputs(path: &Path) -> Result<Vec<(String, Tensor)>, PrepareError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let r = if ext.eq_ignore_ascii_case("npy") {
        crate::io::npz::read_npy(path).map(|t| vec![(String::new(), t)])
    } else {
        crate::io::npz::read_npz(path)
    };
    let arrays = r.map_err(|e| PrepareError::Input(e.to_string()))?;
    if arrays.is_empty() {
        return Err(PrepareError::Input(format!(
            "{}: holds no arrays",
            path.display()
        )));
    }
    Ok(arrays)
}

/// Lower a prepared graph's QDQ patterns to integer ops (QLinearConv, QGemm, ...): the graph the
/// engine runs, and the one the reference interpreter runs when it serves as the engine's oracle.
pub fn lower(mut g: Graph) -> Result<Graph, PrepareError> {
    let has_qdq =
        g.g.node_indices()
            .any(|n| matches!(g.node(n).op, octet_ir::Op::DequantizeLinear { .. }));
    if has_qdq {
        let lower = crate::passes::qdq_to_qlinear::QdqToQLinear::default();
        run_pipeline(&mut g, &[&lower], true).map_err(|source| PrepareError::Pass {
            path: String::new(),
            source,
        })?;
    }
    Ok(g)
}

/// Lower (see [`lower`]) and build the execution engine.
pub fn engine(g: Graph, threads: Option<usize>) -> Result<crate::engine::Engine, PrepareError> {
    crate::engine::Engine::new(lower(g)?, threads).map_err(|e| PrepareError::Input(e.to_string()))
}
