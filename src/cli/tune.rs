//! `octet tune MODEL --calib C.npz --eval E.npz [--metric top1|cosine|mse|agreement]
//! [--tolerance 1%|0.01] [--strategy basic|sensitivity|conservative|exhaustive] [--max-trials N]
//! [--timeout 10m] -o OUT.onnx`: accuracy-aware tuning. Writes the best model (QDQ ONNX) and its
//! config (OUT.json, which `octet quantize --config` turns back into the identical model); exits
//! non-zero when no configuration meets the goal (the best effort is still written).

use crate::calibrate::CalibAlgorithm;
use crate::quant::Preset;
use crate::quantizer::QuantConfig;
use crate::tuner::{self, metric::Metric, Criterion, Strategy, Tolerance, TuneOptions};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct TuneArgs {
    /// The fp32 ONNX model.
    pub model: PathBuf,
    /// Calibration data (.npz keyed by input name, batch first).
    #[arg(long)]
    pub calib: PathBuf,
    /// Evaluation data (.npz keyed by input name; a `label` array enables top1).
    #[arg(long)]
    pub eval: PathBuf,
    /// top1 (needs labels), cosine, mse or agreement (fidelity to the fp32 model). Default: top1
    /// when the eval data has labels, else cosine.
    #[arg(long)]
    pub metric: Option<String>,
    /// Tolerable loss: relative (`1%`, the default) or absolute (`0.01`).
    #[arg(long, default_value = "1%")]
    pub tolerance: String,
    #[arg(long, default_value = "basic")]
    pub strategy: String,
    #[arg(long, default_value_t = 100)]
    pub max_trials: usize,
    /// Stop after this long (e.g. 90s, 10m, 1h).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Quantization preset to start from.
    #[arg(long, default_value = "octet")]
    pub scheme: String,
    /// Calibration method to start from.
    #[arg(long, default_value = "minmax")]
    pub calib_method: String,
    /// `static` (calibrated activations) or `dynamic` (activations quantized at run time, the
    /// mode for BERT-class models; recipes are then SmoothQuant strengths from --calib).
    #[arg(long, default_value = "static")]
    pub approach: String,
    /// Where to write the tuned model (QDQ ONNX); its config goes to the same path with .json.
    #[arg(long, short)]
    pub output: PathBuf,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Never fall back to bf16 (by default nodes fall back to bf16 before fp32 when the CPU has
    /// AVX512-BF16).
    #[arg(long)]
    pub no_bf16: bool,
    /// Less output (no per-trial lines).
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'h' => (&s[..s.len() - 1], 3600.0),
        'm' => (&s[..s.len() - 1], 60.0),
        's' => (&s[..s.len() - 1], 1.0),
        _ => (s, 1.0),
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * mul))
}

pub fn tune(a: TuneArgs) -> anyhow::Result<()> {
    let path = a.model.display().to_string();
    let mut model = crate::frontend::onnx::load(&a.model)?;
    crate::prepare::prepare(&mut model.graph, &[]).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let g = model.graph;
    let eval_arrays = crate::prepare::read_inputs(&a.eval)?;
    let labels: Option<Vec<i64>> = eval_arrays
        .iter()
        .find(|(n, _)| n == "label")
        .map(|(_, t)| t.to_i64_vec());
    let (feeds, _) = crate::prepare::match_inputs(&g, eval_arrays)?;
    let calib = crate::calibrate::data::read_calibration(&a.calib)?;
    let metric = match &a.metric {
        Some(m) => Metric::parse(m).ok_or_else(|| {
            anyhow::anyhow!("--metric '{m}': expected top1, cosine, mse or agreement")
        })?,
        None if labels.is_some() => Metric::Top1,
        None => Metric::Cosine,
    };
    if metric == Metric::Top1 && labels.is_none() {
        anyhow::bail!(
            "--metric top1 needs a 'label' array in {}",
            a.eval.display()
        );
    }
    let tolerance = Tolerance::parse(&a.tolerance).ok_or_else(|| {
        anyhow::anyhow!("--tolerance '{}': expected e.g. 1% or 0.01", a.tolerance)
    })?;
    let strategy = Strategy::parse(&a.strategy).ok_or_else(|| {
        anyhow::anyhow!(
            "--strategy '{}': expected basic, sensitivity, conservative or exhaustive",
            a.strategy
        )
    })?;
    let timeout = match &a.timeout {
        Some(t) => Some(
            parse_duration(t)
                .ok_or_else(|| anyhow::anyhow!("--timeout '{t}': expected e.g. 90s, 10m, 1h"))?,
        ),
        None => None,
    };
    let preset = Preset::parse(&a.scheme)
        .ok_or_else(|| anyhow::anyhow!("--scheme '{}' is not a preset", a.scheme))?;
    let calib_method = CalibAlgorithm::parse(&a.calib_method)
        .ok_or_else(|| anyhow::anyhow!("--calib-method '{}'", a.calib_method))?;
    let eval_shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    // fp32 outputs for fidelity metrics.
    let reference = if metric == Metric::Top1 {
        None
    } else {
        let mut bound = g.clone();
        crate::prepare::prepare(&mut bound, &eval_shapes)
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        Some(
            crate::engine::Engine::new(bound, a.threads)?
                .run(&feeds)?
                .remove(0)
                .1,
        )
    };
    let eval = tuner::builtin_eval(&feeds, metric, labels.as_deref(), reference.as_ref());
    let criterion = Criterion {
        tolerance,
        higher_is_better: metric.higher_is_better(),
    };
    let opts = TuneOptions {
        strategy,
        criterion,
        max_trials: a.max_trials,
        timeout,
        base: QuantConfig {
            preset,
            calib_method,
            approach: match a.approach.as_str() {
                "static" => crate::quantizer::Approach::Static,
                "dynamic" => crate::quantizer::Approach::Dynamic,
                x => anyhow::bail!("--approach '{x}': expected static or dynamic"),
            },
            quiet: a.quiet,
            ..QuantConfig::default()
        },
        threads: a.threads,
        eval_shapes,
        verbose: !a.quiet,
        bf16: !a.no_bf16,
    };
    let r = tuner::tune(&g, &calib, &eval, opts)?;
    println!("{}", r.summary(metric.name(), &criterion));
    let best = r.best_trial();
    crate::quantizer::export_onnx::write_onnx(&r.best_graph, &a.output)?;
    let cfg_path = a.output.with_extension("json");
    crate::io::atomic::write_atomic(&cfg_path, |f| {
        std::io::Write::write_all(f, best.config.to_json().as_bytes())
    })?;
    println!(
        "wrote {} and its config {} (octet quantize --config reproduces it)",
        a.output.display(),
        cfg_path.display()
    );
    if !r.met {
        anyhow::bail!(
            "no configuration met the accuracy goal within {} trial(s) ({})",
            r.trials.len(),
            r.stop_reason
        );
    }
    Ok(())
}
