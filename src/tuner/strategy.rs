//! Tuning strategies: the order in which candidate configurations are tried.
//!
//! - `basic` (Intel Neural Compressor's reference order): the default int8 config; op-type-wise
//!   recipe tuning (per op type: calibration method, per-channel weights, symmetric activations;
//!   the best recipe per op type is kept); per-node fallback, one node at a time (a MatMul/Gemm
//!   first tries dynamic int8, then the node and its int8 consumers fall back to bf16 where the
//!   CPU has it, else fp32); accumulated fallback in the order of the accuracy each single
//!   fallback reached (bf16 first, then again in fp32).
//! - `sensitivity`: one pass measures every node's quantization error (normalised MSE between
//!   the fp32 model's value and the int8 model's dequantized value at the node's output, on the
//!   calibration data); the most sensitive node first tries a clipping calibration (percentile,
//!   MSE) on its own; then nodes fall back greedily from the most sensitive (bf16 first where
//!   available, then fp32). Fewest trials.
//! - `conservative`: start all fp32, enable op types one at a time (Conv, Gemm, MatMul, the rest),
//!   keeping each that still meets the goal.
//! - `exhaustive`: every subset of fp32 fallbacks, smallest first (small spaces only).

use super::{TuneError, Tuner};
use crate::calibrate::CalibAlgorithm;
use crate::quantizer::{Precision, QuantConfig, Recipe};
use octet_ir::{Graph, Op, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Basic,
    Sensitivity,
    Conservative,
    Exhaustive,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s.to_ascii_lowercase().as_str() {
            "basic" => Strategy::Basic,
            "sensitivity" | "mse" => Strategy::Sensitivity,
            "conservative" => Strategy::Conservative,
            "exhaustive" => Strategy::Exhaustive,
            _ => return None,
        })
    }

    pub fn run(self, t: &mut Tuner) -> Result<(), TuneError> {
        match self {
            Strategy::Basic => basic(t),
            Strategy::Sensitivity => sensitivity(t),
            Strategy::Conservative => conservative(t),
            Strategy::Exhaustive => exhaustive(t),
        }
    }
}

/// Quantizable nodes (Conv/Gemm/MatMul) by name, in graph order.
pub fn quantizable(g: &Graph) -> Vec<String> {
    let order = g.topo_order().unwrap_or_default();
    order
        .into_iter()
        .filter(|&n| matches!(g.node(n).op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul))
        .map(|n| g.node(n).name.clone())
        .collect()
}

/// A fallback unit: the node plus the quantizable nodes that read its output (directly or
/// through ops that carry quantization, such as Relu, MaxPool, Flatten). Keeping a tensor in
/// float needs both sides: a consumer left int8 would quantize it again.
pub fn unit(g: &Graph, name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let Some(n) = g.find(name) else { return out };
    let mut frontier = vec![octet_ir::Outlet::new(n, 0)];
    for _ in 0..4 {
        let mut next = vec![];
        for o in frontier {
            for (c, _) in g.consumers(o) {
                let node = g.node(c);
                if matches!(node.op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul) {
                    if !out.contains(&node.name) {
                        out.push(node.name.clone());
                    }
                } else if node.outputs.len() == 1 {
                    next.push(octet_ir::Outlet::new(c, 0));
                }
            }
        }
        frontier = next;
    }
    out
}

fn union(units: &[Vec<String>]) -> Vec<String> {
    let mut v: Vec<String> = vec![];
    for u in units {
        for n in u {
            if !v.contains(n) {
                v.push(n.clone());
            }
        }
    }
    v
}

fn with_precision(base: &QuantConfig, nodes: &[String], p: Precision) -> QuantConfig {
    let mut c = base.clone();
    for n in nodes {
        c.precision.insert(n.clone(), p);
    }
    c
}

fn with_fp32(base: &QuantConfig, nodes: &[String]) -> QuantConfig {
    with_precision(base, nodes, Precision::Fp32)
}

/// The fallback precisions to try, in order: bf16 (when available), then fp32.
fn fallbacks(t: &Tuner) -> Vec<Precision> {
    match t.opts.fallback_precision() {
        Precision::Bf16 => vec![Precision::Bf16, Precision::Fp32],
        _ => vec![Precision::Fp32],
    }
}

fn is_matmul(g: &Graph, name: &str) -> bool {
    g.find(name)
        .is_some_and(|n| matches!(g.node(n).op, Op::Gemm { .. } | Op::MatMul))
}

/// Returns Ok(true) when a trial passed (stop), Ok(false) to continue.
fn attempt(t: &mut Tuner, change: &str, cfg: &QuantConfig) -> Result<Option<bool>, TuneError> {
    if t.exhausted() {
        return Ok(None);
    }
    t.trial(change, cfg).map(Some)
}

macro_rules! try_trial {
    ($t:expr, $change:expr, $cfg:expr) => {
        match attempt($t, $change, $cfg)? {
            None => return Ok(()),
            Some(true) => return Ok(()),
            Some(false) => {}
        }
    };
}

/// Op types of the quantizable nodes, in graph order.
fn op_types(g: &Graph) -> Vec<String> {
    let mut v: Vec<String> = vec![];
    for n in quantizable(g) {
        if let Some(i) = g.find(&n) {
            let o = g.node(i).op.name().to_string();
            if !v.contains(&o) {
                v.push(o);
            }
        }
    }
    v
}

/// Recipe variants for one op type of `base`: other calibration methods, the other weight
/// granularity, symmetric activations.
fn recipes(base: &QuantConfig, op: &str) -> Vec<(String, QuantConfig)> {
    let cur = base.recipe("", op);
    let method = cur.calib_method.unwrap_or(base.calib_method);
    let per_channel = cur.per_channel.unwrap_or(base.per_channel);
    let mut v = vec![];
    let mut push = |what: String, r: Recipe| {
        let mut c = base.clone();
        c.op_recipes.insert(op.to_string(), r.over(&cur));
        v.push((format!("recipe for {op}: {what}"), c));
    };
    for m in [
        CalibAlgorithm::Entropy,
        CalibAlgorithm::Percentile,
        CalibAlgorithm::Mse,
    ] {
        if m != method {
            push(
                format!("calibration {}", m.name()),
                Recipe {
                    calib_method: Some(m),
                    ..Default::default()
                },
            );
        }
    }
    push(
        format!(
            "per-{} weights",
            if per_channel { "tensor" } else { "channel" }
        ),
        Recipe {
            per_channel: Some(!per_channel),
            ..Default::default()
        },
    );
    if cur.symmetric_activations != Some(true) {
        push(
            "symmetric activations".into(),
            Recipe {
                symmetric_activations: Some(true),
                ..Default::default()
            },
        );
    }
    v
}

/// Dynamic quantization's recipes: SmoothQuant strengths (when the base has none).
fn dynamic_recipes(base: &QuantConfig) -> Vec<(String, QuantConfig)> {
    if base.smooth_quant.is_some() {
        return vec![];
    }
    [0.5f32, 0.6, 0.75]
        .into_iter()
        .map(|a| {
            (
                format!("recipe: SmoothQuant alpha {a}"),
                QuantConfig {
                    smooth_quant: Some(a),
                    ..base.clone()
                },
            )
        })
        .collect()
}

fn basic(t: &mut Tuner) -> Result<(), TuneError> {
    let base = t.opts.base.clone();
    let dynamic = base.approach == crate::quantizer::Approach::Dynamic;
    try_trial!(t, "default int8 config", &base);
    // Op-type-wise recipe tuning: per op type, keep the recipe that improves accuracy most
    // (dynamic quantization: the SmoothQuant strength).
    let mut best_cfg = base.clone();
    let mut best_acc = t
        .trials
        .last()
        .map(|x| x.accuracy)
        .unwrap_or(f64::NEG_INFINITY);
    let hib = t.opts.criterion.higher_is_better;
    if dynamic {
        for (change, cfg) in dynamic_recipes(&base) {
            try_trial!(t, &change, &cfg);
            let acc = t.trials.last().unwrap().accuracy;
            if (hib && acc > best_acc) || (!hib && acc < best_acc) {
                best_acc = acc;
                best_cfg = cfg;
            }
        }
    }
    for op in op_types(t.graph).into_iter().filter(|_| !dynamic) {
        let start = best_cfg.clone();
        for (change, cfg) in recipes(&start, &op) {
            try_trial!(t, &change, &cfg);
            let acc = t.trials.last().unwrap().accuracy;
            if (hib && acc > best_acc) || (!hib && acc < best_acc) {
                best_acc = acc;
                best_cfg = cfg;
            }
        }
    }
    // Per-node fallback, one unit at a time (the node and the int8 consumers of its output);
    // a MatMul/Gemm first tries dynamic quantization of its own activation.
    let fb = fallbacks(t);
    let nodes = quantizable(t.graph);
    let mut single: Vec<(Vec<String>, f64)> = vec![];
    for n in &nodes {
        if is_matmul(t.graph, n) && !dynamic {
            try_trial!(
                t,
                &format!("{n} to dynamic int8 (activation quantized at run time)"),
                &with_precision(&best_cfg, std::slice::from_ref(n), Precision::Dynamic)
            );
        }
        let u = unit(t.graph, n);
        let what = if u.len() > 1 {
            format!(
                "fallback {n} to {} (with its consumers {})",
                fb[0].name(),
                u[1..].join(", ")
            )
        } else {
            format!("fallback {n} to {}", fb[0].name())
        };
        try_trial!(t, &what, &with_precision(&best_cfg, &u, fb[0]));
        single.push((u, t.trials.last().unwrap().accuracy));
    }
    // Accumulated fallback in the order of the accuracy each single fallback reached, in each
    // fallback precision (bf16, then fp32).
    single.sort_by(|a, b| {
        if hib {
            b.1.partial_cmp(&a.1).unwrap()
        } else {
            a.1.partial_cmp(&b.1).unwrap()
        }
    });
    for &p in &fb {
        for k in 1..=single.len() {
            if k == 1 && p == fb[0] {
                continue; // tried above
            }
            let units: Vec<Vec<String>> = single[..k].iter().map(|(u, _)| u.clone()).collect();
            let acc = union(&units);
            if acc.len() >= nodes.len() && p == Precision::Fp32 {
                break; // everything in fp32 is not a quantized model
            }
            try_trial!(
                t,
                &format!(
                    "accumulated fallback of {} units to {} ({})",
                    k,
                    p.name(),
                    acc.join(", ")
                ),
                &with_precision(&best_cfg, &acc, p)
            );
        }
    }
    Ok(())
}

/// The error a node adds: per-channel normalised MSE of the value its consumers see (the
/// dequantized output in the QDQ graph vs the same tensor in the fp32 graph) minus the same
/// error on the activation it reads. Measured in one pass of each graph over (up to 32
/// samples of) the calibration data; sorted most sensitive first.
fn node_sensitivity(t: &mut Tuner, cfg: &QuantConfig) -> Result<Vec<(String, f64)>, TuneError> {
    use octet_ir::Outlet;
    let q = t.build(cfg)?;
    let fp = t.graph.clone();
    // The DequantizeLinear that carries the quantized version of `o` (o -> Q -> DQ), if any.
    let dq_after = |o: Outlet| -> Option<Outlet> {
        let cs = q.consumers(o);
        let qn = cs
            .iter()
            .find(|(c, _)| matches!(q.node(*c).op, Op::QuantizeLinear { .. }))?
            .0;
        let ds = q.consumers(Outlet::new(qn, 0));
        let dn = ds
            .iter()
            .find(|(c, _)| matches!(q.node(*c).op, Op::DequantizeLinear { .. }))?
            .0;
        Some(Outlet::new(dn, 0))
    };
    // (node, [(fp32 tensor name, qdq value name) for output, input])
    let mut probes: Vec<(String, Option<(String, String)>, Option<(String, String)>)> = vec![];
    for name in quantizable(&fp) {
        let Some(nq) = q.find(&name) else { continue };
        let out = Outlet::new(nq, 0);
        let out_probe = dq_after(out).map(|d| (q.value(out).name.clone(), q.value(d).name.clone()));
        let in_probe = q.operand(nq, 0).and_then(|o| {
            if !matches!(q.node(o.node).op, Op::DequantizeLinear { .. }) {
                return None;
            }
            let qn = q.operand(o.node, 0)?;
            let src = q.operand(qn.node, 0)?;
            Some((q.value(src).name.clone(), q.value(o).name.clone()))
        });
        probes.push((name, out_probe, in_probe));
    }
    let feeds: Vec<(String, Tensor)> = t.calib_feeds(32).map_err(TuneError::Eval)?;
    let capture = |g: &Graph,
                   wanted: Vec<String>|
     -> Result<std::collections::HashMap<String, Tensor>, TuneError> {
        let mut out = std::collections::HashMap::new();
        crate::reference::run_graph_with(g, &feeds, |n, ts| {
            for (k, v) in g.node(n).outputs.iter().enumerate() {
                if wanted.contains(&v.name) && k < ts.len() {
                    out.insert(v.name.clone(), ts[k].clone());
                }
            }
        })
        .map_err(|e| TuneError::Eval(e.to_string()))?;
        Ok(out)
    };
    let pairs = probes
        .iter()
        .flat_map(|p| [p.1.clone(), p.2.clone()])
        .flatten();
    let (fw, qw): (Vec<String>, Vec<String>) = pairs.unzip();
    let fvals = capture(&fp, fw)?;
    let qvals = capture(&q, qw)?;
    // Mean over channels (axis 1) of each channel's normalised MSE: an outlier channel cannot hide
    // the destruction of all the others.
    let err = |p: &Option<(String, String)>| -> f64 {
        let Some((f, qn)) = p else { return 0.0 };
        let (Some(a), Some(b)) = (fvals.get(f), qvals.get(qn)) else {
            return 0.0;
        };
        if a.shape() != b.shape() || a.is_empty() {
            return 0.0;
        }
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        let sh = a.shape();
        let c = if sh.len() >= 2 { sh[1] } else { 1 };
        let inner: usize = if sh.len() >= 2 {
            sh[2..].iter().product()
        } else {
            1
        };
        let mut num = vec![0.0; c];
        let mut den = vec![0.0; c];
        for (i, (x, y)) in av.iter().zip(&bv).enumerate() {
            let ch = (i / inner) % c;
            num[ch] += (x - y) * (x - y);
            den[ch] += x * x;
        }
        (0..c)
            .map(|k| if den[k] > 0.0 { num[k] / den[k] } else { 0.0 })
            .sum::<f64>()
            / c as f64
    };
    let mut s: Vec<(String, f64)> = probes
        .iter()
        .map(|(n, o, i)| (n.clone(), (err(o) - err(i)).max(0.0)))
        .collect();
    s.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    Ok(s)
}

fn sensitivity(t: &mut Tuner) -> Result<(), TuneError> {
    let base = t.opts.base.clone();
    if base.approach == crate::quantizer::Approach::Dynamic {
        // The probes compare QDQ pairs of a static model; dynamic models have none.
        t.log("sensitivity ranks the QDQ tensors of static quantization; dynamic base: running the basic strategy".into());
        return basic(t);
    }
    try_trial!(t, "default int8 config", &base);
    let ranked = node_sensitivity(t, &base)?;
    if t.opts.verbose {
        let top: Vec<String> = ranked
            .iter()
            .take(5)
            .map(|(n, e)| format!("{n} ({e:.2e})"))
            .collect();
        t.log(format!(
            "sensitivity (quantization error each node adds, most sensitive first): {}",
            top.join(", ")
        ));
    }
    // Recipe before precision: the most sensitive node alone with a clipping calibration
    // (percentile, MSE-optimal); a passing one keeps the whole model int8.
    if let Some((top, _)) = ranked.first() {
        let cur = base.node_recipes.get(top).cloned().unwrap_or_default();
        for m in [CalibAlgorithm::Percentile, CalibAlgorithm::Mse] {
            if cur.calib_method.unwrap_or(base.calib_method) == m {
                continue;
            }
            let mut c = base.clone();
            c.node_recipes.insert(
                top.clone(),
                Recipe {
                    calib_method: Some(m),
                    ..cur.clone()
                },
            );
            try_trial!(
                t,
                &format!(
                    "recipe for {top} (most sensitive): calibration {}",
                    m.name()
                ),
                &c
            );
        }
    }
    for p in fallbacks(t) {
        let mut units: Vec<Vec<String>> = vec![];
        for (n, e) in &ranked {
            units.push(unit(t.graph, n));
            let fallback = union(&units);
            try_trial!(
                t,
                &format!(
                    "fallback {} most sensitive (+{n}, error {e:.2e}): {} {}",
                    units.len(),
                    p.name(),
                    fallback.join(", ")
                ),
                &with_precision(&base, &fallback, p)
            );
        }
    }
    Ok(())
}

fn conservative(t: &mut Tuner) -> Result<(), TuneError> {
    let base = t.opts.base.clone();
    let nodes = quantizable(t.graph);
    let op_of = |n: &str| {
        t.graph
            .find(n)
            .map(|i| t.graph.node(i).op.name().to_string())
            .unwrap_or_default()
    };
    let mut types: Vec<String> = vec![];
    for n in &nodes {
        let o = op_of(n);
        if !types.contains(&o) {
            types.push(o);
        }
    }
    // Start all fp32; enable one op type at a time, keeping it when the goal still holds.
    let mut fp32: Vec<String> = nodes.clone();
    for ty in &types {
        let candidate: Vec<String> = fp32.iter().filter(|n| op_of(n) != *ty).cloned().collect();
        match attempt(
            t,
            &format!("enable op type {ty} in int8"),
            &with_fp32(&base, &candidate),
        )? {
            None => return Ok(()),
            Some(true) => fp32 = candidate,
            Some(false) => {}
        }
    }
    Ok(())
}

fn exhaustive(t: &mut Tuner) -> Result<(), TuneError> {
    let base = t.opts.base.clone();
    let nodes = quantizable(t.graph);
    if nodes.len() > 12 {
        t.stop_reason = format!(
            "exhaustive search over {} nodes is too large (2^{}); use sensitivity or basic",
            nodes.len(),
            nodes.len()
        );
        try_trial!(t, "default int8 config", &base);
        return Ok(());
    }
    let n = nodes.len();
    let mut masks: Vec<u32> = (0..(1u32 << n)).collect();
    masks.sort_by_key(|m| m.count_ones());
    for m in masks {
        let fb: Vec<String> = (0..n)
            .filter(|i| m & (1 << i) != 0)
            .map(|i| nodes[i].clone())
            .collect();
        let change = if fb.is_empty() {
            "default int8 config".to_string()
        } else {
            format!("fallback {{{}}}", fb.join(", "))
        };
        try_trial!(t, &change, &with_fp32(&base, &fb));
    }
    Ok(())
}
