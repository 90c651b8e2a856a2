//! Import errors. Each names the file and, where there is one, the node or tensor.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model (protobuf decoding failed: {msg}); is the file truncated or not an .onnx file?")]
    Decode { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    #[error("{path}: unsupported operators: {list}")]
    Unsupported {
        path: PathBuf,
        list: String,
        ops: Vec<UnsupportedOp>,
    },
    #[error("{path}: node '{node}' ({op}): {msg}")]
    Node {
        path: PathBuf,
        node: String,
        op: String,
        msg: String,
    },
    #[error("{path}: tensor '{tensor}': {msg}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    #[error("{path}: {source}")]
    Ir {
        path: PathBuf,
        source: octet_ir::IrError,
    },
}

/// One unsupported operator type and every node that uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedOp {
    pub domain: String,
    pub op_type: String,
    pub opset: i64,
    pub nodes: Vec<String>,
    pub reason: String,
}
