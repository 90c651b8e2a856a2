//! octet-ir: the graph IR of octet.
//!
//! Owns: element types ([`DType`]), shapes with symbolic dimensions ([`Shape`]), aligned tensors
//! viewed through bytemuck ([`Tensor`]), value types carrying quantization parameters
//! ([`ValueType`], [`QuantParams`]), the op enum with typed attributes ([`Op`]), the petgraph
//! based [`Graph`], type inference (`infer`), the verifier (`verify`) and the text form (`text`).
//! Must not touch: file formats (ONNX lives in the `octet` crate), execution, kernels.

pub mod dtype;
pub mod graph;
pub mod infer;
pub mod op;
pub mod quant;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;

pub use dtype::DType;
pub use graph::{Graph, Node, Outlet, Value, Wire};
pub use op::*;
pub use petgraph::stable_graph::NodeIndex;
pub use quant::QuantParams;
pub use shape::{Dim, Shape};
pub use tensor::{AlignedBytes, Element, Tensor};
pub use types::ValueType;

/// Errors from graph construction, inference and verification. Each names the node.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("graph has a cycle through node '{node}'")]
    Cycle { node: String },
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("invalid graph: {0}")]
    Invalid(String),
}
