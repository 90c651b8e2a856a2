//! Accuracy-aware tuning (the design document's `quantization.fit(model, conf, calib, eval_func)`):
//! build a tuning space from the model (its quantizable nodes) and the recipes octet supports,
//! let a strategy pick which nodes run int8 and with which recipe, build each candidate on the
//! engine, evaluate it, and stop as soon as the accuracy goal is met.
//!
//! Trials reuse calibration: one calibration table per calibration method, computed once
//! (histogram-based methods share nothing else). Each trial re-quantizes from the table, which is
//! cheap. The result is the best model found, a log line per trial, and a [`QuantConfig`] that
//! `octet quantize --config` turns back into the identical model.
//!
//! The space: per node, int8 (static), dynamic int8 (MatMul/Gemm: activations quantized at run
//! time), bf16 (where the CPU has AVX512-BF16, unless disabled) and fp32; per op type and per
//! node, the recipe (calibration method, per-tensor / per-channel weights, symmetric
//! activations). Strategies choose the order (see [`strategy`]).

pub mod metric;
pub mod strategy;

use crate::calibrate::{self, CalibAlgorithm, CalibOptions, CalibrationTable};
use crate::engine::Engine;
use crate::quantizer::{self, Precision, QuantConfig};
use metric::Metric;
use octet_ir::{Graph, Tensor};
use std::time::{Duration, Instant};

pub use strategy::Strategy;

/// How much accuracy may be lost.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Tolerance {
    /// Fraction of the baseline (0.01 = 1%, Intel Neural Compressor's default).
    Relative(f64),
    /// Absolute difference in the metric.
    Absolute(f64),
}

impl Tolerance {
    /// Parse `1%` (relative) or `0.01` (absolute... of the metric).
    pub fn parse(s: &str) -> Option<Tolerance> {
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .map(|v| Tolerance::Relative(v / 100.0)),
            None => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .map(Tolerance::Absolute),
        }
    }
}

/// The accuracy goal.
#[derive(Debug, Clone, Copy)]
pub struct Criterion {
    pub tolerance: Tolerance,
    pub higher_is_better: bool,
}

impl Criterion {
    /// Does `value` meet the goal relative to `baseline`?
    pub fn passes(&self, baseline: f64, value: f64) -> bool {
        let loss = if self.higher_is_better {
            baseline - value
        } else {
            value - baseline
        };
        match self.tolerance {
            Tolerance::Absolute(t) => loss <= t + 1e-12,
            Tolerance::Relative(t) => loss <= t * baseline.abs() + 1e-12,
        }
    }
    /// Relative loss (positive = worse).
    pub fn relative_loss(&self, baseline: f64, value: f64) -> f64 {
        let loss = if self.higher_is_better {
            baseline - value
        } else {
            value - baseline
        };
        if baseline == 0.0 {
            loss
        } else {
            loss / baseline.abs()
        }
    }
}

/// Tuning options.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    pub strategy: Strategy,
    pub criterion: Criterion,
    pub max_trials: usize,
    pub timeout: Option<Duration>,
    /// The starting recipe (preset, calibration method, per-channel, ...).
    pub base: QuantConfig,
    pub threads: Option<usize>,
    /// Input shapes the evaluation feeds (the engine is built for them). The graph being tuned
    /// keeps its symbolic batch so calibration can run at its own batch size.
    pub eval_shapes: Vec<(String, Vec<usize>)>,
    /// Print a line per trial to stderr.
    pub verbose: bool,
    /// Let nodes fall back to bf16 before fp32 (only where the CPU runs `vdpbf16ps`).
    pub bf16: bool,
}

impl TuneOptions {
    /// The precision a node falls back to first: bf16 when allowed and the CPU has it natively.
    pub fn fallback_precision(&self) -> Precision {
        let native = octet_kernels::Kernel::best().is_ok_and(|k| k.has_bf16_dot());
        if self.bf16 && native {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    }
}

/// One evaluated candidate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trial {
    pub index: usize,
    /// What this trial changed, in words.
    pub change: String,
    pub accuracy: f64,
    pub latency_ms: f64,
    pub passed: bool,
    pub fp32_nodes: Vec<String>,
    pub bf16_nodes: Vec<String>,
    /// MatMul/Gemm nodes quantized dynamically (activations at run time).
    pub dynamic_nodes: Vec<String>,
    #[serde(skip)]
    pub config: QuantConfig,
}

/// The outcome of tuning.
pub struct TuneResult {
    pub baseline: f64,
    pub baseline_latency_ms: f64,
    pub trials: Vec<Trial>,
    /// Index into `trials` of the best passing trial, or of the best effort when none passed.
    pub best: usize,
    pub met: bool,
    pub best_graph: Graph,
    pub elapsed: Duration,
    /// Why tuning stopped.
    pub stop_reason: String,
}

impl TuneResult {
    pub fn best_trial(&self) -> &Trial {
        &self.trials[self.best]
    }
    /// A human summary.
    pub fn summary(&self, metric: &str, criterion: &Criterion) -> String {
        let b = self.best_trial();
        let speedup = self.baseline_latency_ms / b.latency_ms.max(1e-9);
        let mut s = format!(
            "fp32 baseline {metric} {:.4} ({:.2} ms/batch); best int8 {metric} {:.4} (relative loss {:.2}%), {:.2} ms/batch, {:.2}x fp32; {} of {} trials in {:.1} s; {} node(s) left in fp32{}{}{}",
            self.baseline,
            self.baseline_latency_ms,
            b.accuracy,
            criterion.relative_loss(self.baseline, b.accuracy) * 100.0,
            b.latency_ms,
            speedup,
            self.best + 1,
            self.trials.len(),
            self.elapsed.as_secs_f64(),
            b.fp32_nodes.len(),
            if b.fp32_nodes.is_empty() { String::new() } else { format!(": {}", b.fp32_nodes.join(", ")) },
            if b.bf16_nodes.is_empty() { String::new() } else { format!("; {} in bf16: {}", b.bf16_nodes.len(), b.bf16_nodes.join(", ")) },
            if b.dynamic_nodes.is_empty() { String::new() } else { format!("; {} dynamic int8: {}", b.dynamic_nodes.len(), b.dynamic_nodes.join(", ")) }
        );
        if !self.met {
            s.push_str(&format!(
                "\nNO configuration met the accuracy goal ({}); the best effort is kept.",
                self.stop_reason
            ));
        }
        if speedup < 1.0 {
            s.push_str(&format!("\nwarning: the best int8 model is SLOWER than fp32 ({speedup:.2}x) on this engine."));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Quantize(#[from] quantizer::QuantizeError),
    #[error(transparent)]
    Calibrate(#[from] calibrate::CalibrateError),
    #[error("engine: {0}")]
    Engine(String),
    #[error("evaluation: {0}")]
    Eval(String),
}

/// An evaluation: a closure scoring a built model (the design document's `eval_func`).
pub type EvalFn<'a> = dyn Fn(&Engine) -> Result<f64, String> + Sync + 'a;

/// The tuning context shared by strategies: the fp32 graph, calibration cache, evaluation.
pub struct Tuner<'a> {
    pub graph: &'a Graph,
    calib: &'a [(String, Tensor)],
    eval: &'a EvalFn<'a>,
    pub opts: TuneOptions,
    tables: Vec<CalibrationTable>,
    /// SmoothQuant's per-channel statistics (dynamic tuning), once computed.
    smooth_stats: Option<quantizer::SmoothStats>,
    pub trials: Vec<Trial>,
    graphs: Vec<Option<Graph>>,
    pub baseline: f64,
    pub baseline_latency_ms: f64,
    start: Instant,
    pub stop_reason: String,
    /// Trials progress bar (hidden when quiet or stderr is not a terminal).
    bar: indicatif::ProgressBar,
}

impl<'a> Tuner<'a> {
    /// A log line that does not tear the progress bar.
    pub fn log(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn table(&mut self, m: CalibAlgorithm) -> Result<CalibrationTable, TuneError> {
        if let Some(t) = self.tables.iter().find(|t| t.method == m) {
            return Ok(t.clone());
        }
        let opts = CalibOptions {
            algorithm: m,
            quiet: !self.opts.verbose || self.opts.base.quiet,
            float_order: self.opts.base.calib_float_order(),
            ..CalibOptions::default()
        };
        let t = calibrate::calibrate(self.graph, self.calib, &opts)?;
        self.tables.push(t.clone());
        Ok(t)
    }

    /// Build the model for `cfg` (quantize from the cached table).
    pub fn build(&mut self, cfg: &QuantConfig) -> Result<Graph, TuneError> {
        if cfg.approach == quantizer::Approach::Dynamic {
            if cfg.smooth_quant.is_none() {
                return Ok(quantizer::quantize_dynamic(self.graph, cfg)?.0);
            }
            // SmoothQuant's statistics do not depend on the trial: computed once.
            if self.smooth_stats.is_none() {
                self.smooth_stats = Some(quantizer::smooth_quant_stats(
                    self.graph,
                    self.calib,
                    cfg.calib_batch_size,
                )?);
            }
            let stats = self.smooth_stats.as_ref().expect("computed above");
            return Ok(quantizer::quantize_dynamic_with_stats(self.graph, stats, cfg)?.0);
        }
        let tables = cfg
            .calib_methods()
            .into_iter()
            .map(|m| self.table(m))
            .collect::<Result<Vec<_>, _>>()?;
        let (g, _) = quantizer::quantize_static_with_tables(self.graph, &tables, cfg)?;
        Ok(g)
    }

    /// Up to `n` samples of the calibration data (for sensitivity probes).
    pub fn calib_feeds(&self, n: usize) -> Result<Vec<(String, Tensor)>, String> {
        let names = crate::prepare::input_names(self.graph);
        let mut out = vec![];
        for name in names {
            let t = self
                .calib
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("calibration data lacks '{name}'"))?;
            let b = t.shape().first().copied().unwrap_or(1).min(n).max(1);
            out.push((name, t.first_rows(b).unwrap_or_else(|| t.clone())));
        }
        Ok(out)
    }

    /// True when the trial budget or the timeout is spent.
    pub fn exhausted(&mut self) -> bool {
        if self.trials.len() >= self.opts.max_trials {
            self.stop_reason = format!("max_trials {} reached", self.opts.max_trials);
            return true;
        }
        if let Some(t) = self.opts.timeout {
            if self.start.elapsed() >= t {
                self.stop_reason = format!("timeout {:.0} s reached", t.as_secs_f64());
                return true;
            }
        }
        false
    }

    /// Build, evaluate and log one candidate. Returns whether it meets the goal.
    pub fn trial(&mut self, change: &str, cfg: &QuantConfig) -> Result<bool, TuneError> {
        let g = self.build(cfg)?;
        let engine = build_engine(g.clone(), &self.opts)?;
        let t0 = Instant::now();
        let accuracy = (self.eval)(&engine).map_err(TuneError::Eval)?;
        let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
        let passed = self.opts.criterion.passes(self.baseline, accuracy);
        let with = |want: Precision| -> Vec<String> {
            cfg.precision
                .iter()
                .filter(|(_, p)| **p == want)
                .map(|(n, _)| n.clone())
                .collect()
        };
        let mut fp32_nodes = with(Precision::Fp32);
        fp32_nodes.extend(cfg.exclude_nodes.iter().cloned());
        let bf16_nodes = with(Precision::Bf16);
        let dynamic_nodes = with(Precision::Dynamic);
        let t = Trial {
            index: self.trials.len() + 1,
            change: change.to_string(),
            accuracy,
            latency_ms,
            passed,
            fp32_nodes,
            bf16_nodes,
            dynamic_nodes,
            config: cfg.clone(),
        };
        if self.opts.verbose {
            self.log(format!(
                "trial {:>3}: {:<58} accuracy {:.4} ({:+.2}%)  {:>8.2} ms  {}",
                t.index,
                t.change,
                t.accuracy,
                -self.opts.criterion.relative_loss(self.baseline, t.accuracy) * 100.0,
                t.latency_ms,
                if passed { "PASS" } else { "fail" }
            ));
        }
        self.bar.inc(1);
        self.bar.set_message(format!(
            "best so far {:.4}",
            t.accuracy.max(
                self.trials
                    .iter()
                    .map(|x| x.accuracy)
                    .fold(f64::MIN, f64::max)
            )
        ));
        self.trials.push(t);
        self.graphs.push(Some(g));
        Ok(passed)
    }
}

/// Bind the evaluation shapes, lower and build the engine.
fn build_engine(mut g: Graph, opts: &TuneOptions) -> Result<Engine, TuneError> {
    crate::prepare::prepare(&mut g, &opts.eval_shapes)
        .map_err(|e| TuneError::Engine(e.to_string()))?;
    crate::prepare::engine(g, opts.threads).map_err(|e| TuneError::Engine(e.to_string()))
}

/// Tune: evaluate the fp32 baseline, then run the strategy until the goal is met, the trials or
/// the time run out. Never returns without a model: when nothing passes, the best effort.
pub fn tune(
    graph: &Graph,
    calib: &[(String, Tensor)],
    eval: &EvalFn<'_>,
    opts: TuneOptions,
) -> Result<TuneResult, TuneError> {
    let start = Instant::now();
    let fp32 = build_engine(graph.clone(), &opts)?;
    let t0 = Instant::now();
    let baseline = eval(&fp32).map_err(TuneError::Eval)?;
    let baseline_latency_ms = t0.elapsed().as_secs_f64() * 1e3;
    if opts.verbose {
        eprintln!("fp32 baseline: {baseline:.4} ({baseline_latency_ms:.2} ms)");
    }
    let bar = if t_verbose_bar(&opts) {
        let b = indicatif::ProgressBar::new(opts.max_trials as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "tuning [{bar:30}] trial {pos}/{len} {elapsed} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut t = Tuner {
        graph,
        calib,
        eval,
        opts,
        tables: vec![],
        smooth_stats: None,
        trials: vec![],
        graphs: vec![],
        baseline,
        baseline_latency_ms,
        start,
        stop_reason: String::new(),
        bar,
    };
    let strategy = t.opts.strategy;
    strategy.run(&mut t)?;
    t.bar.finish_and_clear();
    if t.trials.is_empty() {
        // max_trials 0 or an immediate timeout: still return the default config's model.
        let base = t.opts.base.clone();
        t.trial("default int8 config (no trial budget left)", &base)?;
    }
    let crit = t.opts.criterion;
    let better = |a: &Trial, b: &Trial| {
        if crit.higher_is_better {
            a.accuracy > b.accuracy
        } else {
            a.accuracy < b.accuracy
        }
    };
    // Best: the passing trial with the fewest fp32, then bf16, then dynamic nodes (ties: better
    // accuracy); else the most accurate trial.
    let cost = |t: &Trial| {
        (
            t.fp32_nodes.len(),
            t.bf16_nodes.len(),
            t.dynamic_nodes.len(),
        )
    };
    let mut best: Option<usize> = None;
    for (i, tr) in t.trials.iter().enumerate() {
        if !tr.passed {
            continue;
        }
        best = Some(match best {
            None => i,
            Some(b) => {
                let bt = &t.trials[b];
                if cost(tr) < cost(bt) || (cost(tr) == cost(bt) && better(tr, bt)) {
                    i
                } else {
                    b
                }
            }
        });
    }
    let met = best.is_some();
    let best = best.unwrap_or_else(|| {
        (0..t.trials.len()).fold(0, |b, i| {
            if better(&t.trials[i], &t.trials[b]) {
                i
            } else {
                b
            }
        })
    });
    if met && t.stop_reason.is_empty() {
        t.stop_reason = "accuracy goal met".into();
    } else if t.stop_reason.is_empty() {
        t.stop_reason = "search space exhausted".into();
    }
    let best_graph = t.graphs[best].take().expect("graph kept per trial");
    Ok(TuneResult {
        baseline,
        baseline_latency_ms,
        trials: t.trials,
        best,
        met,
        best_graph,
        elapsed: start.elapsed(),
        stop_reason: t.stop_reason,
    })
}

/// The built-in evaluation used by the CLI: run the eval set (one batch) and score the first
/// output with `metric` (against labels or the fp32 outputs).
pub fn builtin_eval<'a>(
    feeds: &'a [(String, Tensor)],
    metric: Metric,
    labels: Option<&'a [i64]>,
    reference: Option<&'a Tensor>,
) -> impl Fn(&Engine) -> Result<f64, String> + Sync + 'a {
    move |e: &Engine| {
        let out = e.run(feeds).map_err(|x| x.to_string())?;
        metric::score(metric, &out[0].1, reference, labels)
    }
}

fn t_verbose_bar(opts: &TuneOptions) -> bool {
    opts.verbose && std::io::IsTerminal::is_terminal(&std::io::stderr())
}
