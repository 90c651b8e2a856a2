//! Post-training quantization, the library API (in the spirit of
//! `quantization.fit(model, conf, calib_dataloader)`):
//! [`quantize_static`] (calibrate, then QDQ insertion, see `passes::insert_qdq`) and
//! [`quantize_dynamic`] (int8 weights offline, DynamicQuantizeLinear + MatMulInteger at run
//! time, see `dynamic`). Both return the rewritten graph and a [`QuantReport`] with one line per
//! quantizable node (decision and reason). [`QuantConfig`] round-trips through JSON.
//! `export_onnx` writes the result as an ONNX file.

pub mod dynamic;
pub mod export_onnx;

use crate::calibrate::{self, CalibAlgorithm, CalibOptions, CalibrateError, CalibrationTable};
use crate::passes::insert_qdq::{insert_qdq, NodeRecipe, QdqOptions};
use crate::passes::{fold_batchnorm::FoldBatchNorm, Pass, PassError};
use crate::quant::{Preset, QDType, QScheme, QuantError};
use octet_ir::{Graph, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Approach {
    #[default]
    Static,
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReduceRange {
    /// On when the target lacks AVX512-VNNI.
    #[default]
    Auto,
    On,
    Off,
}

/// Per-node precision: the tuner's knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// int8 with the approach's activation quantization (static: calibrated).
    Int8,
    /// MatMul/Gemm: int8 weights, activations quantized at run time, inside a static model.
    Dynamic,
    /// Float node run with bfloat16 operands and f32 accumulation (AVX512-BF16 kernels).
    Bf16,
    Fp32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Dynamic => "int8-dyn",
            Precision::Bf16 => "bf16",
            Precision::Fp32 => "fp32",
        }
    }
}

/// Recipe overrides for an op type or a node; unset fields keep the config-wide choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recipe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calib_method: Option<CalibAlgorithm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    /// Symmetric activations (uint8 with zero point 128, int8 with 0) instead of the preset's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symmetric_activations: Option<bool>,
}

impl Recipe {
    /// These overrides on top of `base`'s.
    pub fn over(&self, base: &Recipe) -> Recipe {
        Recipe {
            calib_method: self.calib_method.or(base.calib_method),
            per_channel: self.per_channel.or(base.per_channel),
            symmetric_activations: self.symmetric_activations.or(base.symmetric_activations),
        }
    }
    pub fn is_empty(&self) -> bool {
        *self == Recipe::default()
    }
    /// e.g. "calibration entropy, per-tensor weights, symmetric activations".
    pub fn describe(&self) -> String {
        let mut v = vec![];
        if let Some(m) = self.calib_method {
            v.push(format!("calibration {}", m.name()));
        }
        if let Some(p) = self.per_channel {
            v.push(format!(
                "per-{} weights",
                if p { "channel" } else { "tensor" }
            ));
        }
        if let Some(s) = self.symmetric_activations {
            v.push(format!("{}symmetric activations", if s { "" } else { "a" }));
        }
        v.join(", ")
    }
}

mod preset_serde {
    use crate::quant::Preset;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(p: &Preset, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Preset, D::Error> {
        let s = String::deserialize(d)?;
        Preset::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown preset '{s}' (expected onnxruntime, pytorch, tensorflow, ipex, mxnet, octet)"
            ))
        })
    }
}

/// Quantization configuration. Every field has a default, so a JSON file may set only some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuantConfig {
    pub approach: Approach,
    #[serde(with = "preset_serde")]
    pub preset: Preset,
    pub calib_method: CalibAlgorithm,
    /// Per-channel weights (per output channel).
    pub per_channel: bool,
    pub reduce_range: ReduceRange,
    pub exclude_nodes: Vec<String>,
    /// Op types (ONNX names, e.g. "Add") left in fp32.
    pub exclude_op_types: Vec<String>,
    /// Per-node precision (the tuner's knob); overrides exclusions and defaults.
    pub precision: BTreeMap<String, Precision>,
    /// Recipe overrides per op type (ONNX name, e.g. "MatMul"); static quantization.
    pub op_recipes: BTreeMap<String, Recipe>,
    /// Recipe overrides per node (win over the op type's); static quantization.
    pub node_recipes: BTreeMap<String, Recipe>,
    /// Samples per calibration run.
    pub calib_batch_size: usize,
    /// Calibrate batches in parallel.
    pub calib_parallel: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Fold BatchNormalization into the preceding Conv first.
    pub fold_batchnorm: bool,
    /// Target has AVX512-VNNI; `None` = detect on this machine (`Isa::active()`).
    pub target_vnni: Option<bool>,
    /// Dynamic quantization: SmoothQuant with this migration strength alpha (0..1, typically
    /// 0.5) before quantizing, from per-channel activation maxima on the calibration data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smooth_quant: Option<f32>,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            approach: Approach::Static,
            preset: Preset::Octet,
            calib_method: CalibAlgorithm::Minmax,
            per_channel: true,
            reduce_range: ReduceRange::Auto,
            exclude_nodes: vec![],
            exclude_op_types: vec![],
            precision: BTreeMap::new(),
            op_recipes: BTreeMap::new(),
            node_recipes: BTreeMap::new(),
            calib_batch_size: 16,
            calib_parallel: true,
            quiet: false,
            fold_batchnorm: true,
            target_vnni: None,
            smooth_quant: None,
        }
    }
}

impl QuantConfig {
    /// The float summation order calibration runs in: onnxruntime's MLAS order for the
    /// `onnxruntime` preset (so the activation ranges, hence the scales, are onnxruntime's to
    /// the bit), the exact f64 reference otherwise.
    pub fn calib_float_order(&self) -> crate::reference::FloatOrder {
        match self.preset {
            crate::quant::Preset::Onnxruntime => crate::reference::FloatOrder::Mlas,
            _ => crate::reference::FloatOrder::Exact,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
    pub fn from_json(s: &str) -> Result<Self, QuantizeError> {
        serde_json::from_str(s).map_err(|e| QuantizeError::Config(e.to_string()))
    }

    fn vnni(&self) -> bool {
        self.target_vnni.unwrap_or_else(|| {
            octet_kernels::Isa::active().is_ok_and(|i| i == octet_kernels::Isa::Avx512Vnni)
        })
    }

    /// Whether reduce_range is in effect.
    pub fn reduce(&self) -> bool {
        match self.reduce_range {
            ReduceRange::On => true,
            ReduceRange::Off => false,
            ReduceRange::Auto => !self.vnni(),
        }
    }

    /// (activation scheme, weight scheme without axis) for this config.
    pub fn schemes(&self) -> (QScheme, QScheme) {
        let p = self.preset;
        let mut act = QScheme::activation(p);
        let mut w = QScheme::new(p, QDType::I8, true, false);
        let reduce = self.reduce();
        match p {
            Preset::Octet | Preset::Onnxruntime => w.reduce_range = reduce,
            Preset::Pytorch => act.reduce_range = reduce,
            Preset::Ipex if !act.symmetric => act.reduce_range = reduce,
            // TensorFlow/MXNet/IPEX-symmetric define no reduced range.
            _ => {
                if self.reduce_range == ReduceRange::On {
                    w.reduce_range = true; // rejected by the scheme with a clear error
                }
            }
        }
        (act, w)
    }

    /// Nodes forced to fp32, with the reason.
    pub fn fp32_nodes(&self, g: &Graph) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for n in g.g.node_indices() {
            let node = g.node(n);
            let reason = match self.precision.get(&node.name) {
                Some(Precision::Fp32) => Some("precision map: fp32".to_string()),
                Some(Precision::Bf16) => Some("precision map: bf16".to_string()),
                Some(Precision::Dynamic) => Some("precision map: dynamic int8".to_string()),
                Some(Precision::Int8) => None,
                None if self.exclude_nodes.contains(&node.name) => {
                    Some("excluded by name".to_string())
                }
                None if self
                    .exclude_op_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(node.op.name())) =>
                {
                    Some(format!("excluded by op type ({})", node.op.name()))
                }
                None => None,
            };
            if let Some(r) = reason {
                m.insert(node.name.clone(), r);
            }
        }
        m
    }

    /// The recipe of node `name` (op type `op`): its own overrides over its op type's.
    pub fn recipe(&self, name: &str, op: &str) -> Recipe {
        let by_op = self
            .op_recipes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(op))
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        self.node_recipes
            .get(name)
            .map_or(by_op.clone(), |r| r.over(&by_op))
    }

    /// Every calibration method the config uses (the default first).
    pub fn calib_methods(&self) -> Vec<CalibAlgorithm> {
        let mut v = vec![self.calib_method];
        for r in self.op_recipes.values().chain(self.node_recipes.values()) {
            if let Some(m) = r.calib_method {
                if !v.contains(&m) {
                    v.push(m);
                }
            }
        }
        v
    }

    fn check(&self, g: &Graph) -> Result<(), QuantizeError> {
        for name in self
            .exclude_nodes
            .iter()
            .chain(self.precision.keys())
            .chain(self.node_recipes.keys())
        {
            if g.find(name).is_none() {
                return Err(QuantizeError::Config(format!(
                    "node '{name}' (in exclude_nodes, precision or node_recipes) is not in the model"
                )));
            }
        }
        for (name, p) in &self.precision {
            let n = g.find(name).expect("checked");
            let op = &g.node(n).op;
            let ok = match p {
                Precision::Dynamic => {
                    matches!(op, octet_ir::Op::MatMul | octet_ir::Op::Gemm { .. })
                }
                Precision::Bf16 => matches!(
                    op,
                    octet_ir::Op::MatMul | octet_ir::Op::Gemm { .. } | octet_ir::Op::Conv(_)
                ),
                _ => true,
            };
            if !ok {
                return Err(QuantizeError::Config(format!(
                    "node '{name}' is {}: precision {} applies to {}",
                    op.name(),
                    p.name(),
                    if *p == Precision::Dynamic {
                        "MatMul and Gemm"
                    } else {
                        "Conv, MatMul and Gemm"
                    }
                )));
            }
        }
        let (a, w) = self.schemes();
        a.qrange()
            .and_then(|_| w.qrange())
            .map_err(QuantizeError::Quant)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("invalid quantization config: {0}")]
    Config(String),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error("quantized graph is invalid: {0}")]
    Ir(#[from] octet_ir::IrError),
}

/// One quantizable node in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    pub op_type: String,
    pub precision: Precision,
    pub reason: String,
}

/// What quantization did, per quantizable node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantReport {
    pub approach: Approach,
    pub preset: String,
    pub reduce_range: bool,
    pub nodes: Vec<NodeReport>,
    /// Static only: the calibration table (reusable by the tuner).
    pub calibration: Option<CalibrationTable>,
}

impl QuantReport {
    /// Nodes on int8 kernels (static or dynamic activation quantization).
    pub fn int8_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.precision, Precision::Int8 | Precision::Dynamic))
            .count()
    }
}

impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .nodes
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:?} quantization, preset {}, reduce_range {}: {} of {} nodes int8",
            self.approach,
            self.preset,
            self.reduce_range,
            self.int8_count(),
            self.nodes.len()
        )?;
        writeln!(f, "{:<w$}  {:<12} {:<8} reason", "node", "op", "prec")?;
        for n in &self.nodes {
            let p = n.precision.name();
            writeln!(f, "{:<w$}  {:<12} {:<8} {}", n.name, n.op_type, p, n.reason)?;
        }
        Ok(())
    }
}

/// Static quantization: fold BatchNorm (optional), calibrate on `calib` (batch-first arrays keyed
/// by input name), insert QDQ.
pub fn quantize_static(
    graph: &Graph,
    calib: &[(String, Tensor)],
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    let g = prepare_graph(graph, cfg)?;
    cfg.check(&g)?;
    let mut tables = vec![];
    for m in cfg.calib_methods() {
        let opts = CalibOptions {
            algorithm: m,
            batch_size: cfg.calib_batch_size,
            parallel: cfg.calib_parallel,
            quiet: cfg.quiet,
            float_order: cfg.calib_float_order(),
        };
        tables.push(calibrate::calibrate(&g, calib, &opts)?);
    }
    quantize_static_with_tables(&g, &tables, cfg)
}

fn prepare_graph(graph: &Graph, cfg: &QuantConfig) -> Result<Graph, QuantizeError> {
    let mut g = graph.clone();
    if cfg.fold_batchnorm && FoldBatchNorm.run(&mut g)? {
        g.infer_types()?;
    }
    Ok(g)
}

/// Static quantization with ranges from an earlier calibration (the tuner's path).
pub fn quantize_static_with_table(
    graph: &Graph,
    table: &CalibrationTable,
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    quantize_static_with_tables(graph, std::slice::from_ref(table), cfg)
}

/// Static quantization with earlier calibrations: one table per calibration method the config
/// uses (`QuantConfig::calib_methods`; extra tables are ignored).
pub fn quantize_static_with_tables(
    graph: &Graph,
    tables: &[CalibrationTable],
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    let mut g = prepare_graph(graph, cfg)?;
    cfg.check(&g)?;
    let find = |m: CalibAlgorithm| {
        tables.iter().find(|t| t.method == m).ok_or_else(|| {
            QuantizeError::Config(format!("no calibration table for method {}", m.name()))
        })
    };
    let table = find(cfg.calib_method)?;
    let (activation, weight) = cfg.schemes();
    let mut recipes = std::collections::HashMap::new();
    let mut shared: Vec<std::sync::Arc<CalibrationTable>> = vec![];
    for n in g.g.node_indices() {
        let node = g.node(n);
        let r = cfg.recipe(&node.name, node.op.name());
        if r.is_empty() {
            continue;
        }
        let mut act = activation;
        if let Some(sym) = r.symmetric_activations {
            act.symmetric = sym;
        }
        let t = match r.calib_method {
            Some(m) if m != cfg.calib_method => {
                let t = find(m)?;
                Some(match shared.iter().find(|s| s.method == m) {
                    Some(s) => s.clone(),
                    None => {
                        let s = std::sync::Arc::new(t.clone());
                        shared.push(s.clone());
                        s
                    }
                })
            }
            _ => None,
        };
        recipes.insert(
            node.name.clone(),
            NodeRecipe {
                activation: act,
                per_channel: r.per_channel.unwrap_or(cfg.per_channel),
                table: t,
            },
        );
    }
    let o = QdqOptions {
        activation,
        weight,
        per_channel: cfg.per_channel,
        fp32: cfg.fp32_nodes(&g),
        recipes,
    };
    let decisions = insert_qdq(&mut g, table, &o)?;
    g.verify()?;
    let mut nodes: Vec<NodeReport> = decisions
        .into_iter()
        .map(|d| NodeReport {
            name: d.node,
            op_type: d.op,
            precision: if d.int8 {
                Precision::Int8
            } else {
                Precision::Fp32
            },
            reason: d.reason,
        })
        .collect();
    for l in nodes.iter_mut().filter(|l| l.precision == Precision::Int8) {
        let r = cfg.recipe(&l.name, &l.op_type);
        if !r.is_empty() {
            l.reason = format!("recipe: {}", r.describe());
        }
    }
    // MatMul/Gemm nodes the precision map asks to quantize dynamically.
    let dynamic: BTreeSet<String> = cfg
        .precision
        .iter()
        .filter(|(_, p)| **p == Precision::Dynamic)
        .map(|(n, _)| n.clone())
        .collect();
    if !dynamic.is_empty() {
        let (_, dw) = cfg.schemes();
        let lines = dynamic::quantize_dynamic_graph(
            &mut g,
            dw,
            cfg.per_channel,
            &BTreeMap::new(),
            Some(&dynamic),
        )?;
        let lines = lines
            .into_iter()
            .map(|mut l| {
                if l.precision == Precision::Int8 {
                    l.precision = Precision::Dynamic;
                    l.reason = format!("precision map: dynamic int8 ({})", l.reason);
                }
                l
            })
            .collect();
        merge_lines(&mut nodes, lines);
        g.verify()?;
    }
    apply_bf16(&mut g, cfg, &mut nodes);
    Ok((
        g,
        QuantReport {
            approach: Approach::Static,
            preset: cfg.preset.name().into(),
            reduce_range: cfg.reduce(),
            nodes,
            calibration: Some(table.clone()),
        },
    ))
}

/// Replace report lines by node name.
fn merge_lines(nodes: &mut [NodeReport], lines: Vec<NodeReport>) {
    for l in lines {
        if let Some(n) = nodes.iter_mut().find(|n| n.name == l.name) {
            *n = l;
        }
    }
}

/// Mark the precision map's bf16 nodes (float Conv/Gemm/MatMul with a constant f32 weight) and
/// report them; a node that cannot run bf16 stays fp32 with the reason.
fn apply_bf16(g: &mut Graph, cfg: &QuantConfig, nodes: &mut [NodeReport]) {
    for (name, p) in &cfg.precision {
        if *p != Precision::Bf16 {
            continue;
        }
        let Some(n) = g.find(name) else { continue };
        let ok = g
            .const_operand(n, 1)
            .is_some_and(|w| w.dtype() == octet_ir::DType::F32)
            && g.operand(n, 0)
                .and_then(|x| g.ty(x))
                .is_some_and(|t| t.dtype == octet_ir::DType::F32);
        let line = nodes.iter_mut().find(|l| &l.name == name);
        if ok {
            g.node_mut(n).bf16 = true;
            if let Some(l) = line {
                l.precision = Precision::Bf16;
                l.reason = "precision map: bf16".into();
            }
        } else if let Some(l) = line {
            l.precision = Precision::Fp32;
            l.reason =
                "precision map: bf16, but the weight is not a constant f32 (runs fp32)".into();
        }
    }
}

/// Dynamic quantization of MatMul/Gemm with constant weights (see `dynamic`).
pub fn quantize_dynamic(
    graph: &Graph,
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    quantize_dynamic_with(graph, None, cfg)
}

/// Dynamic quantization with optional calibration data, which SmoothQuant
/// (`cfg.smooth_quant`) needs for its per-channel activation maxima.
pub fn quantize_dynamic_with(
    graph: &Graph,
    calib: Option<&[(String, Tensor)]>,
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    dynamic_impl(graph, calib, None, cfg)
}

/// SmoothQuant's statistics for `graph`: per-channel max |x| of every activation it could
/// smooth, over the calibration data. Computed once, they serve any alpha and any exclusions
/// (the tuner's trials) through [`quantize_dynamic_with_stats`].
pub fn smooth_quant_stats(
    graph: &Graph,
    calib: &[(String, Tensor)],
    batch_size: usize,
) -> Result<SmoothStats, QuantizeError> {
    let targets = crate::passes::smooth_quant::targets(graph, &BTreeSet::new());
    let outlets: Vec<octet_ir::Outlet> = targets.iter().map(|(x, _)| *x).collect();
    Ok(calibrate::channels::channel_absmax(
        graph, calib, &outlets, batch_size,
    )?)
}

/// Per-channel activation maxima by tensor (see [`smooth_quant_stats`]).
pub type SmoothStats = std::collections::HashMap<octet_ir::Outlet, Vec<f32>>;

/// Dynamic quantization with SmoothQuant statistics computed earlier for this `graph`.
pub fn quantize_dynamic_with_stats(
    graph: &Graph,
    stats: &SmoothStats,
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    dynamic_impl(graph, None, Some(stats), cfg)
}

fn dynamic_impl(
    graph: &Graph,
    calib: Option<&[(String, Tensor)]>,
    stats: Option<&SmoothStats>,
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    let mut g = graph.clone();
    cfg.check(&g)?;
    let (_, weight) = cfg.schemes();
    // Dynamic is this approach's int8.
    let fp32: BTreeMap<String, String> = cfg
        .fp32_nodes(&g)
        .into_iter()
        .filter(|(n, _)| cfg.precision.get(n) != Some(&Precision::Dynamic))
        .collect();
    let mut smoothed = vec![];
    if let Some(alpha) = cfg.smooth_quant {
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(QuantizeError::Config(format!(
                "smooth_quant alpha {alpha} is outside (0, 1]"
            )));
        }
        let computed;
        let stats = match (stats, calib) {
            (Some(s), _) => s,
            (None, Some(calib)) => {
                computed = smooth_quant_stats(graph, calib, cfg.calib_batch_size)?;
                &computed
            }
            (None, None) => return Err(QuantizeError::Config(
                "SmoothQuant needs calibration data (per-channel activation ranges): give --calib"
                    .into(),
            )),
        };
        let skip: BTreeSet<String> = fp32.keys().cloned().collect();
        let targets = crate::passes::smooth_quant::targets(&g, &skip);
        smoothed = crate::passes::smooth_quant::smooth(&mut g, &targets, stats, alpha);
    }
    let mut nodes = dynamic::quantize_dynamic_graph(&mut g, weight, cfg.per_channel, &fp32, None)?;
    for l in nodes.iter_mut() {
        if let (Some(a), true) = (cfg.smooth_quant, smoothed.contains(&l.name)) {
            l.reason = format!("{} (SmoothQuant alpha {a})", l.reason);
        }
    }
    apply_bf16(&mut g, cfg, &mut nodes);
    g.verify()?;
    Ok((
        g,
        QuantReport {
            approach: Approach::Dynamic,
            preset: cfg.preset.name().into(),
            reduce_range: cfg.reduce(),
            nodes,
            calibration: None,
        },
    ))
}

#[cfg(test)]
mod cli_tests {
    use crate::cli::quantize::{quantize, QuantizeArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: QuantizeArgs,
    }

    #[test]
    fn cli_quantize_static_and_dynamic() {
        let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let dir = std::env::temp_dir().join(format!("octet-cliq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("q.onnx");
        let table = dir.join("t.json");
        let t = T::parse_from([
            "x",
            &format!("{fx}digits_cnn.onnx"),
            "--calib",
            &format!("{fx}digits_calib.npz"),
            "--scheme",
            "onnxruntime",
            "--calib-method",
            "kl",
            "--exclude-op",
            "Add",
            "--reduce-range",
            "off",
            "--save-calib",
            table.to_str().unwrap(),
            "-q",
            "-o",
            out.to_str().unwrap(),
        ]);
        quantize(t.a).unwrap();
        assert!(crate::frontend::onnx::load(&out).is_ok());
        let tj = std::fs::read_to_string(&table).unwrap();
        assert!(tj.contains("entropy"), "{tj}");
        let t = T::parse_from([
            "x",
            &format!("{fx}tiny_bert.onnx"),
            "--approach",
            "dynamic",
            "-o",
            out.to_str().unwrap(),
        ]);
        quantize(t.a).unwrap();
        let t = T::parse_from([
            "x",
            &format!("{fx}digits_cnn.onnx"),
            "--scheme",
            "nope",
            "-o",
            out.to_str().unwrap(),
        ]);
        let e = quantize(t.a).unwrap_err().to_string();
        assert!(e.contains("'nope'"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
