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
use crate::passes::insert_qdq::{insert_qdq, QdqOptions};
use crate::passes::{fold_batchnorm::FoldBatchNorm, Pass, PassError};
use crate::quant::{Preset, QDType, QScheme, QuantError};
use octet_ir::{Graph, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Int8,
    Fp32,
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
            calib_batch_size: 16,
            calib_parallel: true,
            quiet: false,
            fold_batchnorm: true,
            target_vnni: None,
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

    fn check(&self, g: &Graph) -> Result<(), QuantizeError> {
        for name in self.exclude_nodes.iter().chain(self.precision.keys()) {
            if g.find(name).is_none() {
                return Err(QuantizeError::Config(format!(
                    "node '{name}' (in exclude_nodes or precision) is not in the model"
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
    pub fn int8_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.precision == Precision::Int8)
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
        writeln!(f, "{:<w$}  {:<12} {:<6} reason", "node", "op", "prec")?;
        for n in &self.nodes {
            let p = match n.precision {
                Precision::Int8 => "int8",
                Precision::Fp32 => "fp32",
            };
            writeln!(f, "{:<w$}  {:<12} {:<6} {}", n.name, n.op_type, p, n.reason)?;
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
    let opts = CalibOptions {
        algorithm: cfg.calib_method,
        batch_size: cfg.calib_batch_size,
        parallel: cfg.calib_parallel,
        quiet: cfg.quiet,
        float_order: cfg.calib_float_order(),
    };
    let table = calibrate::calibrate(&g, calib, &opts)?;
    quantize_static_with_table(&g, &table, cfg)
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
    let mut g = prepare_graph(graph, cfg)?;
    cfg.check(&g)?;
    let (activation, weight) = cfg.schemes();
    let o = QdqOptions {
        activation,
        weight,
        per_channel: cfg.per_channel,
        fp32: cfg.fp32_nodes(&g),
    };
    let decisions = insert_qdq(&mut g, table, &o)?;
    g.verify()?;
    let nodes = decisions
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

/// Dynamic quantization of MatMul/Gemm with constant weights (see `dynamic`).
pub fn quantize_dynamic(
    graph: &Graph,
    cfg: &QuantConfig,
) -> Result<(Graph, QuantReport), QuantizeError> {
    let mut g = graph.clone();
    cfg.check(&g)?;
    let (_, weight) = cfg.schemes();
    let fp32 = cfg.fp32_nodes(&g);
    let nodes = dynamic::quantize_dynamic_graph(&mut g, weight, cfg.per_channel, &fp32)?;
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
