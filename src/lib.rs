//! octet: turns ONNX models into fast, accurate int8 programs for x86 CPUs.
//!
//! Pipeline: `frontend::onnx` (load) -> `passes` (bind shapes, fold constants, ...) ->
//! `reference` (the oracle interpreter). See docs/ARCHITECTURE.md for the map.

pub mod artifact;
pub mod calibrate;
pub mod cli;
pub mod engine;
pub mod frontend;
pub mod io;
pub mod passes;
pub mod prepare;
pub mod qat;
pub mod quant;
pub mod quantizer;
pub mod reference;
pub mod tuner;
