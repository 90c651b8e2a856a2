//! Calibration for static quantization: choose the tensors to observe, run the fp32 graph on
//! the reference interpreter over the calibration set (batched, batches in parallel with rayon,
//! observers merged), and turn each tensor's observer into a range.
//!
//! Owns: [`observed_tensors`], [`calibrate`], [`CalibrationTable`] (JSON via serde, so the tuner
//! can reuse ranges without recalibrating), reading/checking calibration data (`data`).
//! Memory: one observer per observed tensor per worker (a histogram is a fixed 2048 bins);
//! activations are seen through `run_graph_with`'s callback and never stored.

pub mod channels;
pub mod data;

pub use data::{check_calibration, read_calibration};

use crate::quant::{CalibMethod, Histogram, MinMax, MovingAverageMinMax, Observer, QuantError};
use octet_ir::{DType, Graph, NodeIndex, Op, Outlet, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// Bad calibration data (names the array/input).
    #[error("calibration data: {0}")]
    Data(String),
    /// The graph failed to run on a batch.
    #[error("calibration run (samples {start}..{end}): {source}")]
    Run {
        start: usize,
        end: usize,
        source: crate::reference::RunError,
    },
    /// An observer rejected a tensor (e.g. NaN produced inside the model).
    #[error("calibration of tensor '{tensor}': {source}")]
    Observe { tensor: String, source: QuantError },
}

/// The range-selection algorithm (serializable form of [`CalibMethod`] plus the EMA observer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CalibAlgorithm {
    /// Exact min/max over all samples.
    #[default]
    Minmax,
    /// Exponential moving average of per-batch min/max (constant 0.01).
    MovingAverage,
    /// Histogram + KL divergence (128 quantized bins over 2048).
    #[serde(alias = "kl")]
    Entropy,
    /// Histogram, two-sided 99.999th percentile.
    Percentile,
    /// Histogram, MSE-optimal clipping for 256 levels.
    Mse,
}

impl CalibAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "minmax" => Self::Minmax,
            "moving_average" | "moving-average" | "ema" => Self::MovingAverage,
            "entropy" | "kl" => Self::Entropy,
            "percentile" => Self::Percentile,
            "mse" => Self::Mse,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Minmax => "minmax",
            Self::MovingAverage => "moving_average",
            Self::Entropy => "entropy",
            Self::Percentile => "percentile",
            Self::Mse => "mse",
        }
    }
    fn observer(self) -> TensorObserver {
        match self {
            Self::Minmax => TensorObserver::MinMax(MinMax::new()),
            Self::MovingAverage => TensorObserver::Ema(MovingAverageMinMax::new(0.01)),
            Self::Entropy => TensorObserver::Hist(Histogram::new(CalibMethod::ENTROPY)),
            Self::Percentile => TensorObserver::Hist(Histogram::new(CalibMethod::PERCENTILE)),
            Self::Mse => TensorObserver::Hist(Histogram::new(CalibMethod::MSE)),
        }
    }
}

#[derive(Debug, Clone)]
enum TensorObserver {
    MinMax(MinMax),
    Ema(MovingAverageMinMax),
    Hist(Histogram),
}

impl TensorObserver {
    fn observe(&mut self, d: &[f32]) -> Result<(), QuantError> {
        match self {
            Self::MinMax(o) => o.observe(d),
            Self::Ema(o) => o.observe(d),
            Self::Hist(o) => o.observe(d),
        }
    }
    fn merge(&mut self, other: &Self) -> Result<(), QuantError> {
        match (self, other) {
            (Self::MinMax(a), Self::MinMax(b)) => a.merge(b),
            (Self::Ema(a), Self::Ema(b)) => a.merge(b),
            (Self::Hist(a), Self::Hist(b)) => a.merge(b),
            _ => Err(QuantError::Incompatible("observer kinds differ".into())),
        }
    }
    fn range(&self) -> Result<(f32, f32), QuantError> {
        match self {
            Self::MinMax(o) => o.range(),
            Self::Ema(o) => o.range(),
            Self::Hist(o) => o.range(),
        }
    }
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                Self::Hist(h) => std::mem::size_of_val(h.bins()),
                _ => 0,
            }
    }
}

/// Calibration options.
#[derive(Debug, Clone)]
pub struct CalibOptions {
    pub algorithm: CalibAlgorithm,
    /// Samples per interpreter run (clamped to a fixed batch dimension of the model, if any).
    pub batch_size: usize,
    /// Run batches in parallel (rayon) and merge observers. Off = strictly sequential, in order.
    pub parallel: bool,
    /// Hide the progress bar (it is also hidden when stderr is not a terminal).
    pub quiet: bool,
    /// Float summation order of the fp32 run (`Mlas`: onnxruntime's, for its preset).
    pub float_order: crate::reference::FloatOrder,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            algorithm: CalibAlgorithm::Minmax,
            batch_size: 16,
            parallel: true,
            quiet: false,
            float_order: Default::default(),
        }
    }
}

/// Per-tensor ranges from calibration, keyed by tensor (value) name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationTable {
    pub ranges: BTreeMap<String, (f32, f32)>,
    pub method: CalibAlgorithm,
    pub samples: usize,
    /// Bytes of observer state held per worker during calibration (independent of samples).
    #[serde(default)]
    pub observer_bytes: usize,
    /// Tensors left out of `ranges` because they held non-finite values, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub non_finite: BTreeMap<String, String>,
}

impl CalibrationTable {
    pub fn range(&self, tensor: &str) -> Option<(f32, f32)> {
        self.ranges.get(tensor).copied()
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("table serializes")
    }
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// Ops whose float activations calibration observes: the quantizable compute ops and the ops that
/// carry quantization through (activations, pools, shape ops, residual adds, concat).
fn observed_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::Unary(octet_ir::UnaryOp::Relu)
            | Op::Clip
            | Op::Binary(octet_ir::BinaryOp::Add)
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Concat { .. }
    )
}

/// Data operand slots of an observed op (weights and shape operands excluded).
fn data_slots(op: &Op, n_operands: usize) -> std::ops::Range<usize> {
    match op {
        Op::Conv(_) | Op::Gemm { .. } | Op::Unary(_) | Op::Clip => 0..1,
        Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalAveragePool => 0..1,
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Transpose { .. } => 0..1,
        Op::Squeeze | Op::Unsqueeze => 0..1,
        _ => 0..n_operands,
    }
}

fn is_f32_activation(g: &Graph, o: Outlet) -> bool {
    !matches!(g.node(o.node).op, Op::Const(_)) && g.ty(o).is_some_and(|t| t.dtype == DType::F32)
}

/// The float tensors that static quantization may need ranges for, sorted and deduplicated.
pub fn observed_tensors(g: &Graph) -> Vec<Outlet> {
    let mut v = vec![];
    for n in g.g.node_indices() {
        let op = &g.node(n).op;
        if !observed_op(op) {
            continue;
        }
        let ops = g.operands(n);
        for s in data_slots(op, ops.len()) {
            if let Some(Some(o)) = ops.get(s) {
                if is_f32_activation(g, *o) {
                    v.push(*o);
                }
            }
        }
        let out = Outlet::new(n, 0);
        if is_f32_activation(g, out) {
            v.push(out);
        }
        // MatMul with a constant B: B is a weight, not observed.
        if matches!(op, Op::MatMul) {
            if let Some(Some(b)) = ops.get(1) {
                if matches!(g.node(b.node).op, Op::Const(_)) {
                    v.retain(|x| x != b);
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

struct ObserverSet {
    obs: Vec<TensorObserver>,
    /// Why a tensor cannot be quantized (it held non-finite values), once seen.
    non_finite: Vec<Option<String>>,
}

impl ObserverSet {
    fn merge(&mut self, other: &ObserverSet, names: &[String]) -> Result<(), CalibrateError> {
        for (i, (a, b)) in self.obs.iter_mut().zip(&other.obs).enumerate() {
            a.merge(b).map_err(|source| CalibrateError::Observe {
                tensor: names[i].clone(),
                source,
            })?;
        }
        for (a, b) in self.non_finite.iter_mut().zip(&other.non_finite) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        Ok(())
    }
}

/// Samples per interpreter run: `requested`, or the model's fixed batch dimension if it has one.
pub fn batch_size(g: &Graph, requested: usize) -> usize {
    let mut bs = requested.max(1);
    for &i in &g.inputs {
        if let Some(d) = g.node(i).outputs[0]
            .ty
            .as_ref()
            .and_then(|t| t.shape.0.first().and_then(|d| d.fixed()))
        {
            bs = d;
        }
    }
    bs
}

/// Calibrate `g` on `data` (batch-first arrays keyed by input name; see [`check_calibration`]).
pub fn calibrate(
    g: &Graph,
    data: &[(String, Tensor)],
    opts: &CalibOptions,
) -> Result<CalibrationTable, CalibrateError> {
    let (feeds, samples) = check_calibration(g, data)?;
    let tensors = observed_tensors(g);
    let names: Vec<String> = tensors.iter().map(|o| g.value(*o).name.clone()).collect();
    // node -> [(output, observer index)]
    let mut by_node: HashMap<NodeIndex, Vec<(usize, usize)>> = HashMap::new();
    for (i, o) in tensors.iter().enumerate() {
        by_node.entry(o.node).or_default().push((o.output, i));
    }
    let bs = batch_size(g, opts.batch_size);
    let batches: Vec<(usize, usize)> = (0..samples)
        .step_by(bs)
        .map(|s| (s, (s + bs).min(samples)))
        .collect();
    let empty = || ObserverSet {
        obs: tensors.iter().map(|_| opts.algorithm.observer()).collect(),
        non_finite: vec![None; tensors.len()],
    };
    let observer_bytes: usize = empty().obs.iter().map(|o| o.bytes()).sum();

    let pb = progress_bar(batches.len() as u64, opts.quiet);
    let run_batch = |set: &mut ObserverSet, (start, end): (usize, usize)| {
        let inputs: Vec<(String, Tensor)> = feeds
            .iter()
            .map(|(n, t)| (n.clone(), data::rows(t, start, end)))
            .collect();
        let mut err: Option<CalibrateError> = None;
        crate::reference::run_graph_ordered(g, &inputs, opts.float_order, |n, outs| {
            if err.is_some() {
                return;
            }
            if let Some(list) = by_node.get(&n) {
                for &(out, i) in list {
                    if let Some(t) = outs.get(out) {
                        if let Ok(v) = t.view::<f32>() {
                            if v.is_empty() || set.non_finite[i].is_some() {
                                continue;
                            }
                            match set.obs[i].observe(v) {
                                Ok(()) => {}
                                // An intermediate value that is not finite (an attention mask's
                                // -Inf, an overflow): this tensor cannot be quantized, the rest
                                // of the model can.
                                Err(QuantError::NonFinite { kind, index }) => {
                                    set.non_finite[i] = Some(format!(
                                        "holds {kind} (at flat element {index} of samples {start}..{end})"
                                    ));
                                }
                                Err(source) => {
                                    err = Some(CalibrateError::Observe {
                                        tensor: names[i].clone(),
                                        source,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        })
        .map_err(|source| CalibrateError::Run { start, end, source })?;
        pb.inc(1);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    };

    let set = if opts.parallel && batches.len() > 1 {
        use rayon::prelude::*;
        batches
            .par_iter()
            .try_fold(empty, |mut set, &b| {
                run_batch(&mut set, b)?;
                Ok::<_, CalibrateError>(set)
            })
            .try_reduce(empty, |mut a, b| {
                a.merge(&b, &names)?;
                Ok(a)
            })?
    } else {
        let mut set = empty();
        for &b in &batches {
            run_batch(&mut set, b)?;
        }
        set
    };
    pb.finish_and_clear();

    let mut ranges = BTreeMap::new();
    let mut non_finite = BTreeMap::new();
    for (i, o) in set.obs.iter().enumerate() {
        if let Some(why) = &set.non_finite[i] {
            non_finite.insert(names[i].clone(), why.clone());
            continue;
        }
        match o.range() {
            Ok(r) => {
                ranges.insert(names[i].clone(), r);
            }
            Err(QuantError::NoData) => {}
            Err(source) => {
                return Err(CalibrateError::Observe {
                    tensor: names[i].clone(),
                    source,
                })
            }
        }
    }
    Ok(CalibrationTable {
        ranges,
        method: opts.algorithm,
        samples,
        observer_bytes,
        non_finite,
    })
}

fn progress_bar(len: u64, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "calibrating {bar:40} {pos}/{len} batches [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}
