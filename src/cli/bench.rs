//! `octet bench MODEL [--quantize static --calib C.npz | --approach dynamic] [--fp32]
//! [--threads N] [--batch B] [--iters K] [--json]`: latency (median / p90 / p99) and throughput
//! of the engine on one model, after warm-up. `--json` prints one JSON object as the last stdout
//! line (the format `../shared/bench/peers.py --octet-cmd` reads).

use crate::passes::bind_shapes::parse_shape_arg;
use crate::prepare;
use crate::quantizer::{self, Approach, QuantConfig};
use octet_ir::{DType, Dim, Tensor};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The ONNX model (fp32, or already quantized QDQ / QOperator).
    pub model: PathBuf,
    /// Quantize first: `static` (needs --calib).
    #[arg(long, value_name = "static")]
    pub quantize: Option<String>,
    /// Calibration data for --quantize static (.npz keyed by input name, or a folder of .npy).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// `dynamic`: int8 weights, activations quantized at run time (MatMul/Gemm).
    #[arg(long)]
    pub approach: Option<String>,
    /// Quantization preset (octet, onnxruntime, pytorch, tensorflow, ipex, mxnet).
    #[arg(long, default_value = "octet")]
    pub scheme: String,
    /// A quantization config (JSON, e.g. `octet tune`'s: per-node precision, recipes,
    /// smooth_quant) for --quantize static / --approach dynamic; replaces --scheme.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run the model in fp32 (no quantization; the default when no --quantize/--approach).
    #[arg(long)]
    pub fp32: bool,
    /// Input data (.npz); the first --batch samples are used. Default: synthetic inputs.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Fix a symbolic input dimension other than the batch, e.g. `--shape input_ids=1x128`.
    #[arg(long = "shape", value_name = "NAME=DxD..")]
    pub shapes: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed iterations.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Print one JSON object (last stdout line).
    #[arg(long)]
    pub json: bool,
}

/// Synthetic input for a model input: floats uniform in [-1, 1) from a fixed-seed generator,
/// integers (token ids, masks) 1.
fn synthetic(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if dtype.is_float() {
                ((s >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::from_f64(dtype, shape, &v)
}

fn take(t: &Tensor, b: usize) -> anyhow::Result<Tensor> {
    t.first_rows(b).ok_or_else(|| {
        anyhow::anyhow!(
            "input data has {:?}; --batch {b} needs at least {b} samples",
            t.shape()
        )
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The engine (compiled as `octet bench` / `octet profile` options say), the feeds, the mode
/// ("fp32", "int8-static", "int8-dynamic", "pre-quantized") and the compile time in ms.
pub struct Prepared {
    pub engine: crate::engine::Engine,
    pub feeds: Vec<(String, Tensor)>,
    pub mode: &'static str,
    pub compile_ms: f64,
}

pub fn prepare_engine(a: &BenchArgs) -> anyhow::Result<Prepared> {
    let path = a.model.display().to_string();
    let model = crate::frontend::onnx::load(&a.model)?;
    let g = model.graph;
    // Inputs: data or synthetic, batch a.batch.
    let user_shapes: Vec<(String, Vec<usize>)> = a
        .shapes
        .iter()
        .map(|s| parse_shape_arg(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut feeds: Vec<(String, Tensor)> = vec![];
    if let Some(p) = &a.input {
        let (matched, _) = prepare::match_inputs(&g, prepare::read_inputs(p)?)?;
        for (n, t) in matched {
            feeds.push((n, take(&t, a.batch)?));
        }
    } else {
        for (i, &n) in g.inputs.iter().enumerate() {
            let v = &g.node(n).outputs[0];
            let ty = v.ty.as_ref().expect("inputs are typed");
            let dims: Vec<usize> = match user_shapes.iter().find(|(k, _)| *k == v.name) {
                Some((_, d)) => d.clone(),
                None => ty
                    .shape
                    .0
                    .iter()
                    .enumerate()
                    .map(|(j, d)| match d {
                        Dim::Fixed(x) => Ok(*x),
                        Dim::Sym(_) if j == 0 => Ok(a.batch),
                        Dim::Sym(s) => Err(anyhow::anyhow!(
                            "input '{}' has symbolic dimension '{s}': give --shape {}=.. or --input",
                            v.name,
                            v.name
                        )),
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            feeds.push((v.name.clone(), synthetic(ty.dtype, &dims, i as u64 + 1)));
        }
    }
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let mut g = g;
    prepare::prepare(&mut g, &shapes).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;

    let preset = crate::quant::Preset::parse(&a.scheme).ok_or_else(|| {
        anyhow::anyhow!(
            "--scheme '{}': expected octet, onnxruntime, pytorch, tensorflow, ipex or mxnet",
            a.scheme
        )
    })?;
    let cfg = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            QuantConfig {
                quiet: a.json,
                ..QuantConfig::from_json(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
        }
        None => QuantConfig {
            preset,
            quiet: a.json,
            ..QuantConfig::default()
        },
    };
    let mode;
    let g = match (a.quantize.as_deref(), a.approach.as_deref(), a.fp32) {
        (None, None, _) | (None, Some("fp32"), _) => {
            // A model quantized elsewhere (QDQ / QOperator / dynamic) runs as it is.
            let quantized = g.g.node_weights().any(|n| n.op.is_quantized_form());
            mode = if quantized { "pre-quantized" } else { "fp32" };
            g
        }
        (Some(_), _, true) | (_, Some(_), true) => {
            anyhow::bail!("--fp32 cannot be combined with quantization")
        }
        (Some("static"), None | Some("static"), false) => {
            let calib = a
                .calib
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("--quantize static needs --calib C.npz"))?;
            let data = crate::calibrate::data::read_calibration(calib)?;
            mode = "int8-static";
            quantizer::quantize_static(
                &g,
                &data,
                &QuantConfig {
                    approach: Approach::Static,
                    ..cfg
                },
            )?
            .0
        }
        (None, Some("dynamic"), false) => {
            mode = "int8-dynamic";
            // Calibration data is optional here (SmoothQuant uses it).
            let data = match &a.calib {
                Some(c) => Some(crate::calibrate::data::read_calibration(c)?),
                None => None,
            };
            quantizer::quantize_dynamic_with(
                &g,
                data.as_deref(),
                &QuantConfig {
                    approach: Approach::Dynamic,
                    ..cfg
                },
            )?
            .0
        }
        (Some(q), _, _) => {
            anyhow::bail!("--quantize '{q}': expected 'static' (or --approach dynamic)")
        }
        (None, Some(x), _) => anyhow::bail!("--approach '{x}': expected static or dynamic"),
    };
    let t_compile = std::time::Instant::now();
    let engine = prepare::engine(g, a.threads).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let compile_ms = t_compile.elapsed().as_secs_f64() * 1e3;
    Ok(Prepared {
        engine,
        feeds,
        mode,
        compile_ms,
    })
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let path = a.model.display().to_string();
    let Prepared {
        engine,
        feeds,
        mode,
        compile_ms,
    } = prepare_engine(&a)?;
    for _ in 0..a.warmup {
        engine.run(&feeds)?;
    }
    let iters = a.iters.max(1);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = std::time::Instant::now();
        std::hint::black_box(engine.run(&feeds)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let (p50, p90, p99) = (
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
    );
    let threads = a.threads.unwrap_or_else(rayon::current_num_threads);
    let r = engine.report();
    let compute = r.nodes.iter().filter(|n| n.is_compute()).count();
    if a.json {
        let j = serde_json::json!({
            "model": path, "mode": mode, "batch": a.batch, "threads": threads, "isa": r.isa,
            "iters": iters, "compute_nodes": compute, "int8_nodes": r.int8_count(),
            "compile_ms": compile_ms, "p90_ms": p90, "p99_ms": p99,
            "throughput_per_s": a.batch as f64 / (p50 / 1e3), "median_ms": p50,
        });
        println!("{j}");
    } else {
        print!("{r}");
        println!(
            "{path} [{mode}, batch {}, {threads} thread(s), {}]: median {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, {:.1} samples/s ({iters} runs after {} warm-up; engine built in {compile_ms:.0} ms)",
            a.batch,
            r.isa,
            a.batch as f64 / (p50 / 1e3),
            a.warmup
        );
    }
    Ok(())
}
