//! In-process compilation: ONNX file -> (quantize) -> lowered integer graph -> [`CompiledModel`]
//! for a target instruction set.

use super::format::CompiledModel;
use crate::quantizer::{self, Approach, QuantConfig};
use octet_kernels::Isa;
use std::path::{Path, PathBuf};

/// How to quantize while compiling.
#[derive(Debug, Clone)]
pub enum Quantize {
    /// Keep the model as it is (fp32, or already quantized QDQ/QOperator).
    None,
    /// Static PTQ with this config and calibration data.
    Static { config: QuantConfig, calib: PathBuf },
    /// Dynamic PTQ (MatMul/Gemm weights int8, activations at run time).
    Dynamic { config: QuantConfig },
}

/// Map a `--target` name to the minimum instruction set it requires.
pub fn parse_target(s: &str) -> Result<Isa, String> {
    match s {
        "native" => Isa::active().map_err(|e| e.to_string()),
        "x86-64" | "scalar" => Ok(Isa::Scalar),
        "x86-64-v3" | "avx2" => Ok(Isa::Avx2),
        "x86-64-v4" | "avx512" => Ok(Isa::Avx512),
        "avx512vnni" => Ok(Isa::Avx512Vnni),
        t => Err(format!(
            "--target '{t}': expected native, x86-64-v3, x86-64-v4 or avx512vnni"
        )),
    }
}

/// Compile `model` for `target`.
pub fn compile(model: &Path, quantize: &Quantize, target: Isa) -> anyhow::Result<CompiledModel> {
    let mut m = crate::frontend::onnx::load(model)?;
    crate::prepare::prepare(&mut m.graph, &[])
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    let vnni = target >= Isa::Avx512Vnni;
    let g = match quantize {
        Quantize::None => m.graph,
        Quantize::Static { config, calib } => {
            let data = crate::calibrate::data::read_calibration(calib)?;
            let cfg = QuantConfig {
                approach: Approach::Static,
                target_vnni: Some(vnni),
                ..config.clone()
            };
            quantizer::quantize_static(&m.graph, &data, &cfg)?.0
        }
        Quantize::Dynamic { config } => {
            let cfg = QuantConfig {
                approach: Approach::Dynamic,
                target_vnni: Some(vnni),
                ..config.clone()
            };
            quantizer::quantize_dynamic(&m.graph, &cfg)?.0
        }
    };
    let g = crate::prepare::lower(g)?;
    Ok(CompiledModel::new(g, target))
}
