//! `octet quantize MODEL --calib calib.npz --approach static|dynamic --scheme PRESET
//! --calib-method minmax|kl|percentile|mse [--per-channel] [--exclude NODE,..] [--exclude-op Add,..]
//! [--reduce-range auto|on|off] [--config cfg.json] -o OUT.onnx`: post-training quantization to a
//! QDQ (static) or DynamicQuantizeLinear/MatMulInteger (dynamic) ONNX file. Command-line options
//! override the `--config` JSON (a serialized `QuantConfig`). Prints the per-node report.

use crate::calibrate::{self, CalibAlgorithm};
use crate::passes::bind_shapes::parse_shape_arg;
use crate::quant::Preset;
use crate::quantizer::{self, export_onnx, Approach, QuantConfig, ReduceRange};
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The fp32 ONNX model.
    pub model: PathBuf,
    /// Output ONNX file (QDQ form for static).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Calibration data (static): .npz keyed by input name (batch first), a .npy for a
    /// single-input model, or a directory of `<input>.npy` files.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// static or dynamic.
    #[arg(long)]
    pub approach: Option<String>,
    /// Preset: octet, onnxruntime, pytorch, tensorflow, ipex, mxnet.
    #[arg(long)]
    pub scheme: Option<String>,
    /// minmax, moving_average, kl (entropy), percentile, mse.
    #[arg(long = "calib-method")]
    pub calib_method: Option<String>,
    /// Per-channel weights (the default).
    #[arg(long, conflicts_with = "per_tensor")]
    pub per_channel: bool,
    /// Per-tensor weights.
    #[arg(long)]
    pub per_tensor: bool,
    /// Nodes kept in fp32 (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Op types kept in fp32 (comma-separated, e.g. Add,Concat).
    #[arg(long = "exclude-op", value_delimiter = ',')]
    pub exclude_op: Vec<String>,
    /// auto (on without AVX512-VNNI), on, off.
    #[arg(long = "reduce-range")]
    pub reduce_range: Option<String>,
    /// A QuantConfig JSON file; command-line options override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Samples per calibration run.
    #[arg(long = "calib-batch")]
    pub calib_batch: Option<usize>,
    /// Write the calibration table (JSON) here, for reuse.
    #[arg(long = "save-calib")]
    pub save_calib: Option<PathBuf>,
    /// Dynamic quantization: SmoothQuant with migration strength ALPHA (e.g. 0.5), from the
    /// per-channel activation ranges of --calib.
    #[arg(long = "smooth-quant", value_name = "ALPHA")]
    pub smooth_quant: Option<f32>,
    /// Fix an input's shape.
    #[arg(long = "shape", value_name = "NAME=DxD..")]
    pub shapes: Vec<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

fn config(a: &QuantizeArgs) -> anyhow::Result<QuantConfig> {
    let mut c = match &a.config {
        Some(p) => {
            let s = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            QuantConfig::from_json(&s).with_context(|| format!("{}", p.display()))?
        }
        None => QuantConfig::default(),
    };
    if let Some(s) = &a.approach {
        c.approach = match s.as_str() {
            "static" => Approach::Static,
            "dynamic" => Approach::Dynamic,
            _ => bail!("--approach must be static or dynamic, got '{s}'"),
        };
    }
    if let Some(s) = &a.scheme {
        c.preset = Preset::parse(s).with_context(|| {
            format!(
                "--scheme '{s}' is not a preset (onnxruntime, pytorch, tensorflow, ipex, mxnet, octet)"
            )
        })?;
    }
    if let Some(s) = &a.calib_method {
        c.calib_method = CalibAlgorithm::parse(s).with_context(|| {
            format!(
                "--calib-method '{s}' is not one of minmax, moving_average, kl, percentile, mse"
            )
        })?;
    }
    if a.per_channel {
        c.per_channel = true;
    }
    if a.per_tensor {
        c.per_channel = false;
    }
    c.exclude_nodes.extend(a.exclude.iter().cloned());
    c.exclude_op_types.extend(a.exclude_op.iter().cloned());
    if let Some(s) = &a.reduce_range {
        c.reduce_range = match s.as_str() {
            "auto" => ReduceRange::Auto,
            "on" => ReduceRange::On,
            "off" => ReduceRange::Off,
            _ => bail!("--reduce-range must be auto, on or off, got '{s}'"),
        };
    }
    if let Some(b) = a.calib_batch {
        if b == 0 {
            bail!("--calib-batch must be at least 1");
        }
        c.calib_batch_size = b;
    }
    if let Some(alpha) = a.smooth_quant {
        c.smooth_quant = Some(alpha);
    }
    c.quiet |= a.quiet;
    Ok(c)
}

pub fn quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    let shapes = a
        .shapes
        .iter()
        .map(|s| parse_shape_arg(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let model = crate::prepare::load(&a.model, &shapes)?;
    let g = model.graph;
    let (q, report) = match cfg.approach {
        Approach::Static => {
            let Some(path) = &a.calib else {
                bail!("static quantization needs calibration data: --calib FILE.npz");
            };
            let data = calibrate::read_calibration(path)?;
            quantizer::quantize_static(&g, &data, &cfg)
                .with_context(|| format!("quantizing {}", a.model.display()))?
        }
        Approach::Dynamic => {
            let data = match &a.calib {
                Some(path) => Some(calibrate::read_calibration(path)?),
                None => None,
            };
            quantizer::quantize_dynamic_with(&g, data.as_deref(), &cfg)
                .with_context(|| format!("quantizing {}", a.model.display()))?
        }
    };
    if let (Some(p), Some(t)) = (&a.save_calib, &report.calibration) {
        crate::io::atomic::write_atomic(p, |f| {
            std::io::Write::write_all(f, t.to_json().as_bytes())
        })
        .with_context(|| format!("writing {}", p.display()))?;
    }
    export_onnx::write_onnx(&q, &a.output)?;
    print!("{report}");
    // Which kernel and ISA each quantized node gets on this machine (and why any is not int8).
    match kernel_report(&q) {
        Ok(r) => print!("{r}"),
        Err(e) => println!("(kernel report unavailable: {e})"),
    }
    println!("wrote {}", a.output.display());
    Ok(())
}

/// The engine's per-node kernel report for `q`, with symbolic dimensions bound to 1.
fn kernel_report(q: &octet_ir::Graph) -> anyhow::Result<String> {
    let shapes: Vec<(String, Vec<usize>)> = q
        .inputs
        .iter()
        .filter_map(|&n| {
            let v = &q.node(n).outputs[0];
            let t = v.ty.as_ref()?;
            Some((
                v.name.clone(),
                t.shape.0.iter().map(|d| d.fixed().unwrap_or(1)).collect(),
            ))
        })
        .collect();
    let mut g = q.clone();
    crate::prepare::prepare(&mut g, &shapes)?;
    Ok(crate::prepare::engine(g, Some(1))?.report().to_string())
}
