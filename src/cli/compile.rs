//! `octet compile MODEL [--quantize static --calib C.npz | --config tune.json | --approach dynamic]
//! [--target native|x86-64-v3|x86-64-v4|avx512vnni] [--emit exe|octet] -o NAME`.

use crate::artifact::compile::{compile as compile_model, parse_target, Quantize};
use crate::quantizer::QuantConfig;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CompileArgs {
    /// The ONNX model (fp32, or already quantized).
    pub model: PathBuf,
    /// `static`: post-training static quantization (needs --calib).
    #[arg(long)]
    pub quantize: Option<String>,
    /// Calibration data for static quantization.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// A quantization config (from `octet tune` or hand-written); implies static unless it says
    /// dynamic.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `dynamic`: int8 weights, activations quantized at run time.
    #[arg(long)]
    pub approach: Option<String>,
    /// Minimum CPU the output runs on.
    #[arg(long, default_value = "native")]
    pub target: String,
    /// `exe` (a standalone executable, the default) or `octet` (the compiled-model file).
    #[arg(long, default_value = "exe")]
    pub emit: String,
    #[arg(long, short)]
    pub output: PathBuf,
}

pub fn compile(a: CompileArgs) -> anyhow::Result<()> {
    let target = parse_target(&a.target).map_err(anyhow::Error::msg)?;
    let mut cfg = match &a.config {
        Some(p) => QuantConfig::from_json(
            &std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )?,
        None => QuantConfig::default(),
    };
    cfg.quiet = true;
    let dynamic = a.approach.as_deref() == Some("dynamic")
        || (a.config.is_some() && cfg.approach == crate::quantizer::Approach::Dynamic);
    let q = if dynamic {
        Quantize::Dynamic { config: cfg }
    } else if a.quantize.as_deref() == Some("static") || a.config.is_some() {
        let calib = a
            .calib
            .clone()
            .ok_or_else(|| anyhow::anyhow!("static quantization needs --calib C.npz"))?;
        Quantize::Static { config: cfg, calib }
    } else if let Some(q) = a.quantize.as_deref().or(a.approach.as_deref()) {
        anyhow::bail!("'{q}': expected --quantize static or --approach dynamic")
    } else {
        Quantize::None
    };
    let m = compile_model(&a.model, &q, target)?;
    match a.emit.as_str() {
        "exe" => {
            crate::artifact::exe::write_executable(&m, &a.output)?;
            println!(
                "wrote executable {} (target {}); run `{} --help`",
                a.output.display(),
                target.name(),
                a.output.display()
            );
        }
        "octet" => {
            m.save(&a.output)?;
            println!("wrote {} (target {})", a.output.display(), target.name());
        }
        e => anyhow::bail!("--emit '{e}': expected exe or octet"),
    }
    Ok(())
}
