//! `octet export MODEL_OR_OCTET --format qdq|qoperator [--calib C.npz] -o out.onnx`: write a
//! quantized model as standard ONNX for other runtimes. QDQ = QuantizeLinear/DequantizeLinear
//! around float ops (quantize an fp32 model first with --calib, or pass a QDQ model);
//! QOperator = QLinearConv / QLinearMatMul and onnxruntime's com.microsoft QGemm, QLinearAdd,
//! QLinearGlobalAveragePool (the lowered integer graph octet itself runs).

use crate::quantizer::{self, export_onnx, QuantConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// An ONNX model (fp32 with --calib, or already quantized) or a compiled .octet file.
    pub model: PathBuf,
    /// `qdq` or `qoperator`.
    #[arg(long, default_value = "qdq")]
    pub format: String,
    /// Calibration data: quantize an fp32 model first (static, octet preset).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// A quantization config (JSON, e.g. from `octet tune`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, short)]
    pub output: PathBuf,
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let qoperator = match a.format.as_str() {
        "qdq" => false,
        "qoperator" => true,
        f => anyhow::bail!("--format '{f}': expected qdq or qoperator"),
    };
    let g = if crate::artifact::format::is_compiled(&a.model) {
        if !qoperator {
            anyhow::bail!("{}: a compiled model holds the lowered integer graph; export it with --format qoperator", a.model.display());
        }
        crate::artifact::CompiledModel::load(&a.model)?.graph
    } else {
        let mut m = crate::frontend::onnx::load(&a.model)?;
        crate::prepare::prepare(&mut m.graph, &[])
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
        let g = match &a.calib {
            Some(c) => {
                let mut cfg = match &a.config {
                    Some(p) => QuantConfig::from_json(&std::fs::read_to_string(p)?)?,
                    None => QuantConfig::default(),
                };
                cfg.quiet = true;
                let data = crate::calibrate::data::read_calibration(c)?;
                quantizer::quantize_static(&m.graph, &data, &cfg)?.0
            }
            None => m.graph,
        };
        if qoperator {
            crate::prepare::lower(g)?
        } else {
            g
        }
    };
    let has_q = g.g.node_weights().any(|n| n.op.is_quantized_form());
    if !has_q {
        anyhow::bail!(
            "{}: the model is not quantized; pass --calib C.npz to quantize it first",
            a.model.display()
        );
    }
    export_onnx::write_onnx(&g, &a.output)?;
    println!("wrote {} ({} format)", a.output.display(), a.format);
    Ok(())
}
