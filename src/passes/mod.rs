//! Graph passes. Each pass is one file, one concept, with before/after tests in the IR text
//! form. The pipeline is data: a list of passes run in order by [`run_pipeline`], which checks
//! the graph with the verifier after every pass in debug builds and tests (or when asked).

pub mod bf16_casts;
pub mod bind_shapes;
pub mod cse;
pub mod fold_batchnorm;
pub mod fold_constants;
pub mod hoist_scalar_mul;
pub mod insert_qdq;
pub mod qdq_to_qlinear;
pub mod smooth_quant;

use octet_ir::{Graph, IrError};

/// A graph rewrite.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrite the graph; returns whether anything changed.
    fn run(&self, g: &mut Graph) -> Result<bool, PassError>;
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass {pass}: {source}")]
    Ir { pass: &'static str, source: IrError },
    #[error("pass {pass}: node '{node}' ({op}): {msg}")]
    Node {
        pass: &'static str,
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Input(String),
    #[error("pass {pass} broke the graph (verifier): {source}\n{text}")]
    Verify {
        pass: &'static str,
        source: IrError,
        text: String,
    },
}

/// Run passes in order; verify after each one in debug builds or when `verify` is set. Values
/// whose type is not knowable until constants are folded may stay untyped between passes; after
/// the last pass every value must be typed (always checked).
pub fn run_pipeline(g: &mut Graph, passes: &[&dyn Pass], verify: bool) -> Result<(), PassError> {
    for (i, p) in passes.iter().enumerate() {
        p.run(g)?;
        let last = i + 1 == passes.len();
        if verify || cfg!(debug_assertions) || last {
            g.verify_with(last).map_err(|source| PassError::Verify {
                pass: p.name(),
                source,
                text: g.to_text(),
            })?;
        }
    }
    Ok(())
}
