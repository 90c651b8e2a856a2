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
    if let Quantize::Static { calib, .. } = &q {
        if let Err(e) = speed_report(&a.model, &m, calib) {
            eprintln!("note: could not measure int8 vs fp32 speed: {e}");
        }
    }
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

/// Median latency of `g` on `feeds` (batch 1) over a few runs after warm-up.
fn median_ms(
    g: octet_ir::Graph,
    feeds: &[(String, octet_ir::Tensor)],
    threads: usize,
) -> anyhow::Result<f64> {
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let mut g = g;
    crate::prepare::prepare(&mut g, &shapes)?;
    let e = crate::prepare::engine(g, Some(threads))?;
    for _ in 0..5 {
        e.run(feeds)?;
    }
    let mut t: Vec<f64> = (0..30)
        .map(|_| {
            let s = std::time::Instant::now();
            let _ = std::hint::black_box(e.run(feeds));
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(t[t.len() / 2])
}

/// int8 vs fp32 latency of the compiled model on the first calibration sample, 1 thread.
fn speed_report(
    model: &std::path::Path,
    m: &crate::artifact::CompiledModel,
    calib: &std::path::Path,
) -> anyhow::Result<()> {
    let data = crate::calibrate::data::read_calibration(calib)?;
    let (feeds, _) = crate::prepare::match_inputs(&m.graph, data)?;
    let one: Vec<(String, octet_ir::Tensor)> = feeds
        .iter()
        .map(|(n, t)| {
            Ok((
                n.clone(),
                t.first_rows(1)
                    .ok_or_else(|| anyhow::anyhow!("'{n}' has no samples"))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut fp = crate::frontend::onnx::load(model)?;
    crate::prepare::prepare(&mut fp.graph, &[])?;
    let f = median_ms(fp.graph, &one, 1)?;
    let i = median_ms(m.graph.clone(), &one, 1)?;
    println!(
        "speed, batch 1, 1 thread: int8 {i:.3} ms vs fp32 {f:.3} ms: {:.2}x {}",
        f / i,
        if i < f {
            "faster"
        } else {
            "(int8 is not faster here)"
        }
    );
    Ok(())
}
