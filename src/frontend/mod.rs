//! Frontends: model file formats into the octet IR. Only ONNX today.
pub mod onnx;
